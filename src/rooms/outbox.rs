//! Local events other servers must receive (server-server API
//! "Transactions": the originating server sends each of its events to every
//! server in the room).
//!
//! An entry per (destination, event position) is written in the event's own
//! batch, so an event acknowledged to a client is durably queued for every
//! server that had joined members before it (and, for a member event, the
//! target's server: a kicked or banned server hears of it). The federation
//! sender reads a destination's entries in order and removes them once that
//! server acknowledged the transaction carrying them.

use std::collections::BTreeSet;

use ruma::{state_res::Event as _, OwnedEventId, OwnedRoomId, OwnedServerName, ServerName, UserId};

use super::{state::StateMap, Rooms};
use crate::{
    error::Result,
    events::Pdu,
    storage::{Batch, StorageError},
};

/// A queued event for one destination.
pub struct OutboxEntry {
    pub position: u64,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
}

/// Destinations that got new entries since the sender last looked, and the
/// signal that wakes it.
#[derive(Default)]
pub struct OutboxSignal {
    pending: std::sync::Mutex<BTreeSet<OwnedServerName>>,
    pub wakeup: tokio::sync::Notify,
}

impl OutboxSignal {
    pub(crate) fn mark(&self, destinations: impl IntoIterator<Item = OwnedServerName>) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).extend(destinations);
        self.wakeup.notify_one();
    }

    /// The destinations marked since the last call.
    pub fn take(&self) -> BTreeSet<OwnedServerName> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Rooms {
    /// Queues a local event for the other servers of the room: those with
    /// joined members in the state before it (`snapshot`), plus the server of
    /// a member event's target. Returns the destinations.
    pub(crate) fn queue_for_servers(
        &self,
        batch: &mut Batch,
        pdu: &Pdu,
        snapshot: u64,
        state: &StateMap,
        position: u64,
    ) -> Result<Vec<OwnedServerName>> {
        if pdu.sender().server_name() != self.server_name {
            return Ok(Vec::new());
        }
        let mut destinations = self.audience(snapshot, state)?.servers.clone();
        destinations.extend(self.servers_named_at_join(&pdu.room_id_or_derived())?);
        if pdu.kind() == &ruma::events::TimelineEventType::RoomMember {
            if let Some(target) = pdu.state_key_str().and_then(|key| UserId::parse(key).ok()) {
                destinations.insert(target.server_name().to_owned());
            }
        }
        destinations.remove(&self.server_name);
        let value = (pdu.room_id_or_derived().to_string(), pdu.event_id().to_string());
        for destination in &destinations {
            batch.insert(&self.storage.tables.outbox, &(destination.to_string(), position), &value)?;
        }
        Ok(destinations.into_iter().collect())
    }

    /// Up to `limit` events queued for `destination`, oldest first.
    pub fn outbox_page(&self, destination: &ServerName, limit: usize) -> Result<Vec<OutboxEntry>> {
        let (start, end) = ((destination.to_string(), 0), (destination.to_string(), u64::MAX));
        let page = self.storage.tables.outbox.range(&start, &end, false, limit)?;
        page.into_iter()
            .map(|((_, position), (room_id, event_id))| {
                let corrupt = || StorageError::corrupt("outbox entry");
                Ok(OutboxEntry {
                    position,
                    room_id: OwnedRoomId::try_from(room_id).map_err(|_| corrupt())?,
                    event_id: OwnedEventId::try_from(event_id).map_err(|_| corrupt())?,
                })
            })
            .collect()
    }

    /// Removes entries `destination` acknowledged.
    pub async fn outbox_remove(&self, destination: &ServerName, positions: &[u64]) -> Result<()> {
        let mut batch = Batch::new();
        for position in positions {
            batch.remove(&self.storage.tables.outbox, &(destination.to_string(), *position));
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// Every destination with queued events (the sender's start-up).
    /// How many events wait for each destination.
    pub fn outbox_depths(&self) -> Result<Vec<(String, usize)>> {
        let mut depths: Vec<(String, usize)> = Vec::new();
        self.storage.tables.outbox.for_each(|(destination, _), _| match depths.last_mut() {
            Some((last, depth)) if *last == destination => *depth += 1,
            _ => depths.push((destination, 1)),
        })?;
        Ok(depths)
    }

    pub fn outbox_destinations(&self) -> Result<BTreeSet<OwnedServerName>> {
        let mut destinations = BTreeSet::new();
        self.storage.tables.outbox.for_each(|(destination, _), _| {
            if let Ok(name) = OwnedServerName::try_from(destination) {
                destinations.insert(name);
            }
        })?;
        Ok(destinations)
    }

    /// After a long outage: keeps only the latest queued event of each room
    /// for `destination` when more than `threshold` are waiting (the server
    /// fetches the gap itself with `/get_missing_events`, rather than
    /// receiving days of backlog). Returns how many entries were dropped.
    pub async fn outbox_catch_up(&self, destination: &ServerName, threshold: usize) -> Result<usize> {
        if self.outbox_page(destination, threshold + 1)?.len() <= threshold {
            return Ok(0);
        }
        let entries = self.storage.tables.outbox.scan_leading((destination.as_str(),))?;
        let mut latest: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for ((_, position), (room_id, _)) in &entries {
            let newest = latest.entry(room_id.clone()).or_insert(*position);
            *newest = (*newest).max(*position);
        }
        let mut batch = Batch::new();
        let mut dropped = 0;
        for ((_, position), (room_id, _)) in &entries {
            if latest.get(room_id) != Some(position) {
                batch.remove(&self.storage.tables.outbox, &(destination.to_string(), *position));
                dropped += 1;
            }
        }
        self.storage.commit(batch).await?;
        Ok(dropped)
    }

    /// The signal the federation sender waits on.
    pub fn outbox_signal(&self) -> std::sync::Arc<OutboxSignal> {
        std::sync::Arc::clone(&self.outbox_signal)
    }
}

impl Rooms {
    /// The servers other than `own` with joined members in the room now.
    pub fn other_servers_in(&self, room_id: &ruma::RoomId, own: &ServerName) -> Result<Vec<OwnedServerName>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        let mut servers = self.audience(room.current_state, &state)?.servers.clone();
        servers.extend(self.servers_named_at_join(room_id)?);
        Ok(servers.into_iter().filter(|server| server != own).collect())
    }

    /// A new room's short id (a room joined through another server).
    pub fn next_short_room_id(&self) -> Result<u64> {
        Ok(self.storage.next_count()?)
    }

    /// Queues another server's event for the room's other servers (not
    /// `origin`, not us): a join or leave a resident server received through
    /// `/send_join` or `/send_leave` reaches the whole room through it.
    pub async fn forward_to_servers(&self, event_id: &ruma::EventId, origin: &ServerName) -> Result<()> {
        let Some((pdu, stored)) = self.get_pdu(event_id)? else { return Ok(()) };
        let (Some(position), Some(snapshot)) = (stored.position(), stored.state_before) else { return Ok(()) };
        let state = self.state_after(&pdu, &stored)?;
        let before = self.state.full_state(snapshot)?;
        let mut destinations = self.audience(snapshot, &before)?.servers.clone();
        destinations.extend(self.joined_members_in(&state)?.iter().map(|user| user.server_name().to_owned()));
        destinations.remove(&self.server_name);
        destinations.remove(origin);
        let mut batch = Batch::new();
        let value = (stored.room_id.clone(), event_id.to_string());
        for destination in &destinations {
            batch.insert(&self.storage.tables.outbox, &(destination.to_string(), position), &value)?;
        }
        self.storage.commit(batch).await?;
        self.outbox_signal.mark(destinations);
        Ok(())
    }
}
