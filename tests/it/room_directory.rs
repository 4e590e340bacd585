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

#[tokio::test]
async fn space_hierarchies_walk_children_the_user_may_see() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let space = alice
        .create_room(json!({ "preset": "public_chat", "name": "Ministère", "creation_content": { "type": "m.space" } }))
        .await;
    let forum = alice.create_room(json!({ "preset": "public_chat", "name": "Forum" })).await;
    let private = alice.create_room(json!({ "preset": "private_chat", "name": "Direction" })).await;
    let subspace = alice
        .create_room(json!({ "preset": "public_chat", "name": "Service", "creation_content": { "type": "m.space" } }))
        .await;
    let deep = alice.create_room(json!({ "preset": "public_chat", "name": "Équipe" })).await;
    let add_child = |parent: &str, child: &str, order: &str, suggested: bool| {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(parent), enc(child));
        let content = json!({ "via": ["test.local"], "order": order, "suggested": suggested });
        let alice = alice.clone();
        async move { alice.client.put(&path, content).await.assert_ok().clone() }
    };
    add_child(&space, &private, "a", false).await;
    add_child(&space, &forum, "b", true).await;
    add_child(&space, &subspace, "c", false).await;
    add_child(&subspace, &deep, "a", false).await;

    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space));
    let body = bob.client.get(&path).await.assert_ok().clone();
    let ids: Vec<&str> = body["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec![space.as_str(), forum.as_str(), subspace.as_str(), deep.as_str()],
        "private room hidden: {body}"
    );
    assert_eq!(body["rooms"][0]["room_type"], "m.space");
    assert_eq!(body["rooms"][0]["children_state"].as_array().unwrap().len(), 3);
    assert_eq!(body["rooms"][1]["name"], "Forum");

    // Alice (a member of the private room) sees it; depth and suggestion limits apply.
    let body = alice.client.get(&format!("{path}?max_depth=1")).await.assert_ok().clone();
    let ids: Vec<&str> = body["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![space.as_str(), private.as_str(), forum.as_str(), subspace.as_str()]);
    let body = alice.client.get(&format!("{path}?suggested_only=true")).await.assert_ok().clone();
    assert_eq!(body["rooms"].as_array().unwrap().len(), 2);

    // Pagination keeps its parameters.
    let first = bob.client.get(&format!("{path}?limit=2")).await.assert_ok().clone();
    let next = first["next_batch"].as_str().unwrap().to_owned();
    let rest = bob.client.get(&format!("{path}?limit=2&from={next}")).await.assert_ok().clone();
    assert_eq!(rest["rooms"][0]["room_id"], subspace.as_str());
    bob.client.get(&format!("{path}?from={next}&max_depth=1")).await.assert_error(400, "M_INVALID_PARAM");

    // A room bob may not see: 403 for its hierarchy, 404 for its summary.
    let hidden = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&private));
    bob.client.get(&hidden).await.assert_error(403, "M_FORBIDDEN");
    let summary = |room: &str| format!("/_matrix/client/v1/room_summary/{}", enc(room));
    bob.client.get(&summary(&private)).await.assert_error(404, "M_NOT_FOUND");
    let preview = bob.client.get(&summary(&forum)).await.assert_ok().clone();
    assert_eq!(preview["name"], "Forum");
    assert!(preview.get("membership").is_none(), "bob is not a member");
    let own = alice.client.get(&summary(&private)).await.assert_ok().clone();
    assert_eq!(own["membership"], "join");
}
