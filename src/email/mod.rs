//! Mail that goes out: owns the `mail_outbox` table.
//!
//! A mail is queued durably ([`Mailer::queue`] returns once it is on disk),
//! then handed to the SMTP server by one background task, in queue order.
//! A mail the server refuses for now (it is down, or answers 4xx) waits
//! [`FIRST_RETRY`], doubling up to [`MAX_RETRY`], and is dropped after
//! [`MAX_ATTEMPTS`]; one refused for good (5xx: no such address) is dropped
//! at once. Either is logged. A crash loses nothing queued: the next start
//! sends it (and a mail the SMTP server took just before a crash may go
//! twice, which a validation link survives).

pub mod renewal;
pub mod templates;
mod transport;

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use crate::{
    config::{Config, MailLanguage},
    error::{Error, ErrorKind, Result},
    storage::{records::MailRecord, Batch, Storage},
    util::now_ms,
};

pub use templates::{ValidationPurpose, Written};
use transport::{SendError, SmtpTransport};

/// The wait after a first failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Attempts before a mail is dropped (about two days at the longest wait).
pub const MAX_ATTEMPTS: u32 = 60;
/// Mails read from the queue per pass.
const PASS_SIZE: usize = 64;

pub struct Mailer {
    storage: Arc<Storage>,
    transport: Option<SmtpTransport>,
    default_language: MailLanguage,
    /// Where links in mails point (no trailing slash).
    link_base: String,
    server_name: String,
    wakeup: Arc<Notify>,
}

impl Mailer {
    /// The mailer `[email]` describes; without it, one that sends nothing.
    pub fn new(config: &Config, storage: Arc<Storage>) -> Self {
        let server_name = config.server_name.to_string();
        let email = config.email.as_ref();
        let transport = email.and_then(|email| match SmtpTransport::new(email, &server_name) {
            Ok(transport) => Some(transport),
            Err(error) => {
                tracing::error!(%error, "mail cannot go out: the [email] settings are unusable");
                None
            }
        });
        let link_base = email
            .and_then(|email| email.link_base_url.clone())
            .or_else(|| config.well_known.client.clone())
            .unwrap_or_else(|| format!("https://{server_name}"));
        Self {
            storage,
            transport,
            default_language: email.map(|email| email.default_language).unwrap_or_default(),
            link_base: link_base.trim_end_matches('/').to_owned(),
            server_name,
            wakeup: Arc::new(Notify::new()),
        }
    }

    /// Whether mail can go out (an address can be validated).
    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// The language of a mail for a request's `Accept-Language`.
    pub fn language_for(&self, accept_language: Option<&str>) -> MailLanguage {
        templates::language_for(accept_language, self.default_language)
    }

    /// `path_and_query` under the base of links in mails.
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.link_base)
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Queues a mail to `to`; returns once it is durable.
    pub async fn queue(&self, to: &str, written: Written) -> Result<()> {
        if !self.is_configured() {
            return Err(Error::new(ErrorKind::ThreepidMediumNotSupported, "This server does not send mail"));
        }
        let now = now_ms();
        let mail = MailRecord {
            to: to.to_owned(),
            subject: written.subject,
            text: written.text,
            html: written.html,
            queued_ts: now,
            attempts: 0,
            next_attempt_ts: now,
        };
        let position = self.storage.next_count()?;
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.mail_outbox, &position, &mail)?;
        self.storage.commit(batch).await?;
        tracing::info!(to = %mail.to, subject = %mail.subject, "mail queued");
        self.wakeup.notify_one();
        Ok(())
    }

    /// Mails queued and not yet accepted by the SMTP server.
    pub fn queued(&self) -> usize {
        self.storage.tables.mail_outbox.len()
    }

    /// Tries every due mail once; returns how long until the next is due.
    async fn send_due(&self, transport: &SmtpTransport) -> Duration {
        let mails = match self.storage.tables.mail_outbox.first(PASS_SIZE) {
            Ok(mails) => mails,
            Err(error) => {
                tracing::error!(%error, "could not read the mail queue");
                return MAX_RETRY;
            }
        };
        let mut next_due: Option<u64> = None;
        for (position, mail) in mails {
            let now = now_ms();
            if mail.next_attempt_ts > now {
                next_due = Some(next_due.map_or(mail.next_attempt_ts, |due| due.min(mail.next_attempt_ts)));
                continue;
            }
            let outcome = transport.send(&mail).await;
            if let Some(retry_at) = self.settle(position, mail, outcome) {
                next_due = Some(next_due.map_or(retry_at, |due| due.min(retry_at)));
            }
        }
        let wait_ms = next_due.map_or(MAX_RETRY.as_millis() as u64, |due| due.saturating_sub(now_ms()));
        Duration::from_millis(wait_ms.max(10))
    }

    /// Removes a sent or given-up mail, or stores its next attempt (whose
    /// time it returns).
    fn settle(&self, position: u64, mut mail: MailRecord, outcome: Result<(), SendError>) -> Option<u64> {
        let table = &self.storage.tables.mail_outbox;
        let mut batch = Batch::new();
        let retry_at = match outcome {
            Ok(()) => {
                tracing::info!(to = %mail.to, attempts = mail.attempts + 1, "mail sent");
                batch.remove(table, &position);
                None
            }
            Err(error @ SendError::Permanent(_)) => {
                tracing::warn!(to = %mail.to, %error, "mail refused by the SMTP server; dropped");
                batch.remove(table, &position);
                None
            }
            Err(error) if mail.attempts + 1 >= MAX_ATTEMPTS => {
                tracing::error!(to = %mail.to, %error, attempts = mail.attempts + 1, "mail never sent; dropped");
                batch.remove(table, &position);
                None
            }
            Err(error) => {
                mail.attempts += 1;
                let wait = retry_wait(mail.attempts);
                mail.next_attempt_ts = now_ms() + wait.as_millis() as u64;
                tracing::warn!(to = %mail.to, %error, retry_in_secs = wait.as_secs(), "mail not sent yet");
                let retry_at = mail.next_attempt_ts;
                if let Err(error) = batch.insert(table, &position, &mail) {
                    tracing::error!(%error, "could not record a mail's attempt");
                }
                Some(retry_at)
            }
        };
        // Not waited for: at worst a mail is tried once more after a crash.
        if let Err(error) = self.storage.apply(batch) {
            tracing::error!(%error, "could not update the mail queue");
        }
        retry_at
    }
}

/// The wait after `attempts` failed attempts: [`FIRST_RETRY`] doubling, up to [`MAX_RETRY`].
pub fn retry_wait(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

/// Starts the task that sends queued mail (those a crash left first).
pub fn start(services: &Arc<crate::services::Services>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    if !services.mailer.is_configured() {
        return;
    }
    let wakeup = Arc::clone(&services.mailer.wakeup);
    let weak = Arc::downgrade(services);
    runtime.spawn(async move {
        loop {
            let notified = wakeup.notified();
            let wait = match weak.upgrade() {
                Some(services) => match &services.mailer.transport {
                    Some(transport) => services.mailer.send_due(transport).await,
                    None => return,
                },
                None => return,
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_an_hour() {
        assert_eq!(retry_wait(1), FIRST_RETRY);
        assert_eq!(retry_wait(2), FIRST_RETRY * 2);
        assert_eq!(retry_wait(40), MAX_RETRY);
        let total: Duration = (1..MAX_ATTEMPTS).map(retry_wait).sum();
        assert!(total > Duration::from_secs(24 * 3600), "a day's outage loses no mail: {total:?}");
    }
}
