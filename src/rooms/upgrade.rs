//! Room upgrades: a replacement room in a new version, the old one
//! tombstoned.
//!
//! Spec: client-server API module "Room Upgrades", server behaviour. The
//! content of the replacement room is planned by a pure function
//! ([`plan`]) from the old room's state; [`Rooms::upgrade`] carries it out:
//!
//! 1. create the replacement room (its create event names the predecessor;
//!    transferable state and power levels copied, the upgrader joined);
//! 2. tombstone the old room — before anything else moves, so that a failure
//!    afterwards leaves a tombstoned room whose aliases still resolve to it
//!    (clients follow the tombstone), never aliases moved to a room nothing
//!    points to;
//! 3. move the local aliases and the canonical alias;
//! 4. restrict the old room's power levels (best effort).
//!
//! One upgrade of a room runs at a time; a request that waited for another
//! finds the tombstone and gets the same replacement room.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{EventRequest, Membership, Rooms};
use crate::events::kinds;
use crate::{
    error::{Error, Result},
    events::room_version,
};

/// State copied to the replacement room (besides power levels, handled apart).
pub const TRANSFERRED: &[&str] = &[
    kinds::SERVER_ACL,
    kinds::ENCRYPTION,
    kinds::NAME,
    kinds::AVATAR,
    kinds::TOPIC,
    kinds::GUEST_ACCESS,
    kinds::HISTORY_VISIBILITY,
    kinds::JOIN_RULES,
];

/// What the old room's state says, as far as an upgrade reads it.
#[derive(Debug, Default, Clone)]
pub struct OldRoom {
    pub room_id: String,
    /// Content of `m.room.create`.
    pub create: Map<String, Value>,
    /// Content of `m.room.power_levels`, if any.
    pub power_levels: Option<Map<String, Value>>,
    /// Contents of the transferable state events present, in [`TRANSFERRED`] order.
    pub transferred: Vec<(&'static str, Value)>,
}

/// The replacement room: its create content and its first events.
#[derive(Debug, Clone)]
pub struct Plan {
    pub create_content: Value,
    pub initial: Vec<EventRequest>,
}

/// Plans the replacement room (pure).
///
/// - `predecessor` names the old room; its `type` is kept; `additional_creators`
///   only where the new version has them.
/// - Power levels are copied; in versions that privilege creators (12+) the
///   creators are removed from `users` and `m.room.tombstone` raised above
///   `state_default`; elsewhere the upgrader gets the highest level present
///   (at least 100).
pub fn plan(
    old: &OldRoom,
    upgrader: &UserId,
    additional: &[OwnedUserId],
    creators_privileged: bool,
    has_additional_creators: bool,
) -> Plan {
    let mut create = json!({ "predecessor": { "room_id": old.room_id } });
    if let Some(kind) = old.create.get("type") {
        create["type"] = kind.clone();
    }
    if has_additional_creators && !additional.is_empty() {
        create["additional_creators"] = json!(additional);
    }
    let mut initial = vec![EventRequest::state(kinds::MEMBER, upgrader.as_str(), json!({ "membership": "join" }))];
    let mut power = old.power_levels.clone().unwrap_or_default();
    if creators_privileged {
        if let Some(Value::Object(users)) = power.get_mut("users") {
            users.remove(upgrader.as_str());
            for creator in additional {
                users.remove(creator.as_str());
            }
        }
        let state_default = power.get("state_default").and_then(Value::as_i64).unwrap_or(50);
        let tombstone = power.get("events").and_then(|e| e.get(kinds::TOMBSTONE)).and_then(Value::as_i64).unwrap_or(0);
        if tombstone <= state_default {
            if let Some(events) = power.entry("events").or_insert_with(|| json!({})).as_object_mut() {
                events.insert(kinds::TOMBSTONE.into(), json!(state_default + 50));
            }
        }
    } else if let Some(users) = power.entry("users").or_insert_with(|| json!({})).as_object_mut() {
        let highest = users.values().filter_map(Value::as_i64).max().unwrap_or(100).max(100);
        users.insert(upgrader.to_string(), json!(highest));
    }
    initial.push(EventRequest::state(kinds::POWER_LEVELS, "", Value::Object(power)));
    for (kind, content) in &old.transferred {
        initial.push(EventRequest::state(kind, "", content.clone()));
    }
    Plan { create_content: create, initial }
}

/// The old room's power levels once upgraded: `events_default` and `invite`
/// raised to the greater of 50 and `users_default + 1` (pure).
pub fn restricted_power_levels(mut content: Map<String, Value>) -> Map<String, Value> {
    let users_default = content.get("users_default").and_then(Value::as_i64).unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    content.insert("events_default".into(), json!(restricted));
    content.insert("invite".into(), json!(restricted));
    content
}

impl Rooms {
    /// Upgrades `old_room` to `version` on behalf of `upgrader` (who must be
    /// joined and able to send `m.room.tombstone`); the replacement room.
    pub async fn upgrade(
        &self,
        old_room: &RoomId,
        upgrader: &UserId,
        version: &RoomVersionId,
        additional: &[OwnedUserId],
    ) -> Result<OwnedRoomId> {
        // Not the room's append lock: the upgrade appends to the room itself.
        let _one_upgrade_at_a_time = self.upgrades.lock(old_room).await;
        let new_rules = room_version::rules(version)?;
        let not_member = || Error::forbidden("You are not in this room");
        let room = self.room(old_room)?.ok_or_else(not_member)?;
        let state = self.current_state(&room)?;
        if self.membership_in(&state, upgrader)? != Some(Membership::Join) {
            return Err(not_member());
        }
        let (_, old_rules) = Self::rules_of(&room)?;
        if !self.power_levels(&state, &old_rules)?.may_send_state(upgrader, kinds::TOMBSTONE) {
            return Err(Error::forbidden("Upgrading this room needs the power to send m.room.tombstone"));
        }
        // Upgraded already (by a request this one waited behind): the same answer.
        if let Some(tombstone) = self.state_event_in(&state, kinds::TOMBSTONE, "")? {
            let content: Value = serde_json::from_str(tombstone.content_json()).unwrap_or_default();
            if let Some(replacement) = content["replacement_room"].as_str().and_then(|id| RoomId::parse(id).ok()) {
                return Ok(replacement);
            }
        }
        let content = |kind: &str| -> Result<Option<Map<String, Value>>> {
            Ok(self.state_event_in(&state, kind, "")?.and_then(|event| serde_json::from_str(event.content_json()).ok()))
        };
        let mut old = OldRoom {
            room_id: old_room.to_string(),
            create: content(kinds::CREATE)?.unwrap_or_default(),
            power_levels: content(kinds::POWER_LEVELS)?,
            transferred: Vec::new(),
        };
        for kind in TRANSFERRED {
            if let Some(event) = content(kind)? {
                old.transferred.push((kind, Value::Object(event)));
            }
        }
        let plan = plan(
            &old,
            upgrader,
            additional,
            new_rules.authorization.explicitly_privilege_room_creators,
            new_rules.authorization.additional_room_creators,
        );
        let new_room = self.create_room(upgrader, version, plan.create_content, None, plan.initial).await?;

        let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
        self.append(old_room, upgrader, EventRequest::state(kinds::TOMBSTONE, "", tombstone), None).await?;

        for alias in self.local_aliases(old_room)? {
            let alias = ruma::RoomAliasId::parse(&alias).map_err(|e| Error::internal("stored alias", e))?;
            self.delete_alias(&alias).await?;
            self.create_alias(&alias, &new_room, upgrader).await?;
        }
        if let Some(canonical) = content(kinds::CANONICAL_ALIAS)? {
            let moved = EventRequest::state(kinds::CANONICAL_ALIAS, "", Value::Object(canonical));
            self.append(&new_room, upgrader, moved, None).await?;
            let cleared = EventRequest::state(kinds::CANONICAL_ALIAS, "", json!({}));
            self.append(old_room, upgrader, cleared, None).await?;
        }
        if let Some(power) = content(kinds::POWER_LEVELS)? {
            let restricted =
                EventRequest::state(kinds::POWER_LEVELS, "", Value::Object(restricted_power_levels(power)));
            if let Err(error) = self.append(old_room, upgrader, restricted, None).await {
                tracing::warn!(room = %old_room, %error, "could not restrict the old room after an upgrade");
            }
        }
        Ok(new_room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    fn old_room(power: Value) -> OldRoom {
        OldRoom {
            room_id: "!old:example.org".into(),
            create: json!({ "type": "m.space", "room_version": "10" }).as_object().cloned().unwrap(),
            power_levels: power.as_object().cloned(),
            transferred: vec![("m.room.name", json!({ "name": "Forum" }))],
        }
    }

    #[test]
    fn version_12_plans_drop_creators_from_power_levels_and_guard_the_tombstone() {
        let alice = user("@alice:example.org");
        let bob = user("@bob:example.org");
        let old = old_room(
            json!({ "users": { "@alice:example.org": 100, "@bob:example.org": 100, "@carol:example.org": 50 } }),
        );
        let plan = plan(&old, &alice, std::slice::from_ref(&bob), true, true);
        assert_eq!(plan.create_content["predecessor"]["room_id"], "!old:example.org");
        assert_eq!(plan.create_content["type"], "m.space");
        assert_eq!(plan.create_content["additional_creators"], json!(["@bob:example.org"]));
        let power = &plan.initial[1].content;
        assert_eq!(power["users"], json!({ "@carol:example.org": 50 }));
        assert_eq!(power["events"]["m.room.tombstone"], 100, "state_default 50 + 50");
        assert_eq!(plan.initial[0].state_key.as_deref(), Some("@alice:example.org"));
        assert_eq!(plan.initial[2].kind, "m.room.name");
    }

    #[test]
    fn older_versions_give_the_upgrader_the_highest_level() {
        let alice = user("@alice:example.org");
        let old = old_room(json!({ "users": { "@alice:example.org": 50, "@mod:example.org": 150 } }));
        let plan = plan(&old, &alice, &[user("@bob:example.org")], false, false);
        assert!(plan.create_content.get("additional_creators").is_none());
        assert_eq!(plan.initial[1].content["users"]["@alice:example.org"], 150);
        let none = plan_without_power(&alice);
        assert_eq!(none.initial[1].content["users"]["@alice:example.org"], 100);
    }

    fn plan_without_power(upgrader: &UserId) -> Plan {
        plan(&OldRoom::default(), upgrader, &[], false, false)
    }

    #[test]
    fn the_old_room_is_restricted_above_its_default_users() {
        let restricted = restricted_power_levels(json!({ "users_default": 60 }).as_object().cloned().unwrap());
        assert_eq!((restricted["events_default"].clone(), restricted["invite"].clone()), (json!(61), json!(61)));
        let restricted = restricted_power_levels(Map::new());
        assert_eq!(restricted["events_default"], 50);
    }
}
