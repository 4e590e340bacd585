//! Read receipts and read markers.
//!
//! Spec: client-server API modules "Receipts"
//! (`POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`, with `thread_id`)
//! and "Read and unread markers" (`POST /rooms/{roomId}/read_markers`;
//! `m.fully_read` is room account data only the server sets).

use ruma::EventId;
use serde::Deserialize;
use serde_json::json;

use crate::rooms::Membership;
use crate::{
    error::{Error, Result},
    http::{Request, Response},
    rooms::{
        receipts::{READ, READ_PRIVATE},
        relations::relation_of,
    },
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

/// The event must be in the room and visible to the joined caller.
fn readable_event(s: &Services, room_id: &ruma::RoomId, who: &Identity, event_id: &str) -> Result<ruma::OwnedEventId> {
    if s.rooms.membership(room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(Error::forbidden("You are not in this room"));
    }
    let not_found = || Error::not_found("Event not found");
    let event_id = EventId::parse(event_id).map_err(|_| not_found())?;
    let (pdu, stored) = s.rooms.get_pdu(&event_id)?.ok_or_else(not_found)?;
    if stored.room_id != room_id.as_str() || !s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
        return Err(not_found());
    }
    Ok(event_id)
}

async fn set_fully_read(s: &Services, who: &Identity, room_id: &ruma::RoomId, event_id: &EventId) -> Result<()> {
    let content = json!({ "event_id": event_id });
    s.users.store_account_data(&who.localpart, Some(room_id.as_str()), "m.fully_read", &content).await
}

#[derive(Debug, Default, Deserialize)]
struct ReceiptBody {
    thread_id: Option<String>,
}

pub async fn receipt(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let kind = request.param("receipt_type")?;
    let event_id = readable_event(s, &room_id, who, request.param("event_id")?)?;
    let body: ReceiptBody = request.json()?;
    if let Some(thread_id) = &body.thread_id {
        check_thread_id(s, kind, &event_id, thread_id)?;
    }
    match kind {
        READ | READ_PRIVATE => {
            s.rooms.set_receipt(&room_id, &who.user_id, kind, &event_id, body.thread_id.as_deref()).await?;
            if kind == READ {
                s.federation.send_read_receipt(
                    &s.rooms,
                    &room_id,
                    &who.user_id,
                    &event_id,
                    body.thread_id.as_deref(),
                )?;
            }
        }
        "m.fully_read" => set_fully_read(s, who, &room_id, &event_id).await?,
        other => return Err(Error::invalid_param(format!("Unknown receipt type {other:?}"))),
    }
    Ok(Response::empty_object())
}

/// A receipt's `thread_id`: `main` or the root of the event's thread, and
/// only on read receipts (spec: `receipts.yaml`, 400 `M_INVALID_PARAM`).
fn check_thread_id(s: &Services, kind: &str, event_id: &EventId, thread_id: &str) -> Result<()> {
    if kind != READ && kind != READ_PRIVATE {
        return Err(Error::invalid_param(format!("thread_id cannot be given for {kind} receipts")));
    }
    if thread_id == "main" {
        return Ok(());
    }
    let root = EventId::parse(thread_id)
        .map_err(|_| Error::invalid_param("thread_id must be \"main\" or the event id of a thread root"))?;
    if root == event_id {
        return Ok(());
    }
    let (pdu, _) = s.rooms.get_pdu(event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
    let content: serde_json::Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
    match relation_of(&content) {
        Some((rel_type, parent)) if rel_type == "m.thread" && parent == root.as_str() => Ok(()),
        _ => Err(Error::invalid_param(format!("{event_id} is not in the thread {root}"))),
    }
}

#[derive(Debug, Deserialize)]
struct MarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

pub async fn read_markers(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let body: MarkersBody = request.json()?;
    if let Some(event) = &body.fully_read {
        let event_id = readable_event(s, &room_id, who, event)?;
        set_fully_read(s, who, &room_id, &event_id).await?;
    }
    for (kind, event) in [(READ, &body.read), (READ_PRIVATE, &body.read_private)] {
        if let Some(event) = event {
            let event_id = readable_event(s, &room_id, who, event)?;
            s.rooms.set_receipt(&room_id, &who.user_id, kind, &event_id, None).await?;
            if kind == READ {
                s.federation.send_read_receipt(&s.rooms, &room_id, &who.user_id, &event_id, None)?;
            }
        }
    }
    Ok(Response::empty_object())
}
