//! The event pipeline: every event a room stores goes through the same
//! three steps, whoever sent it.
//!
//! 1. **prepare** ([`prepare`]): for a local event, the client-facing checks
//!    (content schemas, relations, canonical aliases), then building and
//!    signing the PDU on top of the room's forward extremities, with the auth
//!    events the state names. (A federated event arrives built and signed.)
//! 2. **authorise** ([`authorise`]): the room version's authorisation rules
//!    against the auth events, against the state before the event, and
//!    against the current state, then the deployment's [`EventPolicy`] —
//!    giving a [`Verdict`]: accepted, soft-failed or rejected
//!    (server-server API "Checks performed on receipt of a PDU"). States are
//!    given to it ([`StateView`]), stored or in memory.
//! 3. **persist** ([`persist`]): the event with the state before it, its
//!    short id (independent of the timeline), its timeline position if it
//!    has one, and what the caller says the room becomes (new forward
//!    extremities, new current state) — in one atomic, durable batch with the
//!    derived data (relations, search words, notifications, pushes).
//!
//! Appends to one room are serialised by the room's lock; the lock entry of
//! a room is dropped when nobody holds or waits for it.
//!
//! A room's creation ([`Rooms::create_room`]) prepares and authorises every
//! initial event in memory ([`draft`]) before anything is stored, so a
//! refused event leaves no half-built room.

pub mod authorise;
pub mod draft;
pub mod persist;
pub mod prepare;
pub mod remote;

use std::sync::{atomic::Ordering, Arc};

use ruma::state_res::Event as _;
use ruma::{
    room_version_rules::RoomVersionRules, EventId, OwnedEventId, OwnedRoomId, RoomAliasId, RoomId, RoomVersionId,
    UserId,
};
use serde_json::Value;

pub use authorise::Verdict;
use persist::{CurrentState, PersistPlan, RoomUpdate};

use super::{state::StateMap, EventRequest, Rooms, TxnKey};
use crate::{
    error::{Error, Result},
    events::{room_version, Pdu},
    storage::{
        records::{EventStatus, RoomRecord},
        Batch, StorageError,
    },
    util::now_ms,
};

/// A room state to authorise against: stored ([`StoredState`]) or being
/// built in memory ([`draft::Draft`]).
pub trait StateView {
    /// The state event `(kind, state_key)`, if the state has one.
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>>;

    /// Every `m.room.member` event of the state (whatever the membership).
    fn member_events(&self) -> Result<Vec<Pdu>>;
}

/// Events by id (auth events): stored, or in memory.
pub trait EventView {
    fn event(&self, event_id: &EventId) -> Result<Option<Pdu>>;
}

/// A deployment's policy hook: may veto an event that passed the auth rules,
/// before it is stored, whether it was sent here or came from another
/// server, and may send events of its own before a local one. The
/// public-sector rules ([`crate::policy`]) plug in here.
pub trait EventPolicy: Send + Sync {
    /// `Err` (its message says which rule) refuses `pdu`.
    fn check(&self, rooms: &Rooms, pdu: &Pdu, state_before: &dyn StateView) -> Result<()>;

    /// Events to send (as `sender`, in order) just before a local event
    /// `request`, on the room's current `state` (of a room of `rules`).
    fn events_before(
        &self,
        _sender: &UserId,
        _request: &EventRequest,
        _rules: &RoomVersionRules,
        _state: &dyn StateView,
    ) -> Result<Vec<EventRequest>> {
        Ok(Vec::new())
    }

    /// Whether the policy may send events before `request` (the state is
    /// read for [`EventPolicy::events_before`] only then).
    fn may_send_before(&self, _sender: &UserId, _request: &EventRequest) -> bool {
        false
    }
}

/// The default policy: the auth rules alone decide.
pub struct NoPolicy;

impl EventPolicy for NoPolicy {
    fn check(&self, _rooms: &Rooms, _pdu: &Pdu, _state_before: &dyn StateView) -> Result<()> {
        Ok(())
    }
}

/// A stored state snapshot, read through the rooms' caches.
pub struct StoredState<'r> {
    rooms: &'r Rooms,
    map: Arc<StateMap>,
}

impl<'r> StoredState<'r> {
    pub fn new(rooms: &'r Rooms, map: Arc<StateMap>) -> Self {
        Self { rooms, map }
    }
}

impl StateView for StoredState<'_> {
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        self.rooms.state_event_in(&self.map, kind, state_key)
    }

    fn member_events(&self) -> Result<Vec<Pdu>> {
        self.rooms.member_events_in(&self.map)
    }
}

impl EventView for Rooms {
    fn event(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        Ok(self.get_pdu(event_id)?.map(|(pdu, _)| pdu))
    }
}

/// Per-room locks, each entry dropped once nobody holds or waits for it.
pub type RoomLocks = crate::locks::KeyedLocks<OwnedRoomId>;

/// A held room lock; dropping it releases the room (and its entry if unused).
pub type RoomGuard<'l> = crate::locks::KeyedGuard<'l, OwnedRoomId>;

impl Rooms {
    /// Creates a room: its create event, then `initial` events in order, as
    /// `sender`. Every event is prepared and authorised in memory first; a
    /// refusal stores nothing (the alias, reserved first so the canonical
    /// alias event can name it, is released again).
    pub async fn create_room(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        create_content: Value,
        alias: Option<&RoomAliasId>,
        initial: Vec<EventRequest>,
    ) -> Result<OwnedRoomId> {
        let rules = room_version::rules(version)?;
        let (create, room_id, guard) = self.build_unique_create(sender, version, &rules, create_content).await?;
        if let Some(alias) = alias {
            self.create_alias(alias, &room_id, sender).await?;
        }
        let draft = match self.draft_room(sender, &rules, create, initial) {
            Ok(draft) => draft,
            Err(error) => {
                if let Some(alias) = alias {
                    if let Err(release) = self.delete_alias(alias).await {
                        tracing::warn!(%alias, error = %release, "could not release the alias of a refused room");
                    }
                }
                return Err(error);
            }
        };
        let mut events = draft.into_events().into_iter();
        let create = events.next().ok_or_else(|| Error::internal("creating a room", "no create event"))?;
        let mut room = RoomRecord {
            version: version.to_string(),
            short_id: self.storage.next_count()?,
            current_state: 0,
            forward_extremities: vec![],
            max_depth: 0,
            backfill_floor: 0,
        };
        // Every event applied, then one flush for all.
        let mut staged =
            vec![self.persist(PersistPlan::local(&room_id, &create, None, None, Batch::new()), &mut room).await?];
        for event in events {
            let before = room.current_state;
            staged.push(
                self.persist(PersistPlan::local(&room_id, &event, Some(before), None, Batch::new()), &mut room).await?,
            );
        }
        drop(guard);
        for event in staged {
            event.durable().await?;
        }
        Ok(room_id)
    }

    /// The create event, with a room id no other room has (version 12 room
    /// ids are the create event's hash: two creations by one user with the
    /// same content in the same millisecond would name one room). Each
    /// creation takes a timestamp no other creation of this process had, and
    /// a room that exists all the same (a clock set back since a restart)
    /// makes it try the next one. Returned with the new room's lock held.
    async fn build_unique_create(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        rules: &ruma::room_version_rules::RoomVersionRules,
        content: Value,
    ) -> Result<(Pdu, OwnedRoomId, RoomGuard<'_>)> {
        loop {
            let create = self.build_create(sender, version, rules, content.clone(), self.unique_create_ts())?;
            let room_id = create.room_id_or_derived();
            let guard = self.locks.lock(&room_id).await;
            if self.room(&room_id)?.is_none() {
                return Ok((create, room_id, guard));
            }
            tracing::debug!(room = %room_id, "room id taken; creating again with a later timestamp");
        }
    }

    /// A creation timestamp (ms) later than every one handed out before.
    fn unique_create_ts(&self) -> u64 {
        let now = now_ms();
        let previous = self
            .last_create_ts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)))
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Sends an event into a room through the pipeline. With a transaction
    /// key, a repeated request returns the first event's id.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let guard = self.locks.lock(room_id).await;
        self.append_locked(guard, room_id, sender, request, txn).await
    }

    /// [`Self::append`] for a caller that holds the room's lock already
    /// (and read the room's state under it to build `request`).
    pub(in crate::rooms) async fn append_locked(
        &self,
        guard: RoomGuard<'_>,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        if let Some(txn) = &txn {
            if let Some(existing) = self.transactions.event_of(txn)? {
                drop(guard);
                // The first request may still be waiting for its flush: this
                // answer waits for one too.
                self.storage.wait_durable().await?;
                return OwnedEventId::try_from(existing).map_err(|_| StorageError::corrupt("stored txn").into());
            }
        }
        let mut room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let policy_events = self.append_policy_events(&mut room, room_id, sender, &request).await?;
        let (pdu, _, rules, state) = self.prepare_local(&room, room_id, sender, request)?;
        let redaction = match pdu.event_type() {
            ruma::events::TimelineEventType::RoomRedaction => self.prepare_redaction(room_id, &pdu, &rules, &state)?,
            _ => Batch::new(),
        };
        let before = room.current_state;
        let staged = self.persist(PersistPlan::local(room_id, &pdu, Some(before), txn, redaction), &mut room).await?;
        // The next event of the room is built while this one is flushed.
        drop(guard);
        for event in policy_events {
            event.durable().await?;
        }
        staged.durable().await?;
        Ok(pdu.event_id().clone())
    }

    /// The events the deployment's policy sends before `request` (the
    /// room's lock held), each persisted on the tip. One the rules refuse
    /// is logged and skipped: the user's own request still goes.
    async fn append_policy_events(
        &self,
        room: &mut RoomRecord,
        room_id: &RoomId,
        sender: &UserId,
        request: &EventRequest,
    ) -> Result<Vec<persist::Staged<'_>>> {
        let policy = self.policy();
        if !policy.may_send_before(sender, request) {
            return Ok(Vec::new());
        }
        let (_, rules) = Self::rules_of(room)?;
        let view = StoredState::new(self, self.current_state(room)?);
        let mut staged = Vec::new();
        for event in policy.events_before(sender, request, &rules, &view)? {
            let kind = event.kind.clone();
            match self.prepare_local(room, room_id, sender, event) {
                Ok((pdu, ..)) => {
                    let before = room.current_state;
                    staged.push(
                        self.persist(PersistPlan::local(room_id, &pdu, Some(before), None, Batch::new()), room).await?,
                    );
                }
                Err(error) => tracing::warn!(room = %room_id, %sender, %kind, %error, "the policy's event was refused"),
            }
        }
        Ok(staged)
    }
}

impl Rooms {
    /// Like [`Rooms::append`], for an event another server must sign before
    /// it is stored (the invite of one of its users): `countersign` gets the
    /// built, authorised event with the room's version and stripped state,
    /// and returns it signed (same event id), under the room's lock.
    pub async fn append_countersigned<F, Fut>(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        countersign: F,
    ) -> Result<OwnedEventId>
    where
        F: FnOnce(Pdu, RoomVersionId, Vec<Value>) -> Fut,
        Fut: std::future::Future<Output = Result<Pdu>>,
    {
        let guard = self.locks.lock(room_id).await;
        let mut room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let (pdu, version, _, _) = self.prepare_local(&room, room_id, sender, request)?;
        let stripped = self.stripped_state(&room, Some(&pdu))?;
        let signed = countersign(pdu.clone(), version, stripped).await?;
        if signed.event_id() != pdu.event_id() {
            return Err(Error::forbidden("The other server changed the event"));
        }
        let before = room.current_state;
        let staged =
            self.persist(PersistPlan::local(room_id, &signed, Some(before), None, Batch::new()), &mut room).await?;
        drop(guard);
        staged.durable().await?;
        Ok(signed.event_id().clone())
    }
}

impl Rooms {
    /// A local event prepared and authorised on the room's tip (the room's
    /// lock held by the caller): the event, the room's version and rules,
    /// and the current state it was built on.
    fn prepare_local(
        &self,
        room: &RoomRecord,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
    ) -> Result<(Pdu, RoomVersionId, ruma::room_version_rules::RoomVersionRules, Arc<StateMap>)> {
        let (version, rules) = Self::rules_of(room)?;
        self.check_request(room_id, &request)?;
        let state = self.current_state(room)?;
        let view = StoredState::new(self, Arc::clone(&state));
        let tip = self.tip_of(room)?;
        let pdu = self.build_event(room_id, sender, request, &rules, &view, &tip)?;
        self.authorise(&pdu, &rules, self, &view, None)?.accepted()?;
        Ok((pdu, version, rules, state))
    }
}

impl<'a> PersistPlan<'a> {
    /// A local event: accepted, in the timeline, the room's only forward
    /// extremity, its state the room's current state.
    pub fn local(
        room_id: &'a RoomId,
        pdu: &'a Pdu,
        state_before: Option<u64>,
        txn: Option<TxnKey>,
        extra: Batch,
    ) -> Self {
        Self {
            room_id,
            pdu,
            state_before,
            status: EventStatus::Accepted,
            in_timeline: true,
            room_update: Some(RoomUpdate {
                forward_extremities: vec![pdu.event_id().to_string()],
                current_state: CurrentState::FollowsEvent,
            }),
            txn,
            extra,
            backfill_position: None,
        }
    }
}
