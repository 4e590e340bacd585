//! Profiles: reading, own-only changes, propagation to joined rooms.

use serde_json::json;

use crate::harness::{enc, TestServer};

#[tokio::test]
async fn profiles_are_read_by_anyone_changed_by_their_owner_and_propagated() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let profile = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    assert_eq!(client.get(&profile).await.assert_ok()["displayname"], "alice", "defaults to the localpart");
    client.get("/_matrix/client/v3/profile/%40ghost%3Atest.local").await.assert_error(404, "M_NOT_FOUND");
    // Users of other servers are asked of their server: this one cannot be reached.
    client.get("/_matrix/client/v3/profile/%40x%3Aother.invalid").await.assert_error(503, "M_UNKNOWN");

    let room = alice.client.post("/_matrix/client/v3/createRoom", json!({ "preset": "public_chat" })).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), json!({})).await.assert_ok();

    let name = format!("{profile}/displayname");
    bob.client.put(&name, json!({ "displayname": "Mallory" })).await.assert_error(403, "M_FORBIDDEN");
    alice.client.put(&name, json!({ "displayname": 7 })).await.assert_error(400, "M_BAD_JSON");
    alice.client.put(&name, json!({ "displayname": "Alice Liddell" })).await.assert_ok();
    assert_eq!(client.get(&name).await.assert_ok()["displayname"], "Alice Liddell");
    let avatar = format!("{profile}/avatar_url");
    alice.client.put(&avatar, json!({ "avatar_url": "https://not-mxc" })).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.put(&avatar, json!({ "avatar_url": "mxc://test.local/abc" })).await.assert_ok();
    client.get(&format!("{profile}/nonsense")).await.assert_error(404, "M_NOT_FOUND");

    let member = bob
        .client
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id)))
        .await;
    let member = member.assert_ok();
    assert_eq!(member["displayname"], "Alice Liddell", "the change reached the joined room");
    assert_eq!(member["avatar_url"], "mxc://test.local/abc");
    assert_eq!(member["membership"], "join");
    let joined = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room))).await;
    assert_eq!(joined.assert_ok()["joined"][&bob.user_id]["display_name"], "bob", "joins carry the profile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_change_does_not_rejoin_rooms_left_while_it_spreads() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..30 {
        let room = alice.client.post("/_matrix/client/v3/createRoom", json!({ "preset": "public_chat" })).await;
        rooms.push(room.assert_ok()["room_id"].as_str().unwrap().to_owned());
    }
    let name = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    let leaves: Vec<String> =
        rooms.iter().map(|room| format!("/_matrix/client/v3/rooms/{}/leave", enc(room))).collect();
    let rename = alice.client.put(&name, json!({ "displayname": "Alice Liddell" }));
    let leaving = futures_util::future::join_all(leaves.iter().map(|path| alice.client.post(path, json!({}))));
    let (renamed, left) = tokio::join!(rename, leaving);
    renamed.assert_ok();
    for reply in left {
        reply.assert_ok();
    }
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]), "every room left stays left");
}
