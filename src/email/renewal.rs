//! The account validity pass (`[account_validity]`, see
//! [`crate::users::validity`]): renewal mails, expiry, deactivation.

use crate::{
    error::Result,
    storage::Batch,
    users::{validity::Due, Users},
};

use super::{templates, Mailer};

/// The path renewal links point at (Synapse's).
pub const RENEW_PATH: &str = "/_matrix/client/unstable/account_validity/renew";

/// Sends `localpart` a renewal mail at each of their addresses; how many.
pub async fn send_renewal_mail(
    users: &Users,
    mailer: &Mailer,
    localpart: &str,
    expires_ts: u64,
    token: &str,
) -> Result<usize> {
    let link = mailer.link(&format!("{RENEW_PATH}?token={}", crate::http::request::percent_encode(token)));
    let addresses = users.emails_of(localpart)?;
    for (address, _) in &addresses {
        let written = templates::renewal(mailer.language_for(None), mailer.server_name(), expires_ts, &link);
        mailer.queue(address, written).await?;
    }
    if addresses.is_empty() {
        tracing::warn!(user = localpart, "no address to send a renewal mail to");
    }
    Ok(addresses.len())
}

/// One pass over the accounts that expire: what is due for each is done.
pub async fn run_validity_pass(users: &Users, mailer: &Mailer) -> Result<()> {
    if !users.validity.is_enabled() {
        return Ok(());
    }
    for localpart in users.accounts_that_expire()? {
        let mut batch = Batch::new();
        let due = users.validity.due(&localpart, &mut batch)?;
        users.validity.commit(batch).await?;
        match due {
            None => {}
            Some(Due::RenewalMail { expires_ts, token }) => {
                send_renewal_mail(users, mailer, &localpart, expires_ts, &token).await?;
                tracing::info!(user = %localpart, expires_ts, "renewal mail sent");
            }
            Some(Due::Expired) => {
                users.refresh_directory_entry(&localpart)?;
                tracing::info!(user = %localpart, "account expired");
            }
            Some(Due::Deactivation) => {
                users.deactivate(&localpart, false).await?;
                tracing::info!(user = %localpart, "account deactivated: expired and not renewed");
            }
        }
    }
    Ok(())
}
