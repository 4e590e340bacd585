//! Room history and moderation: /messages, members, redaction, kick/ban/unban.

use serde_json::json;

use crate::harness::{enc, enc_json, message_bodies, Session, TestServer};

fn chunk_bodies(reply: &crate::harness::Reply) -> Vec<String> {
    message_bodies(&reply.body["chunk"])
}

async fn messages(session: &Session, room: &str, query: &str) -> crate::harness::Reply {
    session.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room))).await
}

#[tokio::test]
async fn messages_paginate_both_ways_with_tokens() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..7 {
        alice.send_content(&room, &format!("t{i}"), json!({ "msgtype": "m.text", "body": format!("m{i}") })).await;
    }
    let filter = "filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D";
    let page1 = messages(&alice, &room, &format!("dir=b&limit=3&{filter}")).await;
    assert_eq!(message_bodies(&page1.assert_ok_ref().body["chunk"]), vec!["m6", "m5", "m4"]);
    let end = page1.body["end"].as_str().unwrap().to_owned();
    let page2 = messages(&alice, &room, &format!("dir=b&limit=3&from={end}&{filter}")).await;
    assert_eq!(message_bodies(&page2.body["chunk"]), vec!["m3", "m2", "m1"]);
    let end2 = page2.body["end"].as_str().unwrap().to_owned();
    let page3 = messages(&alice, &room, &format!("dir=b&limit=3&from={end2}&{filter}")).await;
    assert_eq!(message_bodies(&page3.body["chunk"]), vec!["m0"]);
    assert!(page3.body.get("end").is_none(), "the start of the room ends pagination");

    let forward = messages(&alice, &room, &format!("dir=f&limit=2&from={end}&{filter}")).await;
    assert_eq!(message_bodies(&forward.body["chunk"]), vec!["m4", "m5"]);
    let everything = messages(&alice, &room, "dir=f&limit=100").await;
    let kinds: Vec<&str> =
        everything.body["chunk"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "m.room.create", "forward from the start begins with the create event");

    // A page that stops inside the last stretch of the room still says there is more.
    let small = alice.create_room(json!({})).await;
    let first = messages(&alice, &small, "dir=b&limit=4").await;
    assert_eq!(first.assert_ok()["chunk"].as_array().unwrap().len(), 4);
    let end = first.body["end"].as_str().expect("more to come").to_owned();
    let rest = messages(&alice, &small, &format!("dir=b&limit=4&from={end}")).await;
    let rest_len = rest.assert_ok()["chunk"].as_array().unwrap().len();
    assert!((1..4).contains(&rest_len), "{rest_len}");
    assert!(rest.body.get("end").is_none());

    messages(&alice, &room, "dir=x").await.assert_error(400, "M_INVALID_PARAM");
    messages(&alice, &room, "dir=b&from=abc").await.assert_error(400, "M_INVALID_PARAM");
    messages(&alice, &room, "dir=b&filter=nope").await.assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn messages_filter_and_lazy_load_members() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_content(&room, "a", json!({ "msgtype": "m.text", "body": "from alice" })).await;
    bob.send_content(&room, "b", json!({ "msgtype": "m.image", "body": "pic", "url": "mxc://test.local/x" })).await;
    let by_bob = format!("filter={}", enc_json(&json!({ "senders": [bob.user_id], "lazy_load_members": true })));
    let reply = messages(&alice, &room, &format!("dir=b&{by_bob}")).await;
    let chunk = reply.assert_ok()["chunk"].as_array().unwrap().clone();
    assert!(chunk.iter().all(|e| e["sender"] == bob.user_id.as_str()));
    let state = reply.body["state"].as_array().unwrap();
    assert_eq!(state.len(), 1, "only the member events of the senders shown");
    assert_eq!(state[0]["state_key"], bob.user_id.as_str());
    let with_url = format!("filter={}", enc_json(&json!({ "contains_url": true })));
    assert_eq!(chunk_bodies(&messages(&alice, &room, &format!("dir=b&{with_url}")).await), vec!["pic"]);
    let not_messages = format!("filter={}", enc_json(&json!({ "not_types": ["m.room.*"] })));
    assert!(messages(&alice, &room, &format!("dir=b&{not_messages}")).await.body["chunk"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn messages_respect_history_visibility_and_membership() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&room));
    alice.client.put(&path, json!({ "history_visibility": "joined" })).await.assert_ok();
    alice.send_content(&room, "1", json!({ "msgtype": "m.text", "body": "before bob" })).await;
    bob.join(&room).await.assert_ok();
    alice.send_content(&room, "2", json!({ "msgtype": "m.text", "body": "after bob" })).await;
    assert_eq!(chunk_bodies(&messages(&bob, &room, "dir=b").await), vec!["after bob"]);
    assert_eq!(chunk_bodies(&messages(&alice, &room, "dir=b").await), vec!["after bob", "before bob"]);
    messages(&eve, &room, "dir=b").await.assert_error(403, "M_FORBIDDEN");
    let members = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room));
    eve.client.get(&members).await.assert_error(403, "M_FORBIDDEN");
    let joined = bob.client.get(&members).await;
    let joined = joined.assert_ok()["joined"].as_object().unwrap().clone();
    assert!(joined.contains_key(&alice.user_id) && joined.contains_key(&bob.user_id) && joined.len() == 2);
    let invited = format!("/_matrix/client/v3/rooms/{}/members?membership=join", enc(&room));
    assert_eq!(bob.client.get(&invited).await.assert_ok()["chunk"].as_array().unwrap().len(), 2);
    let not_joined = format!("/_matrix/client/v3/rooms/{}/members?not_membership=join", enc(&room));
    assert!(bob.client.get(&not_joined).await.assert_ok()["chunk"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn redaction_needs_power_for_others_events_and_erases_content() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let alices = alice.send_content(&room, "a", json!({ "msgtype": "m.text", "body": "alice secret" })).await;
    let bobs = bob.send_content(&room, "b", json!({ "msgtype": "m.text", "body": "bob secret" })).await;
    let redact = |id: &str, txn: &str| format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(&room), enc(id));

    bob.client.put(&redact(&alices, "r1"), json!({ "reason": "no" })).await.assert_error(403, "M_FORBIDDEN");
    bob.client.put(&redact(&bobs, "r2"), json!({})).await.assert_ok();
    alice.client.put(&redact(&alices, "r3"), json!({})).await.assert_ok();
    alice.client.put(&redact("$unknown", "r4"), json!({})).await.assert_error(404, "M_NOT_FOUND");

    for id in [&alices, &bobs] {
        let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id))).await;
        assert_eq!(event.assert_ok()["content"], json!({}), "redacted content is gone");
    }
    let history = messages(&alice, &room, "dir=b&limit=50").await;
    assert!(!history.body.to_string().contains("secret"));
    let redactions =
        history.body["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.redaction").count();
    assert_eq!(redactions, 2);
}

#[tokio::test]
async fn kick_ban_and_unban_follow_power_levels() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], room) = client.public_room_with(["alice", "bob", "carol"]).await;
    let action = |what: &str| format!("/_matrix/client/v3/rooms/{}/{what}", enc(&room));

    bob.client.post(&action("kick"), json!({ "user_id": carol.user_id })).await.assert_error(403, "M_FORBIDDEN");
    alice.client.post(&action("kick"), json!({ "user_id": carol.user_id, "reason": "quiet" })).await.assert_ok();
    alice.client.post(&action("kick"), json!({ "user_id": carol.user_id })).await.assert_error(403, "M_FORBIDDEN");
    carol.join(&room).await.assert_ok();
    alice.client.post(&action("ban"), json!({ "user_id": carol.user_id })).await.assert_ok();
    let rejoin = carol.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), json!({})).await;
    rejoin.assert_error(403, "M_FORBIDDEN");
    alice.client.post(&action("unban"), json!({ "user_id": bob.user_id })).await.assert_error(400, "M_BAD_STATE");
    bob.client.post(&action("unban"), json!({ "user_id": carol.user_id })).await.assert_error(403, "M_FORBIDDEN");
    alice.client.post(&action("unban"), json!({ "user_id": carol.user_id })).await.assert_ok();
    carol.join(&room).await.assert_ok();
}

#[tokio::test]
async fn context_returns_neighbours_and_state() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice.send_content(&room, &format!("c{i}"), json!({ "msgtype": "m.text", "body": format!("c{i}") })).await,
        );
    }
    let path = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=4", enc(&room), enc(&ids[2]));
    let reply = bob.client.get(&path).await;
    let body = reply.assert_ok();
    assert_eq!(body["event"]["content"]["body"], "c2");
    let before: Vec<&str> =
        body["events_before"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    let after: Vec<&str> =
        body["events_after"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(before, vec!["c1", "c0"]);
    assert_eq!(after, vec!["c3", "c4"]);
    let state = body["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()));
    // The tokens continue pagination where the context stopped.
    let older = messages(&bob, &room, &format!("dir=b&limit=1&from={}", body["start"].as_str().unwrap())).await;
    assert_eq!(older.assert_ok()["chunk"][0]["type"], "m.room.member", "before c0 comes bob's join");

    let eve = client.register("eve").await;
    eve.client.get(&path).await.assert_error(403, "M_FORBIDDEN");
    let unknown = format!("/_matrix/client/v3/rooms/{}/context/%24nope", enc(&room));
    bob.client.get(&unknown).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_visible_event() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice.send_content(&room, "1", json!({ "msgtype": "m.text", "body": "first" })).await;
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&first))).await;
    let ts = event.assert_ok()["origin_server_ts"].as_u64().unwrap();
    let base = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event", enc(&room));
    let future = alice.client.get(&format!("{base}?ts={}&dir=b", ts + 3_600_000)).await;
    assert!(future.assert_ok()["origin_server_ts"].as_u64().unwrap() >= ts);
    let past = alice.client.get(&format!("{base}?ts=0&dir=f")).await;
    assert_eq!(past.assert_ok()["event_id"].as_str().unwrap().len(), 44);
    alice.client.get(&format!("{base}?ts=0&dir=b")).await.assert_error(404, "M_NOT_FOUND");
    alice.client.get(&format!("{base}?ts=x&dir=b")).await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn forgetting_needs_leaving_and_ends_access_to_history() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_content(&room, "1", json!({ "msgtype": "m.text", "body": "hello" })).await;
    let forget = format!("/_matrix/client/v3/rooms/{}/forget", enc(&room));
    bob.client.post(&forget, json!({})).await.assert_error(400, "M_BAD_STATE");
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), json!({})).await.assert_ok();
    messages(&bob, &room, "dir=b").await.assert_ok();
    bob.client.post(&forget, json!({})).await.assert_ok();
    messages(&bob, &room, "dir=b").await.assert_error(403, "M_FORBIDDEN");
    let eve = client.register("eve").await;
    eve.client.post(&forget, json!({})).await.assert_error(404, "M_NOT_FOUND");
    bob.join(&room).await.assert_ok();
    messages(&bob, &room, "dir=b").await.assert_ok();
}

#[tokio::test]
async fn knocking_follows_the_join_rules() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "initial_state": [
        { "type": "m.room.join_rules", "content": { "join_rule": "knock" } }
    ] }))
        .await;
    let reply =
        bob.client.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), json!({ "reason": "let me in" })).await;
    assert_eq!(reply.assert_ok()["room_id"], room.as_str());
    let member = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)))
        .await;
    assert_eq!(member.assert_ok()["membership"], "knock");
    let closed = alice.create_room(json!({ "preset": "private_chat" })).await;
    bob.client
        .post(&format!("/_matrix/client/v3/knock/{}", enc(&closed)), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let old = alice
        .create_room(json!({ "room_version": "6", "initial_state": [
        { "type": "m.room.join_rules", "content": { "join_rule": "knock" } }
    ] }))
        .await;
    bob.client
        .post(&format!("/_matrix/client/v3/knock/{}", enc(&old)), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn reports_need_membership_for_events_but_not_for_rooms() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({})).await;
    let event = alice.send_content(&room, "1", json!({ "msgtype": "m.text", "body": "spam" })).await;
    let report = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event));
    alice.client.post(&report, json!({ "reason": "spam" })).await.assert_ok();
    eve.client.post(&report, json!({ "reason": "spam" })).await.assert_error(404, "M_NOT_FOUND");
    let room_report = format!("/_matrix/client/v3/rooms/{}/report", enc(&room));
    eve.client.post(&room_report, json!({ "reason": "bad room" })).await.assert_ok();
    eve.client.post("/_matrix/client/v3/rooms/%21nope%3Atest.local/report", json!({ "reason": "x" })).await.assert_ok();
    let long = json!({ "reason": "x".repeat(2000) });
    alice.client.post(&report, long).await.assert_error(400, "M_INVALID_PARAM");
    // Users (v1.14): no shared room needed; unknown users answer 200 too but are not kept.
    let user_report = format!("/_matrix/client/v3/users/{}/report", enc(&alice.user_id));
    eve.client.post(&user_report, json!({ "reason": "harassment" })).await.assert_ok();
    eve.client
        .post("/_matrix/client/v3/users/%40nobody%3Atest.local/report", json!({ "reason": "x" }))
        .await
        .assert_ok();
    eve.client
        .post("/_matrix/client/v3/users/not-a-user/report", json!({ "reason": "x" }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // Alice registered first, so she is the server admin who reads reports.
    let reports = alice.client.get("/_conduit/admin/v1/reports").await;
    let reports = reports.assert_ok()["reports"].as_array().unwrap().clone();
    assert_eq!(reports.len(), 3, "the event report, the report of an existing room and of an existing user");
    assert_eq!(reports[0]["user_id"], alice.user_id.as_str(), "newest first");
    assert_eq!(reports[0]["reason"], "harassment");
    assert_eq!(reports[1]["reporter"], eve.user_id.as_str());
    assert_eq!(reports[2]["event_id"], event.as_str());
    eve.client.get("/_conduit/admin/v1/reports").await.assert_error(403, "M_FORBIDDEN");
}
