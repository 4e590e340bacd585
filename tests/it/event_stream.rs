//! The deprecated v1 event stream, `GET /events` (with and without
//! `room_id`), as older clients and test tools use it after `/initialSync`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{enc, Session, TestServer};

async fn stream(session: &Session, query: &str) -> Value {
    session.client.get(&format!("/_matrix/client/v3/events?{query}")).await.assert_ok().clone()
}

fn of_type<'a>(chunk: &'a Value, kind: &str) -> Vec<&'a Value> {
    chunk["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn the_event_stream_goes_on_from_initial_sync_with_every_kind_of_news() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let start =
        alice.client.get("/_matrix/client/v3/initialSync").await.assert_ok()["end"].as_str().unwrap().to_owned();

    // Room events, typing, a receipt, a tag, global account data, an invite and a to-device message.
    let message = bob.send_text(&room, "1", "hello old client").await;
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    bob.client.put(&typing, json!({ "typing": true, "timeout": 30000 })).await.assert_ok();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message));
    bob.client.post(&receipt, json!({})).await.assert_ok();
    let tag = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&room));
    alice.client.put(&tag, json!({ "order": 0.5 })).await.assert_ok();
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", enc(&alice.user_id));
    alice.client.put(&global, json!({ "theme": "dark" })).await.assert_ok();
    let other_room = bob.create_room(json!({})).await;
    bob.invite(&other_room, &alice.user_id).await.assert_ok();
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));
    bob.client.put(&presence, json!({ "presence": "unavailable", "status_msg": "en réunion" })).await.assert_ok();
    let to_device = json!({ "messages": { alice.user_id.clone(): { alice.device_id.clone(): { "ping": true } } } });
    bob.client.put("/_matrix/client/v3/sendToDevice/m.ping/1", to_device).await.assert_ok();

    let news = stream(&alice, &format!("from={start}&timeout=0")).await;
    assert_eq!(news["start"], start.as_str());
    let end = news["end"].as_str().unwrap().to_owned();
    assert_ne!(end, start);
    let messages = of_type(&news, "m.room.message");
    assert_eq!(messages.len(), 1, "{news}");
    assert_eq!(
        (messages[0]["event_id"].as_str(), messages[0]["room_id"].as_str()),
        (Some(message.as_str()), Some(room.as_str()))
    );
    let typing = of_type(&news, "m.typing");
    assert_eq!(
        (typing[0]["room_id"].as_str(), &typing[0]["content"]["user_ids"]),
        (Some(room.as_str()), &json!([bob.user_id]))
    );
    let receipts = of_type(&news, "m.receipt");
    assert_eq!(receipts[0]["room_id"], room.as_str());
    assert!(receipts[0]["content"][&message]["m.read"][&bob.user_id]["ts"].is_u64(), "{news}");
    let tags = of_type(&news, "m.tag");
    assert_eq!(
        (tags[0]["room_id"].as_str(), &tags[0]["content"]["tags"]["m.favourite"]["order"]),
        (Some(room.as_str()), &json!(0.5))
    );
    assert_eq!(of_type(&news, "org.example.settings")[0]["content"]["theme"], "dark");
    let invite = of_type(&news, "m.room.member").into_iter().find(|e| e["room_id"] == other_room.as_str()).cloned();
    let invite = invite.expect("the invite is in the stream");
    assert_eq!(
        (invite["state_key"].as_str(), invite["content"]["membership"].as_str()),
        (Some(alice.user_id.as_str()), Some("invite"))
    );
    assert!(of_type(&news, "m.ping").is_empty(), "to-device messages stay for /sync");
    let presence = of_type(&news, "m.presence").into_iter().find(|e| e["sender"] == bob.user_id.as_str()).cloned();
    assert_eq!(presence.expect("bob's presence")["content"]["status_msg"], "en réunion");

    // Nothing since: an empty chunk and the same token.
    let quiet = stream(&alice, &format!("from={end}&timeout=0")).await;
    assert_eq!((quiet["chunk"].as_array().map(Vec::len), quiet["end"].as_str()), (Some(0), Some(end.as_str())));

    // A long poll wakes on the next message.
    let waiting = {
        let alice = alice.clone();
        let end = end.clone();
        tokio::spawn(async move { stream(&alice, &format!("from={end}&timeout=20000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.send_text(&room, "2", "are you there?").await;
    let woke = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("woke").unwrap();
    assert_eq!(of_type(&woke, "m.room.message")[0]["content"]["body"], "are you there?");

    // The stream did not consume the to-device message: /sync from the same token has it.
    let sync = alice.client.get(&format!("/_matrix/client/v3/sync?since={start}&timeout=0")).await.assert_ok().clone();
    assert_eq!(sync["to_device"]["events"][0]["content"]["ping"], true);

    // A bad token is the spec's 400.
    alice.client.get("/_matrix/client/v3/events?from=nonsense").await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn peeking_through_the_event_stream_needs_a_readable_room() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let readable = alice
        .create_room(json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }
        ] }))
        .await;
    let private = alice.create_room(json!({})).await;
    let start = eve.client.get("/_matrix/client/v3/initialSync").await.assert_ok()["end"].as_str().unwrap().to_owned();
    alice.send_text(&readable, "1", "for everyone").await;
    alice.send_text(&private, "2", "for members").await;

    // Eve never joined; the world-readable room's news reach her, with its room id.
    let peek = stream(&eve, &format!("room_id={}&from={start}&timeout=0", enc(&readable))).await;
    let bodies: Vec<&Value> = of_type(&peek, "m.room.message");
    assert_eq!(bodies.len(), 1, "{peek}");
    assert_eq!(
        (bodies[0]["content"]["body"].as_str(), bodies[0]["room_id"].as_str()),
        (Some("for everyone"), Some(readable.as_str()))
    );
    // Going on from its end: nothing new.
    let end = peek["end"].as_str().unwrap();
    let again = stream(&eve, &format!("room_id={}&from={end}&timeout=0", enc(&readable))).await;
    assert_eq!(again["chunk"], json!([]));

    let path = format!("/_matrix/client/v3/events?room_id={}&from={start}", enc(&private));
    eve.client.get(&path).await.assert_error(403, "M_FORBIDDEN");
    // Without room_id, eve's own stream has neither room.
    let own = stream(&eve, &format!("from={start}&timeout=0")).await;
    assert!(of_type(&own, "m.room.message").is_empty(), "{own}");
}
