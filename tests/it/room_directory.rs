//! The published room directory: publication rights, search, pagination.

use serde_json::json;

use crate::harness::{enc, TestServer};

#[tokio::test]
async fn published_rooms_are_listed_searched_and_paginated() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let forum = alice
        .create_room(json!({ "preset": "public_chat", "visibility": "public", "name": "Forum Écologie", "topic": "Énergie et climat" }))
        .await;
    let second = alice.create_room(json!({ "preset": "public_chat", "name": "Cantine" })).await;
    let third =
        alice.create_room(json!({ "preset": "public_chat", "name": "Sport", "room_alias_name": "sport" })).await;
    bob.join(&forum).await.assert_ok();

    // Only the room created with visibility "public" is listed; no token needed.
    let listed = client.get("/_matrix/client/v3/publicRooms").await.assert_ok().clone();
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["chunk"][0]["room_id"], forum.as_str());
    assert_eq!(listed["chunk"][0]["name"], "Forum Écologie");
    assert_eq!(listed["chunk"][0]["num_joined_members"], 2);
    assert_eq!(listed["chunk"][0]["join_rule"], "public");

    // Publishing needs power in the room.
    let list_path = |room: &str| format!("/_matrix/client/v3/directory/list/room/{}", enc(room));
    bob.join(&second).await.assert_ok();
    bob.client.put(&list_path(&second), json!({ "visibility": "public" })).await.assert_error(403, "M_FORBIDDEN");
    alice.client.put(&list_path(&second), json!({ "visibility": "public" })).await.assert_ok();
    alice.client.put(&list_path(&third), json!({ "visibility": "public" })).await.assert_ok();
    alice.client.put(&list_path(&third), json!({ "visibility": "secret" })).await.assert_error(400, "M_INVALID_PARAM");
    assert_eq!(client.get(&list_path(&second)).await.assert_ok()["visibility"], "public");

    // Search by name, topic or alias, without accents.
    let search = |term: &str| json!({ "filter": { "generic_search_term": term } });
    let found = bob.client.post("/_matrix/client/v3/publicRooms", search("energie")).await.assert_ok().clone();
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(found["chunk"][0]["room_id"], forum.as_str());
    let found = bob.client.post("/_matrix/client/v3/publicRooms", search("SPO")).await.assert_ok().clone();
    assert_eq!(found["chunk"][0]["room_id"], third.as_str());

    // Pagination: the most joined room first, then by room id, two pages.
    let page = client.get("/_matrix/client/v3/publicRooms?limit=2").await.assert_ok().clone();
    assert_eq!(page["chunk"].as_array().unwrap().len(), 2);
    assert_eq!(page["total_room_count_estimate"], 3);
    let next = page["next_batch"].as_str().unwrap();
    let rest = client.get(&format!("/_matrix/client/v3/publicRooms?limit=2&since={next}")).await.assert_ok().clone();
    assert_eq!(rest["chunk"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_batch").is_none());
    let mut seen: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["chunk"].as_array().unwrap())
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut all = vec![forum.clone(), second.clone(), third.clone()];
    all.sort();
    assert_eq!(seen, all);
    client.get("/_matrix/client/v3/publicRooms?since=bogus").await.assert_error(400, "M_INVALID_PARAM");

    // Unpublishing removes it.
    alice.client.put(&list_path(&third), json!({ "visibility": "private" })).await.assert_ok();
    let listed = client.get("/_matrix/client/v3/publicRooms").await.assert_ok().clone();
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 2);
}
