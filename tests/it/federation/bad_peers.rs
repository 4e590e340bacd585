//! A peer that misbehaves: events with forged signatures, a wrong content
//! hash, failing the auth rules, speaking for another server's users,
//! transactions over the limits. Each is handled as the spec's receipt
//! checks say, nothing is stored that should not be, and nothing panics.

use conduit::{
    crypto::signing_key::ServerKey,
    events::{build_and_sign, room_version, NewEvent, Pdu},
    federation::x_matrix,
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{json, Value};

use super::{tls_addr, tls_request_with_body, two_servers, TestCa};
use crate::harness::{enc, Session, TestServer};

/// A room on a.test that bob of b.test joined: what a forged event needs.
struct SharedRoom {
    room_id: OwnedRoomId,
    /// The latest event (bob's join).
    tip: OwnedEventId,
    power_levels: OwnedEventId,
    alice_member: OwnedEventId,
    depth: u64,
}

async fn shared_room(alice: &Session, bob: &Session) -> SharedRoom {
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();
    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await;
    let event_id = |kind: &str, key: &str| -> OwnedEventId {
        let events = state.body.as_array().unwrap();
        let event = events.iter().find(|e| e["type"] == kind && e["state_key"] == key).unwrap();
        OwnedEventId::try_from(event["event_id"].as_str().unwrap()).unwrap()
    };
    SharedRoom {
        room_id: OwnedRoomId::try_from(room.as_str()).unwrap(),
        tip: event_id("m.room.member", "@bob:b.test"),
        power_levels: event_id("m.room.power_levels", ""),
        alice_member: event_id("m.room.member", "@alice:a.test"),
        depth: 100,
    }
}

/// A message in the room from `sender`, signed by `key` as `server`.
fn message(room: &SharedRoom, sender: &str, auth: Vec<OwnedEventId>, body: &str, key: &ServerKey, server: &str) -> Pdu {
    let new = NewEvent {
        kind: "m.room.message".into(),
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": body }),
        sender: OwnedUserId::try_from(sender).unwrap(),
        room_id: Some(room.room_id.clone()),
        prev_events: vec![room.tip.clone()],
        auth_events: auth,
        depth: room.depth,
        origin_server_ts: 1_800_000_000_000,
        redacts: None,
        v1: None,
    };
    let rules = room_version::rules(&RoomVersionId::V12).unwrap();
    build_and_sign(new, &rules, key, <&ruma::ServerName>::try_from(server).unwrap()).unwrap()
}

fn json_of(pdu: &Pdu) -> Value {
    serde_json::from_str(&pdu.to_canonical_json()).unwrap()
}

/// `PUT /send/{txn}` to b.test, signed by a.test's real key.
async fn send_as_a(ca: &TestCa, a: &TestServer, b: &TestServer, txn: &str, pdus: Vec<Value>) -> (u16, Value) {
    super::send_transaction_as_a(ca, a, b, txn, pdus, Vec::new()).await
}

#[tokio::test]
async fn a_misbehaving_peer_gets_each_event_refused_as_the_spec_says() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = shared_room(&alice, &bob).await;
    let a_key = a.services().server_key.clone();
    let alice_auth = vec![room.power_levels.clone(), room.alice_member.clone()];

    // Signed with a key that is not a.test's (same key id): dropped.
    let forger = ServerKey::from_seed(a_key.key_id().trim_start_matches("ed25519:"), &[9u8; 32]).unwrap();
    let forged = message(&room, "@alice:a.test", alice_auth.clone(), "forged", &forger, "a.test");
    // a.test speaking for a user of c.test: c.test did not sign, dropped.
    let other_server = message(&room, "@carol:c.test", alice_auth.clone(), "not yours", &a_key, "a.test");
    // mallory is not in the room: rejected by the auth rules.
    let intruder = message(&room, "@mallory:a.test", vec![room.power_levels.clone()], "let me in", &a_key, "a.test");
    // The content changed after signing: kept, but redacted.
    let honest = message(&room, "@alice:a.test", alice_auth.clone(), "the original", &a_key, "a.test");
    let mut tampered = json_of(&honest);
    tampered["content"]["body"] = json!("tampered");
    // And one good event.
    let good = message(&room, "@alice:a.test", alice_auth, "all fine", &a_key, "a.test");

    let pdus = vec![json_of(&forged), json_of(&other_server), json_of(&intruder), tampered, json_of(&good)];
    let (status, answer) = send_as_a(&ca, &a, &b, "txn-1", pdus.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let results = &answer["pdus"];
    assert!(results[intruder.event_id().as_str()]["error"].is_string(), "{answer}");
    assert_eq!(results[good.event_id().as_str()], json!({}), "{answer}");
    assert_eq!(results[honest.event_id().as_str()], json!({}), "{answer}");

    let stored = |id: &ruma::EventId| b.services().rooms.get_pdu(id).unwrap();
    assert!(stored(forged.event_id()).is_none(), "a forged event is not stored");
    assert!(stored(other_server.event_id()).is_none(), "an event another server did not sign is not stored");
    let (_, rejected) = stored(intruder.event_id()).expect("a rejected event is kept as rejected");
    assert_eq!(rejected.status, conduit::storage::records::EventStatus::Rejected);
    let (redacted, _) = stored(honest.event_id()).expect("the tampered event is kept");
    assert_eq!(redacted.content_json(), "{}", "stored redacted");

    // bob sees the good event, never the intruder's nor the tampered text.
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let timeline = sync.assert_ok()["rooms"]["join"][room.room_id.as_str()]["timeline"]["events"].to_string();
    assert!(timeline.contains("all fine"), "{timeline}");
    for hidden in ["let me in", "tampered", "the original", "forged", "not yours"] {
        assert!(!timeline.contains(hidden), "{hidden} reached the client: {timeline}");
    }

    // The same transaction again: the same answer, nothing processed twice.
    let (status, again) = send_as_a(&ca, &a, &b, "txn-1", pdus).await;
    assert_eq!((status, &again), (200, &answer));

    // Over the limits: refused whole.
    let too_many: Vec<Value> = (0..51).map(|_| json_of(&good)).collect();
    let (status, body) = send_as_a(&ca, &a, &b, "txn-2", too_many).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    // Not JSON PDUs, a room b.test is not in: results, no panic.
    let junk = vec![json!("x"), json!({ "room_id": "!unknown:a.test", "type": "m.room.message" }), json!({})];
    let (status, body) = send_as_a(&ca, &a, &b, "txn-3", junk).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn room_data_is_served_only_to_servers_in_the_room() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let joined_only =
        json!({ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } });
    let room = alice.create_room(json!({ "preset": "private_chat", "initial_state": [joined_only] })).await;
    let event = alice.send_text(&room, "t1", "secret").await;
    // b.test has nobody in the room: it may not read its events (history
    // visibility `joined`; Synapse serves `shared` events to any server) nor
    // its state.
    let key = &b.services().server_key;
    for path in [
        format!("/_matrix/federation/v1/event/{}", enc(&event)),
        format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&event)),
        format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room), enc(&event)),
        format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&room), enc(&event)),
    ] {
        let authorization = x_matrix::authorization(key, "b.test", "a.test", "GET", &path, None).unwrap();
        let (status, body) =
            tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "GET", &path, Some(&authorization), None).await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{path}: {body}");
    }
    // Nor join a private room.
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", enc(&room), enc("@bob:b.test"));
    let authorization = x_matrix::authorization(key, "b.test", "a.test", "GET", &path, None).unwrap();
    let (status, body) =
        tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "GET", &path, Some(&authorization), None).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // Nor ask for another server's user.
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", enc(&room), enc("@eve:c.test"));
    let authorization = x_matrix::authorization(key, "b.test", "a.test", "GET", &path, None).unwrap();
    let (status, _) =
        tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "GET", &path, Some(&authorization), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_server_denied_by_the_room_acl_is_ignored_and_refused() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = shared_room(&alice, &bob).await;
    let room_id = room.room_id.as_str();
    let acl = json!({ "allow": ["*"], "deny": ["b.test"], "allow_ip_literals": false });
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(room_id));
    alice.client.put(&path, acl).await.assert_ok();

    // b.test still hears of the room (it has a member), but what it sends is ignored.
    let ignored = bob.send_text(room_id, "t1", "after the acl").await;
    let ignored = ruma::OwnedEventId::try_from(ignored).unwrap();
    // Once b.test's transaction was answered (its queue for a.test empty), nothing was stored.
    let a_test = <&ruma::ServerName>::try_from("a.test").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !b.services().rooms.outbox_page(a_test, 1).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "b.test never delivered its transaction");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(a.services().rooms.get_pdu(&ignored).unwrap().is_none(), "a denied server's event was stored");
    // Its room requests are refused.
    let key = &b.services().server_key;
    let path = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(room_id), enc(room.tip.as_str()));
    let authorization = x_matrix::authorization(key, "b.test", "a.test", "GET", &path, None).unwrap();
    let (status, body) =
        tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "GET", &path, Some(&authorization), None).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // A transaction with one of its events gets the ACL's refusal for it.
    let (_, message) = b.services().rooms.get_pdu(&ignored).unwrap().unwrap();
    let path = "/_matrix/federation/v1/send/acl-1".to_owned();
    let body = json!({ "origin": "b.test", "origin_server_ts": 1, "pdus": [serde_json::from_str::<Value>(&message.json).unwrap()] });
    let authorization = x_matrix::authorization(key, "b.test", "a.test", "PUT", &path, Some(&body)).unwrap();
    let (status, answer) =
        tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "PUT", &path, Some(&authorization), Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let error = answer["pdus"][ignored.as_str()]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ACL"), "{answer}");
}

#[tokio::test]
async fn a_server_in_the_room_reads_its_events_state_and_times() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = shared_room(&alice, &bob).await;
    let room_id = room.room_id.as_str();
    let event = alice.send_text(room_id, "t1", "lisible").await;
    let key = &b.services().server_key;
    let get = |path: String| {
        let authorization = x_matrix::authorization(key, "b.test", "a.test", "GET", &path, None).unwrap();
        let (ca_pem, addr) = (ca.pem(), tls_addr(&a));
        async move { tls_request_with_body(&ca_pem, addr, "a.test", "GET", &path, Some(&authorization), None).await }
    };
    let (status, body) = get(format!("/_matrix/federation/v1/event/{}", enc(&event))).await;
    assert_eq!((status, body["pdus"][0]["content"]["body"].as_str()), (200, Some("lisible")), "{body}");
    let (status, body) =
        get(format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(room_id), enc(&event))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["pdu_ids"].as_array().unwrap().iter().any(|id| id == room.power_levels.as_str()), "{body}");
    let (status, body) =
        get(format!("/_matrix/federation/v1/timestamp_to_event/{}?ts=9999999999999&dir=b", enc(room_id))).await;
    assert_eq!((status, body["event_id"].as_str()), (200, Some(event.as_str())), "{body}");
    let (status, body) = get(format!("/_matrix/federation/v1/timestamp_to_event/{}?ts=1&dir=x", enc(room_id))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
}

#[tokio::test]
async fn a_join_naming_our_user_is_vouched_for_only_within_the_restrictions() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    b.client().register("carol").await;
    let lobby = alice.create_room(json!({ "preset": "public_chat" })).await;
    let restricted = json!({ "type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": lobby }] } });
    let room = alice.create_room(json!({ "preset": "private_chat", "initial_state": [restricted] })).await;
    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await;
    let id_of = |kind: &str, key: &str| -> OwnedEventId {
        let event = state.body.as_array().unwrap().iter().find(|e| e["type"] == kind && e["state_key"] == key).unwrap();
        OwnedEventId::try_from(event["event_id"].as_str().unwrap()).unwrap()
    };
    let latest = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room))).await;
    let tip = OwnedEventId::try_from(latest.body["chunk"][0]["event_id"].as_str().unwrap()).unwrap();

    // b.test skips /make_join and names alice as the voucher for carol, who is in no allowed room.
    let new = NewEvent {
        kind: "m.room.member".into(),
        state_key: Some("@carol:b.test".into()),
        content: json!({ "membership": "join", "join_authorised_via_users_server": "@alice:a.test" }),
        sender: OwnedUserId::try_from("@carol:b.test").unwrap(),
        room_id: Some(OwnedRoomId::try_from(room.as_str()).unwrap()),
        prev_events: vec![tip],
        auth_events: vec![
            id_of("m.room.power_levels", ""),
            id_of("m.room.join_rules", ""),
            id_of("m.room.member", "@alice:a.test"),
        ],
        depth: 20,
        origin_server_ts: 1_800_000_000_000,
        redacts: None,
        v1: None,
    };
    let rules = room_version::rules(&RoomVersionId::V12).unwrap();
    let key = &b.services().server_key;
    let join = build_and_sign(new, &rules, key, <&ruma::ServerName>::try_from("b.test").unwrap()).unwrap();
    let path = format!("/_matrix/federation/v2/send_join/{}/{}", enc(&room), enc(join.event_id().as_str()));
    let body = json_of(&join);
    let authorization = x_matrix::authorization(key, "b.test", "a.test", "PUT", &path, Some(&body)).unwrap();
    let (status, answer) =
        tls_request_with_body(&ca.pem(), tls_addr(&a), "a.test", "PUT", &path, Some(&authorization), Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    assert!(a.services().rooms.get_pdu(join.event_id()).unwrap().is_none(), "the join was not stored");
}

#[tokio::test]
async fn an_event_at_the_largest_depth_does_not_stop_the_room() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let mut room = shared_room(&alice, &bob).await;
    room.depth = (1 << 53) - 1;
    let a_key = a.services().server_key.clone();
    let auth = vec![room.power_levels.clone(), room.alice_member.clone()];
    let deep = message(&room, "@alice:a.test", auth, "au fond", &a_key, "a.test");
    let (status, answer) = send_as_a(&ca, &a, &b, "deep-1", vec![json_of(&deep)]).await;
    assert_eq!((status, &answer["pdus"][deep.event_id().as_str()]), (200, &json!({})), "{answer}");
    // b.test's users still send, and b.test still hands out join templates.
    bob.send_text(room.room_id.as_str(), "after", "still talking").await;
}
