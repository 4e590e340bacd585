//! OpenID tokens: a user proves who they are to a third party (an identity
//! service, an integration manager), which asks the user's server.
//!
//! Spec: client-server API "OpenID" (`POST /user/{userId}/openid/request_token`),
//! server-server API "OpenID" (`GET /openid/userinfo`). A token lives
//! [`OPENID_TOKEN_LIFETIME_SECS`] and is stored as its SHA-256 only.

use crate::{
    crypto::tokens::{random_alphanumeric, token_hash},
    error::Result,
    storage::{records::OpenIdTokenRecord, Batch},
    util::now_ms,
};

use super::Users;

/// How long an OpenID token answers.
pub const OPENID_TOKEN_LIFETIME_SECS: u64 = 3600;

impl Users {
    /// A new OpenID token for `localpart`.
    pub async fn new_openid_token(&self, localpart: &str) -> Result<String> {
        let token = random_alphanumeric(32);
        let record = OpenIdTokenRecord {
            localpart: localpart.to_owned(),
            expires_ts: now_ms() + OPENID_TOKEN_LIFETIME_SECS * 1000,
        };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.openid_tokens, &token_hash(&token), &record)?;
        self.storage.commit(batch).await?;
        Ok(token)
    }

    /// The local user an unexpired OpenID token was given to.
    pub fn openid_token_owner(&self, token: &str) -> Result<Option<String>> {
        let record = self.storage.tables.openid_tokens.get(&token_hash(token))?;
        let live = record.filter(|record| record.expires_ts > now_ms());
        Ok(live.filter(|record| self.get_active(&record.localpart).ok().flatten().is_some()).map(|r| r.localpart))
    }

    /// Removes expired OpenID tokens; returns how many.
    pub fn purge_expired_openid_tokens(&self) -> Result<usize> {
        let now = now_ms();
        let mut batch = Batch::new();
        self.storage.tables.openid_tokens.for_each(|hash, record| {
            if record.expires_ts <= now {
                batch.remove(&self.storage.tables.openid_tokens, &hash);
            }
        })?;
        let removed = batch.len();
        self.storage.apply(batch)?;
        Ok(removed)
    }
}
