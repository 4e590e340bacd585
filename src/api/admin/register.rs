//! Shared-secret registration, as Synapse does it (`GET`/`POST
//! /_synapse/admin/v1/register`), for `register_new_matrix_user` and the
//! test suites that create admins with it.
//!
//! `GET` hands out a nonce (valid [`NONCE_LIFETIME`], once); `POST` creates
//! the account when `mac` is the hex HMAC-SHA1, keyed with
//! `registration_shared_secret`, of `nonce NUL username NUL password NUL
//! ("admin" | "notadmin")` (`NUL user_type` appended when given).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ring::hmac;
use serde::Deserialize;
use serde_json::json;

use crate::{
    crypto::tokens::{random_alphanumeric, same_secret},
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
};

/// How long a nonce may be used.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// Nonces held at most (beyond, the oldest go: a flood of `GET`s costs no memory).
const MAX_NONCES: usize = 10_000;

/// The nonces handed out and not used yet.
#[derive(Default)]
pub struct Nonces {
    issued: Mutex<HashMap<String, Instant>>,
}

impl Nonces {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self) -> String {
        let nonce = random_alphanumeric(32);
        let mut issued = self.lock();
        issued.retain(|_, at| at.elapsed() < NONCE_LIFETIME);
        if issued.len() >= MAX_NONCES {
            if let Some(oldest) = issued.iter().min_by_key(|(_, at)| **at).map(|(nonce, _)| nonce.clone()) {
                issued.remove(&oldest);
            }
        }
        issued.insert(nonce.clone(), Instant::now());
        nonce
    }

    /// Uses up `nonce`: whether it was issued and is still valid.
    fn take(&self, nonce: &str) -> bool {
        self.lock().remove(nonce).is_some_and(|at| at.elapsed() < NONCE_LIFETIME)
    }
}

fn secret(s: &Services) -> Result<&str> {
    s.config
        .registration_shared_secret
        .as_ref()
        .map(crate::config::Secret::expose)
        .ok_or_else(|| Error::new(ErrorKind::BadRequest, "Shared secret registration is not enabled"))
}

/// `GET /_synapse/admin/v1/register`.
pub fn nonce(s: &Services) -> Result<Response> {
    secret(s)?;
    Ok(Response::json(&json!({ "nonce": s.admin_nonces.issue() })))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    user_type: Option<String>,
    mac: String,
}

/// The MAC a client computes for `body` with `secret`, in hex.
fn expected_mac(secret: &str, body: &RegisterBody) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    let admin: &str = if body.admin { "admin" } else { "notadmin" };
    let mut parts = vec![body.nonce.as_str(), body.username.as_str(), body.password.as_str(), admin];
    if let Some(user_type) = &body.user_type {
        parts.push(user_type);
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            context.update(&[0]);
        }
        context.update(part.as_bytes());
    }
    context.sign().as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `POST /_synapse/admin/v1/register`.
pub async fn register(s: &Services, request: &Request) -> Result<Response> {
    let secret = secret(s)?;
    let body: RegisterBody = request.json()?;
    if !s.admin_nonces.take(&body.nonce) {
        return Err(Error::new(ErrorKind::BadRequest, "Unrecognised nonce"));
    }
    if !same_secret(&expected_mac(secret, &body), &body.mac.to_ascii_lowercase()) {
        tracing::warn!(username = %body.username, "shared-secret registration with a wrong MAC");
        return Err(Error::forbidden("HMAC incorrect"));
    }
    let localpart = s.users.localpart_for_registration(&body.username)?;
    s.users.create_account(&localpart, Some(&body.password), false, body.admin).await?;
    if let Some(name) = body.displayname.filter(|name| !name.is_empty()) {
        s.users.set_initial_display_name(&localpart, &name).await?;
    }
    let session = s.users.open_session(&localpart, None, None, false, &request.client_ip).await?;
    let user_id = s.users.user_id(&localpart)?;
    tracing::info!(user = %user_id, admin = body.admin, "registered with the shared secret");
    Ok(Response::json(&json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.config.server_name,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_synapses() {
        // The HMAC-SHA1 of "abc\0alice\0pw\0admin" keyed "secret", as Python's hmac computes it.
        let body = RegisterBody {
            nonce: "abc".into(),
            username: "alice".into(),
            password: "pw".into(),
            admin: true,
            displayname: None,
            user_type: None,
            mac: String::new(),
        };
        assert_eq!(expected_mac("secret", &body), "dc5ed98b283077684552e3f72d67f26b3366bf58");
    }

    #[test]
    fn a_nonce_serves_once() {
        let nonces = Nonces::default();
        let nonce = nonces.issue();
        assert!(nonces.take(&nonce));
        assert!(!nonces.take(&nonce));
        assert!(!nonces.take("never issued"));
    }
}
