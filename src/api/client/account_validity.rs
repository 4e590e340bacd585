//! Accounts that expire (`[account_validity]`, see
//! [`crate::users::validity`]), as Synapse serves them: the renewal link
//! (`GET /_matrix/client/unstable/account_validity/renew?token=`), a
//! renewal mail on request (`POST …/account_validity/send_mail`, allowed
//! to an expired account), and the admin API's
//! `POST /_synapse/admin/v1/account_validity/validity`.

use ruma::UserId;
use serde::Deserialize;
use serde_json::json;

use crate::{
    email::{renewal, templates},
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

/// `GET …/account_validity/renew?token=` (the mail's link, in a browser).
pub async fn renew(s: &Services, request: &Request) -> Result<Response> {
    let token = request.query("token").unwrap_or_default();
    let renewed = s.users.validity.renew_by_token(token).await?;
    if let Some((localpart, _)) = &renewed {
        s.users.refresh_directory_entry(localpart)?;
    }
    let language = s.mailer.language_for(request.accept_language.as_deref());
    let page = templates::renewal_followed(language, s.mailer.server_name(), renewed.as_ref().map(|(_, end)| *end));
    let status = if renewed.is_some() { 200 } else { 404 };
    Ok(Response::bytes(page.into_bytes(), "text/html; charset=utf-8".to_owned()).with_status(status))
}

/// `POST …/account_validity/send_mail`: a renewal mail now.
pub async fn send_mail(s: &Services, who: &Identity) -> Result<Response> {
    let Some((expires_ts, token)) = s.users.validity.renewal_token(&who.localpart)? else {
        return Err(Error::new(ErrorKind::BadRequest, "This account does not expire"));
    };
    renewal::send_renewal_mail(&s.users, &s.mailer, &who.localpart, expires_ts, &token).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct SetValidity {
    user_id: String,
    expiration_ts: Option<u64>,
}

/// `POST /_synapse/admin/v1/account_validity/validity` (server admins):
/// sets when an account ends (default: a full period from now).
pub async fn admin_set_validity(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    if !who.is_admin {
        return Err(Error::forbidden("Only server admins may change an account's validity"));
    }
    if !s.users.validity.is_enabled() {
        return Err(Error::new(ErrorKind::BadRequest, "Accounts do not expire on this server ([account_validity])"));
    }
    let body: SetValidity = request.json()?;
    let user = UserId::parse(&body.user_id).map_err(|_| Error::invalid_param("user_id is not a user id"))?;
    if user.server_name() != s.config.server_name || s.users.get_active(user.localpart())?.is_none() {
        return Err(Error::not_found("No such user on this server"));
    }
    let expiration_ts = s.users.validity.set_expiry(user.localpart(), body.expiration_ts).await?;
    s.users.refresh_directory_entry(user.localpart())?;
    tracing::info!(admin = %who.user_id, user = %user, expiration_ts, "account validity changed by an admin");
    Ok(Response::json(&json!({ "expiration_ts": expiration_ts })))
}
