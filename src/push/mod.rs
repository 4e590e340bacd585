//! Sending notifications to push gateways.
//!
//! Spec: push gateway API (`content/push-gateway-api.md`,
//! `POST /_matrix/push/v1/notify`) and client-server "Push Notifications"
//! (pushers, `format: event_id_only`).
//!
//! When an event notifies a user ([`crate::rooms::notifications`]), a job per
//! http pusher of that user is written to the `push_queue` table with the
//! event ([`queue`], which owns the table), so a push is never lost to a
//! restart. The sender here takes the
//! jobs in event order, one task per pusher at a time (a pusher's pushes stay
//! in order; a slow gateway holds up only its own pushers), builds the
//! notification when it is sent (current unread counts; skipped if the user
//! has read the event meanwhile), and posts it. Reading a room with unread
//! notifications queues a badge update (counts only, as Synapse sends) so
//! that phones clear their badge.
//!
//! Answers:
//! - 2xx: done; pushkeys listed in `rejected` have their pusher removed.
//! - network errors, timeouts, 429 and 5xx: retried with exponential backoff
//!   per pusher (1 s doubling up to 10 min), given up after [`MAX_ATTEMPTS`].
//! - other answers (4xx, a URL the server may not call): dropped and logged.

mod notification;
pub mod queue;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, UserId};
use serde_json::Value;
use tokio::sync::Notify;

use crate::{
    config::PushConfig,
    error::Result,
    http::client::{ClientError, ClientPolicy, HttpClient},
    services::Services,
    storage::{
        keys::{PushJobKey, PusherId},
        records::PushJobRecord,
    },
};

/// Attempts of one push before it is given up (about an hour of retries).
pub const MAX_ATTEMPTS: u32 = 16;
/// Delay after a pusher's first failure; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Pushers delivered to at the same time.
const MAX_CONCURRENT_PUSHERS: usize = 32;
/// Jobs read from the queue per pass.
const SCAN_LIMIT: usize = 10_000;
/// Passes happen at least this often (a safety net; wake-ups do the work).
const IDLE_PASS: Duration = Duration::from_secs(60);

struct Backoff {
    failures: u32,
    retry_at: Instant,
}

#[derive(Default)]
struct DeliveryState {
    in_flight: HashSet<PusherId>,
    backoff: HashMap<PusherId, Backoff>,
}

/// The push sender: the gateway client and what is being delivered.
pub struct PushSender {
    client: HttpClient,
    wakeup: Arc<Notify>,
    state: Mutex<DeliveryState>,
}

/// What became of one push.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Delivered, or nothing to deliver any more: the job is done.
    Done,
    /// The gateway rejected the pushkey: the pusher is removed.
    Rejected,
    /// Worth trying again later.
    Retry,
}

impl PushSender {
    pub fn new(config: &PushConfig, wakeup: Arc<Notify>) -> Self {
        let policy = ClientPolicy {
            allow_private_addresses: config.allow_private_gateways,
            extra_ca_file: config.ca_file.clone(),
            skip_certificate_checks: false,
        };
        Self { client: HttpClient::new(policy), wakeup, state: Mutex::default() }
    }

    /// Refuses a pusher URL the sender would never call (its host resolves
    /// only to private or loopback addresses while `push.allow_private_gateways`
    /// is off), so that a client is told instead of its pushes vanishing.
    pub async fn check_gateway_url(&self, url: &str) -> crate::error::Result<()> {
        self.client.check_destination(url).await.map_err(|error| match error {
            ClientError::DeniedAddress(host) => crate::error::Error::invalid_param(format!(
                "The push gateway {host} is on a private or loopback address, which this server does not call \
                 (push.allow_private_gateways is off)"
            )),
            other => crate::error::Error::invalid_param(format!("Invalid push gateway URL: {other}")),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts the sender's loop on the current tokio runtime, if any. It holds
/// only a weak reference to the services between passes.
pub fn start(services: &Arc<Services>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let wakeup = Arc::clone(&services.push.wakeup);
    let weak = Arc::downgrade(services);
    runtime.spawn(async move {
        loop {
            let notified = wakeup.notified();
            let next_pass = match weak.upgrade() {
                Some(services) => pass(&services, &weak),
                None => return,
            };
            let _ = tokio::time::timeout(next_pass, notified).await;
        }
    });
}

/// Starts a delivery task for each pusher with due jobs; returns how long
/// until a backed-off pusher is due.
fn pass(services: &Arc<Services>, weak: &Weak<Services>) -> Duration {
    let jobs = match queue::first_jobs(&services.storage, SCAN_LIMIT) {
        Ok(jobs) => jobs,
        Err(error) => {
            tracing::error!(%error, "could not read the push queue");
            return IDLE_PASS;
        }
    };
    let mut per_pusher: Vec<(PusherId, Vec<(PushJobKey, PushJobRecord)>)> = Vec::new();
    let mut index: HashMap<PusherId, usize> = HashMap::new();
    for (key, job) in jobs {
        let at = *index.entry(key.pusher.clone()).or_insert_with(|| {
            per_pusher.push((key.pusher.clone(), Vec::new()));
            per_pusher.len() - 1
        });
        per_pusher[at].1.push((key, job));
    }
    let now = Instant::now();
    let mut next_pass = IDLE_PASS;
    let mut state = services.push.state();
    for (pusher, jobs) in per_pusher {
        if state.in_flight.len() >= MAX_CONCURRENT_PUSHERS || state.in_flight.contains(&pusher) {
            continue;
        }
        if let Some(backoff) = state.backoff.get(&pusher) {
            if backoff.retry_at > now {
                next_pass = next_pass.min(backoff.retry_at - now);
                continue;
            }
        }
        state.in_flight.insert(pusher.clone());
        let weak = weak.clone();
        tokio::spawn(async move {
            if let Some(services) = weak.upgrade() {
                let in_flight = InFlight { services: &services, pusher: &pusher };
                deliver_in_order(in_flight.services, in_flight.pusher, jobs).await;
            }
        });
    }
    next_pass
}

/// Marks a pusher as being delivered to; ends the mark however the delivery
/// ends (even by a panic), then wakes the sender: jobs queued behind this
/// pusher's may be waiting.
struct InFlight<'a> {
    services: &'a Services,
    pusher: &'a PusherId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.services.push.state().in_flight.remove(self.pusher);
        self.services.push.wakeup.notify_one();
    }
}

/// Sends a pusher's jobs in order, stopping at the first that must wait.
async fn deliver_in_order(services: &Services, pusher: &PusherId, jobs: Vec<(PushJobKey, PushJobRecord)>) {
    // The pusher's settings, read once for the jobs sent together; without
    // them (deleted meanwhile, or rejected below) the jobs are dropped.
    let mut recipient = match Recipient::read(services, pusher) {
        Ok(recipient) => recipient,
        Err(error) => {
            tracing::warn!(%error, user = %pusher.localpart, "pusher could not be read; its pushes wait");
            return;
        }
    };
    // The unread count is the user's current one, read once for the jobs
    // sent together (it is a sum over all their rooms).
    let mut unread = None;
    for (key, mut job) in jobs {
        let outcome = match &recipient {
            None => Outcome::Done,
            Some(recipient) => match deliver(services, pusher, recipient, key.count, &job, &mut unread).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(%error, user = %pusher.localpart, "push could not be prepared; dropped");
                    Outcome::Done
                }
            },
        };
        let written = match outcome {
            Outcome::Done => {
                services.push.state().backoff.remove(pusher);
                queue::remove(&services.storage, &key)
            }
            Outcome::Rejected => {
                tracing::info!(user = %pusher.localpart, app_id = %pusher.app_id, "gateway rejected the pushkey; pusher removed");
                if let Err(error) =
                    services.users.remove_pusher(&pusher.localpart, &pusher.app_id, &pusher.pushkey).await
                {
                    tracing::error!(%error, "could not remove a rejected pusher");
                }
                recipient = None;
                queue::remove(&services.storage, &key)
            }
            Outcome::Retry => {
                job.attempts += 1;
                let written = if job.attempts >= MAX_ATTEMPTS {
                    tracing::warn!(user = %pusher.localpart, app_id = %pusher.app_id, attempts = job.attempts, "push given up");
                    queue::remove(&services.storage, &key)
                } else {
                    queue::record_attempt(&services.storage, &key, &job)
                };
                note_failure(services, pusher);
                if let Err(error) = written {
                    tracing::error!(%error, "could not update the push queue");
                }
                return;
            }
        };
        if let Err(error) = written {
            tracing::error!(%error, "could not update the push queue");
            return;
        }
    }
}

fn note_failure(services: &Services, pusher: &PusherId) {
    let mut state = services.push.state();
    let failures = state.backoff.get(pusher).map_or(0, |backoff| backoff.failures) + 1;
    let delay = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
    state.backoff.insert(pusher.clone(), Backoff { failures, retry_at: Instant::now() + delay });
}

/// Where a pusher's pushes go: its settings as the client set them.
struct Recipient {
    user_id: ruma::OwnedUserId,
    settings: Value,
    url: String,
}

impl Recipient {
    /// `None` when the pusher no longer exists.
    fn read(services: &Services, pusher: &PusherId) -> Result<Option<Self>> {
        let Some(settings) = services.users.pusher(&pusher.localpart, &pusher.app_id, &pusher.pushkey)? else {
            return Ok(None);
        };
        let url = settings["data"]["url"].as_str().unwrap_or_default().to_owned();
        Ok(Some(Self { user_id: services.users.user_id(&pusher.localpart)?, settings, url }))
    }
}

/// Builds and posts one push; `unread` caches the user's unread count.
async fn deliver(
    services: &Services,
    pusher: &PusherId,
    recipient: &Recipient,
    count: u64,
    job: &PushJobRecord,
    unread: &mut Option<u64>,
) -> Result<Outcome> {
    let Recipient { user_id, settings, url } = recipient;
    if job.badge_only {
        // Read now: the badge must reflect the read that queued it.
        let fresh = *unread.insert(services.rooms.unread_total(user_id)?);
        let body = notification::build_badge(pusher, settings, fresh);
        return Ok(post(&services.push.client, url, pusher, user_id, body).await);
    }
    let Ok(room_id) = OwnedRoomId::try_from(job.room_id.as_str()) else { return Ok(Outcome::Done) };
    let Some(context) = services.rooms.push_context(user_id, &room_id, count)? else {
        return Ok(Outcome::Done);
    };
    if context.already_read {
        return Ok(Outcome::Done);
    }
    let unread = match *unread {
        Some(unread) => unread,
        None => *unread.insert(services.rooms.unread_total(user_id)?),
    };
    let body = notification::build(user_id, pusher, settings, &context, unread);
    Ok(post(&services.push.client, url, pusher, user_id, body).await)
}

async fn post(client: &HttpClient, url: &str, pusher: &PusherId, user_id: &UserId, body: Value) -> Outcome {
    let response = match client.post_json(url, body.to_string().into_bytes()).await {
        Ok(response) => response,
        Err(error @ (ClientError::InvalidUrl(_) | ClientError::DeniedAddress(_))) => {
            tracing::warn!(%error, user = %user_id, url, "push gateway cannot be called; push dropped");
            return Outcome::Done;
        }
        Err(error) => {
            tracing::debug!(%error, user = %user_id, url, "push gateway unreachable; will retry");
            return Outcome::Retry;
        }
    };
    match response.status {
        200..=299 => {
            let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
            let rejected = answer["rejected"]
                .as_array()
                .is_some_and(|keys| keys.iter().any(|key| key.as_str() == Some(pusher.pushkey.as_str())));
            if rejected {
                Outcome::Rejected
            } else {
                Outcome::Done
            }
        }
        429 | 500..=599 => {
            tracing::debug!(status = response.status, user = %user_id, url, "push gateway failed; will retry");
            Outcome::Retry
        }
        status => {
            tracing::warn!(status, user = %user_id, url, "push gateway refused the notification; dropped");
            Outcome::Done
        }
    }
}
