//! Server-side key backup endpoints: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]?version=`.
//!
//! Spec: client-server API "Server-side key backups" (`key_backup.yaml`);
//! the logic lives in [`crate::e2ee::backup`].

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    e2ee::backup::Scope,
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

#[derive(Debug, Deserialize)]
struct NewBackup {
    algorithm: String,
    auth_data: Value,
}

pub async fn create_version(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: NewBackup = request.json()?;
    let version = s.e2ee.create_backup(&who.localpart, &body.algorithm, &body.auth_data).await?;
    Ok(Response::json(&serde_json::json!({ "version": version })))
}

pub fn get_version(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let version = request.optional_param("version");
    Ok(Response::json(&s.e2ee.backup_info(&who.localpart, version)?))
}

pub async fn update_version(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: Map<String, Value> = request.json()?;
    s.e2ee.update_backup(&who.localpart, request.param("version")?, &body).await?;
    Ok(Response::empty_object())
}

pub async fn delete_version(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    s.e2ee.delete_backup(&who.localpart, request.param("version")?).await?;
    Ok(Response::empty_object())
}

/// The `version` query parameter the key endpoints require.
fn version_param(request: &Request) -> Result<&str> {
    request.query("version").ok_or_else(|| Error::new(ErrorKind::MissingParam, "`version` is required"))
}

/// The scope addressed by the path parameters (room, then session).
fn scope(request: &Request) -> Scope<'_> {
    match (request.optional_param("room_id"), request.optional_param("session_id")) {
        (None, _) => Scope::All,
        (Some(room), None) => Scope::Room(room),
        (Some(room), Some(session)) => Scope::Session(room, session),
    }
}

/// The body's keys as (room, session, data), whatever the scope's shape.
fn keys_of(scope: &Scope<'_>, body: Value) -> Result<Vec<(String, String, Value)>> {
    let sessions_of = |room: &str, value: &Value| -> Result<Vec<(String, String, Value)>> {
        let sessions = value
            .get("sessions")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::bad_json("`sessions` must be an object"))?;
        Ok(sessions.iter().map(|(id, data)| (room.to_owned(), id.clone(), data.clone())).collect())
    };
    match scope {
        Scope::All => {
            let rooms = body
                .get("rooms")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::bad_json("`rooms` must be an object"))?;
            let mut keys = Vec::new();
            for (room, value) in rooms {
                keys.extend(sessions_of(room, value)?);
            }
            Ok(keys)
        }
        Scope::Room(room) => sessions_of(room, &body),
        Scope::Session(room, session) => Ok(vec![((*room).to_owned(), (*session).to_owned(), body)]),
    }
}

pub async fn put_keys(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let scope = scope(request);
    let keys = keys_of(&scope, request.json_object()?)?;
    Ok(Response::json(&s.e2ee.put_backup_keys(&who.localpart, version_param(request)?, keys).await?))
}

pub fn get_keys(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    Ok(Response::json(&s.e2ee.get_backup_keys(&who.localpart, version_param(request)?, &scope(request))?))
}

pub async fn delete_keys(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let version = version_param(request)?;
    Ok(Response::json(&s.e2ee.delete_backup_keys(&who.localpart, version, &scope(request)).await?))
}
