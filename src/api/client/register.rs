//! Account registration.
//!
//! Spec: client-server API "Account registration" (`POST /register`,
//! `GET /register/available`), "Token-authenticated registration"
//! (`GET /register/m.login.registration_token/validity`), and the
//! user-interactive authentication it uses.
//!
//! Order of checks, as clients expect it: the kind of account, whether
//! registration is open at all, the requested username (so a taken name fails
//! before any auth stage), the password policy, then user-interactive
//! authentication, then the password, then the account and (unless
//! `inhibit_login`) a device.
//!
//! With mail configured, `m.login.email.identity` is offered (required with
//! `[email_identity] require_email`): the validated address is bound to the
//! new account and, with `localpart_from_email`, gives its user id and
//! display name (see [`crate::users::threepids`]).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    config::{is_valid_registration_token, RegistrationMode},
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::{
        password_policy,
        threepids::display_name_from_email,
        uiaa::{self, Challenge, ThreepidCreds},
    },
};

use super::login::session_response;

#[derive(Debug, Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    auth: Option<Value>,
    /// A guest upgrading to a full account, keeping its user id (spec:
    /// "Guest access").
    guest_access_token: Option<String>,
}

pub async fn register(s: &Services, request: &Request) -> Result<Response> {
    let mut raw = request.json_object()?;
    let session_id = raw["auth"]["session"].as_str().map(str::to_owned);
    // Only a remembered request holds a password hash, never a client's.
    raw.as_object_mut().map(|fields| fields.remove(REMEMBERED_HASH));
    if let (Some(id), Some(fields)) = (&session_id, raw.as_object_mut()) {
        // What the session's first request gave, for a request that repeats
        // only part of it (as Synapse remembers it).
        if let Some(Value::Object(remembered)) = s.users.uiaa_params(id)? {
            for (key, value) in remembered {
                fields.entry(key).or_insert(value);
            }
        }
    }
    let body: RegisterBody = crate::http::request::from_json_value(raw.clone())?;
    match request.query("kind").unwrap_or("user") {
        "user" => register_user(s, request, body, session_id.as_deref(), &raw).await,
        "guest" => register_guest(s, request, body).await,
        other => Err(Error::invalid_param(format!("Unknown account kind {other:?}"))),
    }
}

/// The flows registration offers: with mail, the email stage too (alone
/// when an address is required).
fn registration_flows(s: &Services) -> Result<&'static [&'static [&'static str]]> {
    use uiaa::{DUMMY, EMAIL_IDENTITY, REGISTRATION_TOKEN};
    let email = if s.config.email_identity.require_email {
        EmailStage::Required
    } else if s.mailer.is_configured() {
        EmailStage::Offered
    } else {
        EmailStage::None
    };
    Ok(match (s.config.registration, email) {
        (RegistrationMode::Closed, _) => return Err(Error::forbidden("Registration is disabled on this server")),
        (RegistrationMode::Open, EmailStage::None) => &[&[DUMMY]],
        (RegistrationMode::Open, EmailStage::Offered) => &[&[DUMMY], &[EMAIL_IDENTITY]],
        (RegistrationMode::Open, EmailStage::Required) => &[&[EMAIL_IDENTITY]],
        (RegistrationMode::Token, EmailStage::None) => &[&[REGISTRATION_TOKEN]],
        (RegistrationMode::Token, EmailStage::Offered) => {
            &[&[REGISTRATION_TOKEN], &[REGISTRATION_TOKEN, EMAIL_IDENTITY]]
        }
        (RegistrationMode::Token, EmailStage::Required) => &[&[REGISTRATION_TOKEN, EMAIL_IDENTITY]],
    })
}

#[derive(Clone, Copy)]
enum EmailStage {
    None,
    Offered,
    Required,
}

async fn register_user(
    s: &Services,
    request: &Request,
    body: RegisterBody,
    session_id: Option<&str>,
    raw: &Value,
) -> Result<Response> {
    // A retry sent before the first answer waits for it, then finds its account.
    let _registering = match session_id {
        Some(id) => Some(s.users.lock_registration(id).await),
        None => None,
    };
    // The same request again after it succeeded: the account it made, logged
    // in again (a client retrying after a lost answer). A different request
    // with the spent session goes on, to be refused.
    if let Some((localpart, params)) = session_id.map(|id| s.users.registered_with(id)).transpose()?.flatten() {
        let same_password = match &body.password {
            Some(password) => s.users.check_password(&localpart, password, &request.client_ip).await.is_ok(),
            None => true,
        };
        if params == request_fingerprint(raw) && same_password {
            return finish_registration(s, request, &localpart, body).await;
        }
    }
    let flows = registration_flows(s)?;
    let identity = &s.config.email_identity;
    let upgraded_guest = match &body.guest_access_token {
        Some(token) => Some(guest_to_upgrade(s, token, body.username.as_deref()).await?),
        None => None,
    };
    // The address will name the account: the username asked for does not.
    let username = if identity.require_email && identity.localpart_from_email { None } else { body.username.as_ref() };
    let localpart = match (&upgraded_guest, username) {
        (Some(guest), _) => Some(guest.clone()),
        (None, Some(username)) => {
            let localpart = s.users.localpart_for_registration(username)?;
            if !s.users.is_available(&localpart)? {
                return Err(Error::new(ErrorKind::UserInUse, "The user id is already taken"));
            }
            Some(localpart)
        }
        (None, None) => None,
    };
    if let Some(password) = &body.password {
        password_policy::check(&s.users.password_policy, password)?;
    }
    let challenge = Challenge { endpoint: "POST /register", localpart: None, flows, client_ip: &request.client_ip };
    let lifetime = s.config.uiaa_session_lifetime_secs;
    let session = match s.users.user_interactive_auth(&challenge, body.auth.as_ref(), lifetime).await {
        Ok(session) => session,
        Err(error) => {
            if let (ErrorKind::UserInteractive(info), None) = (&error.kind, &body.auth) {
                if let Some(id) = info["session"].as_str() {
                    let remembered = without_password(s, raw).await?;
                    s.users.remember_uiaa_params(id, &challenge, &remembered, lifetime)?;
                }
            }
            return Err(error);
        }
    };
    let password_hash = match (&body.password, raw.get(REMEMBERED_HASH).and_then(Value::as_str)) {
        (Some(password), _) => s.users.hash_password(password).await?,
        (None, Some(hash)) => hash.to_owned(),
        (None, None) => return Err(Error::new(ErrorKind::MissingParam, "A password is required")),
    };
    if let Some(token) = &session.registration_token {
        s.users.consume_registration_token(token)?;
    }
    let email = session.validated_email.as_deref();
    let upgraded = upgraded_guest.is_some();
    let localpart = match upgraded_guest {
        // The guest's account becomes a full one, under its own id.
        Some(guest) => {
            s.users.upgrade_guest(&guest, password_hash).await?;
            if let Some(address) = email {
                s.users.bind_email(&guest, address).await?;
            }
            guest
        }
        None => {
            let localpart = match (localpart, email) {
                (_, Some(address)) if identity.localpart_from_email => s.users.localpart_for_email(address)?,
                (Some(localpart), _) => localpart,
                (None, _) => generated_localpart(s)?,
            };
            match email {
                Some(address) => {
                    create_account_with_email(s, &localpart, password_hash, address, body.auth.as_ref()).await?
                }
                None => drop(s.users.create_account_with_hash(&localpart, Some(password_hash), false, false).await?),
            }
            localpart
        }
    };
    tracing::info!(user = %localpart, email = email.unwrap_or_default(), upgraded, "registered");
    if let Some(id) = session_id {
        s.users.note_registered(id, &localpart, &request_fingerprint(raw))?;
    }
    finish_registration(s, request, &localpart, body).await
}

/// The localpart of the guest whose access token a registration carries
/// (`guest_access_token`): a guest's own, and the username asked for, if
/// any, must be the guest's (as Synapse checks).
async fn guest_to_upgrade(s: &Services, token: &str, username: Option<&str>) -> Result<String> {
    let refused = || Error::forbidden("Cannot register taken user ID without valid guest credentials for that user");
    let guest = s.users.authenticate(token).await.map_err(|_| refused())?;
    if !guest.is_guest {
        return Err(refused());
    }
    if let Some(username) = username {
        if s.users.localpart_for_registration(username)? != guest.localpart {
            return Err(refused());
        }
    }
    Ok(guest.localpart)
}

/// Where remembered registration parameters keep the password's hash
/// (the password itself is never stored).
const REMEMBERED_HASH: &str = "org.conduit.password_hash";

/// What makes two registration requests the same one: their parameters
/// without `auth` and the password (checked against the account instead).
fn request_fingerprint(raw: &Value) -> Value {
    let mut fingerprint = raw.clone();
    if let Some(fields) = fingerprint.as_object_mut() {
        for key in ["auth", "password", REMEMBERED_HASH] {
            fields.remove(key);
        }
    }
    fingerprint
}

/// A registration request's parameters to remember: without `auth`, and
/// with the password replaced by its hash.
async fn without_password(s: &Services, raw: &Value) -> Result<Value> {
    let mut remembered = raw.clone();
    if let Some(fields) = remembered.as_object_mut() {
        fields.remove("auth");
        fields.remove(REMEMBERED_HASH);
        if let Some(Value::String(password)) = fields.remove("password") {
            fields.insert(REMEMBERED_HASH.to_owned(), json!(s.users.hash_password(&password).await?));
        }
    }
    Ok(remembered)
}

/// Creates the account holding `address`, claimed first so that two
/// registrations with one address make one account.
async fn create_account_with_email(
    s: &Services,
    localpart: &str,
    password_hash: String,
    address: &str,
    auth: Option<&Value>,
) -> Result<()> {
    if !s.email_map.may_register_here(address) {
        return Err(Error::new(
            ErrorKind::ThreepidDenied,
            "Your email domain is not authorized to register on this server",
        ));
    }
    s.users.bind_email(localpart, address).await?;
    if let Err(error) = s.users.create_account_with_hash(localpart, Some(password_hash), false, false).await {
        s.users.unbind_email(localpart, address).await?;
        return Err(error);
    }
    if s.config.email_identity.localpart_from_email {
        s.users.set_initial_display_name(localpart, &display_name_from_email(address)).await?;
    }
    if let Some(creds) = ThreepidCreds::in_auth(auth) {
        s.users.forget_email_validation(&creds.sid)?;
    }
    super::third_party_invites::complete_email_invites(s, localpart, address).await
}

async fn register_guest(s: &Services, request: &Request, body: RegisterBody) -> Result<Response> {
    if !s.config.allow_guest_registration {
        return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest access is disabled on this server"));
    }
    let localpart = generated_localpart(s)?;
    s.users.create_account(&localpart, None, true, false).await?;
    // Guests cannot pick their device id (spec: `device_id` is ignored for guests).
    finish_registration(s, request, &localpart, RegisterBody { device_id: None, ..body }).await
}

async fn finish_registration(s: &Services, request: &Request, localpart: &str, body: RegisterBody) -> Result<Response> {
    let user_id = s.users.user_id(localpart)?;
    if body.inhibit_login {
        return Ok(Response::json(&json!({ "user_id": user_id })));
    }
    let session = s
        .users
        .open_session(
            localpart,
            body.device_id,
            body.initial_device_display_name,
            body.refresh_token,
            &request.client_ip,
        )
        .await?;
    Ok(session_response(s, &user_id, &session))
}

/// A fresh random localpart for registrations without a username.
fn generated_localpart(s: &Services) -> Result<String> {
    for _ in 0..8 {
        let candidate = random_alphanumeric(12).to_lowercase();
        if s.users.is_available(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(Error::internal("generating a user id", "no free random localpart"))
}

/// `GET /register/available?username=`.
pub fn available(s: &Services, request: &Request) -> Result<Response> {
    let username = request
        .query("username")
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "The `username` query parameter is required"))?;
    let localpart = s.users.localpart_for_registration(username)?;
    if !s.users.is_available(&localpart)? {
        return Err(Error::new(ErrorKind::UserInUse, "The user id is already taken"));
    }
    Ok(Response::json(&json!({ "available": true })))
}

/// `GET /register/m.login.registration_token/validity?token=`.
pub fn token_validity(s: &Services, request: &Request) -> Result<Response> {
    if s.config.registration != RegistrationMode::Token {
        return Err(Error::forbidden("Registration tokens are not used on this server"));
    }
    let token = request
        .query("token")
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "The `token` query parameter is required"))?;
    let valid = is_valid_registration_token(token) && s.users.registration_token_is_valid(token)?;
    Ok(Response::json(&json!({ "valid": valid })))
}
