//! The v1 event stream, `GET /events` (deprecated since r0, still used by
//! older clients and test tools): what happened since a token, as one flat
//! list, long-polling when nothing did.
//!
//! Spec: client-server API `GET /events` (`data/api/client-server/old_sync.yaml`)
//! and, with `room_id`, `GET /events` for peeking
//! (`data/api/client-server/peeking_events.yaml`).
//!
//! Tokens are `/sync`'s (`s<count>`), so a client can go on from
//! `/initialSync`'s `end` or a `next_batch`. Without `room_id` the stream is
//! an incremental `/sync` laid flat, as Synapse's event stream carries it:
//! the new events of the caller's rooms (timelines, the invite of a room
//! invited to, the leave of a room left), typing and receipts (`m.typing`,
//! `m.receipt`), presence, and account data (global, and per room with its
//! `room_id`, tags included). Every room's event carries its `room_id`.
//! To-device messages are not part of it (they stay for `/sync`).
//! With `room_id` it is that room's new events only, for anyone who may read
//! the room (a member, or anyone in a `world_readable` room).

use std::{collections::HashSet, time::Duration};

use serde_json::{json, Value};

use crate::{
    error::Result,
    rooms::Rooms,
    storage::records::RoomRecord,
    sync::{sync, Sources, SyncRequest, MAX_TIMELINE_LIMIT, MAX_TIMEOUT},
    users::Identity,
};

/// The stream's answer: the events since `from`, and the token to go on from.
pub async fn events_since(sources: &Sources<'_>, who: &Identity, request: SyncRequest) -> Result<Value> {
    let start = match request.since {
        Some(since) => since,
        None => sources.rooms.current_position()?,
    };
    let mut request = request;
    request.since = Some(start);
    request.to_device = false;
    request.full_state = false;
    request.filter.room.timeline.limit = Some(MAX_TIMELINE_LIMIT as u64);
    let body = serde_json::to_value(sync(sources, who, &request).await?)
        .map_err(|e| crate::error::Error::internal("serialising a sync answer", e))?;
    Ok(json!({ "start": format!("s{start}"), "end": body["next_batch"], "chunk": flatten(&body, who) }))
}

/// An incremental `/sync` answer as one list of events.
fn flatten(body: &Value, who: &Identity) -> Vec<Value> {
    let mut chunk = Vec::new();
    let rooms = |section: &str| body["rooms"][section].as_object().into_iter().flatten();
    for (room_id, room) in rooms("join").chain(rooms("leave")) {
        for list in ["timeline", "ephemeral", "account_data"] {
            chunk.extend(with_room_id(&room[list]["events"], room_id));
        }
    }
    for (room_id, room) in rooms("invite") {
        // The invite itself: the caller's member event among the stripped state.
        let own_member = room["invite_state"]["events"].as_array().into_iter().flatten().filter(|event| {
            event["type"] == crate::events::kinds::MEMBER
                && event["state_key"] == who.user_id.as_str()
                && event["content"]["membership"] == "invite"
        });
        chunk.extend(own_member.map(|event| with_room_id_one(event, room_id)));
    }
    for list in ["presence", "account_data"] {
        chunk.extend(body[list]["events"].as_array().into_iter().flatten().cloned());
    }
    chunk
}

fn with_room_id(events: &Value, room_id: &str) -> Vec<Value> {
    events.as_array().into_iter().flatten().map(|event| with_room_id_one(event, room_id)).collect()
}

fn with_room_id_one(event: &Value, room_id: &str) -> Value {
    let mut event = event.clone();
    if let Some(object) = event.as_object_mut() {
        object.insert("room_id".into(), json!(room_id));
    }
    event
}

/// A room read through the stream with `room_id`.
pub struct PeekedRoom<'a> {
    pub record: &'a RoomRecord,
    /// For a former member: the position just after their leave.
    pub read_until: Option<u64>,
}

/// The stream of one room (peeking): its events after `from` that the caller
/// may see, up to `read_until` (exclusive) for a former member; waits up to
/// `timeout` for one. Events of ignored users are left out.
pub async fn room_events_since(
    rooms: &Rooms,
    who: &Identity,
    room: &PeekedRoom<'_>,
    ignored: &HashSet<String>,
    from: Option<u64>,
    timeout: Duration,
) -> Result<Value> {
    let read_until = room.read_until;
    let start = match from {
        Some(from) => from,
        None => rooms.current_position()?,
    };
    let deadline = tokio::time::Instant::now() + timeout.min(MAX_TIMEOUT);
    let mut updates = rooms.subscribe();
    loop {
        updates.borrow_and_update();
        let snapshot = rooms.current_position()?;
        let end = read_until.map_or(snapshot, |until| until.saturating_sub(1).min(snapshot)).max(start);
        let (chunk, end) = room_events_between(rooms, who, room, ignored, start, end)?;
        let over = read_until.is_some_and(|until| start + 1 >= until);
        let answer =
            |chunk: Vec<Value>| json!({ "start": format!("s{start}"), "end": format!("s{end}"), "chunk": chunk });
        if !chunk.is_empty() || over || timeout.is_zero() {
            return Ok(answer(chunk));
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Ok(answer(Vec::new())),
        }
    }
}

/// The visible events of a room counted in `(after, upto]`, oldest first,
/// at most [`MAX_TIMELINE_LIMIT`] read, and the position read up to.
fn room_events_between(
    rooms: &Rooms,
    who: &Identity,
    room: &PeekedRoom<'_>,
    ignored: &HashSet<String>,
    after: u64,
    upto: u64,
) -> Result<(Vec<Value>, u64)> {
    let mut chunk = Vec::new();
    if upto <= after {
        return Ok((chunk, after));
    }
    let page = rooms.timeline_page(room.record, after + 1, false, MAX_TIMELINE_LIMIT)?;
    // A full page may stop short of `upto`: the token then stops at its end.
    let reached = if page.len() == MAX_TIMELINE_LIMIT { page.last().map_or(upto, |(count, _)| *count) } else { upto };
    for (count, event_id) in page {
        if count > reached {
            break;
        }
        let Some((pdu, stored)) = rooms.get_pdu(&event_id)? else { continue };
        let from_ignored = pdu.state_key_str().is_none() && ignored.contains(pdu.sender_str());
        if !from_ignored && rooms.can_see_event(&who.user_id, &pdu, &stored)? {
            // (A served event carries its room id.)
            chunk.push(rooms.serve_event(&pdu, &stored, &who.user_id, &who.device_id)?);
        }
    }
    Ok((chunk, reached.min(upto)))
}
