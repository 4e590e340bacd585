//! Push-rule evaluation: which local members an event notifies, and which
//! it highlights.
//!
//! Spec: client-server API "Push Notifications" → "Push Rules" and
//! "Receiving notifications". When an event is stored, every local member
//! joined to the room (the sender excepted) has their push rules evaluated
//! against it with ruma's evaluator (room context: member count, display
//! name, power levels for `@room`); an event whose actions notify is
//! recorded for that user, written with the event (as derived data: one
//! atomic batch per tree after the event's transaction). Those records drive `unread_notifications` (`notification_count`,
//! `highlight_count`, per thread) and `GET /notifications`.
//!
//! Owns the `notifications` table (with [`super::retention`], which removes
//! old records). Push rules are read through the users' account data
//! ([`crate::users::account_data::AccountDataStore`]); pushes are queued
//! through [`crate::push::queue`].

use super::Membership;
use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    push::{FlattenedJson, PushConditionRoomCtx, Ruleset},
    serde::Raw,
    state_res::Event,
    OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::Value;

use super::{
    client_event, content_string,
    relations::{content_of, relation_of},
    state::StateMap,
    Rooms,
};
use crate::events::kinds;
use crate::{
    error::Result,
    events::Pdu,
    push::queue::{self, Push},
    storage::{keys::NotificationKey, records::NotificationRecord, Batch},
};

/// The account data type holding a user's push rules.
pub const PUSH_RULES: &str = "m.push_rules";

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

    /// Whether the user has push rules of their own (else the server defaults).
    fn has_own_push_rules(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.account_data.get(user_id.localpart(), None, PUSH_RULES)?.is_some())
    }

    /// Adds to `batch` a notification record for each local member whose
    /// push rules make `pdu` notify them (and, for an invite, the invited
    /// local user), and a push job for each of their http pushers. `state` is
    /// the state before the event, snapshot `snapshot`. True when pushes were queued.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn index_notifications(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        version_rules: &ruma::room_version_rules::RoomVersionRules,
        snapshot: u64,
        state: &StateMap,
        pdu: &Pdu,
        count: u64,
    ) -> Result<bool> {
        let audience = self.audience(snapshot, state)?;
        let member_count = UInt::try_from(audience.joined).unwrap_or_default();
        let mut members: Vec<(OwnedUserId, String)> =
            audience.local_members.iter().filter(|(member, _)| member.as_str() != pdu.sender_str()).cloned().collect();
        let invited = (pdu.kind().to_string() == kinds::MEMBER
            && super::membership_of(pdu) == Some(Membership::Invite))
        .then(|| pdu.state_key_str().and_then(|key| UserId::parse(key).ok()))
        .flatten()
        .filter(|user| user.server_name() == self.server_name && !members.iter().any(|(member, _)| member == user));
        members.extend(invited.map(|user| {
            let name = user.localpart().to_owned();
            (user, name)
        }));
        if members.is_empty() {
            return Ok(false);
        }
        let event = client_event(pdu, room_id);
        let raw: Raw<Value> = match serde_json::value::to_raw_value(&event) {
            Ok(raw) => Raw::from_json(raw),
            Err(_) => return Ok(false),
        };
        let mut pushes_queued = false;
        // The event is flattened once; the context is built once and its
        // user fields changed per member.
        let flattened = FlattenedJson::from_raw(&raw);
        let power_levels = self.power_levels(state, version_rules)?.push_context(version_rules);
        let mut context =
            PushConditionRoomCtx::new(room_id.to_owned(), member_count, pdu.sender().to_owned(), String::new())
                .with_power_levels(power_levels);
        let thread = relation_of(&content_of(pdu))
            .filter(|(rel_type, _)| rel_type == "m.thread")
            .map(|(_, root)| root)
            .unwrap_or_default();
        let member_event_target = (pdu.kind().to_string() == kinds::MEMBER).then(|| pdu.state_key_str()).flatten();
        for (member, display_name) in members {
            if member_event_target.is_some_and(|target| target != member.as_str())
                && !self.has_own_push_rules(&member)?
            {
                // The server-default rules silence a member event about
                // someone else (`.m.rule.member_event`, after rules that
                // cannot match it): no need to build them (a big room's
                // joins would rebuild every member's).
                continue;
            }
            context.user_display_name = display_name;
            context.user_id = member.clone();
            let rules = self.push_rules_of(&member)?;
            let mut actions: &[ruma::push::Action] = &[];
            for rule in rules.iter() {
                if rule.applies(&flattened, &context).await {
                    actions = rule.actions();
                    break;
                }
            }
            if !actions.iter().any(|action| action.should_notify()) {
                continue;
            }
            let record = NotificationRecord {
                highlight: actions.iter().any(|action| action.is_highlight()),
                thread: thread.clone(),
                actions: serde_json::to_string(actions).unwrap_or_else(|_| "[]".to_owned()),
            };
            let key = NotificationKey::new(member.localpart(), room_id.as_str(), count);
            batch.insert(&self.storage.tables.notifications, &key, &record)?;
            for pusher in self.pushers.http_pushers_of(member.localpart()) {
                queue::add(&self.storage, batch, count, &pusher, Push::Notification { room_id: room_id.as_str() })?;
                pushes_queued = true;
            }
        }
        Ok(pushes_queued)
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

impl Rooms {
    /// A user's notifications before position `before`, newest first, and
    /// the token of the next page if there may be one. The user's rooms are
    /// merged (each room's records are in position order).
    pub fn notifications_of(
        &self,
        user_id: &UserId,
        before: u64,
        limit: usize,
        only_highlight: bool,
    ) -> Result<(Vec<NotificationEntry>, Option<u64>)> {
        let tables = &self.storage.tables;
        let localpart = user_id.localpart();
        let mut found: Vec<(u64, String, NotificationRecord)> = Vec::new();
        for (room_id, _) in self.memberships_of(localpart)? {
            let (start, end) = (
                NotificationKey::new(localpart, room_id.as_str(), 0),
                NotificationKey::new(localpart, room_id.as_str(), before),
            );
            let page = tables.notifications.range(&start, &end, true, limit + 1)?;
            found.extend(
                page.into_iter()
                    .filter(|(_, record)| !only_highlight || record.highlight)
                    .map(|(key, record)| (key.count, room_id.to_string(), record)),
            );
        }
        found.sort_unstable_by_key(|(count, _, _)| std::cmp::Reverse(*count));
        let more = found.len() > limit;
        found.truncate(limit);
        let next = if more { found.last().map(|(count, _, _)| *count) } else { None };
        let mut entries = Vec::with_capacity(found.len());
        // The read position of each room, read once for all its entries.
        let mut read_up_to: BTreeMap<String, u64> = BTreeMap::new();
        for (count, room_id, record) in found {
            let Ok(room) = ruma::OwnedRoomId::try_from(room_id.clone()) else { continue };
            let Some(event_id) = self.event_id_at(&room, count)? else { continue };
            let Some((pdu, stored)) = self.get_pdu(&event_id)? else { continue };
            let read_position = match read_up_to.get(&room_id) {
                Some(position) => *position,
                None => *read_up_to.entry(room_id.clone()).or_insert(self.read_positions(&room, user_id)?.0),
            };
            let read = read_position >= count;
            entries.push(NotificationEntry { room_id, pdu, stored, actions: record.actions, read });
        }
        Ok((entries, next))
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
            unread += self.unread_counts(&joined, user_id, 0, u64::MAX)?.total.notifications;
        }
        Ok(unread)
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
        if pushers.is_empty() || self.unread_counts(room_id, user_id, 0, u64::MAX)?.total.notifications == 0 {
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
        let key = NotificationKey::new(user_id.localpart(), room_id.as_str(), count);
        let Some(record) = self.storage.tables.notifications.get(&key)? else { return Ok(None) };
        let Some(event_id) = self.event_id_at(room_id, count)? else { return Ok(None) };
        let Some((pdu, _)) = self.get_pdu(&event_id)? else { return Ok(None) };
        let Some(room) = self.room(room_id)? else { return Ok(None) };
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
            actions: record.actions,
            highlight: record.highlight,
            already_read,
        }))
    }
}
