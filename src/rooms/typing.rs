//! Typing notifications: who is typing in each room, in memory, expiring on
//! their own.
//!
//! Spec: client-server API module "Typing Notifications"
//! (`PUT /rooms/{roomId}/typing/{userId}`, `m.typing` in `/sync`'s
//! `ephemeral`). Every change (including an expiry) takes a counter value and
//! is announced, so waiting syncs wake and deliver the new list.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use crate::{error::Result, storage::Storage};

/// Longest a client may say it is typing for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    until: HashMap<OwnedUserId, Instant>,
    /// Counter value of the last change.
    changed: u64,
}

#[derive(Clone)]
pub struct Typing {
    storage: Arc<Storage>,
    rooms: Arc<Mutex<HashMap<OwnedRoomId, RoomTyping>>>,
}

impl Typing {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, rooms: Arc::default() }
    }

    /// Starts (for `timeout`) or stops a user's typing in a room.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, typing: bool, timeout: Duration) -> Result<()> {
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let count = reservation.count;
        let timeout = timeout.min(MAX_TIMEOUT);
        let until = Instant::now() + timeout;
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let room = rooms.entry(room_id.to_owned()).or_default();
            if typing {
                room.until.insert(user_id.to_owned(), until);
            } else {
                room.until.remove(user_id);
            }
            room.changed = count;
        }
        reservation.announce();
        if typing {
            let this = self.clone();
            let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if let Err(error) = this.expire(&room_id, &user_id) {
                    tracing::warn!(%error, "typing expiry failed");
                }
            });
        }
        Ok(())
    }

    /// Removes a typing entry whose time has passed (not one renewed since).
    fn expire(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let count = reservation.count;
        let expired = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let Some(room) = rooms.get_mut(room_id) else { return Ok(()) };
            let due = room.until.get(user_id).is_some_and(|until| *until <= Instant::now());
            if due {
                room.until.remove(user_id);
                room.changed = count;
            }
            due
        };
        if expired {
            reservation.announce();
        }
        Ok(())
    }

    /// Who is typing, if that changed after `since` (or anyone types, without
    /// a token) and no later than `upto`.
    pub fn changed_since(&self, room_id: &RoomId, since: Option<u64>, upto: u64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.get(room_id)?;
        let now = Instant::now();
        let mut users: Vec<OwnedUserId> =
            room.until.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect();
        users.sort();
        let changed = since.is_none_or(|since| room.changed > since) && room.changed <= upto;
        let wanted = if since.is_some() { changed } else { !users.is_empty() };
        wanted.then_some(users)
    }
}
