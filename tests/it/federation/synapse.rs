//! Interoperability with Synapse, the reference homeserver: a pinned
//! release (`crate::synapse`) started on loopback with certificate checks
//! on and our test CA, and a conduit server, each named `localhost:PORT`
//! (Synapse has no static map: a name with a port is connected to directly).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, start_peer, TestCa};
use conduit::rooms::Membership;

use crate::{
    harness::{enc, message_bodies, Session, TestServer},
    synapse::SynapsePeer,
};

/// A conduit server and a Synapse server that trust the same CA.
async fn conduit_and_synapse() -> (TestCa, TestServer, SynapsePeer, tempfile::TempDir) {
    conduit_and_synapse_with("").await
}

/// [`conduit_and_synapse`] with extra `homeserver.yaml` text for Synapse.
async fn conduit_and_synapse_with(synapse_yaml: &str) -> (TestCa, TestServer, SynapsePeer, tempfile::TempDir) {
    let ca = TestCa::new();
    let port = free_port();
    let conduit = start_peer(&ca, &format!("localhost:{port}"), port, &[], "").await;
    let certs = tempfile::tempdir().unwrap();
    ca.issue(certs.path(), "localhost");
    let synapse = crate::synapse::start_with(
        &certs.path().join("localhost.pem"),
        &certs.path().join("localhost.key"),
        std::path::Path::new(&ca.ca_file()),
        synapse_yaml,
    )
    .await;
    (ca, conduit, synapse, certs)
}

/// Syncs as `session` (from the start, then incrementally: Synapse caches
/// repeated initial syncs) until `check` holds for what the room's joined
/// section gave so far (timeline and state events gathered); that. Fails
/// after 30 s, with `peer`'s log.
async fn wait_in_room(session: &Session, room: &str, peer: &SynapsePeer, check: impl Fn(&Value) -> bool) -> Value {
    let mut gathered = json!({ "timeline": { "events": [] }, "state": { "events": [] } });
    wait_for_sync(session, peer, &format!("the expected in {room}"), |sync| {
        for part in ["timeline", "state"] {
            let events = sync["rooms"]["join"][room][part]["events"].as_array().cloned().unwrap_or_default();
            gathered[part]["events"].as_array_mut().expect("a list").extend(events);
        }
        check(&gathered)
    })
    .await;
    gathered
}

/// Syncs as `session` (incrementally) until `user` is typing in `room`.
async fn wait_for_typing(session: &Session, room: &str, user: &str, peer: &SynapsePeer) {
    wait_for_sync(session, peer, &format!("{user} typing"), |sync| {
        let ephemeral = &sync["rooms"]["join"][room]["ephemeral"]["events"];
        ephemeral.as_array().into_iter().flatten().any(|event| {
            event["type"] == "m.typing"
                && event["content"]["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == user))
        })
    })
    .await;
}

/// Synapse's log without its sync requests (what a failure needs to show).
fn log_of(peer: &SynapsePeer) -> String {
    let log = std::fs::read_to_string(peer.dir().join("homeserver.log")).unwrap_or_default();
    let noise = ["sync", "response_cache", "background_updates", "event_push_actions", "lrucache", "metrics"];
    let lines: Vec<&str> = log.lines().filter(|line| !noise.iter().any(|n| line.contains(n))).collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// In a Synapse room alice (conduit) joined after sam wrote "avant alice":
/// alice reads it in the history, then each sees the other's message; the
/// id of alice's.
async fn history_then_talk(alice: &Session, sam: &Session, room: &str, synapse: &SynapsePeer) -> String {
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room));
    let history = alice.client.get(&messages).await;
    let chunk = &history.assert_ok()["chunk"];
    assert!(message_bodies(chunk).iter().any(|b| b == "avant alice"), "{chunk}");
    sam.send_text(room, "t1", "bienvenue").await;
    wait_in_room(alice, room, synapse, |s| timeline_has(s, "bienvenue")).await;
    let mine = alice.send_text(room, "t2", "merci").await;
    wait_in_room(sam, room, synapse, |s| timeline_has(s, "merci")).await;
    mine
}

fn timeline_has(section: &Value, body: &str) -> bool {
    message_bodies(&section["timeline"]["events"]).iter().any(|b| b == body)
}

/// Whether the room's state or timeline in a sync section holds a member event of `user` with `membership`.
fn has_membership(section: &Value, user: &str, membership: &str) -> bool {
    ["state", "timeline"].iter().any(|part| {
        section[part]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == user && e["content"]["membership"] == membership)
    })
}

#[tokio::test]
async fn a_synapse_user_joins_a_conduit_room_by_alias_and_they_talk() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = alice.create_room(json!({ "preset": "public_chat", "room_alias_name": "forum", "name": "Forum" })).await;
    alice.send_text(&room, "t0", "before sam").await;
    let alias = format!("#forum:{}", alice.user_id.split_once(':').unwrap().1);
    let joined = sam.client.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), json!({})).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    assert_eq!(joined.body["room_id"], room.as_str());
    // conduit hears of the join.
    wait_in_room(&alice, &room, &synapse, |s| has_membership(s, &sam.user_id, "join")).await;
    // Synapse backfills the history from before the join from conduit.
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room));
    let history = sam.client.get(&messages).await;
    let bodies = message_bodies(&history.assert_ok()["chunk"]);
    assert!(bodies.iter().any(|b| b == "before sam"), "{bodies:?}\n{}", log_of(&synapse));

    // Messages both ways.
    alice.send_text(&room, "t1", "bonjour de conduit").await;
    wait_in_room(&sam, &room, &synapse, |s| timeline_has(s, "bonjour de conduit")).await;

    // Typing both ways (EDUs).
    let typing = |user: &str| format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(user));
    sam.client.put(&typing(&sam.user_id), json!({ "typing": true, "timeout": 20000 })).await.assert_ok();
    wait_for_typing(&alice, &room, &sam.user_id, &synapse).await;
    alice.client.put(&typing(&alice.user_id), json!({ "typing": true, "timeout": 20000 })).await.assert_ok();
    wait_for_typing(&sam, &room, &alice.user_id, &synapse).await;
    let sams = sam.send_text(&room, "t2", "bonjour de synapse").await;
    wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, "bonjour de synapse")).await;

    // An edit from Synapse, a redaction from conduit, a state change from conduit.
    let edit = json!({
        "msgtype": "m.text", "body": "* corrigé",
        "m.new_content": { "msgtype": "m.text", "body": "corrigé" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": sams },
    });
    sam.send_content(&room, "t3", edit).await;
    wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, "* corrigé")).await;
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&sams));
    alice.client.put(&redact, json!({ "reason": "modération" })).await.assert_ok();
    wait_in_room(&sam, &room, &synapse, |s| {
        s["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["type"] == "m.room.redaction")
    })
    .await;
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    alice.client.put(&topic, json!({ "topic": "Sujet" })).await.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = sam.client.get(&topic).await;
        if seen.status == 200 && seen.body["topic"] == "Sujet" {
            break;
        }
        assert!(Instant::now() < deadline, "Synapse never saw the topic: {}", log_of(&synapse));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_conduit_user_joins_a_synapse_room_by_id_and_they_talk() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = sam.create_room(json!({ "preset": "public_chat", "name": "Salon Synapse" })).await;
    sam.send_text(&room, "t0", "avant alice").await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), synapse.server_name);
    let joined = alice.client.post(&path, json!({})).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    let name = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room))).await;
    assert_eq!(name.assert_ok()["name"], "Salon Synapse");

    // conduit fetches the history from before the join from Synapse.
    let mine = history_then_talk(&alice, &sam, &room, &synapse).await;

    // Synapse's admin redacts alice's message and changes the topic: conduit applies both.
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&mine));
    sam.client.put(&redact, json!({})).await.assert_ok();
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    sam.client.put(&topic, json!({ "topic": "Ordre du jour" })).await.assert_ok();
    wait_in_room(&alice, &room, &synapse, |s| {
        s["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["type"] == "m.room.topic")
    })
    .await;
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&mine))).await;
    assert_eq!(event.assert_ok()["content"], json!({}), "redacted on conduit too");
    assert_eq!(alice.client.get(&topic).await.assert_ok()["topic"], "Ordre du jour");

    // A Synapse room joined by alias.
    let other = sam.create_room(json!({ "preset": "public_chat", "room_alias_name": "salon" })).await;
    let alias = format!("#salon:{}", synapse.server_name);
    let joined = alice.client.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), json!({})).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    assert_eq!(joined.body["room_id"], other.as_str());
}

/// A Synapse user creates a room of `version` (1 or 2: events with
/// server-minted ids and hashed references) and talks; a conduit user joins
/// it by id, reads the history, both talk, and Synapse's topic change shows
/// on conduit.
async fn a_conduit_user_takes_part_in_a_synapse_room_of_version(version: &str) {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = sam.create_room(json!({ "preset": "public_chat", "name": "Ancien", "room_version": version })).await;
    sam.send_text(&room, "t0", "avant alice").await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), synapse.server_name);
    let joined = alice.client.post(&path, json!({})).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    let create = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create/", enc(&room))).await;
    assert_eq!(create.assert_ok()["room_version"], version);

    let mine = history_then_talk(&alice, &sam, &room, &synapse).await;
    assert!(mine.ends_with(&format!(":{}", alice.user_id.split_once(':').unwrap().1)), "{mine}: minted here");

    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    sam.client.put(&topic, json!({ "topic": "Ordre du jour" })).await.assert_ok();
    wait_in_room(&alice, &room, &synapse, |s| {
        s["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["type"] == "m.room.topic")
    })
    .await;
    assert_eq!(alice.client.get(&topic).await.assert_ok()["topic"], "Ordre du jour");
    // And a state event from conduit reaches Synapse (alice's display name).
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    alice.client.put(&profile, json!({ "displayname": "Alice" })).await.assert_ok();
    wait_in_room(&sam, &room, &synapse, |s| {
        s["timeline"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.room.member" && e["state_key"] == alice.user_id && e["content"]["displayname"] == "Alice"
        })
    })
    .await;
}

#[tokio::test]
async fn a_conduit_user_joins_a_synapse_room_of_version_1_and_they_talk() {
    a_conduit_user_takes_part_in_a_synapse_room_of_version("1").await;
}

#[tokio::test]
async fn a_conduit_user_joins_a_synapse_room_of_version_2_and_they_talk() {
    a_conduit_user_takes_part_in_a_synapse_room_of_version("2").await;
}

/// Both servers change the topic of a version 1 room at the same moment
/// (each on its own tip: a fork), a few times over; once each has the
/// other's change and a message built on both, the two agree on the topic
/// (state resolution v1 here, Synapse's own there).
#[tokio::test]
async fn concurrent_topics_in_a_version_1_room_resolve_the_same_on_conduit_and_synapse() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = sam.create_room(json!({ "preset": "public_chat", "room_version": "1" })).await;
    // alice gets the power to set the topic.
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), synapse.server_name);
    assert_eq!(alice.client.post(&path, json!({})).await.status, 200);
    let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room));
    let mut levels = sam.client.get(&levels_path).await.assert_ok().clone();
    levels["users"][&alice.user_id] = json!(100);
    sam.client.put(&levels_path, levels).await.assert_ok();
    wait_in_room(&alice, &room, &synapse, |s| {
        s["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["type"] == "m.room.power_levels")
    })
    .await;

    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    for round in 0..3 {
        let (from_sam, from_alice) = (format!("sam {round}"), format!("alice {round}"));
        let (a, b) = tokio::join!(
            sam.client.put(&topic, json!({ "topic": from_sam })),
            alice.client.put(&topic, json!({ "topic": from_alice })),
        );
        a.assert_ok();
        b.assert_ok();
        let saw_both = |s: &Value| {
            let topics: Vec<&Value> = s["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "m.room.topic")
                .map(|e| &e["content"]["topic"])
                .collect();
            topics.contains(&&json!(from_sam)) && topics.contains(&&json!(from_alice))
        };
        wait_in_room(&alice, &room, &synapse, saw_both).await;
        wait_in_room(&sam, &room, &synapse, saw_both).await;
        // A message from each side builds on both branches.
        let (on_sam, on_alice) = (format!("merge s{round}"), format!("merge a{round}"));
        sam.send_text(&room, &format!("ms{round}"), &on_sam).await;
        alice.send_text(&room, &format!("ma{round}"), &on_alice).await;
        wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, &on_sam)).await;
        wait_in_room(&sam, &room, &synapse, |s| timeline_has(s, &on_alice)).await;
        let on_conduit = alice.client.get(&topic).await.assert_ok()["topic"].clone();
        let on_synapse = sam.client.get(&topic).await.assert_ok()["topic"].clone();
        assert_eq!(on_conduit, on_synapse, "round {round}\n{}", log_of(&synapse));
    }
}

/// conduit as the resident server of a version 1 room: a second conduit's
/// user joins a Synapse room through the first conduit (its `/make_join`
/// template with pairs, its `/send_join`), and everyone hears everyone.
#[tokio::test]
async fn a_conduit_joins_a_version_1_room_through_another_conduit() {
    let (ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let port = free_port();
    let other = start_peer(&ca, &format!("localhost:{port}"), port, &[], "").await;
    let alice = conduit.client().register("alice").await;
    let bob = other.client().register("bob").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = sam.create_room(json!({ "preset": "public_chat", "room_version": "1" })).await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), synapse.server_name);
    assert_eq!(alice.client.post(&path, json!({})).await.status, 200);
    let alices_server = alice.user_id.split_once(':').unwrap().1;
    // The template the first conduit hands out: its own event id, hashed pairs.
    let services = conduit.services();
    let (room_id, user_id) = (ruma::RoomId::parse(&room).unwrap(), ruma::UserId::parse(&bob.user_id).unwrap());
    // Joined with partial state, it hands out templates once the state is whole.
    super::wait_for_whole_state(&conduit, &room_id).await;
    let template = services
        .federation
        .make_membership(&services.rooms, user_id.server_name(), &room_id, &user_id, Membership::Join, &["1"])
        .unwrap();
    let event = &template["event"];
    assert!(event["event_id"].as_str().unwrap().ends_with(&format!(":{alices_server}")), "{template}");
    let prev = &event["prev_events"][0];
    assert!(prev[0].is_string() && prev[1]["sha256"].is_string(), "{template}");
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(alices_server));
    let joined = bob.client.post(&path, json!({})).await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    wait_in_room(&sam, &room, &synapse, |s| has_membership(s, &bob.user_id, "join")).await;
    bob.send_text(&room, "b1", "bonjour de bob").await;
    wait_in_room(&sam, &room, &synapse, |s| timeline_has(s, "bonjour de bob")).await;
    wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, "bonjour de bob")).await;
    sam.send_text(&room, "s1", "salut bob").await;
    wait_in_room(&bob, &room, &synapse, |s| timeline_has(s, "salut bob")).await;
}

#[tokio::test]
async fn invites_and_kicks_cross_between_conduit_and_synapse() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;

    // conduit invites a Synapse user into a private room, then kicks him.
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invited = alice.client.post(&invite, json!({ "user_id": sam.user_id })).await;
    assert_eq!(invited.status, 200, "{}\n{}", invited.body, log_of(&synapse));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync = sam.client.get("/_matrix/client/v3/sync?timeout=0").await;
        if sync.body["rooms"]["invite"][&room].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "Synapse never showed the invite: {}", log_of(&synapse));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = sam.join(&room).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    wait_in_room(&alice, &room, &synapse, |s| has_membership(s, &sam.user_id, "join")).await;
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
    alice.client.post(&kick, json!({ "user_id": sam.user_id })).await.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync = sam.client.get("/_matrix/client/v3/sync?timeout=0").await;
        if !sync.body["rooms"]["join"][&room].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "Synapse never applied the kick: {}", log_of(&synapse));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Synapse invites a conduit user, who joins; Synapse kicks her.
    let room = sam.create_room(json!({ "preset": "private_chat" })).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invited = sam.client.post(&invite, json!({ "user_id": alice.user_id })).await;
    assert_eq!(invited.status, 200, "{}\n{}", invited.body, log_of(&synapse));
    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync.assert_ok()["rooms"]["invite"][&room].is_object(), "{}", sync.body);
    let joined = alice.join(&room).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));
    sam.send_text(&room, "t1", "entre nous").await;
    wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, "entre nous")).await;
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
    sam.client.post(&kick, json!({ "user_id": alice.user_id })).await.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rooms = alice.client.get("/_matrix/client/v3/joined_rooms").await;
        if !rooms.assert_ok()["joined_rooms"].as_array().unwrap().iter().any(|r| r == room.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "conduit never applied Synapse's kick");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn media_crosses_between_conduit_and_synapse() {
    use bytes::Bytes;
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let upload = |session: &Session, body: Vec<u8>| {
        let session = session.clone();
        async move {
            let path = "/_matrix/media/v3/upload?filename=plan.png";
            let reply = session.client.try_send("POST", path, &[("content-type", "image/png")], Bytes::from(body));
            let reply = reply.await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned()
        }
    };
    let download = |session: &Session, media: String| {
        let session = session.clone();
        async move {
            let path = format!("/_matrix/client/v1/media/download/{media}");
            session.client.send_raw("GET", &path, &[], Bytes::new()).await.unwrap()
        }
    };
    let conduit_png = conduit::media::thumbnail::blank_png(64, 32);
    let synapse_png = conduit::media::thumbnail::blank_png(32, 64);

    // Synapse fetches conduit's file over the federation media endpoint (multipart).
    let media = upload(&alice, conduit_png.clone()).await;
    let (status, headers, body) = download(&sam, media.clone()).await;
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), log_of(&synapse));
    assert_eq!((body, headers["content-type"].to_str().unwrap()), (Bytes::from(conduit_png), "image/png"));

    // conduit fetches Synapse's file, and a thumbnail of it.
    let media = upload(&sam, synapse_png.clone()).await;
    let (status, headers, body) = download(&alice, media.clone()).await;
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), log_of(&synapse));
    assert_eq!((body, headers["content-type"].to_str().unwrap()), (Bytes::from(synapse_png), "image/png"));
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/{media}?width=16&height=16&method=crop");
    let (status, _, body) = alice.client.send_raw("GET", &thumbnail, &[], Bytes::new()).await.unwrap();
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), log_of(&synapse));
    // Synapse answers with the nearest of its own sizes (the spec lets it be larger).
    let image = image::load_from_memory(&body).unwrap();
    assert!(image.width() >= 16 && image.width() == image.height(), "{}x{}", image.width(), image.height());
}

#[tokio::test]
async fn matrix_js_sdk_clients_on_conduit_and_synapse_share_an_encrypted_dm() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse().await;
    let conduit_url = format!("http://{}", conduit.addr);
    let synapse_url = format!("http://{}", synapse.client_addr());
    // Both ways: the inviter (and the user whose new device the other must
    // see) on conduit, then on Synapse.
    for urls in [vec![conduit_url.clone(), synapse_url.clone()], vec![synapse_url, conduit_url]] {
        crate::clients::run_client_script_against("e2ee_federation.mjs", urls).await;
    }
}

/// Syncs as `session` (incrementally) until `check` holds for the sync answer.
async fn wait_for_sync(session: &Session, peer: &SynapsePeer, what: &str, mut check: impl FnMut(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<String> = None;
    while Instant::now() < deadline {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=500&since={token}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let sync = session.client.get(&path).await;
        since = sync.body["next_batch"].as_str().map(str::to_owned).or(since);
        if check(&sync.body) {
            return;
        }
    }
    panic!("{} never saw {what}\n--- Synapse log ---\n{}", session.user_id, log_of(peer));
}

fn has_presence(sync: &Value, user: &str, status_msg: &str) -> bool {
    sync["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|event| event["sender"] == user && event["content"]["status_msg"] == status_msg)
}

fn has_receipt(sync: &Value, room: &str, event_id: &str, user: &str) -> bool {
    let ephemeral = &sync["rooms"]["join"][room]["ephemeral"]["events"];
    ephemeral
        .as_array()
        .into_iter()
        .flatten()
        .any(|event| event["type"] == "m.receipt" && event["content"][event_id]["m.read"][user].is_object())
}

#[tokio::test]
async fn read_receipts_and_presence_cross_between_conduit_and_synapse() {
    let (_ca, conduit, synapse, _certs) = conduit_and_synapse_with("presence:\n  enabled: true\n").await;
    let alice = conduit.client().register("alice").await;
    let sam = crate::harness::Client::new(synapse.client_addr()).register("sam").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), conduit.services().config.server_name);
    let joined = sam.client.post(&path, json!({})).await;
    assert_eq!(joined.status, 200, "{}\n{}", joined.body, log_of(&synapse));

    // Read receipts both ways.
    let from_alice = alice.send_text(&room, "t1", "ordre du jour").await;
    wait_in_room(&sam, &room, &synapse, |s| timeline_has(s, "ordre du jour")).await;
    let receipt = |event: &str| format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(event));
    sam.client.post(&receipt(&from_alice), json!({})).await.assert_ok();
    wait_for_sync(&alice, &synapse, "sam's receipt", |s| has_receipt(s, &room, &from_alice, &sam.user_id)).await;
    let from_sam = sam.send_text(&room, "t2", "lu").await;
    wait_in_room(&alice, &room, &synapse, |s| timeline_has(s, "lu")).await;
    alice.client.post(&receipt(&from_sam), json!({})).await.assert_ok();
    wait_for_sync(&sam, &synapse, "alice's receipt", |s| has_receipt(s, &room, &from_sam, &alice.user_id)).await;

    // Presence both ways.
    let status = |user: &str| format!("/_matrix/client/v3/presence/{}/status", enc(user));
    let busy = json!({ "presence": "unavailable", "status_msg": "en réunion" });
    alice.client.put(&status(&alice.user_id), busy).await.assert_ok();
    wait_for_sync(&sam, &synapse, "alice's presence", |s| has_presence(s, &alice.user_id, "en réunion")).await;
    let free = json!({ "presence": "online", "status_msg": "disponible" });
    sam.client.put(&status(&sam.user_id), free).await.assert_ok();
    wait_for_sync(&alice, &synapse, "sam's presence", |s| has_presence(s, &sam.user_id, "disponible")).await;
}
