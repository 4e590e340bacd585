//! Building a new local event: the PDU JSON, its content hash, the server's
//! signature, and its event id.
//!
//! Spec: server-server API "Signing events" and "Calculating the reference
//! hash"; room version 12 "Event format" (the create event has no `room_id`:
//! the room id is derived from the create event's id).
//!
//! Choosing `prev_events`, `auth_events` and `depth`, and checking the auth
//! rules, is the pipeline's job; this module only turns its choices into a
//! signed PDU.
//!
//! Room versions 1 and 2 (event format v1, `rooms/v1.md` "Event format"):
//! the event carries its own `event_id` (`$opaque:server`, minted by the
//! server that creates the event: [`mint_event_id`]) and names the events it
//! builds on as `[event_id, {"sha256": reference hash}]` pairs; the caller
//! supplies both in [`NewEvent::v1`].

use std::collections::BTreeMap;

use ruma::{
    canonical_json::{CanonicalJsonObject, CanonicalJsonValue},
    room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{hash_and_sign_event, reference_hash},
    OwnedEventId, OwnedRoomId, OwnedUserId, ServerName,
};
use serde_json::Value;

use super::pdu::{Pdu, PduError, MAX_PDU_BYTES};
use crate::crypto::signing_key::ServerKey;

/// What the pipeline decided about a new event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub state_key: Option<String>,
    /// Must be a JSON object.
    pub content: Value,
    pub sender: OwnedUserId,
    /// `None` only for the create event of a room whose version derives the
    /// room id from it (version 12).
    pub room_id: Option<OwnedRoomId>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: u64,
    pub origin_server_ts: u64,
    /// For `m.room.redaction` in versions before 11 (from 11 it is in the content).
    pub redacts: Option<OwnedEventId>,
    /// Versions 1 and 2 only (required there): the event's id and the
    /// reference hashes of the events it names.
    pub v1: Option<V1Ids>,
}

/// What an event of room versions 1 and 2 carries besides the fields of later
/// versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Ids {
    /// `$opaque:server`, minted by the server creating the event.
    pub event_id: OwnedEventId,
    /// The `sha256` reference hash (unpadded standard base64) of every event
    /// in `prev_events` and `auth_events`; `None` writes an empty hash object,
    /// as a resident server's template may (Synapse's do).
    pub hashes: BTreeMap<OwnedEventId, Option<String>>,
}

/// A new event id of room versions 1 and 2: `$<random>:<server>`.
pub fn mint_event_id(server_name: &ServerName) -> Result<OwnedEventId, PduError> {
    let random = crate::crypto::tokens::random_alphanumeric(18);
    OwnedEventId::try_from(format!("${random}:{server_name}"))
        .map_err(|e| PduError::Format(format!("minted event id: {e}")))
}

/// The `sha256` reference hash of an event, as a v1/v2 reference names it.
pub fn reference_hash_of(pdu: &Pdu, rules: &RoomVersionRules) -> Result<String, PduError> {
    reference_hash(pdu.as_object(), rules).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => PduError::TooLarge,
        other => PduError::Format(other.to_string()),
    })
}

/// Builds, hashes and signs a new event; the result has passed the format
/// checks of its room version.
pub fn build_and_sign(
    new: NewEvent,
    rules: &RoomVersionRules,
    key: &ServerKey,
    server_name: &ServerName,
) -> Result<Pdu, PduError> {
    let is_v1 = rules.events_reference_format == EventsReferenceFormatVersion::V1;
    if is_v1 != new.v1.is_some() {
        return Err(PduError::Format(if is_v1 {
            "events of room versions 1 and 2 need an event id and reference hashes".into()
        } else {
            "only events of room versions 1 and 2 carry their event id".into()
        }));
    }
    let mut object = unsigned_object(new)?;
    hash_and_sign_event(server_name.as_str(), key, &mut object, &rules.redaction).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => PduError::TooLarge,
        other => PduError::Format(other.to_string()),
    })?;
    Pdu::from_object(object, rules)
}

/// Adds this server's signature to another server's event (an invite to one
/// of our users, a restricted join we authorise); its hashes, and so its
/// event id, are unchanged.
pub fn countersign(
    pdu: &Pdu,
    rules: &RoomVersionRules,
    key: &ServerKey,
    server_name: &ServerName,
) -> Result<Pdu, PduError> {
    let mut object = pdu.as_object().clone();
    ruma::signatures::sign_event(server_name.as_str(), key, &mut object, &rules.redaction)
        .map_err(|e| PduError::Format(e.to_string()))?;
    Pdu::from_object(object, rules)
}

/// The event's fields as JSON, without hashes and signatures: what a
/// resident server hands a joining one (`/make_join`) to sign, and what
/// [`build_and_sign`] hashes and signs.
pub fn unsigned_object(new: NewEvent) -> Result<CanonicalJsonObject, PduError> {
    let mut object = CanonicalJsonObject::new();
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    let ids = |ids: &[OwnedEventId]| references(ids, new.v1.as_ref());
    let integer = |value: u64, field: &str| {
        ruma::Int::try_from(value)
            .map(CanonicalJsonValue::Integer)
            .map_err(|_| PduError::Format(format!("{field} is out of range")))
    };
    object.insert("type".into(), string(&new.kind));
    object.insert("sender".into(), string(new.sender.as_str()));
    let content: CanonicalJsonValue =
        new.content.try_into().map_err(|e| PduError::Format(format!("content is not canonical JSON: {e}")))?;
    if !matches!(content, CanonicalJsonValue::Object(_)) {
        return Err(PduError::Format("content must be an object".into()));
    }
    object.insert("content".into(), content);
    object.insert("origin_server_ts".into(), integer(new.origin_server_ts, "origin_server_ts")?);
    object.insert("depth".into(), integer(new.depth, "depth")?);
    object.insert("prev_events".into(), ids(&new.prev_events)?);
    object.insert("auth_events".into(), ids(&new.auth_events)?);
    if let Some(v1) = &new.v1 {
        object.insert("event_id".into(), string(v1.event_id.as_str()));
    }
    if let Some(room_id) = &new.room_id {
        object.insert("room_id".into(), string(room_id.as_str()));
    }
    if let Some(state_key) = &new.state_key {
        object.insert("state_key".into(), string(state_key));
    }
    if let Some(redacts) = &new.redacts {
        object.insert("redacts".into(), string(redacts.as_str()));
    }
    if CanonicalJsonValue::Object(object.clone()).to_string().len() > MAX_PDU_BYTES {
        return Err(PduError::TooLarge);
    }
    Ok(object)
}

/// References as later versions write them (ids), or with `v1` as `[id,
/// {"sha256": hash}]` pairs.
fn references(ids: &[OwnedEventId], v1: Option<&V1Ids>) -> Result<CanonicalJsonValue, PduError> {
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    let reference = |id: &OwnedEventId| -> Result<CanonicalJsonValue, PduError> {
        let Some(v1) = v1 else { return Ok(string(id.as_str())) };
        let hash = v1.hashes.get(id).ok_or_else(|| PduError::Format(format!("no reference hash for {id}")))?;
        let hashes: CanonicalJsonObject = hash.iter().map(|hash| ("sha256".to_owned(), string(hash))).collect();
        Ok(CanonicalJsonValue::Array(vec![string(id.as_str()), CanonicalJsonValue::Object(hashes)]))
    };
    Ok(CanonicalJsonValue::Array(ids.iter().map(reference).collect::<Result<_, _>>()?))
}

#[cfg(test)]
mod tests {
    use ruma::{
        events::TimelineEventType,
        serde::Base64,
        signatures::{verify_event, PublicKeyMap, PublicKeySet, Verified},
        state_res::Event,
        RoomVersionId,
    };
    use serde_json::json;

    use super::*;
    use crate::{crypto::signing_key::tests::spec_test_key, events::room_version::rules};

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("domain").unwrap()
    }

    fn message(room_version: &RoomVersionId, body: &str) -> Pdu {
        let new = NewEvent {
            prev_events: vec!["$prev".try_into().unwrap()],
            auth_events: vec!["$auth".try_into().unwrap()],
            depth: 7,
            origin_server_ts: 1_000_000,
            ..new_event("m.room.message", json!({ "msgtype": "m.text", "body": body }))
        };
        build_and_sign(new, &rules(room_version).unwrap(), &spec_test_key(), server()).unwrap()
    }

    fn public_keys() -> PublicKeyMap {
        let key = spec_test_key();
        let mut set = PublicKeySet::new();
        set.insert(key.key_id().to_owned(), Base64::parse(key.public_key_base64()).unwrap());
        let mut map = PublicKeyMap::new();
        map.insert("domain".to_owned(), set);
        map
    }

    /// Appendices, "Cryptographic Test Vectors" → "Event Signing".
    #[test]
    fn event_signing_matches_the_spec_test_vector() {
        let new = NewEvent {
            room_id: Some("!x:domain".try_into().unwrap()),
            depth: 3,
            origin_server_ts: 1_000_000,
            ..new_event("X", json!({}))
        };
        // The vector has no `origin`; versions 3+ sign the same fields, so add it
        // the way the vector does by building the object by hand.
        let rules = rules(&RoomVersionId::V6).unwrap();
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
            "type": "X", "content": {}, "prev_events": [], "auth_events": [], "depth": 3
        }))
        .unwrap();
        hash_and_sign_event("domain", &spec_test_key(), &mut object, &rules.redaction).unwrap();
        let value = serde_json::to_value(&object).unwrap();
        assert_eq!(value["hashes"]["sha256"], "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos");
        assert_eq!(
            value["signatures"]["domain"]["ed25519:1"],
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
        // Our builder produces an event that an independent verifier accepts.
        let built = build_and_sign(new, &rules, &spec_test_key(), server()).unwrap();
        assert_eq!(verify_event(&public_keys(), built.as_object(), &rules).unwrap(), Verified::All);
    }

    #[test]
    fn event_ids_follow_each_room_version() {
        let v3 = message(&RoomVersionId::V3, "hi");
        let v4 = message(&RoomVersionId::V4, "hi");
        for pdu in [&v3, &v4] {
            assert_eq!(pdu.event_id().as_str().len(), 44, "$ and 43 base64 characters");
        }
        // Same JSON, same hash; only the alphabet differs (v3 standard, v4+ URL-safe).
        let standard_to_url = v3.event_id().as_str().replace('+', "-").replace('/', "_");
        assert_eq!(standard_to_url, v4.event_id().as_str());
        assert!(!v4.event_id().as_str().contains(['+', '/']));
        assert_ne!(message(&RoomVersionId::V11, "a").event_id(), message(&RoomVersionId::V11, "b").event_id());
    }

    #[test]
    fn built_events_verify_and_round_trip_through_json_in_every_version() {
        for version in [3, 4, 5, 6, 7, 8, 9, 10, 11, 12] {
            let version = RoomVersionId::try_from(version.to_string()).unwrap();
            let rules = rules(&version).unwrap();
            let pdu = message(&version, "round trip");
            assert_eq!(verify_event(&public_keys(), pdu.as_object(), &rules).unwrap(), Verified::All, "{version}");
            let parsed = Pdu::from_json(&pdu.to_canonical_json(), &rules).unwrap();
            assert_eq!(parsed.event_id(), pdu.event_id(), "{version}");
            let stored = Pdu::from_stored_json(&pdu.to_canonical_json(), pdu.event_id().clone(), &rules).unwrap();
            assert_eq!(
                (stored.event_id(), stored.depth(), stored.content_json()),
                (pdu.event_id(), 7, pdu.content_json())
            );
            assert_eq!(parsed.event_type(), &TimelineEventType::RoomMessage);
            assert_eq!(parsed.depth(), 7);
        }
    }

    #[test]
    fn version_12_create_events_derive_the_room_id() {
        let new = NewEvent {
            state_key: Some(String::new()),
            sender: "@creator:domain".try_into().unwrap(),
            room_id: None,
            ..new_event("m.room.create", json!({ "room_version": "12" }))
        };
        let pdu = build_and_sign(new, &rules(&RoomVersionId::V12).unwrap(), &spec_test_key(), server()).unwrap();
        assert!(pdu.room_id().is_none());
        let room_id = pdu.room_id_or_derived();
        assert_eq!(&room_id.as_str()[1..], &pdu.event_id().as_str()[1..]);
        assert!(room_id.server_name().is_none(), "version 12 room ids have no server name");
    }

    #[test]
    fn redaction_strips_content_but_keeps_the_event_id() {
        let rules = rules(&RoomVersionId::V11).unwrap();
        let pdu = message(&RoomVersionId::V11, "secret");
        let redacted = pdu.redacted(&rules).unwrap();
        assert_eq!(redacted.event_id(), pdu.event_id());
        assert_eq!(redacted.content().get(), "{}");
        assert!(!redacted.to_canonical_json().contains("secret"));
    }

    #[test]
    fn tampering_changes_the_event_id_and_breaks_the_signature() {
        let rules = rules(&RoomVersionId::V10).unwrap();
        let pdu = message(&RoomVersionId::V10, "original");
        let tampered_json = pdu.to_canonical_json().replace("\"depth\":7", "\"depth\":8");
        let tampered = Pdu::from_json(&tampered_json, &rules).unwrap();
        assert_ne!(tampered.event_id(), pdu.event_id());
        assert!(verify_event(&public_keys(), tampered.as_object(), &rules).is_err());
    }

    #[test]
    fn oversized_and_malformed_events_are_refused() {
        let rules = rules(&RoomVersionId::V12).unwrap();
        let mut new = new_event("m.room.message", json!({ "body": "x".repeat(70_000) }));
        assert_eq!(build_and_sign(new.clone(), &rules, &spec_test_key(), server()).unwrap_err(), PduError::TooLarge);
        new.content = json!(["not", "an", "object"]);
        assert!(matches!(build_and_sign(new.clone(), &rules, &spec_test_key(), server()), Err(PduError::Format(_))));
        new.content = json!({ "float": 1.5 });
        assert!(matches!(build_and_sign(new, &rules, &spec_test_key(), server()), Err(PduError::Format(_))));
        for bad in ["{}", "[]", "{\"type\": 1}", "not json"] {
            assert!(Pdu::from_json(bad, &rules).is_err(), "{bad}");
        }
        let v1 = crate::events::room_version::rules(&RoomVersionId::V1).unwrap();
        assert!(matches!(
            build_and_sign(new_event("m.room.message", json!({})), &v1, &spec_test_key(), server()),
            Err(PduError::Format(_))
        ));
    }

    /// A new event by `@a:domain` in `!room:domain`, first in its room; tests
    /// override what they need.
    fn new_event(kind: &str, content: serde_json::Value) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            state_key: None,
            content,
            sender: "@a:domain".try_into().unwrap(),
            room_id: Some("!room:domain".try_into().unwrap()),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 1,
            redacts: None,
            v1: None,
        }
    }

    #[test]
    fn version_1_and_2_events_carry_their_id_and_hashed_references() {
        for version in [RoomVersionId::V1, RoomVersionId::V2] {
            let rules = rules(&version).unwrap();
            // Two earlier events of the room, built the same way.
            let earlier = |body: &str, depth: u64| {
                let event_id = mint_event_id(server()).unwrap();
                let new = NewEvent {
                    depth,
                    v1: Some(V1Ids { event_id, hashes: BTreeMap::new() }),
                    ..new_event("m.room.message", json!({ "body": body }))
                };
                build_and_sign(new, &rules, &spec_test_key(), server()).unwrap()
            };
            let (auth, prev) = (earlier("auth", 1), earlier("prev", 2));
            let hashes: BTreeMap<_, _> = [&auth, &prev]
                .iter()
                .map(|pdu| (pdu.event_id().clone(), Some(reference_hash_of(pdu, &rules).unwrap())))
                .collect();
            let event_id = mint_event_id(server()).unwrap();
            assert!(event_id.as_str().starts_with('$') && event_id.as_str().ends_with(":domain"));
            let new = NewEvent {
                prev_events: vec![prev.event_id().clone()],
                auth_events: vec![auth.event_id().clone()],
                depth: 3,
                v1: Some(V1Ids { event_id: event_id.clone(), hashes: hashes.clone() }),
                ..new_event("m.room.message", json!({ "body": "hi" }))
            };
            let built = build_and_sign(new.clone(), &rules, &spec_test_key(), server()).unwrap();
            assert_eq!(built.event_id(), &event_id, "{version}");
            assert_eq!(verify_event(&public_keys(), built.as_object(), &rules).unwrap(), Verified::All);
            // Parsed back under the version's rules: same id, pairs with hashes.
            let parsed = Pdu::from_object(built.as_object().clone(), &rules).unwrap();
            assert_eq!(parsed.event_id(), &event_id);
            assert_eq!(parsed.prev_events().collect::<Vec<_>>(), vec![prev.event_id()]);
            assert_eq!(parsed.auth_events().collect::<Vec<_>>(), vec![auth.event_id()]);
            let json = serde_json::to_value(built.as_object()).unwrap();
            assert_eq!(
                json["prev_events"],
                json!([[prev.event_id(), { "sha256": hashes[prev.event_id()].as_ref().unwrap() }]])
            );
            assert_eq!(
                json["auth_events"],
                json!([[auth.event_id(), { "sha256": hashes[auth.event_id()].as_ref().unwrap() }]])
            );
            // The template a resident server hands out carries the same.
            let template = unsigned_object(new.clone()).unwrap();
            assert_eq!(template.get("event_id"), built.as_object().get("event_id"));
            // A template's reference without a hash is written as it came.
            let mut empty = new.clone();
            empty.v1.as_mut().unwrap().hashes.insert(prev.event_id().clone(), None);
            let built = build_and_sign(empty, &rules, &spec_test_key(), server()).unwrap();
            assert_eq!(serde_json::to_value(built.as_object()).unwrap()["prev_events"], json!([[prev.event_id(), {}]]));
            // A missing hash, or a missing id, is refused.
            let mut missing = new.clone();
            missing.v1.as_mut().unwrap().hashes.clear();
            assert!(matches!(build_and_sign(missing, &rules, &spec_test_key(), server()), Err(PduError::Format(_))));
            let v3 = rules_for_v3();
            assert!(matches!(build_and_sign(new, &v3, &spec_test_key(), server()), Err(PduError::Format(_))));
        }
    }

    fn rules_for_v3() -> RoomVersionRules {
        rules(&RoomVersionId::V3).unwrap()
    }
}
