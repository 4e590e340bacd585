//! Space hierarchies across servers.
//!
//! Spec: server-server API "Spaces" (`GET /_matrix/federation/v1/hierarchy/{roomId}`)
//! and client-server API "Spaces" (`GET /rooms/{roomId}/hierarchy`).
//!
//! Served: a room this server holds, to a server that could peek or join it
//! (in the room already, world-readable history, a public or knock join
//! rule, or restricted to a room that server is in), with its space
//! children: those it could reach as summaries, the others listed as
//! inaccessible. Rooms this server does not hold are left out.
//!
//! Walked for a local user: the depth-first walk of [`crate::rooms::hierarchy`],
//! where a child room this server does not hold is asked of the servers
//! its `m.space.child` event names (`via`), at most [`MAX_REMOTE_ROOMS`]
//! per walk and none after [`WALK_TIME`]; what an answer says of the room's own children is used
//! without asking again. A remote room is shown to the user as the spec's
//! preview rules say, from its summary (world-readable, public or knock
//! join rule, or restricted to a room the user is joined to here).

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::Federation;
use crate::{
    error::{Error, Result},
    rooms::{hierarchy::SpaceChild, Membership, Rooms},
};

/// Remote rooms asked about in one walk, at most.
const MAX_REMOTE_ROOMS: usize = 50;
/// Servers tried per remote room.
const MAX_VIA: usize = 3;
/// After this long, a walk asks no more servers (what it has is shown).
const WALK_TIME: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `origin`.
pub fn serve(rooms: &Rooms, origin: &ServerName, room_id: &RoomId, suggested_only: bool) -> Result<Value> {
    let not_found = || Error::not_found("This server has no such room you may see");
    if !rooms.may_server_preview(room_id, origin)? {
        return Err(not_found());
    }
    let mut room = rooms.room_summary(room_id)?.ok_or_else(not_found)?;
    let children = rooms.space_children(room_id)?;
    room["children_state"] = Value::Array(children.iter().map(|child| child.stripped.clone()).collect());
    add_allowed_rooms(rooms, room_id, &mut room)?;
    let mut summaries = Vec::new();
    let mut inaccessible = Vec::new();
    for child in children.iter().filter(|child| !suggested_only || child.suggested) {
        let Some(mut summary) = rooms.room_summary(&child.room_id)? else { continue };
        if !rooms.may_server_preview(&child.room_id, origin)? {
            inaccessible.push(child.room_id.clone());
            continue;
        }
        let grandchildren = rooms.space_children(&child.room_id)?;
        summary["children_state"] = Value::Array(grandchildren.into_iter().map(|child| child.stripped).collect());
        add_allowed_rooms(rooms, &child.room_id, &mut summary)?;
        summaries.push(summary);
    }
    Ok(json!({ "room": room, "children": summaries, "inaccessible_children": inaccessible }))
}

/// `allowed_room_ids` of a restricted room (what the asking server filters on).
fn add_allowed_rooms(rooms: &Rooms, room_id: &RoomId, summary: &mut Value) -> Result<()> {
    let allowed = rooms.restricted_to(room_id)?;
    if !allowed.is_empty() {
        summary["allowed_room_ids"] = json!(allowed);
    }
    Ok(())
}

/// One room of a walk: its summary, its children, where it came from.
struct Node {
    summary: Value,
    children: Vec<SpaceChild>,
}

/// The walk of a space tree for `user_id` (see the module documentation).
pub async fn walk(
    federation: &Federation,
    rooms: &Rooms,
    root: &RoomId,
    user_id: &UserId,
    max_depth: Option<u64>,
    suggested_only: bool,
) -> Result<Vec<Value>> {
    let mut shown = Vec::new();
    let mut seen: HashSet<OwnedRoomId> = HashSet::new();
    // What remote answers said of rooms not asked about yet (their children's summaries).
    let mut known_remote: HashMap<OwnedRoomId, Value> = HashMap::new();
    let mut remote_asked = 0;
    let started = std::time::Instant::now();
    let mut stack: Vec<(OwnedRoomId, Vec<OwnedServerName>, u64)> = vec![(root.to_owned(), Vec::new(), 0)];
    while let Some((room_id, via, depth)) = stack.pop() {
        if !seen.insert(room_id.clone()) {
            continue;
        }
        let node = if rooms.room(&room_id)?.is_some() {
            local_node(rooms, &room_id, user_id)?
        } else if let Some(summary) = known_remote.remove(&room_id) {
            remote_node(rooms, summary, user_id)?
        } else if remote_asked < MAX_REMOTE_ROOMS && !via.is_empty() && started.elapsed() < WALK_TIME {
            remote_asked += 1;
            match federation.ask_hierarchy(&room_id, &via, suggested_only).await {
                Some(answer) => {
                    for child in answer["children"].as_array().into_iter().flatten() {
                        if let Some(id) = child["room_id"].as_str().and_then(|id| RoomId::parse(id).ok()) {
                            known_remote.entry(id).or_insert_with(|| child.clone());
                        }
                    }
                    remote_node(rooms, answer["room"].clone(), user_id)?
                }
                None => None,
            }
        } else {
            None
        };
        let Some(node) = node else { continue };
        shown.push(node.summary);
        if max_depth.is_some_and(|max| depth >= max) {
            continue;
        }
        for child in node.children.into_iter().rev() {
            if !suggested_only || child.suggested {
                stack.push((child.room_id, child.via, depth + 1));
            }
        }
    }
    Ok(shown)
}

/// A room held here, if the user may see it.
fn local_node(rooms: &Rooms, room_id: &RoomId, user_id: &UserId) -> Result<Option<Node>> {
    if !rooms.may_preview(room_id, user_id)? {
        return Ok(None);
    }
    let Some(mut summary) = rooms.room_summary(room_id)? else { return Ok(None) };
    let children = rooms.space_children(room_id)?;
    summary["children_state"] = Value::Array(children.iter().map(|child| child.stripped.clone()).collect());
    Ok(Some(Node { summary, children }))
}

/// A room another server described, if the user may see it.
fn remote_node(rooms: &Rooms, mut summary: Value, user_id: &UserId) -> Result<Option<Node>> {
    if summary["room_id"].as_str().and_then(|id| RoomId::parse(id).ok()).is_none() {
        return Ok(None);
    }
    if !user_may_preview_remote(rooms, &summary, user_id)? {
        return Ok(None);
    }
    let states: Vec<Value> = summary["children_state"].as_array().cloned().unwrap_or_default();
    let children = crate::rooms::hierarchy::order_children(states.iter().filter_map(SpaceChild::from_stripped));
    if let Some(object) = summary.as_object_mut() {
        // What the walk needs, not the client.
        object.remove("allowed_room_ids");
        object.insert("children_state".into(), Value::Array(children.iter().map(|c| c.stripped.clone()).collect()));
    }
    Ok(Some(Node { summary, children }))
}

/// The spec's preview rules on a summary another server gave.
fn user_may_preview_remote(rooms: &Rooms, summary: &Value, user_id: &UserId) -> Result<bool> {
    if summary["world_readable"] == true {
        return Ok(true);
    }
    match summary["join_rule"].as_str() {
        Some("public" | "knock") => Ok(true),
        Some("restricted" | "knock_restricted") => {
            if summary["join_rule"] == "knock_restricted" {
                return Ok(true);
            }
            let allowed = summary["allowed_room_ids"].as_array().into_iter().flatten();
            for room_id in allowed.filter_map(|id| id.as_str().and_then(|id| RoomId::parse(id).ok())) {
                if rooms.membership(&room_id, user_id)? == Some(Membership::Join) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

impl Federation {
    /// `/hierarchy/{roomId}` of the first of `via` that answers.
    async fn ask_hierarchy(&self, room_id: &RoomId, via: &[OwnedServerName], suggested_only: bool) -> Option<Value> {
        let path = format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
            crate::http::request::percent_encode(room_id.as_str())
        );
        for server in via.iter().filter(|server| **server != self.server_name).take(MAX_VIA) {
            match self.request(server, "GET", &path, None).await {
                Ok(answer) if answer["room"]["room_id"] == room_id.as_str() => return Some(answer),
                Ok(_) => tracing::debug!(%server, room = %room_id, "a hierarchy answer about another room"),
                Err(error) => tracing::debug!(%server, room = %room_id, %error, "no hierarchy from this server"),
            }
        }
        None
    }
}
