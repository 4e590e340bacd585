//! Rooms joined with partial state (MSC3706, server-server API `/send_join`
//! with `omit_members`): the resident server answered the join without the
//! room's member events (but the joining user's and the heroes'), so the
//! user is in the room at once; the state is completed afterwards
//! (`federation::partial_state` fetches it).
//!
//! Until then: the room's events go to the servers the resident named
//! (`servers_in_room`) as well as to those its known members are on; an
//! event whose sender's membership this server does not know yet is checked
//! against its own auth events instead (see `federation::receive`); this
//! server does not act as a resident server for the room (`/make_join`,
//! `/state` refused); member lists (`/members`, `/joined_members`) wait
//! for the whole state a while, as Synapse's do.
//!
//! Completing adds every entry of the full state before the join that the
//! partial state lacked to the state before the join and before each later
//! event, and to the current state (an entry set since the join is newer
//! and kept). Owns `partial_state_rooms`.

use std::collections::HashMap;

use ruma::{OwnedRoomId, OwnedServerName, RoomId};

use ruma::state_res::Event as _;

use super::{pipeline::StateView, state::StateMap, Rooms};
use crate::{
    error::{Error, Result},
    events::{kinds, Pdu},
    storage::{records::PartialStateRecord, Batch},
};

/// Events read per page while completing.
const PAGE: usize = 200;

impl Rooms {
    /// The room's partial-state record, if it was joined so and not completed.
    pub fn partial_state(&self, room_id: &RoomId) -> Result<Option<PartialStateRecord>> {
        Ok(self.storage.tables.partial_state_rooms.get(&room_id.to_string())?)
    }

    /// Whether the room's state is still partial.
    pub fn has_partial_state(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.storage.tables.partial_state_rooms.contains(&room_id.to_string())?)
    }

    /// Every room whose state is still partial.
    pub fn partial_state_rooms(&self) -> Result<Vec<(OwnedRoomId, PartialStateRecord)>> {
        let rooms = self.storage.tables.partial_state_rooms.all()?;
        Ok(rooms.into_iter().filter_map(|(id, record)| Some((OwnedRoomId::try_from(id).ok()?, record))).collect())
    }

    /// The servers the resident named for a partial-state room (none once complete).
    pub(crate) fn servers_named_at_join(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let Some(record) = self.partial_state(room_id)? else { return Ok(Vec::new()) };
        Ok(record.servers_in_room.iter().filter_map(|name| OwnedServerName::try_from(name.as_str()).ok()).collect())
    }

    /// Waits until the room's state is whole, `patience` at most (then
    /// returns all the same).
    pub async fn wait_for_whole_state(&self, room_id: &RoomId, patience: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let completed = self.state_completed.notified();
            if !self.has_partial_state(room_id)? {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, completed).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Adds to `batch` the record of a room joined with partial state.
    pub(crate) fn mark_partial_state(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        record: &PartialStateRecord,
    ) -> Result<()> {
        batch.insert(&self.storage.tables.partial_state_rooms, &room_id.to_string(), record)?;
        Ok(())
    }

    /// Completes a partial-state room with `full`, the whole state before
    /// the join (its events stored): the entries missing are added to the
    /// state before the join and every later event, and to the current
    /// state. The number of entries added.
    pub async fn complete_partial_state(&self, room_id: &RoomId, full: &StateMap) -> Result<usize> {
        let _guard = self.locks.lock(room_id).await;
        let Some(record) = self.partial_state(room_id)? else { return Ok(0) };
        let mut room = self.room(room_id)?.ok_or_else(|| Error::not_found("The room is gone"))?;
        let join_id = ruma::OwnedEventId::try_from(record.join_event_id.as_str())
            .map_err(|_| Error::internal("partial state", "the join's event id is invalid"))?;
        let (_, join) = self.get_pdu(&join_id)?.ok_or_else(|| Error::not_found("The join is not stored"))?;
        let before_join = self.state.full_state(join.snapshot_before()?)?;
        let missing: Vec<(u64, u64)> =
            full.iter().filter(|(key, _)| !before_join.contains_key(key)).map(|(k, v)| (*k, *v)).collect();
        let mut batch = Batch::new();
        let mut completed = Completed { rooms: self, missing: &missing, done: HashMap::new() };
        let mut patched_events = Vec::new();
        let mut position = join.count;
        loop {
            let page = self.timeline_page(&room, position, false, PAGE)?;
            let last_page = page.len() < PAGE;
            for (count, event_id) in page {
                position = count + 1;
                let Some((_, stored)) = self.get_pdu(&event_id)? else { continue };
                let Some(before) = stored.state_before else { continue };
                let mut stored = std::sync::Arc::unwrap_or_clone(stored);
                let after = completed.snapshot(&mut batch, before)?;
                if after != before {
                    stored.state_before = Some(after);
                    batch.insert(&self.storage.tables.eventid_pdu, &event_id.to_string(), &stored)?;
                    patched_events.push(event_id);
                }
            }
            if last_page {
                break;
            }
        }
        room.current_state = completed.snapshot(&mut batch, room.current_state)?;
        batch.insert(&self.storage.tables.roomid_room, &room_id.to_string(), &room)?;
        for (_, short) in &missing {
            if let Some((member, _)) = self.get_pdu(&self.event_id_of_short(*short)?)? {
                self.record_local_membership(&mut batch, room_id, &member)?;
            }
        }
        batch.remove(&self.storage.tables.partial_state_rooms, &room_id.to_string());
        self.storage.commit(batch).await?;
        for event_id in &patched_events {
            self.pdus.invalidate(event_id);
        }
        self.state_completed.notify_waiters();
        Ok(missing.len())
    }
}

/// Snapshots completed so far (old id → completed id).
struct Completed<'a> {
    rooms: &'a Rooms,
    missing: &'a [(u64, u64)],
    done: HashMap<u64, u64>,
}

impl Completed<'_> {
    /// `snapshot` with the missing entries it lacks added (itself if none).
    fn snapshot(&mut self, batch: &mut Batch, snapshot: u64) -> Result<u64> {
        if let Some(done) = self.done.get(&snapshot) {
            return Ok(*done);
        }
        let map = self.rooms.state.full_state(snapshot)?;
        let additions: Vec<(u64, u64)> =
            self.missing.iter().filter(|(key, _)| !map.contains_key(key)).copied().collect();
        let completed = if additions.is_empty() {
            snapshot
        } else {
            self.rooms.state.new_snapshot(batch, Some(snapshot), &additions)?
        };
        self.done.insert(snapshot, completed);
        Ok(completed)
    }
}

/// The state an event of a partial-state room is checked against: `state`,
/// and for a member entry it lacks (not known here yet), the event's own
/// auth event for it (already checked by the auth rules against its own
/// auth events).
pub struct WithOwnAuthEvents<'a> {
    state: &'a dyn StateView,
    rooms: &'a Rooms,
    pdu: &'a Pdu,
}

impl<'a> WithOwnAuthEvents<'a> {
    pub fn new(state: &'a dyn StateView, rooms: &'a Rooms, pdu: &'a Pdu) -> Self {
        Self { state, rooms, pdu }
    }
}

impl StateView for WithOwnAuthEvents<'_> {
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        if let Some(event) = self.state.state_event(kind, state_key)? {
            return Ok(Some(event));
        }
        if kind != kinds::MEMBER {
            return Ok(None);
        }
        for auth_event in self.pdu.auth_events() {
            if let Some((event, _)) = self.rooms.get_pdu(auth_event)? {
                if event.kind().to_string() == kind && event.state_key_str() == Some(state_key) {
                    return Ok(Some(event));
                }
            }
        }
        Ok(None)
    }

    fn member_events(&self) -> Result<Vec<Pdu>> {
        self.state.member_events()
    }
}
