//! Discovery: supported versions, `.well-known`, capabilities.
//!
//! Spec: client-server API "API Versions", "Server Discovery",
//! "Capabilities negotiation".

use serde_json::json;

use super::rooms;
use crate::{
    error::{Error, Result},
    events::room_version,
    http::Response,
    services::Services,
};

/// The spec versions whose client-server endpoints this server implements,
/// each checked against its changelog (`tests/it/spec_versions.rs` fails if
/// an advertised version's endpoints are missing). v1.16 needs custom
/// profile fields and `/sync`'s `use_state_after`; v1.18 the account
/// moderation endpoints; v1.19 `/mutual_rooms`.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

pub fn versions() -> Response {
    Response::json(&json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": {
            // Authenticated media, for clients that predate v1.11.
            "org.matrix.msc3916.stable": true,
            "org.matrix.msc3814": true,
        }
    }))
}

pub fn well_known_client(services: &Services) -> Result<Response> {
    let base_url = services
        .config
        .well_known
        .client
        .as_deref()
        .ok_or_else(|| Error::not_found("No client well-known information is configured"))?;
    Ok(Response::json(&json!({ "m.homeserver": { "base_url": base_url } })))
}

pub fn well_known_server(services: &Services) -> Result<Response> {
    let server = services
        .config
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| Error::not_found("No server well-known information is configured"))?;
    Ok(Response::json(&json!({ "m.server": server })))
}

/// What clients may do. Third-party ids are not served yet, so their
/// capabilities say so.
pub fn capabilities(s: &Services) -> Result<Response> {
    let default = rooms::default_version(s)?;
    let available: serde_json::Map<String, serde_json::Value> = room_version::KNOWN
        .iter()
        .filter(|version| room_version::can_create(version))
        .map(|version| (version.to_string(), json!("stable")))
        .collect();
    Ok(Response::json(&json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": default, "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": s.mailer.is_configured() },
            "m.password_policy": crate::users::password_policy::describe(&s.users.password_policy),
            "m.get_login_token": { "enabled": false },
        }
    })))
}
