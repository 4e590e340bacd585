//! Room creation and the list of joined rooms.
//!
//! Spec: client-server API "Creation" (`POST /createRoom`, with the event
//! order and presets of `data/api/client-server/create_room.yaml`) and
//! `GET /joined_rooms`.

use ruma::{RoomAliasId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    events::room_version,
    http::{Request, Response},
    rooms::EventRequest,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preset {
    Private,
    TrustedPrivate,
    Public,
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
    let preset = match (body.preset.as_deref(), body.visibility.as_deref()) {
        (Some("private_chat"), _) => Preset::Private,
        (Some("trusted_private_chat"), _) => Preset::TrustedPrivate,
        (Some("public_chat"), _) => Preset::Public,
        (Some(other), _) => return Err(Error::invalid_param(format!("Unknown preset {other:?}"))),
        (None, Some("public")) => Preset::Public,
        (None, None | Some("private")) => Preset::Private,
        (None, Some(other)) => return Err(Error::invalid_param(format!("Unknown visibility {other:?}"))),
    };
    if body.name.as_ref().is_some_and(|name| name.len() > MAX_NAME_BYTES) {
        return Err(Error::invalid_param(format!("The room name is longer than {MAX_NAME_BYTES} bytes")));
    }
    let invitees = local_invitees(s, &body.invite)?;

    let mut creation_content = body.creation_content.clone().unwrap_or_default();
    let trusted = preset == Preset::TrustedPrivate;
    if trusted && rules.authorization.additional_room_creators && !invitees.is_empty() {
        add_additional_creators(&mut creation_content, &invitees)?;
    }

    let mut events =
        vec![EventRequest::state("m.room.member", who.user_id.as_str(), super::profile::join_content(s, who)?)];
    let creators_are_implicit = rules.authorization.explicitly_privilege_room_creators;
    let power_levels = power_levels(
        &who.user_id,
        &invitees,
        preset,
        creators_are_implicit,
        body.power_level_content_override.as_ref(),
    );
    events.push(EventRequest::state("m.room.power_levels", "", power_levels));
    if let Some(alias) = &alias {
        events.push(EventRequest::state("m.room.canonical_alias", "", json!({ "alias": alias })));
    }
    let (join_rule, guest_access) = match preset {
        Preset::Public => ("public", "forbidden"),
        Preset::Private | Preset::TrustedPrivate => ("invite", "can_join"),
    };
    events.push(EventRequest::state("m.room.join_rules", "", json!({ "join_rule": join_rule })));
    events.push(EventRequest::state("m.room.history_visibility", "", json!({ "history_visibility": "shared" })));
    events.push(EventRequest::state("m.room.guest_access", "", json!({ "guest_access": guest_access })));
    for state in body.initial_state {
        events.push(EventRequest::state(&state.kind, &state.state_key, Value::Object(state.content)));
    }
    if let Some(name) = body.name {
        events.push(EventRequest::state("m.room.name", "", json!({ "name": name })));
    }
    if let Some(topic) = body.topic {
        events.push(EventRequest::state("m.room.topic", "", json!({ "topic": topic })));
    }
    for invitee in &invitees {
        let mut content = json!({ "membership": "invite" });
        if body.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(EventRequest::state("m.room.member", invitee.as_str(), content));
    }
    let room_id =
        s.rooms.create_room(&who.user_id, &version, Value::Object(creation_content), alias.as_deref(), events).await?;
    tracing::info!(room = %room_id, version = %version, "room created");
    if body.visibility.as_deref() == Some("public") {
        s.rooms.set_published(&room_id, true).await?;
    }
    Ok(Response::json(&json!({ "room_id": room_id })))
}

/// Parses the invitees; only users of this server can be invited for now.
fn local_invitees(s: &Services, invite: &[String]) -> Result<Vec<ruma::OwnedUserId>> {
    invite
        .iter()
        .map(|user| {
            let user_id =
                UserId::parse(user).map_err(|_| Error::invalid_param(format!("{user:?} is not a user id")))?;
            if user_id.server_name() != s.config.server_name {
                return Err(Error::invalid_param("Inviting users of other servers is not possible yet"));
            }
            Ok(user_id)
        })
        .collect()
}

fn add_additional_creators(content: &mut Map<String, Value>, invitees: &[ruma::OwnedUserId]) -> Result<()> {
    let entry = content.entry("additional_creators").or_insert_with(|| json!([]));
    let list = entry.as_array_mut().ok_or_else(|| Error::bad_json("additional_creators must be an array"))?;
    for invitee in invitees {
        let value = json!(invitee);
        if !list.contains(&value) {
            list.push(value);
        }
    }
    Ok(())
}

/// The default power levels of a new room, with the client's override merged
/// over the top-level keys.
fn power_levels(
    creator: &UserId,
    invitees: &[ruma::OwnedUserId],
    preset: Preset,
    creators_are_implicit: bool,
    override_content: Option<&Map<String, Value>>,
) -> Value {
    let mut users = Map::new();
    if !creators_are_implicit {
        users.insert(creator.to_string(), json!(100));
        if preset == Preset::TrustedPrivate {
            for invitee in invitees {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    // From room version 12 the tombstone must need more than state_default.
    let tombstone = if creators_are_implicit { 150 } else { 100 };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == Preset::Public { 50 } else { 0 },
        "notifications": { "room": 50 },
    });
    if let (Some(overrides), Some(map)) = (override_content, content.as_object_mut()) {
        for (key, value) in overrides {
            map.insert(key.clone(), value.clone());
        }
    }
    content
}

pub fn joined_rooms(s: &Services, who: &Identity) -> Result<Response> {
    let rooms = s.rooms.joined_rooms(&who.localpart)?;
    Ok(Response::json(&json!({ "joined_rooms": rooms })))
}

/// The room version a client may use by default (for tests and capabilities).
pub fn default_version(s: &Services) -> Result<RoomVersionId> {
    room_version::parse_creatable(&s.config.default_room_version)
}
