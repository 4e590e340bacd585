//! Validation of the content of well-known state events before they enter
//! the pipeline: malformed content is `M_BAD_JSON`, naming the event type.
//!
//! Spec: client-server API "Room Events" (the `m.room.*` state event
//! schemas). The shapes come from ruma's event content types; unknown event
//! types are free-form and pass.

use crate::events::kinds;
use ruma::events::room::{
    avatar::RoomAvatarEventContent, canonical_alias::RoomCanonicalAliasEventContent,
    encryption::RoomEncryptionEventContent, guest_access::RoomGuestAccessEventContent,
    history_visibility::RoomHistoryVisibilityEventContent, join_rules::RoomJoinRulesEventContent,
    member::RoomMemberEventContent, name::RoomNameEventContent, pinned_events::RoomPinnedEventsEventContent,
    server_acl::RoomServerAclEventContent, tombstone::RoomTombstoneEventContent, topic::RoomTopicEventContent,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Longest room name (as other servers enforce).
const MAX_NAME_BYTES: usize = 255;

fn check<T: DeserializeOwned>(kind: &str, content: &Value) -> Result<()> {
    serde_json::from_value::<T>(content.clone())
        .map(drop)
        .map_err(|e| Error::bad_json(format!("Invalid content for {kind}: {e}")))
}

/// A canonical alias event's aliases must be aliases: `M_INVALID_PARAM`
/// otherwise (as Synapse answers), before the schema's `M_BAD_JSON`.
fn check_alias_syntax(content: &Value) -> Result<()> {
    let alternatives = content.get("alt_aliases").and_then(Value::as_array).into_iter().flatten();
    for alias in content.get("alias").into_iter().chain(alternatives).filter_map(Value::as_str) {
        if ruma::RoomAliasId::parse(alias).is_err() {
            return Err(Error::invalid_param(format!("{alias:?} is not a room alias")));
        }
    }
    Ok(())
}

/// Checks `content` against the schema of `kind` when it is a known state event.
pub fn validate_state_content(kind: &str, content: &Value) -> Result<()> {
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    match kind {
        kinds::NAME => {
            check::<RoomNameEventContent>(kind, content)?;
            if content["name"].as_str().is_some_and(|name| name.len() > MAX_NAME_BYTES) {
                return Err(Error::bad_json(format!("m.room.name is longer than {MAX_NAME_BYTES} bytes")));
            }
            Ok(())
        }
        kinds::TOPIC => check::<RoomTopicEventContent>(kind, content),
        kinds::AVATAR => check::<RoomAvatarEventContent>(kind, content),
        kinds::JOIN_RULES => check::<RoomJoinRulesEventContent>(kind, content),
        kinds::HISTORY_VISIBILITY => check::<RoomHistoryVisibilityEventContent>(kind, content),
        kinds::GUEST_ACCESS => check::<RoomGuestAccessEventContent>(kind, content),
        kinds::MEMBER => check::<RoomMemberEventContent>(kind, content),
        kinds::CANONICAL_ALIAS => {
            check_alias_syntax(content)?;
            check::<RoomCanonicalAliasEventContent>(kind, content)
        }
        kinds::ENCRYPTION => check::<RoomEncryptionEventContent>(kind, content),
        kinds::TOMBSTONE => check::<RoomTombstoneEventContent>(kind, content),
        kinds::SERVER_ACL => check::<RoomServerAclEventContent>(kind, content),
        kinds::PINNED_EVENTS => check::<RoomPinnedEventsEventContent>(kind, content),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn known_state_contents_are_checked() {
        assert!(validate_state_content("m.room.name", &json!({ "name": "ok" })).is_ok());
        assert!(validate_state_content("m.room.name", &json!({ "name": 5 })).is_err());
        assert!(validate_state_content("m.room.name", &json!({ "name": "x".repeat(300) })).is_err());
        assert!(validate_state_content("m.room.member", &json!({ "membership": "join" })).is_ok());
        assert!(validate_state_content("m.room.member", &json!({})).is_err());
        assert!(validate_state_content("m.room.history_visibility", &json!({ "history_visibility": 1 })).is_err());
        assert!(validate_state_content("m.room.topic", &json!({ "topic": ["x"] })).is_err());
        assert!(validate_state_content("m.room.canonical_alias", &json!({ "alias": "not an alias" })).is_err());
        assert!(validate_state_content("org.example.custom", &json!({ "anything": [1, 2] })).is_ok());
        assert!(validate_state_content("m.room.name", &json!("text")).is_err());
    }
}
