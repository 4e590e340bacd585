//! An event in the client-server format, written straight from its PDU.
//!
//! Spec: client-server API "Room Event Format" (`ClientEvent`): `event_id`,
//! `type`, `sender`, `origin_server_ts`, `room_id`, `content`, `unsigned`, and
//! `state_key` / `redacts` when the event has them.
//!
//! The content is written as the stored JSON text: it is never parsed into a
//! tree and written out again. Building a `/sync` answer of a few thousand
//! events that way spent most of its time allocating and freeing
//! `serde_json::Value` nodes. Callers that edit or filter an event's fields
//! take [`ClientEvent::to_value`].

use ruma::{state_res::Event, OwnedRoomId, RoomId};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::events::Pdu;

/// An event as clients receive it, with the `unsigned` fields the server adds.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    pdu: Pdu,
    room_id: OwnedRoomId,
    unsigned: Map<String, Value>,
}

impl ClientEvent {
    pub fn new(pdu: &Pdu, room_id: &RoomId) -> Self {
        Self { pdu: pdu.clone(), room_id: room_id.to_owned(), unsigned: Map::new() }
    }

    /// Sets one `unsigned` field (`m.relations`, `redacted_because`, `transaction_id`).
    pub fn set_unsigned(&mut self, key: &str, value: Value) {
        self.unsigned.insert(key.to_owned(), value);
    }

    /// The event as a JSON tree, for callers that edit or select its fields.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

impl Serialize for ClientEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pdu = &self.pdu;
        let fields = 7 + usize::from(pdu.state_key().is_some()) + usize::from(pdu.redacts().is_some());
        let mut map = serializer.serialize_map(Some(fields))?;
        map.serialize_entry("event_id", pdu.event_id())?;
        map.serialize_entry("type", pdu.event_type())?;
        map.serialize_entry("sender", pdu.sender())?;
        map.serialize_entry("origin_server_ts", &pdu.origin_server_ts())?;
        map.serialize_entry("room_id", &self.room_id)?;
        map.serialize_entry("content", pdu.content())?;
        map.serialize_entry("unsigned", &self.unsigned)?;
        if let Some(state_key) = pdu.state_key() {
            map.serialize_entry("state_key", state_key)?;
        }
        if let Some(redacts) = pdu.redacts() {
            map.serialize_entry("redacts", redacts)?;
        }
        map.end()
    }
}

/// An event in the client-server format, as a JSON tree.
pub fn client_event(pdu: &Pdu, room_id: &RoomId) -> Value {
    ClientEvent::new(pdu, room_id).to_value()
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, ServerName};
    use serde_json::json;

    use super::*;
    use crate::{
        crypto::signing_key::tests::spec_test_key,
        events::{build_and_sign, room_version::rules, NewEvent},
    };

    fn event(kind: &str, state_key: Option<&str>, content: Value) -> Pdu {
        let new = NewEvent {
            kind: kind.into(),
            state_key: state_key.map(str::to_owned),
            content,
            sender: "@a:domain".try_into().unwrap(),
            room_id: Some("!room:domain".try_into().unwrap()),
            prev_events: vec!["$prev".try_into().unwrap()],
            auth_events: vec![],
            depth: 2,
            origin_server_ts: 1_234,
            redacts: None,
            v1: None,
        };
        let server = <&ServerName>::try_from("domain").unwrap();
        build_and_sign(new, &rules(&RoomVersionId::V11).unwrap(), &spec_test_key(), server).unwrap()
    }

    #[test]
    fn writes_the_client_format_with_the_content_as_stored() {
        let content = json!({ "body": "héllo \"quoted\" \u{1F600}", "nested": { "list": [1, 2, { "deep": null }] } });
        let message = event("m.room.message", None, content.clone());
        let room_id = <&RoomId>::try_from("!room:domain").unwrap();
        let mut served = ClientEvent::new(&message, room_id);
        served.set_unsigned("transaction_id", json!("txn1"));
        let written: Value = serde_json::from_slice(&serde_json::to_vec(&served).unwrap()).unwrap();
        let expected = json!({
            "event_id": message.event_id(),
            "type": "m.room.message",
            "sender": "@a:domain",
            "origin_server_ts": 1_234,
            "room_id": "!room:domain",
            "content": content,
            "unsigned": { "transaction_id": "txn1" },
        });
        assert_eq!(written, expected);
        assert_eq!(served.to_value(), expected, "the tree and the written form agree");
        // The content's bytes are the stored text, not a re-serialisation.
        let text = String::from_utf8(serde_json::to_vec(&served).unwrap()).unwrap();
        assert!(text.contains(message.content_json()));
    }

    #[test]
    fn a_state_event_carries_its_state_key_even_when_empty() {
        let name = event("m.room.name", Some(""), json!({ "name": "Forum" }));
        let room_id = <&RoomId>::try_from("!room:domain").unwrap();
        let written = client_event(&name, room_id);
        assert_eq!(written["state_key"], "");
        assert_eq!(written["unsigned"], json!({}));
        assert!(written.get("redacts").is_none());
    }
}
