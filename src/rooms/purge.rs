//! Purging a room's old history (the admin API's `purge_history`, after
//! Synapse's): the room's events before a point leave this server's
//! database — their JSON, timeline place, short ids, search words,
//! and relations — so the disk they took is reclaimed. Their push records
//! (a few dozen bytes each, see [`super::notifications`]) stay: unread
//! counts are differences of running totals, which stay exact for every
//! read position; `GET /notifications` skips events no longer here.
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
    events::Pdu,
    storage::{
        prefix_of,
        records::{RoomRecord, StoredPdu},
        Batch,
    },
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
    fn purge_limit(&self, room_id: &RoomId, room: &RoomRecord, up_to: &PurgeUpTo) -> Result<u64> {
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
                    let page = self.timeline_page(room, from, false, PAGE)?;
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
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
        let limit = self.purge_limit(room_id, &room, up_to)?;
        let latest: HashSet<&str> = room.forward_extremities.iter().map(String::as_str).collect();
        let mut purged = 0;
        let mut from = 0;
        loop {
            let page = self.timeline_page(&room, from, false, PAGE)?;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            let mut batch = Batch::new();
            let mut purged_ids = Vec::new();
            let mut searchable = Vec::new();
            for (_, event_id) in page.iter().filter(|(count, _)| *count < limit) {
                let Some((pdu, stored)) = self.get_pdu(event_id)? else { continue };
                let keep = pdu.state_key().is_some()
                    || latest.contains(event_id.as_str())
                    || (!delete_local_events && pdu.sender().server_name() == self.server_name);
                if keep {
                    continue;
                }
                self.remove_event(&mut batch, &room, event_id.as_str(), Some(&pdu), &stored, &mut searchable)?;
                purged_ids.push(event_id.clone());
            }
            self.unindex_purged(&searchable)?;
            self.storage.commit(batch).await?;
            purged += purged_ids.len();
            for event_id in &purged_ids {
                self.pdus.invalidate(event_id);
            }
            if *last >= limit || page.len() < PAGE {
                break;
            }
        }
        Ok(purged)
    }

    /// The local users with a membership (or a forgotten one) in the room.
    fn local_users_of(&self, room_key: &str) -> Result<Vec<String>> {
        let tables = &self.storage.tables;
        let mut localparts = BTreeSet::new();
        tables.localpart_roomid_membership.for_each(|(localpart, room), _| {
            if room == room_key {
                localparts.insert(localpart);
            }
        })?;
        tables.localpart_roomid_forgotten.for_each(|(localpart, room), _| {
            if room == room_key {
                localparts.insert(localpart);
            }
        })?;
        Ok(localparts.into_iter().collect())
    }
}

/// Writes per commit while a whole room is purged.
const PURGE_BATCH: usize = 2_000;

impl Rooms {
    /// Removes every trace of a room from the database (a shutdown's
    /// `purge`): its events and their indexes, its state snapshots, its
    /// record, receipts, aliases, directory entry and the local users'
    /// memberships, notifications and room account data. Refused while a
    /// local user is joined. Events still queued for other servers (the
    /// shutdown's leaves) stay until sent. How many events went.
    pub async fn purge_room(&self, room_id: &RoomId) -> Result<usize> {
        let Some(room) = self.room(room_id)? else { return Ok(0) };
        let state = self.current_state(&room)?;
        if self.joined_members_in(&state)?.iter().any(|member| member.server_name() == self.server_name) {
            return Err(Error::new(
                crate::error::ErrorKind::BadRequest,
                "Local users are still in the room: shut it down first",
            ));
        }
        let tables = &self.storage.tables;
        let room_key = room_id.to_string();
        let queued: HashSet<String> = tables
            .outbox
            .all()?
            .into_iter()
            .filter(|(_, (queued_room, _))| *queued_room == room_key)
            .map(|(_, (_, event_id))| event_id)
            .collect();
        let mut events = Vec::new();
        tables.eventid_pdu.for_each(|event_id, stored| {
            if stored.room_id == room_key && !queued.contains(&event_id) {
                events.push((event_id, stored));
            }
        })?;
        let mut snapshots = BTreeSet::from([room.current_state]);
        let mut batch = Batch::new();
        let mut searchable = Vec::new();
        for (event_id, stored) in &events {
            snapshots.extend(stored.state_before);
            // Parsed from the record in hand; an unreadable event still goes.
            let pdu = match OwnedEventId::try_from(event_id.as_str()) {
                Ok(id) => {
                    self.pdus.invalidate(&id);
                    Self::parse_stored(&id, stored).ok()
                }
                Err(_) => None,
            };
            self.remove_event(&mut batch, &room, event_id, pdu.as_ref(), stored, &mut searchable)?;
            if batch.len() >= PURGE_BATCH {
                self.unindex_purged(&std::mem::take(&mut searchable))?;
                self.storage.commit(std::mem::take(&mut batch)).await?;
            }
        }
        self.unindex_purged(&searchable)?;
        self.remove_snapshots(&mut batch, snapshots)?;
        self.remove_room_records(&mut batch, &room_key, room.short_id)?;
        self.storage.commit(batch).await?;
        Ok(events.len())
    }

    /// Adds to `batch` the removal of an event and of everything that
    /// indexes it: its JSON, timeline place, short ids, auth chain, search
    /// words, thread root and relations (as child and as parent). Without
    /// its parsed form (unreadable), what its words and parent were stays.
    /// Its search blocks are left to the caller: (event, position) goes to
    /// `searchable`, for [`Rooms::unindex_purged`] before `batch` is written.
    fn remove_event(
        &self,
        batch: &mut Batch,
        room: &RoomRecord,
        event_id: &str,
        pdu: Option<&Pdu>,
        stored: &StoredPdu,
        searchable: &mut Vec<(Pdu, u64)>,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        if let Some(pdu) = pdu {
            self.unindex_relation(batch, pdu, stored);
            self.unindex_search_words(batch, pdu, stored.count);
            if let Some(position) = stored.position() {
                searchable.push((pdu.clone(), position));
            }
        }
        for ((parent, child), _) in tables.relations.scan_prefix(&prefix_of(event_id))? {
            batch.remove(&tables.relations, &(parent, child));
        }
        if stored.count > 0 {
            batch.remove(&tables.room_timeline, &(room.short_id, stored.count));
        }
        batch.remove(&tables.eventid_pdu, &event_id.to_owned());
        batch.remove(&tables.eventid_shortid, &event_id.to_owned());
        batch.remove(&tables.shortid_eventid, &stored.short_id());
        batch.remove(&tables.shortid_authchain, &stored.short_id());
        batch.remove(&tables.thread_roots, &(stored.room_id.clone(), event_id.to_owned()));
        Ok(())
    }

    /// Removes the snapshots and every parent they build on (all of one room).
    fn remove_snapshots(&self, batch: &mut Batch, mut pending: BTreeSet<u64>) -> Result<()> {
        let tables = &self.storage.tables;
        let mut seen = HashSet::new();
        while let Some(id) = pending.pop_first() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(snapshot) = tables.snapshot_state.get(&id)? {
                pending.extend(snapshot.parent);
                batch.remove(&tables.snapshot_state, &id);
            }
        }
        Ok(())
    }

    /// The room's own records and the local users' records about it.
    fn remove_room_records(&self, batch: &mut Batch, room_key: &str, room_short: u64) -> Result<()> {
        let tables = &self.storage.tables;
        batch.remove(&tables.roomid_room, &room_key.to_owned());
        batch.remove(&tables.published_rooms, &room_key.to_owned());
        batch.remove(&tables.partial_state_rooms, &room_key.to_owned());
        for (key, _) in tables.thread_roots.scan_prefix(&prefix_of(room_key))? {
            batch.remove(&tables.thread_roots, &key);
        }
        for (key, _) in tables.receipts.scan_prefix(&crate::storage::keys::ReceiptKey::room_prefix(room_key))? {
            batch.remove(&tables.receipts, &key);
        }
        for (key, _) in tables.receipt_positions.scan_prefix(&prefix_of(room_key))? {
            batch.remove(&tables.receipt_positions, &key);
        }
        for (key, _) in tables.roomid_alias.scan_prefix(&prefix_of(room_key))? {
            batch.remove(&tables.alias_room, &key.1);
            batch.remove(&tables.roomid_alias, &key);
        }
        let localparts = self.local_users_of(room_key)?;
        for localpart in &localparts {
            let key = (localpart.clone(), room_key.to_owned());
            batch.remove(&tables.localpart_roomid_membership, &key);
            batch.remove(&tables.localpart_roomid_forgotten, &key);
            batch.remove(&tables.remote_invites, &key);
        }
        self.remove_room_push_records(batch, room_short, &localparts)?;
        tables.account_data.for_each(|key, _| {
            if key.room_id.as_deref() == Some(room_key) {
                batch.remove(&tables.account_data, &key);
            }
        })?;
        Ok(())
    }
}
