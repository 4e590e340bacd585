//! Account management: who am I, password change, deactivation.
//!
//! Spec: client-server API "Current account information" (`/account/whoami`),
//! "Password management" (`POST /account/password`), "Account deactivation"
//! (`POST /account/deactivate`), and `GET /account/3pid` (no third-party ids
//! are bound on this server yet, so the list is empty).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::Result,
    http::{Request, Response},
    services::Services,
    users::{
        uiaa::{self, Challenge},
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

pub fn three_pids() -> Response {
    Response::json(&json!({ "threepids": [] }))
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
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<Value>,
}

fn yes() -> bool {
    true
}

pub async fn change_password(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: PasswordBody = request.json()?;
    require_password(s, request, who, "POST /account/password", body.auth.as_ref()).await?;
    s.users.set_password(&who.localpart, &body.new_password).await?;
    if body.logout_devices {
        s.users.logout_other_devices(&who.localpart, &who.device_id).await?;
    }
    tracing::info!(user = %who.user_id, "password changed");
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeactivateBody {
    auth: Option<Value>,
}

pub async fn deactivate(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DeactivateBody = request.json()?;
    require_password(s, request, who, "POST /account/deactivate", body.auth.as_ref()).await?;
    s.users.deactivate(&who.localpart).await?;
    Ok(Response::json(&json!({ "id_server_unbind_result": "no-support" })))
}
