//! EDUs, the ephemeral events servers send each other (server-server API
//! "Typing Notifications", "Receipts", "Presence"): typing notifications,
//! read receipts and presence of local users sent to the other servers of
//! their rooms, and those of other servers' users received.
//!
//! Sending: queued in memory per destination (`sender::Sender`, at most 100
//! each, the oldest dropped) and carried by the destination's next
//! transaction. Receiving: an EDU about a user counts only if the user is of
//! the sending server and joined to the room, and the room's server ACL
//! allows that server; anything else is ignored. To-device messages
//! (`m.direct_to_device`) of the sending server's users reach this server's
//! users' devices, once per message id. Device-list and signing-key
//! updates of the sending server's users are noted in the key-change log.
//! Presence (server-server API "Presence"), only when it is on here: a local
//! user's change of state or message sent to the servers sharing a room
//! with the user; other servers' users' presence kept (bounded) and shown
//! to local users sharing a room with them.

use std::time::Duration;

use ruma::{OwnedEventId, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::Federation;
use crate::{
    error::Result,
    rooms::{typing::Typing, Membership, Rooms},
    users::presence::Presence,
};

/// How long a remote user's typing lasts without news (spec: servers
/// should send updates at least every so often).
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Presence updates read from one EDU.
const MAX_PRESENCE_PER_EDU: usize = 1000;

impl Federation {
    /// Queues `edu` for every other server with members in `room_id`.
    pub fn queue_edu(&self, rooms: &Rooms, room_id: &RoomId, edu: Value) -> Result<()> {
        let destinations = rooms.other_servers_in(room_id, &self.server_name)?;
        if destinations.is_empty() {
            return Ok(());
        }
        for destination in &destinations {
            self.sender.queue_edu(destination, edu.clone());
        }
        rooms.outbox_signal().mark(destinations);
        Ok(())
    }

    /// A local user's typing, for the room's other servers.
    pub fn send_typing(&self, rooms: &Rooms, room_id: &RoomId, user_id: &UserId, typing: bool) -> Result<()> {
        let edu =
            json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": user_id, "typing": typing } });
        self.queue_edu(rooms, room_id, edu)
    }

    /// A local user's public read receipt, for the room's other servers.
    pub fn send_read_receipt(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &ruma::EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        let mut data = json!({ "ts": crate::util::now_ms() });
        if let Some(thread_id) = thread_id {
            data["thread_id"] = json!(thread_id);
        }
        let content =
            json!({ room_id.as_str(): { "m.read": { user_id.as_str(): { "event_ids": [event_id], "data": data } } } });
        self.queue_edu(rooms, room_id, json!({ "edu_type": "m.receipt", "content": content }))
    }
}

impl Federation {
    /// A local user's presence, for every server sharing a room with the
    /// user (nothing when presence is off here).
    pub fn send_presence(&self, rooms: &Rooms, presence: &Presence, user_id: &UserId) -> Result<()> {
        if !presence.enabled() {
            return Ok(());
        }
        let mut servers = std::collections::BTreeSet::new();
        for room_id in rooms.joined_rooms(user_id.localpart())? {
            servers.extend(rooms.other_servers_in(&room_id, &self.server_name)?);
        }
        if servers.is_empty() {
            return Ok(());
        }
        let mut update = presence.content(user_id);
        update["user_id"] = json!(user_id);
        let edu = json!({ "edu_type": "m.presence", "content": { "push": [update] } });
        for server in &servers {
            self.sender.queue_edu(server, edu.clone());
        }
        rooms.outbox_signal().mark(servers);
        Ok(())
    }
}

/// Where received EDUs go.
#[derive(Clone, Copy)]
pub struct EduSinks<'a> {
    pub typing: &'a Typing,
    pub e2ee: &'a crate::e2ee::E2ee,
    pub presence: &'a Presence,
}

/// Applies the EDUs of `origin`'s transaction (what is not for us is ignored).
pub async fn receive(
    federation: &super::Federation,
    rooms: &Rooms,
    sinks: EduSinks<'_>,
    origin: &ServerName,
    edus: &[Value],
) {
    for edu in edus {
        let content = &edu["content"];
        let outcome = match edu["edu_type"].as_str() {
            Some("m.typing") => receive_typing(rooms, sinks.typing, origin, content),
            Some("m.receipt") => receive_receipts(rooms, origin, content).await,
            Some("m.direct_to_device") => receive_to_device(sinks.e2ee, origin, content).await,
            Some("m.presence") => receive_presence(sinks.presence, origin, content),
            Some(kind @ ("m.device_list_update" | "m.signing_key_update")) => {
                receive_key_change(federation, rooms, sinks.e2ee, origin, kind, content).await
            }
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::debug!(%origin, %error, edu_type = ?edu["edu_type"], "EDU ignored");
        }
    }
}

/// Whether `user` is `origin`'s, joined to `room_id`, and `origin` allowed by the room's ACL.
fn speaks_for_member(rooms: &Rooms, origin: &ServerName, room_id: &RoomId, user: &UserId) -> Result<bool> {
    if user.server_name() != origin || rooms.check_server_acl(room_id, origin).is_err() {
        return Ok(false);
    }
    Ok(rooms.membership(room_id, user)? == Some(Membership::Join))
}

fn receive_typing(rooms: &Rooms, typing: &Typing, origin: &ServerName, content: &Value) -> Result<()> {
    let room_id = content["room_id"].as_str().and_then(|id| RoomId::parse(id).ok());
    let user_id = content["user_id"].as_str().and_then(|id| UserId::parse(id).ok());
    let (Some(room_id), Some(user_id)) = (room_id, user_id) else { return Ok(()) };
    if !speaks_for_member(rooms, origin, &room_id, &user_id)? {
        return Ok(());
    }
    let is_typing = content["typing"].as_bool().unwrap_or(false);
    typing.set(&room_id, &user_id, is_typing, REMOTE_TYPING_TIMEOUT)
}

async fn receive_receipts(rooms: &Rooms, origin: &ServerName, content: &Value) -> Result<()> {
    let Some(by_room) = content.as_object() else { return Ok(()) };
    for (room_id, by_type) in by_room {
        let Ok(room_id) = RoomId::parse(room_id) else { continue };
        let Some(readers) = by_type.get("m.read").and_then(Value::as_object) else { continue };
        for (user_id, receipt) in readers {
            let Ok(user_id) = UserId::parse(user_id) else { continue };
            if !speaks_for_member(rooms, origin, &room_id, &user_id)? {
                continue;
            }
            // The latest of the events named, if this server holds it in that room.
            let event_ids = receipt["event_ids"].as_array().map(Vec::as_slice).unwrap_or_default();
            let named =
                event_ids.iter().rev().find_map(|id| id.as_str().and_then(|id| OwnedEventId::try_from(id).ok()));
            let Some(event_id) = named else { continue };
            let held = rooms.get_pdu(&event_id)?.is_some_and(|(_, stored)| stored.room_id == room_id.as_str());
            if !held {
                continue;
            }
            let thread = receipt["data"]["thread_id"].as_str();
            rooms.set_receipt(&room_id, &user_id, "m.read", &event_id, thread).await?;
        }
    }
    Ok(())
}

/// `m.presence`: `origin`'s users' presence (ignored when presence is off
/// here; shown to local users sharing a room with them, as `/sync` filters).
fn receive_presence(presence: &Presence, origin: &ServerName, content: &Value) -> Result<()> {
    for update in content["push"].as_array().into_iter().flatten().take(MAX_PRESENCE_PER_EDU) {
        let Some(user) = update["user_id"].as_str().and_then(|id| UserId::parse(id).ok()) else { continue };
        let Some(state) = update["presence"].as_str() else { continue };
        if user.server_name() != origin {
            continue;
        }
        let status_msg = update["status_msg"].as_str().map(str::to_owned);
        let ago = Duration::from_millis(update["last_active_ago"].as_u64().unwrap_or(0).min(u64::from(u32::MAX)));
        presence.set_remote(&user, state, status_msg, ago)?;
    }
    Ok(())
}

/// `m.direct_to_device`: messages of `origin`'s user for this server's users' devices.
async fn receive_to_device(e2ee: &crate::e2ee::E2ee, origin: &ServerName, content: &Value) -> Result<()> {
    let Some(sender) = content["sender"].as_str().and_then(|id| UserId::parse(id).ok()) else { return Ok(()) };
    if sender.server_name() != origin {
        return Ok(());
    }
    let (Some(event_type), Some(message_id)) = (content["type"].as_str(), content["message_id"].as_str()) else {
        return Ok(());
    };
    let messages: std::collections::BTreeMap<ruma::OwnedUserId, serde_json::Map<String, Value>> =
        serde_json::from_value(content["messages"].clone()).unwrap_or_default();
    e2ee.receive_remote_to_device(&sender, event_type, message_id, &messages).await
}

/// `m.device_list_update` / `m.signing_key_update`: `origin`'s user's keys
/// changed. The cached copy of the user's list is brought up to date (see
/// [`super::device_lists`]) and, when the user shares a room with a local
/// user, the change is noted in the key-change log, so local clients see it
/// in `/sync` (`device_lists.changed`) and ask again.
async fn receive_key_change(
    federation: &super::Federation,
    rooms: &Rooms,
    e2ee: &crate::e2ee::E2ee,
    origin: &ServerName,
    kind: &str,
    content: &Value,
) -> Result<()> {
    let Some(user) = content["user_id"].as_str().and_then(|id| UserId::parse(id).ok()) else { return Ok(()) };
    if user.server_name() != origin {
        return Ok(());
    }
    let noted = match kind {
        "m.signing_key_update" => federation.apply_signing_key_update(rooms, &user, content).await?,
        _ => federation.apply_device_list_update(rooms, &user, content).await?,
    };
    if noted {
        e2ee.note_remote_key_change(&user).await?;
    }
    Ok(())
}
