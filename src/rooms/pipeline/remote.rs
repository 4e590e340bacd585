//! A federated event's place in the room, for the persist step: the state
//! before it (from the states after its `prev_events`, resolved when there
//! are several), the forward extremities and current state after it (the
//! current state follows the event when it builds on every extremity, and
//! is resolved with it otherwise), and outliers (auth and state events
//! fetched from a peer, stored outside the timeline).
//!
//! Spec: server-server API "Checks performed on receipt of a PDU" (the
//! state before an event), "Room State Resolution"; room versions' state
//! resolution algorithms (`super::super::resolution`).

use std::{collections::HashSet, sync::Arc};

use ruma::state_res::Event as _;
use ruma::{events::StateEventType, room_version_rules::RoomVersionRules, EventId, OwnedEventId};

use super::{
    persist::{CurrentState, PersistPlan, RoomUpdate, Staged},
    Verdict,
};
use crate::{
    error::{Error, ErrorKind, Result},
    events::Pdu,
    rooms::{resolution, state::StateMap, Rooms},
    storage::{
        records::{EventStatus, RoomRecord},
        Batch,
    },
};

/// Positions kept below a room joined through another server for the
/// history fetched from peers later (one per event).
pub const BACKFILL_RESERVE: u64 = 1_000_000;

/// A state in event ids, as state resolution takes it.
type IdState = ruma::state_res::StateMap<OwnedEventId>;

/// The state before an event, ready for the persist step.
pub struct StateBefore {
    pub map: Arc<StateMap>,
    /// A stored snapshot the map is equal to, or builds on.
    base: Option<u64>,
}

impl Rooms {
    /// Whether the event is stored with a place in the room's history (not
    /// an outlier): the state after it is known.
    pub fn has_state_after(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.get_pdu(event_id)?.is_some_and(|(_, stored)| stored.state_before.is_some()))
    }

    /// The state before `pdu` from the states after its prev events: stored
    /// ([`Self::has_state_after`]) or, for prev events this server lacks,
    /// given in `fetched` (the state after each, as a peer told it).
    pub(crate) fn state_before_with(
        &self,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        mut fetched: std::collections::HashMap<OwnedEventId, StateMap>,
    ) -> Result<StateBefore> {
        let mut states = Vec::new();
        let mut base = None;
        for prev in pdu.prev_events() {
            if let Some(state) = fetched.remove(prev) {
                states.push(Arc::new(state));
                continue;
            }
            let (prev_pdu, stored) = self.get_pdu(prev)?.ok_or_else(|| {
                Error::new(ErrorKind::BadState, format!("The state after prev event {prev} could not be had"))
            })?;
            base.get_or_insert(stored.snapshot_before()?);
            states.push(self.state_after(&prev_pdu, &stored)?);
        }
        let map = match states.len() {
            0 => return Err(Error::bad_json("An event other than the create event has prev events")),
            1 => states.pop().unwrap_or_default(),
            _ => Arc::new(self.resolve_short_states(rules, &states, None)?.into_iter().collect()),
        };
        Ok(StateBefore { map, base })
    }

    /// A state given as events (a peer's answer about the state at some
    /// event, every event stored): its map of short ids.
    pub(crate) fn state_of_events(&self, room_id: &ruma::RoomId, events: &[OwnedEventId]) -> Result<StateMap> {
        let mut map = StateMap::new();
        for event_id in events {
            let Some((pdu, stored)) = self.get_pdu(event_id)? else {
                return Err(Error::internal("state of events", format!("{event_id} is not stored")));
            };
            // Only accepted events of this room can be part of its state.
            if stored.room_id != room_id.as_str() || stored.status != EventStatus::Accepted {
                continue;
            }
            let Some(state_key) = pdu.state_key_str() else { continue };
            map.insert(self.state.short_state_key(&pdu.kind().to_string(), state_key)?, stored.short_id());
        }
        Ok(map)
    }

    /// Stores an event from another server that passed the checks, as
    /// `verdict` says, with the room's lock held by the caller. An accepted
    /// event joins the timeline and the forward extremities; the current
    /// state follows it or is resolved with it.
    pub(crate) async fn store_remote(
        &self,
        room: &mut RoomRecord,
        pdu: &Pdu,
        state_before: StateBefore,
        verdict: &Verdict,
    ) -> Result<Staged<'_>> {
        let (_, rules) = Self::rules_of(room)?;
        let status = match verdict {
            Verdict::Accept => EventStatus::Accepted,
            Verdict::SoftFail(_) => EventStatus::SoftFailed,
            Verdict::Reject(_) => EventStatus::Rejected,
        };
        let snapshot = self.snapshot_of(&state_before)?;
        let prev: HashSet<String> = pdu.prev_events().map(ToString::to_string).collect();
        let extends_every_tip = room.forward_extremities.iter().all(|tip| prev.contains(tip));
        let mut forward_extremities: Vec<String> =
            room.forward_extremities.iter().filter(|tip| !prev.contains(*tip)).cloned().collect();
        forward_extremities.push(pdu.event_id().to_string());
        let current_state = if extends_every_tip {
            CurrentState::FollowsEvent
        } else {
            let current = self.state.full_state(room.current_state)?;
            let mut after = StateMap::clone(&state_before.map);
            let new_entry = match pdu.state_key_str() {
                Some(state_key) => {
                    let short_key = self.state.short_state_key(&pdu.kind().to_string(), state_key)?;
                    after.insert(short_key, u64::MAX);
                    true
                }
                None => false,
            };
            let resolved = self.resolve_short_states(&rules, &[current, Arc::new(after)], new_entry.then_some(pdu))?;
            CurrentState::Resolved(resolved.into_iter().map(|(k, v)| (k, (v != u64::MAX).then_some(v))).collect())
        };
        let room_id = pdu.room_id_or_derived();
        // An accepted redaction applies to its target if the rules allow it
        // then (the same check as a local one); it is stored either way.
        let redaction = match (status, pdu.kind()) {
            (EventStatus::Accepted, ruma::events::TimelineEventType::RoomRedaction) => {
                self.prepare_redaction(&room_id, pdu, &rules, &state_before.map).unwrap_or_else(|refusal| {
                    tracing::info!(event = %pdu.event_id(), %refusal, "a redaction from another server not applied");
                    Batch::new()
                })
            }
            _ => Batch::new(),
        };
        let plan = PersistPlan {
            room_id: &room_id,
            pdu,
            state_before: Some(snapshot),
            status,
            in_timeline: true,
            room_update: Some(RoomUpdate { forward_extremities, current_state }),
            txn: None,
            extra: redaction,
            backfill_position: None,
        };
        self.persist(plan, room).await
    }

    /// Stores an event outside the timeline (an auth or state event fetched
    /// from a peer), unless it is stored already.
    pub(crate) async fn store_outlier(&self, room: &mut RoomRecord, pdu: &Pdu, status: EventStatus) -> Result<()> {
        self.store_outliers(room, std::slice::from_ref(pdu), status).await
    }

    /// Stores events outside the timeline (those not stored yet), with one
    /// wait for the disk at the end.
    pub(crate) async fn store_outliers(&self, room: &mut RoomRecord, pdus: &[Pdu], status: EventStatus) -> Result<()> {
        let mut last = None;
        for pdu in pdus {
            if self.get_pdu(pdu.event_id())?.is_some() {
                continue;
            }
            let room_id = pdu.room_id_or_derived();
            let plan = PersistPlan {
                room_id: &room_id,
                pdu,
                state_before: None,
                status,
                in_timeline: false,
                room_update: None,
                txn: None,
                extra: Batch::new(),
                backfill_position: None,
            };
            // Each write is applied at once; only the last one is waited for.
            last = Some(self.persist(plan, room).await?);
        }
        match last {
            Some(staged) => staged.durable().await,
            None => Ok(()),
        }
    }

    /// Stores state events of a room fetched from another server (its
    /// lock taken), outside the timeline.
    pub(crate) async fn store_fetched_state(&self, room_id: &ruma::RoomId, pdus: &[Pdu]) -> Result<()> {
        let _guard = self.locks.lock(room_id).await;
        let mut room = self.room(room_id)?.ok_or_else(|| Error::not_found("The room is gone"))?;
        self.store_outliers(&mut room, pdus, EventStatus::Accepted).await
    }

    /// Stores a room this server joins through another: the auth chain and
    /// the state before the join (checked by the caller, in an order where
    /// auth events come first) as outliers, then the room record and the
    /// join event on top of that state; with `partial`, the room is marked as
    /// joined with partial state in the same write.
    pub(crate) async fn store_joined_room(
        &self,
        mut room: RoomRecord,
        outliers: &[Pdu],
        state: &[OwnedEventId],
        join: &Pdu,
        partial: Option<&crate::storage::records::PartialStateRecord>,
    ) -> Result<()> {
        let room_id = join.room_id_or_derived();
        let _guard = self.locks.lock(&room_id).await;
        if room.backfill_floor == 0 && self.latest_position(&room)? == 0 {
            // Positions below the join, for the history fetched later.
            room.backfill_floor = self.storage.skip_counts(BACKFILL_RESERVE)?;
        }
        self.store_outliers(&mut room, outliers, EventStatus::Accepted).await?;
        let map = self.state_of_events(&room_id, state)?;
        let snapshot = self.snapshot_of(&StateBefore { map: Arc::new(map), base: None })?;
        room.current_state = snapshot;
        // Other local users the room's state names (invited, banned, joined
        // through another server earlier): their membership index follows it.
        let mut memberships = Batch::new();
        if let Some(partial) = partial {
            self.mark_partial_state(&mut memberships, &room_id, partial)?;
        }
        for event_id in state {
            if let Some((member, stored)) = self.get_pdu(event_id)? {
                if stored.status == EventStatus::Accepted && member.state_key_str() != Some(join.sender().as_str()) {
                    self.record_local_membership(&mut memberships, &room_id, &member)?;
                }
            }
        }
        let plan = PersistPlan {
            room_id: &room_id,
            pdu: join,
            state_before: Some(snapshot),
            status: EventStatus::Accepted,
            in_timeline: true,
            room_update: Some(RoomUpdate {
                forward_extremities: vec![join.event_id().to_string()],
                current_state: CurrentState::FollowsEvent,
            }),
            txn: None,
            extra: memberships,
            backfill_position: None,
        };
        self.persist(plan, &mut room).await?.durable().await
    }

    /// The snapshot id of a state before: its base when equal, else a new
    /// snapshot over the base, written at once (the event's write builds on
    /// it; a snapshot no event names is harmless).
    fn snapshot_of(&self, state: &StateBefore) -> Result<u64> {
        let mut batch = Batch::new();
        let id = self.new_snapshot_of(&mut batch, state)?;
        self.storage.apply(batch)?;
        Ok(id)
    }

    fn new_snapshot_of(&self, batch: &mut Batch, state: &StateBefore) -> Result<u64> {
        let whole = |batch: &mut Batch| {
            let entries: Vec<(u64, u64)> = state.map.iter().map(|(k, v)| (*k, *v)).collect();
            self.state.new_snapshot(batch, None, &entries)
        };
        let Some(base_id) = state.base else { return whole(batch) };
        let base = self.state.full_state(base_id)?;
        if *base == *state.map {
            return Ok(base_id);
        }
        if base.keys().any(|key| !state.map.contains_key(key)) {
            // Not a superset of the base: a whole snapshot.
            return whole(batch);
        }
        let changes: Vec<(u64, u64)> =
            state.map.iter().filter(|(k, v)| base.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
        self.state.new_snapshot(batch, Some(base_id), &changes)
    }

    /// State resolution over states of short ids. `pending` is an event not
    /// stored yet, standing in the states as `u64::MAX`.
    fn resolve_short_states(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateMap>],
        pending: Option<&Pdu>,
    ) -> Result<Vec<(u64, u64)>> {
        let mut id_states = Vec::with_capacity(states.len());
        for state in states {
            let mut ids = IdState::new();
            for (short_key, short_event) in state.iter() {
                let (kind, state_key) = self.state.state_key_of(*short_key)?;
                let event_id = match (*short_event, pending) {
                    (u64::MAX, Some(pending)) => pending.event_id().clone(),
                    (short, _) => self.event_id_of_short(short)?,
                };
                ids.insert((StateEventType::from(kind), state_key), event_id);
            }
            id_states.push(ids);
        }
        let fetch = |id: &EventId| match pending {
            Some(pending) if pending.event_id() == id => Some(pending.clone()),
            _ => self.get_pdu(id).ok().flatten().map(|(pdu, _)| pdu),
        };
        let resolved = resolution::resolve(rules, &id_states, fetch)?;
        let mut shorts = Vec::with_capacity(resolved.len());
        for ((kind, state_key), event_id) in resolved {
            let short_key = self.state.short_state_key(&kind.to_string(), &state_key)?;
            let short_event = match pending {
                Some(pending) if pending.event_id() == &event_id => u64::MAX,
                _ => self.short_id_of(&event_id)?,
            };
            shorts.push((short_key, short_event));
        }
        Ok(shorts)
    }

    fn short_id_of(&self, event_id: &EventId) -> Result<u64> {
        self.storage
            .tables
            .eventid_shortid
            .get(&event_id.to_string())?
            .ok_or_else(|| Error::internal("state resolution", format!("{event_id} has no short id")))
    }
}

/// Where history fetched from a peer goes in a room's timeline.
pub struct BackfillPoint {
    /// The room's earliest event here (`/backfill` starts from it).
    pub earliest: OwnedEventId,
    /// The next free position below it (going down).
    pub next_position: u64,
    /// The lowest position history may take.
    pub floor: u64,
    /// The state the fetched history is shown with (the state before the
    /// earliest event).
    pub snapshot: u64,
}

impl Rooms {
    /// Where older history would go, or `None` when the room's history is
    /// whole here (it starts with the create event, or was never joined
    /// through another server) or the positions kept for it are used up.
    pub fn backfill_point(&self, room: &RoomRecord) -> Result<Option<BackfillPoint>> {
        if room.backfill_floor == 0 {
            return Ok(None);
        }
        let Some((position, earliest)) = self.timeline_page(room, 0, false, 1)?.pop() else { return Ok(None) };
        let Some((pdu, stored)) = self.get_pdu(&earliest)? else { return Ok(None) };
        if pdu.kind().to_string() == crate::events::kinds::CREATE || position <= room.backfill_floor + 1 {
            return Ok(None);
        }
        let snapshot = stored.snapshot_before()?;
        Ok(Some(BackfillPoint { earliest, next_position: position - 1, floor: room.backfill_floor, snapshot }))
    }

    /// Stores a checked event of the room's history at `position` (below
    /// everything the timeline held), shown with the state `snapshot`; an
    /// event held as an outlier (fetched for its state) takes its place in
    /// the timeline. Whether it took the position.
    pub(crate) async fn store_backfilled(
        &self,
        room: &mut RoomRecord,
        pdu: &Pdu,
        status: EventStatus,
        position: u64,
        snapshot: u64,
    ) -> Result<bool> {
        if let Some((_, stored)) = self.get_pdu(pdu.event_id())? {
            if stored.position().is_some() || stored.status != EventStatus::Accepted {
                return Ok(false);
            }
            let mut stored = Arc::unwrap_or_clone(stored);
            stored.count = position;
            stored.state_before = Some(snapshot);
            let mut batch = Batch::new();
            batch.insert(&self.storage.tables.eventid_pdu, &pdu.event_id().to_string(), &stored)?;
            batch.insert(
                &self.storage.tables.room_timeline,
                &(room.short_id, position),
                &pdu.event_id().to_string(),
            )?;
            if !stored.redacted {
                self.index_search_words(&mut batch, room.short_id, pdu, position, snapshot)?;
            }
            self.storage.commit(batch).await?;
            self.latest_positions.raise(room.short_id, position);
            self.pdus.invalidate(pdu.event_id());
            return Ok(true);
        }
        let room_id = pdu.room_id_or_derived();
        let plan = PersistPlan {
            room_id: &room_id,
            pdu,
            state_before: Some(snapshot),
            status,
            in_timeline: true,
            room_update: None,
            txn: None,
            extra: Batch::new(),
            backfill_position: Some(position),
        };
        self.persist(plan, room).await?.durable().await?;
        Ok(true)
    }
}
