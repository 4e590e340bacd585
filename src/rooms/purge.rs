//! Purging a room's old history (the admin API's `purge_history`, after
//! Synapse's): the room's events before a point leave this server's
//! database — their JSON, timeline place, short ids, search words,
//! relations and notifications — so the disk they took is reclaimed.
//!
//! What stays, as in Synapse: every state event (the room's state and the
//! authorisation of later events are built on them), the room's latest
//! events (its forward extremities, which new events will point to), and,
//! unless asked otherwise, the events sent by this server's users. Users'
//! read receipts and other servers' copies are untouched; a purged event is
//! then unknown here (404 for `/context`, absent from `/messages`).

use std::collections::{BTreeSet, HashSet};

use ruma::{state_res::Event as _, OwnedEventId, RoomId};

use super::Rooms;
use crate::{
    error::{Error, Result},
    storage::{keys::NotificationKey, prefix_of, Batch},
};

/// Events looked at per write.
const PAGE: usize = 500;

/// Where a purge stops.
#[derive(Debug, Clone)]
pub enum PurgeUpTo {
    /// Events before this one (the event itself stays).
    Event(OwnedEventId),
    /// Events sent before this time (ms since the epoch).
    Time(u64),
}

impl Rooms {
    /// The timeline position where a purge of `room_id` stops (events below it go).
    fn purge_limit(&self, room_id: &RoomId, up_to: &PurgeUpTo) -> Result<u64> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
        match up_to {
            PurgeUpTo::Event(event_id) => {
                let (_, stored) = self
                    .get_pdu(event_id)?
                    .filter(|(_, stored)| stored.room_id == room_id.as_str() && stored.count > 0)
                    .ok_or_else(|| Error::not_found("The event is not in this room's timeline"))?;
                Ok(stored.count)
            }
            PurgeUpTo::Time(ts) => {
                let mut from = 0;
                loop {
                    let page = self.timeline_page(&room, from, false, PAGE)?;
                    let Some((last, _)) = page.last() else { return Ok(u64::MAX) };
                    from = last + 1;
                    for (count, event_id) in &page {
                        let sent = self.get_pdu(event_id)?.map(|(pdu, _)| u64::from(pdu.origin_server_ts().get()));
                        if sent.is_some_and(|sent| sent >= *ts) {
                            return Ok(*count);
                        }
                    }
                }
            }
        }
    }

    /// Purges the history of `room_id` before `up_to` (see the module docs);
    /// how many events went.
    pub async fn purge_history(&self, room_id: &RoomId, up_to: &PurgeUpTo, delete_local_events: bool) -> Result<usize> {
        let limit = self.purge_limit(room_id, up_to)?;
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
        let latest: HashSet<&str> = room.forward_extremities.iter().map(String::as_str).collect();
        let tables = &self.storage.tables;
        let mut purged_positions = BTreeSet::new();
        let mut from = 0;
        loop {
            let page = self.timeline_page(&room, from, false, PAGE)?;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            let mut batch = Batch::new();
            let mut purged_ids = Vec::new();
            for (count, event_id) in page.iter().filter(|(count, _)| *count < limit) {
                let Some((pdu, stored)) = self.get_pdu(event_id)? else { continue };
                let keep = pdu.state_key().is_some()
                    || latest.contains(event_id.as_str())
                    || (!delete_local_events && pdu.sender().server_name() == self.server_name);
                if keep {
                    continue;
                }
                let id = event_id.to_string();
                batch.remove(&tables.room_timeline, &(room.short_id, *count));
                batch.remove(&tables.eventid_pdu, &id);
                batch.remove(&tables.eventid_shortid, &id);
                batch.remove(&tables.shortid_eventid, &stored.short_id());
                self.unindex_relation(&mut batch, &pdu, &stored);
                self.unindex_search_words(&mut batch, &pdu, *count);
                for ((parent, child), _) in tables.relations.scan_prefix(&prefix_of(id.as_str()))? {
                    batch.remove(&tables.relations, &(parent, child));
                }
                batch.remove(&tables.thread_roots, &(room_id.to_string(), id));
                purged_positions.insert(*count);
                purged_ids.push(event_id.clone());
            }
            self.storage.commit(batch).await?;
            for event_id in &purged_ids {
                self.pdus.invalidate(event_id);
            }
            if *last >= limit || page.len() < PAGE {
                break;
            }
        }
        self.remove_purged_notifications(room_id, &purged_positions).await?;
        Ok(purged_positions.len())
    }

    /// Removes the local members' notifications of purged events.
    async fn remove_purged_notifications(&self, room_id: &RoomId, purged: &BTreeSet<u64>) -> Result<()> {
        let (Some(first), Some(last)) = (purged.first(), purged.last()) else { return Ok(()) };
        let Some(room) = self.room(room_id)? else { return Ok(()) };
        let state = self.current_state(&room)?;
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        for member in self.member_events_in(&state)? {
            let Some(user) = member.state_key_str().and_then(|key| ruma::UserId::parse(key).ok()) else { continue };
            if user.server_name() != self.server_name {
                continue;
            }
            let start = NotificationKey::new(user.localpart(), room_id.as_str(), *first);
            let end = NotificationKey::new(user.localpart(), room_id.as_str(), last.saturating_add(1));
            for (key, _) in tables.notifications.range(&start, &end, false, usize::MAX)? {
                if purged.contains(&key.count) {
                    batch.remove(&tables.notifications, &key);
                }
            }
        }
        Ok(self.storage.commit(batch).await?)
    }
}
