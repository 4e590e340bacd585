//! End-to-end encryption across servers: another server's users' device
//! keys queried and one-time keys claimed through their server, to-device
//! messages delivered to their devices (once per message).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::two_servers;
use crate::{
    e2ee::{device_keys, new_key},
    harness::Session,
};

#[tokio::test]
async fn keys_and_to_device_messages_cross_servers() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let key = new_key();
    let upload = json!({
        "device_keys": device_keys(&alice, &key),
        "one_time_keys": { "signed_curve25519:AAAA1": { "key": "otk1" }, "signed_curve25519:AAAA2": { "key": "otk2" } },
    });
    alice.client.post("/_matrix/client/v3/keys/upload", upload).await.assert_ok();

    // bob (b.test) sees alice's device through a.test.
    let query = json!({ "device_keys": { "@alice:a.test": [] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    let answer = reply.assert_ok();
    assert_eq!(answer["failures"], json!({}), "{answer}");
    let device = &answer["device_keys"]["@alice:a.test"][&alice.device_id];
    assert_eq!(device["device_id"], alice.device_id.as_str(), "{answer}");

    // And claims one of its one-time keys, once.
    let claim = json!({ "one_time_keys": { "@alice:a.test": { alice.device_id.clone(): "signed_curve25519" } } });
    let first = bob.client.post("/_matrix/client/v3/keys/claim", claim.clone()).await;
    let second = bob.client.post("/_matrix/client/v3/keys/claim", claim).await;
    let key_of = |reply: &Value| reply["one_time_keys"]["@alice:a.test"][&alice.device_id].as_object().cloned();
    let (first, second) = (key_of(first.assert_ok()).unwrap(), key_of(second.assert_ok()).unwrap());
    assert_ne!(first, second, "a one-time key is handed out once");

    // A to-device message from bob reaches alice's device, once even if sent again.
    let message =
        json!({ "messages": { "@alice:a.test": { alice.device_id.clone(): { "secret": "olm-ciphertext" } } } });
    let path = "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn-1";
    bob.client.put(path, message.clone()).await.assert_ok();
    bob.client.put(path, message).await.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    let mut since: Option<String> = None;
    while Instant::now() < deadline && received.is_empty() {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=500&since={token}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let sync = alice.client.get(&path).await;
        since = sync.body["next_batch"].as_str().map(str::to_owned);
        received.extend(sync.body["to_device"]["events"].as_array().cloned().unwrap_or_default());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sync = alice.client.get(&format!("/_matrix/client/v3/sync?timeout=0&since={}", since.unwrap())).await;
    received.extend(sync.body["to_device"]["events"].as_array().cloned().unwrap_or_default());
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["sender"], "@bob:b.test");
    assert_eq!(received[0]["content"]["secret"], "olm-ciphertext");
}

/// Syncs as `bob` from `since` until `device_lists.changed` names alice (40 s at most).
async fn wait_for_alice_changed(bob: &Session, since: &mut String) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let sync = bob.client.get(&format!("/_matrix/client/v3/sync?timeout=500&since={since}")).await;
        if sync.status == 200 {
            *since = sync.body["next_batch"].as_str().unwrap().to_owned();
            let changed = sync.body["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
            if changed.iter().any(|user| user == "@alice:a.test") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "bob never heard of alice's new keys");
    }
}

/// bob asks a.test for alice's devices again and gets her device.
async fn bob_gets_alice_device(alice: &Session, bob: &Session) {
    let query = json!({ "device_keys": { "@alice:a.test": [] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    assert!(reply.assert_ok()["device_keys"]["@alice:a.test"][&alice.device_id].is_object(), "{}", reply.body);
}

/// alice (a.test) and bob (b.test) in a room of alice's; bob's sync token from then.
async fn alice_and_bob_share_a_room(alice: &Session, bob: &Session) -> String {
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?server_name=a.test", crate::harness::enc(&room));
    bob.client.post(&join, json!({})).await.assert_ok();
    let first = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    first.assert_ok()["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_device_list_change_made_while_the_other_server_is_down_reaches_it_after() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let mut since = alice_and_bob_share_a_room(&alice, &bob).await;

    // bob's server has a copy of alice's list (no device with keys yet).
    let query = json!({ "device_keys": { "@alice:a.test": [] } });
    let before = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    assert_eq!(before.assert_ok()["device_keys"]["@alice:a.test"], json!({}), "{}", before.body);

    // b.test is down while alice's device gets keys; it comes back.
    let b_dir = b.stop().await;
    let upload = json!({ "device_keys": device_keys(&alice, &new_key()) });
    alice.client.post("/_matrix/client/v3/keys/upload", upload).await.assert_ok();
    tokio::time::sleep(Duration::from_millis(1500)).await; // a failed attempt or two
    let text = std::fs::read_to_string(b_dir.path().join("conduit.toml")).unwrap();
    let b = crate::harness::TestServer::start_in(b_dir, &text).await;
    let bob = Session { client: b.client().with_token(&bob.token), ..bob };
    wait_for_alice_changed(&bob, &mut since).await;
    bob_gets_alice_device(&alice, &bob).await;
}

/// bob's answer for alice's devices: their ids and the failures.
async fn alice_devices_for_bob(bob: &Session) -> (Vec<String>, Value) {
    let query = json!({ "device_keys": { "@alice:a.test": [] } });
    let reply = bob.client.post("/_matrix/client/v3/keys/query", query).await;
    let answer = reply.assert_ok();
    let devices = answer["device_keys"]["@alice:a.test"].as_object().map(|d| d.keys().cloned().collect());
    (devices.unwrap_or_default(), answer["failures"].clone()) // in order: a JSON object's keys
}

#[tokio::test]
async fn another_servers_device_list_is_cached_and_kept_current_by_its_updates() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let mut since = alice_and_bob_share_a_room(&alice, &bob).await;
    let upload = json!({ "device_keys": device_keys(&alice, &new_key()) });
    alice.client.post("/_matrix/client/v3/keys/upload", upload).await.assert_ok();
    wait_for_alice_changed(&bob, &mut since).await;
    assert_eq!(alice_devices_for_bob(&bob).await.0, vec![alice.device_id.clone()]);

    // An update following the copy (its prev_id already seen) is applied as
    // it comes: a device a.test itself does not have shows for bob.
    let device = |id: &str| json!({ "user_id": "@alice:a.test", "device_id": id, "algorithms": [], "keys": {} });
    let high = 1u64 << 40;
    let update = |device_id: &str, stream_id: u64, prev_id: u64| {
        json!({ "edu_type": "m.device_list_update", "content": { "user_id": "@alice:a.test",
            "device_id": device_id, "stream_id": stream_id, "prev_id": [prev_id], "keys": device(device_id) } })
    };
    let (status, _) = super::send_transaction_as_a(&ca, &a, &b, "dl-1", vec![], vec![update("PUSHED", high, 0)]).await;
    assert_eq!(status, 200);
    wait_for_alice_changed(&bob, &mut since).await;
    let (devices, failures) = alice_devices_for_bob(&bob).await;
    let mut expected = vec!["PUSHED".to_owned(), alice.device_id.clone()];
    expected.sort();
    assert_eq!(devices, expected, "applied to the copy");
    assert_eq!(failures, json!({}));

    // An update after a gap (an update never received) is not applied: the
    // list is fetched whole again, as a.test has it.
    let gap = update("AFTERGAP", high + 2, high + 1);
    super::send_transaction_as_a(&ca, &a, &b, "dl-2", vec![], vec![gap]).await;
    wait_for_alice_changed(&bob, &mut since).await;
    assert_eq!(alice_devices_for_bob(&bob).await.0, vec![alice.device_id.clone()], "fetched again");

    // While a.test is down, bob is answered from the copy.
    let _a_dir = a.stop().await;
    let (devices, failures) = alice_devices_for_bob(&bob).await;
    assert_eq!(devices, vec![alice.device_id.clone()]);
    assert_eq!(failures, json!({}), "the copy answers, a.test is not asked");
}

#[tokio::test]
async fn matrix_js_sdk_clients_on_two_conduit_servers_share_an_encrypted_dm() {
    let (_ca, a, b) = two_servers("", "").await;
    let urls = vec![format!("http://{}", a.addr), format!("http://{}", b.addr)];
    crate::clients::run_client_script_against("e2ee_federation.mjs", urls).await;
}
