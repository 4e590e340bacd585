//! The user directory: accent-insensitive search, visibility, limits.

use serde_json::{json, Value};

use crate::harness::{enc, Session, TestServer};

async fn search(session: &Session, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({ "search_term": term });
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    session.client.post("/_matrix/client/v3/user_directory/search", body).await.assert_ok().clone()
}

fn user_ids(body: &Value) -> Vec<String> {
    body["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect()
}

async fn set_name(session: &Session, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&session.user_id));
    session.client.put(&path, json!({ "displayname": name })).await.assert_ok();
}

#[tokio::test]
async fn search_finds_room_mates_and_public_room_members_without_accents() {
    let server = TestServer::start().await;
    let client = server.client();
    let searcher = client.register("searcher").await;
    let helene = client.register("hmuller").await;
    let francois = client.register("fdupont").await;
    let hidden = client.register("hidden").await;
    set_name(&helene, "Hélène Müller").await;
    set_name(&francois, "François Dupont").await;
    set_name(&hidden, "Hélène Secret").await;

    // Nobody shares a room yet and nobody is in a public room.
    assert!(user_ids(&search(&searcher, "helene", None).await).is_empty());

    // A private room shared with Hélène; François joins a public forum.
    let private = searcher.create_room(json!({ "preset": "private_chat", "invite": [helene.user_id] })).await;
    helene.join(&private).await.assert_ok();
    let forum_owner = client.register("owner").await;
    let forum = forum_owner.create_room(json!({ "preset": "public_chat" })).await;
    francois.join(&forum).await.assert_ok();
    // The hidden user is only in a private room the searcher is not in.
    hidden.create_room(json!({ "preset": "private_chat" })).await;

    let body = search(&searcher, "helene", None).await;
    assert_eq!(user_ids(&body), vec![helene.user_id.clone()], "{body}");
    assert_eq!(body["results"][0]["display_name"], "Hélène Müller");
    assert_eq!(body["limited"], false);
    assert_eq!(user_ids(&search(&searcher, "francois", None).await), vec![francois.user_id.clone()]);
    assert_eq!(user_ids(&search(&searcher, "MÜLL", None).await), vec![helene.user_id.clone()]);

    // Display-name changes show at once; deactivated users never.
    set_name(&helene, "Léa Martin").await;
    assert!(user_ids(&search(&searcher, "helene", None).await).is_empty());
    assert_eq!(user_ids(&search(&searcher, "lea", None).await), vec![helene.user_id.clone()]);
    let reply = francois.client.post("/_matrix/client/v3/account/deactivate", json!({})).await;
    let session = reply.body["session"].as_str().unwrap().to_owned();
    let auth = json!({ "auth": francois.password_auth(&session) });
    francois.client.post("/_matrix/client/v3/account/deactivate", auth).await.assert_ok();
    assert!(user_ids(&search(&searcher, "francois", None).await).is_empty());

    searcher.client.post("/_matrix/client/v3/user_directory/search", json!({})).await.assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn search_all_users_ranks_and_limits() {
    let server = TestServer::start_with("[user_directory]\nsearch_all_users = true\n").await;
    let client = server.client();
    let searcher = client.register("searcher").await;
    for (name, display) in [("anna1", "Anna Bell"), ("anna2", "Annabelle Roy"), ("anna3", "Anna")] {
        let session = client.register(name).await;
        set_name(&session, display).await;
    }
    let body = search(&searcher, "anna", Some(2)).await;
    let ids = user_ids(&body);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "@anna3:test.local", "the exact name first: {body}");
    assert_eq!(body["limited"], true);
    let both_words = user_ids(&search(&searcher, "anna bel", None).await);
    assert_eq!(both_words, vec!["@anna1:test.local"], "each word must start a word of the name");
}

/// A room's members are visible through it while anyone may join or read it
/// (join rule `public`, or `world_readable` history), and no longer after.
#[tokio::test]
async fn members_stop_being_visible_when_their_room_stops_being_public() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let carol = client.register("carol").await;
    let found = |session: Session| async move { user_ids(&search(&session, "bob", None).await) };
    assert_eq!(found(carol.clone()).await, vec![bob.user_id.clone()]);
    let rules = crate::harness::state_path(&room, "m.room.join_rules", "");
    let visibility = crate::harness::state_path(&room, "m.room.history_visibility", "");
    alice.client.put(&rules, json!({ "join_rule": "invite" })).await.assert_ok();
    assert!(found(carol.clone()).await.is_empty(), "invite-only and not world-readable");
    alice.client.put(&visibility, json!({ "history_visibility": "world_readable" })).await.assert_ok();
    assert_eq!(found(carol.clone()).await, vec![bob.user_id.clone()], "world-readable counts as public");
    alice.client.put(&visibility, json!({ "history_visibility": "shared" })).await.assert_ok();
    assert!(found(carol.clone()).await.is_empty());

    // Another public room still shows bob, and a room shared with carol too.
    let forum = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&forum).await.assert_ok();
    assert_eq!(found(carol.clone()).await, vec![bob.user_id.clone()], "through the other public room");
    let forum_rules = crate::harness::state_path(&forum, "m.room.join_rules", "");
    alice.client.put(&forum_rules, json!({ "join_rule": "invite" })).await.assert_ok();
    assert!(found(carol.clone()).await.is_empty());
    let shared = bob.create_room(json!({ "invite": [carol.user_id] })).await;
    carol.join(&shared).await.assert_ok();
    assert_eq!(found(carol.clone()).await, vec![bob.user_id.clone()], "a room carol shares with bob");
    let dave = client.register("dave").await;
    assert!(found(dave).await.is_empty(), "but not to someone who shares nothing with him");
}
