//! Rooms shared by servers: joins through another server, events sent both
//! ways through the durable queue and received through the receipt checks.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::two_servers;
use crate::harness::{enc, enc_json, message_bodies, Session};

/// Syncs as `session` until the room's timeline has a message `body`; the
/// events seen. Fails after 20 s.
pub(super) async fn wait_for_message(session: &Session, room: &str, body: &str) -> Vec<Value> {
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
        let events = sync["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        seen.extend(events.iter().cloned());
        if message_bodies(&Value::Array(events)).iter().any(|b| b == body) {
            return seen;
        }
    }
    panic!("{} never saw {body:?} in {room}; saw {seen:?}", session.user_id);
}

/// The joined members of `room` as `session` sees them.
pub(super) async fn joined_members(session: &Session, room: &str) -> Vec<String> {
    let reply = session.client.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room))).await;
    let mut members: Vec<String> = reply.assert_ok()["joined"].as_object().unwrap().keys().cloned().collect();
    members.sort();
    members
}

/// Two servers, alice of a.test in a public room of hers that bob of b.test joined.
struct SharedRoom {
    _ca: super::TestCa,
    a: crate::harness::TestServer,
    b: crate::harness::TestServer,
    alice: Session,
    bob: Session,
    room: String,
}

async fn shared_public_room() -> SharedRoom {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();
    SharedRoom { _ca: ca, a, b, alice, bob, room }
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

    // bob takes his message back: a.test applies the redaction.
    let event_id = from_bob["event_id"].as_str().unwrap();
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(event_id));
    bob.client.put(&redact, json!({})).await.assert_ok();
    let event = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(event_id));
    wait_until(&alice, &event, |body| body["content"] == json!({})).await;
}

/// The sync sections (`invite`, `join`, `leave`) holding `room`, after
/// syncing from scratch (left rooms included).
async fn sections_with(session: &Session, room: &str) -> Vec<&'static str> {
    let filter = enc_json(&json!({ "room": { "include_leave": true } }));
    let sync = session.client.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={filter}")).await;
    let sync = sync.assert_ok();
    ["invite", "join", "leave"].into_iter().filter(|section| sync["rooms"][section][room].is_object()).collect()
}

/// Waits until `check` holds for what `session` gets from `path` (20 s at most).
/// Waits until `session` sees `user`'s membership in `room` (its `/members`) be `membership`.
async fn wait_for_membership(session: &Session, room: &str, user: &str, membership: &str) {
    let members = format!("/_matrix/client/v3/rooms/{}/members", enc(room));
    wait_until(session, &members, |body| {
        let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
        chunk.iter().any(|e| e["state_key"] == user && e["content"]["membership"] == membership)
    })
    .await;
}

async fn wait_until(session: &Session, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = session.client.get(path).await;
        if reply.status == 200 && check(&reply.body) {
            return reply.body;
        }
        assert!(Instant::now() < deadline, "{path} never satisfied the check: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn invites_cross_servers_and_are_accepted_or_declined() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let carol = b.client().register("carol").await;
    let room = alice.create_room(json!({ "preset": "private_chat", "name": "Équipe" })).await;

    // An unknown user of b.test cannot be invited; bob and carol can.
    let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    alice.client.post(&path, json!({ "user_id": "@nobody:b.test" })).await.assert_error(404, "M_NOT_FOUND");
    alice.client.post(&path, json!({ "user_id": "@bob:b.test" })).await.assert_ok();
    alice.client.post(&path, json!({ "user_id": "@carol:b.test" })).await.assert_ok();

    // The invite shows in bob's sync with the room's stripped state.
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let state = &sync.assert_ok()["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Équipe"));
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:b.test"));

    // A private room: bob joins through the inviter's server without naming it.
    bob.join(&room).await.assert_ok();
    assert_eq!(sections_with(&bob, &room).await, ["join"]);
    bob.send_text(&room, "t1", "merci").await;
    wait_for_message(&alice, &room, "merci").await;

    // carol declines: a.test records her leave, her sync shows the room as left.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    carol.client.post(&leave, json!({})).await.assert_ok();
    assert_eq!(sections_with(&carol, &room).await, ["leave"]);
    wait_for_membership(&alice, &room, "@carol:b.test", "leave").await;

    // An invite to a room nobody of b.test is in, declined through a.test.
    let dave = b.client().register("dave").await;
    let other = alice.create_room(json!({ "preset": "private_chat" })).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&other));
    alice.client.post(&invite, json!({ "user_id": "@dave:b.test" })).await.assert_ok();
    assert_eq!(sections_with(&dave, &other).await, ["invite"]);
    // An old client sees the pending invite too, with who sent it.
    let initial = dave.client.get("/_matrix/client/v3/initialSync?limit=1").await.assert_ok().clone();
    let pending = initial["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == other.as_str()).cloned();
    let pending = pending.expect("the remote invite is in /initialSync");
    assert_eq!(
        (pending["membership"].as_str(), pending["invite"]["sender"].as_str(), pending["invite"]["room_id"].as_str()),
        (Some("invite"), Some(alice.user_id.as_str()), Some(other.as_str()))
    );
    dave.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&other)), json!({})).await.assert_ok();
    assert_eq!(sections_with(&dave, &other).await, ["leave"]);
    wait_for_membership(&alice, &other, "@dave:b.test", "leave").await;
    // A room left without being joined has nothing to read: the old
    // client's archive leaves it out rather than failing.
    let archive = dave.client.get("/_matrix/client/v3/initialSync?archived=true&limit=1").await;
    let rooms = archive.assert_ok()["rooms"].as_array().unwrap().clone();
    assert!(rooms.iter().all(|entry| entry["room_id"] != other.as_str()), "{rooms:?}");

    // An invite over federation from a user one ignores never shows.
    let erin = b.client().register("erin").await;
    let ignore = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&erin.user_id));
    erin.client.put(&ignore, json!({ "ignored_users": { (alice.user_id.clone()): {} } })).await.assert_ok();
    alice.client.post(&invite, json!({ "user_id": "@erin:b.test" })).await.assert_ok();
    assert!(sections_with(&erin, &other).await.is_empty(), "the ignored inviter's invite is left out");
}

#[tokio::test]
async fn leaving_and_banning_reach_the_other_server() {
    // (Every server kept alive: `..` would drop them.)
    let SharedRoom { _ca, a: _a, b: _b, alice, bob, room } = shared_public_room().await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));

    // bob leaves: alice's server hears of it.
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), json!({})).await.assert_ok();
    let members = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room));
    wait_until(&alice, &members, |body| body["joined"].as_object().unwrap().len() == 1).await;

    // bob comes back, and is banned: his server hears of it and he can no longer talk.
    bob.client.post(&join, json!({})).await.assert_ok();
    wait_until(&alice, &members, |body| body["joined"].as_object().unwrap().len() == 2).await;
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
    alice.client.post(&ban, json!({ "user_id": "@bob:b.test", "reason": "spam" })).await.assert_ok();
    let with_left =
        format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc_json(&json!({ "room": { "include_leave": true } })));
    let sync = wait_until(&bob, &with_left, |sync| sync["rooms"]["leave"][&room].is_object()).await;
    let events = &sync["rooms"]["leave"][&room]["timeline"]["events"];
    let ban = events.as_array().unwrap().iter().rev().find(|e| e["type"] == "m.room.member").unwrap();
    assert_eq!((ban["content"]["membership"].as_str(), ban["content"]["reason"].as_str()), (Some("ban"), Some("spam")));
    let refused = bob.send_message(&room, "t9", json!({ "msgtype": "m.text", "body": "still here?" })).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    bob.client.post(&join, json!({})).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn events_for_a_server_that_is_down_wait_and_survive_restarts() {
    let SharedRoom { _ca, a, b, alice, bob, room } = shared_public_room().await;

    // b.test goes down; alice keeps talking; then a.test restarts too.
    let b_dir = b.stop().await;
    for n in 0..3 {
        alice.send_text(&room, &format!("down{n}"), &format!("while b is down {n}")).await;
    }
    let a = super::restart_peer(a).await;
    let text = std::fs::read_to_string(b_dir.path().join("conduit.toml")).unwrap();
    let b = crate::harness::TestServer::start_in(b_dir, &text).await;
    let bob = Session { client: b.client().with_token(&bob.token), ..bob };
    let seen = wait_for_message(&bob, &room, "while b is down 2").await;
    let bodies = message_bodies(&Value::Array(seen));
    for n in 0..3 {
        assert!(bodies.contains(&format!("while b is down {n}")), "{bodies:?}");
    }
    // And the conversation goes on both ways.
    bob.send_text(&room, "back", "back again").await;
    let alice = Session { client: a.client().with_token(&alice.token), ..alice };
    wait_for_message(&alice, &room, "back again").await;
}

#[tokio::test]
async fn knocks_and_restricted_joins_cross_servers() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;

    // bob knocks on a knockable room of a.test; alice sees it and invites him in.
    let knock_rules = json!({ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } });
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Sur demande", "initial_state": [knock_rules] }))
        .await;
    let knock = format!("/_matrix/client/v3/knock/{}?server_name=a.test", enc(&room));
    bob.client.post(&knock, json!({ "reason": "bonjour" })).await.assert_ok();
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let state = &sync.assert_ok()["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"), "{state}");
    wait_for_membership(&alice, &room, "@bob:b.test", "knock").await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    alice.client.post(&invite, json!({ "user_id": "@bob:b.test" })).await.assert_ok();
    bob.join(&room).await.assert_ok();
    assert_eq!(sections_with(&bob, &room).await, ["join"]);

    // A restricted room open to the members of `room`: a.test vouches for bob's join.
    let restricted = json!({ "type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": room }] } });
    let inner = alice.create_room(json!({ "preset": "private_chat", "initial_state": [restricted] })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&inner));
    bob.client.post(&join, json!({})).await.assert_ok();
    let own = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&inner), enc("@bob:b.test"));
    let member = bob.client.get(&own).await;
    assert_eq!(member.assert_ok()["join_authorised_via_users_server"], "@alice:a.test");
    // Someone in no allowed room cannot.
    let carol = b.client().register("carol").await;
    let refused = carol.client.post(&join, json!({})).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}

#[tokio::test]
async fn history_from_before_a_join_is_fetched_from_the_room_server() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "name": "Archives" })).await;
    for n in 0..15 {
        alice.send_text(&room, &format!("old{n}"), &format!("old message {n}")).await;
    }
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();

    // Paging back from now: bob's join, then the history b.test fetches from a.test, in order.
    let mut from: Option<String> = None;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..10 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=7", enc(&room));
        if let Some(token) = &from {
            path.push_str(&format!("&from={token}"));
        }
        let page = bob.client.get(&path).await;
        let page = page.assert_ok();
        events.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let bodies = message_bodies(&Value::Array(events.clone()));
    let expected: Vec<String> = (0..15).rev().map(|n| format!("old message {n}")).collect();
    assert_eq!(bodies, expected, "newest first, none missing, none twice");
    assert_eq!(events.last().unwrap()["type"], "m.room.create", "back to the room's creation");
    let names = events.iter().filter(|e| e["type"] == "m.room.name").count();
    assert_eq!(names, 1, "state events of the history too");
}

#[tokio::test]
async fn typing_and_read_receipts_cross_servers() {
    let SharedRoom { _ca, a, b: _b, alice, bob, room } = shared_public_room().await;
    let message = alice.send_text(&room, "t1", "quelqu'un ?").await;
    wait_for_message(&bob, &room, "quelqu'un ?").await;

    // bob types: alice's sync shows it; bob reads alice's message: alice's sync shows the receipt.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc("@bob:b.test"));
    bob.client.put(&typing, json!({ "typing": true, "timeout": 20000 })).await.assert_ok();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message));
    bob.client.post(&receipt, json!({})).await.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut saw_typing, mut saw_receipt) = (false, false);
    while !(saw_typing && saw_receipt) {
        assert!(Instant::now() < deadline, "typing {saw_typing}, receipt {saw_receipt}");
        let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
        let ephemeral = sync.assert_ok()["rooms"]["join"][&room]["ephemeral"]["events"].clone();
        for event in ephemeral.as_array().into_iter().flatten() {
            if event["type"] == "m.typing" && event["content"]["user_ids"] == json!(["@bob:b.test"]) {
                saw_typing = true;
            }
            if event["type"] == "m.receipt" && event["content"][&message]["m.read"]["@bob:b.test"].is_object() {
                saw_receipt = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A server cannot speak for another server's user.
    let forged =
        json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": "@alice:a.test", "typing": true } });
    let services = a.services();
    let origin = <&ruma::ServerName>::try_from("b.test").unwrap();
    let sinks = conduit::federation::edu::EduSinks {
        typing: &services.typing,
        e2ee: &services.e2ee,
        presence: &services.presence,
    };
    conduit::federation::edu::receive(&services.federation, &services.rooms, sinks, origin, &[forged]).await;
    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let typing_now = sync.assert_ok()["rooms"]["join"][&room]["ephemeral"]["events"].to_string();
    assert!(!typing_now.contains("@alice:a.test\"]"), "{typing_now}");
}

#[tokio::test]
async fn another_servers_room_directory_is_read_through_it() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let room =
        alice.create_room(json!({ "preset": "public_chat", "visibility": "public", "name": "Forum national" })).await;
    alice.create_room(json!({ "preset": "public_chat", "name": "Unlisted" })).await;
    let listed = bob.client.get("/_matrix/client/v3/publicRooms?server=a.test").await;
    let chunk = listed.assert_ok()["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk.len(), 1, "{chunk:?}");
    assert_eq!(
        (chunk[0]["room_id"].as_str(), chunk[0]["name"].as_str()),
        (Some(room.as_str()), Some("Forum national"))
    );
    let search = json!({ "filter": { "generic_search_term": "national" } });
    let found = bob.client.post("/_matrix/client/v3/publicRooms?server=a.test", search).await;
    assert_eq!(found.assert_ok()["chunk"].as_array().unwrap().len(), 1);
    // Anonymous clients cannot make the server ask another one.
    let anonymous = b.client().get("/_matrix/client/v3/publicRooms?server=a.test").await;
    anonymous.assert_error(401, "M_MISSING_TOKEN");
}

/// Syncs as `session` until an `m.presence` event of `user` satisfies `check`.
async fn wait_for_presence(session: &Session, user: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut since: Option<String> = None;
    loop {
        assert!(Instant::now() < deadline, "{} never saw the presence of {user}", session.user_id);
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=500&since={token}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let sync = session.client.get(&path).await;
        since = sync.body["next_batch"].as_str().map(str::to_owned).or(since);
        let events = sync.body["presence"]["events"].as_array().cloned().unwrap_or_default();
        if let Some(event) = events.into_iter().find(|e| e["sender"] == user && check(&e["content"])) {
            return event;
        }
    }
}

#[tokio::test]
async fn presence_crosses_servers_both_ways_and_not_for_others_users() {
    let SharedRoom { _ca, a, b: _b, alice, bob, room: _ } = shared_public_room().await;

    let status = |user: &str| format!("/_matrix/client/v3/presence/{}/status", enc(user));
    let away = json!({ "presence": "unavailable", "status_msg": "en réunion" });
    alice.client.put(&status("@alice:a.test"), away).await.assert_ok();
    wait_for_presence(&bob, "@alice:a.test", |c| c["presence"] == "unavailable" && c["status_msg"] == "en réunion")
        .await;
    let seen = bob.client.get(&status("@alice:a.test")).await;
    assert_eq!(seen.assert_ok()["status_msg"], "en réunion");

    let available = json!({ "presence": "online", "status_msg": "disponible" });
    bob.client.put(&status("@bob:b.test"), available).await.assert_ok();
    wait_for_presence(&alice, "@bob:b.test", |c| c["presence"] == "online" && c["status_msg"] == "disponible").await;

    // b.test cannot speak for a.test's users.
    let forged = json!({ "edu_type": "m.presence", "content": { "push": [
        { "user_id": "@alice:a.test", "presence": "offline", "status_msg": "forged", "last_active_ago": 0 } ] } });
    let services = a.services();
    let sinks = conduit::federation::edu::EduSinks {
        typing: &services.typing,
        e2ee: &services.e2ee,
        presence: &services.presence,
    };
    let origin = <&ruma::ServerName>::try_from("b.test").unwrap();
    conduit::federation::edu::receive(&services.federation, &services.rooms, sinks, origin, &[forged]).await;
    let alice_id = ruma::UserId::parse("@alice:a.test").unwrap();
    assert_eq!(services.presence.content(&alice_id)["status_msg"], "en réunion");
}

#[tokio::test]
async fn a_space_spanning_servers_shows_the_rooms_its_user_may_see() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let space = alice
        .create_room(json!({ "preset": "public_chat", "name": "Ministère", "creation_content": { "type": "m.space" } }))
        .await;
    let local = alice.create_room(json!({ "preset": "public_chat", "name": "Salle A" })).await;
    let public = bob.create_room(json!({ "preset": "public_chat", "name": "Salle B" })).await;
    let secret = bob.create_room(json!({ "preset": "private_chat", "name": "Secret B" })).await;
    for (child, server) in [(&local, "a.test"), (&public, "b.test"), (&secret, "b.test")] {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(child));
        alice.client.put(&path, json!({ "via": [server] })).await.assert_ok();
    }

    let hierarchy = alice.client.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space))).await;
    let rooms = hierarchy.assert_ok()["rooms"].as_array().cloned().unwrap();
    let names: Vec<&str> = rooms.iter().filter_map(|room| room["name"].as_str()).collect();
    assert_eq!(names, ["Ministère", "Salle A", "Salle B"], "{rooms:?}");
    assert_eq!(rooms[0]["children_state"].as_array().unwrap().len(), 3);
    let remote = rooms.iter().find(|room| room["room_id"] == public.as_str()).unwrap();
    assert_eq!((remote["join_rule"].as_str(), remote["num_joined_members"].as_u64()), (Some("public"), Some(1)));

    // b.test tells a.test of its public room, not of the private one.
    let services = b.services();
    let origin = <&ruma::ServerName>::try_from("a.test").unwrap();
    let secret_id = ruma::RoomId::parse(&secret).unwrap();
    let refused = conduit::federation::hierarchy::serve(&services.rooms, origin, &secret_id, false);
    assert_eq!(refused.unwrap_err().errcode(), "M_NOT_FOUND");
    let public_id = ruma::RoomId::parse(&public).unwrap();
    let answer = conduit::federation::hierarchy::serve(&services.rooms, origin, &public_id, false).unwrap();
    assert_eq!(answer["room"]["name"], "Salle B");
}

#[tokio::test]
async fn the_user_directory_finds_other_servers_users_met_in_rooms() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let carol = b.client().register("carol").await;
    for (session, display) in [(&bob, "Bob Martin"), (&carol, "Carole Martinez")] {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&session.user_id));
        session.client.put(&path, json!({ "displayname": display })).await.assert_ok();
    }
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();
    wait_until(&alice, &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), |body| {
        body["joined"]["@bob:b.test"]["display_name"] == "Bob Martin"
    })
    .await;

    // bob shares a room with alice: found by name; carol does not: not found.
    let search = alice.client.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "mart" })).await;
    let results = search.assert_ok()["results"].clone();
    assert_eq!(results, json!([{ "user_id": "@bob:b.test", "display_name": "Bob Martin" }]), "{results}");
}

#[tokio::test]
async fn other_servers_profiles_are_kept_refreshed_on_change_and_served_while_their_server_is_down() {
    let SharedRoom { _ca, a: _a, b, alice, bob, room: _ } = shared_public_room().await;
    let profile = format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"));
    let rename = |name: &str| {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc("@bob:b.test"));
        (path, json!({ "displayname": name }))
    };
    let (path, body) = rename("Bob Martin");
    bob.client.put(&path, body).await.assert_ok();
    wait_until(&alice, &profile, |p| p["displayname"] == "Bob Martin").await;

    // A new name reaches alice's server as a member event: the copy kept is dropped.
    let (path, body) = rename("Bob M.");
    bob.client.put(&path, body).await.assert_ok();
    wait_until(&alice, &profile, |p| p["displayname"] == "Bob M.").await;

    // b.test goes away: the copy is still served.
    let _b_dir = b.stop().await;
    let kept = alice.client.get(&profile).await;
    assert_eq!(kept.assert_ok()["displayname"], "Bob M.");
    let unknown = alice.client.get(&format!("/_matrix/client/v3/profile/{}", enc("@carol:b.test"))).await;
    assert!(unknown.status >= 500, "never fetched, unreachable: {}", unknown.status);
}

/// Whether a.test has queued `event` for b.test.
fn queued_for_b(a: &crate::harness::TestServer, event: &str) -> bool {
    let b = <&ruma::ServerName>::try_from("b.test").unwrap();
    a.services().rooms.outbox_page(b, 1000).unwrap().iter().any(|entry| entry.event_id.as_str() == event)
}

#[tokio::test]
async fn a_server_gets_the_rooms_events_until_its_last_member_leaves() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let carol = b.client().register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "name": "Forum" })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room));
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    for user in [&bob, &carol] {
        user.client.post(&join, json!({})).await.assert_ok();
        wait_for_membership(&alice, &room, &user.user_id, "join").await;
    }
    // The room's servers follow its members, change by change: one of two
    // members of b.test leaving keeps it in the room.
    carol.client.post(&leave, json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, &carol.user_id, "leave").await;
    alice.send_text(&room, "m1", "b.test still here").await;
    wait_for_message(&bob, &room, "b.test still here").await;
    bob.client.post(&leave, json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, &bob.user_id, "leave").await;
    let after = alice.send_text(&room, "m2", "b.test gone").await;
    assert!(!queued_for_b(&a, &after), "the event was queued for a server with no member left");
}
