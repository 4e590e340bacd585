//! Account management: password change and deactivation, both behind
//! user-interactive authentication.

use serde_json::json;

use crate::harness::{enc, Session, TestServer, PASSWORD};

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

#[tokio::test]
async fn an_erased_account_s_messages_are_redacted_for_those_who_join_later() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, eve], room) = client.public_room_with(["alice", "bob", "eve"]).await;
    let erased_message = bob.send_text(&room, "b", "bob's own words").await;
    let kept_message = eve.send_text(&room, "e", "eve's words").await;
    let path = "/_matrix/client/v3/account/deactivate";
    let session = uia_session(&bob, path, json!({})).await;
    bob.client.post(path, json!({ "auth": bob.password_auth(&session), "erase": true })).await.assert_ok();
    let session = uia_session(&eve, path, json!({})).await;
    eve.client.post(path, json!({ "auth": eve.password_auth(&session) })).await.assert_ok();

    let carol = client.register("carol").await;
    carol.join(&room).await.assert_ok();
    let event_path = |id: &str| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
    // Carol joined after the erasure: bob's message is served redacted, by every route.
    let seen_by_carol = carol.client.get(&event_path(&erased_message)).await.assert_ok().clone();
    assert_eq!(seen_by_carol["content"], json!({}), "{seen_by_carol}");
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room));
    let page = carol.client.get(&messages).await.assert_ok().clone();
    let bodies = crate::harness::message_bodies(&page["chunk"]);
    assert!(!bodies.contains(&"bob's own words".to_owned()), "{bodies:?}");
    assert!(bodies.contains(&"eve's words".to_owned()), "eve deactivated without erasing: {bodies:?}");
    let synced = crate::sync::sync(&carol, "").await;
    let timeline = crate::harness::message_bodies(&synced["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(!timeline.contains(&"bob's own words".to_owned()), "{timeline:?}");
    // Alice was there when bob spoke: she still reads him.
    let seen_by_alice = alice.client.get(&event_path(&erased_message)).await.assert_ok().clone();
    assert_eq!(seen_by_alice["content"]["body"], "bob's own words");
    let eves = carol.client.get(&event_path(&kept_message)).await.assert_ok().clone();
    assert_eq!(eves["content"]["body"], "eve's words");

    // The erasure is stored: it holds after a restart.
    let server = server.restart().await;
    let carol = Session { client: server.client().with_token(&carol.token), ..carol };
    let again = carol.client.get(&event_path(&erased_message)).await.assert_ok().clone();
    assert_eq!(again["content"], json!({}));
}
