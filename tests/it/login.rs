//! Login, logout, refresh tokens, rate limiting.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Session, TestServer, PASSWORD};

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn password_login_accepts_every_identifier_form() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("alice").await;
    let flows = client.get(LOGIN).await;
    assert_eq!(flows.assert_ok()["flows"], json!([{ "type": "m.login.password" }]));

    for user in ["alice", "@alice:test.local", "ALICE"] {
        let reply = client.login(user, PASSWORD).await;
        assert_eq!(reply.assert_ok()["user_id"], "@alice:test.local", "{user}");
        assert_eq!(reply.body["home_server"], "test.local");
    }
    let legacy = client.post(LOGIN, json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD })).await;
    legacy.assert_ok();
    let r0 = client
        .post("/_matrix/client/r0/login", json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }))
        .await;
    r0.assert_ok();
}

#[tokio::test]
async fn wrong_credentials_are_forbidden() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("bob").await;
    client.login("bob", "wrong").await.assert_error(403, "M_FORBIDDEN");
    client.login("nobody", PASSWORD).await.assert_error(403, "M_FORBIDDEN");
    client.login("@bob:other.server", PASSWORD).await.assert_error(403, "M_FORBIDDEN");
    let reply = client.post(LOGIN, json!({ "type": "m.login.token", "token": "x" })).await;
    reply.assert_error(400, "M_INVALID_PARAM");
    let reply = client
        .post(LOGIN, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" } }))
        .await;
    reply.assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn repeated_failures_are_rate_limited() {
    let server = TestServer::start_with("[login_rate_limit]\nfailed_attempts = 3\nwindow_secs = 60").await;
    let client = server.client();
    client.register("carol").await;
    for _ in 0..3 {
        client.login("carol", "wrong").await.assert_error(403, "M_FORBIDDEN");
    }
    let limited = client.login("carol", PASSWORD).await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    let retry_ms = limited.body["retry_after_ms"].as_u64().unwrap();
    assert!(retry_ms > 0 && retry_ms <= 60_000, "{retry_ms}");
    let header: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&header));
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
    let server = TestServer::start_with("[login_rate_limit]\nfailed_attempts = 5\naccount_attack_threshold = 6").await;
    let attacker = server.client().connecting_from("127.0.0.66");
    let user = server.client().connecting_from("127.0.0.2");
    user.register("carol").await;
    for _ in 0..5 {
        attacker.login("carol", "guess").await.assert_error(403, "M_FORBIDDEN");
    }
    attacker.login("carol", "guess").await.assert_error(429, "M_LIMIT_EXCEEDED");
    // Even the right password from the attacker's address waits…
    attacker.login("carol", PASSWORD).await.assert_error(429, "M_LIMIT_EXCEEDED");
    // …but the real user, elsewhere, logs in.
    user.login("carol", PASSWORD).await.assert_ok();

    // Under attack from many addresses, each gets a single guess; a clean address still gets in.
    for bot in 3..6 {
        let bot = server.client().connecting_from(&format!("127.0.1.{bot}"));
        bot.login("carol", "guess").await.assert_error(403, "M_FORBIDDEN");
        bot.login("carol", "guess").await.assert_error(429, "M_LIMIT_EXCEEDED");
    }
    server.client().connecting_from("127.0.2.1").login("carol", PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn device_ids_are_reused_and_their_old_tokens_revoked() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("dave").await;
    let login = |device: &'static str, name: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut body =
                json!({ "type": "m.login.password", "user": "dave", "password": PASSWORD, "device_id": device });
            if let Some(name) = name {
                body["initial_device_display_name"] = json!(name);
            }
            Session::from_reply(&client, client.post(LOGIN, body).await.assert_ok())
        }
    };
    let first = login("PHONE", Some("Dave's phone")).await;
    assert_eq!(first.device_id, "PHONE");
    let second = login("PHONE", None).await;
    assert_eq!(second.device_id, "PHONE");
    first.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let whoami = second.client.get(WHOAMI).await;
    assert_eq!(whoami.assert_ok()["device_id"], "PHONE");
    let device = second.client.get("/_matrix/client/v3/devices/PHONE").await;
    assert_eq!(device.assert_ok()["display_name"], "Dave's phone", "the name survives a login without one");
}

#[tokio::test]
async fn logout_and_logout_all_revoke_tokens() {
    let server = TestServer::start().await;
    let client = server.client();
    let one = client.register("erin").await;
    let two = Session::from_reply(&client, client.login("erin", PASSWORD).await.assert_ok());
    let three = Session::from_reply(&client, client.login("erin", PASSWORD).await.assert_ok());

    one.client.post("/_matrix/client/v3/logout", json!({})).await.assert_ok();
    one.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let devices = two.client.get("/_matrix/client/v3/devices").await;
    assert_eq!(devices.assert_ok()["devices"].as_array().unwrap().len(), 2, "logout removed its device");

    two.client.post("/_matrix/client/v3/logout/all", json!({})).await.assert_ok();
    two.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    three.client.get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_the_old_one_dies_once_the_new_tokens_are_used() {
    let server = TestServer::start().await;
    let client = server.client();
    let reply = client
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "frank", "password": PASSWORD, "refresh_token": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    let body = reply.assert_ok().clone();
    let refresh1 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_in_ms"], 300_000);

    let refreshed = client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh1 })).await;
    let refreshed = refreshed.assert_ok().clone();
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);

    // Until the new tokens are used, the old refresh token still works (a
    // client that lost the response can retry); the retry's tokens replace
    // the first answer's, as in Synapse (one successor at a time).
    let retry = client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh1 })).await;
    let retry = retry.assert_ok().clone();
    let access3 = retry["access_token"].as_str().unwrap().to_owned();
    let refresh3 = retry["refresh_token"].as_str().unwrap().to_owned();
    client.with_token(&access2).get(WHOAMI).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let stale = client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh2 })).await;
    stale.assert_error(401, "M_UNKNOWN_TOKEN");

    let whoami = client.with_token(&access3).get(WHOAMI).await;
    assert_eq!(whoami.assert_ok()["user_id"], "@frank:test.local");
    let old = client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh1 })).await;
    old.assert_error(401, "M_UNKNOWN_TOKEN");
    client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh3 })).await.assert_ok();
    client
        .post("/_matrix/client/v3/refresh", json!({ "refresh_token": "cdr_bogus" }))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_leave_one_live_session() {
    let server = TestServer::start().await;
    let client = server.client();
    for round in 0..5 {
        let body = json!({
            "username": format!("rita{round}"), "password": PASSWORD, "refresh_token": true,
            "auth": { "type": "m.login.dummy" }
        });
        let registered = client.post("/_matrix/client/v3/register", body).await;
        let refresh = registered.assert_ok()["refresh_token"].as_str().unwrap().to_owned();
        let refreshes =
            (0..4).map(|_| client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": refresh.clone() })));
        let mut live = 0;
        for reply in futures_util::future::join_all(refreshes).await {
            let access = reply.assert_ok()["access_token"].as_str().unwrap().to_owned();
            live += usize::from(client.with_token(&access).get(WHOAMI).await.status == 200);
        }
        assert_eq!(live, 1, "a refresh token has one successor at a time");
    }
}

#[tokio::test]
async fn expired_refreshable_tokens_ask_for_a_soft_logout() {
    let server = TestServer::start_with("refreshable_access_token_lifetime_secs = 1").await;
    let client = server.client();
    client.register("gina").await;
    let reply = client
        .post(LOGIN, json!({ "type": "m.login.password", "user": "gina", "password": PASSWORD, "refresh_token": true }))
        .await;
    let body = reply.assert_ok().clone();
    let access = body["access_token"].as_str().unwrap();
    client.with_token(access).get(WHOAMI).await.assert_ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = client.with_token(access).get(WHOAMI).await;
    expired.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], true);
    let refreshed = client.post("/_matrix/client/v3/refresh", json!({ "refresh_token": body["refresh_token"] })).await;
    let access = refreshed.assert_ok()["access_token"].as_str().unwrap();
    client.with_token(access).get(WHOAMI).await.assert_ok();
}
