//! Sending and reading room events and state.
//!
//! Spec: client-server API "Sending events to a room"
//! (`PUT /rooms/{roomId}/send/{eventType}/{txnId}`,
//! `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`), "Getting events for a
//! room" (`GET /rooms/{roomId}/state[/{eventType}/{stateKey}]`,
//! `GET /rooms/{roomId}/event/{eventId}`), "Transaction identifiers".
//!
//! Who may write is decided by the room version's authorisation rules in the
//! pipeline; who may read is checked here: current state needs membership,
//! single events need the history visibility to allow them.

use ruma::{EventId, OwnedRoomId, RoomId};
use serde_json::{json, Value};

use crate::events::kinds;
use crate::rooms::{TxnKey, TxnRequest};
use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    rooms::{client_event, EventRequest},
    services::Services,
    users::Identity,
};

/// The `room_id` path parameter, parsed.
pub fn room_id_param(request: &Request) -> Result<OwnedRoomId> {
    RoomId::parse(request.param("room_id")?).map_err(|_| Error::invalid_param("Invalid room id"))
}

/// The transaction `txn_id` of the caller's device for `request`.
fn transaction(who: &Identity, request: TxnRequest, txn_id: &str) -> TxnKey {
    TxnKey { localpart: who.localpart.clone(), device_id: who.device_id.clone(), request, txn_id: txn_id.to_owned() }
}

/// The body as an event content object.
fn content(request: &Request) -> Result<Value> {
    request.json_object()
}

pub async fn send(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let kind = request.param("event_type")?.to_owned();
    let txn_id = request.param("txn_id")?;
    // A transaction is scoped to the device and the request path (room and type).
    let txn = transaction(who, TxnRequest::Send { room_id: room_id.to_string(), event_type: kind.clone() }, txn_id);
    let event = EventRequest::message(&kind, content(request)?);
    let event_id = s.rooms.append(&room_id, &who.user_id, event, Some(txn)).await?;
    Ok(Response::json(&json!({ "event_id": event_id })))
}

pub async fn put_state(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let state_key = request.optional_param("state_key").unwrap_or_default();
    let kind = request.param("event_type")?;
    let content = content(request)?;
    if let Some(event_id) = s.rooms.identical_current_state(&room_id, &who.user_id, kind, state_key, &content)? {
        return Ok(Response::json(&json!({ "event_id": event_id })));
    }
    let guests_out = kind == kinds::GUEST_ACCESS && content["guest_access"] != "can_join";
    let event = EventRequest::state(kind, state_key, content);
    let event_id = s.rooms.append(&room_id, &who.user_id, event, None).await?;
    // The change is made: a guest who cannot be moved out is logged, not
    // turned into a failure of the request that made it.
    if guests_out {
        if let Err(error) = remove_guests(s, &room_id).await {
            tracing::warn!(%error, room = %room_id, "guests could not all be removed from a room that forbids them");
        }
    }
    Ok(Response::json(&json!({ "event_id": event_id })))
}

/// Once a room forbids guests, the local guests in it leave (as Synapse
/// makes them leave).
async fn remove_guests(s: &Services, room_id: &RoomId) -> Result<()> {
    let Some(room) = s.rooms.room(room_id)? else { return Ok(()) };
    let members = s.rooms.joined_members_in(s.rooms.current_state(&room)?.as_ref())?;
    for member in members.iter().filter(|member| member.server_name() == s.config.server_name) {
        if s.users.get(member.localpart())?.is_some_and(|user| user.is_guest) {
            let leave = EventRequest::state(kinds::MEMBER, member.as_str(), json!({ "membership": "leave" }));
            s.rooms.append(room_id, member, leave, None).await?;
            tracing::info!(room = %room_id, guest = %member, "guest removed: the room no longer admits guests");
        }
    }
    Ok(())
}

pub fn get_state(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let state = super::messages::readable_room(s, &room_id, who)?.state;
    let events: Vec<Value> = s.rooms.state_events_in(&state)?.iter().map(|pdu| client_event(pdu, &room_id)).collect();
    Ok(Response::json(&events))
}

pub fn get_state_event(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let state = super::messages::readable_room(s, &room_id, who)?.state;
    let pdu = s
        .rooms
        .state_event_in(&state, request.param("event_type")?, request.optional_param("state_key").unwrap_or_default())?
        .ok_or_else(|| Error::not_found("No such state event"))?;
    let event = client_event(&pdu, &room_id);
    if request.query("format") == Some("event") {
        Ok(Response::json(&event))
    } else {
        Ok(Response::json(&event["content"]))
    }
}

pub fn get_event(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    serve_visible_event(s, request, who, Some(&room_id))
}

/// `GET /events/{eventId}` (deprecated: the room is found from the event).
pub fn get_event_without_room(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    serve_visible_event(s, request, who, None)
}

/// The event of the `event_id` parameter if the caller may see it (and it is
/// in `room_id`, when given): a timeline event (not an outlier or a rejected
/// one) their history visibility allows. Anything else is the same 404.
fn serve_visible_event(s: &Services, request: &Request, who: &Identity, room_id: Option<&RoomId>) -> Result<Response> {
    let not_found = || Error::new(ErrorKind::NotFound, "Event not found");
    let event_id = EventId::parse(request.param("event_id")?).map_err(|_| not_found())?;
    let (pdu, stored) = s.rooms.get_pdu(&event_id)?.ok_or_else(not_found)?;
    let elsewhere = room_id.is_some_and(|room_id| stored.room_id != room_id.as_str());
    if elsewhere || stored.count == 0 || !s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
        return Err(not_found());
    }
    Ok(Response::json(&s.rooms.serve_client_event(&pdu, &stored, &who.user_id, &who.device_id)?))
}

#[derive(Debug, Default, serde::Deserialize)]
struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub async fn redact(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let target = EventId::parse(request.param("event_id")?).map_err(|_| Error::not_found("Event not found"))?;
    let txn_id = request.param("txn_id")?;
    let txn =
        transaction(who, TxnRequest::Redact { room_id: room_id.to_string(), event_id: target.to_string() }, txn_id);
    let body: RedactBody = request.json()?;
    let mut content = json!({ "redacts": target });
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let event = EventRequest { kind: kinds::REDACTION.into(), state_key: None, content, redacts: Some(target) };
    let event_id = s.rooms.append(&room_id, &who.user_id, event, Some(txn)).await?;
    Ok(Response::json(&json!({ "event_id": event_id })))
}
