//! Email addresses of accounts: validation by mail and the account's list.
//!
//! Spec: client-server API "Adding Account Administrative Contact
//! Information" (`POST /register/email/requestToken`,
//! `/account/3pid/email/requestToken`, `/account/password/email/requestToken`,
//! `GET /account/3pid`, `POST /account/3pid/add`, `/account/3pid/delete`),
//! and the identity service API's `submitToken`, answered by this server
//! (the `submit_url` it gives clients, and the link in the mail).
//!
//! Refusals at `requestToken`, as Synapse answers them: no mail from this
//! server → `M_THREEPID_MEDIUM_NOT_SUPPORTED`; registering with an address
//! this server does not take → 403 `M_THREEPID_DENIED`; an address already
//! an account's → `M_THREEPID_IN_USE`; a reset for an address nobody has →
//! `M_THREEPID_NOT_FOUND`.

use serde::Deserialize;
use serde_json::json;

use crate::{
    config::RegistrationMode,
    email::{templates, ValidationPurpose},
    error::{Error, ErrorKind, Result},
    http::{request::percent_encode, Request, Response},
    services::Services,
    users::{
        threepids::{check_client_secret, normalize_email},
        Identity,
    },
};

/// Where clients (and the link in the mail) send the token back.
const SUBMIT_PATH: &str = "/_matrix/identity/v2/validate/email/submitToken";

#[derive(Debug, Deserialize)]
struct EmailTokenRequest {
    client_secret: String,
    email: String,
    send_attempt: u64,
}

pub async fn request_registration_token(s: &Services, request: &Request) -> Result<Response> {
    let (body, address) = read_token_request(s, request)?;
    if s.config.registration == RegistrationMode::Closed {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    if !s.email_map.may_register_here(&address) {
        tracing::info!(%address, "registration refused for the address's domain");
        return Err(Error::new(
            ErrorKind::ThreepidDenied,
            "Your email domain is not authorized to register on this server",
        ));
    }
    if s.users.email_owner(&address)?.is_some() {
        return Err(Error::new(ErrorKind::ThreepidInUse, "This email address is already in use"));
    }
    if s.config.policy.externals_mode && !s.email_invites.is_invited(&address)? {
        tracing::info!(%address, "registration refused on the externals' server: the address is not invited");
        return Err(Error::new(ErrorKind::ThreepidDenied, "Only invited addresses may register on this server"));
    }
    send_validation(s, request, ValidationPurpose::Registration, &body, &address).await
}

pub async fn request_add_token(s: &Services, request: &Request) -> Result<Response> {
    let (body, address) = read_token_request(s, request)?;
    if s.users.email_owner(&address)?.is_some() {
        return Err(Error::new(ErrorKind::ThreepidInUse, "This email address is already in use"));
    }
    send_validation(s, request, ValidationPurpose::AddAddress, &body, &address).await
}

pub async fn request_password_reset_token(s: &Services, request: &Request) -> Result<Response> {
    let (body, address) = read_token_request(s, request)?;
    if s.users.email_owner(&address)?.is_none() {
        return Err(Error::new(ErrorKind::ThreepidNotFound, "No account has this email address"));
    }
    send_validation(s, request, ValidationPurpose::PasswordReset, &body, &address).await
}

fn read_token_request(s: &Services, request: &Request) -> Result<(EmailTokenRequest, String)> {
    let body: EmailTokenRequest = request.json()?;
    check_client_secret(&body.client_secret)?;
    let address = normalize_email(&body.email)?;
    if !s.mailer.is_configured() {
        return Err(Error::new(ErrorKind::ThreepidMediumNotSupported, "This server does not send mail"));
    }
    Ok((body, address))
}

/// Starts the validation and, unless this attempt had its mail, sends it.
async fn send_validation(
    s: &Services,
    request: &Request,
    purpose: ValidationPurpose,
    body: &EmailTokenRequest,
    address: &str,
) -> Result<Response> {
    let lifetime = s.config.email_identity.validation_lifetime_secs;
    let started =
        s.users.start_email_validation(purpose, &body.client_secret, address, body.send_attempt, lifetime).await?;
    if let Some(token) = &started.token_to_send {
        let link = s.mailer.link(&format!(
            "{SUBMIT_PATH}?sid={}&client_secret={}&token={}",
            percent_encode(&started.sid),
            percent_encode(&body.client_secret),
            percent_encode(token)
        ));
        let language = s.mailer.language_for(request.accept_language.as_deref());
        let written = templates::validation(language, s.mailer.server_name(), purpose, &link, token);
        s.mailer.queue(address, written).await?;
    }
    Ok(Response::json(&json!({ "sid": started.sid, "submit_url": s.mailer.link(SUBMIT_PATH) })))
}

#[derive(Debug, Deserialize)]
struct SubmitToken {
    sid: String,
    client_secret: String,
    token: String,
}

/// `POST …/submitToken` (the code typed into a client): `{"success": true}`.
pub async fn submit_token(s: &Services, request: &Request) -> Result<Response> {
    let body: SubmitToken = request.json()?;
    s.users.submit_email_token(&body.sid, &body.client_secret, &body.token).await?;
    Ok(Response::json(&json!({ "success": true })))
}

/// `GET …/submitToken?sid=…&client_secret=…&token=…` (the link in the
/// mail, opened in a browser): a page saying whether it worked.
pub async fn follow_link(s: &Services, request: &Request) -> Result<Response> {
    let param = |name: &str| request.query(name).unwrap_or_default();
    let outcome = s.users.submit_email_token(param("sid"), param("client_secret"), param("token")).await;
    let language = s.mailer.language_for(request.accept_language.as_deref());
    let page = templates::link_followed(language, s.mailer.server_name(), outcome.is_ok());
    let status = if outcome.is_ok() { 200 } else { 400 };
    Ok(Response::bytes(page.into_bytes(), "text/html; charset=utf-8".to_owned()).with_status(status))
}

/// `GET /account/3pid`.
pub fn list(s: &Services, who: &Identity) -> Result<Response> {
    let threepids: Vec<_> = s
        .users
        .emails_of(&who.localpart)?
        .into_iter()
        .map(|(address, added)| json!({ "medium": "email", "address": address, "validated_at": added, "added_at": added }))
        .collect();
    Ok(Response::json(&json!({ "threepids": threepids })))
}

#[derive(Debug, Deserialize)]
struct AddBody {
    client_secret: String,
    sid: String,
    auth: Option<serde_json::Value>,
}

/// `POST /account/3pid/add`: the user's password, then an address they validated.
pub async fn add(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: AddBody = request.json()?;
    super::account::require_password(s, request, who, "POST /account/3pid/add", body.auth.as_ref()).await?;
    let address = s.users.validated_email(&body.sid, &body.client_secret, ValidationPurpose::AddAddress)?;
    s.users.bind_email(&who.localpart, &address).await?;
    s.users.forget_email_validation(&body.sid)?;
    super::third_party_invites::complete_email_invites(s, &who.localpart, &address).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    medium: String,
    address: String,
}

/// `POST /account/3pid/delete`.
pub async fn delete(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DeleteBody = request.json()?;
    if body.medium != "email" {
        return Err(Error::new(ErrorKind::ThreepidNotFound, "Only email addresses are kept here"));
    }
    let address = normalize_email(&body.address)?;
    if !s.users.unbind_email(&who.localpart, &address).await? {
        return Err(Error::new(ErrorKind::ThreepidNotFound, "This address is not on your account"));
    }
    Ok(Response::json(&json!({ "id_server_unbind_result": "no-support" })))
}
