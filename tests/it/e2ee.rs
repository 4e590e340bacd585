//! End-to-end encryption support: device keys, one-time and fallback keys,
//! to-device messages, device-list changes in sync, cross-signing.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Map, Value};

use crate::{
    harness::{enc, Session, TestServer, PASSWORD},
    sync::sync,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

pub fn new_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn public(key: &Ed25519KeyPair) -> String {
    b64(key.public_key().as_ref())
}

/// Signs `object` (without `signatures`/`unsigned`) as the spec's "Signing JSON" says.
fn sign(object: &mut Value, signer: &str, key_id: &str, key: &Ed25519KeyPair) {
    let mut bare = object.as_object().unwrap().clone();
    bare.remove("signatures");
    bare.remove("unsigned");
    let canonical = ruma::canonical_json::to_canonical_value(Value::Object(bare)).unwrap().to_string();
    let signature = b64(key.sign(canonical.as_bytes()).as_ref());
    let signatures = object.as_object_mut().unwrap().entry("signatures").or_insert_with(|| json!({}));
    let by_signer = signatures.as_object_mut().unwrap().entry(signer.to_owned()).or_insert_with(|| json!({}));
    by_signer[key_id] = json!(signature);
}

pub fn device_keys(session: &Session, key: &Ed25519KeyPair) -> Value {
    let device = &session.device_id;
    let mut keys = json!({
        "user_id": session.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "curve-public", format!("ed25519:{device}"): public(key) },
    });
    sign(&mut keys, &session.user_id, &format!("ed25519:{device}"), key);
    keys
}

#[tokio::test]
async fn device_keys_are_checked_stored_and_queried() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let key = new_key();
    let upload = "/_matrix/client/v3/keys/upload";

    // Bad input is refused and stores nothing.
    let mut unsigned = device_keys(&alice, &key);
    unsigned.as_object_mut().unwrap().remove("signatures");
    alice.client.post(upload, json!({ "device_keys": unsigned })).await.assert_error(400, "M_BAD_JSON");
    let bobs_keys = device_keys(&bob, &key);
    alice.client.post(upload, json!({ "device_keys": bobs_keys })).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.post(upload, json!({ "device_keys": "nope" })).await.assert_error(400, "M_BAD_JSON");
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query.clone()).await;
    assert_eq!(reply.assert_ok()["device_keys"][&alice.user_id], json!({}));

    // A self-signature that does not verify is the clients' to judge (the
    // spec gives the server no error for it; Synapse and test tools agree).
    let mut tool_made = device_keys(&alice, &key);
    tool_made["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)] = json!("self_signature");
    alice.client.post(upload, json!({ "device_keys": tool_made })).await.assert_ok();
    let reply = alice.client.post(upload, json!({ "device_keys": device_keys(&alice, &key) })).await;
    assert_eq!(reply.assert_ok()["one_time_key_counts"]["signed_curve25519"], 0);
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    let body = reply.assert_ok();
    let device = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"][format!("ed25519:{}", alice.device_id)], public(&key));
    assert!(device["signatures"][&alice.user_id].is_object());
    assert!(device["unsigned"].get("device_display_name").is_some());

    let remote = json!({ "device_keys": { "@someone:elsewhere.example": [] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", remote).await;
    assert!(reply.assert_ok()["failures"].get("elsewhere.example").is_some());
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_even_concurrently_then_the_fallback_key() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let mut one_time = Map::new();
    for i in 0..5 {
        one_time.insert(format!("signed_curve25519:AAAA{i}"), json!({ "key": format!("otk{i}") }));
    }
    let fallback = json!({ "signed_curve25519:FB1": { "key": "fallback", "fallback": true } });
    let upload = json!({ "one_time_keys": one_time, "fallback_keys": fallback });
    let reply = alice.client.post("/_matrix/client/v3/keys/upload", upload).await;
    assert_eq!(reply.assert_ok()["one_time_key_counts"]["signed_curve25519"], 5);
    // A different key under an existing id is refused.
    let clash = json!({ "one_time_keys": { "signed_curve25519:AAAA0": { "key": "other" } } });
    alice.client.post("/_matrix/client/v3/keys/upload", clash).await.assert_error(400, "M_INVALID_PARAM");

    let claim = json!({ "one_time_keys": { alice.user_id.clone(): { alice.device_id.clone(): "signed_curve25519" } } });
    let mut claims = Vec::new();
    for _ in 0..8 {
        let bob = bob.clone();
        let claim = claim.clone();
        claims.push(tokio::spawn(async move {
            bob.client.post("/_matrix/client/v3/keys/claim", claim).await.assert_ok().clone()
        }));
    }
    let mut handed_out = Vec::new();
    for claim in claims {
        let body = claim.await.unwrap();
        let keys = body["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap().clone();
        handed_out.extend(keys.into_iter().map(|(id, key)| (id, key["key"].as_str().unwrap().to_owned())));
    }
    let one_time_ids: Vec<&String> =
        handed_out.iter().filter(|(id, _)| id != "signed_curve25519:FB1").map(|(id, _)| id).collect();
    let distinct: std::collections::BTreeSet<_> = one_time_ids.iter().collect();
    assert_eq!(one_time_ids.len(), 5, "every one-time key handed out: {handed_out:?}");
    assert_eq!(distinct.len(), 5, "never one key twice: {handed_out:?}");
    assert_eq!(handed_out.iter().filter(|(id, _)| id == "signed_curve25519:FB1").count(), 3, "then the fallback key");

    let body = sync(&alice, "").await;
    assert_eq!(body["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(body["device_unused_fallback_key_types"], json!([]), "the fallback key was used");
}

#[tokio::test]
async fn to_device_messages_are_delivered_once_and_survive_a_restart() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let path = |txn: &str| format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}");
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "secret": 1 } } } });
    alice.client.put(&path("t1"), body.clone()).await.assert_ok();
    alice.client.put(&path("t1"), body).await.assert_ok(); // a retry delivers nothing more
    let everyone = json!({ "messages": { bob.user_id.clone(): { "*": { "secret": 2 } } } });
    alice.client.put(&path("t2"), everyone).await.assert_ok();

    let server = server.restart().await;
    let client = server.client();
    let bob = Session { client: client.with_token(&bob.token), ..bob };
    let first = sync(&bob, &format!("since={token}&timeout=0")).await;
    let messages = first["to_device"]["events"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["sender"], alice.user_id.as_str());
    assert_eq!(messages[0]["type"], "m.room_key_request");
    assert_eq!(messages[0]["content"]["secret"], 1);
    // The same token again (a retried sync) gets them again; the next token acknowledges them.
    let again = sync(&bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2);
    let next = first["next_batch"].as_str().unwrap();
    let after = sync(&bob, &format!("since={next}&timeout=0")).await;
    assert_eq!(after["to_device"]["events"], json!([]));
    let retry = sync(&bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(retry["to_device"]["events"], json!([]), "acknowledged messages are deleted");
}

#[tokio::test]
async fn a_to_device_transaction_is_forgotten_with_its_device() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let path = "/_matrix/client/v3/sendToDevice/m.ping/t1";
    let body = |n: u64| json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": n } } } });
    alice.client.put(path, body(1)).await.assert_ok();
    alice.client.post("/_matrix/client/v3/logout", json!({})).await.assert_ok();
    // A new device under the same id: its transactions are its own.
    let login = json!({
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": alice.device_id.clone()
    });
    let again = Session::from_reply(&client, client.post("/_matrix/client/v3/login", login).await.assert_ok());
    assert_eq!(again.device_id, alice.device_id);
    again.client.put(path, body(2)).await.assert_ok();
    again.client.put(path, body(3)).await.assert_ok(); // a retry of the new device's transaction
    let events = sync(&bob, &format!("since={token}&timeout=0")).await["to_device"]["events"].clone();
    let numbers: Vec<&Value> = events.as_array().unwrap().iter().map(|event| &event["content"]["n"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_device_retry_sent_while_the_first_request_is_written_is_delivered_once() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } } });
    for txn in 0..20 {
        let path = format!("/_matrix/client/v3/sendToDevice/m.ping/race{txn}");
        let sends = (0..8).map(|_| alice.client.put(&path, body.clone()));
        for reply in futures_util::future::join_all(sends).await {
            reply.assert_ok();
        }
    }
    let events = sync(&bob, &format!("since={token}&timeout=0")).await["to_device"]["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), 20, "one message per transaction: {events}");
}

#[tokio::test]
async fn a_waiting_sync_wakes_on_a_to_device_message() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={token}&timeout=20000")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "ping": true } } } });
    alice.client.put("/_matrix/client/v3/sendToDevice/m.ping/1", body).await.assert_ok();
    let woke = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.expect("woke").unwrap();
    assert_eq!(woke["to_device"]["events"][0]["content"]["ping"], true);
}

#[tokio::test]
async fn device_list_changes_reach_exactly_the_users_who_share_a_room() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let carol = client.register("carol").await;
    let bob_token = sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let carol_token = sync(&carol, "").await["next_batch"].as_str().unwrap().to_owned();

    let key = new_key();
    alice
        .client
        .post("/_matrix/client/v3/keys/upload", json!({ "device_keys": device_keys(&alice, &key) }))
        .await
        .assert_ok();
    let bobs = sync(&bob, &format!("since={bob_token}&timeout=0")).await;
    assert_eq!(bobs["device_lists"]["changed"], json!([alice.user_id]));
    let carols = sync(&carol, &format!("since={carol_token}&timeout=0")).await;
    assert_eq!(carols["device_lists"]["changed"], json!([]), "carol shares no room with alice");
    let changes =
        format!("/_matrix/client/v3/keys/changes?from={bob_token}&to={}", bobs["next_batch"].as_str().unwrap());
    assert_eq!(bob.client.get(&changes).await.assert_ok()["changed"], json!([alice.user_id]));

    // Deleting a device is a change too; bob leaving shows alice under `left` for... bob's view of alice.
    let bob_token = bobs["next_batch"].as_str().unwrap().to_owned();
    let second = client.login("alice", crate::harness::PASSWORD).await.assert_ok().clone();
    let device = second["device_id"].as_str().unwrap().to_owned();
    let delete = alice.client.delete(&format!("/_matrix/client/v3/devices/{}", enc(&device)), json!({})).await;
    let session = delete.body["session"].as_str().unwrap().to_owned();
    let auth = json!({ "auth": alice.password_auth(&session) });
    alice.client.delete(&format!("/_matrix/client/v3/devices/{}", enc(&device)), auth).await.assert_ok();
    let bobs = sync(&bob, &format!("since={bob_token}&timeout=0")).await;
    assert!(bobs["device_lists"]["changed"].as_array().unwrap().contains(&json!(alice.user_id)));
    let query = json!({ "device_keys": { alice.user_id.clone(): [device] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    assert_eq!(reply.assert_ok()["device_keys"][&alice.user_id], json!({}), "a deleted device has no keys");

    let bob_token = bobs["next_batch"].as_str().unwrap().to_owned();
    alice.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), json!({})).await.assert_ok();
    let bobs = sync(&bob, &format!("since={bob_token}&timeout=0")).await;
    assert_eq!(bobs["device_lists"]["left"], json!([alice.user_id]));
    let changes =
        format!("/_matrix/client/v3/keys/changes?from={bob_token}&to={}", bobs["next_batch"].as_str().unwrap());
    assert_eq!(bob.client.get(&changes).await.assert_ok()["left"], json!([alice.user_id]));
    bob.client.get("/_matrix/client/v3/keys/changes?from=s1").await.assert_error(400, "M_MISSING_PARAM");
}

fn cross_signing_key(session: &Session, usage: &str, key: &Ed25519KeyPair) -> Value {
    json!({ "user_id": session.user_id, "usage": [usage], "keys": { format!("ed25519:{}", public(key)): public(key) } })
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_are_verified() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let device_key = new_key();
    alice
        .client
        .post("/_matrix/client/v3/keys/upload", json!({ "device_keys": device_keys(&alice, &device_key) }))
        .await
        .assert_ok();

    let (master, self_signing, user_signing) = (new_key(), new_key(), new_key());
    let master_id = format!("ed25519:{}", public(&master));
    let master_json = cross_signing_key(&alice, "master", &master);
    let mut ssk = cross_signing_key(&alice, "self_signing", &self_signing);
    let mut usk = cross_signing_key(&alice, "user_signing", &user_signing);
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    // Not signed by the master key: refused with the spec's code; no master key at all: M_MISSING_PARAM.
    alice.client.post(upload, json!({ "self_signing_key": ssk })).await.assert_error(400, "M_MISSING_PARAM");
    let unsigned = json!({ "master_key": master_json, "self_signing_key": ssk });
    alice.client.post(upload, unsigned).await.assert_error(400, "M_INVALID_SIGNATURE");
    // A cross-signing key named like one of alice's devices would pass for it: 403.
    let mut device_named = master_json.clone();
    device_named["keys"] = json!({ format!("ed25519:{}", alice.device_id): alice.device_id });
    alice.client.post(upload, json!({ "master_key": device_named })).await.assert_error(403, "M_FORBIDDEN");
    sign(&mut ssk, &alice.user_id, &master_id, &master);
    sign(&mut usk, &alice.user_id, &master_id, &master);
    let keys = json!({ "master_key": master_json, "self_signing_key": ssk, "user_signing_key": usk });
    alice.client.post(upload, keys).await.assert_ok();

    // Replacing the master key needs the password.
    let other_master = new_key();
    let replace = json!({ "master_key": cross_signing_key(&alice, "master", &other_master) });
    let challenge = alice.client.post(upload, replace).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["flows"][0]["stages"], json!(["m.login.password"]));

    // Alice signs her device with her self-signing key.
    let ssk_id = format!("ed25519:{}", public(&self_signing));
    let mut device = device_keys(&alice, &device_key);
    device.as_object_mut().unwrap().remove("signatures");
    sign(&mut device, &alice.user_id, &ssk_id, &self_signing);
    let mut forged = device.clone();
    sign(&mut forged, &alice.user_id, &ssk_id, &new_key());
    let signatures = "/_matrix/client/v3/keys/signatures/upload";
    let reply =
        alice.client.post(signatures, json!({ alice.user_id.clone(): { alice.device_id.clone(): forged } })).await;
    assert_eq!(reply.assert_ok()["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE");
    let reply =
        alice.client.post(signatures, json!({ alice.user_id.clone(): { alice.device_id.clone(): device } })).await;
    assert_eq!(reply.assert_ok()["failures"], json!({}));

    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let body = bob.client.post("/_matrix/client/v3/keys/query", query).await.assert_ok().clone();
    let device = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert!(device["signatures"][&alice.user_id][&ssk_id].is_string(), "{device}");
    assert_eq!(body["master_keys"][&alice.user_id]["keys"][&master_id], public(&master));
    assert!(body["self_signing_keys"][&alice.user_id].is_object());
    assert!(body["user_signing_keys"].get(&alice.user_id).is_none(), "only its owner sees a user-signing key");

    // Bob verifies Alice: his user-signing key signs her master key. Only Bob
    // sees that signature; Carol does not learn whom Bob verified.
    let (bob_master, bob_usk) = (new_key(), new_key());
    let bob_master_id = format!("ed25519:{}", public(&bob_master));
    let mut bob_usk_json = cross_signing_key(&bob, "user_signing", &bob_usk);
    sign(&mut bob_usk_json, &bob.user_id, &bob_master_id, &bob_master);
    let bob_keys =
        json!({ "master_key": cross_signing_key(&bob, "master", &bob_master), "user_signing_key": bob_usk_json });
    bob.client.post(upload, bob_keys).await.assert_ok();
    let mut verified = master_json.clone();
    verified.as_object_mut().unwrap().remove("signatures");
    let bob_usk_id = format!("ed25519:{}", public(&bob_usk));
    sign(&mut verified, &bob.user_id, &bob_usk_id, &bob_usk);
    let reply = bob.client.post(signatures, json!({ alice.user_id.clone(): { public(&master): verified } })).await;
    assert_eq!(reply.assert_ok()["failures"], json!({}));
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let seen_by_bob = bob.client.post("/_matrix/client/v3/keys/query", query.clone()).await.assert_ok().clone();
    assert!(seen_by_bob["master_keys"][&alice.user_id]["signatures"][&bob.user_id][&bob_usk_id].is_string());
    let carol = client.register("carol").await;
    let seen_by_carol = carol.client.post("/_matrix/client/v3/keys/query", query).await.assert_ok().clone();
    let carol_view = &seen_by_carol["master_keys"][&alice.user_id];
    assert_eq!(carol_view["keys"][&master_id], public(&master));
    assert!(carol_view["signatures"].get(&bob.user_id).is_none(), "{carol_view}");
}

fn backup_key(verified: bool, first_message_index: u64, marker: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": 0,
        "is_verified": verified,
        "session_data": { "ciphertext": marker },
    })
}

#[tokio::test]
async fn key_backups_keep_the_better_key_and_only_the_current_version_takes_keys() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let base = "/_matrix/client/v3/room_keys";
    alice.client.get(&format!("{base}/version")).await.assert_error(404, "M_NOT_FOUND");
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let create = json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk1" } });
    let first = alice.client.post(&format!("{base}/version"), create).await.assert_ok()["version"].clone();
    let first = first.as_str().unwrap().to_owned();

    let keys = |version: &str, suffix: &str| format!("{base}/keys{suffix}?version={version}");
    let room = "!room:test.local";
    let session_path = format!("/{}/sess1", enc(room));
    let reply = alice.client.put(&keys(&first, &session_path), backup_key(false, 5, "late")).await;
    assert_eq!(reply.assert_ok()["count"], 1);
    let etag = reply.body["etag"].clone();
    // A worse key (higher index) is ignored; a better one (lower index) replaces it.
    alice.client.put(&keys(&first, &session_path), backup_key(false, 9, "worse")).await.assert_ok();
    let stored = alice.client.get(&keys(&first, &session_path)).await;
    assert_eq!(stored.assert_ok()["session_data"]["ciphertext"], "late");
    let all = json!({ "rooms": { room: { "sessions": { "sess1": backup_key(false, 0, "early"), "sess2": backup_key(true, 3, "other") } } } });
    let reply = alice.client.put(&keys(&first, ""), all).await;
    assert_eq!(reply.assert_ok()["count"], 2);
    assert_ne!(reply.body["etag"], etag);
    let body = alice.client.get(&keys(&first, "")).await.assert_ok().clone();
    assert_eq!(body["rooms"][room]["sessions"]["sess1"]["session_data"]["ciphertext"], "early");
    let info = alice.client.get(&format!("{base}/version")).await.assert_ok().clone();
    assert_eq!(info["count"], 2);
    assert_eq!(info["version"], first.as_str());
    assert_eq!(info["auth_data"]["public_key"], "pk1");

    // Malformed key data is refused; another user sees nothing of alice's backup.
    alice.client.put(&keys(&first, &session_path), json!({ "session_data": {} })).await.assert_error(400, "M_BAD_JSON");
    bob.client.get(&keys(&first, "")).await.assert_error(404, "M_NOT_FOUND");

    // Updating: only auth_data may change, with the same algorithm.
    let update = format!("{base}/version/{first}");
    let wrong = json!({ "algorithm": "other", "auth_data": {} });
    alice.client.put(&update, wrong).await.assert_error(400, "M_INVALID_PARAM");
    alice
        .client
        .put(&update, json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk2" } }))
        .await
        .assert_ok();

    // A new version becomes current: keys for the old one are refused, naming the current one.
    let create = json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk3" } });
    let second = alice.client.post(&format!("{base}/version"), create).await.assert_ok()["version"].clone();
    let refused = alice.client.put(&keys(&first, &session_path), backup_key(true, 0, "x")).await;
    refused.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(refused.body["current_version"], second);

    // Deleting keys and versions.
    let reply = alice.client.delete(&keys(&first, &format!("/{}", enc(room))), json!({})).await;
    assert_eq!(reply.assert_ok()["count"], 0);
    alice.client.delete(&update, json!({})).await.assert_ok();
    alice.client.get(&update).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_dehydrated_device_receives_messages_while_its_owner_is_offline() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";
    bob.client.get(base).await.assert_error(404, "M_NOT_FOUND");

    // The dehydrated device's keys are signed by its own key, under its own id.
    let key = new_key();
    let dehydrated = Session { device_id: "DEHYDRATED1".into(), ..bob.clone() };
    let body = json!({
        "device_id": "DEHYDRATED1",
        "device_data": { "algorithm": "m.dehydration.v1.olm", "ciphertext": "opaque" },
        "initial_device_display_name": "Dehydrated",
        "device_keys": device_keys(&dehydrated, &key),
        "one_time_keys": { "signed_curve25519:AAAB": { "key": "k" } },
    });
    let reply = bob.client.put(base, body.clone()).await;
    assert_eq!(reply.assert_ok()["device_id"], "DEHYDRATED1");
    let stored = bob.client.get(base).await.assert_ok().clone();
    assert_eq!(stored["device_data"]["ciphertext"], "opaque");
    // Keys signed for another device id are refused.
    let mut wrong = body.clone();
    wrong["device_id"] = json!("OTHER");
    bob.client.put(base, wrong).await.assert_error(400, "M_INVALID_PARAM");
    assert_eq!(
        bob.client.get(base).await.assert_ok()["device_id"],
        "DEHYDRATED1",
        "the failed replacement left nothing"
    );

    // Alice sees the device and claims its key; her to-device message waits for it.
    let query = json!({ "device_keys": { bob.user_id.clone(): ["DEHYDRATED1"] } });
    let found = alice.client.post("/_matrix/client/v3/keys/query", query).await.assert_ok().clone();
    assert!(found["device_keys"][&bob.user_id]["DEHYDRATED1"].is_object(), "{found}");
    let message = json!({ "messages": { bob.user_id.clone(): { "DEHYDRATED1": { "room_key": "k1" } } } });
    alice.client.put("/_matrix/client/v3/sendToDevice/m.room.encrypted/d1", message).await.assert_ok();

    let events = format!("{base}/DEHYDRATED1/events");
    let page = bob.client.post(&events, json!({})).await.assert_ok().clone();
    assert_eq!(page["events"][0]["content"]["room_key"], "k1");
    let next = page["next_batch"].as_str().unwrap();
    let after = bob.client.post(&events, json!({ "next_batch": next })).await.assert_ok().clone();
    assert_eq!(after["events"], json!([]), "acknowledged messages are gone");
    alice.client.post(&format!("{base}/DEHYDRATED1/events"), json!({})).await.assert_error(403, "M_FORBIDDEN");

    let deleted = bob.client.delete(base, json!({})).await;
    assert_eq!(deleted.assert_ok()["device_id"], "DEHYDRATED1");
    bob.client.get(base).await.assert_error(404, "M_NOT_FOUND");
    let devices = bob.client.get("/_matrix/client/v3/devices").await.assert_ok().clone();
    assert!(!devices.to_string().contains("DEHYDRATED1"), "{devices}");
}

#[tokio::test]
async fn joining_a_room_lists_its_members_as_changed_devices() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let carol = client.register("carol").await;
    let token = sync(&carol, "").await["next_batch"].as_str().unwrap().to_owned();
    carol.join(&room).await.assert_ok();
    let body = sync(&carol, &format!("since={token}&timeout=0")).await;
    let changed = body["device_lists"]["changed"].as_array().unwrap().clone();
    assert!(changed.contains(&json!(alice.user_id)) && changed.contains(&json!(bob.user_id)), "{changed:?}");
    assert!(!changed.contains(&json!(carol.user_id)), "{changed:?}");
}

#[tokio::test]
async fn malformed_e2ee_requests_get_the_spec_errors_and_store_nothing() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let not_object = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): "text" } } });
    alice.client.put("/_matrix/client/v3/sendToDevice/m.x/1", not_object).await.assert_error(400, "M_BAD_JSON");
    alice.client.put("/_matrix/client/v3/sendToDevice/m.x/2", json!({})).await.assert_error(400, "M_BAD_JSON");
    let body = sync(&bob, "").await;
    assert_eq!(body["to_device"]["events"], json!([]), "nothing was queued");

    let bad_ids = json!({ "one_time_keys": { "no-colon": "k" } });
    alice.client.post("/_matrix/client/v3/keys/upload", bad_ids).await.assert_error(400, "M_BAD_JSON");
    let bad_key = json!({ "one_time_keys": { "signed_curve25519:A": 42 } });
    alice.client.post("/_matrix/client/v3/keys/upload", bad_key).await.assert_error(400, "M_BAD_JSON");
    let counts = alice.client.post("/_matrix/client/v3/keys/upload", json!({})).await.assert_ok().clone();
    assert_eq!(counts["one_time_key_counts"], json!({ "signed_curve25519": 0 }));

    // Claiming from a device without keys returns nothing for it; bad bodies are refused.
    let claim = json!({ "one_time_keys": { alice.user_id.clone(): { "NODEVICE": "signed_curve25519" } } });
    let reply = bob.client.post("/_matrix/client/v3/keys/claim", claim).await;
    assert_eq!(reply.assert_ok()["one_time_keys"], json!({}));
    bob.client
        .post("/_matrix/client/v3/keys/claim", json!({ "one_time_keys": 1 }))
        .await
        .assert_error(400, "M_BAD_JSON");
    bob.client
        .post("/_matrix/client/v3/keys/query", json!({ "device_keys": [] }))
        .await
        .assert_error(400, "M_BAD_JSON");
    let unsigned = json!({ alice.user_id.clone(): { "ABC": { "keys": {} } } });
    let reply = bob.client.post("/_matrix/client/v3/keys/signatures/upload", unsigned).await;
    assert!(reply.assert_ok()["failures"][&alice.user_id]["ABC"]["errcode"].is_string());
}

#[tokio::test]
async fn keys_changes_lists_the_members_of_a_room_newly_shared() {
    let server = crate::harness::TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let from = crate::sync::sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.join(&room).await.assert_ok();
    let to = crate::sync::sync(&bob, &format!("since={from}")).await["next_batch"].as_str().unwrap().to_owned();
    let changes = bob.client.get(&format!("/_matrix/client/v3/keys/changes?from={from}&to={to}")).await;
    let changed: Vec<&str> =
        changes.assert_ok()["changed"].as_array().unwrap().iter().filter_map(|u| u.as_str()).collect();
    assert!(changed.contains(&alice.user_id.as_str()), "{changed:?}");
}

#[tokio::test]
async fn a_user_signing_key_and_its_signatures_change_only_their_owners_device_lists() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], _room) = client.public_room_with(["alice", "bob", "carol"]).await;
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    let (alice_master, alice_usk, bob_master) = (new_key(), new_key(), new_key());
    let alice_master_id = format!("ed25519:{}", public(&alice_master));
    let alice_master_json = cross_signing_key(&alice, "master", &alice_master);
    alice.client.post(upload, json!({ "master_key": alice_master_json })).await.assert_ok();
    let bob_master_json = cross_signing_key(&bob, "master", &bob_master);
    bob.client.post(upload, json!({ "master_key": bob_master_json })).await.assert_ok();
    let token = |body: &Value| body["next_batch"].as_str().unwrap().to_owned();
    let tokens = [token(&sync(&alice, "").await), token(&sync(&bob, "").await), token(&sync(&carol, "").await)];
    let changed_since = |session: &Session, since: &str| {
        let session = session.clone();
        let since = since.to_owned();
        async move {
            let body = sync(&session, &format!("since={since}&timeout=0")).await;
            let mut changed: Vec<String> = body["device_lists"]["changed"]
                .as_array()
                .map(|users| users.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            changed.sort();
            changed
        }
    };

    // Alice's user-signing key alone: her own devices hear of it, nobody else's.
    let mut usk = cross_signing_key(&alice, "user_signing", &alice_usk);
    sign(&mut usk, &alice.user_id, &alice_master_id, &alice_master);
    let challenge = alice.client.post(upload, json!({ "user_signing_key": usk })).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let body = json!({ "user_signing_key": usk, "auth": alice.password_auth(&session) });
    alice.client.post(upload, body).await.assert_ok();
    // Alice verifies Bob: her user-signing key signs his master key.
    let mut verified = bob_master_json.clone();
    sign(&mut verified, &alice.user_id, &format!("ed25519:{}", public(&alice_usk)), &alice_usk);
    let signatures = json!({ bob.user_id.clone(): { public(&bob_master): verified } });
    let reply = alice.client.post("/_matrix/client/v3/keys/signatures/upload", signatures).await;
    assert_eq!(reply.assert_ok()["failures"], json!({}));

    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(changed_since(&alice, &tokens[0]).await, expected, "alice's own key and whom she verified");
    assert_eq!(changed_since(&bob, &tokens[1]).await, Vec::<String>::new(), "bob does not learn who verified him");
    assert_eq!(changed_since(&carol, &tokens[2]).await, Vec::<String>::new());
    let changes = |since: &str| format!("/_matrix/client/v3/keys/changes?from={since}&to=s999999");
    let carols = carol.client.get(&changes(&tokens[2])).await.assert_ok().clone();
    assert_eq!(carols["changed"], json!([]), "{carols}");
    let alices = alice.client.get(&changes(&tokens[0])).await.assert_ok().clone();
    assert!(alices["changed"].as_array().unwrap().contains(&json!(bob.user_id)), "{alices}");

    // A new self-signing key is public: room mates hear of it.
    let bob_tokens = token(&sync(&bob, "").await);
    let mut ssk = cross_signing_key(&alice, "self_signing", &new_key());
    sign(&mut ssk, &alice.user_id, &alice_master_id, &alice_master);
    let challenge = alice.client.post(upload, json!({ "self_signing_key": ssk })).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let body = json!({ "self_signing_key": ssk, "auth": alice.password_auth(&session) });
    alice.client.post(upload, body).await.assert_ok();
    assert_eq!(changed_since(&bob, &bob_tokens).await, vec![alice.user_id.clone()]);
}

/// Uploads a master and a user-signing key for `session`; the user-signing key.
async fn cross_signing_identity(session: &Session) -> Ed25519KeyPair {
    let (master, user_signing) = (new_key(), new_key());
    let master_id = format!("ed25519:{}", public(&master));
    let mut usk = cross_signing_key(session, "user_signing", &user_signing);
    sign(&mut usk, &session.user_id, &master_id, &master);
    let keys = json!({ "master_key": cross_signing_key(session, "master", &master), "user_signing_key": usk });
    session.client.post("/_matrix/client/v3/keys/device_signing/upload", keys).await.assert_ok();
    user_signing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_of_one_user_are_all_kept() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let master = new_key();
    let master_json = cross_signing_key(&alice, "master", &master);
    let upload = json!({ "master_key": master_json });
    alice.client.post("/_matrix/client/v3/keys/device_signing/upload", upload).await.assert_ok();
    let mut verifiers = Vec::new();
    for n in 0..8 {
        let session = client.register(&format!("verifier{n}")).await;
        let usk = cross_signing_identity(&session).await;
        let mut signed = master_json.clone();
        sign(&mut signed, &session.user_id, &format!("ed25519:{}", public(&usk)), &usk);
        verifiers.push((session, usk, signed));
    }
    let uploads = verifiers.iter().map(|(session, _, signed)| {
        let body = json!({ alice.user_id.clone(): { public(&master): signed } });
        session.client.post("/_matrix/client/v3/keys/signatures/upload", body)
    });
    for reply in futures_util::future::join_all(uploads).await {
        assert_eq!(reply.assert_ok()["failures"], json!({}));
    }
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    for (session, usk, _) in &verifiers {
        let seen = session.client.post("/_matrix/client/v3/keys/query", query.clone()).await;
        let signature = &seen.assert_ok()["master_keys"][&alice.user_id]["signatures"][&session.user_id];
        assert!(signature[format!("ed25519:{}", public(usk))].is_string(), "{}'s signature was kept", session.user_id);
    }
}
