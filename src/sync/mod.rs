//! `/sync`: what changed for a user since a token, waiting for changes when
//! there are none.
//!
//! Spec: client-server API "Syncing" and `GET /sync` (`data/api/client-server/old_sync.yaml`).
//!
//! Tokens: `next_batch` is `s<count>`: every event with a count up to it has
//! been considered. `prev_batch` is a `/messages` position (the gap before the
//! first timeline event). A response is computed against the visible
//! position taken first (`Storage::visible_count`: no unfinished write below
//! it), so events stored meanwhile wait for the next sync instead of
//! appearing twice or never.
//!
//! Covered: rooms (join, invite, knock, leave), timelines with
//! `limited`/`prev_batch`, state (whole, or the delta since the token,
//! correct across gaps), summaries, filters (lazy-loaded members) and
//! long-polling on any change. Account data (global and per room), typing
//! and receipts are delivered when they change; `unread_notifications`
//! counts the user's notifications and highlights (push rules) after their
//! read receipts, per thread with `unread_thread_notifications`. Presence
//! changes of people one shares a room with are delivered too. An
//! incremental sync skips rooms with nothing new after two index reads.
//! End-to-end encryption: `to_device` messages (at most 100 a response; the
//! token then stops at the last one), `device_lists` (key changes of users
//! sharing a room, members joining and leaving), one-time key counts and
//! unused fallback key types.

pub mod event_stream;
pub mod filter;
pub mod lazy_members;
pub mod response;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{OwnedRoomId, RoomId};
use serde_json::{json, Map, Value};

use crate::events::kinds;
use crate::rooms::{ClientEvent, Membership, StoredEvent};
use crate::{
    e2ee::{to_device::MAX_PER_SYNC, E2ee},
    error::{Error, Result},
    events::Pdu,
    rooms::{
        receipts::{Count, UnreadCounts},
        state::StateMap,
        typing::Typing,
        Rooms,
    },
    storage::records::{RoomRecord, StoredPdu},
    users::presence::Presence,
    users::{Identity, Users},
};
use filter::{select_fields, Filter};
use lazy_members::is_member_event;
use response::{DeviceLists, Events, JoinedRoom, RoomSections, SyncEvent, SyncResponse, Timeline};

/// Timeline events per room unless the filter says otherwise.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
pub(crate) const MAX_TIMELINE_LIMIT: usize = 500;
/// Longest long-poll.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

pub struct SyncRequest {
    pub since: Option<u64>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: Filter,
    /// The users the caller ignores: their non-state events and invites are
    /// left out (spec "Ignoring Users").
    pub ignored: HashSet<String>,
    /// Whether `to_device` messages are delivered (and those before the
    /// token acknowledged): not for the v1 event stream, which has none.
    pub to_device: bool,
}

/// Parses a `next_batch` token. The largest integer is no position (the
/// positions after a token are read from `token + 1`).
pub fn parse_since(token: &str) -> Result<u64> {
    token
        .strip_prefix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n < u64::MAX)
        .ok_or_else(|| Error::invalid_param("Invalid `since` token"))
}

/// Runs a sync, long-polling up to `request.timeout` when nothing changed.
/// What `/sync` reads.
pub struct Sources<'a> {
    pub rooms: &'a Rooms,
    pub users: &'a Users,
    pub typing: &'a Typing,
    pub presence: &'a Presence,
    pub e2ee: &'a E2ee,
    /// Which member events each device was sent (lazy loading).
    pub sent_members: &'a lazy_members::SentMembers,
}

pub async fn sync(sources: &Sources<'_>, who: &Identity, request: &SyncRequest) -> Result<SyncResponse> {
    let rooms = sources.rooms;
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    let mut updates = rooms.subscribe();
    if let Some(since) = request.since.filter(|_| request.to_device) {
        // The client presents a token past these messages: it has them.
        sources.e2ee.acknowledge_to_device(&who.localpart, &who.device_id, since)?;
    }
    loop {
        updates.borrow_and_update();
        let snapshot = rooms.current_position()?;
        let initial = request.since.is_none() || request.full_state;
        // An initial sync reads every room: off the async workers.
        let (body, has_changes) = if initial {
            crate::util::off_async_workers(|| compute(sources, who, request, snapshot))?
        } else {
            compute(sources, who, request, snapshot)?
        };
        let no_wait = request.timeout.is_zero();
        if has_changes || initial || no_wait || request.since.is_some_and(|since| since > snapshot) {
            return Ok(body);
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Ok(body),
        }
    }
}

fn compute(
    sources: &Sources<'_>,
    who: &Identity,
    request: &SyncRequest,
    snapshot: u64,
) -> Result<(SyncResponse, bool)> {
    let rooms = sources.rooms;
    let (to_device, last_message) = if request.to_device {
        sources.e2ee.to_device_messages(&who.localpart, &who.device_id, snapshot)?
    } else {
        (Vec::new(), snapshot)
    };
    // More messages than one response carries: the token stops at the last
    // one sent, so the rest (and anything after) come with the next sync.
    let snapshot = if to_device.len() == MAX_PER_SYNC { last_message } else { snapshot };
    // Those of ignored users are dropped (acknowledged with the others).
    let mut to_device = to_device;
    to_device.retain(|message| message["sender"].as_str().is_none_or(|sender| !request.ignored.contains(sender)));
    let room_filter = &request.filter.room;
    let mut account_data = sources.users.account_data_since(&who.localpart, request.since, snapshot)?;
    if request.since.is_none() && !account_data.global.iter().any(|event| event["type"] == "m.push_rules") {
        // Until the user changes one, their push rules are the server defaults.
        let defaults = serde_json::to_value(rooms.push_rules_of(&who.user_id)?.as_ref())
            .map_err(|e| Error::internal("serialising push rules", e))?;
        account_data.global.push(json!({ "type": "m.push_rules", "content": { "global": defaults } }));
    }
    let mut join = BTreeMap::new();
    // Member events of the sections sent (who joined or left, for `device_lists`).
    let mut member_events = Vec::new();
    let mut invite = Map::new();
    let mut knock = Map::new();
    let mut leave = Map::new();
    let mut newly_shared = BTreeSet::new();
    let memberships = rooms.memberships_of(&who.localpart)?;
    // The caller's joined rooms, for "shares a room with" checks below.
    let mine: HashSet<OwnedRoomId> = memberships
        .iter()
        .filter(|(_, membership)| *membership == Membership::Join)
        .map(|(room, _)| room.clone())
        .collect();
    for (room_id, membership) in memberships {
        if !room_filter.accepts_room(room_id.as_str()) {
            continue;
        }
        // Only an invite, knock or declined invite can be a remote record: joined
        // rooms (most of them) cost no extra read.
        let remote = match membership {
            Membership::Join => None,
            _ => rooms.remote_invite(&who.localpart, &room_id)?,
        };
        if let Some(record) = remote {
            let news = request.since.is_none_or(|since| record.position > since) && record.position <= snapshot;
            // A declined invite is a left room: in an initial sync only with `include_leave`.
            let wanted = record.rejection.is_none() || request.since.is_some() || room_filter.include_leave;
            if news && wanted && !invited_by_ignored(&record, &request.ignored) {
                let (section, body) = remote_invite_section(&record);
                let map = match section {
                    Membership::Invite => &mut invite,
                    Membership::Knock => &mut knock,
                    _ => &mut leave,
                };
                map.insert(room_id.to_string(), body);
            }
            continue;
        }
        let Some(room) = rooms.room(&room_id)? else { continue };
        let typing = sources.typing.changed_since(&room_id, request.since, snapshot);
        let mut room_account_data = account_data.rooms.remove(room_id.as_str()).unwrap_or_default();
        room_account_data
            .retain(|event| room_filter.account_data.keeps(event["type"].as_str().unwrap_or_default(), None));
        truncate_to_limit(&mut room_account_data, &room_filter.account_data);
        if let Some(since) = request.since.filter(|_| !request.full_state) {
            let quiet = typing.is_none()
                && room_account_data.is_empty()
                && !rooms.has_events_after(&room, since)?
                && !rooms.receipts_changed(&room_id, since, snapshot)?;
            if quiet {
                continue;
            }
        }
        let member_event =
            rooms.state_record_in(rooms.current_state(&room)?.as_ref(), kinds::MEMBER, who.user_id.as_str())?;
        let changed_at = member_event.as_ref().map_or(0, |(_, stored)| stored.count);
        let new_since_token = request.since.is_none_or(|since| changed_at > since);
        match membership {
            Membership::Join => {
                // A leave and rejoin since the token is not a new join (as
                // Synapse reads it): the client has the room up to the token.
                let new_since_token = match request.since {
                    Some(since) if new_since_token => !was_joined_at(rooms, &room, who, since)?,
                    _ => new_since_token,
                };
                if request.since.is_some() && new_since_token {
                    // Newly sharing this room: its members' devices are news to the caller.
                    let state = rooms.current_state(&room)?;
                    newly_shared.extend(rooms.joined_members_in(&state)?.into_iter().map(|user| user.to_string()));
                }
                let extras = RoomExtras {
                    account_data: room_account_data,
                    typing,
                    receipts: rooms.receipts_since(&room_id, &who.user_id, request.since, snapshot)?,
                    joined_at: changed_at,
                };
                let section = joined_room(sources, who, request, &room_id, &room, snapshot, new_since_token, extras)?;
                if let Some((section, members)) = section {
                    member_events.extend(members);
                    join.insert(room_id.to_string(), section);
                }
            }
            Membership::Invite
                if member_event.as_ref().is_some_and(|(pdu, _)| request.ignored.contains(pdu.sender_str())) => {}
            Membership::Invite | Membership::Knock if new_since_token && changed_at <= snapshot => {
                let state = rooms.stripped_state(&room, member_event.as_ref().map(|(pdu, _)| pdu))?;
                if membership == Membership::Invite {
                    invite.insert(room_id.to_string(), json!({ "invite_state": { "events": state } }));
                } else {
                    knock.insert(room_id.to_string(), json!({ "knock_state": { "events": state } }));
                }
            }
            Membership::Leave | Membership::Ban => {
                let wanted = if request.since.is_some() { new_since_token } else { room_filter.include_leave };
                if wanted && changed_at <= snapshot {
                    if let Some((pdu, stored)) = &member_event {
                        let (section, members) = left_room(rooms, who, request, &room_id, &room, pdu, stored)?;
                        leave.insert(room_id.to_string(), section);
                        member_events.extend(members);
                    }
                }
            }
            _ => {}
        }
    }
    let mut presence = visible_presence(sources, who, &mine, request.since, snapshot)?;
    // Room mates met in a room joined since the token: their presence now,
    // in the same response (as Synapse sends it).
    if sources.presence.enabled() && request.since.is_some() && !newly_shared.is_empty() {
        let known: HashSet<String> = presence.iter().filter_map(|e| e["sender"].as_str().map(str::to_owned)).collect();
        for user in newly_shared.iter().filter(|user| !known.contains(*user) && **user != who.user_id.as_str()) {
            let Ok(user_id) = ruma::UserId::parse(user.as_str()) else { continue };
            presence
                .push(json!({ "type": "m.presence", "sender": user, "content": sources.presence.content(&user_id) }));
        }
    }
    presence.retain(|event| {
        request.filter.presence.keeps(event["type"].as_str().unwrap_or_default(), event["sender"].as_str())
    });
    truncate_to_limit(&mut presence, &request.filter.presence);
    account_data
        .global
        .retain(|event| request.filter.account_data.keeps(event["type"].as_str().unwrap_or_default(), None));
    truncate_to_limit(&mut account_data.global, &request.filter.account_data);
    let (changed, left) = match request.since {
        Some(since) => device_list_changes(sources, who, &mine, since, snapshot, &member_events, newly_shared)?,
        None => (Vec::new(), Vec::new()),
    };
    let has_changes = !(join.is_empty()
        && to_device.is_empty()
        && changed.is_empty()
        && left.is_empty()
        && invite.is_empty()
        && knock.is_empty()
        && leave.is_empty()
        && account_data.global.is_empty()
        && presence.is_empty());
    let body = SyncResponse {
        next_batch: format!("s{snapshot}"),
        rooms: RoomSections { join, invite, knock, leave },
        account_data: Events::new(account_data.global),
        presence: Events::new(presence),
        to_device: Events::new(to_device),
        device_lists: DeviceLists { changed, left },
        device_one_time_keys_count: sources.e2ee.one_time_key_counts(&who.localpart, &who.device_id)?,
        device_unused_fallback_key_types: sources.e2ee.unused_fallback_key_types(&who.localpart, &who.device_id)?,
    };
    Ok((body, has_changes))
}

/// `device_lists`: users sharing a room with the caller whose keys or devices
/// changed since the token, members who joined the rooms in this response and
/// the members of rooms the caller joined (their devices are new to the
/// caller); `left`: members who left those rooms and share no other room with
/// the caller any more.
#[allow(clippy::too_many_arguments)]
fn device_list_changes(
    sources: &Sources<'_>,
    who: &Identity,
    mine: &HashSet<OwnedRoomId>,
    since: u64,
    upto: u64,
    member_events: &[Pdu],
    newly_shared: BTreeSet<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let shares_a_room =
        |user: &ruma::UserId| -> Result<bool> { Ok(user == who.user_id || sources.rooms.joined_to_any(user, mine)?) };
    let mut changed = newly_shared;
    changed.remove(who.user_id.as_str());
    for user in sources.e2ee.users_with_key_changes(since, upto)? {
        if shares_a_room(&user)? {
            changed.insert(user.to_string());
        }
    }
    changed.extend(sources.e2ee.private_key_changes(&who.localpart, since, upto)?.iter().map(ToString::to_string));
    let mut left = BTreeSet::new();
    for event in member_events {
        let Some(user) = event.state_key_str().and_then(|u| ruma::UserId::parse(u).ok()) else { continue };
        if user == who.user_id {
            continue;
        }
        match crate::rooms::membership_of(event) {
            Some(Membership::Join) => {
                changed.insert(user.to_string());
            }
            Some(Membership::Leave | Membership::Ban) if !shares_a_room(&user)? => {
                left.insert(user.to_string());
            }
            _ => {}
        }
    }
    let left = left.into_iter().filter(|user| !changed.contains(user)).collect();
    Ok((changed.into_iter().collect(), left))
}

/// Presence changes of the caller and of the local users they share a joined room with.
fn visible_presence(
    sources: &Sources<'_>,
    who: &Identity,
    mine: &HashSet<OwnedRoomId>,
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<Value>> {
    let changed = sources.presence.changed_since(since, upto);
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for (user, content) in changed {
        if user == who.user_id || sources.rooms.joined_to_any(&user, mine)? {
            events.push(json!({ "type": "m.presence", "sender": user, "content": content }));
        }
    }
    Ok(events)
}

/// What a joined room carries besides events: its account data and typing
/// list, when they changed.
struct RoomExtras {
    account_data: Vec<Value>,
    typing: Option<Vec<ruma::OwnedUserId>>,
    receipts: Option<Value>,
    /// Position of the user's join (unread counts start there).
    joined_at: u64,
}

/// The timeline of a room for this sync: the last `limit` visible, accepted
/// events in `(since, upto]`, oldest first, and whether some were left out.
fn timeline(
    rooms: &Rooms,
    who: &Identity,
    request: &SyncRequest,
    room: &RoomRecord,
    since: Option<u64>,
    upto: u64,
) -> Result<(Vec<StoredEvent>, bool)> {
    let filter = &request.filter.room.timeline;
    // `limit: 0` asks for no events (the timeline is then `limited` when
    // there were some), as Synapse reads it.
    let limit = filter.limit.map_or(DEFAULT_TIMELINE_LIMIT, |l| (l as usize).min(MAX_TIMELINE_LIMIT));
    let page_size = (limit * 2).max(16);
    let floor = since.map_or(0, |since| since + 1);
    let mut events = Vec::new();
    let mut position = upto.saturating_add(1);
    let mut limited = false;
    'pages: loop {
        let page = rooms.timeline_page(room, position, true, page_size)?;
        let last_page = page.len() < page_size;
        for (count, event_id) in page {
            if count < floor {
                break 'pages;
            }
            position = count;
            let Some((pdu, stored)) = rooms.get_pdu(&event_id)? else { continue };
            let ignored = pdu.state_key_str().is_none() && request.ignored.contains(pdu.sender_str());
            if ignored || !filter.accepts(&pdu) || !rooms.can_see_event(&who.user_id, &pdu, &stored)? {
                continue;
            }
            if events.len() == limit {
                limited = true;
                break 'pages;
            }
            events.push((pdu, stored));
        }
        if last_page {
            break;
        }
    }
    events.reverse();
    Ok((events, limited))
}

fn format_event(
    rooms: &Rooms,
    who: &Identity,
    request: &SyncRequest,
    pdu: &Pdu,
    stored: &StoredPdu,
) -> Result<SyncEvent> {
    if request.filter.event_format.as_deref() == Some("federation") {
        let event = serde_json::to_value(pdu.as_object()).map_err(|e| Error::internal("serialising a PDU", e))?;
        return Ok(shaped_by_filter(request, event));
    }
    Ok(shaped_client_event(request, rooms.serve_client_event(pdu, stored, &who.user_id, &who.device_id)?))
}

/// A client-format event as it is, or as a tree when the filter selects fields.
fn shaped_client_event(request: &SyncRequest, event: ClientEvent) -> SyncEvent {
    match request.filter.event_fields {
        Some(_) => shaped_by_filter(request, event.to_value()),
        None => SyncEvent::Client(event),
    }
}

/// An event as a tree, with only the filter's `event_fields` when it names some.
fn shaped_by_filter(request: &SyncRequest, event: Value) -> SyncEvent {
    SyncEvent::Json(match &request.filter.event_fields {
        Some(fields) => select_fields(&event, fields),
        None => event,
    })
}

/// The member events among a section's state and timeline (who joined or
/// left, for `device_lists`).
fn member_events_of(state: &[Pdu], timeline: &[StoredEvent]) -> Vec<Pdu> {
    state.iter().chain(timeline.iter().map(|(pdu, _)| pdu)).filter(|pdu| is_member_event(pdu)).cloned().collect()
}

#[allow(clippy::too_many_arguments)]
fn joined_room(
    sources: &Sources<'_>,
    who: &Identity,
    request: &SyncRequest,
    room_id: &RoomId,
    room: &RoomRecord,
    snapshot: u64,
    newly_joined: bool,
    extras: RoomExtras,
) -> Result<Option<(JoinedRoom, Vec<Pdu>)>> {
    let rooms = sources.rooms;
    let since = request.since.filter(|_| !newly_joined);
    let (events, limited) = timeline(rooms, who, request, room, since, snapshot)?;
    let start_state = match events.first() {
        Some((_, stored)) => rooms.state.full_state(stored.snapshot_before()?)?,
        None => match rooms.state_at_position(room, snapshot.saturating_add(1))? {
            Some(state) => state,
            None => rooms.current_state(room)?,
        },
    };
    let whole_state = since.is_none() || request.full_state;
    let state_events: Vec<Pdu> = if whole_state {
        rooms.state_events_in(&start_state)?
    } else {
        let since = since.unwrap_or_default();
        let before = rooms.state_at_position(room, since + 1)?.unwrap_or_default();
        state_delta(rooms, &before, &start_state)?
    };
    let mut ephemeral = Vec::new();
    if let Some(users) = extras.typing {
        ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    ephemeral.extend(extras.receipts);
    if !whole_state
        && events.is_empty()
        && state_events.is_empty()
        && extras.account_data.is_empty()
        && ephemeral.is_empty()
    {
        return Ok(None);
    }
    let view = lazy_members::RoomView { room_id, timeline: &events, start_state: &start_state, whole_state };
    let state_events = lazy_members::lazy_load(rooms, sources.sent_members, request, who, &view, state_events)?;
    let timeline_json = events
        .iter()
        .map(|(pdu, stored)| format_event(rooms, who, request, pdu, stored))
        .collect::<Result<Vec<_>>>()?;
    let state_events: Vec<Pdu> =
        state_events.into_iter().filter(|pdu| request.filter.room.state.accepts(pdu)).collect();
    let state_json: Vec<SyncEvent> =
        state_events.iter().map(|pdu| shaped_client_event(request, ClientEvent::new(pdu, room_id))).collect();
    let prev_batch = events.first().map_or(snapshot.saturating_add(1), |(_, stored)| stored.count);
    let member_events = member_events_of(&state_events, &events);
    // The summary reads every member event: only when it may have changed.
    let summary = if whole_state || !member_events.is_empty() { summary(rooms, room, who)? } else { json!({}) };
    let counts = rooms.unread_counts(room_id, room, &who.user_id, extras.joined_at, snapshot)?;
    let (unread_notifications, unread_thread_notifications) = unread_counts_json(request, &counts);
    let section = JoinedRoom {
        timeline: Timeline { events: timeline_json, limited, prev_batch: prev_batch.to_string() },
        state: Events::new(state_json),
        ephemeral: Events::new(ephemeral),
        account_data: Events::new(extras.account_data),
        summary,
        unread_notifications,
        unread_thread_notifications,
    };
    Ok(Some((section, member_events)))
}

/// `unread_notifications`, and `unread_thread_notifications` when the
/// filter asks for per-thread counts (then the first counts the main timeline only).
fn unread_counts_json(request: &SyncRequest, counts: &UnreadCounts) -> (Value, Option<Value>) {
    let as_json =
        |count: &Count| json!({ "notification_count": count.notifications, "highlight_count": count.highlights });
    if request.filter.room.timeline.unread_thread_notifications {
        let threads: Map<String, Value> =
            counts.threads.iter().map(|(root, count)| (root.clone(), as_json(count))).collect();
        (as_json(&counts.main), Some(Value::Object(threads)))
    } else {
        (as_json(&counts.total), None)
    }
}

/// Entries of `after` that are new or different from `before`.
fn state_delta(rooms: &Rooms, before: &StateMap, after: &StateMap) -> Result<Vec<Pdu>> {
    let changed: StateMap =
        after.iter().filter(|(key, value)| before.get(key) != Some(value)).map(|(k, v)| (*k, *v)).collect();
    rooms.state_events_in(&changed)
}

/// `summary`: heroes and member counts, from the current state.
fn summary(rooms: &Rooms, room: &RoomRecord, who: &Identity) -> Result<Value> {
    let summary = rooms.member_summary(room)?;
    Ok(json!({
        "m.heroes": summary.heroes_for(&who.user_id),
        "m.joined_member_count": summary.joined,
        "m.invited_member_count": summary.invited,
    }))
}

/// An invite to (or a knock on) a room of another server this server is not
/// in: the stripped state it came with, or once declined, the rejection.
/// A pending invite from another server sent by a user the caller ignores.
fn invited_by_ignored(record: &crate::storage::records::RemoteInviteRecord, ignored: &HashSet<String>) -> bool {
    if ignored.is_empty() || record.rejection.is_some() || record.knock {
        return false;
    }
    let invite: Value = serde_json::from_str(&record.event).unwrap_or_default();
    invite["sender"].as_str().is_some_and(|sender| ignored.contains(sender))
}

fn remote_invite_section(record: &crate::storage::records::RemoteInviteRecord) -> (Membership, Value) {
    match &record.rejection {
        Some(leave) => {
            let leave: Value = serde_json::from_str(leave).unwrap_or_default();
            (
                Membership::Leave,
                json!({ "timeline": { "events": [leave], "limited": false }, "state": { "events": [] } }),
            )
        }
        None => {
            let state: Value = serde_json::from_str(&record.stripped_state).unwrap_or_else(|_| json!([]));
            match record.knock {
                true => (Membership::Knock, json!({ "knock_state": { "events": state } })),
                false => (Membership::Invite, json!({ "invite_state": { "events": state } })),
            }
        }
    }
}

/// Keeps at most the filter's `limit` events (presence, account data).
fn truncate_to_limit(events: &mut Vec<Value>, filter: &filter::RoomEventFilter) {
    if let Some(limit) = filter.limit {
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
}

/// Whether the user was a member of the room at position `since`.
fn was_joined_at(rooms: &Rooms, room: &RoomRecord, who: &Identity, since: u64) -> Result<bool> {
    let Some(state) = rooms.state_at_position(room, since.saturating_add(1))? else { return Ok(false) };
    Ok(rooms.membership_in(&state, &who.user_id)? == Some(Membership::Join))
}

/// A room the user left: its timeline up to the leave, and its state then.
fn left_room(
    rooms: &Rooms,
    who: &Identity,
    request: &SyncRequest,
    room_id: &RoomId,
    room: &RoomRecord,
    leave: &Pdu,
    leave_stored: &StoredPdu,
) -> Result<(Value, Vec<Pdu>)> {
    let (events, limited) = timeline(rooms, who, request, room, request.since, leave_stored.count)?;
    let state_map: Arc<StateMap> = match events.first() {
        Some((_, stored)) => rooms.state.full_state(stored.snapshot_before()?)?,
        None => rooms.state_after(leave, leave_stored)?,
    };
    // Incrementally, only what changed since the token before the timeline
    // (nothing, usually): the client has the rest.
    let state_events = match request.since.filter(|_| !request.full_state) {
        Some(since) => {
            let before = rooms.state_at_position(room, since + 1)?.unwrap_or_default();
            state_delta(rooms, &before, &state_map)?
        }
        None => rooms.state_events_in(&state_map)?,
    };
    let state: Vec<Value> = state_events.iter().map(|pdu| crate::rooms::client_event(pdu, room_id)).collect();
    let timeline_json = events
        .iter()
        .map(|(pdu, stored)| format_event(rooms, who, request, pdu, stored))
        .collect::<Result<Vec<_>>>()?;
    let prev_batch = events.first().map_or(leave_stored.count, |(_, stored)| stored.count);
    let member_events = member_events_of(&state_events, &events);
    let section = json!({
        "timeline": { "events": timeline_json, "limited": limited, "prev_batch": prev_batch.to_string() },
        "state": { "events": state },
        "account_data": { "events": [] },
    });
    Ok((section, member_events))
}
