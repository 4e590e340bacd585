//! Event filters.
//!
//! Spec: client-server API "Filtering" and the `Filter` / `RoomFilter` /
//! `RoomEventFilter` schemas (`data/api/client-server/definitions/`). Used by
//! `/sync`, `/messages` and `/context`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::Pdu;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    #[serde(default)]
    pub lazy_load_members: bool,
    #[serde(default)]
    pub include_redundant_members: bool,
    /// Per-thread unread counts in `/sync` (`unread_thread_notifications`).
    #[serde(default)]
    pub unread_thread_notifications: bool,
}

impl RoomEventFilter {
    /// Whether an event passes the type, sender and URL conditions.
    pub fn accepts(&self, pdu: &Pdu) -> bool {
        if !self.keeps(&pdu.kind().to_string(), Some(pdu.sender_str())) {
            return false;
        }
        if let Some(wanted) = self.contains_url {
            let has_url =
                serde_json::from_str::<Value>(pdu.content_json()).ok().is_some_and(|c| c.get("url").is_some());
            if has_url != wanted {
                return false;
            }
        }
        true
    }

    /// Whether an event of `kind` (from `sender`, when it has one) passes the
    /// type and sender conditions: for room events, and for presence and
    /// account data, which the filter reads the same way.
    pub fn keeps(&self, kind: &str, sender: Option<&str>) -> bool {
        let type_matches = |patterns: &[String]| patterns.iter().any(|pattern| glob_match(pattern, kind));
        if self.types.as_deref().is_some_and(|types| !type_matches(types)) || type_matches(&self.not_types) {
            return false;
        }
        let Some(sender) = sender else { return true };
        !(self.senders.as_ref().is_some_and(|senders| !senders.iter().any(|s| s == sender))
            || self.not_senders.iter().any(|s| s == sender))
    }

    /// Whether [`Self::accepts`] looks at events at all (type, sender or URL
    /// conditions); when not, every event passes it.
    pub fn judges_events(&self) -> bool {
        self.types.is_some()
            || !self.not_types.is_empty()
            || self.senders.is_some()
            || !self.not_senders.is_empty()
            || self.contains_url.is_some()
    }

    /// Whether events of `room_id` pass the room conditions.
    pub fn accepts_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
            && !self.not_rooms.iter().any(|r| r == room_id)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    #[serde(default)]
    pub include_leave: bool,
    #[serde(default)]
    pub timeline: RoomEventFilter,
    #[serde(default)]
    pub state: RoomEventFilter,
    #[serde(default)]
    pub ephemeral: RoomEventFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
}

impl RoomFilter {
    pub fn accepts_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
            && !self.not_rooms.iter().any(|r| r == room_id)
    }
}

/// The top-level filter (`POST /user/{userId}/filter`, `/sync?filter=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<String>,
    #[serde(default)]
    pub room: RoomFilter,
    #[serde(default)]
    pub presence: RoomEventFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
}

impl Filter {
    /// Checks values serde cannot: the event format, and that room and user
    /// lists hold room ids (`!`) and user ids (`@`), as Synapse's filter
    /// schema requires.
    pub fn validate(&self) -> Result<(), String> {
        match self.event_format.as_deref() {
            None | Some("client") | Some("federation") => {}
            Some(other) => return Err(format!("event_format must be `client` or `federation`, not {other:?}")),
        }
        ids_with_sigil("room.rooms", self.room.rooms.iter().flatten(), '!')?;
        ids_with_sigil("room.not_rooms", &self.room.not_rooms, '!')?;
        let event_filters = [
            ("room.timeline", &self.room.timeline),
            ("room.state", &self.room.state),
            ("room.ephemeral", &self.room.ephemeral),
            ("room.account_data", &self.room.account_data),
            ("presence", &self.presence),
            ("account_data", &self.account_data),
        ];
        for (name, filter) in event_filters {
            ids_with_sigil(&format!("{name}.rooms"), filter.rooms.iter().flatten(), '!')?;
            ids_with_sigil(&format!("{name}.not_rooms"), &filter.not_rooms, '!')?;
            ids_with_sigil(&format!("{name}.senders"), filter.senders.iter().flatten(), '@')?;
            ids_with_sigil(&format!("{name}.not_senders"), &filter.not_senders, '@')?;
        }
        Ok(())
    }
}

/// Refuses an entry of `ids` that is not an identifier starting with `sigil`.
fn ids_with_sigil<'a>(field: &str, ids: impl IntoIterator<Item = &'a String>, sigil: char) -> Result<(), String> {
    match ids.into_iter().find(|id| !id.starts_with(sigil) || id.len() < 2) {
        Some(bad) => Err(format!("{field} must hold ids starting with {sigil}, not {bad:?}")),
        None => Ok(()),
    }
}

/// `*` wildcards, as filters allow in event types.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix) && {
                let tail = &text[prefix.len()..];
                (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
            }
        }
    }
}

fn insert_path(target: &mut serde_json::Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            target.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = target.entry((*first).to_owned()).or_insert_with(|| Value::Object(Default::default()));
            if let Some(object) = entry.as_object_mut() {
                insert_path(object, rest, value);
            }
        }
    }
}

/// Keeps only the dotted `fields` of a client event (spec: `event_fields`).
pub fn select_fields(event: &Value, fields: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        let mut source = event;
        let mut found = true;
        for part in &path {
            match source.get(part) {
                Some(next) => source = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        insert_path(&mut out, &path, source.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn type_globs() {
        assert!(glob_match("m.room.*", "m.room.message"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("m.*.message", "m.room.message"));
        assert!(!glob_match("m.room.*", "m.call.invite"));
        assert!(glob_match("m.room.message", "m.room.message"));
        assert!(!glob_match("m.room.message", "m.room.messages"));
    }

    #[test]
    fn event_fields_keep_only_the_named_paths() {
        let event =
            json!({ "type": "m.room.message", "content": { "body": "hi", "msgtype": "m.text" }, "sender": "@a:b" });
        let fields = vec!["type".to_owned(), "content.body".to_owned(), "missing.field".to_owned()];
        assert_eq!(select_fields(&event, &fields), json!({ "type": "m.room.message", "content": { "body": "hi" } }));
    }

    #[test]
    fn room_conditions() {
        let filter =
            RoomEventFilter { rooms: Some(vec!["!a:x".into()]), not_rooms: vec!["!b:x".into()], ..Default::default() };
        assert!(filter.accepts_room("!a:x"));
        assert!(!filter.accepts_room("!c:x"));
        let filter = RoomFilter { not_rooms: vec!["!b:x".into()], ..Default::default() };
        assert!(!filter.accepts_room("!b:x") && filter.accepts_room("!a:x"));
    }
}
