//! Rooms: creation, sending, state, membership, history visibility — and the
//! forbidden paths, through the HTTP API.

use serde_json::json;

use crate::harness::{enc, state_path, Session, TestServer};

async fn send_text(session: &Session, room: &str, txn: &str, body: &str) -> serde_json::Value {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    session.client.put(&path, json!({ "msgtype": "m.text", "body": body })).await.body
}

#[tokio::test]
async fn create_room_applies_the_spec_order_and_presets() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "name": "Forum", "topic": "All things", "preset": "public_chat" })).await;
    assert!(room.starts_with('!') && !room.contains(':'), "version 12 room ids have no server part: {room}");

    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await;
    let events = state.assert_ok().as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.guest_access",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let create = events.iter().find(|e| e["type"] == "m.room.create").unwrap();
    assert_eq!(create["content"]["room_version"], "12");
    assert_eq!(create["sender"], alice.user_id.as_str());
    let power = events.iter().find(|e| e["type"] == "m.room.power_levels").unwrap();
    assert!(power["content"]["users"].get(&alice.user_id).is_none(), "v12 creators are not listed");
    assert_eq!(power["content"]["events"]["m.room.tombstone"], 150);

    let name = alice.client.get(&state_path(&room, "m.room.name", "")).await;
    assert_eq!(name.assert_ok()["name"], "Forum");
    let join_rules = alice.client.get(&state_path(&room, "m.room.join_rules", "")).await;
    assert_eq!(join_rules.assert_ok()["join_rule"], "public");
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([room]));
    let caps = alice.client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(caps.assert_ok()["capabilities"]["m.room_versions"]["default"], "12");
}

#[tokio::test]
async fn room_versions_are_honoured_and_unknown_ones_refused() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "room_version": "10" })).await;
    assert!(room.ends_with(":test.local"), "{room}");
    let power = alice.client.get(&state_path(&room, "m.room.power_levels", "")).await;
    assert_eq!(power.assert_ok()["users"][&alice.user_id], 100, "before v12 the creator is listed");
    let create = alice.client.get(&format!("{}?format=event", state_path(&room, "m.room.create", ""))).await;
    assert_eq!(create.assert_ok()["content"]["creator"], alice.user_id.as_str());

    for version in ["1", "2", "99", "custom"] {
        let reply = alice.client.post("/_matrix/client/v3/createRoom", json!({ "room_version": version })).await;
        reply.assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

#[tokio::test]
async fn sending_is_idempotent_per_device_and_transaction() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = send_text(&alice, &room, "t1", "hello").await;
    let again = send_text(&alice, &room, "t1", "hello").await;
    assert_eq!(first["event_id"], again["event_id"]);
    let other = send_text(&alice, &room, "t2", "hello").await;
    assert_ne!(first["event_id"], other["event_id"]);

    let second_device = Session::from_reply(&client, client.login("alice", crate::harness::PASSWORD).await.assert_ok());
    let from_other_device = send_text(&second_device, &room, "t1", "hello").await;
    assert_ne!(first["event_id"], from_other_device["event_id"], "transaction ids are per device");

    let event_id = first["event_id"].as_str().unwrap();
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(event_id))).await;
    let event = event.assert_ok();
    assert_eq!(event["content"]["body"], "hello");
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_a_send_make_one_event() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for txn in 0..10 {
        let txn = format!("race{txn}");
        let sends = (0..8).map(|_| send_text(&alice, &room, &txn, "once"));
        let ids: std::collections::BTreeSet<String> = futures_util::future::join_all(sends)
            .await
            .iter()
            .map(|reply| reply["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1, "every retry of {txn} answers the first event's id");
    }
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room));
    let page = alice.client.get(&path).await;
    let sent =
        page.assert_ok()["chunk"].as_array().unwrap().iter().filter(|event| event["content"]["body"] == "once").count();
    assert_eq!(sent, 10, "one event per transaction");
}

#[tokio::test]
async fn non_members_cannot_send_or_read() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let secret = send_text(&alice, &room, "t", "secret").await;
    let event_id = secret["event_id"].as_str().unwrap();

    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/x", enc(&room));
    eve.client.put(&path, json!({ "body": "hi" })).await.assert_error(403, "M_FORBIDDEN");
    eve.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await.assert_error(403, "M_FORBIDDEN");
    eve.client.get(&state_path(&room, "m.room.name", "")).await.assert_error(403, "M_FORBIDDEN");
    let reply = eve.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(event_id))).await;
    reply.assert_error(404, "M_NOT_FOUND");
    eve.join(&room).await.assert_error(403, "M_FORBIDDEN");
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    eve.client.post(&invite, json!({ "user_id": eve.user_id })).await.assert_error(403, "M_FORBIDDEN");
    // An unknown room looks the same as a room one is not in.
    let unknown = "/_matrix/client/v3/rooms/%21nope%3Atest.local/send/m.room.message/x";
    eve.client.put(unknown, json!({})).await.assert_error(403, "M_FORBIDDEN");
    eve.client
        .put("/_matrix/client/v3/rooms/not-a-room/send/m.room.message/x", json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let joined = eve.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]));
}

#[tokio::test]
async fn power_levels_decide_state_changes() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    bob.client
        .put(&state_path(&room, "m.room.name", ""), json!({ "name": "bob's" }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    send_text(&bob, &room, "t", "members may talk").await["event_id"].as_str().expect("sent");
    alice.client.put(&state_path(&room, "m.room.name", ""), json!({ "name": "alice's" })).await.assert_ok();
    // A trailing slash means the empty state key.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    alice.client.put(&path, json!({ "topic": "t" })).await.assert_ok();
    assert_eq!(bob.client.get(&state_path(&room, "m.room.topic", "")).await.assert_ok()["topic"], "t");

    // Banned users cannot come back.
    let ban = json!({ "membership": "ban", "reason": "spam" });
    alice.client.put(&state_path(&room, "m.room.member", &bob.user_id), ban).await.assert_ok();
    send_text(&bob, &room, "t2", "still here?").await;
    bob.join(&room).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn invitations_open_private_rooms() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    bob.join(&room).await.assert_error(403, "M_FORBIDDEN");
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    alice.client.post(&invite, json!({ "user_id": "@ghost:test.local" })).await.assert_error(404, "M_NOT_FOUND");
    // Another server's user: that server is asked, and cannot be reached here.
    alice.client.post(&invite, json!({ "user_id": "@x:other.server" })).await.assert_error(503, "M_UNKNOWN");
    alice.client.post(&invite, json!({ "user_id": bob.user_id })).await.assert_ok();
    let reply = bob.client.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), json!({})).await;
    assert_eq!(reply.assert_ok()["room_id"], room.as_str());
    assert_eq!(bob.client.get("/_matrix/client/v3/joined_rooms").await.assert_ok()["joined_rooms"], json!([room]));

    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), json!({})).await.assert_ok();
    assert_eq!(bob.client.get("/_matrix/client/v3/joined_rooms").await.assert_ok()["joined_rooms"], json!([]));
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/after", enc(&room));
    bob.client.put(&path, json!({ "body": "x" })).await.assert_error(403, "M_FORBIDDEN");
    bob.join(&room).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn trusted_private_chats_make_invitees_creators_in_version_12() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true }))
        .await;
    let create = alice.client.get(&state_path(&room, "m.room.create", "")).await;
    assert_eq!(create.assert_ok()["additional_creators"], json!([bob.user_id]));
    let member = alice.client.get(&state_path(&room, "m.room.member", &bob.user_id)).await;
    assert_eq!(member.assert_ok()["membership"], "invite");
    assert_eq!(member.body["is_direct"], true);
    bob.join(&room).await.assert_ok();
    bob.client.put(&state_path(&room, "m.room.name", ""), json!({ "name": "ours" })).await.assert_ok();
}

#[tokio::test]
async fn history_visibility_is_enforced_on_event_reads() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let carol = client.register("carol").await;

    let shared = alice.create_room(json!({ "preset": "public_chat" })).await;
    let before = send_text(&alice, &shared, "a", "before bob").await["event_id"].as_str().unwrap().to_owned();
    let event_path = |room: &str, id: &str| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id));
    bob.client.get(&event_path(&shared, &before)).await.assert_error(404, "M_NOT_FOUND");
    bob.join(&shared).await.assert_ok();
    bob.client.get(&event_path(&shared, &before)).await.assert_ok();

    let joined_only = alice.create_room(json!({ "preset": "public_chat" })).await;
    alice
        .client
        .put(&state_path(&joined_only, "m.room.history_visibility", ""), json!({ "history_visibility": "joined" }))
        .await
        .assert_ok();
    let hidden = send_text(&alice, &joined_only, "b", "before carol").await["event_id"].as_str().unwrap().to_owned();
    carol.join(&joined_only).await.assert_ok();
    let after = send_text(&alice, &joined_only, "c", "after carol").await["event_id"].as_str().unwrap().to_owned();
    carol.client.get(&event_path(&joined_only, &hidden)).await.assert_error(404, "M_NOT_FOUND");
    carol.client.get(&event_path(&joined_only, &after)).await.assert_ok();
    // An event id from another room is not found through this room.
    carol.client.get(&event_path(&joined_only, &before)).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn malformed_and_oversized_events_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "name": "before" })).await;
    let path = state_path(&room, "m.room.name", "");
    let reply = alice.client.send("PUT", &path, &[], bytes::Bytes::from_static(b"[1]")).await;
    reply.assert_error(400, "M_BAD_JSON");
    let reply = alice.client.put(&path, json!({ "name": 42 })).await;
    reply.assert_error(400, "M_BAD_JSON");
    assert!(reply.body["error"].as_str().unwrap().contains("m.room.name"));
    let member = state_path(&room, "m.room.member", &alice.user_id);
    alice.client.put(&member, json!({ "membership": 7 })).await.assert_error(400, "M_BAD_JSON");
    let big = json!({ "topic": "x".repeat(70_000) });
    let path = state_path(&room, "m.room.topic", "");
    alice.client.put(&path, big).await.assert_error(413, "M_TOO_LARGE");
    alice.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(alice.client.get(&state_path(&room, "m.room.name", "")).await.assert_ok()["name"], "before");
    let reply = alice.client.post("/_matrix/client/v3/createRoom", json!({ "preset": "party" })).await;
    reply.assert_error(400, "M_INVALID_PARAM");
    let reply = alice.client.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "a:b" })).await;
    reply.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn rooms_and_events_survive_a_restart() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "name": "Durable" })).await;
    let sent = send_text(&alice, &room, "t", "kept").await["event_id"].as_str().unwrap().to_owned();
    let server = server.restart().await;
    let alice = server.client().with_token(&alice.token);
    let event = alice.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&sent))).await;
    assert_eq!(event.assert_ok()["content"]["body"], "kept");
    assert_eq!(alice.get(&state_path(&room, "m.room.name", "")).await.assert_ok()["name"], "Durable");
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t", enc(&room));
    let again = alice.put(&path, json!({ "msgtype": "m.text", "body": "kept" })).await;
    assert_eq!(again.assert_ok()["event_id"], sent.as_str(), "transaction ids survive restarts");
}

#[tokio::test]
async fn aliases_resolve_join_and_guard_the_canonical_alias() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "room_alias_name": "forum" })).await;
    let canonical = alice.client.get(&state_path(&room, "m.room.canonical_alias", "")).await;
    assert_eq!(canonical.assert_ok()["alias"], "#forum:test.local");
    let resolved = server.client().get("/_matrix/client/v3/directory/room/%23forum%3Atest.local").await;
    assert_eq!(resolved.assert_ok()["room_id"], room.as_str());
    assert_eq!(resolved.body["servers"], json!(["test.local"]));

    let taken = alice.client.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "forum" })).await;
    taken.assert_error(400, "M_ROOM_IN_USE");
    let bad = alice.client.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "has space" })).await;
    bad.assert_error(400, "M_INVALID_PARAM");

    let reply = bob.client.post("/_matrix/client/v3/join/%23forum%3Atest.local", json!({})).await;
    assert_eq!(reply.assert_ok()["room_id"], room.as_str());
    bob.client.post("/_matrix/client/v3/join/%23nope%3Atest.local", json!({})).await.assert_error(404, "M_NOT_FOUND");

    let put = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", enc(alias));
    bob.client.put(&put("#bobs:test.local"), json!({ "room_id": room })).await.assert_ok();
    bob.client.put(&put("#bobs:test.local"), json!({ "room_id": room })).await.assert_error(409, "M_UNKNOWN");
    bob.client.put(&put("#x:other.server"), json!({ "room_id": room })).await.assert_error(400, "M_INVALID_PARAM");
    let eve = client.register("eve").await;
    eve.client.put(&put("#eves:test.local"), json!({ "room_id": room })).await.assert_error(403, "M_FORBIDDEN");
    let list = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room))).await;
    let mut aliases: Vec<String> = serde_json::from_value(list.assert_ok()["aliases"].clone()).unwrap();
    aliases.sort();
    assert_eq!(aliases, vec!["#bobs:test.local", "#forum:test.local"]);
    eve.client.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room))).await.assert_error(403, "M_FORBIDDEN");

    // The canonical alias may only name local aliases of this room.
    let other = alice.create_room(json!({ "room_alias_name": "other" })).await;
    let path = state_path(&room, "m.room.canonical_alias", "");
    alice.client.put(&path, json!({ "alias": "#other:test.local" })).await.assert_error(400, "M_BAD_ALIAS");
    alice
        .client
        .put(&path, json!({ "alias": "#forum:test.local", "alt_aliases": ["#bobs:test.local"] }))
        .await
        .assert_ok();
    assert!(other.starts_with('!'));

    // Deleting: not by a plain member who did not create it; by its creator yes.
    eve.client.delete(&put("#bobs:test.local"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    bob.client.delete(&put("#forum:test.local"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    bob.client.delete(&put("#bobs:test.local"), json!({})).await.assert_ok();
    server.client().get(&put("#bobs:test.local")).await.assert_error(404, "M_NOT_FOUND");
    alice.client.delete(&put("#forum:test.local"), json!({})).await.assert_ok();
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_the_allowed_rooms() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let space = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&space).await.assert_ok();
    let restricted = alice
        .create_room(json!({ "preset": "private_chat", "initial_state": [{
        "type": "m.room.join_rules",
        "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] }
    }] }))
        .await;
    bob.join(&restricted).await.assert_ok();
    let member = alice.client.get(&state_path(&restricted, "m.room.member", &bob.user_id)).await;
    assert_eq!(member.assert_ok()["join_authorised_via_users_server"], alice.user_id.as_str());
    eve.join(&restricted).await.assert_error(403, "M_FORBIDDEN");
    // Restricted join rules do not exist before room version 8.
    let old = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_version": "7", "initial_state": [{
            "type": "m.room.join_rules",
            "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] }
        }] }),
        )
        .await;
    let old = old.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.join(&old).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn upgrades_replace_the_room_and_carry_its_state() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let old = alice
        .create_room(json!({ "room_version": "10", "preset": "public_chat", "name": "Old forum",
        "topic": "t", "room_alias_name": "agora" }))
        .await;
    bob.join(&old).await.assert_ok();
    let upgrade = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old));
    bob.client.post(&upgrade, json!({ "new_version": "12" })).await.assert_error(403, "M_FORBIDDEN");
    alice.client.post(&upgrade, json!({ "new_version": "1" })).await.assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    let reply = alice.client.post(&upgrade, json!({ "new_version": "12" })).await;
    let new = reply.assert_ok()["replacement_room"].as_str().unwrap().to_owned();

    let create = alice.client.get(&state_path(&new, "m.room.create", "")).await;
    assert_eq!(create.assert_ok()["predecessor"]["room_id"], old.as_str());
    assert_eq!(create.body["room_version"], "12");
    assert_eq!(alice.client.get(&state_path(&new, "m.room.name", "")).await.assert_ok()["name"], "Old forum");
    assert_eq!(alice.client.get(&state_path(&new, "m.room.join_rules", "")).await.assert_ok()["join_rule"], "public");
    let power = alice.client.get(&state_path(&new, "m.room.power_levels", "")).await;
    assert!(power.assert_ok()["users"].get(&alice.user_id).is_none(), "v12 creators are not listed");
    let tombstone = alice.client.get(&state_path(&old, "m.room.tombstone", "")).await;
    assert_eq!(tombstone.assert_ok()["replacement_room"], new.as_str());
    let alias = client.get("/_matrix/client/v3/directory/room/%23agora%3Atest.local").await;
    assert_eq!(alias.assert_ok()["room_id"], new.as_str(), "aliases move to the new room");
    assert_eq!(
        alice.client.get(&state_path(&new, "m.room.canonical_alias", "")).await.assert_ok()["alias"],
        "#agora:test.local"
    );

    // The old room is closed to ordinary members; the new one is open to join.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/late", enc(&old));
    bob.client.put(&path, json!({ "body": "hello?" })).await.assert_error(403, "M_FORBIDDEN");
    bob.join(&new).await.assert_ok();
}

/// A deployment policy that refuses encryption, as the public-sector rules
/// will for public forums.
struct NoEncryption;

impl conduit::rooms::EventPolicy for NoEncryption {
    fn check(
        &self,
        _rooms: &conduit::rooms::Rooms,
        pdu: &conduit::events::Pdu,
        _state: &dyn conduit::rooms::StateView,
    ) -> conduit::error::Result<()> {
        if pdu.kind().to_string() == "m.room.encryption" {
            return Err(conduit::error::Error::forbidden("Encryption is not allowed here"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_policy_hook_can_veto_events_and_nothing_is_stored() {
    let server = TestServer::start().await;
    server.services().rooms.set_policy(std::sync::Arc::new(NoEncryption));
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = state_path(&room, "m.room.encryption", "");
    let reply = alice.client.put(&path, json!({ "algorithm": "m.megolm.v1.aes-sha2" })).await;
    reply.assert_error(403, "M_FORBIDDEN");
    assert!(reply.body["error"].as_str().unwrap().contains("Encryption is not allowed"));
    alice.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
    alice.client.put(&state_path(&room, "m.room.name", ""), json!({ "name": "fine" })).await.assert_ok();
}

#[tokio::test]
async fn every_creatable_room_version_works_end_to_end() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    for version in 3..=12 {
        let room = alice.create_room(json!({ "room_version": version.to_string(), "preset": "public_chat" })).await;
        assert_eq!(room.contains(':'), version < 12, "v{version}: {room}");
        bob.join(&room).await.assert_ok();
        let sent = send_text(&bob, &room, "t", "hello").await["event_id"].as_str().unwrap().to_owned();
        assert_eq!(sent.len(), 44, "v{version}: event ids are reference hashes");
        if version >= 4 {
            assert!(!sent.contains(['+', '/']), "v{version}: URL-safe event ids: {sent}");
        }
        let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r", enc(&room), enc(&sent));
        alice.client.put(&redact, json!({ "reason": "test" })).await.assert_ok();
        let event = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&sent))).await;
        assert_eq!(event.assert_ok()["content"], json!({}), "v{version}: redacted");
        let create = alice.client.get(&state_path(&room, "m.room.create", "")).await;
        assert_eq!(create.assert_ok()["room_version"], version.to_string());
        assert_eq!(create.body.get("creator").is_some(), version < 11, "v{version}: `creator` only before v11");
    }
}

#[tokio::test]
async fn members_at_a_past_point() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let before_bob = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room))).await;
    let token = before_bob.assert_ok()["start"].as_str().unwrap().to_owned();
    bob.join(&room).await.assert_ok();
    let now = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room))).await;
    assert_eq!(now.assert_ok()["chunk"].as_array().unwrap().len(), 2);
    let then = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/members?at={token}", enc(&room))).await;
    assert_eq!(then.assert_ok()["chunk"].as_array().unwrap().len(), 1, "bob had not joined yet");
}

#[tokio::test]
async fn transaction_ids_are_scoped_to_the_request_path() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let first = alice.create_room(json!({})).await;
    let second = alice.create_room(json!({})).await;
    let a = send_text(&alice, &first, "same", "one").await["event_id"].clone();
    let b = send_text(&alice, &second, "same", "two").await["event_id"].clone();
    assert_ne!(a, b, "the same txn id in another room is another request");
    let other_type = format!("/_matrix/client/v3/rooms/{}/send/m.reaction/same", enc(&first));
    let c = alice.client.put(&other_type, json!({})).await.assert_ok()["event_id"].clone();
    assert_ne!(a, c, "the same txn id for another event type is another request");
}

#[tokio::test]
async fn cached_auth_chains_match_a_walk_of_the_graph() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    for version in ["10", "12"] {
        let room = alice.create_room(json!({ "room_version": version, "preset": "public_chat" })).await;
        bob.join(&room).await.assert_ok();
        alice.client.put(&state_path(&room, "m.room.name", ""), json!({ "name": "x" })).await.assert_ok();
        let bob_member =
            alice.client.get(&format!("{}?format=event", state_path(&room, "m.room.member", &bob.user_id))).await;
        let bob_join: ruma::OwnedEventId = bob_member.assert_ok()["event_id"].as_str().unwrap().try_into().unwrap();
        let message: ruma::OwnedEventId = bob.send_text(&room, "m", "hello").await.try_into().unwrap();
        let services = server.services();
        let rooms = &services.rooms;
        let walk = |id: &ruma::OwnedEventId| {
            conduit::rooms::resolution::auth_chain([id.clone()], &|id: &ruma::EventId| {
                rooms.get_pdu(id).unwrap().map(|(pdu, _)| pdu)
            })
        };
        let cached = rooms.auth_chain(std::slice::from_ref(&bob_join)).unwrap();
        assert_eq!(cached, walk(&bob_join), "v{version}");
        // A message's chain is not stored but computed from its auth events'.
        let message_chain = rooms.auth_chain(std::slice::from_ref(&message)).unwrap();
        assert_eq!(message_chain, walk(&message), "v{version}: a message");
        assert!(message_chain.contains(&bob_join), "v{version}: the sender's join authorises the message");
        let kinds: std::collections::BTreeSet<String> =
            cached.iter().map(|id| rooms.get_pdu(id).unwrap().unwrap().0.kind().to_string()).collect();
        assert!(kinds.contains("m.room.power_levels") && kinds.contains("m.room.join_rules"), "v{version}: {kinds:?}");
        assert_eq!(kinds.contains("m.room.create"), version != "12", "v12 events do not reference the create event");
    }
}

/// Corners of room state that clients and the conformance suite rely on
/// (Synapse's behaviour where the spec leaves room).
#[tokio::test]
async fn repeated_state_and_joins_aliases_and_cross_room_redactions() {
    let server = crate::harness::TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({})).await;

    // The same state again: the existing event, no new one.
    let topic = crate::harness::state_path(&room, "m.room.topic", "");
    let first = alice.client.put(&topic, json!({ "topic": "same" })).await.assert_ok()["event_id"].clone();
    let again = alice.client.put(&topic, json!({ "topic": "same" })).await.assert_ok()["event_id"].clone();
    assert_eq!(first, again);
    let changed = alice.client.put(&topic, json!({ "topic": "other" })).await.assert_ok()["event_id"].clone();
    assert_ne!(first, changed);

    // Extra keys of a join go into the member event; joining again changes nothing.
    let join = format!("/_matrix/client/v3/rooms/{}/join", crate::harness::enc(&room));
    bob.client
        .post(
            &join,
            json!({
                "reason": "hello",
                "org.example.note": 1,
                "third_party_signed": null,
                "join_authorised_via_users_server": "@mallory:elsewhere.test"
            }),
        )
        .await
        .assert_ok();
    let member = bob.client.get(&crate::harness::state_path(&room, "m.room.member", &bob.user_id)).await;
    let member = member.assert_ok().clone();
    assert_eq!((member["reason"].as_str(), member["org.example.note"].as_i64()), (Some("hello"), Some(1)), "{member}");
    assert!(member.get("third_party_signed").is_none());
    assert!(member.get("join_authorised_via_users_server").is_none(), "the authoriser is the server's to name");
    let members = |session: crate::harness::Session| {
        let room = room.clone();
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", crate::harness::enc(&room));
            let page = session.client.get(&path).await.assert_ok().clone();
            page["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.member").count()
        }
    };
    let before = members(alice.clone()).await;
    bob.client.post(&join, json!({ "reason": "hello", "org.example.note": 1 })).await.assert_ok();
    assert_eq!(members(alice.clone()).await, before, "an identical join adds no event");

    // A malformed alternative alias is M_INVALID_PARAM; a deleted alias leaves the canonical alias event.
    let canonical = crate::harness::state_path(&room, "m.room.canonical_alias", "");
    alice.client.put(&canonical, json!({ "alt_aliases": ["not-an-alias"] })).await.assert_error(400, "M_INVALID_PARAM");
    alice
        .client
        .put("/_matrix/client/v3/directory/room/%23corner%3Atest.local", json!({ "room_id": room }))
        .await
        .assert_ok();
    alice
        .client
        .put("/_matrix/client/v3/directory/room/%23corner2%3Atest.local", json!({ "room_id": room }))
        .await
        .assert_ok();
    let both = json!({ "alias": "#corner:test.local", "alt_aliases": ["#corner:test.local", "#corner2:test.local"] });
    alice.client.put(&canonical, both).await.assert_ok();
    alice.client.delete("/_matrix/client/v3/directory/room/%23corner%3Atest.local", json!({})).await.assert_ok();
    let now = alice.client.get(&canonical).await.assert_ok().clone();
    assert_eq!(now, json!({ "alt_aliases": ["#corner2:test.local"] }));

    // Redacting an event of another room through this one is a 400.
    let elsewhere = alice.send_text(&other, "t", "elsewhere").await;
    let redact = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/r1",
        crate::harness::enc(&room),
        crate::harness::enc(&elsewhere)
    );
    alice.client.put(&redact, json!({})).await.assert_error(400, "M_INVALID_PARAM");
}

/// A former member reads the room as it was when they left; anyone reads a
/// `world_readable` room; nobody else reads it (Synapse's behaviour).
#[tokio::test]
async fn former_members_read_the_state_they_left_and_world_readable_rooms_are_open() {
    let server = crate::harness::TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let carol = client.register("carol").await;
    let topic = crate::harness::state_path(&room, "m.room.topic", "");
    alice.client.put(&topic, json!({ "topic": "while bob was here" })).await.assert_ok();
    alice.send_text(&room, "1", "bob hears this").await;
    bob.leave(&room).await.assert_ok();
    alice.client.put(&topic, json!({ "topic": "after bob left" })).await.assert_ok();
    alice.send_text(&room, "2", "bob is gone").await;
    carol.join(&room).await.assert_ok();
    carol.leave(&room).await.assert_ok();
    let dave = client.register("dave").await;

    assert_eq!(bob.client.get(&topic).await.assert_ok()["topic"], "while bob was here");
    let state = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await;
    assert!(state.assert_ok().as_array().unwrap().iter().any(|e| e["content"]["topic"] == "while bob was here"));
    let members = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room))).await;
    let ids: Vec<&str> =
        members.assert_ok()["chunk"].as_array().unwrap().iter().filter_map(|e| e["state_key"].as_str()).collect();
    assert!(!ids.contains(&carol.user_id.as_str()), "carol came after bob left: {ids:?}");
    dave.client.get(&topic).await.assert_error(403, "M_FORBIDDEN");
    // Bob's /messages stop at his leave, in both directions.
    let messages = |dir: &str| format!("/_matrix/client/v3/rooms/{}/messages?dir={dir}&limit=50", enc(&room));
    for dir in ["b", "f"] {
        let page = bob.client.get(&messages(dir)).await.assert_ok().clone();
        let bodies = crate::harness::message_bodies(&page["chunk"]);
        assert!(
            bodies.contains(&"bob hears this".to_owned()) && !bodies.contains(&"bob is gone".to_owned()),
            "{dir}: {bodies:?}"
        );
    }
    dave.client.get(&messages("b")).await.assert_error(403, "M_FORBIDDEN");
    // Once forgotten, the room is no longer theirs to read.
    carol.client.post(&format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)), json!({})).await.assert_ok();
    carol.client.get(&topic).await.assert_error(403, "M_FORBIDDEN");

    let visibility = crate::harness::state_path(&room, "m.room.history_visibility", "");
    alice.client.put(&visibility, json!({ "history_visibility": "world_readable" })).await.assert_ok();
    assert_eq!(dave.client.get(&topic).await.assert_ok()["topic"], "after bob left");
    // Anyone reads a world-readable room's messages without joining: those
    // sent while it was (visibility is judged at each event).
    alice.send_text(&room, "3", "for the world").await;
    let page = dave.client.get(&messages("b")).await.assert_ok().clone();
    let bodies = crate::harness::message_bodies(&page["chunk"]);
    assert!(bodies.contains(&"for the world".to_owned()) && !bodies.contains(&"bob is gone".to_owned()), "{page}");
    let members = dave.client.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room))).await;
    assert!(members.assert_ok()["chunk"].as_array().unwrap().len() >= 3);
}

#[tokio::test]
async fn the_deprecated_event_endpoint_finds_the_room_itself() {
    let server = crate::harness::TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({})).await;
    let event_id = alice.send_text(&room, "t", "hello").await;
    let path = format!("/_matrix/client/v3/events/{}", enc(&event_id));
    let event = alice.client.get(&path).await.assert_ok().clone();
    assert_eq!((event["room_id"].as_str(), event["content"]["body"].as_str()), (Some(room.as_str()), Some("hello")));
    eve.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
    alice.client.get("/_matrix/client/v3/events/%24nope").await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn room_initial_sync_gives_state_messages_and_membership() {
    let server = crate::harness::TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "name": "Old clients" })).await;
    bob.join(&room).await.assert_ok();
    alice.send_text(&room, "1", "first").await;
    bob.leave(&room).await.assert_ok();
    alice.send_text(&room, "2", "after bob left").await;
    let path = format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room));
    let bodies = |body: &serde_json::Value| -> Vec<String> {
        body["messages"]["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };

    let mine = alice.client.get(&path).await.assert_ok().clone();
    assert_eq!((mine["room_id"].as_str(), mine["membership"].as_str()), (Some(room.as_str()), Some("join")));
    assert_eq!(bodies(&mine), ["first", "after bob left"], "oldest first");
    assert!(mine["state"].as_array().unwrap().iter().any(|e| e["content"]["name"] == "Old clients"));
    assert!(mine["messages"]["start"].is_string() && mine["messages"]["end"].is_string());
    assert_eq!(mine["visibility"], "private");

    let bobs = bob.client.get(&path).await.assert_ok().clone();
    assert_eq!(bobs["membership"], "leave");
    assert_eq!(bodies(&bobs), ["first"], "up to the leave");

    let private = alice.create_room(json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&private));
    eve.client.get(&path).await.assert_error(403, "M_FORBIDDEN");

    // The global /initialSync: joined rooms, invites with their event, left rooms when archived.
    alice.invite(&private, &eve.user_id).await.assert_ok();
    let all = eve.client.get("/_matrix/client/v3/initialSync").await.assert_ok().clone();
    let invited = all["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == private.as_str()).cloned().unwrap();
    assert_eq!(
        (invited["membership"].as_str(), invited["invite"]["sender"].as_str()),
        (Some("invite"), Some(alice.user_id.as_str()))
    );
    assert!(all["end"].as_str().unwrap().starts_with('s'));
    let rooms_of = |body: &serde_json::Value| -> Vec<String> {
        body["rooms"].as_array().unwrap().iter().filter_map(|r| r["room_id"].as_str().map(str::to_owned)).collect()
    };
    assert!(rooms_of(bob.client.get("/_matrix/client/v3/initialSync").await.assert_ok()).is_empty());
    let archived = bob.client.get("/_matrix/client/v3/initialSync?archived=true").await.assert_ok().clone();
    assert_eq!(rooms_of(&archived), vec![room.clone()]);
    let token = all["end"].as_str().unwrap();
    eve.client.get(&format!("/_matrix/client/v3/sync?since={token}&timeout=0")).await.assert_ok();
}
