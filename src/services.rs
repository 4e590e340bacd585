//! The server's shared state, built once at start-up and handed to every
//! request as an `Arc` — no global singleton.

use std::{sync::Arc, time::Duration};

use crate::{
    config::Config,
    crypto::signing_key::ServerKey,
    e2ee::E2ee,
    email::Mailer,
    federation::Federation,
    media::{preview::Previewer, Media},
    policy::PublicSectorPolicy,
    push::PushSender,
    rooms::{typing::Typing, Rooms},
    storage::{Storage, StorageError},
    users::{presence::Presence, Users},
};

pub struct Services {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub users: Users,
    pub rooms: Rooms,
    pub typing: Typing,
    pub presence: Presence,
    pub e2ee: E2ee,
    pub media: Media,
    pub previews: Previewer,
    pub push: PushSender,
    pub federation: Federation,
    pub mailer: Mailer,
    /// The email → server map (`[email_identity] info_map`).
    pub email_map: crate::identity::EmailMap,
    pub identity_tokens: crate::identity::tokens::IdentityTokens,
    pub email_invites: crate::identity::invites::EmailInvites,
    /// Nonces of shared-secret registration handed out.
    pub admin_nonces: crate::api::admin::register::Nonces,
    /// The token buckets of `[rate_limits]`.
    pub rate_limits: crate::rate_limits::RateLimits,
    /// What `GET /metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// Which member events `/sync` sent each device (lazy loading).
    pub sent_members: crate::sync::lazy_members::SentMembers,
    /// The statuses of room shutdowns.
    pub admin_operations: crate::api::admin::operations::Operations,
    pub server_key: Arc<ServerKey>,
    /// The public-sector rules, when `[policy] access_rules` is on (the
    /// rooms' pipeline holds them too).
    pub policy: Option<Arc<PublicSectorPolicy>>,
}

impl Services {
    /// Opens the database and loads (or creates) the server signing key.
    pub fn open(config: Config) -> Result<Arc<Self>, StorageError> {
        let storage = Arc::new(Storage::open(&config.database_path, config.cache_capacity_bytes())?);
        Self::with_storage(config, storage)
    }

    pub fn with_storage(config: Config, storage: Arc<Storage>) -> Result<Arc<Self>, StorageError> {
        let server_key = Arc::new(ServerKey::load_or_generate(&storage)?);
        let users = Users::new(Arc::clone(&storage), &config);
        let rooms = Rooms::new(Arc::clone(&storage), config.server_name.clone(), Arc::clone(&server_key))
            .with_pushers(Arc::clone(&users.pushers))
            .with_account_data(users.account_data_store.clone())
            .with_erased(users.erased.clone());
        match rooms.backfill_search_index() {
            Ok(0) => {}
            Ok(read) => tracing::info!(events = read, "indexed earlier events for message search"),
            Err(error) => tracing::warn!(%error, "could not index earlier events for message search"),
        }
        if let Err(error) = rooms.load_transactions() {
            tracing::warn!(%error, "could not read the client transaction generation");
        }
        match rooms.recover_search_queue() {
            Ok(0) => {}
            Ok(read) => tracing::info!(events = read, "indexed the words of events stored before a crash"),
            Err(error) => tracing::warn!(%error, "could not index the words of the last events for message search"),
        }
        let policy = PublicSectorPolicy::from_config(&config.policy, config.server_name.clone(), users.admin_lookup())
            .map(Arc::new);
        if let Some(policy) = &policy {
            rooms.set_policy(Arc::clone(policy) as Arc<dyn crate::rooms::EventPolicy>);
            tracing::info!(externals_mode = policy.externals_mode(), "public-sector room rules on");
        }
        let typing = Typing::new(Arc::clone(&storage));
        let presence = Presence::new(Arc::clone(&storage), config.presence);
        let e2ee = E2ee::new(Arc::clone(&storage), config.server_name.clone());
        let media = Media::new(Arc::clone(&storage), config.media_path(), config.max_upload_size());
        let previews = Previewer::new(config.media.url_preview_allow_private);
        let push = PushSender::new(&config.push, rooms.push_wakeup());
        let federation = Federation::new(
            &config.federation,
            config.server_name.clone(),
            Arc::clone(&server_key),
            Arc::clone(&storage),
        );
        let mailer = Mailer::new(&config, Arc::clone(&storage));
        let metrics = crate::metrics::Metrics::new(config.cache_capacity_bytes());
        let rate_limits_config = config.rate_limits.clone();
        let email_map = crate::identity::EmailMap::new(&config.email_identity, config.server_name.clone());
        let identity_tokens = crate::identity::tokens::IdentityTokens::new(Arc::clone(&storage));
        let email_invites = crate::identity::invites::EmailInvites::new(Arc::clone(&storage));
        let services = Arc::new(Self {
            config,
            storage,
            users,
            rooms,
            typing,
            presence,
            e2ee,
            media,
            previews,
            push,
            federation,
            mailer,
            email_map,
            identity_tokens,
            email_invites,
            admin_nonces: Default::default(),
            admin_operations: Default::default(),
            metrics,
            sent_members: Default::default(),
            rate_limits: crate::rate_limits::RateLimits::new(&rate_limits_config),
            server_key,
            policy,
        });
        services.start_maintenance();
        services.start_resumptions();
        crate::push::start(&services);
        crate::federation::sender::start(&services);
        crate::federation::e2ee::start_device_list_updates(&services);
        crate::federation::partial_state::start(&services);
        crate::email::start(&services);
        Ok(services)
    }

    /// New member events carrying a local user's profile in every joined
    /// room, then the durable mark of the change removed (see
    /// [`crate::rooms::profile`], [`Users::set_profile_field`]).
    pub async fn propagate_profile(&self, user_id: &ruma::UserId) -> crate::error::Result<()> {
        let profile = self.users.profile_of(user_id.localpart())?;
        self.rooms.propagate_profile(user_id, &profile).await?;
        self.users.profile_propagated(user_id.localpart())
    }

    /// Finishes the profile changes a crash cut short (their mark is still there).
    async fn resume_profile_propagations(&self) {
        let pending = match self.users.unpropagated_profiles() {
            Ok(pending) => pending,
            Err(error) => return tracing::error!(%error, "could not read unfinished profile changes"),
        };
        for localpart in pending {
            let outcome = match self.users.user_id(&localpart) {
                Ok(user_id) => self.propagate_profile(&user_id).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => tracing::info!(user = %localpart, "unfinished profile change carried to the user's rooms"),
                Err(error) => tracing::warn!(user = %localpart, %error, "could not finish a profile change"),
            }
        }
    }

    /// Work a crash cut short, finished in the background after start-up.
    fn start_resumptions(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let services = Arc::clone(self);
        runtime.spawn(async move { services.resume_profile_propagations().await });
    }

    /// Periodic housekeeping (expired authentication sessions and email
    /// validations, …), when running
    /// inside a tokio runtime. The task holds only a weak reference, so it never
    /// keeps the database open after the server is done with it.
    fn start_maintenance(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let services = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                every.tick().await;
                let Some(services) = services.upgrade() else { return };
                match services.users.purge_expired_uiaa_sessions() {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "purged expired authentication sessions"),
                    Err(error) => tracing::warn!(%error, "could not purge authentication sessions"),
                }
                match services.users.purge_expired_email_validations() {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "purged expired email validations"),
                    Err(error) => tracing::warn!(%error, "could not purge email validations"),
                }
                match services.users.purge_expired_openid_tokens() {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "purged expired OpenID tokens"),
                    Err(error) => tracing::warn!(%error, "could not purge OpenID tokens"),
                }
                let forgetting = Arc::clone(&services);
                if let Err(error) =
                    tokio::task::spawn_blocking(move || forgetting.forget_old_client_transactions()).await
                {
                    tracing::warn!(%error, "the client transaction clean-up stopped");
                }
                match services.federation.forget_old_transactions() {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "forgot old federation transaction answers"),
                    Err(error) => tracing::warn!(%error, "could not forget old federation transactions"),
                }
                if let Err(error) = services.run_account_validity_pass().await {
                    tracing::warn!(%error, "the account validity pass stopped");
                }
            }
        });
    }

    /// Forgets the client transaction ids of the room and to-device
    /// endpoints kept for a day (maintenance; blocking).
    fn forget_old_client_transactions(&self) {
        match self.rooms.forget_old_transactions() {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "forgot the room transaction ids of a day ago"),
            Err(error) => tracing::warn!(%error, "could not forget old room transaction ids"),
        }
        match self.e2ee.forget_old_transactions(crate::util::now_ms()) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "forgot the to-device transaction ids of a day ago"),
            Err(error) => tracing::warn!(%error, "could not forget old to-device transaction ids"),
        }
    }

    /// The metrics' text, with the figures read now.
    pub fn render_metrics(&self) -> String {
        let queues = self.queue_depths();
        let snapshot = crate::metrics::Snapshot {
            events_persisted: self.rooms.events_persisted(),
            federation_queue: queues.federation,
            push_queue: queues.push,
            mail_queue: queues.mail,
            database_bytes: self.storage.size_on_disk().unwrap_or(0),
        };
        self.metrics.render(&snapshot)
    }

    /// The database's size on disk and what each of its tables holds (walks
    /// the whole database, off the async threads).
    pub async fn storage_stats(&self) -> crate::error::Result<(u64, Vec<crate::storage::TreeStats>)> {
        let storage = Arc::clone(&self.storage);
        let walked = tokio::task::spawn_blocking(move || -> Result<_, crate::storage::StorageError> {
            Ok((storage.size_on_disk()?, storage.tree_stats()?))
        });
        Ok(walked.await.map_err(|error| crate::error::Error::internal("storage statistics", error))??)
    }

    /// What waits in the background queues (metrics, the admin API's jobs).
    pub fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            federation: self.rooms.outbox_depths().unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read the federation queue");
                Vec::new()
            }),
            push: self.storage.tables.push_queue.len(),
            mail: self.mailer.queued(),
        }
    }

    /// Renewal mails, expiry and deactivation of accounts (`[account_validity]`).
    pub async fn run_account_validity_pass(&self) -> crate::error::Result<()> {
        crate::email::renewal::run_validity_pass(&self.users, &self.mailer).await
    }
}

const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// Items waiting in each background queue.
pub struct QueueDepths {
    /// Events waiting, by destination server.
    pub federation: Vec<(String, usize)>,
    /// Pushes waiting for their gateway.
    pub push: usize,
    /// Mails waiting for the SMTP server.
    pub mail: usize,
}
