//! Joins with partial state (MSC3706, `/send_join` with `omit_members`):
//! the resident server's answer without the member events, and a joining
//! server that takes part in the room at once and completes its state
//! afterwards.

use std::net::SocketAddr;

use conduit::{
    events::{build_and_sign, room_version, NewEvent},
    federation::x_matrix,
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{json, Value};

use super::{
    free_port,
    partition::Link,
    rooms::{joined_members, wait_for_message},
    start_peer, tls_addr, tls_request_with_body, two_servers, TestCa,
};
use crate::harness::{enc, TestServer};

/// A request from b.test to a.test over TLS, signed by b.test.
async fn as_b(
    ca: &TestCa,
    a: &TestServer,
    b: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let key = &b.services().server_key;
    let authorization = x_matrix::authorization(key, "b.test", "a.test", method, path, body).unwrap();
    tls_request_with_body(&ca.pem(), tls_addr(a), "a.test", method, path, Some(&authorization), body).await
}

/// bob's join of `room` built from a.test's template and signed by b.test.
async fn bobs_join(ca: &TestCa, a: &TestServer, b: &TestServer, room: &str) -> (OwnedEventId, Value) {
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", enc(room), enc("@bob:b.test"));
    let (status, answer) = as_b(ca, a, b, "GET", &path, None).await;
    assert_eq!(status, 200, "{answer}");
    let template = &answer["event"];
    let version = RoomVersionId::try_from(answer["room_version"].as_str().unwrap()).unwrap();
    let ids = |name: &str| -> Vec<OwnedEventId> {
        template[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| OwnedEventId::try_from(id.as_str().unwrap()).unwrap())
            .collect()
    };
    let new = NewEvent {
        kind: "m.room.member".into(),
        state_key: Some("@bob:b.test".into()),
        content: json!({ "membership": "join" }),
        sender: OwnedUserId::try_from("@bob:b.test").unwrap(),
        room_id: Some(OwnedRoomId::try_from(room).unwrap()),
        prev_events: ids("prev_events"),
        auth_events: ids("auth_events"),
        depth: template["depth"].as_u64().unwrap(),
        origin_server_ts: 1_800_000_000_000,
        redacts: None,
        v1: None,
    };
    let rules = room_version::rules(&version).unwrap();
    let server = <&ruma::ServerName>::try_from("b.test").unwrap();
    let pdu = build_and_sign(new, &rules, &b.services().server_key, server).unwrap();
    (pdu.event_id().clone(), serde_json::from_str(&pdu.to_canonical_json()).unwrap())
}

fn events_of<'a>(answer: &'a Value, field: &str) -> Vec<&'a Value> {
    answer[field].as_array().map(|events| events.iter().collect()).unwrap_or_default()
}

fn member_keys(events: &[&Value]) -> Vec<String> {
    let mut keys: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// `send_join` v2 of bob's join to `room`, with `query`; a.test's answer.
async fn send_join(ca: &TestCa, a: &TestServer, b: &TestServer, room: &str, query: &str) -> (u16, Value) {
    let (event_id, join) = bobs_join(ca, a, b, room).await;
    let path = format!("/_matrix/federation/v2/send_join/{}/{}{query}", enc(room), enc(event_id.as_str()));
    as_b(ca, a, b, "PUT", &path, Some(&join)).await
}

#[tokio::test]
async fn a_join_answered_without_members_keeps_the_rest_of_the_state_and_names_the_servers() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let carol = a.client().register("carol").await;
    let named = alice.create_room(json!({ "preset": "public_chat", "name": "Forum" })).await;
    let untitled = alice.create_room(json!({ "preset": "public_chat" })).await;
    for room in [&named, &untitled] {
        carol.client.post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({})).await.assert_ok();
    }

    // A named room: no member event in the state; their auth chains are given.
    let (status, answer) = send_join(&ca, &a, &b, &named, "?omit_members=true").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["members_omitted"], true);
    assert_eq!(answer["servers_in_room"], json!(["a.test"]), "the servers before the join");
    let state = events_of(&answer, "state");
    assert!(member_keys(&state).is_empty(), "{state:?}");
    let kinds: Vec<&str> = state.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in ["m.room.create", "m.room.name", "m.room.power_levels", "m.room.join_rules"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let chain = events_of(&answer, "auth_chain");
    assert!(member_keys(&chain).contains(&"@alice:a.test".to_owned()), "alice's join authorises the state");
    // (Events carry no id from room version 3 on: compared whole.)
    let again: Vec<&&Value> = chain.iter().filter(|e| state.contains(e)).collect();
    assert!(again.is_empty(), "nothing of the state again in the chain: {again:?}");

    // An untitled room: the heroes' member events are kept, for the room's name.
    let (_, answer) = send_join(&ca, &a, &b, &untitled, "?omit_members=true").await;
    assert_eq!(member_keys(&events_of(&answer, "state")), ["@alice:a.test", "@carol:a.test"]);

    // Without the parameter, the whole state; a bad value is refused.
    let other = alice.create_room(json!({ "preset": "public_chat", "name": "Autre" })).await;
    let (_, answer) = send_join(&ca, &a, &b, &other, "").await;
    assert_eq!(answer["members_omitted"], false);
    assert_eq!(member_keys(&events_of(&answer, "state")), ["@alice:a.test"]);
    let (status, answer) = send_join(&ca, &a, &b, &other, "?omit_members=yes").await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{answer}");
}

#[tokio::test]
async fn a_room_joined_with_partial_state_is_used_at_once_and_completed_later() {
    let ca = TestCa::new();
    let (port_a, port_b) = (free_port(), free_port());
    let to_a = Link::to(SocketAddr::from(([127, 0, 0, 1], port_a))).await;
    let a = start_peer(&ca, "a.test", port_a, &[("b.test", port_b)], "").await;
    let b = start_peer(&ca, "b.test", port_b, &[("a.test", to_a.port)], "").await;
    let alice = a.client().register("alice").await;
    let carol = a.client().register("carol").await;
    let bob = b.client().register("bob").await;
    let levels = json!({ "users": { "@carol:a.test": 50 } });
    let body = json!({ "preset": "public_chat", "name": "Forum", "power_level_content_override": levels });
    let room = alice.create_room(body).await;
    carol.client.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await.assert_ok();
    // carol's join authorises her topic: b.test gets it in the auth chain, not in the state.
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    carol.client.put(&topic, json!({ "topic": "ordre du jour" })).await.assert_ok();

    // bob joins through a.test, which then becomes unreachable from b.test
    // before the state is completed.
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();
    to_a.set_down(true);
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let rooms = &b.services().rooms;
    assert!(rooms.has_partial_state(&room_id).unwrap());
    let carol_id = ruma::UserId::parse("@carol:a.test").unwrap();
    assert_eq!(rooms.membership(&room_id, &carol_id).unwrap(), None, "members not known yet");

    // bob reads carol's message (her membership known only from her own
    // auth events) and writes one, queued for a.test (named at the join).
    carol.send_text(&room, "c1", "pendant la jonction").await;
    wait_for_message(&bob, &room, "pendant la jonction").await;
    bob.send_text(&room, "b1", "depuis b").await;
    assert!(b.services().rooms.has_partial_state(&room_id).unwrap(), "a.test is still unreachable");

    // a.test reachable again: the state is completed, bob's message arrives.
    to_a.set_down(false);
    // The member list waits for the whole state.
    assert_eq!(joined_members(&bob, &room).await, ["@alice:a.test", "@bob:b.test", "@carol:a.test"]);
    assert!(!b.services().rooms.has_partial_state(&room_id).unwrap());
    wait_for_message(&alice, &room, "depuis b").await;
    // Now b.test can be a resident server for the room.
    let state = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room))).await;
    assert_eq!(state.assert_ok()["topic"], "ordre du jour");
}
