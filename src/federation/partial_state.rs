//! Completing rooms joined with partial state (MSC3706; server-server API
//! `/send_join` with `omit_members`, `GET /state/{roomId}`).
//!
//! A task started with the server takes the rooms still marked partial
//! (`rooms::partial_state`): at start-up, and when a join is stored so. For
//! each, the whole state before this server's join is asked of the server
//! that answered the join, then of the others it named (`/state` at the
//! join: every event and its auth chain), checked as a join answer is
//! (signatures, hashes, each event by its own auth events), stored, and
//! the room's state completed with it.
//!
//! A room is completed [`START_AFTER`] after its join at the earliest:
//! checking a big room's state takes the machine's cores for a while, and
//! the user who just joined reads the room first. Rooms that could not be
//! completed are tried again after 2 s, doubling up to 5 minutes.

use std::{sync::Arc, time::Duration};

use ruma::{OwnedServerName, RoomId};
use serde_json::Value;

use super::Federation;
use crate::{
    error::{Error, Result},
    http::request::percent_encode,
    rooms::Rooms,
    services::Services,
    storage::records::PartialStateRecord,
};

/// How long after its join a room is completed at the earliest.
pub const START_AFTER: Duration = Duration::from_secs(2);
/// The longest wait before rooms that could not be completed are tried again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);
/// Most servers asked for one room's state in one round.
const SERVERS_ASKED: usize = 5;

/// Starts the task completing partial-state rooms.
pub fn start(services: &Arc<Services>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(services);
    let wakeup = Arc::clone(&services.federation.partial_state_wakeup);
    runtime.spawn(async move {
        let mut failures = 0u32;
        loop {
            // Registered before the rooms are read: a join stored meanwhile is not missed.
            let woken = wakeup.notified();
            let Some(s) = weak.upgrade() else { return };
            let round = complete_ready(&s).await;
            drop(s);
            let wait = if round.failed {
                failures = failures.saturating_add(1);
                let backoff = START_AFTER.saturating_mul(1u32.checked_shl(failures - 1).unwrap_or(u32::MAX));
                Some(round.next_ready.map_or(backoff, |ready| ready.min(backoff)).min(MAX_RETRY_WAIT))
            } else {
                failures = 0;
                round.next_ready
            };
            match wait {
                Some(wait) => {
                    let _ = tokio::time::timeout(wait, woken).await;
                }
                None => woken.await,
            }
        }
    });
}

/// What one round over the partial-state rooms left.
struct Round {
    /// A room could not be completed.
    failed: bool,
    /// The time until the next room joined too recently is ready.
    next_ready: Option<Duration>,
}

/// Tries once every partial-state room joined [`START_AFTER`] ago or more.
async fn complete_ready(s: &Services) -> Round {
    let mut round = Round { failed: false, next_ready: None };
    let rooms = match s.rooms.partial_state_rooms() {
        Ok(rooms) => rooms,
        Err(error) => {
            tracing::error!(%error, "could not read the partial-state rooms");
            return Round { failed: true, next_ready: None };
        }
    };
    for (room_id, record) in rooms {
        let since_join = Duration::from_millis(crate::util::now_ms().saturating_sub(record.joined_ts));
        if let Some(wait) = START_AFTER.checked_sub(since_join).filter(|wait| !wait.is_zero()) {
            round.next_ready = Some(round.next_ready.map_or(wait, |next| next.min(wait)));
            continue;
        }
        let started = std::time::Instant::now();
        match s.federation.complete_room(&s.rooms, &room_id, &record).await {
            Ok(added) => {
                let took_ms = started.elapsed().as_millis() as u64;
                let since_join_ms = crate::util::now_ms().saturating_sub(record.joined_ts);
                tracing::info!(room = %room_id, added, took_ms, since_join_ms, "room state completed");
            }
            Err(error) => {
                round.failed = true;
                tracing::warn!(room = %room_id, %error, "room state not completed yet");
            }
        }
    }
    round
}

impl Federation {
    /// Completes one partial-state room through the first server that answers.
    async fn complete_room(&self, rooms: &Rooms, room_id: &RoomId, record: &PartialStateRecord) -> Result<usize> {
        let mut last_error = Error::not_found("No server to ask for the room's state");
        for server in servers_to_ask(record, &self.server_name) {
            match self.complete_through(rooms, &server, room_id, record).await {
                Ok(added) => return Ok(added),
                Err(error) => {
                    tracing::info!(room = %room_id, %server, %error, "could not have the room's state from this server");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn complete_through(
        &self,
        rooms: &Rooms,
        server: &ruma::ServerName,
        room_id: &RoomId,
        record: &PartialStateRecord,
    ) -> Result<usize> {
        let room = rooms.room(room_id)?.ok_or_else(|| Error::not_found("The room is gone"))?;
        let (_, rules) = Rooms::rules_of(&room)?;
        let path = format!(
            "/_matrix/federation/v1/state/{}?event_id={}",
            percent_encode(room_id.as_str()),
            percent_encode(&record.join_event_id)
        );
        let answer = self.request(server, "GET", &path, None).await?;
        let list = |name: &str| answer.get(name).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let (accepted, state_ids) = self.import_state(list("pdus"), list("auth_chain"), room_id, &rules).await?;
        rooms.store_fetched_state(room_id, &accepted.in_order()).await?;
        let full = rooms.state_of_events(room_id, &state_ids)?;
        rooms.complete_partial_state(room_id, &full).await
    }
}

/// The server that answered the join, then the others it named (not this one).
fn servers_to_ask(record: &PartialStateRecord, own: &ruma::ServerName) -> Vec<OwnedServerName> {
    let names = std::iter::once(&record.resident).chain(&record.servers_in_room);
    let mut servers: Vec<OwnedServerName> = Vec::new();
    for server in names.filter_map(|name| OwnedServerName::try_from(name.as_str()).ok()) {
        if server != own && !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers.truncate(SERVERS_ASKED);
    servers
}
