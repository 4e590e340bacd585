//! The server's published signing key, checked with an independent verifier.

use ruma::{
    serde::Base64,
    signatures::{verify_json, PublicKeyMap, PublicKeySet},
    CanonicalJsonObject,
};

use crate::harness::TestServer;

#[tokio::test]
async fn server_key_is_signed_valid_and_stable_across_restarts() {
    let server = TestServer::start().await;
    let reply = server.client().get("/_matrix/key/v2/server").await;
    let document = reply.assert_ok().clone();
    assert_eq!(document["server_name"], "test.local");
    let now = conduit::util::now_ms();
    let valid_until = document["valid_until_ts"].as_u64().unwrap();
    assert!(valid_until > now && valid_until <= now + 7 * 24 * 3600 * 1000);

    let keys = document["verify_keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1);
    let (key_id, key) = keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));
    let mut set = PublicKeySet::new();
    set.insert(key_id.clone(), Base64::parse(key["key"].as_str().unwrap()).unwrap());
    let mut map = PublicKeyMap::new();
    map.insert("test.local".to_owned(), set);
    let object: CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
    verify_json(&map, &object).expect("the document verifies with its own key");

    let server = server.restart().await;
    let again = server.client().get("/_matrix/key/v2/server").await;
    assert_eq!(again.assert_ok()["verify_keys"], document["verify_keys"], "the key persists");
}
