//! Space hierarchies and room previews: who may see a room's summary, and
//! the depth-first walk of `m.space.child` events.
//!
//! Spec: client-server API "Spaces" (`GET /rooms/{roomId}/hierarchy`) and
//! "Room summary" (`GET /room_summary/{roomIdOrAlias}`). A room is shown to
//! a user who is joined or invited, or who could join (public, or
//! restricted to a room they are in), or knock, or when its history is
//! world-readable. Children are ordered by their `order` field, then the
//! child event's timestamp, then room id; unknown (remote) rooms are skipped
//! until federation exists.

use super::Membership;
use crate::events::kinds;
use std::collections::HashSet;

use ruma::{state_res::Event, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

use super::{content_string, Rooms};
use crate::error::Result;

/// One room of a walk, as the hierarchy endpoint lists it.
pub struct HierarchyRoom {
    pub summary: Value,
}

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
    fn space_children(&self, room_id: &RoomId) -> Result<Vec<(OwnedRoomId, bool, Value)>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        let mut children = Vec::new();
        for pdu in self.state_events_in(&state)? {
            if pdu.kind().to_string() != kinds::SPACE_CHILD {
                continue;
            }
            let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
            let has_via = content["via"].as_array().is_some_and(|via| !via.is_empty());
            let Some(child) = pdu.state_key_str().and_then(|key| RoomId::parse(key).ok()) else { continue };
            if !has_via {
                continue;
            }
            let order = content["order"]
                .as_str()
                .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
                .map(str::to_owned);
            let suggested = content["suggested"].as_bool().unwrap_or(false);
            let ts: u64 = pdu.origin_server_ts().get().into();
            let stripped = json!({
                "type": kinds::SPACE_CHILD,
                "state_key": child,
                "sender": pdu.sender_str(),
                "content": content,
                "origin_server_ts": ts,
            });
            children.push((order, ts, child, suggested, stripped));
        }
        // Rooms with an `order` first (by order), then by timestamp, then id.
        children.sort_by(|a, b| (a.0.is_none(), &a.0, a.1, &a.2).cmp(&(b.0.is_none(), &b.0, b.1, &b.2)));
        Ok(children.into_iter().map(|(_, _, child, suggested, stripped)| (child, suggested, stripped)).collect())
    }

    /// The rooms of the space tree under `root` that `user_id` may see,
    /// depth-first, down to `max_depth`, following only suggested children
    /// when asked; each room at most once.
    pub fn hierarchy(
        &self,
        root: &RoomId,
        user_id: &UserId,
        max_depth: Option<u64>,
        suggested_only: bool,
    ) -> Result<Vec<HierarchyRoom>> {
        let mut rooms = Vec::new();
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        let mut stack: Vec<(OwnedRoomId, u64)> = vec![(root.to_owned(), 0)];
        while let Some((room_id, depth)) = stack.pop() {
            if !seen.insert(room_id.clone()) || !self.may_preview(&room_id, user_id)? {
                continue;
            }
            let Some(mut summary) = self.room_summary(&room_id)? else { continue };
            let children = self.space_children(&room_id)?;
            summary["children_state"] = Value::Array(children.iter().map(|(_, _, s)| s.clone()).collect());
            rooms.push(HierarchyRoom { summary });
            if max_depth.is_some_and(|max| depth >= max) {
                continue;
            }
            for (child, suggested, _) in children.into_iter().rev() {
                if !suggested_only || suggested {
                    stack.push((child, depth + 1));
                }
            }
        }
        Ok(rooms)
    }
}
