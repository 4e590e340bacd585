//! Room creation and the list of joined rooms.
//!
//! Spec: client-server API "Creation" (`POST /createRoom`) and
//! `GET /joined_rooms`. The request is checked here; what the room starts
//! with is planned by [`crate::rooms::creation`].

use ruma::{OwnedUserId, RoomAliasId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    events::room_version,
    http::{Request, Response},
    rooms::creation::{self, NewRoom, Preset},
    services::Services,
    users::Identity,
};

#[derive(Debug, Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
    creation_content: Option<Map<String, Value>>,
    power_level_content_override: Option<Map<String, Value>>,
    #[serde(default)]
    is_direct: bool,
    preset: Option<String>,
    room_version: Option<String>,
}

/// Longest room name accepted (as other servers do).
const MAX_NAME_BYTES: usize = 255;

pub async fn create_room(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: CreateRoomBody = request.json()?;
    let version = match &body.room_version {
        Some(version) => room_version::parse_creatable(version)?,
        None => room_version::parse_creatable(&s.config.default_room_version)?,
    };
    let rules = room_version::rules(&version)?;
    let alias = match &body.room_alias_name {
        Some(name) => {
            // As other servers do, no whitespace or colon in the localpart.
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
                return Err(Error::invalid_param("Invalid room alias name"));
            }
            let alias = RoomAliasId::parse(format!("#{name}:{}", s.config.server_name))
                .map_err(|_| Error::invalid_param("Invalid room alias name"))?;
            if s.rooms.resolve_alias(&alias)?.is_some() {
                return Err(Error::new(ErrorKind::RoomInUse, format!("Room alias {alias} is already in use")));
            }
            Some(alias)
        }
        None => None,
    };
    let preset = Preset::choose(body.preset.as_deref(), body.visibility.as_deref())?;
    let (local_invitees, remote_invitees) = invitees(s, &body.invite)?;
    if body.name.as_ref().is_some_and(|name| name.len() > MAX_NAME_BYTES) {
        return Err(Error::invalid_param(format!("The room name is longer than {MAX_NAME_BYTES} bytes")));
    }
    let mut new_room = NewRoom {
        creator: who.user_id.clone(),
        creator_member_content: super::profile::join_content(s, who)?,
        preset,
        invitees: local_invitees,
        remote_invitees: remote_invitees.clone(),
        is_direct: body.is_direct,
        alias: alias.clone(),
        name: body.name,
        topic: body.topic,
        initial_state: body
            .initial_state
            .into_iter()
            .map(|state| (state.kind, state.state_key, Value::Object(state.content)))
            .collect(),
        creation_content: body.creation_content.unwrap_or_default(),
        power_level_override: body.power_level_content_override,
    };
    let published = body.visibility.as_deref() == Some("public");
    // The public-sector rules check the request and shape the room, unless the creator bypasses them.
    let shaped_by = match &s.policy {
        Some(policy) if policy.shape_new_room(&mut new_room, published)? => {
            Some((policy, crate::policy::creation::is_public(&new_room)))
        }
        _ => None,
    };
    let mut plan = creation::plan(new_room, &rules)?;
    if let Some((policy, public)) = shaped_by {
        policy.shape_plan(&mut plan, public);
    }
    let room_id =
        s.rooms.create_room(&who.user_id, &version, plan.create_content, alias.as_deref(), plan.events).await?;
    tracing::info!(room = %room_id, version = %version, "room created");
    if published {
        s.rooms.set_published(&room_id, true).await?;
    }
    // Other servers' users are invited once the room exists, each through
    // their server (which signs the invite); a failure is the request's
    // error, as in Synapse (the room stays).
    for invitee in remote_invitees {
        let mut content = json!({ "membership": "invite" });
        if body.is_direct {
            content["is_direct"] = json!(true);
        }
        super::membership::invite_remote(s, &room_id, &who.user_id, &invitee, content).await?;
    }
    Ok(Response::json(&json!({ "room_id": room_id })))
}

/// The invitees, parsed: this server's users, and other servers'.
fn invitees(s: &Services, invite: &[String]) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for user in invite {
        let user_id = UserId::parse(user).map_err(|_| Error::invalid_param(format!("{user:?} is not a user id")))?;
        if user_id.server_name() == s.config.server_name {
            local.push(user_id);
        } else {
            s.federation.check_federates_with(user_id.server_name().as_str())?;
            remote.push(user_id);
        }
    }
    Ok((local, remote))
}

pub fn joined_rooms(s: &Services, who: &Identity) -> Result<Response> {
    let rooms = s.rooms.joined_rooms(&who.localpart)?;
    Ok(Response::json(&json!({ "joined_rooms": rooms })))
}

/// The room version a client may use by default (for tests and capabilities).
pub fn default_version(s: &Services) -> Result<RoomVersionId> {
    room_version::parse_creatable(&s.config.default_room_version)
}
