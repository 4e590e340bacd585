//! The server-server endpoints served so far: `GET /_matrix/federation/v1/version`,
//! the notary key queries (`GET /_matrix/key/v2/query/{serverName}`,
//! `POST /_matrix/key/v2/query`), and `GET /_matrix/federation/v1/query/profile`
//! (a request signed by the asking server).
//!
//! Spec: server-server API "Get the implementation name and version",
//! "Querying Keys Through Another Server", "Query information"
//! (`/query/profile`).

use ruma::{ServerName, UserId};
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    federation::keys::queried_servers,
    http::{Request, Response},
    services::Services,
};

pub fn version() -> Response {
    Response::json(&json!({ "server": { "name": "conduit", "version": env!("CARGO_PKG_VERSION") } }))
}

/// `POST /_matrix/key/v2/query`.
pub async fn query_keys(s: &Services, request: &Request) -> Result<Response> {
    let body: Map<String, Value> = request.json()?;
    let servers = queried_servers(&body);
    Ok(Response::json(&json!({ "server_keys": s.federation.notary_answer(&servers).await })))
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn query_server_keys(s: &Services, request: &Request) -> Result<Response> {
    let server =
        ServerName::parse(request.param("server_name")?).map_err(|_| Error::invalid_param("Invalid server name"))?;
    Ok(Response::json(&json!({ "server_keys": s.federation.notary_answer(&[server.to_string()]).await })))
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`: a local
/// user's profile, whole or one field.
pub fn query_profile(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let user_id = request.query("user_id").ok_or_else(|| Error::new(ErrorKind::MissingParam, "user_id is required"))?;
    let user_id = UserId::parse(user_id).map_err(|_| Error::invalid_param("Invalid user id"))?;
    if user_id.server_name() != s.config.server_name {
        return Err(Error::invalid_param("The user is not on this server"));
    }
    let mut profile =
        s.users.active_profile(user_id.localpart())?.ok_or_else(|| Error::not_found("Profile not found"))?;
    match request.query("field") {
        None => {}
        Some(field @ ("displayname" | "avatar_url")) => profile.retain(|key, _| key == field),
        Some(other) => return Err(Error::invalid_param(format!("Unknown profile field {other:?}"))),
    }
    tracing::debug!(%origin, user = %user_id, "profile asked for over federation");
    Ok(Response::json(&Value::Object(profile)))
}
