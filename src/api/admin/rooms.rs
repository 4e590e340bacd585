//! Rooms in the admin API, in Synapse's shapes (its "Room Admin API"):
//! `GET /_synapse/admin/v1/rooms` (`from`, `limit`, `order_by`, `dir`,
//! `search_term`), `GET /v1/rooms/{roomId}`, `/members`, `/state`,
//! `POST /v1/rooms/{roomId}/make_room_admin`, and the shutdown: `DELETE
//! /v2/rooms/{roomId}` with `GET /v2/rooms/{roomId}/delete_status` and
//! `GET /v2/rooms/delete_status/{deleteId}`.
//!
//! A shutdown makes every local member leave, moves them (invited, then
//! joined) into a new room where `new_room_user_id` posts `message`,
//! removes the room's local aliases and its directory entry, and with
//! `block` keeps local users out for good. It runs within the request, so
//! its status is complete (or failed) when the answer comes
//! ([`super::operations`]). With `purge` the room then leaves the database
//! ([`crate::rooms::Rooms::purge_room`]); as in Synapse, `purge` is on
//! unless the body turns it off.
//!
//! `POST /v1/purge_history/{roomId}` (and `…/{eventId}`) purges a room's old
//! history ([`crate::rooms::purge`]), with `GET /v1/purge_history_status/{purgeId}`.

use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::operations::Kind;
use crate::{
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    events::{kinds, room_version},
    http::{Request, Response},
    rooms::{
        admin::RoomOverview,
        creation::{self, NewRoom, Preset},
        purge::PurgeUpTo,
        EventRequest,
    },
    services::Services,
    users::Identity,
};

fn room_param(request: &Request) -> Result<OwnedRoomId> {
    let raw = request.param("room_id")?;
    RoomId::parse(raw).map_err(|_| Error::invalid_param(format!("{raw:?} is not a room id")))
}

fn overview(s: &Services, room_id: &RoomId) -> Result<RoomOverview> {
    s.rooms.overview(room_id)?.ok_or_else(|| Error::not_found("Room not found"))
}

/// `GET /_synapse/admin/v1/rooms`.
pub fn list(s: &Services, request: &Request) -> Result<Response> {
    let paging = super::Paging::of(request)?;
    let term = request.query("search_term").map(str::to_lowercase);
    let mut rooms = Vec::new();
    for room_id in s.rooms.all_room_ids()? {
        let Some(room) = s.rooms.overview(&room_id)? else { continue };
        let matches = term.as_ref().is_none_or(|term| {
            room.room_id.as_str().to_lowercase().contains(term.as_str())
                || room.name.as_ref().is_some_and(|name| name.to_lowercase().contains(term.as_str()))
                || room.canonical_alias.as_ref().is_some_and(|alias| alias.to_lowercase().contains(term.as_str()))
        });
        if matches {
            rooms.push(room);
        }
    }
    sort_rooms(&mut rooms, request.query("order_by").unwrap_or("name"))?;
    if request.query("dir") == Some("b") {
        rooms.reverse();
    }
    let total = rooms.len();
    let page: Vec<Value> = paging.page(&rooms).map(RoomOverview::to_json).collect();
    let mut body = json!({ "rooms": page, "offset": paging.from, "total_rooms": total });
    if let Some(next) = paging.next(total) {
        body["next_batch"] = json!(next);
    }
    if paging.from > 0 {
        body["prev_batch"] = json!(paging.from.saturating_sub(paging.limit));
    }
    Ok(Response::json(&body))
}

/// Synapse's orders: names alphabetically (rooms without one last), counts
/// largest first; ties by room id.
fn sort_rooms(rooms: &mut [RoomOverview], order_by: &str) -> Result<()> {
    use std::cmp::Reverse;
    let text = |value: &Option<String>| (value.is_none(), value.clone().unwrap_or_default().to_lowercase());
    match order_by {
        "name" | "alphabetical" => rooms.sort_by_key(|r| (text(&r.name), r.room_id.clone())),
        "canonical_alias" => rooms.sort_by_key(|r| (text(&r.canonical_alias), r.room_id.clone())),
        "joined_members" | "size" => rooms.sort_by_key(|r| (Reverse(r.joined_members), r.room_id.clone())),
        "joined_local_members" => rooms.sort_by_key(|r| (Reverse(r.joined_local_members), r.room_id.clone())),
        "version" => rooms.sort_by_key(|r| (Reverse(r.version.parse::<u32>().unwrap_or(0)), r.room_id.clone())),
        "creator" => rooms.sort_by_key(|r| (text(&r.creator), r.room_id.clone())),
        "encryption" => rooms.sort_by_key(|r| (text(&r.encryption), r.room_id.clone())),
        "federatable" => rooms.sort_by_key(|r| r.room_id.clone()),
        "public" => rooms.sort_by_key(|r| (Reverse(r.public), r.room_id.clone())),
        "join_rules" => rooms.sort_by_key(|r| (text(&r.join_rules), r.room_id.clone())),
        "guest_access" => rooms.sort_by_key(|r| (text(&r.guest_access), r.room_id.clone())),
        "history_visibility" => rooms.sort_by_key(|r| (text(&r.history_visibility), r.room_id.clone())),
        "state_events" => rooms.sort_by_key(|r| (Reverse(r.state_events), r.room_id.clone())),
        other => return Err(Error::invalid_param(format!("Unknown order_by {other:?}"))),
    }
    Ok(())
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`.
pub fn details(s: &Services, request: &Request) -> Result<Response> {
    let room_id = room_param(request)?;
    let mut body = overview(s, &room_id)?.to_json();
    body["topic"] = json!(room_text(s, &room_id, kinds::TOPIC, "topic")?);
    body["avatar"] = json!(room_text(s, &room_id, kinds::AVATAR, "url")?);
    body["blocked"] = json!(s.rooms.is_blocked(&room_id)?);
    Ok(Response::json(&body))
}

fn room_text(s: &Services, room_id: &RoomId, kind: &str, field: &str) -> Result<Option<String>> {
    let Some(room) = s.rooms.room(room_id)? else { return Ok(None) };
    let state = s.rooms.current_state(&room)?;
    Ok(s.rooms.state_event_in(&state, kind, "")?.and_then(|pdu| crate::rooms::content_string(&pdu, field)))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`.
pub fn members(s: &Services, request: &Request) -> Result<Response> {
    let room_id = room_param(request)?;
    let room = s.rooms.room(&room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let members = s.rooms.joined_members_in(s.rooms.current_state(&room)?.as_ref())?;
    Ok(Response::json(&json!({ "members": members, "total": members.len() })))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/state`.
pub fn state(s: &Services, request: &Request) -> Result<Response> {
    let room_id = room_param(request)?;
    let room = s.rooms.room(&room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let state = s.rooms.current_state(&room)?;
    let events: Vec<Value> =
        s.rooms.state_events_in(&state)?.iter().map(|pdu| crate::rooms::client_event(pdu, &room_id)).collect();
    Ok(Response::json(&json!({ "state": events })))
}

#[derive(Debug, Deserialize)]
struct MakeRoomAdmin {
    user_id: Option<String>,
}

/// `POST /_synapse/admin/v1/rooms/{roomId}/make_room_admin`: the local member
/// with the most power gives it to `user_id` (the admin by default), and
/// invites them first when they are not in the room.
pub async fn make_room_admin(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let room_id = room_param(request)?;
    let body: MakeRoomAdmin = request.json()?;
    let target: OwnedUserId = match &body.user_id {
        Some(user) => UserId::parse(user).map_err(|_| Error::invalid_param("user_id is not a user id"))?,
        None => admin.user_id.clone(),
    };
    if target.server_name() != s.config.server_name {
        return Err(Error::invalid_param("Only a local user can be made a room admin"));
    }
    let room = s.rooms.room(&room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let state = s.rooms.current_state(&room)?;
    let (_, rules) = crate::rooms::Rooms::rules_of(&room)?;
    let levels = s.rooms.power_levels(&state, &rules)?;
    let local_members = s.rooms.joined_members_in(&state)?;
    let granter = local_members
        .iter()
        .filter(|member| member.server_name() == s.config.server_name)
        .max_by_key(|member| levels.user(member))
        .cloned()
        .ok_or_else(|| Error::new(ErrorKind::BadRequest, "No local member of the room can grant power"))?;
    // A creator of a version 12 room has no bounded level: the target gets 100.
    let level = levels.user(&granter).min(100);
    let mut content = s
        .rooms
        .state_event_in(&state, kinds::POWER_LEVELS, "")?
        .and_then(|pdu| serde_json::from_str::<Value>(pdu.content_json()).ok())
        .unwrap_or_else(|| json!({}));
    content["users"][target.as_str()] = json!(level);
    s.rooms.append(&room_id, &granter, EventRequest::state(kinds::POWER_LEVELS, "", content), None).await?;
    if !local_members.contains(&target) {
        let invite = EventRequest::state(kinds::MEMBER, target.as_str(), json!({ "membership": "invite" }));
        s.rooms.append(&room_id, &granter, invite, None).await?;
    }
    tracing::info!(admin = %admin.user_id, room = %room_id, user = %target, level, "room admin granted");
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeleteRoom {
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
    #[serde(default)]
    block: bool,
    /// As Synapse: on unless turned off.
    #[serde(default = "crate::util::yes")]
    purge: bool,
}

impl Default for DeleteRoom {
    /// An empty body: Synapse's defaults.
    fn default() -> Self {
        Self { new_room_user_id: None, room_name: None, message: None, block: false, purge: true }
    }
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: shuts the room down; `{"delete_id"}`.
pub async fn delete(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let room_id = room_param(request)?;
    let body: DeleteRoom = if request.body.is_empty() { DeleteRoom::default() } else { request.json()? };
    if s.rooms.room(&room_id)?.is_none() && !body.block {
        return Err(Error::not_found("Room not found"));
    }
    let delete_id = random_alphanumeric(16);
    let started = crate::util::now_ms();
    let status = match shut_down_and_purge(s, &room_id, &body).await {
        Ok(result) => {
            json!({ "delete_id": delete_id, "room_id": room_id, "status": "complete", "shutdown_room": result })
        }
        Err(error) => json!({ "delete_id": delete_id, "room_id": room_id, "status": "failed", "error": error.message }),
    };
    tracing::warn!(admin = %admin.user_id, room = %room_id, status = %status["status"], "room shut down");
    s.admin_operations.record(Kind::Shutdown, &delete_id, &room_id, started, status);
    Ok(Response::json(&json!({ "delete_id": delete_id })))
}

/// The shutdown, then with `purge` every trace of the room removed.
async fn shut_down_and_purge(s: &Services, room_id: &RoomId, body: &DeleteRoom) -> Result<Value> {
    let result = shut_down(s, room_id, body).await?;
    if body.purge {
        let purged = s.rooms.purge_room(room_id).await?;
        tracing::info!(room = %room_id, purged, "room purged");
    }
    Ok(result)
}

async fn shut_down(s: &Services, room_id: &RoomId, body: &DeleteRoom) -> Result<Value> {
    if body.block {
        s.rooms.block(room_id).await?;
    }
    let Some(room) = s.rooms.room(room_id)? else {
        return Ok(json!({ "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [], "new_room_id": null }));
    };
    let members: Vec<OwnedUserId> = s
        .rooms
        .joined_members_in(s.rooms.current_state(&room)?.as_ref())?
        .into_iter()
        .filter(|member| member.server_name() == s.config.server_name)
        .collect();
    let new_room = match &body.new_room_user_id {
        Some(owner) => Some(notice_room(s, owner, body, &members).await?),
        None => None,
    };
    let (mut kicked, mut failed) = (Vec::new(), Vec::new());
    for member in &members {
        let leave = EventRequest::state(kinds::MEMBER, member.as_str(), json!({ "membership": "leave" }));
        match s.rooms.append(room_id, member, leave, None).await {
            Ok(_) => kicked.push(member.to_string()),
            Err(error) => {
                tracing::warn!(room = %room_id, user = %member, %error, "a member could not be made to leave");
                failed.push(member.to_string());
            }
        }
        if let Some(new_room) = &new_room {
            let join = EventRequest::state(kinds::MEMBER, member.as_str(), json!({ "membership": "join" }));
            if let Err(error) = s.rooms.append(new_room, member, join, None).await {
                tracing::warn!(room = %new_room, user = %member, %error, "a member could not join the notice room");
            }
        }
    }
    let aliases = s.rooms.local_aliases(room_id)?;
    for alias in &aliases {
        if let Ok(alias) = RoomAliasId::parse(alias) {
            s.rooms.delete_alias(&alias).await?;
        }
    }
    s.rooms.set_published(room_id, false).await?;
    Ok(
        json!({ "kicked_users": kicked, "failed_to_kick_users": failed, "local_aliases": aliases, "new_room_id": new_room }),
    )
}

/// The room the members of a shut-down room are moved to: created by
/// `owner`, who invites them and posts the message.
async fn notice_room(s: &Services, owner: &str, body: &DeleteRoom, members: &[OwnedUserId]) -> Result<OwnedRoomId> {
    let owner = UserId::parse(owner).map_err(|_| Error::invalid_param("new_room_user_id is not a user id"))?;
    if owner.server_name() != s.config.server_name || s.users.get_active(owner.localpart())?.is_none() {
        return Err(Error::invalid_param("new_room_user_id must be an active local user"));
    }
    let version = room_version::parse_creatable(&s.config.default_room_version)?;
    let rules = room_version::rules(&version)?;
    let new_room = NewRoom {
        creator: owner.clone(),
        creator_member_content: json!({ "membership": "join" }),
        preset: Preset::Private,
        invitees: members.iter().filter(|member| **member != owner).cloned().collect(),
        remote_invitees: Vec::new(),
        is_direct: false,
        alias: None,
        name: Some(body.room_name.clone().unwrap_or_else(|| "Content Violation Notification".to_owned())),
        topic: None,
        initial_state: Vec::new(),
        creation_content: Default::default(),
        power_level_override: Some(json!({ "events_default": 100 }).as_object().cloned().unwrap_or_default()),
    };
    let plan = creation::plan(new_room, &rules)?;
    let room_id = s.rooms.create_room(&owner, &version, plan.create_content, None, plan.events).await?;
    let message = body.message.clone().unwrap_or_else(|| {
        "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.".to_owned()
    });
    let event = EventRequest::message(kinds::MESSAGE, json!({ "msgtype": "m.text", "body": message }));
    s.rooms.append(&room_id, &owner, event, None).await?;
    Ok(room_id)
}

/// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`.
pub fn room_delete_status(s: &Services, request: &Request) -> Result<Response> {
    let room_id = room_param(request)?;
    let results = s.admin_operations.of_room(Kind::Shutdown, &room_id);
    if results.is_empty() {
        return Err(Error::not_found("No shutdown of this room"));
    }
    Ok(Response::json(&json!({ "results": results })))
}

/// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`.
pub fn delete_status(s: &Services, request: &Request) -> Result<Response> {
    let status = s
        .admin_operations
        .by_id(Kind::Shutdown, request.param("delete_id")?)
        .ok_or_else(|| Error::not_found("No such shutdown"))?;
    Ok(Response::json(&status))
}

#[derive(Debug, Deserialize, Default)]
struct PurgeHistory {
    #[serde(default)]
    delete_local_events: bool,
    purge_up_to_event_id: Option<String>,
    purge_up_to_ts: Option<u64>,
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`: `{"purge_id"}`.
pub async fn purge_history(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let room_id = room_param(request)?;
    let body: PurgeHistory = if request.body.is_empty() { PurgeHistory::default() } else { request.json()? };
    let event_id = request.optional_param("event_id").map(str::to_owned).or(body.purge_up_to_event_id);
    let up_to = match (event_id, body.purge_up_to_ts) {
        (Some(event_id), _) => PurgeUpTo::Event(
            event_id.parse().map_err(|_| Error::invalid_param(format!("{event_id:?} is not an event id")))?,
        ),
        (None, Some(ts)) => PurgeUpTo::Time(ts),
        (None, None) => return Err(Error::new(ErrorKind::MissingParam, "Give purge_up_to_event_id or purge_up_to_ts")),
    };
    if s.rooms.room(&room_id)?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    let purge_id = random_alphanumeric(16);
    let started = crate::util::now_ms();
    let status = match s.rooms.purge_history(&room_id, &up_to, body.delete_local_events).await {
        Ok(purged) => {
            tracing::warn!(admin = %admin.user_id, room = %room_id, purged, ?up_to, "room history purged");
            json!({ "status": "complete", "purged_events": purged })
        }
        Err(error) if error.status() < 500 => return Err(error),
        Err(error) => json!({ "status": "failed", "error": error.message }),
    };
    s.admin_operations.record(Kind::PurgeHistory, &purge_id, &room_id, started, status);
    Ok(Response::json(&json!({ "purge_id": purge_id })))
}

/// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`.
pub fn purge_status(s: &Services, request: &Request) -> Result<Response> {
    let status = s
        .admin_operations
        .by_id(Kind::PurgeHistory, request.param("purge_id")?)
        .ok_or_else(|| Error::not_found("No such purge"))?;
    Ok(Response::json(&status))
}
