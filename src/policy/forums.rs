//! Forums: public rooms stay unencrypted, and only `restricted` rooms are
//! published in the room directory.
//!
//! Guide: "Room access rules" — `m.room.encryption` is refused while the
//! join rule is `public`; a room leaves `public` only if already encrypted
//! (so an unencrypted forum stays a forum, as the reference deployment's
//! module has it); a direct room is never public; a room published in the
//! room directory must be `restricted` (and the directory lists only those).

use serde_json::Value;

use super::{AccessRule, Broken, Checked, RoomFacts, Rule};

/// A new `m.room.join_rules` event.
pub fn check_join_rule(content: &Value, facts: &RoomFacts) -> Checked {
    let public = content["join_rule"] == "public";
    if public && facts.rule == AccessRule::Direct {
        return Err(Broken::new(Rule::Direct, "a direct room cannot be public"));
    }
    if facts.is_public() && !public && !facts.encrypted {
        return Err(Broken::new(Rule::Forum, "a public room (forum) stops being public only once it is encrypted"));
    }
    Ok(())
}

/// A new `m.room.encryption` event.
pub fn check_encryption(facts: &RoomFacts) -> Checked {
    if facts.is_public() {
        return Err(Broken::new(Rule::Forum, "a public room (forum) cannot be encrypted"));
    }
    Ok(())
}

/// The refusal of a publication in the room directory.
pub fn publication_refusal() -> Broken {
    Broken::new(Rule::Publication, "only rooms whose access rule is restricted are published in the room directory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(rule: AccessRule, join_rule: &str, encrypted: bool) -> RoomFacts {
        RoomFacts { rule, rule_is_set: true, join_rule: Some(join_rule.to_owned()), encrypted }
    }

    #[test]
    fn forums_stay_unencrypted_and_public_until_encrypted() {
        let forum = facts(AccessRule::Restricted, "public", false);
        assert_eq!(check_encryption(&forum).unwrap_err().rule, Rule::Forum);
        assert!(check_join_rule(&json!({ "join_rule": "invite" }), &forum).is_err());
        assert!(check_join_rule(&json!({ "join_rule": "public" }), &forum).is_ok());
        let encrypted_forum = facts(AccessRule::Restricted, "public", true);
        assert!(check_join_rule(&json!({ "join_rule": "invite" }), &encrypted_forum).is_ok());
        let private = facts(AccessRule::Restricted, "invite", false);
        assert!(check_encryption(&private).is_ok());
        assert!(check_join_rule(&json!({ "join_rule": "public" }), &private).is_ok());
    }

    #[test]
    fn direct_rooms_are_never_public() {
        let direct = facts(AccessRule::Direct, "invite", true);
        assert_eq!(check_join_rule(&json!({ "join_rule": "public" }), &direct).unwrap_err().rule, Rule::Direct);
        assert!(check_join_rule(&json!({ "join_rule": "knock" }), &direct).is_ok());
    }
}
