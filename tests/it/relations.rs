//! Relations: edits, threads, references, bundled aggregations, /relations, /threads.

use serde_json::{json, Value};

use crate::harness::{enc, Session, TestServer};

async fn event(session: &Session, room: &str, id: &str) -> Value {
    session.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id))).await.assert_ok().clone()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn edit(of: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": format!("* {body}"), "m.new_content": text(body),
        "m.relates_to": { "rel_type": "m.replace", "event_id": of } })
}

fn reply_in_thread(root: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } })
}

#[tokio::test]
async fn edits_are_bundled_not_applied() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let original = alice.send_content(&room, "o", text("I like cake")).await;
    let first_edit = alice.send_content(&room, "e1", edit(&original, "I like pie")).await;
    let second_edit = alice.send_content(&room, "e2", edit(&original, "I like chocolate cake")).await;
    bob.send_content(&room, "e3", edit(&original, "bob was here")).await;

    let served = event(&bob, &room, &original).await;
    assert_eq!(served["content"]["body"], "I like cake", "the original content is never replaced");
    let bundled = &served["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(bundled["event_id"], second_edit.as_str(), "the most recent edit by the original sender");
    assert_ne!(bundled["event_id"], first_edit.as_str());

    // Redacting the latest edit falls back to the one before.
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&second_edit));
    alice.client.put(&redact, json!({})).await.assert_ok();
    assert_eq!(
        event(&bob, &room, &original).await["unsigned"]["m.relations"]["m.replace"]["event_id"],
        first_edit.as_str()
    );
    // Redacting the original drops the edits from its bundle.
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r2", enc(&room), enc(&original));
    alice.client.put(&redact, json!({})).await.assert_ok();
    assert!(event(&bob, &room, &original).await["unsigned"].get("m.relations").is_none());
}

#[tokio::test]
async fn threads_aggregate_and_list() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], room) = client.public_room_with(["alice", "bob", "carol"]).await;
    let root = alice.send_content(&room, "root", text("thread root")).await;
    let other_root = carol.send_content(&room, "root2", text("carol's root")).await;
    bob.send_content(&room, "t1", reply_in_thread(&root, "first")).await;
    let last = bob.send_content(&room, "t2", reply_in_thread(&root, "second")).await;

    let as_carol = event(&carol, &room, &root).await;
    let thread = &as_carol["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 2);
    assert_eq!(thread["latest_event"]["event_id"], last.as_str());
    assert_eq!(thread["current_user_participated"], false);
    assert_eq!(
        event(&bob, &room, &root).await["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        true
    );

    // A thread cannot start from an event that is itself in a relation.
    let nested = alice.send_message(&room, "bad", reply_in_thread(&last, "nested")).await;
    nested.assert_error(400, "M_UNKNOWN");

    carol.send_content(&room, "t3", reply_in_thread(&other_root, "reply")).await;
    let threads = |query: &str| format!("/_matrix/client/v1/rooms/{}/threads?{query}", enc(&room));
    let all = bob.client.get(&threads("include=all")).await;
    let roots: Vec<&str> =
        all.assert_ok()["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(roots, vec![other_root.as_str(), root.as_str()], "most recently active first");
    let mine = bob.client.get(&threads("include=participated")).await;
    let roots: Vec<&str> =
        mine.assert_ok()["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(roots, vec![root.as_str()]);
    let page = bob.client.get(&threads("limit=1")).await;
    let next = page.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let rest = bob.client.get(&threads(&format!("limit=1&from={next}"))).await;
    assert_eq!(rest.assert_ok()["chunk"][0]["event_id"], root.as_str());
    let eve = client.register("eve").await;
    eve.client.get(&threads("")).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn relations_endpoint_filters_paginates_and_recurses() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let root = alice.send_content(&room, "root", text("root")).await;
    let reply1 = alice.send_content(&room, "a", reply_in_thread(&root, "one")).await;
    let reply2 = alice.send_content(&room, "b", reply_in_thread(&root, "two")).await;
    let reference = alice
        .send_content(
            &room,
            "c",
            json!({ "body": "see above", "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
        )
        .await;
    let edit_of_reply = alice.send_content(&room, "d", edit(&reply1, "one!")).await;

    let base = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
    let ids = |reply: &crate::harness::Reply| -> Vec<String> {
        reply.body["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
    };
    let all = alice.client.get(&base).await;
    assert_eq!(ids(all.assert_ok_ref()), vec![reference.clone(), reply2.clone(), reply1.clone()], "newest first");
    let threads_only = alice.client.get(&format!("{base}/m.thread")).await;
    assert_eq!(ids(&threads_only), vec![reply2.clone(), reply1.clone()]);
    let forward = alice.client.get(&format!("{base}/m.thread/m.room.message?dir=f&limit=1")).await;
    assert_eq!(ids(&forward), vec![reply1.clone()]);
    let next = forward.body["next_batch"].as_str().unwrap().to_owned();
    let second = alice.client.get(&format!("{base}/m.thread/m.room.message?dir=f&limit=1&from={next}")).await;
    assert_eq!(ids(&second), vec![reply2.clone()]);
    let recursive = alice.client.get(&format!("{base}?recurse=true")).await;
    assert!(ids(&recursive).contains(&edit_of_reply), "relations of relations with recurse");
    // Children, their children, and a third level found empty.
    assert_eq!(recursive.body["recursion_depth"], 3, "the depth walked is told when recursing");
    assert!(!ids(&all).contains(&edit_of_reply));
    assert!(all.body.get("recursion_depth").is_none() && all.body.get("next_batch").is_none());
    let root_event = event(&alice, &room, &root).await;
    assert_eq!(root_event["unsigned"]["m.relations"]["m.reference"]["chunk"], json!([{ "event_id": reference }]));

    let eve = client.register("eve").await;
    let private = alice.client.post("/_matrix/client/v3/createRoom", json!({ "preset": "private_chat" })).await;
    let private = private.assert_ok()["room_id"].as_str().unwrap().to_owned();
    let secret = alice.send_content(&private, "s", text("secret")).await;
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&private), enc(&secret));
    eve.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
}
