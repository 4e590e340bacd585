//! Login, logout and token refresh.
//!
//! Spec: client-server API "Login" (legacy API: `GET`/`POST /login` with
//! `m.login.password`, the user named by `m.id.user` or by an email address
//! of the account, `m.id.thirdparty`), "Refreshing access tokens"
//! (`POST /refresh`), `POST /logout`, `POST /logout/all`.

use ruma::UserId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::{sessions::NewSession, uiaa::Identifier, Identity},
};

pub fn flows() -> Response {
    Response::json(&json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Debug, Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level user field, still sent by older clients.
    user: Option<String>,
    /// Deprecated top-level third-party identifier (`medium` and `address`).
    medium: Option<String>,
    address: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

pub async fn login(s: &Services, request: &Request) -> Result<Response> {
    let body: LoginBody = request.json()?;
    if body.kind != "m.login.password" {
        return Err(Error::invalid_param(format!("Unsupported login type {:?}", body.kind)));
    }
    let legacy_thirdparty = || Identifier {
        kind: "m.id.thirdparty".to_owned(),
        user: None,
        medium: body.medium.clone(),
        address: body.address.clone(),
    };
    let named = match (&body.identifier, &body.user) {
        (Some(identifier), _) => identifier.localpart(&s.users)?,
        (None, Some(user)) => s.users.localpart_from_identifier(user),
        (None, None) if body.address.is_some() => legacy_thirdparty().localpart(&s.users)?,
        (None, None) => return Err(Error::bad_json("Missing field `identifier`")),
    };
    let password = body.password.as_deref().ok_or_else(|| Error::bad_json("Missing field `password`"))?;
    // A user of another server, or an address nobody has, gets the same
    // answer as a wrong password.
    let localpart = named.unwrap_or_default();
    s.users.check_password(&localpart, password, &request.client_ip).await?;
    let session = s
        .users
        .open_session(
            &localpart,
            body.device_id,
            body.initial_device_display_name,
            body.refresh_token,
            &request.client_ip,
        )
        .await?;
    let user_id = s.users.user_id(&localpart)?;
    tracing::info!(user = %user_id, device = %session.device_id, "logged in");
    Ok(session_response(s, &user_id, &session))
}

/// The body shared by login and registration responses.
pub fn session_response(s: &Services, user_id: &UserId, session: &NewSession) -> Response {
    let mut body = json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.config.server_name,
    });
    if let Some(refresh_token) = &session.refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    if let Some(expires_in_ms) = session.expires_in_ms {
        body["expires_in_ms"] = json!(expires_in_ms);
    }
    if let Some(base_url) = &s.config.well_known.client {
        body["well_known"] = json!({ "m.homeserver": { "base_url": base_url } });
    }
    Response::json(&body)
}

#[derive(Debug, Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(s: &Services, request: &Request) -> Result<Response> {
    let body: RefreshBody = request.json()?;
    let session = s.users.refresh(&body.refresh_token).await?;
    let mut response = json!({ "access_token": session.access_token });
    if let Some(refresh_token) = session.refresh_token {
        response["refresh_token"] = Value::String(refresh_token);
    }
    if let Some(expires_in_ms) = session.expires_in_ms {
        response["expires_in_ms"] = json!(expires_in_ms);
    }
    Ok(Response::json(&response))
}

pub async fn logout(s: &Services, who: &Identity) -> Result<Response> {
    s.users.logout(who).await?;
    Ok(Response::empty_object())
}

pub async fn logout_all(s: &Services, who: &Identity) -> Result<Response> {
    s.users.logout_all(&who.localpart).await?;
    Ok(Response::empty_object())
}
