//! Other servers' users' profiles, as `/query/profile` gives them, kept a
//! while.
//!
//! Spec: server-server API "Query information" (`/query/profile`). A client
//! reading another server's user's profile is answered from here when the
//! copy is younger than [`FRESH_FOR`]; an older copy is refreshed, and kept
//! (served) when the user's server cannot be reached. A member event from
//! the user (a new display name or avatar reaching this server in a room)
//! drops the copy. At most [`MAX_PROFILES`] are kept.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::{Federation, FederationError};

/// How long a fetched profile is served without asking again.
const FRESH_FOR: Duration = Duration::from_secs(10 * 60);
/// Profiles kept at most (beyond, the memory starts over).
const MAX_PROFILES: usize = 10_000;

/// A profile and when it was fetched.
type KeptProfile = (Map<String, Value>, Instant);

#[derive(Default)]
pub struct RemoteProfiles {
    profiles: Mutex<HashMap<OwnedUserId, KeptProfile>>,
}

impl RemoteProfiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, KeptProfile>> {
        self.profiles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the copy of `user_id`'s profile (it changed).
    pub fn forget(&self, user_id: &UserId) {
        self.lock().remove(user_id);
    }
}

impl Federation {
    /// Another server's user's profile (`displayname`, `avatar_url`).
    pub async fn remote_profile(&self, user_id: &UserId) -> Result<Map<String, Value>, FederationError> {
        let cached = self.profiles.lock().get(user_id).cloned();
        if let Some((profile, fetched)) = &cached {
            if fetched.elapsed() < FRESH_FOR {
                return Ok(profile.clone());
            }
        }
        let path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            crate::http::request::percent_encode(user_id.as_str())
        );
        let answer = match self.request(user_id.server_name(), "GET", &path, None).await {
            Ok(answer) => answer,
            Err(FederationError::Refused { status: 404, body }) => {
                self.profiles.forget(user_id);
                return Err(FederationError::Refused { status: 404, body });
            }
            Err(error) => {
                // The server is away: the copy held is better than nothing.
                return cached.map(|(profile, _)| profile).ok_or(error);
            }
        };
        let mut profile = Map::new();
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = answer.get(field).and_then(Value::as_str) {
                profile.insert(field.into(), json!(value));
            }
        }
        let mut profiles = self.profiles.lock();
        if profiles.len() >= MAX_PROFILES {
            profiles.clear();
        }
        profiles.insert(user_id.to_owned(), (profile.clone(), Instant::now()));
        Ok(profile)
    }
}
