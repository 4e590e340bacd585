//! Presence: online, unavailable or offline, with an optional status message.
//!
//! Spec: client-server API module "Presence" (`GET`/`PUT
//! /presence/{userId}/status`, `set_presence` on `/sync`, `m.presence` events).
//! Kept in memory (presence is ephemeral: a restart shows everyone offline).
//! A user idle for [`IDLE_AFTER`] shows as `unavailable`. Deployments can turn
//! presence off (`presence = false`): nothing is recorded or shown then.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    storage::Storage,
    util::now_ms,
};

/// Most users (other servers' included) whose presence is kept.
pub const MAX_REMOTE_USERS: usize = 100_000;

/// Most users of one other server whose presence is kept.
pub const MAX_USERS_PER_SERVER: usize = 10_000;

/// Longest status message kept from another server.
const MAX_STATUS_MSG_BYTES: usize = 1024;

/// Activity older than this makes an online user show as unavailable.
pub const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Status {
    state: String,
    status_msg: Option<String>,
    last_active: Instant,
    last_active_ms: u64,
    /// Counter value of the last change.
    changed: u64,
}

#[derive(Clone)]
pub struct Presence {
    enabled: bool,
    storage: Arc<Storage>,
    users: Arc<Mutex<HashMap<OwnedUserId, Status>>>,
    /// How many users of each other server `users` holds.
    remote_per_server: Arc<Mutex<HashMap<ruma::OwnedServerName, usize>>>,
}

impl Presence {
    pub fn new(storage: Arc<Storage>, enabled: bool) -> Self {
        Self { enabled, storage, users: Arc::default(), remote_per_server: Arc::default() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets a user's presence; `status_msg` is kept when `None` is given by
    /// `/sync` (which only carries the state). Whether the state or the
    /// message changed (what other servers are told of).
    pub fn set(&self, user_id: &UserId, state: &str, status_msg: Option<Option<String>>) -> Result<bool> {
        if !matches!(state, "online" | "unavailable" | "offline") {
            return Err(Error::invalid_param(format!("Unknown presence {state:?}")));
        }
        if !self.enabled {
            return Ok(false);
        }
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let previous = users.get(user_id).cloned();
        let status_msg = match status_msg {
            Some(message) => message,
            None => previous.as_ref().and_then(|p| p.status_msg.clone()),
        };
        let unchanged = previous.as_ref().is_some_and(|p| p.state == state && p.status_msg == status_msg);
        let recently_active = previous.as_ref().is_some_and(|p| p.last_active.elapsed() < Duration::from_secs(60));
        if unchanged && recently_active {
            return Ok(false); // a sync repeating the same state is not news
        }
        self.record(users, user_id, state, status_msg, Duration::ZERO)?;
        Ok(!unchanged)
    }

    /// Another server's user's presence, as its server sent it (`m.presence`
    /// EDU). At most [`MAX_USERS_PER_SERVER`] users of one server and
    /// [`MAX_REMOTE_USERS`] in all are kept: what peers send cannot grow
    /// memory without bound, and one server cannot crowd out the others. A
    /// repeat of the same state is not news (no position, no sync woken).
    pub fn set_remote(
        &self,
        user_id: &UserId,
        state: &str,
        status_msg: Option<String>,
        last_active_ago: Duration,
    ) -> Result<()> {
        if !self.enabled || !matches!(state, "online" | "unavailable" | "offline") {
            return Ok(());
        }
        let status_msg = status_msg.filter(|message| message.len() <= MAX_STATUS_MSG_BYTES);
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        match users.get(user_id) {
            Some(previous) if previous.state == state && previous.status_msg == status_msg => return Ok(()),
            Some(_) => {}
            None => {
                let mut per_server = self.remote_per_server.lock().unwrap_or_else(|p| p.into_inner());
                let count = per_server.entry(user_id.server_name().to_owned()).or_insert(0);
                if *count >= MAX_USERS_PER_SERVER || users.len() >= MAX_REMOTE_USERS {
                    return Ok(());
                }
                *count += 1;
            }
        }
        self.record(users, user_id, state, status_msg, last_active_ago)
    }

    /// Records a change (a new position, so syncs see it).
    fn record(
        &self,
        mut users: std::sync::MutexGuard<'_, HashMap<OwnedUserId, Status>>,
        user_id: &UserId,
        state: &str,
        status_msg: Option<String>,
        last_active_ago: Duration,
    ) -> Result<()> {
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let count = reservation.count;
        let last_active = Instant::now().checked_sub(last_active_ago).unwrap_or_else(Instant::now);
        let last_active_ms = now_ms().saturating_sub(u64::try_from(last_active_ago.as_millis()).unwrap_or(u64::MAX));
        users.insert(
            user_id.to_owned(),
            Status { state: state.to_owned(), status_msg, last_active, last_active_ms, changed: count },
        );
        drop(users);
        reservation.announce();
        Ok(())
    }

    /// The `m.presence` content of a user.
    pub fn content(&self, user_id: &UserId) -> Value {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        match users.get(user_id) {
            Some(status) => content_of(status),
            None => json!({ "presence": "offline" }),
        }
    }

    /// Users whose presence changed in `(since, upto]` (everyone known, without a token).
    pub fn changed_since(&self, since: Option<u64>, upto: u64) -> Vec<(OwnedUserId, Value)> {
        if !self.enabled {
            return Vec::new();
        }
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed: Vec<(u64, OwnedUserId, Value)> = users
            .iter()
            .filter(|(_, s)| since.is_none_or(|since| s.changed > since) && s.changed <= upto)
            .map(|(user, status)| (status.changed, user.clone(), content_of(status)))
            .collect();
        changed.sort_by_key(|(count, _, _)| *count);
        changed.into_iter().map(|(_, user, content)| (user, content)).collect()
    }
}

fn content_of(status: &Status) -> Value {
    let idle = status.last_active.elapsed() >= IDLE_AFTER;
    let state = if status.state == "online" && idle { "unavailable" } else { status.state.as_str() };
    let mut content = json!({
        "presence": state,
        "last_active_ago": now_ms().saturating_sub(status.last_active_ms),
        "currently_active": state == "online",
    });
    if let Some(message) = &status.status_msg {
        content["status_msg"] = json!(message);
    }
    content
}
