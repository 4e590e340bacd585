//! Room aliases.
//!
//! Spec: client-server API "Room aliases": `PUT`/`GET`/`DELETE
//! /directory/room/{roomAlias}` and `GET /rooms/{roomId}/aliases`. Only aliases
//! of this server can be created or resolved for now.

use ruma::{OwnedRoomAliasId, RoomAliasId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::kinds;
use crate::rooms::{EventRequest, Membership};
use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

fn local_alias(s: &Services, request: &Request) -> Result<OwnedRoomAliasId> {
    let alias =
        RoomAliasId::parse(request.param("room_alias")?).map_err(|_| Error::invalid_param("Room alias invalid"))?;
    if alias.server_name() != s.config.server_name {
        return Err(Error::invalid_param("Only aliases of this server can be managed here"));
    }
    Ok(alias)
}

#[derive(Debug, Deserialize)]
struct CreateAliasBody {
    room_id: String,
}

pub async fn create(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let alias = local_alias(s, request)?;
    let body: CreateAliasBody = request.json()?;
    let room_id = ruma::RoomId::parse(&body.room_id).map_err(|_| Error::invalid_param("Invalid room id"))?;
    if s.rooms.membership(&room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(Error::forbidden("You must be in the room to give it an alias"));
    }
    s.rooms.create_alias(&alias, &room_id, &who.user_id).await?;
    Ok(Response::empty_object())
}

pub async fn resolve(s: &Services, request: &Request) -> Result<Response> {
    let alias =
        RoomAliasId::parse(request.param("room_alias")?).map_err(|_| Error::invalid_param("Room alias invalid"))?;
    if alias.server_name() != s.config.server_name {
        let (room_id, servers) = s.federation.resolve_remote_alias(&alias).await?;
        return Ok(Response::json(&json!({ "room_id": room_id, "servers": servers })));
    }
    let room_id =
        s.rooms.resolve_alias(&alias)?.ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    Ok(Response::json(&json!({ "room_id": room_id, "servers": [s.config.server_name] })))
}

/// The alias's creator, a server admin, or someone allowed to change the
/// room's canonical alias may delete it.
pub async fn delete(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let alias = local_alias(s, request)?;
    let room_id = s.rooms.resolve_alias(&alias)?.ok_or_else(|| Error::not_found("Room alias not found"))?;
    let is_creator = s.rooms.alias_creator(&alias)?.as_deref() == Some(who.user_id.as_str());
    if !is_creator && !who.is_admin && !may_set_canonical_alias(s, &room_id, who)? {
        return Err(Error::forbidden("You may not delete this alias"));
    }
    s.rooms.delete_alias(&alias).await?;
    drop_from_canonical_alias(s, &room_id, &alias, who).await;
    Ok(Response::empty_object())
}

/// A deleted alias leaves the room's `m.room.canonical_alias` too (as
/// Synapse does), sent by the user who deleted it when they may; when they
/// may not, the event keeps naming it (logged).
async fn drop_from_canonical_alias(s: &Services, room_id: &ruma::RoomId, alias: &ruma::RoomAliasId, who: &Identity) {
    let updated = async {
        let Some(room) = s.rooms.room(room_id)? else { return Ok(false) };
        let state = s.rooms.current_state(&room)?;
        let Some(event) = s.rooms.state_event_in(&state, kinds::CANONICAL_ALIAS, "")? else { return Ok(false) };
        let mut content: Value = serde_json::from_str(event.content_json()).unwrap_or_else(|_| json!({}));
        let mut changed = false;
        if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            content.as_object_mut().map(|fields| fields.remove("alias"));
            changed = true;
        }
        if let Some(alternatives) = content.get_mut("alt_aliases").and_then(Value::as_array_mut) {
            let before = alternatives.len();
            alternatives.retain(|other| other.as_str() != Some(alias.as_str()));
            changed |= alternatives.len() != before;
        }
        if !changed {
            return Ok(false);
        }
        let event = EventRequest::state(kinds::CANONICAL_ALIAS, "", content);
        s.rooms.append(room_id, &who.user_id, event, None).await.map(|_| true)
    };
    if let Err(error) = updated.await {
        tracing::info!(%error, room = %room_id, alias = %alias, "the canonical alias event still names a deleted alias");
    }
}

fn may_set_canonical_alias(s: &Services, room_id: &ruma::RoomId, who: &Identity) -> Result<bool> {
    let Some(room) = s.rooms.room(room_id)? else { return Ok(false) };
    let state = s.rooms.current_state(&room)?;
    let rules = crate::events::room_version::rules(
        &ruma::RoomVersionId::try_from(room.version.as_str()).map_err(|e| Error::internal("room version", e))?,
    )?;
    let levels = s.rooms.power_levels(&state, &rules)?;
    Ok(s.rooms.membership(room_id, &who.user_id)? == Some(Membership::Join)
        && levels.may_send_state(&who.user_id, kinds::CANONICAL_ALIAS))
}

pub fn list(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    if s.rooms.membership(&room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(Error::forbidden("You are not a member of the room"));
    }
    Ok(Response::json(&json!({ "aliases": s.rooms.local_aliases(&room_id)? })))
}
