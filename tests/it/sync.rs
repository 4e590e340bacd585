//! /sync: initial and incremental, gaps, lazy loading, long-polling, tokens.

use serde_json::{json, Value};

use crate::harness::{enc, enc_json, message_bodies, Session, TestServer};

fn timeline_bodies(room: &Value) -> Vec<String> {
    message_bodies(&room["timeline"]["events"])
}

/// `GET /sync?{query}` as `session`, expecting success.
pub async fn sync(session: &Session, query: &str) -> Value {
    session.client.get(&format!("/_matrix/client/v3/sync?{query}")).await.assert_ok().clone()
}

#[tokio::test]
async fn initial_sync_has_rooms_timelines_state_and_invites() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "name": "Synced", "preset": "public_chat" })).await;
    alice.send_text(&room, "1", "hello").await;
    let invite_room = alice.create_room(json!({ "name": "Invite only", "invite": [bob.user_id] })).await;

    let body = sync(&alice, "").await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), vec!["hello"]);
    let timeline_and_state: Vec<String> = joined["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(joined["state"]["events"].as_array().unwrap())
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(timeline_and_state.contains(&"m.room.name".to_owned()));
    assert_eq!(joined["summary"]["m.joined_member_count"], 1);
    assert!(body["next_batch"].as_str().unwrap().starts_with('s'));
    for key in ["account_data", "presence", "to_device", "device_lists", "device_one_time_keys_count"] {
        assert!(body.get(key).is_some(), "{key} is always present");
    }

    let bobs = sync(&bob, "").await;
    let invite = &bobs["rooms"]["invite"][&invite_room]["invite_state"]["events"];
    let kinds: Vec<&str> = invite.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"m.room.name") && kinds.contains(&"m.room.member"), "{kinds:?}");
    assert!(bobs["rooms"]["join"].get(&room).is_none(), "bob is not in alice's room");
}

#[tokio::test]
async fn incremental_sync_returns_only_what_is_new() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = sync(&alice, "").await;
    let token = first["next_batch"].as_str().unwrap().to_owned();
    let quiet = sync(&alice, &format!("since={token}&timeout=0")).await;
    assert!(quiet["rooms"]["join"].as_object().unwrap().is_empty());
    alice.send_text(&room, "1", "new").await;
    let next = sync(&alice, &format!("since={token}")).await;
    assert_eq!(timeline_bodies(&next["rooms"]["join"][&room]), vec!["new"]);
    assert!(next["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().is_empty(), "no state changed");
    let token2 = next["next_batch"].as_str().unwrap().to_owned();
    let again = sync(&alice, &format!("since={token2}&timeout=0")).await;
    assert!(again["rooms"]["join"].as_object().unwrap().is_empty(), "nothing is delivered twice");
    let bad = alice.client.get("/_matrix/client/v3/sync?since=nonsense").await;
    bad.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn gappy_sync_is_limited_and_carries_the_state_changed_in_the_gap() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let carol = client.register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let filter = format!("filter={}", enc_json(&json!({ "room": { "timeline": { "limit": 2 } } })));
    let token = sync(&alice, &filter).await["next_batch"].as_str().unwrap().to_owned();

    alice.send_text(&room, "1", "m1").await;
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), json!({ "name": "in the gap" }))
        .await
        .assert_ok();
    carol.join(&room).await.assert_ok();
    alice.send_text(&room, "2", "m2").await;
    alice.send_text(&room, "3", "m3").await;

    let body = sync(&alice, &format!("since={token}&{filter}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), vec!["m2", "m3"]);
    assert_eq!(joined["timeline"]["limited"], true);
    let state: Vec<(String, String)> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    assert!(state.contains(&("m.room.name".into(), "".into())), "{state:?}");
    assert!(state.contains(&("m.room.member".into(), carol.user_id.clone())), "the join inside the gap: {state:?}");
    assert!(!state.iter().any(|(kind, _)| kind == "m.room.create"), "only what changed");

    // prev_batch continues backwards into the gap.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let older =
        alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1&from={prev}", enc(&room))).await;
    assert_eq!(older.assert_ok()["chunk"][0]["state_key"], carol.user_id.as_str());
}

#[tokio::test]
async fn lazy_loading_returns_only_the_senders_members() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], room) = client.public_room_with(["alice", "bob", "carol"]).await;
    for i in 0..3 {
        bob.send_text(&room, &format!("b{i}"), "from bob").await;
    }
    let filter = json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } });
    let body = sync(&alice, &format!("filter={}", enc_json(&filter))).await;
    let members: Vec<String> = body["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(members.contains(&bob.user_id), "{members:?}");
    assert!(!members.contains(&carol.user_id), "carol sent nothing in the timeline: {members:?}");
}

#[tokio::test]
async fn long_poll_wakes_on_a_new_event() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let waiting = {
        let alice = alice.clone();
        tokio::spawn(async move { sync(&alice, &format!("since={token}&timeout=20000")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    bob.send_text(&room, "wake", "wake up").await;
    let body = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
        .await
        .expect("woke before the timeout")
        .unwrap();
    assert_eq!(timeline_bodies(&body["rooms"]["join"][&room]), vec!["wake up"]);
}

#[tokio::test]
async fn left_rooms_appear_once_under_leave() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), json!({})).await.assert_ok();
    let body = sync(&bob, &format!("since={token}")).await;
    assert!(body["rooms"]["leave"].get(&room).is_some(), "{}", body["rooms"]);
    assert!(body["rooms"]["join"].get(&room).is_none());
    let token = body["next_batch"].as_str().unwrap().to_owned();
    alice.send_text(&room, "after", "bob is gone").await;
    let later = sync(&bob, &format!("since={token}&timeout=0")).await;
    assert!(later["rooms"]["leave"].get(&room).is_none(), "only once");
    assert!(later["rooms"]["join"].get(&room).is_none(), "nothing after leaving");
    let initial = sync(&bob, "").await;
    assert!(initial["rooms"]["leave"].get(&room).is_none(), "initial sync leaves out left rooms by default");
    let with_leave = sync(&bob, &format!("filter={}", enc_json(&json!({ "room": { "include_leave": true } })))).await;
    assert!(with_leave["rooms"]["leave"].get(&room).is_some());
}

#[tokio::test]
async fn filters_are_stored_per_user_and_used_by_sync() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let filter = json!({ "room": { "timeline": { "limit": 1 } }, "event_fields": ["type", "content.body"] });
    let id = alice.client.post(&path, filter.clone()).await.assert_ok()["filter_id"].as_str().unwrap().to_owned();
    assert_eq!(alice.client.get(&format!("{path}/{id}")).await.assert_ok()["room"]["timeline"]["limit"], 1);
    eve.client.get(&format!("{path}/{id}")).await.assert_error(403, "M_FORBIDDEN");
    eve.client.post(&path, filter).await.assert_error(403, "M_FORBIDDEN");
    alice.client.get(&format!("{path}/404")).await.assert_error(404, "M_NOT_FOUND");
    alice.client.post(&path, json!({ "event_format": "xml" })).await.assert_error(400, "M_BAD_JSON");
    alice
        .client
        .post(&path, json!({ "room": { "timeline": { "limit": "ten" } } }))
        .await
        .assert_error(400, "M_BAD_JSON");
    for malformed in [
        json!({ "room": { "rooms": ["not-a-room"] } }),
        json!({ "room": { "timeline": { "not_rooms": ["#alias:test.local"] } } }),
        json!({ "presence": { "senders": ["bob"] } }),
        json!({ "room": { "state": { "not_senders": ["!room:test.local"] } } }),
    ] {
        alice.client.post(&path, malformed.clone()).await.assert_error(400, "M_BAD_JSON");
    }

    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "1", "a").await;
    alice.send_text(&room, "2", "b").await;
    let body = sync(&alice, &format!("filter={id}")).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert_eq!(events, vec![json!({ "type": "m.room.message", "content": { "body": "b" } })]);

    // `limit: 0`: no events, and the timeline says some were left out.
    let none = crate::harness::enc_json(&json!({ "room": { "timeline": { "limit": 0 } } }));
    let body = sync(&alice, &format!("filter={none}")).await;
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!((timeline["events"].as_array().map(Vec::len), timeline["limited"].as_bool()), (Some(0), Some(true)));
    assert!(body["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create"));
}

#[tokio::test]
async fn sync_tokens_survive_a_restart() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let server = server.restart().await;
    let alice = Session { client: server.client().with_token(&alice.token), ..alice };
    let quiet = sync(&alice, &format!("since={token}&timeout=0")).await;
    assert!(quiet["rooms"]["join"].as_object().unwrap().is_empty(), "nothing new across the restart");
    alice.send_text(&room, "1", "after restart").await;
    let body = sync(&alice, &format!("since={token}")).await;
    assert_eq!(timeline_bodies(&body["rooms"]["join"][&room]), vec!["after restart"]);
}

#[tokio::test]
async fn account_data_and_tags_are_private_and_synced() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({})).await;
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();

    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", enc(&alice.user_id));
    alice.client.get(&global).await.assert_error(404, "M_NOT_FOUND");
    alice.client.put(&global, json!({ "theme": "dark" })).await.assert_ok();
    assert_eq!(alice.client.get(&global).await.assert_ok()["theme"], "dark");
    eve.client.get(&global).await.assert_error(403, "M_FORBIDDEN");
    eve.client.put(&global, json!({ "theme": "pwned" })).await.assert_error(403, "M_FORBIDDEN");
    let fully_read = format!("/_matrix/client/v3/user/{}/account_data/m.fully_read", enc(&alice.user_id));
    alice.client.put(&fully_read, json!({ "event_id": "$x" })).await.assert_error(405, "M_BAD_JSON");
    let raw = alice.client.send("PUT", &global, &[], bytes::Bytes::from_static(b"[1]")).await;
    assert_eq!(raw.status, 400);

    let tag = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&room));
    alice.client.put(&tag, json!({ "order": 0.5 })).await.assert_ok();
    let tags =
        alice.client.get(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room))).await;
    assert_eq!(tags.assert_ok()["tags"]["m.favourite"]["order"], 0.5);

    let body = sync(&alice, &format!("since={token}")).await;
    let global_events = body["account_data"]["events"].as_array().unwrap();
    assert!(global_events.iter().any(|e| e["type"] == "org.example.settings" && e["content"]["theme"] == "dark"));
    let room_events = body["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(room_events.iter().any(|e| e["type"] == "m.tag"), "{room_events:?}");
    let token = body["next_batch"].as_str().unwrap().to_owned();
    alice.client.delete(&tag, json!({})).await.assert_ok();
    let body = sync(&alice, &format!("since={token}")).await;
    let tag_event = &body["rooms"]["join"][&room]["account_data"]["events"][0];
    assert_eq!(tag_event["content"]["tags"], json!({}));
    let eves = sync(&eve, "").await["account_data"]["events"].clone();
    let types: Vec<&str> = eves.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["m.push_rules"], "eve sees only her own (default) push rules");
}

#[tokio::test]
async fn typing_reaches_other_members_and_expires_on_its_own() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await.assert_ok();
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let typing = |user: &str| format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(user));

    bob.client.put(&typing(&alice.user_id), json!({ "typing": true })).await.assert_error(403, "M_FORBIDDEN");
    eve.client.put(&typing(&eve.user_id), json!({ "typing": true })).await.assert_error(403, "M_FORBIDDEN");
    bob.client.put(&typing(&bob.user_id), json!({ "typing": true, "timeout": 1000 })).await.assert_ok();
    let body = sync(&alice, &format!("since={token}")).await;
    let ephemeral = &body["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(ephemeral["type"], "m.typing");
    assert_eq!(ephemeral["content"]["user_ids"], json!([bob.user_id]));

    // The expiry wakes a waiting sync with the emptied list.
    let token = body["next_batch"].as_str().unwrap().to_owned();
    let later = sync(&alice, &format!("since={token}&timeout=10000")).await;
    let ephemeral = &later["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(ephemeral["content"]["user_ids"], json!([]), "{later}");
    assert!(sync(&eve, "").await["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn receipts_markers_and_unread_counts() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await.assert_ok();
    let first = bob.send_text(&room, "1", "one").await;
    bob.send_text(&room, "2", "two").await;
    let third = bob.send_text(&room, "3", "three").await;
    alice.send_text(&room, "4", "mine do not count").await;

    let joined = |body: &Value| body["rooms"]["join"][&room].clone();
    let body = sync(&alice, "").await;
    assert_eq!(joined(&body)["unread_notifications"]["notification_count"], 3);
    let token = body["next_batch"].as_str().unwrap().to_owned();

    let receipt =
        |kind: &str, event: &str| format!("/_matrix/client/v3/rooms/{}/receipt/{kind}/{}", enc(&room), enc(event));
    alice.client.post(&receipt("m.read", &first), json!({})).await.assert_ok();
    eve.client.post(&receipt("m.read", &first), json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice.client.post(&receipt("m.read", "$unknown"), json!({})).await.assert_error(404, "M_NOT_FOUND");
    alice.client.post(&receipt("m.bogus", &first), json!({})).await.assert_error(400, "M_INVALID_PARAM");
    let body = sync(&alice, &format!("since={token}")).await;
    let room_sync = joined(&body);
    assert_eq!(room_sync["unread_notifications"]["notification_count"], 2);
    let receipts = &room_sync["ephemeral"]["events"][0];
    assert_eq!(receipts["type"], "m.receipt");
    assert!(receipts["content"][&first]["m.read"][&alice.user_id]["ts"].as_u64().is_some());

    // Private receipts count for their owner and are seen by nobody else.
    let bob_token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let markers = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    alice.client.post(&markers, json!({ "m.fully_read": third, "m.read.private": third })).await.assert_ok();
    let body = sync(&alice, "").await;
    assert_eq!(joined(&body)["unread_notifications"]["notification_count"], 0);
    let fully_read = alice
        .client
        .get(&format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice.user_id), enc(&room)))
        .await;
    assert_eq!(fully_read.assert_ok()["event_id"], third.as_str());
    let bobs = sync(&bob, &format!("since={bob_token}&timeout=0")).await;
    assert!(!bobs.to_string().contains("m.read.private"), "private receipts stay private: {bobs}");
}

#[tokio::test]
async fn presence_is_shared_with_room_mates_only() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let eve = client.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await.assert_ok();
    let token = sync(&alice, "set_presence=offline").await["next_batch"].as_str().unwrap().to_owned();

    let status = |user: &str| format!("/_matrix/client/v3/presence/{}/status", enc(user));
    bob.client
        .put(&status(&bob.user_id), json!({ "presence": "unavailable", "status_msg": "in a meeting" }))
        .await
        .assert_ok();
    bob.client.put(&status(&alice.user_id), json!({ "presence": "online" })).await.assert_error(403, "M_FORBIDDEN");
    bob.client.put(&status(&bob.user_id), json!({ "presence": "dancing" })).await.assert_error(400, "M_INVALID_PARAM");
    let seen = alice.client.get(&status(&bob.user_id)).await;
    assert_eq!(seen.assert_ok()["presence"], "unavailable");
    assert_eq!(seen.body["status_msg"], "in a meeting");
    eve.client.get(&status(&bob.user_id)).await.assert_error(403, "M_FORBIDDEN");

    let body = sync(&alice, &format!("since={token}&set_presence=offline")).await;
    let events = body["presence"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["presence"] == "unavailable"),
        "{events:?}"
    );
    let eves = sync(&eve, "set_presence=offline").await;
    assert!(!eves["presence"]["events"].to_string().contains(&bob.user_id), "eve shares no room with bob");
}

#[tokio::test]
async fn presence_can_be_turned_off() {
    let server = TestServer::start_with("presence = false").await;
    let alice = server.client().register("alice").await;
    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    alice.client.put(&status, json!({ "presence": "online" })).await.assert_error(403, "M_FORBIDDEN");
    let body = sync(&alice, "").await;
    assert!(body["presence"]["events"].as_array().unwrap().is_empty());
    assert_eq!(alice.client.get(&status).await.assert_ok()["presence"], "offline");
}

#[tokio::test]
async fn unread_counts_per_thread_when_the_filter_asks() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let root = bob.send_text(&room, "root", "thread root").await;
    let in_thread = |body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    let first_reply = bob.send_content(&room, "t1", in_thread("t1")).await;
    bob.send_content(&room, "t2", in_thread("t2")).await;
    bob.send_text(&room, "main", "main timeline").await;

    let threaded = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let threaded_query = format!("filter={}", enc_json(&threaded));
    let body = sync(&alice, &threaded_query).await;
    let section = &body["rooms"]["join"][&room];
    assert_eq!(section["unread_notifications"]["notification_count"], 2, "root and main message: {section}");
    assert_eq!(section["unread_thread_notifications"][&root]["notification_count"], 2);
    // Without the filter flag, one total.
    let body = sync(&alice, "").await;
    assert_eq!(body["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 4);
    assert!(body["rooms"]["join"][&room].get("unread_thread_notifications").is_none());

    // A threaded receipt reads inside its thread only.
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&first_reply));
    alice.client.post(&receipt, json!({ "thread_id": root })).await.assert_ok();
    let body = sync(&alice, &threaded_query).await;
    let section = &body["rooms"]["join"][&room];
    assert_eq!(section["unread_thread_notifications"][&root]["notification_count"], 1);
    assert_eq!(section["unread_notifications"]["notification_count"], 2, "main timeline untouched");
}

#[tokio::test]
async fn lazy_loading_in_incremental_sync_sends_new_senders_members() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_text(&room, "a", "only alice speaks").await;
    let filter = json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } });
    let query = format!("filter={}", enc_json(&filter));
    let body = sync(&alice, &query).await;
    let token = body["next_batch"].as_str().unwrap().to_owned();

    // Bob's join is older than the token; his first message afterwards must
    // still come with his member event, or the client cannot name him.
    bob.send_text(&room, "b", "hello from bob").await;
    let body = sync(&alice, &format!("{query}&since={token}")).await;
    let state = body["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().clone();
    let bob_member = state.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str());
    assert_eq!(bob_member.expect("bob's member event")["content"]["membership"], "join");
}

#[tokio::test]
async fn own_events_carry_their_transaction_id_for_the_sending_device_only() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let other_device = client.login("alice", crate::harness::PASSWORD).await;
    let other_device = Session::from_reply(&client, other_device.assert_ok());
    alice.send_text(&room, "my-txn-1", "with a transaction id").await;
    let transaction_ids = |body: Value| -> Vec<Value> {
        body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["type"] == "m.room.message")
            .map(|event| event["unsigned"]["transaction_id"].clone())
            .collect()
    };
    assert_eq!(transaction_ids(sync(&alice, "").await), vec![json!("my-txn-1")]);
    assert_eq!(transaction_ids(sync(&other_device, "").await), vec![Value::Null], "another device of the sender");
    assert_eq!(transaction_ids(sync(&bob, "").await), vec![Value::Null]);
    let messages = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room))).await;
    let sent =
        messages.assert_ok()["chunk"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.message").cloned();
    assert_eq!(sent.unwrap()["unsigned"]["transaction_id"], "my-txn-1");
}

#[tokio::test]
async fn ignored_users_events_invites_and_to_device_messages_stay_away() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let ignore = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id));
    alice.client.put(&ignore, json!({ "ignored_users": { bob.user_id.clone(): {} } })).await.assert_ok();
    let since = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();

    bob.send_text(&room, "b1", "from the ignored").await;
    let member = crate::harness::state_path(&room, "m.room.member", &bob.user_id);
    bob.client.put(&member, json!({ "membership": "join", "displayname": "Still visible" })).await.assert_ok();
    let private = bob.create_room(json!({})).await;
    bob.invite(&private, &alice.user_id).await.assert_ok();
    let to_device = "/_matrix/client/v3/sendToDevice/m.test/t1";
    let messages = json!({ "messages": { alice.user_id.clone(): { alice.device_id.clone(): { "hello": 1 } } } });
    bob.client.put(to_device, messages).await.assert_ok();
    alice.send_text(&room, "a1", "from alice").await;

    let body = sync(&alice, &format!("since={since}")).await;
    let timeline = &body["rooms"]["join"][&room]["timeline"]["events"];
    let bodies: Vec<&str> = timeline.as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["from alice"]);
    let renamed = timeline.as_array().unwrap().iter().any(|e| e["content"]["displayname"] == "Still visible");
    assert!(renamed, "state events stay: {timeline}");
    assert!(body["rooms"]["invite"].get(&private).is_none(), "the ignored user's invite: {}", body["rooms"]["invite"]);
    assert_eq!(body["to_device"]["events"], json!([]));
    let page = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room))).await;
    let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
    assert!(!chunk.iter().any(|e| e["content"]["body"] == "from the ignored"));
    // Bob, who ignores nobody, sees everything.
    let bobs = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room))).await;
    assert!(bobs.assert_ok()["chunk"].as_array().unwrap().iter().any(|e| e["content"]["body"] == "from the ignored"));
}

#[tokio::test]
async fn new_and_renamed_devices_are_device_list_changes_and_a_leave_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let changed = |body: &Value| -> Vec<String> {
        body["device_lists"]["changed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    };
    let (mine, theirs) = (sync(&alice, "").await, sync(&bob, "").await);
    let (mine, theirs) =
        (mine["next_batch"].as_str().unwrap().to_owned(), theirs["next_batch"].as_str().unwrap().to_owned());
    let login = client.login("alice", crate::harness::PASSWORD).await;
    let second = Session::from_reply(&client, login.assert_ok());
    assert!(changed(&sync(&alice, &format!("since={mine}")).await).contains(&alice.user_id), "a new login");
    let seen = sync(&bob, &format!("since={theirs}")).await;
    assert!(changed(&seen).contains(&alice.user_id), "room mates learn of it: {}", seen["device_lists"]);
    let theirs = seen["next_batch"].as_str().unwrap().to_owned();
    let mine = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let rename = format!("/_matrix/client/v3/devices/{}", second.device_id);
    alice.client.put(&rename, json!({ "display_name": "Tablet" })).await.assert_ok();
    let seen = sync(&bob, &format!("since={theirs}")).await;
    assert!(changed(&seen).contains(&alice.user_id), "a rename");
    let own = sync(&alice, &format!("since={mine}")).await;
    assert!(changed(&own).contains(&alice.user_id), "a rename, in alice's own list: {}", own["device_lists"]);
    let (mine, theirs) =
        (own["next_batch"].as_str().unwrap().to_owned(), seen["next_batch"].as_str().unwrap().to_owned());
    // A deletion (the device's own token, with the password) reaches both as well.
    let path = format!("/_matrix/client/v3/devices/{}", second.device_id);
    let challenge = alice.client.delete(&path, json!({})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    alice.client.delete(&path, json!({ "auth": alice.password_auth(&session) })).await.assert_ok();
    assert!(changed(&sync(&alice, &format!("since={mine}")).await).contains(&alice.user_id), "a deletion, own list");
    let seen = sync(&bob, &format!("since={theirs}")).await;
    assert!(changed(&seen).contains(&alice.user_id), "a deletion, room mates");

    // Bob waits in a long poll; his own leave wakes it with the room in `leave`.
    let since = seen["next_batch"].as_str().unwrap().to_owned();
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    bob.leave(&room).await.assert_ok();
    let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("woken").unwrap();
    assert!(woken["rooms"]["leave"].get(&room).is_some(), "{}", woken["rooms"]);
}

#[tokio::test]
async fn incremental_leaves_filters_on_account_data_and_presence_of_new_room_mates() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    // Alice is online (her syncs say so); bob meets her by joining.
    sync(&alice, "").await;
    let since = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.join(&room).await.assert_ok();
    let body = sync(&bob, &format!("since={since}")).await;
    let senders: Vec<&str> =
        body["presence"]["events"].as_array().unwrap().iter().filter_map(|e| e["sender"].as_str()).collect();
    assert!(senders.contains(&alice.user_id.as_str()), "a new room mate's presence: {senders:?}");

    // A leave in an incremental sync: the timeline up to it, no state resent.
    let since = body["next_batch"].as_str().unwrap().to_owned();
    alice.send_text(&room, "1", "before bob leaves").await;
    bob.leave(&room).await.assert_ok();
    alice.send_text(&room, "2", "after bob left").await;
    let body = sync(&bob, &format!("since={since}")).await;
    let left = &body["rooms"]["leave"][&room];
    let bodies: Vec<&str> =
        left["timeline"]["events"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["before bob leaves"]);
    assert_eq!(left["state"]["events"], json!([]));

    // account_data and presence filters apply.
    let data = |kind: &str| format!("/_matrix/client/v3/user/{}/account_data/{kind}", enc(&alice.user_id));
    alice.client.put(&data("org.example.a"), json!({ "a": 1 })).await.assert_ok();
    alice.client.put(&data("org.example.b"), json!({ "b": 1 })).await.assert_ok();
    let filter =
        enc_json(&json!({ "account_data": { "types": ["org.example.a"] }, "presence": { "not_types": ["*"] } }));
    let body = sync(&alice, &format!("filter={filter}")).await;
    let kinds: Vec<&str> =
        body["account_data"]["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["org.example.a"]);
    assert_eq!(body["presence"]["events"], json!([]));
    // `limit`, and presence by sender: bob's presence only, alice's own left out.
    bob.join(&room).await.assert_ok();
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));
    bob.client.put(&presence, json!({ "presence": "online" })).await.assert_ok();
    let filter = enc_json(&json!({
        "account_data": { "types": ["org.example.*"], "limit": 1 },
        "presence": { "senders": [bob.user_id], "not_senders": [alice.user_id] }
    }));
    let body = sync(&alice, &format!("filter={filter}")).await;
    assert_eq!(body["account_data"]["events"].as_array().unwrap().len(), 1, "{}", body["account_data"]);
    let senders: Vec<&str> =
        body["presence"]["events"].as_array().unwrap().iter().filter_map(|e| e["sender"].as_str()).collect();
    assert_eq!(senders, [bob.user_id.as_str()]);
}

fn timeline_types(room: &Value) -> Vec<(String, String)> {
    room["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["type"].as_str().unwrap_or("").to_owned(), e["content"]["membership"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn state_types(room: &Value) -> Vec<String> {
    room["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn a_display_name_change_is_one_timeline_event_and_no_state() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    bob.client.put(&profile, json!({ "displayname": "Robert" })).await.assert_ok();
    let news = sync(&alice, &format!("since={token}")).await;
    let joined = &news["rooms"]["join"][&room];
    let timeline = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "{joined}");
    assert_eq!(
        (
            timeline[0]["type"].as_str(),
            timeline[0]["state_key"].as_str(),
            timeline[0]["content"]["displayname"].as_str()
        ),
        (Some("m.room.member"), Some(bob.user_id.as_str()), Some("Robert"))
    );
    assert_eq!(joined["state"]["events"], json!([]), "nothing resent");
}

#[tokio::test]
async fn event_format_federation_gives_the_events_as_servers_see_them() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, _bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_text(&room, "1", "as a PDU").await;
    let filter = enc_json(&json!({ "event_format": "federation" }));
    let body = sync(&alice, &format!("filter={filter}")).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let message = events.iter().find(|e| e["content"]["body"] == "as a PDU").expect("the message");
    for field in ["auth_events", "prev_events", "depth", "hashes", "signatures"] {
        assert!(message.get(field).is_some(), "{field} missing: {message}");
    }
    assert!(message.get("unsigned").is_none_or(|u| u.get("transaction_id").is_none()));
    let client_format = sync(&alice, "").await;
    let plain = client_format["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let plain = plain.iter().find(|e| e["content"]["body"] == "as a PDU").unwrap();
    assert!(plain.get("auth_events").is_none() && plain["event_id"].is_string(), "{plain}");
}

#[tokio::test]
async fn a_leave_and_rejoin_inside_one_gap_is_not_a_new_join() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_text(&room, "0", "before the token").await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();

    bob.leave(&room).await.assert_ok();
    let name = crate::harness::state_path(&room, "m.room.name", "");
    alice.client.put(&name, json!({ "name": "Renamed meanwhile" })).await.assert_ok();
    bob.join(&room).await.assert_ok();

    // A timeline big enough: the leave, the rename and the rejoin, nothing
    // from before the token, and no state resent (the timeline has it all).
    let news = sync(&bob, &format!("since={token}")).await;
    let joined = &news["rooms"]["join"][&room];
    assert_eq!(
        timeline_types(joined),
        [
            ("m.room.member".into(), "leave".into()),
            ("m.room.name".into(), String::new()),
            ("m.room.member".into(), "join".into())
        ],
        "{joined}"
    );
    assert_eq!(joined["timeline"]["limited"], false);
    assert_eq!(state_types(joined), Vec::<String>::new(), "nothing to resend");

    // A one-event timeline: limited, and the state carries what changed in
    // the gap (the name, bob's leave) but not what bob already had.
    let filter = enc_json(&json!({ "room": { "timeline": { "limit": 1 } } }));
    let gappy = sync(&bob, &format!("since={token}&filter={filter}")).await;
    let joined = &gappy["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    let mut state = state_types(joined);
    state.sort();
    assert_eq!(state, ["m.room.member", "m.room.name"], "{joined}");
}

#[tokio::test]
async fn own_join_is_in_the_timeline_of_joined_and_invited_visibility_rooms() {
    for visibility in ["joined", "invited"] {
        let server = TestServer::start().await;
        let client = server.client();
        let alice = client.register("alice").await;
        let bob = client.register("bob").await;
        let room = alice
            .create_room(json!({ "preset": "public_chat", "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": visibility } }
            ] }))
            .await;
        alice.send_text(&room, "1", "before bob").await;
        let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
        bob.join(&room).await.assert_ok();
        for query in [String::new(), format!("since={token}")] {
            let body = sync(&bob, &query).await;
            let joined = &body["rooms"]["join"][&room];
            let own_join = joined["timeline"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str());
            assert!(own_join, "{visibility}, sync {query:?}: {joined}");
            assert!(!timeline_bodies(joined).contains(&"before bob".to_owned()), "{visibility}: {joined}");
        }
    }
}

#[tokio::test]
async fn a_room_joined_since_the_token_with_a_long_history_is_limited() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    for n in 0..12 {
        alice.send_text(&room, &n.to_string(), &format!("message {n}")).await;
    }
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.join(&room).await.assert_ok();
    let filter = enc_json(&json!({ "room": { "timeline": { "limit": 5 } } }));
    let body = sync(&bob, &format!("since={token}&filter={filter}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 5);
    assert!(state_types(joined).contains(&"m.room.create".to_owned()), "a new room comes with its whole state");
    // Paging back from prev_batch reaches the history before the join.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{}/messages?from={prev}&dir=b&limit=20", enc(&room));
    let page = bob.client.get(&path).await.assert_ok().clone();
    assert!(message_bodies(&page["chunk"]).contains(&"message 7".to_owned()), "{page}");
}

#[tokio::test]
async fn messages_takes_sync_tokens_in_both_directions() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, _bob], room) = client.public_room_with(["alice", "bob"]).await;
    alice.send_text(&room, "1", "before").await;
    let token = sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
    alice.send_text(&room, "2", "after").await;
    let messages =
        |dir: &str| format!("/_matrix/client/v3/rooms/{}/messages?from={token}&dir={dir}&limit=10", enc(&room));
    let forwards = alice.client.get(&messages("f")).await.assert_ok().clone();
    assert_eq!(message_bodies(&forwards["chunk"]), ["after"], "{forwards}");
    let backwards = alice.client.get(&messages("b")).await.assert_ok().clone();
    assert_eq!(message_bodies(&backwards["chunk"]).first().map(String::as_str), Some("before"), "{backwards}");
    assert!(!message_bodies(&backwards["chunk"]).contains(&"after".to_owned()));
}

fn member_keys(room: &Value) -> Vec<String> {
    let mut keys: Vec<String> = room["state"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn lazy_loading_sends_a_member_event_once_per_device_unless_asked_for_redundant_ones() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], room) = client.public_room_with(["alice", "bob", "carol"]).await;
    bob.send_text(&room, "b0", "bob speaks").await;
    let lazy = |extra: Value| {
        let mut filter = json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } });
        if let Some(fields) = extra.as_object() {
            for (key, value) in fields {
                filter["room"]["state"][key] = value.clone();
            }
        }
        enc_json(&filter)
    };
    let filter = lazy(json!({}));
    let initial = sync(&alice, &format!("filter={filter}")).await;
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(member_keys(&initial["rooms"]["join"][&room]), expected, "the senders and alice herself");
    let mut token = initial["next_batch"].as_str().unwrap().to_owned();

    // Bob again: his member event was sent already, nothing to resend.
    bob.send_text(&room, "b1", "bob again").await;
    let again = sync(&alice, &format!("filter={filter}&since={token}")).await;
    assert_eq!(member_keys(&again["rooms"]["join"][&room]), Vec::<String>::new(), "{again}");
    token = again["next_batch"].as_str().unwrap().to_owned();

    // Carol's first words bring her member event, once.
    carol.send_text(&room, "c1", "carol speaks").await;
    let first = sync(&alice, &format!("filter={filter}&since={token}")).await;
    assert_eq!(member_keys(&first["rooms"]["join"][&room]), vec![carol.user_id.clone()]);
    token = first["next_batch"].as_str().unwrap().to_owned();

    // Bob renames himself in a gap (the timeline holds only his message
    // after it): his new member event comes, as the state changed.
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    bob.client.put(&profile, json!({ "displayname": "Robert" })).await.assert_ok();
    bob.send_text(&room, "b2", "as Robert").await;
    let renamed = sync(&alice, &format!("filter={filter}&since={token}")).await;
    let state = renamed["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().clone();
    let bob_member = state.iter().find(|e| e["state_key"] == bob.user_id.as_str()).expect("bob's new member event");
    assert_eq!(bob_member["content"]["displayname"], "Robert");
    token = renamed["next_batch"].as_str().unwrap().to_owned();

    // Carol leaves and comes back in a gap, then speaks: her new member
    // event differs from the one alice's device has, so it comes again.
    carol.leave(&room).await.assert_ok();
    carol.join(&room).await.assert_ok();
    carol.send_text(&room, "c2", "back again").await;
    let back = sync(&alice, &format!("filter={filter}&since={token}")).await;
    let state = back["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().clone();
    let carols = state.iter().find(|e| e["state_key"] == carol.user_id.as_str()).expect("carol's member event again");
    assert_eq!(carols["content"]["membership"], "join");
    token = back["next_batch"].as_str().unwrap().to_owned();

    // include_redundant_members: the senders' member events every time.
    bob.send_text(&room, "b3", "once more").await;
    let redundant = lazy(json!({ "include_redundant_members": true }));
    let body = sync(&alice, &format!("filter={redundant}&since={token}")).await;
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(member_keys(&body["rooms"]["join"][&room]), expected);

    // The memory is per device: alice's second device starts from nothing.
    let login = client.login(&alice.user_id, crate::harness::PASSWORD).await;
    let second = Session::from_reply(&client, login.assert_ok());
    let other = sync(&second, &format!("filter={filter}&since={token}")).await;
    assert!(member_keys(&other["rooms"]["join"][&room]).contains(&bob.user_id), "{other}");
}
