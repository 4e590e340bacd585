//! Accounts that expire (`[account_validity]`): owns the `account_validity`
//! table. No spec section; the behaviour and names are Synapse's, which
//! the reference deployment's clients know (see
//! `../shared/guides/public-sector.md`, "Account validity"):
//!
//! - an account is valid for `period_days` from its registration or its
//!   last renewal; an account older than the setting gets a full period
//!   from the first pass after it is turned on;
//! - renewal mails go to the account's addresses `renew_before_days` before
//!   the end, each with a link (`GET
//!   /_matrix/client/unstable/account_validity/renew?token=…`) that renews
//!   for a full period from the moment it is followed;
//! - an expired account gets 403 `ORG_MATRIX_EXPIRED_ACCOUNT` on every
//!   request but logging out and asking for a renewal mail, and leaves the
//!   user directory;
//! - `deactivate_after_days` after the end, it is deactivated.
//!
//! Server admins never expire (an operator must keep a way in). Time comes
//! from a [`Clock`] that tests move forward.

use std::sync::Arc;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::Users;
use crate::{
    config::AccountValidityConfig,
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    storage::{records::ValidityRecord, Batch, Storage},
    util::Clock,
};

const DAY_MS: u64 = 24 * 3600 * 1000;

pub struct AccountValidity {
    storage: Arc<Storage>,
    period_ms: u64,
    /// Days before the end a mail goes out, largest first.
    reminders: Vec<u64>,
    deactivate_after_ms: Option<u64>,
    pub clock: Clock,
}

/// What a pass over the accounts found to do for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send a renewal mail (the end, and the token for the link).
    RenewalMail { expires_ts: u64, token: String },
    /// Deactivate the account.
    Deactivation,
    /// Take the account out of the user directory (it just expired).
    Expired,
}

impl AccountValidity {
    pub fn new(storage: Arc<Storage>, config: &AccountValidityConfig) -> Self {
        let mut reminders = config.renew_before_days.clone();
        reminders.sort_unstable_by(|a, b| b.cmp(a));
        reminders.dedup();
        Self {
            storage,
            period_ms: config.period_days.saturating_mul(DAY_MS),
            reminders,
            deactivate_after_ms: (config.deactivate_after_days > 0)
                .then(|| config.deactivate_after_days.saturating_mul(DAY_MS)),
            clock: Clock::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.period_ms > 0
    }

    fn record(&self, localpart: &str) -> Result<Option<ValidityRecord>> {
        Ok(self.storage.tables.account_validity.get(&localpart.to_owned())?)
    }

    fn store(&self, batch: &mut Batch, localpart: &str, record: &ValidityRecord) -> Result<()> {
        batch.insert(&self.storage.tables.account_validity, &localpart.to_owned(), record)?;
        Ok(())
    }

    /// A full period from now, with a new renewal token.
    fn fresh_record(&self, localpart: &str) -> ValidityRecord {
        // The token names its account: the link finds the record without an index.
        let token = format!("{}.{}", URL_SAFE_NO_PAD.encode(localpart), random_alphanumeric(32));
        ValidityRecord {
            expires_ts: self.clock.now_ms().saturating_add(self.period_ms),
            renewal_token: token,
            reminders_sent: 0,
            expired_noted: false,
        }
    }

    /// When `localpart`'s account ends, if it does.
    pub fn expires_ts(&self, localpart: &str) -> Result<Option<u64>> {
        if !self.is_enabled() {
            return Ok(None);
        }
        Ok(self.record(localpart)?.map(|record| record.expires_ts))
    }

    /// Whether the account has ended (an account without a record yet has
    /// not: the next pass gives it a period).
    pub fn is_expired(&self, localpart: &str) -> Result<bool> {
        Ok(self.expires_ts(localpart)?.is_some_and(|end| end <= self.clock.now_ms()))
    }

    /// Refuses the requests of an expired account (not a server admin's).
    pub fn check(&self, localpart: &str, is_admin: bool) -> Result<()> {
        if is_admin || !self.is_expired(localpart)? {
            return Ok(());
        }
        Err(Error::new(ErrorKind::ExpiredAccount, "User account has expired"))
    }

    /// Starts a new account's period.
    pub async fn start(&self, localpart: &str) -> Result<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let mut batch = Batch::new();
        self.store(&mut batch, localpart, &self.fresh_record(localpart))?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Renews the account a renewal link's token names; its new end.
    pub async fn renew_by_token(&self, token: &str) -> Result<Option<(String, u64)>> {
        let Some(localpart) = token
            .split_once('.')
            .and_then(|(encoded, _)| URL_SAFE_NO_PAD.decode(encoded).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
        else {
            return Ok(None);
        };
        let Some(record) = self.record(&localpart)? else { return Ok(None) };
        if !crate::crypto::tokens::same_secret(&record.renewal_token, token) {
            return Ok(None);
        }
        let expires_ts = self.set_expiry(&localpart, None).await?;
        Ok(Some((localpart, expires_ts)))
    }

    /// Sets the end of an account (`None`: a full period from now), with a
    /// new token; reminders start over. Returns the end.
    pub async fn set_expiry(&self, localpart: &str, expires_ts: Option<u64>) -> Result<u64> {
        let mut record = self.fresh_record(localpart);
        if let Some(expires_ts) = expires_ts {
            record.expires_ts = expires_ts;
        }
        let mut batch = Batch::new();
        self.store(&mut batch, localpart, &record)?;
        self.storage.commit(batch).await?;
        tracing::info!(user = localpart, expires_ts = record.expires_ts, "account validity set");
        Ok(record.expires_ts)
    }

    /// What is due for `localpart` now (stored as done: call once per pass).
    pub fn due(&self, localpart: &str, batch: &mut Batch) -> Result<Option<Due>> {
        let now = self.clock.now_ms();
        let Some(mut record) = self.record(localpart)? else {
            self.store(batch, localpart, &self.fresh_record(localpart))?;
            return Ok(None);
        };
        if now >= record.expires_ts {
            if self.deactivate_after_ms.is_some_and(|after| now >= record.expires_ts.saturating_add(after)) {
                return Ok(Some(Due::Deactivation));
            }
            if !record.expired_noted {
                record.expired_noted = true;
                self.store(batch, localpart, &record)?;
                return Ok(Some(Due::Expired));
            }
            return Ok(None);
        }
        let left = record.expires_ts - now;
        let reached = self.reminders.iter().filter(|days| left <= **days * DAY_MS).count() as u32;
        if reached > record.reminders_sent {
            record.reminders_sent = reached;
            self.store(batch, localpart, &record)?;
            return Ok(Some(Due::RenewalMail { expires_ts: record.expires_ts, token: record.renewal_token }));
        }
        Ok(None)
    }

    /// Writes what [`AccountValidity::due`] recorded.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// The renewal token of an account (a mail asked for by the user).
    pub fn renewal_token(&self, localpart: &str) -> Result<Option<(u64, String)>> {
        Ok(self.record(localpart)?.map(|record| (record.expires_ts, record.renewal_token)))
    }
}

impl Users {
    /// The local accounts a validity pass looks at: active, not guests, not admins.
    pub fn accounts_that_expire(&self) -> Result<Vec<String>> {
        let mut accounts = Vec::new();
        self.storage.tables.users.for_each(|localpart, user| {
            if !user.deactivated && !user.is_guest && !user.is_admin {
                accounts.push(localpart);
            }
        })?;
        Ok(accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validity(deactivate_after_days: u64) -> (tempfile::TempDir, AccountValidity) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 8 << 20).unwrap());
        let config = AccountValidityConfig { period_days: 30, renew_before_days: vec![1, 7], deactivate_after_days };
        (dir, AccountValidity::new(storage, &config))
    }

    fn day(validity: &AccountValidity) -> Option<Due> {
        let mut batch = Batch::new();
        let due = validity.due("alice", &mut batch).unwrap();
        validity.storage.apply(batch).unwrap();
        due
    }

    #[tokio::test]
    async fn reminders_go_once_each_then_the_account_expires_and_is_deactivated() {
        let (_dir, validity) = validity(10);
        validity.start("alice").await.unwrap();
        assert_eq!(day(&validity), None);
        validity.clock.advance(std::time::Duration::from_millis(23 * DAY_MS + 1));
        assert!(matches!(day(&validity), Some(Due::RenewalMail { .. })), "7 days before");
        assert_eq!(day(&validity), None, "once");
        validity.clock.advance(std::time::Duration::from_millis(6 * DAY_MS));
        assert!(matches!(day(&validity), Some(Due::RenewalMail { .. })), "1 day before");
        assert!(validity.check("alice", false).is_ok());
        validity.clock.advance(std::time::Duration::from_millis(DAY_MS));
        assert_eq!(validity.check("alice", false).unwrap_err().errcode(), "ORG_MATRIX_EXPIRED_ACCOUNT");
        assert!(validity.check("alice", true).is_ok(), "admins never expire");
        assert_eq!(day(&validity), Some(Due::Expired));
        assert_eq!(day(&validity), None);
        validity.clock.advance(std::time::Duration::from_millis(10 * DAY_MS));
        assert_eq!(day(&validity), Some(Due::Deactivation));
    }

    #[tokio::test]
    async fn a_renewal_link_renews_its_own_account_only() {
        let (_dir, validity) = validity(0);
        validity.start("alice").await.unwrap();
        let (end, token) = validity.renewal_token("alice").unwrap().unwrap();
        validity.clock.advance(std::time::Duration::from_millis(40 * DAY_MS));
        assert!(validity.is_expired("alice").unwrap());
        let forged = format!("{}.guess", URL_SAFE_NO_PAD.encode("alice"));
        assert_eq!(validity.renew_by_token(&forged).await.unwrap(), None);
        let (who, new_end) = validity.renew_by_token(&token).await.unwrap().unwrap();
        assert_eq!(who, "alice");
        assert!(new_end > end + 39 * DAY_MS && !validity.is_expired("alice").unwrap());
        assert_eq!(validity.renew_by_token(&token).await.unwrap(), None, "a link renews once");
    }
}
