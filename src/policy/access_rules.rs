//! The access rule of a room (`im.vector.room.access_rules`, content
//! `{"rule": "restricted" | "unrestricted" | "direct"}`) and what it admits.
//!
//! Guide: "Room access rules". A room without the event is `restricted`.
//! - The rule changes only `restricted` → `unrestricted` (set once at
//!   creation otherwise); never away from `restricted` while the room is
//!   published; never to `direct` with more than two members.
//! - `restricted`: external partners are neither invited nor joined.
//! - `unrestricted`: external partners join only when invited (their power
//!   is [`super::power`]'s).
//! - `direct`: two members at most — once two users have been members, only
//!   they may be — and no name, topic or avatar (never public:
//!   [`super::forums`]).

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{Broken, Checked, RoomFacts, Rule};
use crate::{
    error::Result,
    events::kinds,
    rooms::{pipeline::StateView, Membership, Rooms},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRule {
    Restricted,
    Unrestricted,
    Direct,
}

impl AccessRule {
    pub fn parse(rule: &str) -> Option<Self> {
        match rule {
            "restricted" => Some(Self::Restricted),
            "unrestricted" => Some(Self::Unrestricted),
            "direct" => Some(Self::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restricted => "restricted",
            Self::Unrestricted => "unrestricted",
            Self::Direct => "direct",
        }
    }
}

/// Most members (anyone with a member event, whatever its membership) a
/// direct room has.
const DIRECT_MEMBERS: usize = 2;

/// A new `im.vector.room.access_rules` event.
pub fn check_change(
    rooms: &Rooms,
    room_id: &RoomId,
    state_key: &str,
    content: &Value,
    facts: &RoomFacts,
    state: &dyn StateView,
) -> Result<Checked> {
    let broken = |reason: String| Ok(Err(Broken::new(Rule::AccessRuleChange, reason)));
    if !state_key.is_empty() {
        return broken("the access rules event has an empty state key".into());
    }
    let asked = content["rule"].as_str().unwrap_or_default();
    let Some(rule) = AccessRule::parse(asked) else {
        return broken(format!("unknown access rule {asked:?}: restricted, unrestricted or direct"));
    };
    if rule == AccessRule::Direct && members(state)?.len() > DIRECT_MEMBERS {
        return broken("a room with more than two members cannot become direct".into());
    }
    if rule != AccessRule::Restricted && rooms.is_published(room_id)? {
        return broken("a room published in the room directory stays restricted".into());
    }
    if !facts.rule_is_set {
        return Ok(Ok(()));
    }
    if (facts.rule, rule) != (AccessRule::Restricted, AccessRule::Unrestricted) {
        return broken(format!(
            "the access rule changes only from restricted to unrestricted, not from {} to {}",
            facts.rule.as_str(),
            rule.as_str()
        ));
    }
    Ok(Ok(()))
}

/// The refusal of an external partner in a restricted room.
pub fn restricted_refusal() -> Broken {
    Broken::new(
        Rule::Restricted,
        "users of the external partners' servers cannot be invited to or join a restricted room",
    )
}

/// An invite, join or knock of `target` (`external`: of an external
/// partners' server; `was_invited`: invited or joined before).
pub fn check_membership(
    external: bool,
    target: &UserId,
    membership: Membership,
    was_invited: bool,
    facts: &RoomFacts,
    state: &dyn StateView,
) -> Result<Checked> {
    match facts.rule {
        AccessRule::Restricted if external => return Ok(Err(restricted_refusal())),
        AccessRule::Unrestricted if external && membership == Membership::Join && !was_invited => {
            return Ok(Err(Broken::new(
                Rule::Unrestricted,
                "users of the external partners' servers join an unrestricted room only when invited",
            )));
        }
        AccessRule::Direct => {
            let members = members(state)?;
            if members.len() >= DIRECT_MEMBERS && !members.iter().any(|member| member == target.as_str()) {
                return Ok(Err(Broken::new(Rule::Direct, "a direct room is between its two members only")));
            }
        }
        _ => {}
    }
    Ok(Ok(()))
}

/// Name, topic and avatar: none in a direct room.
pub fn check_decoration(kind: &str, facts: &RoomFacts) -> Checked {
    if facts.rule == AccessRule::Direct && matches!(kind, kinds::NAME | kinds::TOPIC | kinds::AVATAR) {
        return Err(Broken::new(Rule::Direct, "a direct room has no name, topic or avatar"));
    }
    Ok(())
}

/// The users with a member event in the state (any membership, an empty
/// content aside).
fn members(state: &dyn StateView) -> Result<Vec<String>> {
    let mut members: Vec<String> = state
        .member_events()?
        .into_iter()
        .filter(|event| event.content_json().trim() != "{}")
        .filter_map(|event| event.state_key_str().map(str::to_owned))
        .collect();
    members.sort();
    members.dedup();
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_by_name_only() {
        for rule in [AccessRule::Restricted, AccessRule::Unrestricted, AccessRule::Direct] {
            assert_eq!(AccessRule::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(AccessRule::parse("Restricted"), None);
        assert_eq!(AccessRule::parse(""), None);
    }

    #[test]
    fn decorations_are_refused_in_direct_rooms_only() {
        let facts = |rule| RoomFacts { rule, rule_is_set: true, join_rule: None, encrypted: false };
        assert!(check_decoration(kinds::NAME, &facts(AccessRule::Direct)).is_err());
        assert!(check_decoration(kinds::AVATAR, &facts(AccessRule::Direct)).is_err());
        assert!(check_decoration(kinds::NAME, &facts(AccessRule::Restricted)).is_ok());
        assert!(check_decoration(kinds::MESSAGE, &facts(AccessRule::Direct)).is_ok());
    }
}
