//! Step 3 of the pipeline: storing an authorised event and everything it
//! changes, atomically and durably.
//!
//! The caller says what the event is to the room ([`PersistPlan`]): the
//! state snapshot before it (none for an outlier), whether it takes a place
//! in the timeline, its verdict, and what the room becomes (new forward
//! extremities, whether the current state follows the event). Every event
//! gets a short id of its own, independent of the timeline (state snapshots
//! and auth chains refer to it), so outliers, soft-failed and rejected
//! events can be stored too. Derived data (relations, search words,
//! notifications, pushes) is written for accepted timeline events only.

use ruma::state_res::Event as _;
use ruma::{events::TimelineEventType, RoomId};

use crate::{
    error::Result,
    events::Pdu,
    rooms::{local_membership_change, Rooms, TxnKey},
    storage::{
        records::{EventStatus, RoomRecord, StoredPdu},
        Batch,
    },
};

/// What storing one event does.
pub struct PersistPlan<'a> {
    pub room_id: &'a RoomId,
    pub pdu: &'a Pdu,
    /// The snapshot of the state before the event: `None` for a create event
    /// (its state before is empty) or an outlier (see `in_timeline`).
    pub state_before: Option<u64>,
    pub status: EventStatus,
    /// Whether the event takes the next timeline position (false: an outlier).
    pub in_timeline: bool,
    /// What the room becomes; `None` leaves the room record as it is.
    pub room_update: Option<RoomUpdate>,
    /// The client transaction that sent it.
    pub txn: Option<TxnKey>,
    /// Further writes that belong in the same batch (a redaction's target).
    pub extra: Batch,
    /// History fetched from a peer: the timeline position it takes, below
    /// everything the room held (no notifications, nothing sent on).
    pub backfill_position: Option<u64>,
}

/// The room after the event.
pub struct RoomUpdate {
    pub forward_extremities: Vec<String>,
    pub current_state: CurrentState,
}

/// What the room's current state becomes with the event.
pub enum CurrentState {
    /// The state after this event (it builds on every forward extremity).
    FollowsEvent,
    /// As it was.
    Unchanged,
    /// The resolution of the room's branches (state resolution), as
    /// (short state key, short event id); `None` stands for this event.
    Resolved(Vec<(u64, Option<u64>)>),
}

/// An event written but not yet known to be on disk: syncs do not see it
/// and nobody may be told it is stored until [`Staged::durable`] returns.
/// Its writer releases the room's lock first, so the next event of the room
/// is built while this one is being flushed.
#[must_use = "an event is acknowledged only once durable"]
pub struct Staged<'s> {
    rooms: &'s Rooms,
    reservation: Option<crate::storage::Reservation<'s>>,
    pushes_queued: bool,
    /// Servers the event was queued for.
    destinations: Vec<ruma::OwnedServerName>,
}

impl Staged<'_> {
    /// Waits for the flush, then lets syncs (and the push sender) see the event.
    pub async fn durable(self) -> Result<()> {
        self.rooms.storage.wait_durable().await?;
        if let Some(reservation) = self.reservation {
            reservation.announce();
        }
        if self.pushes_queued {
            self.rooms.push_wakeup.notify_one();
        }
        if !self.destinations.is_empty() {
            self.rooms.outbox_signal.mark(self.destinations);
        }
        Ok(())
    }
}

impl Rooms {
    /// Stores the event as `plan` says, updating `room` (the stored room
    /// record, written back in the same batch when the plan changes it).
    /// The write is applied at once; [`Staged::durable`] waits for the disk.
    pub(crate) async fn persist(&self, plan: PersistPlan<'_>, room: &mut RoomRecord) -> Result<Staged<'_>> {
        let PersistPlan { room_id, pdu, state_before, status, in_timeline, room_update, txn, extra, backfill_position } =
            plan;
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        let accepted = status == EventStatus::Accepted;
        // Soft-failed and rejected events are kept outside the timeline and
        // change nothing in the room: clients never see them.
        let in_timeline = in_timeline && accepted;
        let room_update = room_update.filter(|_| accepted);
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation =
            if in_timeline && backfill_position.is_none() { Some(self.storage.reserve_count()?) } else { None };
        let position = match backfill_position {
            Some(position) if in_timeline => position,
            _ => reservation.as_ref().map_or(0, |r| r.count),
        };
        let event_id = pdu.event_id().to_string();
        // Only state events are named by short id elsewhere (state maps,
        // auth chains), so only they get the two mappings: a message's short
        // id stays in its record, two stored entries fewer a message.
        let named_by_short = pdu.state_key_str().is_some();
        // A state event held before (an outlier placed now) keeps its short
        // id: state maps built while it was an outlier name it by that id.
        let earlier_short = if named_by_short { self.storage.tables.eventid_shortid.get(&event_id)? } else { None };
        let short = match earlier_short {
            Some(short) => short,
            None => self.storage.next_count()?,
        };
        let is_create = pdu.event_type() == &TimelineEventType::RoomCreate;
        // The create event has an empty state before it; its own state starts
        // a whole snapshot rather than a diff over one not yet written.
        let (state_before, parent) = match state_before {
            Some(id) => (Some(id), Some(id)),
            None if is_create && in_timeline => (Some(self.state.new_snapshot(&mut batch, None, &[])?), None),
            None => (None, None),
        };
        if named_by_short {
            batch.insert(&tables.eventid_shortid, &event_id, &short)?;
            batch.insert(&tables.shortid_eventid, &short, &event_id)?;
        }
        let stored = StoredPdu {
            json: pdu.to_canonical_json(),
            room_id: room_id.to_string(),
            room_version: room.version.clone(),
            count: position,
            state_before,
            redacted: false,
            redacted_by: None,
            short: Some(short),
            status,
            transaction: txn.as_ref().map(|txn| (txn.device_id.clone(), txn.txn_id.clone())),
        };
        batch.insert(&tables.eventid_pdu, &event_id, &stored)?;
        // Only state events are auth events, so only their chains are
        // read again and again; a message's is computed when asked for.
        if pdu.state_key_str().is_some() {
            let chain = self.chain_through_auth_events(pdu)?;
            batch.insert(&tables.shortid_authchain, &short, &chain)?;
        }
        let mut derived = Batch::new();
        let mut pushes_queued = false;
        let mut destinations = Vec::new();
        if in_timeline {
            batch.insert(&tables.room_timeline, &(room.short_id, position), &event_id)?;
        }
        // (In the timeline means accepted, see above.)
        if let (true, Some(before)) = (in_timeline, state_before) {
            self.index_relation(&mut batch, room_id, pdu, position)?;
            // New events' words wait for the next block write (queued
            // below, once stored); history placed below is indexed now.
            if backfill_position.is_some() {
                self.index_search_words(&mut derived, room.short_id, pdu, position, before)?;
            }
            if parent.is_some() && backfill_position.is_none() {
                let (_, version_rules) = Self::rules_of(room)?;
                let state = self.state.full_state(before)?;
                pushes_queued = self
                    .index_notifications(
                        &mut derived,
                        room_id,
                        room.short_id,
                        &version_rules,
                        before,
                        &state,
                        pdu,
                        position,
                    )
                    .await?;
                destinations = self.queue_for_servers(&mut batch, pdu, before, &state, position)?;
            }
        }
        if let Some(update) = room_update {
            match update.current_state {
                CurrentState::FollowsEvent => {
                    if let Some(before) = state_before {
                        room.current_state = match pdu.state_key_str() {
                            Some(state_key) => {
                                let short_key = self.state.short_state_key(&pdu.kind().to_string(), state_key)?;
                                self.state.new_snapshot(&mut batch, parent, &[(short_key, short)])?
                            }
                            None => before,
                        };
                    }
                    self.record_local_membership(&mut batch, room_id, pdu)?;
                }
                CurrentState::Resolved(resolved) => {
                    let current = self.state.full_state(room.current_state)?;
                    let mut changes = Vec::new();
                    for (short_key, event) in resolved {
                        let event = event.unwrap_or(short);
                        if current.get(&short_key) != Some(&event) {
                            changes.push((short_key, event));
                            self.record_changed_membership(&mut batch, room_id, pdu, short, event)?;
                        }
                    }
                    if !changes.is_empty() {
                        room.current_state = self.state.new_snapshot(&mut batch, Some(room.current_state), &changes)?;
                    }
                }
                CurrentState::Unchanged => {}
            }
            room.forward_extremities = update.forward_extremities;
            room.max_depth = room.max_depth.max(pdu.depth());
            batch.insert(&tables.roomid_room, &room_id.to_string(), room)?;
        }
        if let Some(txn) = &txn {
            self.transactions.record(&mut batch, txn, &event_id)?;
        }
        // A redaction's target leaves the search blocks in this write, no
        // block write coming between.
        let redacts_now = pdu.redacts().filter(|_| accepted && !extra.is_empty());
        let unindex = redacts_now.map(|target| self.unindex_redacted(&mut batch, target)).transpose()?;
        batch.extend(extra);
        self.storage.apply(batch)?;
        if let Some(unindex) = unindex {
            unindex.written();
        }
        if in_timeline {
            // Once the event is stored, before its position is released
            // (`Staged` holds it), whatever happens to the derived writes.
            self.latest_positions.raise(room.short_id, position);
            if let (Some(before), None) = (state_before, backfill_position) {
                self.queue_search_words(room.short_id, pdu, position, before);
            }
        }
        self.storage.apply_derived(derived)?;
        // The event may have been stored (and cached) before as an outlier:
        // its record now has a position and a state.
        self.pdus.invalidate(pdu.event_id());
        if let Some(redacted) = pdu.redacts() {
            self.pdus.invalidate(redacted);
        }
        tracing::debug!(room = %room_id, event = %event_id, kind = %pdu.kind(), ?status, "event stored");
        self.events_persisted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Staged { rooms: self, reservation, pushes_queued, destinations })
    }

    /// A local user's membership as a member event makes it (the index of
    /// each local user's rooms).
    pub(crate) fn record_local_membership(&self, batch: &mut Batch, room_id: &RoomId, pdu: &Pdu) -> Result<()> {
        let tables = &self.storage.tables;
        if let Some((localpart, membership)) = local_membership_change(pdu, &self.server_name) {
            self.drop_remote_invite(batch, &localpart, room_id);
            let key = (localpart, room_id.to_string());
            if !membership.is_out() {
                batch.remove(&tables.localpart_roomid_forgotten, &key);
            }
            batch.insert(&tables.localpart_roomid_membership, &key, &membership.as_str().to_owned())?;
        }
        Ok(())
    }

    /// [`Self::record_local_membership`] for a state entry state resolution
    /// changed: `event` (a short id; `short` is the event being stored).
    fn record_changed_membership(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        pdu: &Pdu,
        short: u64,
        event: u64,
    ) -> Result<()> {
        if event == short {
            return self.record_local_membership(batch, room_id, pdu);
        }
        let event_id = self.event_id_of_short(event)?;
        if let Some((changed, _)) = self.get_pdu(&event_id)? {
            self.record_local_membership(batch, room_id, &changed)?;
        }
        Ok(())
    }
}
