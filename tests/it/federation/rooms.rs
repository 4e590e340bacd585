//! Rooms shared by servers: joins through another server, events sent both
//! ways through the durable queue and received through the receipt checks.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::two_servers;
use crate::harness::{enc, message_bodies, Session};

/// Syncs as `session` until the room's timeline has a message `body`; the
/// events seen. Fails after 20 s.
async fn wait_for_message(session: &Session, room: &str, body: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut since: Option<String> = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=1000&since={token}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let reply = session.client.get(&path).await;
        let sync = reply.assert_ok();
        since = sync["next_batch"].as_str().map(str::to_owned);
        let events = &sync["rooms"]["join"][room]["timeline"]["events"];
        seen.extend(events.as_array().cloned().unwrap_or_default());
        if message_bodies(events).iter().any(|b| b == body) {
            return seen;
        }
    }
    panic!("{} never saw {body:?} in {room}; saw {seen:?}", session.user_id);
}

/// The joined members of `room` as `session` sees them.
async fn joined_members(session: &Session, room: &str) -> Vec<String> {
    let reply = session.client.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room))).await;
    let mut members: Vec<String> = reply.assert_ok()["joined"].as_object().unwrap().keys().cloned().collect();
    members.sort();
    members
}

#[tokio::test]
async fn a_user_of_another_server_joins_a_public_room_and_both_talk() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "name": "Forum" })).await;
    alice.send_text(&room, "t0", "said before bob came").await;

    // A version 12 room id names no server: the client says where to ask.
    let unknown = bob.client.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await;
    unknown.assert_error(404, "M_NOT_FOUND");
    let path = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    assert_eq!(bob.client.post(&path, json!({})).await.assert_ok()["room_id"], room.as_str());

    // b.test holds the room's state, checked, and both servers see both members.
    let name = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room))).await;
    assert_eq!(name.assert_ok()["name"], "Forum");
    assert_eq!(joined_members(&bob, &room).await, ["@alice:a.test", "@bob:b.test"]);
    assert_eq!(joined_members(&alice, &room).await, ["@alice:a.test", "@bob:b.test"]);

    alice.send_text(&room, "t1", "hello from a").await;
    wait_for_message(&bob, &room, "hello from a").await;
    bob.send_text(&room, "t2", "hello from b").await;
    let seen = wait_for_message(&alice, &room, "hello from b").await;
    let from_bob = seen.iter().find(|e| e["content"]["body"] == "hello from b").unwrap();
    assert_eq!(from_bob["sender"], "@bob:b.test");
}
