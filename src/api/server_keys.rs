//! `GET /_matrix/key/v2/server`: the server's signing keys, self-signed.
//!
//! Spec: server-server API "Publishing Keys".

use crate::{
    error::{Error, Result},
    http::Response,
    services::Services,
    util::now_ms,
};

/// How long peers may cache our keys.
const KEY_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

pub fn server_keys(services: &Services) -> Result<Response> {
    let server_name = services.config.server_name.as_str();
    let document = services
        .server_key
        .server_keys_document(server_name, now_ms() + KEY_VALIDITY_MS)
        .map_err(|e| Error::internal("signing the server key document", e))?;
    Ok(Response::json(&document))
}
