//! Push-rule evaluation: which local members an event notifies, and which
//! it highlights; the records behind unread counts and `GET /notifications`.
//!
//! Spec: client-server API "Push Notifications" → "Push Rules" and
//! "Receiving notifications". When an event is stored, the local members
//! joined to the room (the sender excepted) have their push rules evaluated
//! against it with ruma's evaluator (room context: member count, display
//! name, power levels for `@room`), in the event's batch (as derived data:
//! one atomic batch per tree after the event's transaction).
//!
//! Records are per event, not per member, so a forum of 10,000 members costs
//! one record per message:
//! - the server-default rules are evaluated once per event for no one in
//!   particular: that is the event's *default outcome* for every member on
//!   those rules whom the event does not name. The rules that depend on the
//!   user (`.m.rule.invite_for_me`, `.m.rule.is_user_mention`) are evaluated
//!   again only for the members an event names (`m.mentions.user_ids`, a
//!   member event's state key), and members with rules of their own
//!   (`m.push_rules` account data) have theirs evaluated in full;
//! - `event_push` holds the default outcome of each event that notifies by
//!   default, with the room's running totals (notifications and highlights,
//!   all and main timeline) up to it;
//! - `push_exceptions` holds each member for whom the event did something
//!   else (the sender of a notifying event, a mentioned member, a member with
//!   their own rules whose outcome differs), with the running difference of
//!   their exceptions in the room.
//!
//! A user's unread count after position `p` is then a difference of two
//! totals (the room's and the user's) read at `p` and now: a few reads
//! whatever the number of unread events ([`Rooms::unread_counts`]); only
//! per-thread counts walk the thread events after the read receipt. A
//! member is counted from their membership's position on (the records say
//! what the event did for the members of the moment).
//!
//! Owns the `event_push` and `push_exceptions` tables. Push rules are read
//! through the users' account data
//! ([`crate::users::account_data::AccountDataStore`]); pushes are queued
//! through [`crate::push::queue`].

use super::Membership;
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use ruma::{
    push::{Action, FlattenedJson, PushConditionRoomCtx, Ruleset},
    serde::Raw,
    OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::Value;

use super::{
    client_event, content_string,
    receipts::{Count, UnreadCounts, MAIN_THREAD},
    relations::{content_of, relation_of},
    state::StateMap,
    Rooms,
};
use crate::events::kinds;
use crate::{
    error::Result,
    events::Pdu,
    push::queue::{self, Push},
    storage::{
        records::{PushRecord, PushTally, RoomRecord},
        Batch,
    },
};

/// The account data type holding a user's push rules.
pub const PUSH_RULES: &str = "m.push_rules";

/// Thread events read at most to count a room's unread thread notifications.
const THREAD_SCAN_LIMIT: usize = 10_000;

/// The server-default rules of a user who is no one: an event's default outcome.
pub(super) struct DefaultRules {
    user_id: OwnedUserId,
    rules: Ruleset,
}

/// What an event's push rules did for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// The actions as JSON text; empty when the event does not notify.
    actions: String,
    highlight: bool,
}

impl Outcome {
    const NONE: Outcome = Outcome { actions: String::new(), highlight: false };

    fn of(actions: &[Action]) -> Self {
        if !actions.iter().any(Action::should_notify) {
            return Self::NONE;
        }
        Outcome {
            actions: serde_json::to_string(actions).unwrap_or_else(|_| "[\"notify\"]".to_owned()),
            highlight: actions.iter().any(Action::is_highlight),
        }
    }

    fn notifies(&self) -> bool {
        !self.actions.is_empty()
    }

    fn tally(&self) -> PushTally {
        PushTally { notifications: i64::from(self.notifies()), highlights: i64::from(self.highlight) }
    }
}

/// A tally as a count (never below zero, whatever a lost derived write left).
fn count_of(tally: PushTally) -> Count {
    let clamp = |value: i64| u64::try_from(value).unwrap_or(0);
    Count { notifications: clamp(tally.notifications), highlights: clamp(tally.highlights) }
}

/// The first matching rule's actions (none when no rule matches).
async fn actions_for<'a>(rules: &'a Ruleset, event: &FlattenedJson, context: &PushConditionRoomCtx) -> &'a [Action] {
    for rule in rules.iter() {
        if rule.applies(event, context).await {
            return rule.actions();
        }
    }
    &[]
}

/// The users an event names: those of `m.mentions.user_ids`, and a member
/// event's subject. Only they can have another outcome than the default on
/// the server-default rules.
fn named_users(pdu: &Pdu) -> HashSet<String> {
    let mut named: HashSet<String> = HashSet::new();
    if let Some(mentioned) = content_of(pdu).get("m.mentions").and_then(|m| m.get("user_ids")).and_then(Value::as_array)
    {
        named.extend(mentioned.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if pdu.kind().to_string() == kinds::MEMBER {
        named.extend(pdu.state_key_str().map(str::to_owned));
    }
    named
}

impl Rooms {
    /// A user's push rules: the stored `m.push_rules`, else the server defaults.
    /// Parsed rule sets are cached by the version of their account data.
    pub fn push_rules_of(&self, user_id: &UserId) -> Result<Arc<Ruleset>> {
        let stored = self.account_data.get(user_id.localpart(), None, PUSH_RULES)?;
        // Version 0: no stored rules, the defaults (also worth caching: they take a while to build).
        let cache_key = (user_id.to_owned(), stored.as_ref().map_or(0, |data| data.version));
        if let Some(rules) = self.push_rules.get(&cache_key) {
            return Ok(rules);
        }
        let Some(stored) = stored else {
            let rules = Arc::new(Ruleset::server_default(user_id));
            self.push_rules.insert(cache_key, Arc::clone(&rules));
            return Ok(rules);
        };
        let parsed = stored
            .content()?
            .get("global")
            .and_then(|global| serde_json::from_value::<Ruleset>(global.clone()).ok())
            .unwrap_or_else(|| Ruleset::server_default(user_id));
        let rules = Arc::new(parsed);
        self.push_rules.insert(cache_key, Arc::clone(&rules));
        Ok(rules)
    }

    fn default_rules(&self) -> &DefaultRules {
        self.default_push_rules.get_or_init(|| {
            // A user id no event names: a localpart no registration accepts.
            let user_id = UserId::parse_with_server_name("conduit.push.defaults.NOBODY", &self.server_name)
                .unwrap_or_else(|_| ruma::owned_user_id!("@conduit.push.defaults.NOBODY:localhost"));
            let rules = Ruleset::server_default(&user_id);
            DefaultRules { user_id, rules }
        })
    }

    /// Adds to `batch` the push records of `pdu` (see the module doc) and a
    /// push job for each http pusher of each member it notifies (and, for
    /// an invite, of the invited local user). `state` is the state before
    /// the event, snapshot `snapshot`. True when pushes were queued.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn index_notifications(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        room_short: u64,
        version_rules: &ruma::room_version_rules::RoomVersionRules,
        snapshot: u64,
        state: &StateMap,
        pdu: &Pdu,
        count: u64,
    ) -> Result<bool> {
        let audience = self.audience(snapshot, state)?;
        let event = client_event(pdu, room_id);
        let raw: Raw<Value> = match serde_json::value::to_raw_value(&event) {
            Ok(raw) => Raw::from_json(raw),
            Err(_) => return Ok(false),
        };
        // The event is flattened once; the context is built once and its
        // user fields changed per member evaluated.
        let flattened = FlattenedJson::from_raw(&raw);
        let member_count = UInt::try_from(audience.joined).unwrap_or_default();
        let power_levels = self.power_levels(state, version_rules)?.push_context(version_rules);
        let defaults = self.default_rules();
        let mut context =
            PushConditionRoomCtx::new(room_id.to_owned(), member_count, defaults.user_id.clone(), String::new())
                .with_power_levels(power_levels);
        let default = Outcome::of(actions_for(&defaults.rules, &flattened, &context).await);
        let named = named_users(pdu);
        let mut exceptions: Vec<(&UserId, Outcome)> = Vec::new();
        let mut pushes_queued = false;
        let mut evaluate = async |member: &UserId, display_name: &str| -> Result<Outcome> {
            context.user_id = member.to_owned();
            context.user_display_name = display_name.to_owned();
            let rules = self.push_rules_of(member)?;
            Ok(Outcome::of(actions_for(&rules, &flattened, &context).await))
        };
        for (member, display_name) in &audience.local_members {
            if member.as_str() == pdu.sender_str() {
                if default.notifies() {
                    exceptions.push((member, Outcome::NONE));
                }
                continue;
            }
            let own_rules = self.account_data.has_own_push_rules(member.localpart())?;
            let notifies = if own_rules || named.contains(member.as_str()) {
                let outcome = evaluate(member, display_name).await?;
                let notifies = outcome.notifies();
                if outcome != default {
                    exceptions.push((member, outcome));
                }
                notifies
            } else {
                default.notifies()
            };
            if notifies {
                pushes_queued |= self.queue_pushes(batch, room_id, member, count)?;
            }
        }
        // An invited local user hears of their invite (they are not a member yet).
        let invited = (pdu.kind().to_string() == kinds::MEMBER
            && super::membership_of(pdu) == Some(Membership::Invite))
        .then(|| pdu.state_key_str().and_then(|key| UserId::parse(key).ok()))
        .flatten()
        .filter(|user| {
            user.server_name() == self.server_name && !audience.local_members.iter().any(|(member, _)| member == user)
        });
        if let Some(invited) = &invited {
            let outcome = evaluate(invited, invited.localpart()).await?;
            if outcome.notifies() {
                pushes_queued |= self.queue_pushes(batch, room_id, invited, count)?;
                exceptions.push((invited, outcome));
            }
        }
        let thread = relation_of(&content_of(pdu))
            .filter(|(rel_type, _)| rel_type == "m.thread")
            .map(|(_, root)| root)
            .unwrap_or_default();
        self.write_push_records(batch, room_short, count, &thread, &default, &exceptions)?;
        Ok(pushes_queued)
    }

    /// A push job for each http pusher of `member`; true when some were queued.
    fn queue_pushes(&self, batch: &mut Batch, room_id: &RoomId, member: &UserId, count: u64) -> Result<bool> {
        let pushers = self.pushers.http_pushers_of(member.localpart());
        for pusher in &pushers {
            queue::add(&self.storage, batch, count, pusher, Push::Notification { room_id: room_id.as_str() })?;
        }
        Ok(!pushers.is_empty())
    }

    /// The event's default record (when it notifies by default) and its
    /// exceptions, each with its running totals.
    fn write_push_records(
        &self,
        batch: &mut Batch,
        room_short: u64,
        count: u64,
        thread: &str,
        default: &Outcome,
        exceptions: &[(&UserId, Outcome)],
    ) -> Result<()> {
        let tables = &self.storage.tables;
        // The record of `outcome` after running sums `(all, main)`, adding `step`.
        let record = |outcome: &Outcome, (all, main): (PushTally, PushTally), step: PushTally| PushRecord {
            actions: outcome.actions.clone(),
            highlight: outcome.highlight,
            thread: thread.to_owned(),
            all: all + step,
            main: if thread.is_empty() { main + step } else { main },
        };
        let before = count.saturating_sub(1);
        if default.notifies() {
            let totals = self.room_push_totals(room_short, before)?;
            batch.insert(&tables.event_push, &(room_short, count), &record(default, totals, default.tally()))?;
        }
        for (user, outcome) in exceptions {
            let differences = self.user_push_differences(user.localpart(), room_short, before)?;
            let exception = record(outcome, differences, outcome.tally() - default.tally());
            batch.insert(&tables.push_exceptions, &(user.localpart().to_owned(), room_short, count), &exception)?;
        }
        Ok(())
    }

    /// The room's running default totals (all, main timeline) at position `at`.
    fn room_push_totals(&self, room_short: u64, at: u64) -> Result<(PushTally, PushTally)> {
        let latest =
            self.storage.tables.event_push.range(&(room_short, 0), &(room_short, at.saturating_add(1)), true, 1)?;
        Ok(latest.into_iter().next().map(|(_, record)| (record.all, record.main)).unwrap_or_default())
    }

    /// A user's running differences from the defaults in a room at position `at`.
    fn user_push_differences(&self, localpart: &str, room_short: u64, at: u64) -> Result<(PushTally, PushTally)> {
        let (start, end) =
            ((localpart.to_owned(), room_short, 0), (localpart.to_owned(), room_short, at.saturating_add(1)));
        let latest = self.storage.tables.push_exceptions.range(&start, &end, true, 1)?;
        Ok(latest.into_iter().next().map(|(_, record)| (record.all, record.main)).unwrap_or_default())
    }

    /// A user's notifications in a room up to `at`: all and main timeline.
    fn user_push_totals(&self, localpart: &str, room_short: u64, at: u64) -> Result<(PushTally, PushTally)> {
        let (room_all, room_main) = self.room_push_totals(room_short, at)?;
        let (own_all, own_main) = self.user_push_differences(localpart, room_short, at)?;
        Ok((room_all + own_all, room_main + own_main))
    }

    /// Notifications of the user in the room after their read receipts (and
    /// after `joined_at`, the position of their membership), up to `upto`:
    /// in total, on the main timeline and per thread, each with how many
    /// highlight.
    pub fn unread_counts(
        &self,
        room_id: &RoomId,
        room: &RoomRecord,
        user_id: &UserId,
        joined_at: u64,
        upto: u64,
    ) -> Result<UnreadCounts> {
        let (everywhere, threads) = self.read_positions(room_id, user_id)?;
        let floor = everywhere.max(joined_at);
        let main_floor = floor.max(threads.get(MAIN_THREAD).copied().unwrap_or_default());
        let (localpart, short) = (user_id.localpart(), room.short_id);
        let (all_now, main_now) = self.user_push_totals(localpart, short, upto)?;
        let (all_at_floor, main_at_floor) = self.user_push_totals(localpart, short, floor)?;
        let main_at_main_floor =
            if main_floor == floor { main_at_floor } else { self.user_push_totals(localpart, short, main_floor)?.1 };
        let mut counts = UnreadCounts { main: count_of(main_now - main_at_main_floor), ..Default::default() };
        let in_threads = (all_now - all_at_floor) - (main_now - main_at_floor);
        if in_threads.notifications > 0 {
            counts.threads = self.unread_in_threads(localpart, short, floor, upto, &threads)?;
        }
        counts.total = counts.threads.values().fold(counts.main, |total, thread| Count {
            notifications: total.notifications + thread.notifications,
            highlights: total.highlights + thread.highlights,
        });
        Ok(counts)
    }

    /// Unread notifications per thread, in `(floor, upto]` after each
    /// thread's read receipt: the thread events of the room (at most
    /// [`THREAD_SCAN_LIMIT`]) with the user's exceptions.
    fn unread_in_threads(
        &self,
        localpart: &str,
        short: u64,
        floor: u64,
        upto: u64,
        receipts: &BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, Count>> {
        let tables = &self.storage.tables;
        let end = upto.saturating_add(1);
        let mut outcomes: BTreeMap<u64, (String, bool, bool)> = BTreeMap::new();
        for ((_, count), record) in
            tables.event_push.range(&(short, floor + 1), &(short, end), false, THREAD_SCAN_LIMIT)?
        {
            if !record.thread.is_empty() && !record.actions.is_empty() {
                outcomes.insert(count, (record.thread, true, record.highlight));
            }
        }
        let (start, stop) = ((localpart.to_owned(), short, floor + 1), (localpart.to_owned(), short, end));
        for ((_, _, count), record) in tables.push_exceptions.range(&start, &stop, false, THREAD_SCAN_LIMIT)? {
            if !record.thread.is_empty() {
                outcomes.insert(count, (record.thread, !record.actions.is_empty(), record.highlight));
            }
        }
        let mut threads: BTreeMap<String, Count> = BTreeMap::new();
        for (count, (thread, notifies, highlight)) in outcomes {
            let read_up_to = receipts.get(&thread).copied().unwrap_or(0).max(floor);
            if notifies && count > read_up_to {
                let entry = threads.entry(thread).or_default();
                entry.notifications += 1;
                entry.highlights += u64::from(highlight);
            }
        }
        Ok(threads)
    }

    /// The position of a user's current membership event in a room (0 if none):
    /// notifications count from there on.
    pub(crate) fn membership_position(&self, room: &RoomRecord, user_id: &UserId) -> Result<u64> {
        let state = self.current_state(room)?;
        let member = self.state_record_in(&state, kinds::MEMBER, user_id.as_str())?;
        Ok(member.map_or(0, |(_, stored)| stored.count))
    }
}

/// Who hears of an event, per state snapshot: the joined member count and
/// the local joined members with their display names (push rules), the
/// servers with joined members (federation). Computed once per snapshot
/// rather than for every event (a snapshot never changes), and from its
/// parent's when that is known and the snapshot changes a few entries (a
/// big room's joins would otherwise each read every member event).
#[derive(Clone)]
pub struct Audience {
    pub joined: u64,
    pub local_members: Vec<(OwnedUserId, String)>,
    pub servers: std::collections::BTreeSet<ruma::OwnedServerName>,
    /// Joined members per server (for `servers` as members come and go).
    members_per_server: std::collections::BTreeMap<ruma::OwnedServerName, u64>,
}

/// Most changed entries from which an audience is derived from its parent's.
const MAX_DERIVED_CHANGES: usize = 64;

impl Audience {
    fn add(&mut self, member: &UserId, local_name: Option<String>) {
        self.joined += 1;
        *self.members_per_server.entry(member.server_name().to_owned()).or_default() += 1;
        self.servers.insert(member.server_name().to_owned());
        if let Some(name) = local_name {
            self.local_members.push((member.to_owned(), name));
        }
    }

    fn remove(&mut self, member: &UserId) {
        self.joined = self.joined.saturating_sub(1);
        let server = member.server_name();
        if let Some(count) = self.members_per_server.get_mut(server) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.members_per_server.remove(server);
                self.servers.remove(server);
            }
        }
        self.local_members.retain(|(local, _)| local != member);
    }
}

impl Rooms {
    pub(crate) fn audience(&self, snapshot: u64, state: &StateMap) -> Result<Arc<Audience>> {
        if let Some(audience) = self.audiences.get(&snapshot) {
            return Ok(audience);
        }
        let audience = match self.audience_from_parent(snapshot)? {
            Some(derived) => derived,
            None => self.whole_audience(state)?,
        };
        let audience = Arc::new(audience);
        self.audiences.insert(snapshot, Arc::clone(&audience));
        Ok(audience)
    }

    fn whole_audience(&self, state: &StateMap) -> Result<Audience> {
        let joined = self.joined_members_in(state)?;
        let mut audience = Audience {
            joined: 0,
            local_members: Vec::new(),
            servers: Default::default(),
            members_per_server: Default::default(),
        };
        for member in &joined {
            let local_name = self.local_display_name(member, state)?;
            audience.add(member, local_name);
        }
        Ok(audience)
    }

    /// The display name of a local member for push rules (`None` for another
    /// server's user), from their member event in `state`.
    fn local_display_name(&self, member: &UserId, state: &StateMap) -> Result<Option<String>> {
        if member.server_name() != self.server_name {
            return Ok(None);
        }
        let name = self
            .state_event_in(state, kinds::MEMBER, member.as_str())?
            .and_then(|event| content_string(&event, "displayname"));
        Ok(Some(name.unwrap_or_else(|| member.localpart().to_owned())))
    }

    /// The audience of a snapshot made of a few changes over a parent whose
    /// audience is cached: the parent's, with the changed members'.
    fn audience_from_parent(&self, snapshot: u64) -> Result<Option<Audience>> {
        let Some(super::state::SnapshotDelta { parent, changes }) = self.state.delta(snapshot)? else {
            return Ok(None);
        };
        if changes.len() > MAX_DERIVED_CHANGES {
            return Ok(None);
        }
        let Some(base) = self.audiences.get(&parent) else { return Ok(None) };
        let parent_state = self.state.full_state(parent)?;
        let state = self.state.full_state(snapshot)?;
        let mut audience = Audience::clone(&base);
        for (key, _) in changes {
            let (kind, state_key) = self.state.state_key_of(key)?;
            if kind != kinds::MEMBER {
                continue;
            }
            let Ok(member) = UserId::parse(&state_key) else { continue };
            let joined_in = |state: &StateMap| -> Result<bool> {
                let event = self.state_event_in(state, kinds::MEMBER, member.as_str())?;
                Ok(event.as_ref().and_then(super::membership_of) == Some(super::Membership::Join))
            };
            if joined_in(&parent_state)? {
                audience.remove(&member);
            }
            if joined_in(&state)? {
                let local_name = self.local_display_name(&member, &state)?;
                audience.add(&member, local_name);
            }
        }
        Ok(Some(audience))
    }
}

/// One entry of `GET /notifications`.
pub struct NotificationEntry {
    pub room_id: String,
    pub pdu: Pdu,
    pub stored: crate::storage::records::StoredPdu,
    pub actions: String,
    pub read: bool,
}

/// A notification found for `GET /notifications`: position, room, actions, highlight.
type Found = (u64, ruma::OwnedRoomId, String, bool);

impl Rooms {
    /// A user's notifications before position `before`, newest first, and
    /// the token of the next page if there may be one. Each room is read
    /// back a window at a time (its default records since the user's
    /// membership, merged with the user's exceptions); rooms the user is no
    /// longer in show only the exceptions (mentions, their own rules).
    pub fn notifications_of(
        &self,
        user_id: &UserId,
        before: u64,
        limit: usize,
        only_highlight: bool,
    ) -> Result<(Vec<NotificationEntry>, Option<u64>)> {
        let window = limit.saturating_add(1).saturating_mul(4).max(16);
        let mut found: Vec<Found> = Vec::new();
        // Below this, some room was not read to the end of its window.
        let mut complete_down_to = 0;
        for (room_id, membership) in self.memberships_of(user_id.localpart())? {
            let Some(room) = self.room(&room_id)? else { continue };
            let joined = membership == Membership::Join;
            let (outcomes, read_down_to) = self.notification_window(&room, user_id, joined, before, window)?;
            complete_down_to = complete_down_to.max(read_down_to);
            found.extend(
                outcomes
                    .into_iter()
                    .filter(|(count, outcome)| *count >= read_down_to && (!only_highlight || outcome.highlight))
                    .map(|(count, outcome)| (count, room_id.clone(), outcome.actions, outcome.highlight)),
            );
        }
        found.retain(|(count, ..)| *count >= complete_down_to);
        found.sort_unstable_by_key(|(count, ..)| std::cmp::Reverse(*count));
        let next = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|(count, ..)| *count)
        } else {
            (complete_down_to > 0).then_some(complete_down_to)
        };
        Ok((self.notification_entries(user_id, found)?, next))
    }

    /// A room's notifications of the user before `before`, by position, and
    /// the position down to which they are complete (0: all of them).
    fn notification_window(
        &self,
        room: &RoomRecord,
        user_id: &UserId,
        joined: bool,
        before: u64,
        window: usize,
    ) -> Result<(BTreeMap<u64, Outcome>, u64)> {
        let tables = &self.storage.tables;
        let short = room.short_id;
        let mut outcomes: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut read_down_to = 0;
        if joined {
            let since = self.membership_position(room, user_id)?;
            let page = tables.event_push.range(&(short, since + 1), &(short, before), true, window)?;
            if page.len() == window {
                read_down_to = page.last().map_or(0, |((_, count), _)| *count);
            }
            for ((_, count), record) in page {
                outcomes.insert(count, Outcome { actions: record.actions, highlight: record.highlight });
            }
        }
        let localpart = user_id.localpart().to_owned();
        let page =
            tables.push_exceptions.range(&(localpart.clone(), short, 0), &(localpart, short, before), true, window)?;
        if page.len() == window {
            read_down_to = read_down_to.max(page.last().map_or(0, |((_, _, count), _)| *count));
        }
        for ((_, _, count), record) in page {
            outcomes.insert(count, Outcome { actions: record.actions, highlight: record.highlight });
        }
        outcomes.retain(|_, outcome| outcome.notifies());
        Ok((outcomes, read_down_to))
    }

    fn notification_entries(&self, user_id: &UserId, found: Vec<Found>) -> Result<Vec<NotificationEntry>> {
        let mut entries = Vec::with_capacity(found.len());
        // The read position of each room, read once for all its entries.
        let mut read_up_to: BTreeMap<ruma::OwnedRoomId, u64> = BTreeMap::new();
        for (count, room, actions, _) in found {
            let Some(event_id) = self.event_id_at(&room, count)? else { continue };
            let Some((pdu, stored)) = self.get_pdu(&event_id)? else { continue };
            let read_position = match read_up_to.get(&room) {
                Some(position) => *position,
                None => *read_up_to.entry(room.clone()).or_insert(self.read_positions(&room, user_id)?.0),
            };
            entries.push(NotificationEntry {
                room_id: room.to_string(),
                pdu,
                stored: std::sync::Arc::unwrap_or_clone(stored),
                actions,
                read: read_position >= count,
            });
        }
        Ok(entries)
    }
}
/// What a push about one notification says, read when it is sent.
pub struct PushContext {
    /// The event in the client format.
    pub event: Value,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub sender_display_name: Option<String>,
    /// The push rule actions that made it notify (JSON array text).
    pub actions: String,
    pub highlight: bool,
    /// The user's read receipt is at or past the event.
    pub already_read: bool,
}

impl Rooms {
    /// Unread notifications across the user's joined rooms (the badge of a phone).
    pub fn unread_total(&self, user_id: &UserId) -> Result<u64> {
        let mut unread = 0;
        for joined in self.joined_rooms(user_id.localpart())? {
            unread += self.unread_now(&joined, user_id)?;
        }
        Ok(unread)
    }

    /// Unread notifications of a user in a room now.
    fn unread_now(&self, room_id: &RoomId, user_id: &UserId) -> Result<u64> {
        let Some(room) = self.room(room_id)? else { return Ok(0) };
        let joined_at = self.membership_position(&room, user_id)?;
        Ok(self.unread_counts(room_id, &room, user_id, joined_at, u64::MAX)?.total.notifications)
    }

    /// Adds to `batch`, for a local user who has just read a room where
    /// notifications were unread, a badge update for each of their http
    /// pushers (position `count`, the receipt's). True when some were queued.
    pub(super) fn queue_badge_updates(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        user_id: &UserId,
        count: u64,
    ) -> Result<bool> {
        if user_id.server_name() != self.server_name {
            return Ok(false);
        }
        let pushers = self.pushers.http_pushers_of(user_id.localpart());
        if pushers.is_empty() || self.unread_now(room_id, user_id)? == 0 {
            return Ok(false);
        }
        for pusher in pushers {
            queue::add(&self.storage, batch, count, &pusher, Push::Badge { room_id: room_id.as_str() })?;
        }
        Ok(true)
    }

    /// The context of `user_id`'s notification about the event at `count` in
    /// `room_id`, or `None` when there is no such notification (any more).
    pub fn push_context(&self, user_id: &UserId, room_id: &RoomId, count: u64) -> Result<Option<PushContext>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let Some(outcome) = self.outcome_for(user_id, room.short_id, count)? else { return Ok(None) };
        let Some(event_id) = self.event_id_at(room_id, count)? else { return Ok(None) };
        let Some((pdu, _)) = self.get_pdu(&event_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        let state_text = |kind: &str, state_key: &str, field: &str| -> Result<Option<String>> {
            Ok(self.state_event_in(&state, kind, state_key)?.and_then(|event| content_string(&event, field)))
        };
        let already_read = self.read_positions(room_id, user_id)?.0 >= count;
        Ok(Some(PushContext {
            event: client_event(&pdu, room_id),
            room_name: state_text(kinds::NAME, "", "name")?.filter(|name| !name.is_empty()),
            room_alias: state_text(kinds::CANONICAL_ALIAS, "", "alias")?,
            sender_display_name: state_text(kinds::MEMBER, pdu.sender_str(), "displayname")?,
            actions: outcome.actions,
            highlight: outcome.highlight,
            already_read,
        }))
    }

    /// What the event at `count` did for a user who was a member then: their
    /// exception, else the default; `None` when it did not notify them.
    fn outcome_for(&self, user_id: &UserId, room_short: u64, count: u64) -> Result<Option<Outcome>> {
        let tables = &self.storage.tables;
        let outcome = match tables.push_exceptions.get(&(user_id.localpart().to_owned(), room_short, count))? {
            Some(exception) => Outcome { actions: exception.actions, highlight: exception.highlight },
            None => match tables.event_push.get(&(room_short, count))? {
                Some(record) => Outcome { actions: record.actions, highlight: record.highlight },
                None => return Ok(None),
            },
        };
        Ok(outcome.notifies().then_some(outcome))
    }
}

impl Rooms {
    /// Adds to `batch` the removal of every push record of a room (a room purge).
    pub(super) fn remove_room_push_records(
        &self,
        batch: &mut Batch,
        room_short: u64,
        localparts: &[String],
    ) -> Result<()> {
        let tables = &self.storage.tables;
        for (key, _) in tables.event_push.range(&(room_short, 0), &(room_short, u64::MAX), false, usize::MAX)? {
            batch.remove(&tables.event_push, &key);
        }
        for localpart in localparts {
            let (start, end) = ((localpart.clone(), room_short, 0), (localpart.clone(), room_short, u64::MAX));
            for (key, _) in tables.push_exceptions.range(&start, &end, false, usize::MAX)? {
                batch.remove(&tables.push_exceptions, &key);
            }
        }
        Ok(())
    }
}
