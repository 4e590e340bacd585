//! What a new room starts with (pure): the create content and the first
//! events in the spec's order, for a preset.
//!
//! Spec: client-server API "Creation" (`POST /createRoom`,
//! `data/api/client-server/create_room.yaml`): `m.room.create`, the
//! creator's join, `m.room.power_levels` (the defaults, the preset's, then
//! `power_level_content_override`), `m.room.canonical_alias`, the preset's
//! join rules, history visibility and guest access, `initial_state`,
//! `m.room.name`, `m.room.topic`, then the invites. Room version 12: creators
//! are not listed in `users` (they outrank everyone), and
//! `trusted_private_chat` makes the invitees additional creators.

use crate::events::kinds;
use ruma::{room_version_rules::RoomVersionRules, OwnedRoomAliasId, OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::EventRequest;
use crate::error::{Error, Result};

/// The presets of `createRoom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Private,
    TrustedPrivate,
    Public,
}

impl Preset {
    /// The preset asked for, or the one `visibility` implies.
    pub fn choose(preset: Option<&str>, visibility: Option<&str>) -> Result<Self> {
        Ok(match (preset, visibility) {
            (Some("private_chat"), _) => Preset::Private,
            (Some("trusted_private_chat"), _) => Preset::TrustedPrivate,
            (Some("public_chat"), _) => Preset::Public,
            (Some(other), _) => return Err(Error::invalid_param(format!("Unknown preset {other:?}"))),
            (None, Some("public")) => Preset::Public,
            (None, None | Some("private")) => Preset::Private,
            (None, Some(other)) => return Err(Error::invalid_param(format!("Unknown visibility {other:?}"))),
        })
    }
}

/// A client's request, checked.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub creator: OwnedUserId,
    /// The creator's join content (with their profile).
    pub creator_member_content: Value,
    pub preset: Preset,
    /// Invitees of this server (invited by the plan's events).
    pub invitees: Vec<OwnedUserId>,
    /// Invitees of other servers: invited once the room exists (their
    /// server signs), but given the same power and creatorship here.
    pub remote_invitees: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub alias: Option<OwnedRoomAliasId>,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// `initial_state`: (type, state key, content).
    pub initial_state: Vec<(String, String, Value)>,
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
}

/// The create content and the events after it, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub create_content: Value,
    pub events: Vec<EventRequest>,
}

/// Plans a new room for the room version's `rules` (pure).
pub fn plan(room: NewRoom, rules: &RoomVersionRules) -> Result<Plan> {
    let mut creation_content = room.creation_content;
    let trusted = room.preset == Preset::TrustedPrivate;
    let all_invitees: Vec<OwnedUserId> = room.invitees.iter().chain(&room.remote_invitees).cloned().collect();
    if trusted && rules.authorization.additional_room_creators && !all_invitees.is_empty() {
        add_additional_creators(&mut creation_content, &all_invitees)?;
    }
    let creators_are_implicit = rules.authorization.explicitly_privilege_room_creators;
    let mut events = vec![EventRequest::state(kinds::MEMBER, room.creator.as_str(), room.creator_member_content)];
    let power = power_levels(
        &room.creator,
        &all_invitees,
        room.preset,
        creators_are_implicit,
        room.power_level_override.as_ref(),
    );
    events.push(EventRequest::state(kinds::POWER_LEVELS, "", power));
    if let Some(alias) = &room.alias {
        events.push(EventRequest::state(kinds::CANONICAL_ALIAS, "", json!({ "alias": alias })));
    }
    let (join_rule, guest_access) = match room.preset {
        Preset::Public => ("public", "forbidden"),
        Preset::Private | Preset::TrustedPrivate => ("invite", "can_join"),
    };
    events.push(EventRequest::state(kinds::JOIN_RULES, "", json!({ "join_rule": join_rule })));
    events.push(EventRequest::state(kinds::HISTORY_VISIBILITY, "", json!({ "history_visibility": "shared" })));
    events.push(EventRequest::state(kinds::GUEST_ACCESS, "", json!({ "guest_access": guest_access })));
    for (kind, state_key, content) in room.initial_state {
        events.push(EventRequest::state(&kind, &state_key, content));
    }
    if let Some(name) = room.name {
        events.push(EventRequest::state(kinds::NAME, "", json!({ "name": name })));
    }
    if let Some(topic) = room.topic {
        events.push(EventRequest::state(kinds::TOPIC, "", json!({ "topic": topic })));
    }
    for invitee in &room.invitees {
        let mut content = json!({ "membership": "invite" });
        if room.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(EventRequest::state(kinds::MEMBER, invitee.as_str(), content));
    }
    Ok(Plan { create_content: Value::Object(creation_content), events })
}

fn add_additional_creators(content: &mut Map<String, Value>, invitees: &[OwnedUserId]) -> Result<()> {
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
    invitees: &[OwnedUserId],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::room_version;
    use ruma::RoomVersionId;

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    fn new_room(preset: Preset) -> NewRoom {
        NewRoom {
            creator: user("@alice:example.org"),
            creator_member_content: json!({ "membership": "join", "displayname": "Alice" }),
            preset,
            invitees: vec![user("@bob:example.org")],
            remote_invitees: vec![],
            is_direct: true,
            alias: Some(OwnedRoomAliasId::try_from("#forum:example.org").unwrap()),
            name: Some("Forum".into()),
            topic: Some("Talk".into()),
            initial_state: vec![(
                "m.room.encryption".into(),
                String::new(),
                json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
            )],
            creation_content: Map::new(),
            power_level_override: None,
        }
    }

    fn kinds(plan: &Plan) -> Vec<&str> {
        plan.events.iter().map(|event| event.kind.as_str()).collect()
    }

    #[test]
    fn events_come_in_the_spec_order() {
        let plan = plan(new_room(Preset::Private), &room_version::rules(&RoomVersionId::V10).unwrap()).unwrap();
        assert_eq!(
            kinds(&plan),
            [
                "m.room.member",
                "m.room.power_levels",
                "m.room.canonical_alias",
                "m.room.join_rules",
                "m.room.history_visibility",
                "m.room.guest_access",
                "m.room.encryption",
                "m.room.name",
                "m.room.topic",
                "m.room.member",
            ]
        );
        assert_eq!(plan.events[9].content, json!({ "membership": "invite", "is_direct": true }));
        assert_eq!(plan.events[3].content["join_rule"], "invite");
        assert_eq!(plan.events[1].content["users"]["@alice:example.org"], 100);
    }

    #[test]
    fn remote_invitees_of_a_trusted_room_get_its_power_but_no_invite_event_here() {
        let room = NewRoom { remote_invitees: vec![user("@carol:elsewhere.org")], ..new_room(Preset::TrustedPrivate) };
        let v10 = plan(room.clone(), &room_version::rules(&RoomVersionId::V10).unwrap()).unwrap();
        assert_eq!(v10.events[1].content["users"]["@carol:elsewhere.org"], 100);
        let invited: Vec<&str> = v10
            .events
            .iter()
            .filter(|e| e.content["membership"] == "invite")
            .filter_map(|e| e.state_key.as_deref())
            .collect();
        assert_eq!(invited, ["@bob:example.org"]);
        let v12 = plan(room, &room_version::rules(&RoomVersionId::V12).unwrap()).unwrap();
        assert_eq!(v12.create_content["additional_creators"], json!(["@bob:example.org", "@carol:elsewhere.org"]));
    }

    #[test]
    fn presets_and_versions_shape_the_power_levels() {
        let v12 = room_version::rules(&RoomVersionId::V12).unwrap();
        let public = plan(new_room(Preset::Public), &v12).unwrap();
        assert_eq!(public.events[3].content["join_rule"], "public");
        assert_eq!(public.events[1].content["invite"], 50);
        assert_eq!(public.events[1].content["users"], json!({}), "v12 creators are not listed");
        assert_eq!(public.events[1].content["events"]["m.room.tombstone"], 150);

        let trusted = plan(new_room(Preset::TrustedPrivate), &v12).unwrap();
        assert_eq!(trusted.create_content["additional_creators"], json!(["@bob:example.org"]));
        let v10 = room_version::rules(&RoomVersionId::V10).unwrap();
        let trusted = plan(new_room(Preset::TrustedPrivate), &v10).unwrap();
        assert_eq!(trusted.events[1].content["users"]["@bob:example.org"], 100);
        assert!(trusted.create_content.get("additional_creators").is_none());

        let mut overridden = new_room(Preset::Private);
        overridden.power_level_override = json!({ "state_default": 10 }).as_object().cloned();
        let plan = plan(overridden, &v10).unwrap();
        assert_eq!(plan.events[1].content["state_default"], 10);
    }

    #[test]
    fn presets_follow_visibility_when_absent() {
        assert_eq!(Preset::choose(None, Some("public")).unwrap(), Preset::Public);
        assert_eq!(Preset::choose(None, None).unwrap(), Preset::Private);
        assert_eq!(Preset::choose(Some("trusted_private_chat"), Some("public")).unwrap(), Preset::TrustedPrivate);
        assert!(Preset::choose(Some("nope"), None).is_err());
        assert!(Preset::choose(None, Some("secret")).is_err());
    }
}
