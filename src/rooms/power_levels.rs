//! One reading of a room's power levels (`m.room.power_levels`, and the
//! creators of `m.room.create` where the room version privileges them) for
//! every check the server makes itself: moderation actions, sending state,
//! `@room` notifications, upgrades, restricted joins.
//!
//! Spec: client-server API `m.room.power_levels` (the defaults when a key
//! is absent, and when the event is absent: state events need 0); room
//! version 12 ("creators have infinite power").

use std::collections::BTreeMap;

use ruma::{
    power_levels::NotificationPowerLevels, push::PushConditionPowerLevelsCtx, room_version_rules::RoomVersionRules,
    Int, OwnedUserId, UserId,
};
use serde_json::{Map, Value};

use super::{state::StateMap, Rooms};
use crate::events::kinds;
use crate::{error::Result, events::Pdu};

/// Actions with a level of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Invite,
    Kick,
    Ban,
    Redact,
}

impl Action {
    fn key(self) -> &'static str {
        match self {
            Action::Invite => "invite",
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Redact => "redact",
        }
    }

    /// The spec's default when `m.room.power_levels` does not say.
    fn default_level(self) -> i64 {
        match self {
            Action::Invite => 0,
            Action::Kick | Action::Ban | Action::Redact => 50,
        }
    }
}

/// The power levels of a room at one state.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    /// The content of `m.room.power_levels`, if the room has one.
    content: Option<Map<String, Value>>,
    creators: Vec<OwnedUserId>,
    /// Room versions 12 and later: creators outrank everyone, unlisted.
    creators_privileged: bool,
}

impl PowerLevels {
    /// From the room's create event and power levels event (pure).
    pub fn new(create: Option<&Pdu>, power_levels: Option<&Pdu>, rules: &RoomVersionRules) -> Self {
        let mut creators = Vec::new();
        if let Some(create) = create {
            creators.extend(UserId::parse(create.sender_str()).ok());
            let content: Value = serde_json::from_str(create.content_json()).unwrap_or_default();
            let additional = content["additional_creators"].as_array().cloned().unwrap_or_default();
            creators.extend(additional.iter().filter_map(Value::as_str).filter_map(|u| UserId::parse(u).ok()));
        }
        let content = power_levels.and_then(|event| serde_json::from_str(event.content_json()).ok());
        Self { content, creators, creators_privileged: rules.authorization.explicitly_privilege_room_creators }
    }

    fn integer(&self, key: &str) -> Option<i64> {
        self.content.as_ref()?.get(key)?.as_i64()
    }

    fn is_creator(&self, user: &UserId) -> bool {
        self.creators.iter().any(|creator| creator == user)
    }

    /// A user's level; `i64::MAX` for creators where the version privileges them.
    pub fn user(&self, user: &UserId) -> i64 {
        if self.creators_privileged && self.is_creator(user) {
            return i64::MAX;
        }
        match &self.content {
            Some(content) => content
                .get("users")
                .and_then(|users| users.get(user.as_str()))
                .and_then(Value::as_i64)
                .or_else(|| self.integer("users_default"))
                .unwrap_or(0),
            // No power levels yet: the creator has 100 (the first events of a room).
            None if self.is_creator(user) => 100,
            None => 0,
        }
    }

    /// The level an action needs.
    pub fn action(&self, action: Action) -> i64 {
        self.integer(action.key()).unwrap_or(action.default_level())
    }

    /// The level a state event of `kind` needs.
    pub fn state_event(&self, kind: &str) -> i64 {
        let listed = self.content.as_ref().and_then(|c| c.get("events")?.get(kind)?.as_i64());
        listed.or_else(|| self.integer("state_default")).unwrap_or(if self.content.is_some() { 50 } else { 0 })
    }

    /// Whether `user` may send a state event of `kind` (membership aside).
    pub fn may_send_state(&self, user: &UserId, kind: &str) -> bool {
        self.user(user) >= self.state_event(kind)
    }

    /// The context push rules' `sender_notification_permission` conditions need.
    pub fn push_context(&self, rules: &RoomVersionRules) -> PushConditionPowerLevelsCtx {
        let field = |key: &str| self.content.as_ref().and_then(|c| c.get(key)).cloned().unwrap_or_default();
        let users: BTreeMap<OwnedUserId, Int> = serde_json::from_value(field("users")).unwrap_or_default();
        let users_default = serde_json::from_value(field("users_default")).unwrap_or_default();
        let notifications: NotificationPowerLevels = serde_json::from_value(field("notifications")).unwrap_or_default();
        let room_rules =
            ruma::room_version_rules::RoomPowerLevelsRules::new(&rules.authorization, self.creators.clone());
        PushConditionPowerLevelsCtx::new(users, users_default, notifications, room_rules)
    }
}

impl Rooms {
    /// The power levels of a state.
    pub fn power_levels(&self, state: &StateMap, rules: &RoomVersionRules) -> Result<PowerLevels> {
        let create = self.state_event_in(state, kinds::CREATE, "")?;
        let power = self.state_event_in(state, kinds::POWER_LEVELS, "")?;
        Ok(PowerLevels::new(create.as_ref(), power.as_ref(), rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{build_and_sign, room_version, NewEvent};
    use ruma::RoomVersionId;

    fn event(version: &RoomVersionId, kind: &str, sender: &str, content: Value) -> Pdu {
        let rules = room_version::rules(version).unwrap();
        let key = crate::crypto::signing_key::tests::spec_test_key();
        let new = NewEvent {
            kind: kind.into(),
            state_key: Some(String::new()),
            content,
            sender: UserId::parse(sender).unwrap(),
            room_id: Some(ruma::OwnedRoomId::try_from("!r:example.org").unwrap()),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 1,
            redacts: None,
            v1: None,
        };
        build_and_sign(new, &rules, &key, ruma::server_name!("example.org")).unwrap()
    }

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn levels_follow_the_content_and_the_spec_defaults() {
        let v10 = RoomVersionId::V10;
        let rules = room_version::rules(&v10).unwrap();
        let create = event(&v10, "m.room.create", "@alice:example.org", serde_json::json!({}));
        let power = event(
            &v10,
            "m.room.power_levels",
            "@alice:example.org",
            serde_json::json!({ "users": { "@mod:example.org": 60 }, "users_default": 5, "kick": 70,
                                "events": { "m.room.name": 10 }, "state_default": 40 }),
        );
        let levels = PowerLevels::new(Some(&create), Some(&power), &rules);
        assert_eq!(levels.user(&user("@mod:example.org")), 60);
        assert_eq!(levels.user(&user("@alice:example.org")), 5, "versions before 12 list creators like anyone");
        assert_eq!(
            (levels.action(Action::Kick), levels.action(Action::Ban), levels.action(Action::Invite)),
            (70, 50, 0)
        );
        assert_eq!((levels.state_event("m.room.name"), levels.state_event("m.room.topic")), (10, 40));
        assert!(levels.may_send_state(&user("@mod:example.org"), "m.room.topic"));

        let bare = PowerLevels::new(Some(&create), None, &rules);
        assert_eq!((bare.user(&user("@alice:example.org")), bare.user(&user("@bob:example.org"))), (100, 0));
        assert_eq!(bare.state_event("m.room.name"), 0, "no power levels event: state needs 0");
    }

    #[test]
    fn version_12_creators_outrank_everyone() {
        let v12 = RoomVersionId::V12;
        let rules = room_version::rules(&v12).unwrap();
        let create = event(
            &v12,
            "m.room.create",
            "@alice:example.org",
            serde_json::json!({ "additional_creators": ["@bob:example.org"] }),
        );
        let levels = PowerLevels::new(Some(&create), None, &rules);
        assert_eq!(levels.user(&user("@alice:example.org")), i64::MAX);
        assert_eq!(levels.user(&user("@bob:example.org")), i64::MAX);
        assert_eq!(levels.user(&user("@carol:example.org")), 0);
    }
}
