//! Regression tests for defects found by trying the server from the outside
//! (issue "Hardening"): each failed before its fix.

use serde_json::json;

use crate::harness::{enc, TestServer};

#[tokio::test]
async fn concurrent_room_creations_all_yield_distinct_rooms() {
    let server = TestServer::start().await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        users.push(server.client().register(name).await);
    }
    // 8 parallel clients (two per user), 100 creations in all.
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let session = users[worker % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut rooms = Vec::new();
            for _ in 0..13 {
                let reply = session.client.post("/_matrix/client/v3/createRoom", json!({})).await;
                rooms.push((reply.status, reply.body["room_id"].as_str().unwrap_or_default().to_owned()));
            }
            rooms
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        for (status, room_id) in task.await.expect("worker") {
            assert_eq!(status, 200, "every creation succeeds");
            ids.insert(room_id);
            created += 1;
        }
    }
    assert_eq!(ids.len(), created, "every creation yields its own room");
}

#[tokio::test]
async fn optional_fields_are_absent_not_null_and_unknown_backup_algorithms_refused() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let devices = alice.client.get("/_matrix/client/v3/devices").await;
    let device = devices.assert_ok()["devices"][0].clone();
    assert!(device.get("display_name").is_none(), "absent, not null: {device}");
    let one = alice.client.get(&format!("/_matrix/client/v3/devices/{}", alice.device_id)).await;
    assert!(one.assert_ok().get("display_name").is_none(), "{}", one.body);

    let backup = json!({ "algorithm": "org.example.homemade", "auth_data": { "public_key": "x" } });
    alice.client.post("/_matrix/client/v3/room_keys/version", backup).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.get("/_matrix/client/v3/room_keys/version").await.assert_error(404, "M_NOT_FOUND");
    let backup = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "x" } });
    alice.client.post("/_matrix/client/v3/room_keys/version", backup).await.assert_ok();
}

#[tokio::test]
async fn pagination_tokens_at_the_integer_limits_do_not_overflow() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "visibility": "public", "name": "Forum" })).await;
    let max = u64::MAX;
    let page = server.client().get(&format!("/_matrix/client/v3/publicRooms?since=p{max}&limit=1")).await;
    let page = page.assert_ok();
    assert_eq!(page["chunk"], json!([]));
    assert!(page.get("next_batch").is_none(), "no page after the end: {page}");
    let huge_limit = server.client().get(&format!("/_matrix/client/v3/publicRooms?since=p1&limit={max}")).await;
    assert!(huge_limit.assert_ok().get("next_batch").is_none());

    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&from=s{max}", crate::harness::enc(&room));
    alice.client.get(&messages).await.assert_error(400, "M_INVALID_PARAM");
    let sync = format!("/_matrix/client/v3/sync?timeout=0&since=s{max}");
    alice.client.get(&sync).await.assert_error(400, "M_INVALID_PARAM");
    alice
        .client
        .get(&format!("/_matrix/client/v3/keys/changes?from=s{max}&to=s1"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let search = json!({ "search_categories": { "room_events": { "search_term": "forum" } } });
    let reply = alice.client.post(&format!("/_matrix/client/v3/search?next_batch={}", usize::MAX), search).await;
    assert!(reply.assert_ok()["search_categories"]["room_events"].get("next_batch").is_none());
}

#[tokio::test]
async fn redacted_events_say_what_redacted_them() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let event = alice.send_text(&room, "1", "oops").await;
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&event));
    let redaction = alice.client.put(&path, json!({ "reason": "typo" })).await;
    let redaction = redaction.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let fetched = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&event))).await;
    let because = &fetched.assert_ok()["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str(), "{}", fetched.body);
    assert_eq!(because["content"]["reason"], "typo");
    let messages = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room))).await;
    let chunk = messages.assert_ok()["chunk"].as_array().unwrap().clone();
    let served = chunk.iter().find(|e| e["event_id"] == event.as_str()).unwrap();
    assert_eq!(served["unsigned"]["redacted_because"]["event_id"], redaction.as_str());
}

#[tokio::test]
async fn receipt_threads_must_be_main_or_the_events_thread() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let root = alice.send_text(&room, "1", "root").await;
    let reply = alice
        .send_content(
            &room,
            "2",
            json!({ "msgtype": "m.text", "body": "in thread",
            "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        )
        .await;
    let other = alice.send_text(&room, "3", "elsewhere").await;
    let receipt = |event: &str| format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(event));
    alice.client.post(&receipt(&reply), json!({ "thread_id": root })).await.assert_ok();
    alice.client.post(&receipt(&root), json!({ "thread_id": root })).await.assert_ok();
    alice.client.post(&receipt(&other), json!({ "thread_id": "main" })).await.assert_ok();
    for bad in [json!(""), json!("not-an-event"), json!(root.clone())] {
        alice.client.post(&receipt(&other), json!({ "thread_id": bad })).await.assert_error(400, "M_INVALID_PARAM");
    }
    alice.client.post(&receipt(&other), json!({ "thread_id": 5 })).await.assert_error(400, "M_BAD_JSON");
    let fully_read = format!("/_matrix/client/v3/rooms/{}/receipt/m.fully_read/{}", enc(&room), enc(&other));
    alice.client.post(&fully_read, json!({ "thread_id": "main" })).await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn search_pages_follow_the_filter_limit() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..15 {
        alice.send_text(&room, &format!("t{i}"), &format!("budget line {i}")).await;
    }
    let search = |limit: Option<u64>| {
        let mut criteria = json!({ "search_term": "budget" });
        if let Some(limit) = limit {
            criteria["filter"] = json!({ "limit": limit });
        }
        json!({ "search_categories": { "room_events": criteria } })
    };
    let page = alice.client.post("/_matrix/client/v3/search", search(Some(3))).await;
    let events = &page.assert_ok()["search_categories"]["room_events"];
    assert_eq!(events["results"].as_array().unwrap().len(), 3);
    assert_eq!(events["count"], 15);
    assert_eq!(events["next_batch"], "3");
    let default = alice.client.post("/_matrix/client/v3/search", search(None)).await;
    assert_eq!(default.assert_ok()["search_categories"]["room_events"]["results"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn concurrent_upgrades_of_one_room_make_one_replacement() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "room_alias_name": "forum", "name": "Forum" })).await;
    let path = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&room));
    let mut upgrades = Vec::new();
    for _ in 0..6 {
        let (client, path) = (alice.client.clone(), path.clone());
        upgrades.push(tokio::spawn(async move { client.post(&path, json!({ "new_version": "12" })).await }));
    }
    let mut replacements = std::collections::HashSet::new();
    for upgrade in upgrades {
        let reply = upgrade.await.unwrap();
        replacements.insert(reply.assert_ok()["replacement_room"].as_str().unwrap().to_owned());
    }
    assert_eq!(replacements.len(), 1, "one replacement room, the same answer for all: {replacements:?}");
    let replacement = replacements.into_iter().next().unwrap();
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"].as_array().unwrap().len(), 2, "the old room and one new one");
    let alias = alice.client.get("/_matrix/client/v3/directory/room/%23forum%3Atest.local").await;
    assert_eq!(alias.assert_ok()["room_id"], replacement.as_str(), "the alias moved with the tombstone");
}

#[tokio::test]
async fn a_profile_change_cut_short_reaches_every_room_after_a_restart() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let first = alice.create_room(json!({})).await;
    let second = alice.create_room(json!({})).await;
    // The profile is written, then the process dies before any member event.
    let services = server.services();
    services
        .users
        .set_profile_field("alice", conduit::users::ProfileField::DisplayName, Some("Alice Martin".into()))
        .await
        .unwrap();
    drop(services);
    let server = server.restart().await;
    let alice = crate::harness::Session { client: server.client().with_token(&alice.token), ..alice };
    for room in [&first, &second] {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(&alice.user_id));
        let mut carried = false;
        for _ in 0..100 {
            if alice.client.get(&path).await.body["displayname"] == "Alice Martin" {
                carried = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(carried, "the member event in {room} carries the new name");
    }
    let services = server.services();
    for _ in 0..100 {
        if services.users.unpropagated_profiles().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(services.users.unpropagated_profiles().unwrap().is_empty(), "the mark is gone once done");
}

#[tokio::test]
async fn files_no_upload_record_names_are_removed_at_start_up() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let reply = alice
        .client
        .send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], bytes::Bytes::from("kept"))
        .await;
    let uri = reply.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    // A file stored by an upload killed before its record: nothing names it.
    let media_dir = server.dir.path().join("db").join("media");
    let orphan_name = "ab".repeat(32);
    std::fs::create_dir_all(media_dir.join("ab")).unwrap();
    std::fs::write(media_dir.join("ab").join(&orphan_name), b"orphan").unwrap();
    let server = server.restart().await;
    assert!(!media_dir.join("ab").join(&orphan_name).exists(), "the orphan is gone");
    let alice = alice.client.with_token(&alice.token);
    let alice = crate::harness::Client { addr: server.addr, ..alice };
    let path = format!("/_matrix/client/v1/media/download/{}", uri.trim_start_matches("mxc://"));
    let (status, _, body) = alice.send_raw("GET", &path, &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!((status, body.as_ref()), (200, b"kept".as_ref()), "recorded files stay");
}

#[tokio::test]
async fn a_refused_room_creation_leaves_no_room_behind() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    // The last initial event is refused (a number beyond canonical JSON's range).
    let body = json!({
        "room_alias_name": "refused",
        "name": "Half-built",
        "initial_state": [
            { "type": "m.room.topic", "content": { "topic": "fine" } },
            { "type": "org.example.big", "content": { "n": 9007199254740993u64 } },
        ],
    });
    let reply = alice.client.post("/_matrix/client/v3/createRoom", body).await;
    reply.assert_error(400, "M_BAD_JSON");
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]), "no half-built room");
    let alias = alice.client.get("/_matrix/client/v3/directory/room/%23refused%3Atest.local").await;
    alias.assert_error(404, "M_NOT_FOUND");
    // An initial event the auth rules refuse: the creator gave away the power to send it.
    let body = json!({
        "power_level_content_override": { "state_default": 100, "users": { alice.user_id.clone(): 10 } },
        "initial_state": [{ "type": "m.room.topic", "content": { "topic": "no power" } }],
        "room_version": "10",
    });
    alice.client.post("/_matrix/client/v3/createRoom", body).await.assert_error(403, "M_FORBIDDEN");
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]));
    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync.assert_ok()["rooms"]["join"].as_object().is_none_or(|rooms| rooms.is_empty()), "{}", sync.body);
    // And the name still works afterwards.
    alice.create_room(json!({ "room_alias_name": "refused" })).await;
    assert_eq!(server.services().rooms.locks.len(), 0, "no lock entry stays behind");
}
