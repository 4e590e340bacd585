//! Rooms: the event pipeline every event goes through ([`pipeline`]:
//! prepare → authorise → persist), and reads of room state and events.
//!
//! Two numbers locate a stored event: its **short id**, which state
//! snapshots and auth chains refer to, and its **position** in the timeline
//! (the global order `/sync` and pagination follow), which only events in
//! the timeline have. Events stored before the two were separated have one
//! number for both.
//!
//! Spec: client-server API "Rooms", "Room membership", "Sending events";
//! server-server API "Authorization rules", "PDUs"; the room version pages.

pub mod admin;
pub mod aliases;
pub mod client_event;
pub mod content;
pub mod creation;
pub mod directory;
pub mod federated;
pub mod hierarchy;
pub mod invites;
pub mod latest;
pub mod membership;
pub mod notifications;
pub mod outbox;
pub mod partial_state;
pub mod pipeline;
pub mod power_levels;
pub mod profile;
pub mod purge;
pub mod receipts;
pub mod relations;
pub mod reports;
pub mod resolution;
pub mod resolution_v1;
pub mod search;
pub mod search_queue;
pub mod server_acl;
pub mod state;
pub mod summary;
pub mod transactions;
pub mod typing;
pub mod upgrade;

use std::sync::{atomic::AtomicU64, Arc};

use ruma::{
    events::TimelineEventType, room_version_rules::RoomVersionRules, state_res::Event, EventId, OwnedEventId,
    OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
};
use serde_json::Value;

use crate::events::kinds;
/// A local user's invite to (or knock on) a room of another server this
/// server is not in, as the rooms hand it out.
pub use crate::storage::records::RemoteInviteRecord as RemoteInvite;
/// A room's stored description (version, current state, extremities), as
/// the rooms hand it out.
pub use crate::storage::records::RoomRecord;
/// An event's place in its room (room, position, state before, status), as
/// the rooms hand it out with the event.
pub use crate::storage::records::StoredPdu as EventPlace;

/// An event with its stored record, as the event cache shares them.
pub type StoredEvent = (Pdu, Arc<StoredPdu>);
use crate::{
    cache::BoundedCache,
    crypto::signing_key::ServerKey,
    error::{Error, Result},
    events::{room_version, Pdu},
    storage::{records::StoredPdu, Batch, Storage, StorageError},
};
pub use client_event::{client_event, ClientEvent};
pub use membership::Membership;
pub use pipeline::{EventPolicy, NoPolicy, StateView};
use state::{StateMap, StateStore};

/// What a client (or the server on its behalf) wants to send.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl EventRequest {
    pub fn state(kind: &str, state_key: &str, content: Value) -> Self {
        Self { kind: kind.to_owned(), state_key: Some(state_key.to_owned()), content, redacts: None }
    }

    pub fn message(kind: &str, content: Value) -> Self {
        Self { kind: kind.to_owned(), state_key: None, content, redacts: None }
    }
}

/// Identifies a client transaction (device, request, transaction id): the
/// key of `txnid_eventid`, which the rooms own.
pub use crate::storage::keys::{TxnKey, TxnRequest};

pub struct Rooms {
    storage: Arc<Storage>,
    pub state: StateStore,
    server_name: OwnedServerName,
    key: Arc<ServerKey>,
    policy: std::sync::RwLock<Arc<dyn EventPolicy>>,
    /// Appends to one room are serialised.
    pub locks: pipeline::RoomLocks,
    /// Parsed events recently read (timelines, state, sync), keyed by event id.
    pdus: BoundedCache<OwnedEventId, StoredEvent>,
    /// Event ids by short id (state maps name their events by short id). A
    /// short id is never reused, so an entry cannot go stale: a purged one
    /// leads to an event that is gone, as the stored mapping would.
    event_ids: BoundedCache<u64, OwnedEventId>,
    /// The newest timeline position of each room read or written since start.
    latest_positions: latest::LatestPositions,
    /// Client transaction ids of the send and redact endpoints.
    transactions: transactions::ClientTransactions,
    /// Words of new messages waiting to be written to the search index.
    search_queue: Arc<search_queue::SearchQueue>,
    /// Member summaries by state snapshot id.
    summaries: BoundedCache<u64, Arc<summary::MemberSummary>>,
    /// Audiences (joined count, local members, servers) by state snapshot id.
    audiences: BoundedCache<u64, Arc<notifications::Audience>>,
    /// Parsed push rules by (user, version of their `m.push_rules`).
    push_rules: BoundedCache<(ruma::OwnedUserId, u64), Arc<ruma::push::Ruleset>>,
    /// The server-default push rules of no one (an event's default outcome).
    default_push_rules: std::sync::OnceLock<notifications::DefaultRules>,
    /// Destinations with newly queued events (the federation sender waits on it).
    outbox_signal: Arc<outbox::OutboxSignal>,
    /// Woken when pushes were queued for gateways (the push sender waits on it).
    push_wakeup: Arc<tokio::sync::Notify>,
    /// Who has http pushers (kept by the users service).
    pushers: Arc<crate::users::pushers::PusherIndex>,
    /// The users' account data (push rules), owned by the users service.
    account_data: crate::users::account_data::AccountDataStore,
    /// Accounts erased on deactivation: their events are served redacted
    /// to those who were not joined when they were sent.
    erased: crate::users::erased::ErasedUsers,
    /// The latest create-event timestamp handed out (see `unique_create_ts`).
    last_create_ts: AtomicU64,
    /// One upgrade per room at a time.
    upgrades: pipeline::RoomLocks,
    /// Woken when a room joined with partial state is completed.
    state_completed: tokio::sync::Notify,
    /// Events stored since start (the metrics read it).
    events_persisted: AtomicU64,
}

/// Local members held by the audience cache per generation (about 100
/// bytes each: 256 rooms of 500 local members, or 12 of a 10,000-member forum).
const AUDIENCE_CACHE_MEMBERS: usize = 128_000;

/// Parsed events kept per cache generation (at most twice this many, a few KiB each).
const PDU_CACHE_ENTRIES: usize = 4096;

/// Event ids kept by short id per cache generation (about 120 bytes each:
/// at most 2 MiB), enough for the state of a few hundred rooms.
const EVENT_ID_CACHE_ENTRIES: usize = 8192;

impl Rooms {
    pub fn new(storage: Arc<Storage>, server_name: OwnedServerName, key: Arc<ServerKey>) -> Self {
        Self {
            state: StateStore::new(Arc::clone(&storage)),
            account_data: crate::users::account_data::AccountDataStore::new(Arc::clone(&storage)),
            erased: Default::default(),
            search_queue: Arc::new(search_queue::SearchQueue::new(Arc::clone(&storage))),
            transactions: transactions::ClientTransactions::new(Arc::clone(&storage)),
            storage,
            server_name,
            key,
            policy: std::sync::RwLock::new(Arc::new(NoPolicy)),
            locks: pipeline::RoomLocks::default(),
            pdus: BoundedCache::new(PDU_CACHE_ENTRIES),
            event_ids: BoundedCache::new(EVENT_ID_CACHE_ENTRIES),
            latest_positions: Default::default(),
            summaries: BoundedCache::new(PDU_CACHE_ENTRIES),
            push_rules: BoundedCache::new(PDU_CACHE_ENTRIES),
            default_push_rules: std::sync::OnceLock::new(),
            audiences: BoundedCache::weighted(AUDIENCE_CACHE_MEMBERS, |audience| audience.local_members.len()),
            push_wakeup: Arc::default(),
            outbox_signal: Arc::default(),
            pushers: Arc::default(),
            last_create_ts: AtomicU64::new(0),
            upgrades: pipeline::RoomLocks::default(),
            state_completed: tokio::sync::Notify::new(),
            events_persisted: AtomicU64::new(0),
        }
    }

    /// Queues pushes for the http pushers of this index (the users service's).
    pub fn with_pushers(mut self, pushers: Arc<crate::users::pushers::PusherIndex>) -> Self {
        self.pushers = pushers;
        self
    }

    /// Shares the users' account data store (who has push rules of their own).
    pub fn with_account_data(mut self, account_data: crate::users::account_data::AccountDataStore) -> Self {
        self.account_data = account_data;
        self
    }

    /// Shares the users' set of erased accounts.
    pub fn with_erased(mut self, erased: crate::users::erased::ErasedUsers) -> Self {
        self.erased = erased;
        self
    }

    /// Notified each time pushes are queued for gateways.
    pub fn push_wakeup(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.push_wakeup)
    }

    /// Replaces the policy hook.
    pub fn set_policy(&self, policy: Arc<dyn EventPolicy>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    pub(crate) fn policy(&self) -> Arc<dyn EventPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes whenever an event is stored (its count); sync will wait on it.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.storage.subscribe_changes()
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.storage.tables.roomid_room.get(&room_id.to_string())?)
    }

    pub(crate) fn rules_of(room: &RoomRecord) -> Result<(RoomVersionId, RoomVersionRules)> {
        rules_of_version(&room.version)
    }

    /// An event with its storage record, if known.
    pub fn get_pdu(&self, event_id: &EventId) -> Result<Option<StoredEvent>> {
        if let Some(cached) = self.pdus.get(event_id) {
            return Ok(Some(cached));
        }
        let epoch = self.pdus.epoch();
        let Some(stored) = self.storage.tables.eventid_pdu.get(&event_id.to_string())? else { return Ok(None) };
        let pdu = Self::parse_stored(event_id, &stored)?;
        let stored = Arc::new(stored);
        self.pdus.insert_if_current(event_id.to_owned(), (pdu.clone(), Arc::clone(&stored)), epoch);
        Ok(Some((pdu, stored)))
    }

    /// The rules of the room version a stored event was written under.
    pub(crate) fn rules_of_stored(stored: &StoredPdu) -> Result<RoomVersionRules> {
        Ok(rules_of_version(&stored.room_version)?.1)
    }

    /// The event of a storage record (its id is the record's key).
    pub(crate) fn parse_stored(event_id: &EventId, stored: &StoredPdu) -> Result<Pdu> {
        let rules = Self::rules_of_stored(stored)?;
        // Stored events were checked on the way in.
        Ok(Pdu::from_stored_json(&stored.json, event_id.to_owned(), &rules)
            .map_err(|e| StorageError::corrupt(format!("stored event {event_id}: {e}")))?)
    }

    /// The event at a timeline position of a room, if any.
    pub fn event_id_at(&self, room_id: &RoomId, position: u64) -> Result<Option<OwnedEventId>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let id = self.storage.tables.room_timeline.get(&(room.short_id, position))?;
        Ok(id.and_then(|id| OwnedEventId::try_from(id).ok()))
    }

    pub(super) fn event_id_of_short(&self, short: u64) -> Result<OwnedEventId> {
        if let Some(id) = self.event_ids.get(&short) {
            return Ok(id);
        }
        let id = self
            .storage
            .tables
            .shortid_eventid
            .get(&short)?
            .ok_or_else(|| StorageError::corrupt(format!("unknown short event id {short}")))?;
        let id = OwnedEventId::try_from(id).map_err(|_| StorageError::corrupt("stored event id"))?;
        self.event_ids.insert(short, id.clone());
        Ok(id)
    }

    /// Events stored since start.
    pub fn events_persisted(&self) -> u64 {
        self.events_persisted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads which client-transaction table is current (start-up).
    pub fn load_transactions(&self) -> Result<()> {
        self.transactions.load()
    }

    /// Forgets the client transaction ids of the previous generation once
    /// the current one is a day old (maintenance; blocking); how many.
    pub fn forget_old_transactions(&self) -> Result<usize> {
        self.transactions.forget_old(crate::util::now_ms())
    }

    /// A room's name (`m.room.name`), if it has one.
    pub fn room_name(&self, room_id: &RoomId) -> Result<Option<String>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        let name = self.state_event_in(&state, kinds::NAME, "")?;
        Ok(name.and_then(|pdu| content_string(&pdu, "name")).filter(|name| !name.is_empty()))
    }

    /// The current state event `kind`/`state_key` when it was sent by
    /// `sender` with exactly `content` and `sender` is still joined: setting
    /// it again changes nothing, and its event id is the answer (as Synapse
    /// deduplicates a repeated state event).
    pub fn identical_current_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<Option<ruma::OwnedEventId>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        if self.membership_in(&state, sender)? != Some(Membership::Join) {
            return Ok(None);
        }
        let Some(current) = self.state_event_in(&state, kind, state_key)? else { return Ok(None) };
        let same_content = serde_json::from_str::<Value>(current.content_json()).ok().as_ref() == Some(content);
        Ok((current.sender_str() == sender.as_str() && same_content).then(|| current.event_id().to_owned()))
    }

    pub fn state_event_in(&self, state: &StateMap, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        Ok(self.state_record_in(state, kind, state_key)?.map(|(pdu, _)| pdu))
    }

    /// [`Rooms::state_event_in`] with the event's storage record.
    pub fn state_record_in(&self, state: &StateMap, kind: &str, state_key: &str) -> Result<Option<StoredEvent>> {
        let Some(short_key) = self.state.existing_short_state_key(kind, state_key)? else { return Ok(None) };
        let Some(short_event) = state.get(&short_key) else { return Ok(None) };
        let event_id = self.event_id_of_short(*short_event)?;
        self.get_pdu(&event_id)
    }

    /// Every event of a state map.
    pub fn state_events_in(&self, state: &StateMap) -> Result<Vec<Pdu>> {
        let mut events = Vec::with_capacity(state.len());
        for short_event in state.values() {
            let event_id = self.event_id_of_short(*short_event)?;
            let (pdu, _) = self.get_pdu(&event_id)?.ok_or_else(|| StorageError::corrupt("state event missing"))?;
            events.push(pdu);
        }
        Ok(events)
    }

    /// The current state of a room.
    pub fn current_state(&self, room: &RoomRecord) -> Result<Arc<StateMap>> {
        self.state.full_state(room.current_state)
    }

    /// The current membership of `user_id` in a room.
    pub fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<Membership>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        self.membership_in(&state, user_id)
    }

    pub(crate) fn membership_in(&self, state: &StateMap, user_id: &UserId) -> Result<Option<Membership>> {
        Ok(self.state_event_in(state, kinds::MEMBER, user_id.as_str())?.and_then(|pdu| membership_of(&pdu)))
    }

    /// Forgets a room the user has left: its history is no longer theirs to read.
    pub async fn forget(&self, localpart: &str, room_id: &RoomId) -> Result<()> {
        let mut batch = Batch::new();
        let key = (localpart.to_owned(), room_id.to_string());
        batch.insert(&self.storage.tables.localpart_roomid_forgotten, &key, &self.storage.current_count()?)?;
        batch.remove(&self.storage.tables.localpart_roomid_membership, &key);
        Ok(self.storage.commit(batch).await?)
    }

    /// Whether the user forgot the room (and has not come back since).
    pub fn is_forgotten(&self, localpart: &str, room_id: &RoomId) -> Result<bool> {
        Ok(self.storage.tables.localpart_roomid_forgotten.contains(&(localpart.to_owned(), room_id.to_string()))?)
    }

    /// The state after an event: the state before it, plus the event itself
    /// if it is a state event that was not rejected.
    pub fn state_after(&self, pdu: &Pdu, stored: &StoredPdu) -> Result<Arc<StateMap>> {
        let before = self.state.full_state(stored.snapshot_before()?)?;
        // A soft-failed event takes part in the state of the events that
        // build on it (spec: "Soft failure"); a rejected one never does.
        if stored.status == crate::storage::records::EventStatus::Rejected {
            return Ok(before);
        }
        let Some(state_key) = pdu.state_key() else { return Ok(before) };
        let Some(short_key) = self.state.existing_short_state_key(&pdu.kind().to_string(), state_key)? else {
            return Ok(before);
        };
        let mut after = StateMap::clone(&before);
        after.insert(short_key, stored.short_id());
        Ok(Arc::new(after))
    }

    /// Every member event of a state map.
    pub fn member_events_in(&self, state: &StateMap) -> Result<Vec<Pdu>> {
        let mut events = Vec::new();
        for (short_key, short_event) in state {
            let (kind, _) = self.state.state_key_of(*short_key)?;
            if kind != kinds::MEMBER {
                continue;
            }
            let event_id = self.event_id_of_short(*short_event)?;
            events.extend(self.get_pdu(&event_id)?.map(|(pdu, _)| pdu));
        }
        Ok(events)
    }

    /// Users whose current membership is `join`.
    pub fn joined_members_in(&self, state: &StateMap) -> Result<Vec<ruma::OwnedUserId>> {
        Ok(self
            .member_events_in(state)?
            .into_iter()
            .filter(|pdu| membership_of(pdu) == Some(Membership::Join))
            .filter_map(|pdu| pdu.state_key_str().and_then(|key| ruma::OwnedUserId::try_from(key).ok()))
            .collect())
    }

    /// For a join to a `restricted` (or `knock_restricted`) room by a user who
    /// is not invited: a local member able to invite, to vouch for the join
    /// (`join_authorised_via_users_server`), if the user is in one of the rooms
    /// the join rules allow. `None` when no restriction applies.
    pub fn restricted_join_authoriser(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<ruma::OwnedUserId>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let (_, rules) = Self::rules_of(&room)?;
        if !rules.authorization.restricted_join_rule {
            return Ok(None);
        }
        let state = self.current_state(&room)?;
        let Some(join_rules) = self.state_event_in(&state, kinds::JOIN_RULES, "")? else { return Ok(None) };
        let content: Value = serde_json::from_str(join_rules.content().get()).unwrap_or_default();
        let rule = content["join_rule"].as_str().unwrap_or_default();
        let knock_restricted = rule == "knock_restricted" && rules.authorization.knock_restricted_join_rule;
        if rule != "restricted" && !knock_restricted {
            return Ok(None);
        }
        if matches!(self.membership_in(&state, user_id)?, Some(Membership::Invite | Membership::Join)) {
            return Ok(None);
        }
        let allowed_rooms = content["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["type"] == "m.room_membership")
            .filter_map(|entry| entry["room_id"].as_str())
            .filter_map(|id| RoomId::parse(id).ok());
        let mut qualifies = false;
        for allowed in allowed_rooms {
            if self.membership(&allowed, user_id)? == Some(Membership::Join) {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Err(Error::forbidden("You are not in any of the rooms this room allows"));
        }
        let levels = self.power_levels(&state, &rules)?;
        let needed = levels.action(power_levels::Action::Invite);
        let mut best: Option<(i64, ruma::OwnedUserId)> = None;
        for member in self.joined_members_in(&state)? {
            if member.server_name() != self.server_name {
                continue;
            }
            let level = levels.user(&member);
            if level >= needed && best.as_ref().is_none_or(|(b, _)| level > *b) {
                best = Some((level, member));
            }
        }
        best.map(|(_, user)| Some(user))
            .ok_or_else(|| Error::forbidden("No member of this server can authorise the join"))
    }

    /// The room state at a timeline position (after the last event before it).
    pub fn state_at_position(&self, room: &RoomRecord, position: u64) -> Result<Option<Arc<StateMap>>> {
        let Some((_, event_id)) = self.timeline_page(room, position, true, 1)?.pop() else { return Ok(None) };
        let Some((pdu, stored)) = self.get_pdu(&event_id)? else { return Ok(None) };
        self.state_after(&pdu, &stored).map(Some)
    }

    /// The union of the auth chains of `event_ids`: stored for state events
    /// (computed once when they are stored), computed from the auth events'
    /// for the others (which have no short id mapping either).
    pub fn auth_chain(&self, event_ids: &[OwnedEventId]) -> Result<std::collections::HashSet<OwnedEventId>> {
        let mut shorts = std::collections::BTreeSet::new();
        for event_id in event_ids {
            let stored_chain = match self.storage.tables.eventid_shortid.get(&event_id.to_string())? {
                Some(short) => self.storage.tables.shortid_authchain.get(&short)?,
                None => None,
            };
            match stored_chain {
                Some(chain) => shorts.extend(chain),
                None => {
                    if let Some((pdu, _)) = self.get_pdu(event_id)? {
                        shorts.extend(self.chain_through_auth_events(&pdu)?);
                    }
                }
            }
        }
        shorts.into_iter().map(|short| self.event_id_of_short(short)).collect()
    }

    /// The short ids of an event's auth chain: its auth events and their
    /// stored chains (auth events are state events, whose chains are stored).
    pub(crate) fn chain_through_auth_events(&self, pdu: &Pdu) -> Result<Vec<u64>> {
        let mut chain = std::collections::BTreeSet::new();
        for auth_event in pdu.auth_events() {
            let Some(short) = self.storage.tables.eventid_shortid.get(&auth_event.to_string())? else { continue };
            chain.insert(short);
            chain.extend(self.storage.tables.shortid_authchain.get(&short)?.unwrap_or_default());
        }
        Ok(chain.into_iter().collect())
    }

    /// The global position: every event stored so far has a count up to it.
    pub fn current_position(&self) -> Result<u64> {
        Ok(self.storage.visible_count()?)
    }

    /// The position of a room's latest event (0 for none).
    pub fn latest_position(&self, room: &RoomRecord) -> Result<u64> {
        Ok(self.timeline_page(room, u64::MAX, true, 1)?.first().map_or(0, |(count, _)| *count))
    }

    /// Whether a room may have a timeline event after position `since`:
    /// from memory once the room was read (see [`latest`]). It can answer
    /// yes for a room whose newest events were purged, never no for a room
    /// with a finished write after `since`.
    pub fn has_events_after(&self, room: &RoomRecord, since: u64) -> Result<bool> {
        let latest = match self.latest_positions.get(room.short_id) {
            Some(latest) => latest,
            None => self.latest_positions.raise(room.short_id, self.latest_position(room)?),
        };
        Ok(latest > since)
    }

    /// Every room a local user has a membership in, with that membership.
    pub fn memberships_of(&self, localpart: &str) -> Result<Vec<(OwnedRoomId, Membership)>> {
        let entries =
            self.storage.tables.localpart_roomid_membership.scan_prefix(&crate::storage::prefix_of(localpart))?;
        Ok(entries
            .into_iter()
            .filter_map(|((_, room_id), membership)| {
                Some((OwnedRoomId::try_from(room_id).ok()?, Membership::parse(&membership)?))
            })
            .collect())
    }

    /// Whether `user` is joined to one of `rooms` (remote users are not known
    /// here until federation: false).
    pub fn joined_to_any(&self, user: &UserId, rooms: &std::collections::HashSet<OwnedRoomId>) -> Result<bool> {
        if rooms.is_empty() {
            return Ok(false);
        }
        if user.server_name() == self.server_name {
            return Ok(self.joined_rooms(user.localpart())?.iter().any(|room| rooms.contains(room)));
        }
        // Another server's user: by each room's current state.
        for room_id in rooms {
            if self.membership(room_id, user)? == Some(Membership::Join) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rooms a local user has joined.
    pub fn joined_rooms(&self, localpart: &str) -> Result<Vec<OwnedRoomId>> {
        let entries =
            self.storage.tables.localpart_roomid_membership.scan_prefix(&crate::storage::prefix_of(localpart))?;
        Ok(entries
            .into_iter()
            .filter(|(_, membership)| Membership::parse(membership) == Some(Membership::Join))
            .filter_map(|((_, room_id), _)| OwnedRoomId::try_from(room_id).ok())
            .collect())
    }

    /// Whether `user_id` may see an event, by the room's history visibility
    /// at the event (spec: "History visibility").
    pub fn can_see_event(&self, user_id: &UserId, pdu: &Pdu, stored: &StoredPdu) -> Result<bool> {
        // A user's own membership event counts as the membership at that event.
        let own_membership = (pdu.event_type() == &TimelineEventType::RoomMember
            && pdu.state_key() == Some(user_id.as_str()))
        .then(|| membership_of(pdu));
        let Some(before) = stored.state_before else { return Ok(false) };
        // Users always see their own membership changes (their leave, kick or
        // ban included), as Synapse does: the spec's algorithm leaves it open.
        if own_membership.is_some() {
            return Ok(true);
        }
        self.can_see_in_snapshot(user_id, &stored.room_id, before, own_membership)
    }

    /// Whether `user_id` was joined to the room when the event was sent
    /// (by the state before it).
    pub(crate) fn joined_at_event(&self, user_id: &UserId, stored: &StoredPdu) -> Result<bool> {
        let Some(before) = stored.state_before else { return Ok(false) };
        let state = self.state.full_state(before)?;
        Ok(self.membership_in(&state, user_id)? == Some(Membership::Join))
    }

    /// Whether `user_id` may see an event of `room_id` whose state before it
    /// is `snapshot` (any event but the user's own membership events, whose
    /// membership is passed as `own_membership`).
    pub fn can_see_in_snapshot(
        &self,
        user_id: &UserId,
        room_id: &str,
        snapshot: u64,
        own_membership: Option<Option<Membership>>,
    ) -> Result<bool> {
        let state = self.state.full_state(snapshot)?;
        let visibility = self
            .state_event_in(&state, kinds::HISTORY_VISIBILITY, "")?
            .and_then(|event| content_string(&event, "history_visibility"))
            .unwrap_or_else(|| "shared".to_owned());
        if visibility == "world_readable" {
            return Ok(true);
        }
        let at_event = match own_membership {
            Some(membership) => membership,
            None => self.membership_in(&state, user_id)?,
        };
        Ok(match (visibility.as_str(), at_event) {
            (_, Some(Membership::Join)) => true,
            ("invited", Some(Membership::Invite)) => true,
            ("shared", _) => {
                let room_id = RoomId::parse(room_id).map_err(|_| StorageError::corrupt("stored room id"))?;
                self.membership(&room_id, user_id)? == Some(Membership::Join)
            }
            _ => false,
        })
    }

    /// Whether `user_id` may invite to the room now (joined, with the invite
    /// level: what an invite by email needs before anything is stored or mailed).
    pub fn may_invite(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        let state = self.current_state(&room)?;
        if self.membership_in(&state, user_id)? != Some(Membership::Join) {
            return Ok(false);
        }
        let (_, rules) = Self::rules_of(&room)?;
        let levels = self.power_levels(&state, &rules)?;
        Ok(levels.user(user_id) >= levels.action(power_levels::Action::Invite))
    }

    /// Whether a joined member may send a state event of `kind` now.
    pub fn may_send_state(&self, room: &RoomRecord, user_id: &UserId, kind: &str) -> Result<bool> {
        let state = self.current_state(room)?;
        if self.membership_in(&state, user_id)? != Some(Membership::Join) {
            return Ok(false);
        }
        let (_, rules) = Self::rules_of(room)?;
        Ok(self.power_levels(&state, &rules)?.may_send_state(user_id, kind))
    }

    /// Up to `limit` timeline positions and event ids of a room, nearest
    /// first: before position `from` (`backwards`), or from `from` on.
    /// A position is the gap just before the event with that count.
    pub fn timeline_page(
        &self,
        room: &RoomRecord,
        from: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let timeline = &self.storage.tables.room_timeline;
        let entries = if backwards {
            timeline.range(&(room.short_id, 0), &(room.short_id, from), true, limit)?
        } else {
            timeline.range(&(room.short_id, from), &(room.short_id, u64::MAX), false, limit)?
        };
        entries
            .into_iter()
            .map(|((_, count), id)| {
                OwnedEventId::try_from(id)
                    .map(|id| (count, id))
                    .map_err(|_| StorageError::corrupt("timeline event id").into())
            })
            .collect()
    }
}

/// `content.membership` of a member event.
pub fn membership_of(pdu: &Pdu) -> Option<Membership> {
    content_string(pdu, "membership").as_deref().and_then(Membership::parse)
}

/// An event's content as a JSON object (empty if it is not one).
pub fn content_of_json(content: &str) -> serde_json::Map<String, Value> {
    serde_json::from_str(content).unwrap_or_default()
}

/// A string field of an event's content.
pub fn content_string(pdu: &Pdu, field: &str) -> Option<String> {
    let content: serde_json::Map<String, Value> = serde_json::from_str(pdu.content().get()).ok()?;
    content.get(field)?.as_str().map(str::to_owned)
}

/// For a member event about a local user: (localpart, membership).
pub(crate) fn local_membership_change(pdu: &Pdu, server_name: &OwnedServerName) -> Option<(String, Membership)> {
    if pdu.event_type() != &TimelineEventType::RoomMember {
        return None;
    }
    let user_id = UserId::parse(pdu.state_key()?).ok()?;
    let membership = membership_of(pdu)?;
    (user_id.server_name() == server_name).then(|| (user_id.localpart().to_owned(), membership))
}

/// A stored room version and its rules.
fn rules_of_version(version: &str) -> Result<(RoomVersionId, RoomVersionRules)> {
    let parsed = RoomVersionId::try_from(version)
        .map_err(|_| StorageError::corrupt(format!("stored room version {version}")))?;
    let rules = room_version::rules(&parsed)?;
    Ok((parsed, rules))
}
