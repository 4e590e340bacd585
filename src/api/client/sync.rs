//! `/sync` and filters.
//!
//! Spec: client-server API "Syncing" (`GET /sync`) and "Filtering"
//! (`POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`).
//! Filters belong to their user: nobody reads or writes another's.

use std::time::Duration;

use serde_json::{json, Value};

use crate::rooms::Membership;
use crate::{
    error::{Error, Result},
    http::{request::from_json_value, Request, Response},
    services::Services,
    sync::{self, event_stream, filter::Filter, SyncRequest},
    users::Identity,
};

fn check_own_user(request: &Request, who: &Identity) -> Result<()> {
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only manage your own filters"));
    }
    Ok(())
}

fn parse_filter(value: Value) -> Result<Filter> {
    let filter: Filter = from_json_value(value)?;
    filter.validate().map_err(Error::bad_json)?;
    Ok(filter)
}

pub async fn create_filter(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_own_user(request, who)?;
    let body = request.json_object()?;
    parse_filter(body.clone())?;
    let filter_id = s.users.add_filter(&who.localpart, &body.to_string()).await?;
    Ok(Response::json(&json!({ "filter_id": filter_id })))
}

pub fn get_filter(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_own_user(request, who)?;
    let stored = s
        .users
        .filter(&who.localpart, request.param("filter_id")?)?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
    let value: Value = serde_json::from_str(&stored).map_err(|e| Error::internal("stored filter", e))?;
    Ok(Response::json(&value))
}

pub async fn sync(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let filter = match request.query("filter") {
        None => Filter::default(),
        Some(text) if text.trim_start().starts_with('{') => {
            parse_filter(serde_json::from_str(text).map_err(|_| Error::bad_json("`filter` is not JSON"))?)?
        }
        Some(id) => {
            let stored = s.users.filter(&who.localpart, id)?.ok_or_else(|| Error::not_found("Unknown filter"))?;
            parse_filter(serde_json::from_str(&stored).map_err(|e| Error::internal("stored filter", e))?)?
        }
    };
    let since = request.query("since").map(sync::parse_since).transpose()?;
    let timeout = timeout_param(request)?;
    let full_state = request.query("full_state") == Some("true");
    let changed = match request.query("set_presence") {
        None | Some("online") => s.presence.set(&who.user_id, "online", None)?,
        Some("unavailable") => s.presence.set(&who.user_id, "unavailable", None)?,
        Some("offline") => false,
        Some(other) => return Err(Error::invalid_param(format!("Unknown set_presence {other:?}"))),
    };
    if changed {
        s.federation.send_presence(&s.rooms, &s.presence, &who.user_id)?;
    }
    let ignored = s.users.ignored_users(&who.localpart)?;
    let sync_request = SyncRequest { since, full_state, timeout, filter, ignored, to_device: true };
    // A long-poll while it waits, for the metrics.
    let _long_poll = (!timeout.is_zero() && since.is_some()).then(|| s.metrics.long_poll());
    Ok(Response::json(&sync::sync(&sources(s), who, &sync_request).await?))
}

/// What `/sync` and `/events` read.
fn sources(s: &Services) -> sync::Sources<'_> {
    sync::Sources {
        rooms: &s.rooms,
        users: &s.users,
        typing: &s.typing,
        presence: &s.presence,
        e2ee: &s.e2ee,
        sent_members: &s.sent_members,
    }
}

/// The `timeout` query parameter of a long-poll, in milliseconds (none: no wait).
fn timeout_param(request: &Request) -> Result<Duration> {
    match request.query("timeout") {
        Some(ms) => Ok(Duration::from_millis(ms.parse().map_err(|_| Error::invalid_param("Invalid timeout"))?)),
        None => Ok(Duration::ZERO),
    }
}

/// A `from` token of the event stream: a sync token (`s<n>`), or a
/// `/messages` position (`n`, the gap before event `n`), which the room
/// `/initialSync` gives as its `messages.end`.
fn stream_token(token: &str) -> Result<u64> {
    let invalid = || Error::invalid_param("Invalid `from` token");
    if token.starts_with('s') {
        return sync::parse_since(token).map_err(|_| invalid());
    }
    token.parse::<u64>().ok().and_then(|position| position.checked_sub(1)).ok_or_else(invalid)
}

/// `GET /events` (deprecated v1 event stream, `sync::event_stream`): what
/// happened since `from`; with `room_id`, in that room only, for anyone who
/// may read it (peeking a `world_readable` room).
pub async fn events(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let from = request.query("from").map(stream_token).transpose()?;
    let timeout = timeout_param(request)?;
    let ignored = s.users.ignored_users(&who.localpart)?;
    let _long_poll = (!timeout.is_zero()).then(|| s.metrics.long_poll());
    let body = match request.query("room_id") {
        Some(room_id) => {
            let room_id = ruma::RoomId::parse(room_id).map_err(|_| Error::invalid_param("Invalid room id"))?;
            let readable = super::messages::readable_room(s, &room_id, who)?;
            let room = event_stream::PeekedRoom { record: &readable.room, read_until: readable.read_until };
            event_stream::room_events_since(&s.rooms, who, &room, &ignored, from, timeout).await?
        }
        None => {
            let stream_request = SyncRequest {
                since: from,
                full_state: false,
                timeout,
                filter: Filter::default(),
                ignored,
                to_device: false,
            };
            event_stream::events_since(&sources(s), who, stream_request).await?
        }
    };
    Ok(Response::json(&body))
}

#[derive(Debug, serde::Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`: only for oneself, in a joined room.
pub fn typing(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = super::room_events::room_id_param(request)?;
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only set your own typing state"));
    }
    if s.rooms.membership(&room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(Error::forbidden("You are not in this room"));
    }
    let body: TypingBody = request.json()?;
    let timeout = Duration::from_millis(body.timeout.unwrap_or(30_000));
    s.typing.set(&room_id, &who.user_id, body.typing, timeout)?;
    s.federation.send_typing(&s.rooms, &room_id, &who.user_id, body.typing)?;
    Ok(Response::empty_object())
}

#[derive(Debug, serde::Deserialize)]
struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /presence/{userId}/status`: one's own only.
pub fn set_presence(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    if !s.presence.enabled() {
        return Err(Error::forbidden("Presence is disabled on this server"));
    }
    let body: PresenceBody = request.json()?;
    if body.status_msg.as_ref().is_some_and(|m| m.len() > 1024) {
        return Err(Error::invalid_param("status_msg is longer than 1024 bytes"));
    }
    if s.presence.set(&who.user_id, &body.presence, Some(body.status_msg))? {
        s.federation.send_presence(&s.rooms, &s.presence, &who.user_id)?;
    }
    Ok(Response::empty_object())
}

/// `GET /presence/{userId}/status`: oneself, or someone sharing a joined room.
pub fn get_presence(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let user_id =
        ruma::UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))?;
    if user_id != who.user_id {
        let mine: std::collections::HashSet<_> = s.rooms.joined_rooms(&who.localpart)?.into_iter().collect();
        let visible = s.rooms.joined_to_any(&user_id, &mine)?;
        if !visible {
            return Err(Error::forbidden("You are not allowed to see their presence"));
        }
    }
    Ok(Response::json(&s.presence.content(&user_id)))
}
