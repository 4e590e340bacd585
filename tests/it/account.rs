//! Account management: password change and deactivation, both behind
//! user-interactive authentication.

use serde_json::json;

use crate::harness::{Session, TestServer, PASSWORD};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD_PATH: &str = "/_matrix/client/v3/account/password";

/// Starts a UIA exchange and returns its session id.
async fn uia_session(session: &Session, path: &str, body: serde_json::Value) -> String {
    let reply = session.client.post(path, body).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.body["flows"], json!([{ "stages": ["m.login.password"] }]));
    reply.body["session"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn password_change_needs_the_old_password_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let client = server.client();
    let main = client.register("alice").await;
    let other = Session::from_reply(&client, client.login("alice", PASSWORD).await.assert_ok());

    let session = uia_session(&main, PASSWORD_PATH, json!({ "new_password": "new secret" })).await;
    let mut wrong = main.password_auth(&session);
    wrong["password"] = json!("not it");
    let reply = main.client.post(PASSWORD_PATH, json!({ "new_password": "new secret", "auth": wrong })).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["errcode"], "M_FORBIDDEN");
    assert_eq!(reply.body["session"], session.as_str(), "the session survives a failed stage");

    let auth = main.password_auth(&session);
    main.client.post(PASSWORD_PATH, json!({ "new_password": "new secret", "auth": auth })).await.assert_ok();
    main.client.get(WHOAMI).await.assert_ok();
    other.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    client.login("alice", PASSWORD).await.assert_error(403, "M_FORBIDDEN");
    client.login("alice", "new secret").await.assert_ok();
}

#[tokio::test]
async fn password_change_can_keep_other_devices() {
    let server = TestServer::start().await;
    let client = server.client();
    let main = client.register("bob").await;
    let other = Session::from_reply(&client, client.login("bob", PASSWORD).await.assert_ok());
    let body = json!({ "new_password": PASSWORD, "logout_devices": false });
    let session = uia_session(&main, PASSWORD_PATH, body.clone()).await;
    let mut body = body;
    body["auth"] = main.password_auth(&session);
    main.client.post(PASSWORD_PATH, body).await.assert_ok();
    other.client.get(WHOAMI).await.assert_ok();
}

#[tokio::test]
async fn uia_authenticates_the_caller_and_sessions_are_single_use() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let mallory = client.register("mallory").await;

    // Alice's password does not authenticate Mallory's request: naming
    // another user is a 403 (as Synapse), not a stage to retry.
    let own = uia_session(&mallory, PASSWORD_PATH, json!({ "new_password": "x" })).await;
    let reply =
        mallory.client.post(PASSWORD_PATH, json!({ "new_password": "x", "auth": alice.password_auth(&own) })).await;
    reply.assert_error(403, "M_FORBIDDEN");

    // A completed session cannot authorise a second request, on any endpoint,
    // for anybody.
    let session = uia_session(&alice, PASSWORD_PATH, json!({ "new_password": PASSWORD })).await;
    let auth = alice.password_auth(&session);
    alice
        .client
        .post(PASSWORD_PATH, json!({ "new_password": PASSWORD, "auth": auth, "logout_devices": false }))
        .await
        .assert_ok();
    let again = alice.client.post(PASSWORD_PATH, json!({ "new_password": "other", "auth": auth })).await;
    again.assert_error(403, "M_FORBIDDEN");
    let reply = alice.client.post("/_matrix/client/v3/account/deactivate", json!({ "auth": auth })).await;
    reply.assert_error(403, "M_FORBIDDEN");
    let reply = mallory
        .client
        .post(PASSWORD_PATH, json!({ "new_password": "x", "auth": mallory.password_auth(&session) }))
        .await;
    reply.assert_error(403, "M_FORBIDDEN");
    alice.client.get(WHOAMI).await.assert_ok();
    client.login("alice", PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn deactivation_ends_the_account_for_good() {
    let server = TestServer::start().await;
    let client = server.client();
    let carol = client.register("carol").await;
    let second = Session::from_reply(&client, client.login("carol", PASSWORD).await.assert_ok());
    let path = "/_matrix/client/v3/account/deactivate";
    let session = uia_session(&carol, path, json!({})).await;
    let reply = carol.client.post(path, json!({ "auth": carol.password_auth(&session) })).await;
    assert_eq!(reply.assert_ok()["id_server_unbind_result"], "no-support");

    carol.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    second.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    client.login("carol", PASSWORD).await.assert_error(403, "M_USER_DEACTIVATED");
    client.login("carol", "anything").await.assert_error(403, "M_USER_DEACTIVATED");
    let again = client
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "carol", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    again.assert_error(400, "M_USER_IN_USE");
}

#[tokio::test]
async fn three_pids_are_empty() {
    let server = TestServer::start().await;
    let dave = server.client().register("dave").await;
    let reply = dave.client.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(reply.assert_ok()["threepids"], json!([]));
}
