//! The server-server endpoints served so far: `GET /_matrix/federation/v1/version`,
//! the notary key queries (`GET /_matrix/key/v2/query/{serverName}`,
//! `POST /_matrix/key/v2/query`), and `GET /_matrix/federation/v1/query/profile`
//! (a request signed by the asking server).
//!
//! Events, membership and media are in [`events`], [`membership`] and [`media`].
//!
//! Spec: server-server API "Get the implementation name and version",
//! "Querying Keys Through Another Server", "Query information"
//! (`/query/profile`), "OpenID" (`/openid/userinfo`, unsigned: the token
//! is the proof).

pub mod events;
pub mod media;
pub mod membership;

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

/// `GET /_matrix/federation/v1/query/directory?room_alias=`: a local alias's
/// room and the servers in it.
pub fn query_directory(s: &Services, request: &Request) -> Result<Response> {
    let alias =
        request.query("room_alias").ok_or_else(|| Error::new(ErrorKind::MissingParam, "room_alias is required"))?;
    let alias = ruma::RoomAliasId::parse(alias).map_err(|_| Error::invalid_param("Invalid room alias"))?;
    if alias.server_name() != s.config.server_name {
        return Err(Error::invalid_param("The alias is not of this server"));
    }
    let room_id = s.rooms.resolve_alias(&alias)?.ok_or_else(|| Error::not_found("Room alias not found"))?;
    let mut servers = vec![s.config.server_name.to_string()];
    if let Some(room) = s.rooms.room(&room_id)? {
        let state = s.rooms.current_state(&room)?;
        let others = s.rooms.joined_members_in(&state)?;
        for server in others.iter().map(|user| user.server_name().to_string()) {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    Ok(Response::json(&json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Debug, serde::Deserialize)]
struct UserKeysQuery {
    device_keys: std::collections::BTreeMap<ruma::OwnedUserId, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`: this server's users' device
/// and cross-signing keys.
pub fn user_keys_query(s: &Services, request: &Request) -> Result<Response> {
    let body: UserKeysQuery = request.json()?;
    let answer = crate::federation::e2ee::serve_query(&s.e2ee, &s.config.server_name, &body.device_keys)?;
    Ok(Response::json(&answer))
}

#[derive(Debug, serde::Deserialize)]
struct UserKeysClaim {
    one_time_keys: std::collections::BTreeMap<ruma::OwnedUserId, std::collections::BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of this server's users' devices.
pub async fn user_keys_claim(s: &Services, request: &Request) -> Result<Response> {
    let body: UserKeysClaim = request.json()?;
    let wanted = crate::federation::e2ee::local_users_only(&body.one_time_keys, &s.config.server_name);
    let answer = s.e2ee.claim(&wanted).await?;
    Ok(Response::json(&json!({ "one_time_keys": answer["one_time_keys"] })))
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`: a space
/// and its children, as far as the asking server may see them.
pub fn hierarchy(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let room_id =
        ruma::RoomId::parse(request.param("room_id")?).map_err(|_| Error::invalid_param("Invalid room id"))?;
    let suggested_only = request.query("suggested_only") == Some("true");
    let answer = crate::federation::hierarchy::serve(&s.rooms, origin, &room_id, suggested_only)?;
    Ok(Response::json(&answer))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices.
pub fn user_devices(s: &Services, request: &Request) -> Result<Response> {
    let user_id = UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))?;
    if user_id.server_name() != s.config.server_name {
        return Err(Error::invalid_param("The user is not on this server"));
    }
    let stream_id = s.rooms.current_position()?;
    Ok(Response::json(&crate::federation::e2ee::serve_devices(&s.e2ee, &user_id, stream_id)?))
}

/// `GET /_matrix/federation/v1/openid/userinfo?access_token=`: whose OpenID token it is.
pub fn openid_userinfo(s: &Services, request: &Request) -> Result<Response> {
    let token =
        request.query("access_token").ok_or_else(|| Error::new(ErrorKind::MissingParam, "access_token is required"))?;
    let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "The OpenID token is not valid");
    let localpart = s.users.openid_token_owner(token)?.ok_or_else(unknown)?;
    Ok(Response::json(&json!({ "sub": s.users.user_id(&localpart)? })))
}
