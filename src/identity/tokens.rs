//! Identity service access tokens: owns the `identity_tokens` table.
//!
//! Spec: identity service API "Authentication" (`POST /account/register`
//! with an OpenID token from the user's homeserver, `GET /account`,
//! `POST /account/logout`). This server is its users' identity service
//! too: an OpenID token of its own users is checked locally, another
//! server's through that server's `/openid/userinfo`. Lookups also take the
//! user's homeserver access token, as the same server issued both.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};

use crate::{
    crypto::tokens::{new_access_token, token_hash},
    error::Result,
    storage::{records::IdentityTokenRecord, Batch, Storage},
    util::now_ms,
};

pub struct IdentityTokens {
    storage: Arc<Storage>,
}

impl IdentityTokens {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }

    /// A new identity service token for `user_id`.
    pub async fn register(&self, user_id: &UserId) -> Result<String> {
        let token = new_access_token();
        let record = IdentityTokenRecord { user_id: user_id.to_string(), created_ts: now_ms() };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.identity_tokens, &token_hash(&token), &record)?;
        self.storage.commit(batch).await?;
        Ok(token)
    }

    /// Whose token `token` is.
    pub fn owner(&self, token: &str) -> Result<Option<OwnedUserId>> {
        let record = self.storage.tables.identity_tokens.get(&token_hash(token))?;
        Ok(record.and_then(|record| UserId::parse(&record.user_id).ok()))
    }

    /// Ends `token`.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.identity_tokens, &token_hash(token));
        Ok(self.storage.commit(batch).await?)
    }
}
