//! Room upgrades.
//!
//! Spec: client-server API module "Room Upgrades", server behaviour: check
//! the power to send `m.room.tombstone`; create the replacement room with a
//! `predecessor` (and the old room's `type`); copy the transferable state;
//! move local aliases; tombstone the old room; restrict its power levels so
//! nobody talks or invites there any more.

use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    events::room_version,
    http::{Request, Response},
    rooms::EventRequest,
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

/// State copied to the replacement room (besides power levels, handled apart).
const TRANSFERRED: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

#[derive(Debug, Deserialize)]
struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

pub async fn upgrade(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let old_room = room_id_param(request, 0)?;
    let body: UpgradeBody = request.json()?;
    let version = room_version::parse_creatable(&body.new_version)?;
    let new_rules = room_version::rules(&version)?;
    let not_member = || Error::forbidden("You are not in this room");
    let room = s.rooms.room(&old_room)?.ok_or_else(not_member)?;
    if s.rooms.membership(&old_room, &who.user_id)?.as_deref() != Some("join") {
        return Err(not_member());
    }
    let old_rules = room_version::rules(
        &ruma::RoomVersionId::try_from(room.version.as_str()).map_err(|e| Error::internal("room version", e))?,
    )?;
    let state = s.rooms.current_state(&room)?;
    let needed = s.rooms.required_event_power(&state, "m.room.tombstone")?;
    if s.rooms.power_level(&state, &old_rules, &who.user_id)? < needed {
        return Err(Error::forbidden("Upgrading this room needs the power to send m.room.tombstone"));
    }
    let additional: Vec<OwnedUserId> = body
        .additional_creators
        .iter()
        .map(|user| UserId::parse(user).map_err(|_| Error::invalid_param(format!("{user:?} is not a user id"))))
        .collect::<Result<_>>()?;

    // The replacement room's create event.
    let old_create: Value = match s.rooms.state_event_in(&state, "m.room.create", "")? {
        Some(create) => serde_json::from_str(create.content_json()).unwrap_or_default(),
        None => Value::Null,
    };
    let mut create = json!({ "predecessor": { "room_id": old_room } });
    if let Some(kind) = old_create.get("type") {
        create["type"] = kind.clone();
    }
    if new_rules.authorization.additional_room_creators && !additional.is_empty() {
        create["additional_creators"] = json!(additional);
    }

    // Members are not copied; the upgrader joins, the rest follow the tombstone.
    let mut events = vec![EventRequest::state("m.room.member", who.user_id.as_str(), json!({ "membership": "join" }))];
    let power = s.rooms.state_event_in(&state, "m.room.power_levels", "")?;
    let mut power: Map<String, Value> =
        power.and_then(|p| serde_json::from_str(p.content_json()).ok()).unwrap_or_default();
    if new_rules.authorization.explicitly_privilege_room_creators {
        // Creators of the new room have unlimited power and may not be listed.
        if let Some(Value::Object(users)) = power.get_mut("users") {
            users.remove(who.user_id.as_str());
            for creator in &additional {
                users.remove(creator.as_str());
            }
        }
        let state_default = power.get("state_default").and_then(Value::as_i64).unwrap_or(50);
        let tombstone =
            power.get("events").and_then(|e| e.get("m.room.tombstone")).and_then(Value::as_i64).unwrap_or(0);
        if tombstone <= state_default {
            let events = power.entry("events").or_insert_with(|| json!({}));
            if let Some(events) = events.as_object_mut() {
                events.insert("m.room.tombstone".into(), json!(state_default + 50));
            }
        }
    } else if let Some(users) = power.entry("users").or_insert_with(|| json!({})).as_object_mut() {
        let highest = users.values().filter_map(Value::as_i64).max().unwrap_or(100).max(100);
        users.insert(who.user_id.to_string(), json!(highest));
    }
    events.push(EventRequest::state("m.room.power_levels", "", Value::Object(power)));
    for kind in TRANSFERRED {
        if let Some(event) = s.rooms.state_event_in(&state, kind, "")? {
            let content: Value = serde_json::from_str(event.content_json()).unwrap_or_default();
            events.push(EventRequest::state(kind, "", content));
        }
    }
    let new_room = s.rooms.create_room(&who.user_id, &version, create, None, events).await?;

    // Local aliases move, and the canonical alias with them.
    let aliases = s.rooms.local_aliases(&old_room)?;
    for alias in &aliases {
        let alias = ruma::RoomAliasId::parse(alias).map_err(|e| Error::internal("stored alias", e))?;
        s.rooms.delete_alias(&alias).await?;
        s.rooms.create_alias(&alias, &new_room, &who.user_id).await?;
    }
    if let Some(canonical) = s.rooms.state_event_in(&state, "m.room.canonical_alias", "")? {
        let content: Value = serde_json::from_str(canonical.content_json()).unwrap_or_default();
        let moved = EventRequest::state("m.room.canonical_alias", "", content);
        s.rooms.append(&new_room, &who.user_id, moved, None).await?;
        let cleared = EventRequest::state("m.room.canonical_alias", "", json!({}));
        s.rooms.append(&old_room, &who.user_id, cleared, None).await?;
    }

    let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
    s.rooms.append(&old_room, &who.user_id, EventRequest::state("m.room.tombstone", "", tombstone), None).await?;
    restrict_old_room(s, &old_room, who).await?;
    tracing::info!(old = %old_room, new = %new_room, version = %version, "room upgraded");
    Ok(Response::json(&json!({ "replacement_room": new_room })))
}

/// Raises `events_default` and `invite` in the old room to the greater of 50
/// and `users_default + 1`. Best effort: a refusal is logged, not returned.
async fn restrict_old_room(s: &Services, room_id: &ruma::RoomId, who: &Identity) -> Result<()> {
    let Some(room) = s.rooms.room(room_id)? else { return Ok(()) };
    let state = s.rooms.current_state(&room)?;
    let Some(power) = s.rooms.state_event_in(&state, "m.room.power_levels", "")? else { return Ok(()) };
    let mut content: Map<String, Value> = serde_json::from_str(power.content_json()).unwrap_or_default();
    let users_default = content.get("users_default").and_then(Value::as_i64).unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    content.insert("events_default".into(), json!(restricted));
    content.insert("invite".into(), json!(restricted));
    let event = EventRequest::state("m.room.power_levels", "", Value::Object(content));
    if let Err(error) = s.rooms.append(room_id, &who.user_id, event, None).await {
        tracing::warn!(room = %room_id, %error, "could not restrict the old room after an upgrade");
    }
    Ok(())
}
