//! Reading a room's history and members.
//!
//! Spec: client-server API "Getting events for a room":
//! `GET /rooms/{roomId}/messages` (pagination in both directions with
//! `from`/`to`/`limit`/`filter`), `GET /rooms/{roomId}/members`,
//! `GET /rooms/{roomId}/joined_members`. Every event returned passes the
//! history-visibility check for the caller.
//!
//! Pagination tokens are timeline positions (decimal): token `t` is the gap
//! just before the event counted `t`. Backwards from `t` gives events before
//! it, forwards gives `t` and after. Paging back past the start of what this
//! server holds of a room joined through another fetches older history from
//! the room's servers (`federation::backfill`).

use std::{collections::BTreeSet, sync::Arc};

use ruma::RoomId;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::events::kinds;
use crate::rooms::{state::StateMap, EventPlace, Membership, RoomRecord, StoredEvent};
use crate::{
    error::{Error, ErrorKind, Result},
    events::Pdu,
    http::{request::from_json_value, Request, Response},
    rooms::{client_event, client_event::ClientEvent, membership_of},
    services::Services,
    sync::filter::RoomEventFilter,
    users::Identity,
};

use super::room_events::room_id_param;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

/// A pagination position; a sync token `s<n>` means the gap after event `n`.
fn parse_position(token: &str) -> Result<u64> {
    match token.strip_prefix('s') {
        Some(count) => count.parse::<u64>().ok().and_then(|n| n.checked_add(1)),
        None => token.parse().ok(),
    }
    .ok_or_else(|| Error::invalid_param("Invalid pagination token"))
}

/// What the caller may read of a room (as Synapse): a member reads it as it
/// is; a former member who has not forgotten it, as it was at their leave;
/// anyone, a `world_readable` room as it is. Refused otherwise. Every read of
/// a room's events, state or members starts here.
pub(super) struct ReadableRoom {
    pub room: RoomRecord,
    /// The state to show: the current one, or the one at the caller's leave.
    pub state: Arc<StateMap>,
    /// The caller's own membership, if they have one.
    pub membership: Option<Membership>,
    /// For a former member: the position just after their leave.
    pub read_until: Option<u64>,
}

pub(super) fn readable_room(s: &Services, room_id: &RoomId, who: &Identity) -> Result<ReadableRoom> {
    let forbidden = || Error::forbidden("You are not a member of this room");
    let room = s.rooms.room(room_id)?.ok_or_else(forbidden)?;
    let current = s.rooms.current_state(&room)?;
    let own = s.rooms.state_record_in(&current, kinds::MEMBER, who.user_id.as_str())?;
    let membership = own.as_ref().and_then(|(pdu, _)| membership_of(pdu));
    match (membership, own) {
        (Some(Membership::Join), _) => return Ok(ReadableRoom { room, state: current, membership, read_until: None }),
        // (A leave held without a state, an outlier, gives no state to read.)
        (Some(out), Some((leave, stored)))
            if out.is_out() && stored.state_before.is_some() && !s.rooms.is_forgotten(&who.localpart, room_id)? =>
        {
            let state = s.rooms.state_after(&leave, &stored)?;
            return Ok(ReadableRoom { room, state, membership, read_until: Some(stored.count + 1) });
        }
        _ => {}
    }
    if s.rooms.is_world_readable(&room)? {
        Ok(ReadableRoom { room, state: current, membership, read_until: None })
    } else {
        Err(forbidden())
    }
}

/// The `limit` query parameter of the event lists.
fn limit_param(request: &Request) -> Result<usize> {
    match request.query("limit") {
        Some(limit) => Ok(limit.parse::<usize>().map_err(|_| Error::invalid_param("Invalid limit"))?.min(MAX_LIMIT)),
        None => Ok(DEFAULT_LIMIT),
    }
}

/// What `/messages` gathered so far.
struct Page {
    chunk: Vec<ClientEvent>,
    senders: BTreeSet<String>,
    /// Where reading goes on.
    position: u64,
    /// Nothing more in that direction.
    exhausted: bool,
}

/// Reads the room's timeline from `page.position` until `limit` events the
/// caller may see and the filter accepts are gathered, or the timeline ends.
#[allow(clippy::too_many_arguments)]
fn read_timeline(
    s: &Services,
    who: &Identity,
    room: &RoomRecord,
    filter: &RoomEventFilter,
    backwards: bool,
    limit: usize,
    stop: Option<u64>,
    page: &mut Page,
) -> Result<()> {
    let page_size = limit.saturating_mul(2).max(1);
    let ignored = s.users.ignored_users(&who.localpart)?;
    while page.chunk.len() < limit {
        let entries = s.rooms.timeline_page(room, page.position, backwards, page_size)?;
        let last_page = entries.len() < page_size;
        let entries_len = entries.len();
        for (index, (count, event_id)) in entries.into_iter().enumerate() {
            let past_stop = stop.is_some_and(|stop| if backwards { count < stop } else { count >= stop });
            if past_stop {
                page.exhausted = true;
                return Ok(());
            }
            page.position = if backwards { count } else { count + 1 };
            let Some((pdu, stored)) = s.rooms.get_pdu(&event_id)? else { continue };
            let ignored = pdu.state_key_str().is_none() && ignored.contains(pdu.sender_str());
            if !ignored && filter.accepts(&pdu) && s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
                page.senders.insert(pdu.sender_str().to_owned());
                page.chunk.push(s.rooms.serve_client_event(&pdu, &stored, &who.user_id, &who.device_id)?);
                if page.chunk.len() == limit {
                    page.exhausted = last_page && index + 1 == entries_len;
                    return Ok(());
                }
            }
        }
        if last_page {
            page.exhausted = true;
            return Ok(());
        }
    }
    Ok(())
}

pub async fn messages(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let backwards = match request.query("dir") {
        Some("b") => true,
        Some("f") => false,
        _ => return Err(Error::invalid_param("`dir` must be `b` or `f`")),
    };
    let limit = limit_param(request)?;
    let filter: RoomEventFilter = match request.query("filter") {
        Some(text) => {
            let value: Value = serde_json::from_str(text).map_err(|_| Error::bad_json("`filter` is not JSON"))?;
            from_json_value(value)?
        }
        None => RoomEventFilter::default(),
    };
    let room = readable_room(s, &room_id, who)?.room;
    let start = match request.query("from") {
        Some(token) => parse_position(token)?,
        None if backwards => s.storage.visible_count()? + 1,
        None => 0,
    };
    let stop = request.query("to").map(parse_position).transpose()?;

    let mut page = Page { chunk: Vec::new(), senders: BTreeSet::new(), position: start, exhausted: false };
    read_timeline(s, who, &room, &filter, backwards, limit, stop, &mut page)?;
    // At the start of what this server holds of a room joined through
    // another: older history is fetched from the room's servers, once.
    if backwards && page.exhausted && page.chunk.len() < limit && stop.is_none() {
        let added = s.federation.backfill(&s.rooms, &room_id, limit - page.chunk.len()).await?;
        if added > 0 {
            page.exhausted = false;
            read_timeline(s, who, &room, &filter, backwards, limit, stop, &mut page)?;
            // More may be fetched next time: the client is given a token to ask.
            if page.exhausted {
                let refreshed = s.rooms.room(&room_id)?.unwrap_or_else(|| room.clone());
                page.exhausted = s.rooms.backfill_point(&refreshed)?.is_none();
            }
        }
    }
    let Page { chunk, senders, position, exhausted } = page;
    let mut answer = MessagesAnswer {
        start: start.to_string(),
        chunk,
        // Without `end` the client knows there is nothing more to fetch.
        end: (!exhausted).then(|| position.to_string()),
        state: None,
    };
    if filter.lazy_load_members {
        let state = s.rooms.current_state(&room)?;
        let mut members = Vec::new();
        for sender in senders {
            if let Some(member) = s.rooms.state_event_in(&state, kinds::MEMBER, &sender)? {
                members.push(ClientEvent::new(&member, &room_id));
            }
        }
        answer.state = Some(members);
    }
    Ok(Response::json(&answer))
}

/// The answer of `/messages`: written out with each event's content copied
/// as stored text.
#[derive(Serialize)]
struct MessagesAnswer {
    start: String,
    chunk: Vec<ClientEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Vec<ClientEvent>>,
}

/// `GET /rooms/{roomId}/initialSync` (deprecated, still used by older
/// clients and test tools): the room's state, the caller's membership, the
/// latest messages (up to their leave, for a former member), the room's
/// directory visibility and the caller's account data in it.
pub fn room_initial_sync(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let upto = s.storage.visible_count()?;
    let mut account_data = s.users.account_data_since(&who.localpart, None, upto)?;
    let room_account_data = account_data.rooms.remove(room_id.as_str()).unwrap_or_default();
    Ok(Response::json(&room_info(s, who, &room_id, limit_param(request)?, upto, room_account_data)?))
}

/// A room as `/initialSync` describes it (see [`room_initial_sync`]), read
/// up to the position `upto`.
fn room_info(
    s: &Services,
    who: &Identity,
    room_id: &RoomId,
    limit: usize,
    upto: u64,
    account_data: Vec<Value>,
) -> Result<Value> {
    let readable = readable_room(s, room_id, who)?;
    // A former member's messages stop at their leave.
    let end = readable.read_until.unwrap_or(upto + 1);
    let mut page = Page { chunk: Vec::new(), senders: BTreeSet::new(), position: end, exhausted: false };
    read_timeline(s, who, &readable.room, &RoomEventFilter::default(), true, limit, None, &mut page)?;
    let Page { mut chunk, position, .. } = page;
    chunk.reverse();
    let state_events: Vec<Value> =
        s.rooms.state_events_in(&readable.state)?.iter().map(|pdu| client_event(pdu, room_id)).collect();
    let mut body = json!({
        "room_id": room_id,
        "messages": { "chunk": chunk, "start": position.to_string(), "end": end.to_string() },
        "state": state_events,
        "visibility": if s.rooms.is_published(room_id)? { "public" } else { "private" },
        "account_data": account_data,
    });
    if let Some(membership) = readable.membership {
        body["membership"] = json!(membership.as_str());
    }
    Ok(body)
}

/// `GET /initialSync` (deprecated): every room of the caller as
/// [`room_initial_sync`] gives it (invites with their invite event; left
/// rooms only with `archived=true`), the global account data, and `end`, a
/// token for `/sync` or `/events` to go on from.
pub fn initial_sync(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let limit = limit_param(request)?;
    let archived = request.query("archived") == Some("true");
    let end = s.storage.visible_count()?;
    // Read once for every room.
    let mut account_data = s.users.account_data_since(&who.localpart, None, end)?;
    let mut rooms = Vec::new();
    for (room_id, membership) in s.rooms.memberships_of(&who.localpart)? {
        if membership == Membership::Join || (archived && membership.is_out()) {
            let room_account_data = account_data.rooms.remove(room_id.as_str()).unwrap_or_default();
            match room_info(s, who, &room_id, limit, end, room_account_data) {
                Ok(info) => rooms.push(info),
                // A room left that cannot be read (a declined invite of
                // another server's room, never joined) is left out, not a
                // reason to fail the whole answer.
                Err(error) if error.kind == ErrorKind::Forbidden && membership.is_out() => {}
                Err(error) => return Err(error),
            }
        } else if membership == Membership::Invite {
            let invite = match s.rooms.room(&room_id)? {
                Some(room) => {
                    let state = s.rooms.current_state(&room)?;
                    let invite = s.rooms.state_event_in(&state, kinds::MEMBER, who.user_id.as_str())?;
                    invite.map(|pdu| client_event(&pdu, &room_id))
                }
                // Another server's room: the invite as it came, stripped.
                None => s.rooms.remote_invite_event(&who.user_id, &room_id)?,
            };
            let Some(mut invite) = invite else { continue };
            invite["room_id"] = json!(room_id);
            rooms.push(json!({ "room_id": room_id, "membership": "invite", "invite": invite }));
        }
    }
    Ok(Response::json(&json!({
        "end": format!("s{end}"),
        "rooms": rooms,
        "presence": [],
        "account_data": account_data.global,
    })))
}

/// `GET /rooms/{roomId}/timestamp_to_event?ts=&dir=`: the visible event
/// nearest to a time, on or after it (`f`) or on or before it (`b`).
pub fn timestamp_to_event(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let (ts, backwards) = timestamp_query(request)?;
    let room = readable_room(s, &room_id, who)?.room;
    let visible = |pdu: &Pdu, stored: &EventPlace| s.rooms.can_see_event(&who.user_id, pdu, stored);
    nearest_event_answer(s.rooms.event_near_timestamp(&room, ts, backwards, visible)?)
}

/// `ts` and `dir` of a `/timestamp_to_event` (client or federation): the
/// time, and whether to look backwards.
pub fn timestamp_query(request: &Request) -> Result<(u64, bool)> {
    let ts: u64 = request
        .query("ts")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::invalid_param("`ts` must be a timestamp"))?;
    match request.query("dir") {
        Some("b") => Ok((ts, true)),
        Some("f") => Ok((ts, false)),
        _ => Err(Error::invalid_param("`dir` must be `b` or `f`")),
    }
}

/// The answer of a `/timestamp_to_event`.
pub fn nearest_event_answer(found: Option<(ruma::OwnedEventId, u64)>) -> Result<Response> {
    match found {
        Some((event_id, ts)) => Ok(Response::json(&json!({ "event_id": event_id, "origin_server_ts": ts }))),
        None => Err(Error::not_found("No event found in that direction")),
    }
}

/// `GET /rooms/{roomId}/context/{eventId}`: an event with those around it and
/// the state after the last one returned.
pub fn context(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let not_found = || Error::not_found("Event not found");
    let event_id = ruma::EventId::parse(request.param("event_id")?).map_err(|_| not_found())?;
    let room = readable_room(s, &room_id, who)?.room;
    let (pdu, stored) = s.rooms.get_pdu(&event_id)?.ok_or_else(not_found)?;
    if stored.room_id != room_id.as_str() || !s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
        return Err(not_found());
    }
    let limit = limit_param(request)?;
    let filter: RoomEventFilter = match request.query("filter") {
        Some(text) => {
            from_json_value(serde_json::from_str(text).map_err(|_| Error::bad_json("`filter` is not JSON"))?)?
        }
        None => RoomEventFilter::default(),
    };
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let neighbours =
        |from: u64, backwards: bool, wanted: usize| visible_neighbours(s, &room, who, &filter, from, backwards, wanted);
    let (before, start) = neighbours(stored.count, true, before_limit)?;
    let (after, end) = neighbours(stored.count + 1, false, after_limit)?;
    let (last, last_stored) =
        after.last().map(|(p, st)| (p.clone(), st.clone())).unwrap_or((pdu.clone(), stored.clone()));
    let state_map = s.rooms.state_after(&last, &last_stored)?;
    let mut state = s.rooms.state_events_in(&state_map)?;
    if filter.lazy_load_members {
        let senders: BTreeSet<&str> =
            before.iter().chain(after.iter()).map(|(p, _)| p.sender_str()).chain([pdu.sender_str()]).collect();
        state.retain(|event| {
            event.kind().to_string() == kinds::MEMBER && event.state_key_str().is_some_and(|k| senders.contains(k))
        });
    }
    let serve = |(event, stored): &StoredEvent| s.rooms.serve_client_event(event, stored, &who.user_id, &who.device_id);
    Ok(Response::json(&ContextAnswer {
        event: serve(&(pdu, stored))?,
        events_before: before.iter().map(serve).collect::<Result<_>>()?,
        events_after: after.iter().map(serve).collect::<Result<_>>()?,
        start: start.to_string(),
        end: end.to_string(),
        state: state.iter().map(|event| ClientEvent::new(event, &room_id)).collect(),
    }))
}

/// The answer of `/context`, written out as [`MessagesAnswer`] is.
#[derive(Serialize)]
struct ContextAnswer {
    event: ClientEvent,
    events_before: Vec<ClientEvent>,
    events_after: Vec<ClientEvent>,
    start: String,
    end: String,
    state: Vec<ClientEvent>,
}

/// Up to `wanted` events of a room around a position that pass `filter` and
/// that the caller may see, walking backwards (from before `from`) or
/// forwards (from `from`); with the position where the walk stopped.
pub fn visible_neighbours(
    s: &Services,
    room: &RoomRecord,
    who: &Identity,
    filter: &RoomEventFilter,
    from: u64,
    backwards: bool,
    wanted: usize,
) -> Result<(Vec<StoredEvent>, u64)> {
    let mut found = Vec::new();
    let mut position = from;
    while found.len() < wanted {
        let page = s.rooms.timeline_page(room, position, backwards, wanted * 2 + 1)?;
        let last_page = page.len() < wanted * 2 + 1;
        for (count, id) in page {
            position = if backwards { count } else { count + 1 };
            let Some((event, stored)) = s.rooms.get_pdu(&id)? else { continue };
            if filter.accepts(&event) && s.rooms.can_see_event(&who.user_id, &event, &stored)? {
                found.push((event, stored));
                if found.len() == wanted {
                    break;
                }
            }
        }
        if last_page {
            break;
        }
    }
    Ok((found, position))
}

/// Member events of a room as the caller may read its state
/// ([`readable_room`]: a former member sees the members
/// as they were when they left); a member may ask for the position `at`.
fn current_members(s: &Services, request: &Request, who: &Identity) -> Result<(ruma::OwnedRoomId, Vec<Pdu>)> {
    let room_id = room_id_param(request)?;
    let readable = readable_room(s, &room_id, who)?;
    let state = match request.query("at") {
        Some(at) if readable.membership == Some(Membership::Join) => s
            .rooms
            .state_at_position(&readable.room, parse_position(at)?)?
            .ok_or_else(|| Error::not_found("No state at that point"))?,
        _ => readable.state,
    };
    let members =
        s.rooms.state_events_in(&state)?.into_iter().filter(|pdu| pdu.kind().to_string() == kinds::MEMBER).collect();
    Ok((room_id, members))
}

/// How long a member list waits for a room joined with partial state to be
/// completed (then it is answered with the members known), as Synapse waits.
const WAIT_FOR_WHOLE_STATE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn members(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    s.rooms.wait_for_whole_state(&room_id_param(request)?, WAIT_FOR_WHOLE_STATE).await?;
    let (room_id, members) = current_members(s, request, who)?;
    let wanted = request.query("membership");
    let unwanted = request.query("not_membership");
    let chunk: Vec<Value> = members
        .iter()
        .filter(|pdu| {
            let membership = membership_of(pdu).map_or("", Membership::as_str);
            wanted.is_none_or(|w| w == membership) && unwanted.is_none_or(|u| u != membership)
        })
        .map(|pdu| client_event(pdu, &room_id))
        .collect();
    Ok(Response::json(&json!({ "chunk": chunk })))
}

pub async fn joined_members(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    s.rooms.wait_for_whole_state(&room_id_param(request)?, WAIT_FOR_WHOLE_STATE).await?;
    let (_, members) = current_members(s, request, who)?;
    let mut joined = Map::new();
    for pdu in members.iter().filter(|pdu| membership_of(pdu) == Some(Membership::Join)) {
        let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
        let profile = json!({
            "display_name": content.get("displayname").cloned().unwrap_or(Value::Null),
            "avatar_url": content.get("avatar_url").cloned().unwrap_or(Value::Null),
        });
        if let Some(user) = pdu.state_key_str() {
            joined.insert(user.to_owned(), profile);
        }
    }
    Ok(Response::json(&json!({ "joined": joined })))
}
