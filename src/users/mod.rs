//! Accounts: user ids, registration, passwords, deactivation, admins.
//!
//! Spec: client-server API "Account registration", "Account management",
//! appendices "User Identifiers". Devices and tokens are in [`sessions`],
//! user-interactive authentication in [`uiaa`].

pub mod account_data;
pub mod directory;
pub mod erased;
pub mod filters;
pub mod openid;
pub mod password;
pub mod password_policy;
pub mod presence;
pub mod pushers;
pub mod rate_limit;
pub mod sessions;
pub mod threepids;
pub mod uiaa;
pub mod validity;

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use ruma::{OwnedServerName, OwnedUserId, UserId};

use crate::{
    config::{Config, RegistrationTokenConfig},
    error::{Error, ErrorKind, Result},
    storage::{Batch, Storage},
    util::now_ms,
};
use rate_limit::LoginLimiter;

/// An account as stored (what the admin API shows).
pub use crate::storage::records::UserRecord;

/// The profile fields a user can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    DisplayName,
    AvatarUrl,
}

/// The account server notices come from (made by the server on first use,
/// without a password; reserved: nobody registers it).
pub const SERVER_NOTICES_LOCALPART: &str = "server-notices";

/// `meta` key naming the first account registered (made server admin).
const FIRST_USER_KEY: &str = "first_user";

/// Longest user id the spec allows, in bytes, `@` and `:server` included.
const MAX_USER_ID_BYTES: usize = 255;

/// Who is making an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub localpart: String,
    pub device_id: String,
    pub is_admin: bool,
    pub is_guest: bool,
}

pub struct Users {
    storage: Arc<Storage>,
    server_name: OwnedServerName,
    refreshable_lifetime: Duration,
    registration_tokens: Vec<RegistrationTokenConfig>,
    pub login_failures: LoginLimiter,
    last_seen: Mutex<HashMap<(String, String), sessions::LastSeen>>,
    /// Local users by name, for the user directory.
    pub directory: directory::UserDirectory,
    /// Who has http pushers (shared with the rooms, which queue pushes).
    pub pushers: Arc<pushers::PusherIndex>,
    /// The account data table (the rooms hold another handle, for push rules).
    pub account_data_store: account_data::AccountDataStore,
    /// Accounts erased on deactivation (shared with the rooms).
    pub erased: erased::ErasedUsers,
    /// The bounded queue every password hash and check goes through.
    passwords: password::Passwords,
    /// What a new password must contain.
    pub password_policy: crate::config::PasswordPolicyConfig,
    /// When accounts expire (`[account_validity]`).
    pub validity: validity::AccountValidity,
    /// One change to a user's devices and tokens at a time: login, refresh,
    /// logout and device deletion read a device's token list and write it
    /// back whole.
    device_changes: crate::locks::KeyedLocks<String>,
    /// One edit of a user's account data at a time, for the edits that read
    /// an event and write it back changed (push rules, room tags).
    account_data_edits: crate::locks::KeyedLocks<String>,
    /// One request at a time per user-interactive authentication session:
    /// a session completes, and is spent, once.
    uiaa_sessions_in_use: crate::locks::KeyedLocks<String>,
    /// One registration at a time per authentication session, so that a
    /// retry sent before the first answer gets the same account.
    registrations: crate::locks::KeyedLocks<String>,
    /// One request at a time per email validation (a start, a token
    /// submitted), each reading the validation and writing it back.
    email_validations_in_use: crate::locks::KeyedLocks<String>,
}

/// Whether a local user is a server admin, read from the users table by
/// those who hold no users service (the policy layer).
#[derive(Clone)]
pub struct AdminLookup {
    storage: Arc<Storage>,
}

impl AdminLookup {
    /// A storage error counts as "not an admin" (the rules then apply).
    pub fn is_admin(&self, localpart: &str) -> bool {
        match self.storage.tables.users.get(&localpart.to_owned()) {
            Ok(user) => user.is_some_and(|user| user.is_admin && !user.deactivated),
            Err(error) => {
                tracing::warn!(%error, localpart, "could not read whether a user is an admin");
                false
            }
        }
    }
}

impl Users {
    /// A handle answering whether a local user is a server admin.
    pub fn admin_lookup(&self) -> AdminLookup {
        AdminLookup { storage: Arc::clone(&self.storage) }
    }

    pub fn new(storage: Arc<Storage>, config: &Config) -> Self {
        let storage_for_directory = Arc::clone(&storage);
        let validity = validity::AccountValidity::new(Arc::clone(&storage), &config.account_validity);
        Self {
            storage,
            server_name: config.server_name.clone(),
            refreshable_lifetime: Duration::from_secs(config.refreshable_access_token_lifetime_secs),
            registration_tokens: config.registration_tokens.clone(),
            login_failures: LoginLimiter::new(&config.login_rate_limit),
            last_seen: Mutex::default(),
            directory: Self::load_directory(&storage_for_directory, &validity),
            pushers: Arc::new(pushers::PusherIndex::load(&storage_for_directory).unwrap_or_else(|error| {
                tracing::error!(%error, "could not load the pushers; pushes start with the next change");
                pushers::PusherIndex::default()
            })),
            passwords: password::Passwords::default(),
            password_policy: config.email_identity.password_policy.clone(),
            validity,
            account_data_store: account_data::AccountDataStore::new(Arc::clone(&storage_for_directory)),
            erased: erased::ErasedUsers::load(&storage_for_directory).unwrap_or_else(|error| {
                tracing::error!(%error, "could not load the erased accounts");
                erased::ErasedUsers::default()
            }),
            device_changes: Default::default(),
            account_data_edits: Default::default(),
            uiaa_sessions_in_use: Default::default(),
            registrations: Default::default(),
            email_validations_in_use: Default::default(),
        }
    }

    /// Held by a registration carrying authentication session `id` (see
    /// `registrations`).
    pub async fn lock_registration(&self, id: &str) -> crate::locks::KeyedGuard<'_, String> {
        self.registrations.lock(id).await
    }

    /// Held while an account data event is read, changed and stored again
    /// (two concurrent edits of push rules or tags would lose one).
    pub async fn lock_account_data(&self, localpart: &str) -> crate::locks::KeyedGuard<'_, String> {
        self.account_data_edits.lock(localpart).await
    }

    /// The directory of every listed account, from the users table and
    /// their addresses (expired accounts left out).
    fn load_directory(storage: &Storage, validity: &validity::AccountValidity) -> directory::UserDirectory {
        let directory = directory::UserDirectory::default();
        let mut emails: HashMap<String, Vec<String>> = HashMap::new();
        let bound = storage.tables.user_emails.for_each(|(localpart, address), _| {
            emails.entry(localpart).or_default().push(address);
        });
        if let Err(error) = bound {
            tracing::error!(%error, "could not read the users' addresses for the user directory");
        }
        let listed = storage.tables.users.for_each(|localpart, user| {
            if is_listed(&user) && !validity.is_expired(&localpart).unwrap_or(false) {
                let addresses = emails.remove(&localpart).unwrap_or_default();
                directory.upsert(directory_entry(&localpart, &user, addresses));
            }
        });
        if let Err(error) = listed {
            tracing::error!(%error, "could not load the user directory");
        }
        directory
    }

    /// Puts a user in the directory as their account now is, or takes them
    /// out (deactivated, a guest, or hidden by `im.vector.hide_profile`).
    pub fn refresh_directory_entry(&self, localpart: &str) -> Result<()> {
        match self.get(localpart)? {
            Some(user) if is_listed(&user) && !self.validity.is_expired(localpart)? => {
                let addresses = self.emails_of(localpart)?.into_iter().map(|(address, _)| address).collect();
                self.directory.upsert(directory_entry(localpart, &user, addresses));
            }
            _ => self.directory.remove(localpart),
        }
        Ok(())
    }

    /// Hides a user from the directory, or lists them again
    /// (`im.vector.hide_profile` account data).
    pub async fn set_hidden_from_directory(&self, localpart: &str, hidden: bool) -> Result<()> {
        let updated = self.storage.tables.users.update_and_fetch(&localpart.to_owned(), |user| {
            user.map(|user| UserRecord { hidden_from_directory: hidden, ..user })
        })?;
        if updated.is_some() {
            self.storage.wait_durable().await?;
        }
        self.refresh_directory_entry(localpart)
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// Who acts on the operators' socket: the server itself, as its
    /// server-notices account (an admin no one can log in as).
    pub fn operator_identity(&self) -> Result<Identity> {
        Ok(Identity {
            user_id: self.user_id(SERVER_NOTICES_LOCALPART)?,
            localpart: SERVER_NOTICES_LOCALPART.to_owned(),
            device_id: "OPERATOR_SOCKET".to_owned(),
            is_admin: true,
            is_guest: false,
        })
    }

    /// The full user id of a local user.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        UserId::parse_with_server_name(localpart, &self.server_name)
            .map_err(|e| Error::internal("building a user id from a stored localpart", e))
    }

    /// Checks a requested username against the spec's grammar for new user ids
    /// and returns the localpart to use (lowercased, as users type names freely).
    pub fn localpart_for_registration(&self, username: &str) -> Result<String> {
        let localpart = username.to_lowercase();
        if localpart.is_empty() {
            return Err(Error::new(ErrorKind::InvalidUsername, "The username must not be empty"));
        }
        if let Some(bad) = localpart.chars().find(|c| !is_localpart_char(*c)) {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                format!("The username may only contain a-z, 0-9, and . _ = - / +; found {bad:?}"),
            ));
        }
        if 1 + localpart.len() + 1 + self.server_name.as_str().len() > MAX_USER_ID_BYTES {
            return Err(Error::new(ErrorKind::InvalidUsername, "The user id would exceed 255 bytes"));
        }
        if localpart == SERVER_NOTICES_LOCALPART {
            // The server speaks as it: nobody may register it.
            return Err(Error::new(ErrorKind::UserInUse, "This user id is reserved for the server"));
        }
        Ok(localpart)
    }

    /// The localpart named by a login identifier: a full user id of this server,
    /// or a bare localpart. `None` when it names no possible local user.
    pub fn localpart_from_identifier(&self, user: &str) -> Option<String> {
        if user.starts_with('@') {
            let user_id = UserId::parse(user).ok()?;
            (user_id.server_name() == self.server_name).then(|| user_id.localpart().to_lowercase())
        } else {
            Some(user.to_lowercase())
        }
    }

    /// Every account, in localpart order.
    pub fn all_accounts(&self) -> Result<Vec<(String, UserRecord)>> {
        Ok(self.storage.tables.users.all()?)
    }

    pub fn get(&self, localpart: &str) -> Result<Option<UserRecord>> {
        Ok(self.storage.tables.users.get(&localpart.to_owned())?)
    }

    /// The account, if it exists and is not deactivated.
    pub fn get_active(&self, localpart: &str) -> Result<Option<UserRecord>> {
        Ok(self.get(localpart)?.filter(|user| !user.deactivated))
    }

    pub fn is_available(&self, localpart: &str) -> Result<bool> {
        Ok(!self.storage.tables.users.contains(&localpart.to_owned())?)
    }

    /// Creates an account. The very first account on a server becomes a server
    /// admin; `make_admin` forces it. Fails with `M_USER_IN_USE` if taken.
    pub async fn create_account(
        &self,
        localpart: &str,
        password: Option<&str>,
        is_guest: bool,
        make_admin: bool,
    ) -> Result<UserRecord> {
        let password_hash = match password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        self.create_account_with_hash(localpart, password_hash, is_guest, make_admin).await
    }

    /// Makes a guest account a full one with this password, keeping its user
    /// id, rooms and devices (spec: "Guest access", upgrading).
    pub async fn upgrade_guest(&self, localpart: &str, password_hash: String) -> Result<()> {
        let users = &self.storage.tables.users;
        let upgraded = std::cell::Cell::new(false);
        // Any other record is written back unchanged (`None` would remove it).
        users.update_and_fetch(&localpart.to_owned(), |user| {
            upgraded.set(false);
            user.map(|mut user| {
                if user.is_guest && !user.deactivated {
                    user.is_guest = false;
                    user.password_hash = Some(password_hash.clone());
                    upgraded.set(true);
                }
                user
            })
        })?;
        if !upgraded.get() {
            return Err(Error::forbidden("Only an active guest account can be upgraded"));
        }
        self.storage.wait_durable().await?;
        self.validity.start(localpart).await?;
        self.refresh_directory_entry(localpart)?;
        Ok(())
    }

    /// The argon2id hash of `password`, to keep instead of the password.
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        self.passwords.hash(password).await
    }

    /// [`Users::create_account`] with the password already hashed ([`Users::hash_password`]).
    pub async fn create_account_with_hash(
        &self,
        localpart: &str,
        password_hash: Option<String>,
        is_guest: bool,
        make_admin: bool,
    ) -> Result<UserRecord> {
        let users = &self.storage.tables.users;
        // The first account becomes admin; the claim in `meta` makes that
        // exactly one account even when the first registrations race.
        let is_first = !is_guest
            && users.is_empty()
            && self.storage.meta_insert_if_absent(FIRST_USER_KEY, &localpart.to_owned())? == localpart;
        let mut record = UserRecord::new(password_hash, now_ms(), make_admin || is_first, is_guest);
        // Clients show the localpart until the user picks a name, as other servers do.
        record.displayname = Some(localpart.to_owned());
        if !users.insert_if_absent(&localpart.to_owned(), &record)? {
            return Err(Error::new(ErrorKind::UserInUse, "The user id is already taken"));
        }
        self.storage.wait_durable().await?;
        if !is_guest {
            self.validity.start(localpart).await?;
            self.refresh_directory_entry(localpart)?;
        }
        if record.is_admin {
            tracing::info!(user = localpart, "account created as server admin");
        }
        Ok(record)
    }

    /// Checks a password, with rate limiting of failures (see [`rate_limit`]).
    pub async fn check_password(&self, localpart: &str, password: &str, client: &str) -> Result<UserRecord> {
        self.login_failures.check(localpart, client)?;
        let user = self.get(localpart)?;
        // Deactivation removed the password: say so, as Synapse does, rather
        // than "wrong password" forever.
        if user.as_ref().is_some_and(|user| user.deactivated) {
            return Err(Error::new(ErrorKind::UserDeactivated, "This account has been deactivated"));
        }
        let verified = match user.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(hash) => self.passwords.verify(password, hash).await?,
            None => {
                // Same work as a real check, so response times do not tell
                // which accounts exist.
                self.passwords.verify_against_dummy(password).await?;
                false
            }
        };
        match user {
            Some(user) if verified => {
                self.login_failures.record_success(localpart, client);
                Ok(user)
            }
            _ => {
                self.login_failures.record_failure(localpart, client);
                Err(Error::forbidden("Invalid username or password"))
            }
        }
    }

    pub async fn set_password(&self, localpart: &str, new_password: &str) -> Result<()> {
        let hash = self.passwords.hash(new_password).await?;
        let updated = self.storage.tables.users.update_and_fetch(&localpart.to_owned(), |user| {
            user.map(|user| UserRecord { password_hash: Some(hash.clone()), ..user })
        })?;
        if updated.is_none() {
            return Err(Error::not_found("No such user"));
        }
        Ok(self.storage.wait_durable().await?)
    }

    pub async fn set_admin(&self, localpart: &str, is_admin: bool) -> Result<()> {
        let updated = self
            .storage
            .tables
            .users
            .update_and_fetch(&localpart.to_owned(), |user| user.map(|user| UserRecord { is_admin, ..user }))?;
        if updated.is_none() {
            return Err(Error::not_found("No such user"));
        }
        Ok(self.storage.wait_durable().await?)
    }

    /// Changes a profile field (`displayname` or `avatar_url`); `None` clears
    /// it. A durable mark that the change must reach the user's rooms is
    /// written first and stays until [`Users::profile_propagated`]; marks left
    /// by a crash are listed by [`Users::unpropagated_profiles`].
    /// Names a new account, before it is in any room (no member event to
    /// update, unlike [`Users::set_profile_field`]).
    pub async fn set_initial_display_name(&self, localpart: &str, name: &str) -> Result<()> {
        let updated = self.storage.tables.users.update_and_fetch(&localpart.to_owned(), |user| {
            user.map(|user| UserRecord { displayname: Some(name.to_owned()), ..user })
        })?;
        updated.ok_or_else(|| Error::not_found("No such user"))?;
        self.storage.wait_durable().await?;
        self.refresh_directory_entry(localpart)
    }

    pub async fn set_profile_field(
        &self,
        localpart: &str,
        field: ProfileField,
        value: Option<String>,
    ) -> Result<UserRecord> {
        let mut mark = Batch::new();
        mark.insert(&self.storage.tables.profile_propagations, &localpart.to_owned(), &now_ms())?;
        self.storage.commit(mark).await?;
        let updated = self.storage.tables.users.update_and_fetch(&localpart.to_owned(), |user| {
            user.map(|mut user| {
                match field {
                    ProfileField::DisplayName => user.displayname = value.clone(),
                    ProfileField::AvatarUrl => user.avatar_url = value.clone(),
                }
                user
            })
        })?;
        let user = updated.ok_or_else(|| Error::not_found("No such user"))?;
        self.storage.wait_durable().await?;
        self.refresh_directory_entry(localpart)?;
        Ok(user)
    }

    /// The user's rooms all carry their profile now.
    pub fn profile_propagated(&self, localpart: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.profile_propagations, &localpart.to_owned());
        // Not waited for: a mark that survives a crash only replays a finished change.
        Ok(self.storage.apply(batch)?)
    }

    /// Users whose last profile change may not have reached all their rooms.
    pub fn unpropagated_profiles(&self) -> Result<Vec<String>> {
        Ok(self.storage.tables.profile_propagations.all()?.into_iter().map(|(localpart, _)| localpart).collect())
    }

    /// The profile fields member events carry (`displayname`, `avatar_url`);
    /// empty for an unknown user.
    pub fn profile_of(&self, localpart: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        Ok(self.active_profile(localpart)?.unwrap_or_default())
    }

    /// The profile of an active account, `None` for an unknown or
    /// deactivated one (`GET /profile`).
    pub fn active_profile(&self, localpart: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(user) = self.get_active(localpart)? else { return Ok(None) };
        let mut profile = serde_json::Map::new();
        if let Some(name) = user.displayname {
            profile.insert("displayname".into(), name.into());
        }
        if let Some(url) = user.avatar_url {
            profile.insert("avatar_url".into(), url.into());
        }
        Ok(Some(profile))
    }

    /// Deactivates an account for good: it can no longer log in, all its devices
    /// and tokens are removed, and its user id is never handed out again.
    /// With `erase`, its events are served redacted to those who were not in
    /// the room when they were sent ([`erased`]).
    pub async fn deactivate(&self, localpart: &str, erase: bool) -> Result<()> {
        let Some(mut user) = self.get(localpart)? else {
            return Err(Error::not_found("No such user"));
        };
        user.deactivated = true;
        user.password_hash = None;
        user.displayname = None;
        user.avatar_url = None;
        let _devices = self.device_changes.lock(localpart).await;
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.users, &localpart.to_owned(), &user)?;
        self.remove_all_devices(&mut batch, localpart)?;
        self.unbind_all_emails(&mut batch, localpart)?;
        let user_id = self.user_id(localpart)?;
        if erase {
            self.erase_in(&mut batch, &user_id)?;
        }
        self.commit_device_removal(batch, localpart).await?;
        if erase {
            self.note_erased(&user_id);
        }
        self.directory.remove(localpart);
        tracing::info!(user = localpart, erase, "account deactivated");
        Ok(())
    }
}

fn directory_entry(localpart: &str, user: &UserRecord, emails: Vec<String>) -> directory::DirectoryEntry {
    directory::DirectoryEntry {
        localpart: localpart.to_owned(),
        display_name: user.displayname.clone(),
        avatar_url: user.avatar_url.clone(),
        emails,
    }
}

/// Whether an account shows in the user directory.
fn is_listed(user: &UserRecord) -> bool {
    !user.deactivated && !user.is_guest && !user.hidden_from_directory
}

/// The characters the spec allows in new localparts (appendices, "User Identifiers").
fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

/// A `Users` on a fresh temporary database, for unit tests.
#[cfg(test)]
pub(crate) fn test_users() -> (tempfile::TempDir, Users) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = Arc::new(Storage::open(dir.path(), 8 << 20).expect("open storage"));
    let config = Config::from_toml_with_env("server_name = \"example.org\"", Vec::new()).expect("config");
    (dir, Users::new(storage, &config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        test_users()
    }

    #[test]
    fn registration_usernames_follow_the_grammar() {
        let (_dir, users) = users();
        assert_eq!(users.localpart_for_registration("Jean.Dupont").unwrap(), "jean.dupont");
        assert_eq!(users.localpart_for_registration("a_b=c-d/e+f").unwrap(), "a_b=c-d/e+f");
        for bad in ["", "has space", "colon:", "émile", "@at", "x".repeat(250).as_str()] {
            let error = users.localpart_for_registration(bad).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidUsername, "{bad:?}");
        }
    }

    #[test]
    fn identifiers_name_local_users_only() {
        let (_dir, users) = users();
        assert_eq!(users.localpart_from_identifier("@Alice:example.org").as_deref(), Some("alice"));
        assert_eq!(users.localpart_from_identifier("alice").as_deref(), Some("alice"));
        assert_eq!(users.localpart_from_identifier("@alice:elsewhere.org"), None);
        assert_eq!(users.localpart_from_identifier("@broken"), None);
    }

    #[tokio::test]
    async fn first_account_is_admin_and_names_are_unique() {
        let (_dir, users) = users();
        let first = users.create_account("first", Some("pw"), false, false).await.unwrap();
        let second = users.create_account("second", Some("pw"), false, false).await.unwrap();
        assert!(first.is_admin && !second.is_admin);
        let error = users.create_account("first", Some("pw"), false, false).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::UserInUse);
    }
}
