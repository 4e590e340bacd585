//! Power levels under the rules.
//!
//! Guide: "Room access rules" and "External partners' server".
//! - In an `unrestricted` room no external partner has a level other than 0,
//!   and `users_default` is 0 (the reference deployment's rule).
//! - In every room, external partners are never moderators: no level of
//!   [`MODERATOR`] or more for them.
//! - At creation the levels below are imposed ([`FLOORS`], [`EVENT_FLOORS`]):
//!   a client's `power_level_content_override` or `initial_state` power
//!   levels may raise them, never lower them (400 `M_INVALID_PARAM`).

use serde_json::{Map, Value};

use super::{AccessRule, Broken, Checked, PublicSectorPolicy, RoomFacts, Rule};
use crate::events::kinds;

/// The level from which a user is a moderator (kick, ban, redact).
pub const MODERATOR: i64 = 50;

/// Top-level keys imposed at creation, with their lowest value.
pub const FLOORS: &[(&str, i64)] = &[("invite", 50), ("state_default", 100), ("kick", 50), ("ban", 50), ("redact", 50)];

/// Event types imposed at creation, with their lowest level.
pub const EVENT_FLOORS: &[(&str, i64)] = &[
    (kinds::POWER_LEVELS, 100),
    (kinds::ENCRYPTION, 100),
    (kinds::HISTORY_VISIBILITY, 100),
    (kinds::TOMBSTONE, 100),
    (kinds::SERVER_ACL, 100),
    (kinds::NAME, 50),
    (kinds::AVATAR, 50),
    (kinds::CANONICAL_ALIAS, 50),
];

fn level(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A new `m.room.power_levels` event.
pub fn check(policy: &PublicSectorPolicy, content: &Value, facts: &RoomFacts) -> Checked {
    check_users(content, facts.rule, |user| {
        ruma::UserId::parse(user).is_ok_and(|user| policy.is_external(&user) && !policy.bypasses(&user))
    })
}

/// The levels of `content` against the rule, `is_external` telling the
/// external partners (pure).
pub fn check_users(content: &Value, rule: AccessRule, is_external: impl Fn(&str) -> bool) -> Checked {
    let users = content["users"].as_object().cloned().unwrap_or_default();
    let externals = users.iter().filter(|(user, _)| is_external(user));
    if rule == AccessRule::Unrestricted {
        if content.get("users_default").and_then(level).unwrap_or(0) != 0 {
            return Err(Broken::new(Rule::Unrestricted, "users_default stays 0 in an unrestricted room"));
        }
        if let Some((user, _)) = externals.clone().find(|(_, value)| level(value).unwrap_or(0) != 0) {
            return Err(Broken::new(Rule::Unrestricted, format!("{user} is an external partner: their level stays 0")));
        }
    }
    if let Some((user, _)) = externals.into_iter().find(|(_, value)| level(value).unwrap_or(0) >= MODERATOR) {
        return Err(Broken::new(
            Rule::ExternalPower,
            format!("{user} is an external partner and cannot be a moderator"),
        ));
    }
    Ok(())
}

/// Client-given power levels at creation: each imposed level at least its floor.
pub fn check_creation_floors(content: &Map<String, Value>) -> Checked {
    for (key, floor) in FLOORS {
        if let Some(given) = content.get(*key).and_then(level).filter(|given| given < floor) {
            return Err(Broken::new(Rule::CreationPowerLevels, format!("{key} is at least {floor} (not {given})")));
        }
    }
    let events = content.get("events").and_then(Value::as_object);
    for (kind, floor) in EVENT_FLOORS {
        if let Some(given) = events.and_then(|events| events.get(*kind)).and_then(level).filter(|given| given < floor) {
            return Err(Broken::new(
                Rule::CreationPowerLevels,
                format!("events.{kind} is at least {floor} (not {given})"),
            ));
        }
    }
    Ok(())
}

/// Raises each imposed level of `content` to its floor (values at or above
/// it, the client's included, stay).
pub fn raise_to_floors(content: &mut Value) {
    let Some(map) = content.as_object_mut() else { return };
    for (key, floor) in FLOORS {
        let current = map.get(*key).and_then(level);
        if current.is_none_or(|current| current < *floor) {
            map.insert((*key).to_owned(), Value::from(*floor));
        }
    }
    let events = map.entry("events").or_insert_with(|| Value::Object(Map::new()));
    if let Some(events) = events.as_object_mut() {
        for (kind, floor) in EVENT_FLOORS {
            let current = events.get(*kind).and_then(level);
            if current.is_none_or(|current| current < *floor) {
                events.insert((*kind).to_owned(), Value::from(*floor));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn external(user: &str) -> bool {
        user.ends_with(":externes.example")
    }

    #[test]
    fn unrestricted_rooms_give_externals_nothing() {
        let rule = AccessRule::Unrestricted;
        assert!(check_users(
            &json!({ "users": { "@a:agents.example": 100, "@x:externes.example": 0 } }),
            rule,
            external
        )
        .is_ok());
        let refused = check_users(&json!({ "users": { "@x:externes.example": 10 } }), rule, external).unwrap_err();
        assert_eq!(refused.rule, Rule::Unrestricted);
        assert!(check_users(&json!({ "users_default": 1 }), rule, external).is_err());
        assert!(check_users(&json!({ "users_default": 1 }), AccessRule::Restricted, external).is_ok());
    }

    #[test]
    fn externals_are_never_moderators() {
        let content = json!({ "users": { "@x:externes.example": 50 } });
        assert_eq!(check_users(&content, AccessRule::Direct, external).unwrap_err().rule, Rule::ExternalPower);
        assert!(check_users(&json!({ "users": { "@x:externes.example": 49 } }), AccessRule::Direct, external).is_ok());
    }

    #[test]
    fn creation_levels_may_be_raised_not_lowered() {
        let raised = json!({ "invite": 100, "events": { "m.room.name": 100 } });
        assert!(check_creation_floors(raised.as_object().unwrap()).is_ok());
        let lowered = json!({ "invite": 0 });
        assert_eq!(check_creation_floors(lowered.as_object().unwrap()).unwrap_err().rule, Rule::CreationPowerLevels);
        let lowered_event = json!({ "events": { "m.room.encryption": 50 } });
        assert!(check_creation_floors(lowered_event.as_object().unwrap()).is_err());

        let mut content = json!({ "invite": 0, "kick": 75, "events": { "m.room.name": 100, "m.room.tombstone": 150 } });
        raise_to_floors(&mut content);
        assert_eq!(content["invite"], 50);
        assert_eq!(content["kick"], 75);
        assert_eq!(content["state_default"], 100);
        assert_eq!(content["events"]["m.room.name"], 100);
        assert_eq!(content["events"]["m.room.tombstone"], 150);
        assert_eq!(content["events"]["m.room.encryption"], 100);
    }
}
