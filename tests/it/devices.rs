//! Device management, and that users only reach their own devices.

use serde_json::json;

use crate::harness::{Session, TestServer, PASSWORD};

#[tokio::test]
async fn list_get_rename_and_delete_devices() {
    let server = TestServer::start().await;
    let client = server.client();
    let main = client.register("alice").await;
    let phone = Session::from_reply(
        &client,
        client
            .post("/_matrix/client/v3/login", json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "initial_device_display_name": "Phone" }))
            .await
            .assert_ok(),
    );

    let list = main.client.get("/_matrix/client/v3/devices").await;
    let devices = list.assert_ok()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2);
    let phone_entry = devices.iter().find(|d| d["device_id"] == phone.device_id.as_str()).unwrap();
    assert_eq!(phone_entry["display_name"], "Phone");
    assert!(phone_entry["last_seen_ts"].as_u64().unwrap() > 0);
    assert_eq!(phone_entry["last_seen_ip"], "127.0.0.1");

    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    main.client.put(&path, json!({ "display_name": "Old phone" })).await.assert_ok();
    assert_eq!(main.client.get(&path).await.assert_ok()["display_name"], "Old phone");
    main.client
        .put("/_matrix/client/v3/devices/NOPE", json!({ "display_name": "x" }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    main.client.get("/_matrix/client/v3/devices/NOPE").await.assert_error(404, "M_NOT_FOUND");

    let first = main.client.delete(&path, json!({})).await;
    assert_eq!(first.status, 401);
    let session = first.body["session"].as_str().unwrap();
    phone.client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    main.client.delete(&path, json!({ "auth": main.password_auth(session) })).await.assert_ok();
    phone.client.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    main.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn delete_devices_in_bulk() {
    let server = TestServer::start().await;
    let client = server.client();
    let main = client.register("bob").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(Session::from_reply(&client, client.login("bob", PASSWORD).await.assert_ok()));
    }
    let ids: Vec<&str> = others.iter().take(2).map(|s| s.device_id.as_str()).collect();
    let path = "/_matrix/client/v3/delete_devices";
    let first = main.client.post(path, json!({ "devices": ids })).await;
    assert_eq!(first.status, 401);
    let session = first.body["session"].as_str().unwrap();
    let reply = main.client.post(path, json!({ "devices": ids, "auth": main.password_auth(session) })).await;
    reply.assert_ok();
    for (i, other) in others.iter().enumerate() {
        let status = other.client.get("/_matrix/client/v3/account/whoami").await.status;
        assert_eq!(status, if i < 2 { 401 } else { 200 });
    }
    main.client.post(path, json!({})).await.assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn users_cannot_see_or_touch_each_others_devices() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let eve = client.register("eve").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    eve.client.get(&path).await.assert_error(404, "M_NOT_FOUND");
    eve.client.put(&path, json!({ "display_name": "pwned" })).await.assert_error(404, "M_NOT_FOUND");

    // Eve authenticates as herself and asks to delete Alice's device id: only
    // her own devices are considered, so Alice keeps hers.
    let first = eve.client.delete(&path, json!({})).await;
    let session = first.body["session"].as_str().unwrap();
    eve.client.delete(&path, json!({ "auth": eve.password_auth(session) })).await.assert_ok();
    alice.client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    let list = eve.client.get("/_matrix/client/v3/devices").await;
    let ids: Vec<String> = list.assert_ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![eve.device_id.clone()]);
}
