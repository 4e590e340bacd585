//! Account management: who am I, password change, deactivation.
//!
//! Spec: client-server API "Current account information" (`/account/whoami`),
//! "Password management" (`POST /account/password`: signed in, with the
//! password; or without an access token, with an address validated by
//! mail, the account it belongs to), "Account deactivation"
//! (`POST /account/deactivate`); and the password policy (MSC2000, as
//! Synapse serves it: `GET /password_policy`).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::Result,
    error::{Error, ErrorKind},
    http::{Request, Response},
    services::Services,
    users::{
        password_policy,
        uiaa::{self, Challenge, ThreepidCreds},
        Identity,
    },
};

pub fn whoami(who: &Identity) -> Response {
    let mut body = json!({ "user_id": who.user_id, "device_id": who.device_id });
    if who.is_guest {
        body["is_guest"] = json!(true);
    }
    Response::json(&body)
}

/// `GET /password_policy`.
pub fn password_policy(s: &Services) -> Response {
    Response::json(&password_policy::describe(&s.users.password_policy))
}

/// Runs user-interactive authentication with the user's password for `endpoint`.
pub async fn require_password(
    s: &Services,
    request: &Request,
    who: &Identity,
    endpoint: &str,
    auth: Option<&Value>,
) -> Result<()> {
    let challenge = Challenge {
        endpoint,
        localpart: Some(&who.localpart),
        flows: &[&[uiaa::PASSWORD]],
        client_ip: &request.client_ip,
    };
    s.users.user_interactive_auth(&challenge, auth, s.config.uiaa_session_lifetime_secs).await.map(drop)
}

#[derive(Debug, Deserialize)]
struct PasswordBody {
    new_password: String,
    #[serde(default = "crate::util::yes")]
    logout_devices: bool,
    auth: Option<Value>,
}

pub async fn change_password(s: &Services, request: &Request, who: Option<&Identity>) -> Result<Response> {
    let body: PasswordBody = request.json()?;
    password_policy::check(&s.users.password_policy, &body.new_password)?;
    let Some(who) = who else { return reset_password_by_email(s, request, &body).await };
    require_password(s, request, who, "POST /account/password", body.auth.as_ref()).await?;
    s.users.set_password(&who.localpart, &body.new_password).await?;
    if body.logout_devices {
        s.users.logout_other_devices(&who.localpart, &who.device_id).await?;
    }
    tracing::info!(user = %who.user_id, "password changed");
    Ok(Response::empty_object())
}

/// A password changed without signing in: the user proves they hold an
/// address of the account (`m.login.email.identity`, the validation asked
/// for at `/account/password/email/requestToken`).
async fn reset_password_by_email(s: &Services, request: &Request, body: &PasswordBody) -> Result<Response> {
    if !s.mailer.is_configured() {
        return Err(Error::new(ErrorKind::MissingToken, "Missing access token"));
    }
    let challenge = Challenge {
        endpoint: "POST /account/password",
        localpart: None,
        flows: &[&[uiaa::EMAIL_IDENTITY]],
        client_ip: &request.client_ip,
    };
    let auth = body.auth.as_ref();
    let session = s.users.user_interactive_auth(&challenge, auth, s.config.uiaa_session_lifetime_secs).await?;
    let address = session.validated_email.ok_or_else(|| Error::forbidden("No validated email address"))?;
    let localpart = s
        .users
        .email_owner(&address)?
        .ok_or_else(|| Error::new(ErrorKind::ThreepidNotFound, "No account has this email address"))?;
    s.users.set_password(&localpart, &body.new_password).await?;
    if let Some(creds) = ThreepidCreds::in_auth(auth) {
        s.users.forget_email_validation(&creds.sid)?; // one reset per mail
    }
    if body.logout_devices {
        s.users.logout_other_devices(&localpart, "").await?;
    }
    tracing::info!(user = %localpart, "password reset by email");
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeactivateBody {
    auth: Option<Value>,
    /// Served redacted to those who join later (`users::erased`).
    #[serde(default)]
    erase: bool,
}

pub async fn deactivate(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DeactivateBody = request.json()?;
    require_password(s, request, who, "POST /account/deactivate", body.auth.as_ref()).await?;
    s.users.deactivate(&who.localpart, body.erase).await?;
    Ok(Response::json(&json!({ "id_server_unbind_result": "no-support" })))
}

/// `POST /user/{userId}/openid/request_token` (spec: "OpenID"), for oneself only.
pub async fn openid_request_token(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only ask for an OpenID token for yourself"));
    }
    let token = s.users.new_openid_token(&who.localpart).await?;
    Ok(Response::json(&json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": s.config.server_name,
        "expires_in": crate::users::openid::OPENID_TOKEN_LIFETIME_SECS,
    })))
}
