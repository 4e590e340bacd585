//! Space hierarchies and room previews: who may see a room's summary, and
//! the depth-first walk of `m.space.child` events.
//!
//! Spec: client-server API "Spaces" (`GET /rooms/{roomId}/hierarchy`) and
//! "Room summary" (`GET /room_summary/{roomIdOrAlias}`). A room is shown to
//! a user who is joined or invited, or who could join (public, or
//! restricted to a room they are in), or knock, or when its history is
//! world-readable. Children are ordered by their `order` field, then the
//! child event's timestamp, then room id. The walk itself, which asks other
//! servers about rooms not held here, is [`crate::federation::hierarchy`].

use super::Membership;
use crate::events::kinds;

use ruma::{state_res::Event, OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::{content_string, Rooms};
use crate::error::Result;

impl Rooms {
    /// Whether `user_id` may see the summary of `room_id` (the spec's list).
    pub fn may_preview(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        let state = self.current_state(&room)?;
        match self.membership_in(&state, user_id)? {
            Some(Membership::Join | Membership::Invite) => return Ok(true),
            Some(Membership::Ban) => return Ok(false),
            _ => {}
        }
        let history = self.state_event_in(&state, kinds::HISTORY_VISIBILITY, "")?;
        if history.and_then(|pdu| content_string(&pdu, "history_visibility")).as_deref() == Some("world_readable") {
            return Ok(true);
        }
        let Some(rules) = self.state_event_in(&state, kinds::JOIN_RULES, "")? else { return Ok(false) };
        let content: Value = serde_json::from_str(rules.content_json()).unwrap_or_default();
        match content["join_rule"].as_str() {
            Some("public" | "knock" | "knock_restricted") => Ok(true),
            Some("restricted") => {
                let allowed = content["allow"].as_array().into_iter().flatten().filter_map(|a| a["room_id"].as_str());
                for allowed_room in allowed.filter_map(|id| RoomId::parse(id).ok()) {
                    if self.membership(&allowed_room, user_id)? == Some(Membership::Join) {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The `m.space.child` events of a room with a non-empty `via`, in the
    /// spec's order, as stripped state with `origin_server_ts`.
    pub fn space_children(&self, room_id: &RoomId) -> Result<Vec<SpaceChild>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        let mut children = Vec::new();
        for pdu in self.state_events_in(&state)? {
            if pdu.kind().to_string() != kinds::SPACE_CHILD {
                continue;
            }
            let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
            let ts: u64 = pdu.origin_server_ts().get().into();
            let stripped = json!({
                "type": kinds::SPACE_CHILD,
                "state_key": pdu.state_key_str(),
                "sender": pdu.sender_str(),
                "content": content,
                "origin_server_ts": ts,
            });
            children.extend(SpaceChild::from_stripped(&stripped));
        }
        Ok(order_children(children))
    }

    /// Whether another server could peek into or join `room_id` (what the
    /// federation hierarchy shows it): it is in the room, the history is
    /// world-readable, anyone may join or knock, or the room is restricted
    /// to a room that server is in.
    pub fn may_server_preview(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        if self.server_in_room(&room, server)? || self.is_world_readable(&room)? {
            return Ok(true);
        }
        let state = self.current_state(&room)?;
        let Some(rules) = self.state_event_in(&state, kinds::JOIN_RULES, "")? else { return Ok(false) };
        let content: Value = serde_json::from_str(rules.content_json()).unwrap_or_default();
        match content["join_rule"].as_str() {
            Some("public" | "knock" | "knock_restricted") => Ok(true),
            Some("restricted") => {
                for allowed in self.restricted_to(room_id)? {
                    if let Some(allowed_room) = self.room(&allowed)? {
                        if self.server_in_room(&allowed_room, server)? {
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The rooms a restricted (or knock-restricted) room lets the members of join.
    pub fn restricted_to(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomId>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        let Some(rules) = self.state_event_in(&state, kinds::JOIN_RULES, "")? else { return Ok(Vec::new()) };
        let content: Value = serde_json::from_str(rules.content_json()).unwrap_or_default();
        if !matches!(content["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Ok(Vec::new());
        }
        Ok(content["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|allow| allow["type"] == "m.room_membership")
            .filter_map(|allow| allow["room_id"].as_str().and_then(|id| RoomId::parse(id).ok()))
            .collect())
    }
}

/// A child of a space, from its `m.space.child` event.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    pub suggested: bool,
    /// The servers to ask about the room.
    pub via: Vec<OwnedServerName>,
    /// The event as stripped state with `origin_server_ts`.
    pub stripped: Value,
    order: Option<String>,
    ts: u64,
}

impl SpaceChild {
    /// A child from its stripped `m.space.child` event; `None` for an event
    /// that names no room or no server (the spec: such children are ignored).
    pub fn from_stripped(stripped: &Value) -> Option<Self> {
        if stripped["type"] != kinds::SPACE_CHILD {
            return None;
        }
        let room_id = stripped["state_key"].as_str().and_then(|key| RoomId::parse(key).ok())?;
        let content = &stripped["content"];
        let via: Vec<OwnedServerName> = content["via"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|server| server.as_str().and_then(|s| ServerName::parse(s).ok()))
            .collect();
        if via.is_empty() {
            return None;
        }
        let order = content["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
            .map(str::to_owned);
        Some(Self {
            room_id,
            suggested: content["suggested"].as_bool().unwrap_or(false),
            via,
            stripped: stripped.clone(),
            order,
            ts: stripped["origin_server_ts"].as_u64().unwrap_or(0),
        })
    }
}

/// Children in the spec's order: those with an `order` first (by order),
/// then by the event's timestamp, then by room id.
pub fn order_children(children: impl IntoIterator<Item = SpaceChild>) -> Vec<SpaceChild> {
    let mut children: Vec<SpaceChild> = children.into_iter().collect();
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(b.order.is_none(), &b.order, b.ts, &b.room_id))
    });
    children
}
