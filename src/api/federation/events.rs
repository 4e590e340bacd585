//! Serving a room's events to other servers: `/send/{txnId}` (receiving),
//! `/event/{eventId}`, `/event_auth`, `/state`, `/state_ids`,
//! `/get_missing_events`, `/backfill`, `/timestamp_to_event`. Only a server with a joined member
//! may ask about a room, and it gets only the events one of its users could
//! see (history visibility for servers, `rooms::federated`).
//!
//! Spec: server-server API "Transactions", "Retrieving events",
//! "Backfilling and retrieving missing events".

use ruma::{OwnedEventId, RoomId, ServerName};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    api::client::room_events::room_id_param,
    error::{Error, Result},
    federation::receive::transaction::Transaction,
    http::{Request, Response},
    rooms::RoomRecord,
    services::Services,
    util::now_ms,
};

/// `PUT /_matrix/federation/v1/send/{txnId}`.
pub async fn send_transaction(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let transaction: Transaction = request.json()?;
    let answer = s
        .federation
        .receive_transaction(
            &s.rooms,
            crate::federation::edu::EduSinks { typing: &s.typing, e2ee: &s.e2ee, presence: &s.presence },
            origin,
            request.param("txn_id")?,
            transaction,
        )
        .await?;
    Ok(Response::json(&answer))
}

/// The room, which `origin` must be in (and allowed by its server ACL).
fn room_of_member_server(s: &Services, room_id: &RoomId, origin: &ServerName) -> Result<RoomRecord> {
    s.rooms.check_server_acl(room_id, origin)?;
    let room = s.rooms.room(room_id)?.ok_or_else(|| Error::not_found("This server is not in the room"))?;
    if !s.rooms.server_in_room(&room, origin)? {
        return Err(Error::forbidden("Your server is not in this room"));
    }
    Ok(room)
}

fn event_id_param(request: &Request, name: &str) -> Result<OwnedEventId> {
    OwnedEventId::try_from(request.param(name)?).map_err(|_| Error::invalid_param("Invalid event id"))
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub fn event(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let event_id = event_id_param(request, "event_id")?;
    let (json, stored) = s.rooms.pdu_json(&event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
    let room_id =
        ruma::OwnedRoomId::try_from(stored.room_id.as_str()).map_err(|_| Error::not_found("Unknown event"))?;
    s.rooms.check_server_acl(&room_id, origin)?;
    if !s.rooms.may_serve_event(origin, &room_id, &stored)? {
        return Err(Error::forbidden("Your server may not see this event"));
    }
    Ok(Response::json(&json!({
        "origin": s.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": [json],
    })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub fn event_auth(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let room_id = room_id_param(request)?;
    room_of_member_server(s, &room_id, origin)?;
    let event_id = event_id_param(request, "event_id")?;
    let (_, stored) = s.rooms.pdu_json(&event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
    if stored.room_id != room_id.as_str() {
        return Err(Error::not_found("The event is not in this room"));
    }
    let chain: Vec<OwnedEventId> = s.rooms.auth_chain(&[event_id])?.into_iter().collect();
    Ok(Response::json(&json!({ "auth_chain": pdus(s, &chain)? })))
}

fn pdus(s: &Services, ids: &[OwnedEventId]) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some((json, _)) = s.rooms.pdu_json(id)? {
            out.push(json);
        }
    }
    Ok(out)
}

/// The event of `?event_id=`, in `room_id`, visible to `origin`.
fn state_query(s: &Services, request: &Request, origin: &ServerName) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    let room_id = room_id_param(request)?;
    room_of_member_server(s, &room_id, origin)?;
    let event_id = request
        .query("event_id")
        .ok_or_else(|| Error::new(crate::error::ErrorKind::MissingParam, "event_id is required"))?;
    let event_id = OwnedEventId::try_from(event_id).map_err(|_| Error::invalid_param("Invalid event id"))?;
    let (_, stored) = s.rooms.pdu_json(&event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
    if stored.room_id != room_id.as_str() {
        return Err(Error::not_found("The event is not in this room"));
    }
    if !s.rooms.server_can_see(origin, &stored)? {
        return Err(Error::forbidden("Your server may not see this event"));
    }
    if s.rooms.has_partial_state(&room_id)? {
        return Err(Error::not_found("This server does not have the room's whole state yet"));
    }
    s.rooms.state_at_event(&event_id)
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`.
pub fn state_ids(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let (state, chain) = state_query(s, request, origin)?;
    Ok(Response::json(&json!({ "pdu_ids": state, "auth_chain_ids": chain })))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`.
pub fn state(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let (state, chain) = state_query(s, request, origin)?;
    Ok(Response::json(&json!({ "pdus": pdus(s, &state)?, "auth_chain": pdus(s, &chain)? })))
}

#[derive(Debug, Deserialize)]
struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    #[serde(default = "default_missing_limit")]
    limit: usize,
    #[serde(default)]
    min_depth: u64,
}

fn default_missing_limit() -> usize {
    10
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub fn get_missing_events(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let room_id = room_id_param(request)?;
    room_of_member_server(s, &room_id, origin)?;
    let body: MissingEventsBody = request.json()?;
    let events = s.rooms.missing_events(
        &room_id,
        origin,
        &body.earliest_events,
        &body.latest_events,
        body.limit,
        body.min_depth,
    )?;
    Ok(Response::json(&json!({ "events": events })))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=`.
pub fn backfill(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let room_id = room_id_param(request)?;
    room_of_member_server(s, &room_id, origin)?;
    let from: Vec<OwnedEventId> =
        request.query_all("v").into_iter().filter_map(|id| OwnedEventId::try_from(id).ok()).collect();
    if from.is_empty() {
        return Err(Error::new(crate::error::ErrorKind::MissingParam, "v (the events to backfill from) is required"));
    }
    let limit = request.query("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let pdus = s.rooms.backfill(&room_id, origin, from, limit)?;
    Ok(Response::json(&json!({
        "origin": s.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": pdus,
    })))
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=`: the
/// event nearest a time that the asking server may see.
pub fn timestamp_to_event(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    use crate::api::client::messages::{nearest_event_answer, timestamp_query};
    let room_id = room_id_param(request)?;
    let room = room_of_member_server(s, &room_id, origin)?;
    let (ts, backwards) = timestamp_query(request)?;
    let visible = |_: &crate::events::Pdu, stored: &crate::rooms::EventPlace| s.rooms.server_can_see(origin, stored);
    nearest_event_answer(s.rooms.event_near_timestamp(&room, ts, backwards, visible)?)
}
