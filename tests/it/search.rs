//! Message search: word prefixes without accents, visibility, ordering,
//! context, groupings, pagination, redaction.

use serde_json::{json, Value};

use crate::harness::{enc, Session, TestServer};

async fn search(session: &Session, criteria: Value) -> Value {
    let body = json!({ "search_categories": { "room_events": criteria } });
    session.client.post("/_matrix/client/v3/search", body).await.assert_ok()["search_categories"]["room_events"].clone()
}

fn bodies(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn messages_are_found_by_word_prefix_in_rooms_the_user_may_read() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let eve = client.register("eve").await;
    bob.send_text(&room, "1", "Réunion budgétaire jeudi").await;
    bob.send_text(&room, "2", "Le budget est validé").await;
    let redacted = alice.send_text(&room, "3", "budget secret draft").await;
    alice.send_text(&room, "4", "déjeuner à midi").await;
    let private = eve.create_room(json!({ "preset": "private_chat" })).await;
    eve.send_text(&private, "5", "budget of eve").await;

    let found = search(&alice, json!({ "search_term": "BUDGET", "order_by": "recent" })).await;
    assert_eq!(bodies(&found), vec!["budget secret draft", "Le budget est validé", "Réunion budgétaire jeudi"]);
    assert_eq!(found["count"], 3, "eve's private room is not searched");

    // Rank: a whole-word match before a prefix match.
    let ranked = search(&alice, json!({ "search_term": "budget" })).await;
    assert_eq!(bodies(&ranked).last().unwrap(), "Réunion budgétaire jeudi");
    assert!(search(&alice, json!({ "search_term": "dejeuner midi" })).await["count"] == 1, "accents and several words");

    // Redacted events leave the index.
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&redacted));
    alice.client.put(&path, json!({})).await.assert_ok();
    assert_eq!(search(&alice, json!({ "search_term": "secret" })).await["count"], 0);

    // Context with profiles, state, groupings, filter, pagination.
    let found = search(
        &alice,
        json!({
            "search_term": "budget",
            "order_by": "recent",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }] },
            "filter": { "senders": [bob.user_id] },
        }),
    )
    .await;
    assert_eq!(found["count"], 2);
    let context = &found["results"][0]["context"];
    assert_eq!(context["events_before"].as_array().unwrap().len(), 1);
    assert!(context["profile_info"][&bob.user_id].is_object());
    assert!(found["state"][&room].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    assert_eq!(found["groups"]["room_id"][&room]["results"].as_array().unwrap().len(), 2);

    for i in 0..12 {
        bob.send_text(&room, &format!("p{i}"), &format!("pagination message {i}")).await;
    }
    let first = search(&alice, json!({ "search_term": "pagination" })).await;
    assert_eq!(first["results"].as_array().unwrap().len(), 10);
    let next = first["next_batch"].as_str().unwrap().to_owned();
    let body = json!({ "search_categories": { "room_events": { "search_term": "pagination" } } });
    let rest =
        alice.client.post(&format!("/_matrix/client/v3/search?next_batch={next}"), body).await.assert_ok().clone();
    assert_eq!(rest["search_categories"]["room_events"]["results"].as_array().unwrap().len(), 2);

    let bad = json!({ "search_categories": { "room_events": { "search_term": "x", "order_by": "best" } } });
    alice.client.post("/_matrix/client/v3/search", bad).await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn events_stored_before_the_index_are_indexed_again() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    bob.send_text(&room, "1", "archived minutes").await;
    let services = server.services();
    // The words are written (they may wait in memory), then every index entry goes.
    services.rooms.flush_search_queue().unwrap();
    let (entries, blocks) = (&services.storage.tables.search_index, &services.storage.tables.search_blocks);
    let mut wipe = conduit::storage::Batch::new();
    for (key, _) in entries.all().unwrap() {
        wipe.remove(entries, &key);
    }
    for (key, _) in blocks.all().unwrap() {
        wipe.remove(blocks, &key);
    }
    assert!(!wipe.is_empty(), "the message's words were written");
    services.storage.apply(wipe).unwrap();
    assert_eq!(search(&alice, json!({ "search_term": "minutes" })).await["count"], 0);
    assert!(services.rooms.reindex_search_words().unwrap() > 0);
    assert_eq!(search(&alice, json!({ "search_term": "minutes" })).await["count"], 1);
}

#[tokio::test]
async fn history_from_before_joining_is_not_found_where_visibility_is_joined() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
        }))
        .await;
    alice.send_text(&room, "1", "plan confidentiel avant").await;
    alice.send_text(&room, "2", "plan encore avant").await;
    bob.join(&room).await.assert_ok();
    alice.send_text(&room, "3", "plan après l'arrivée de Bob").await;
    alice.send_text(&room, "4", "plan suivant").await;

    let found = search(&bob, json!({ "search_term": "plan", "order_by": "recent" })).await;
    assert_eq!(bodies(&found), ["plan suivant", "plan après l'arrivée de Bob"]);
    assert_eq!(found["count"], 2);
    let everything = search(&alice, json!({ "search_term": "plan" })).await;
    assert_eq!(everything["count"], 4);

    // Beyond the first page, matches are counted without being read: the
    // count still leaves out what Bob may not see.
    for i in 0..12 {
        alice.send_text(&room, &format!("more-{i}"), &format!("plan numéro {i}")).await;
    }
    let first_page = search(&bob, json!({ "search_term": "plan", "order_by": "recent" })).await;
    assert_eq!(first_page["count"], 14, "12 new and 2 earlier after Bob joined");
    assert_eq!(first_page["results"].as_array().unwrap().len(), 10);
    let next = first_page["next_batch"].as_str().unwrap().to_owned();
    let body = json!({ "search_categories": { "room_events": { "search_term": "plan", "order_by": "recent" } } });
    let rest = bob.client.post(&format!("/_matrix/client/v3/search?next_batch={next}"), body).await.assert_ok().clone();
    let rest = &rest["search_categories"]["room_events"];
    assert_eq!(bodies(rest), ["plan numéro 1", "plan numéro 0", "plan suivant", "plan après l'arrivée de Bob"]);
    assert_eq!(alice_count(&alice).await, 16);
}

async fn alice_count(alice: &Session) -> u64 {
    search(alice, json!({ "search_term": "plan" })).await["count"].as_u64().unwrap()
}
