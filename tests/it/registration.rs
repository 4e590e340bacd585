//! Registration: user-interactive auth, usernames, modes, tokens, guests.

use serde_json::json;

use crate::harness::{base_config, TestServer, PASSWORD};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn open_registration_runs_the_dummy_stage() {
    let server = TestServer::start().await;
    let client = server.client();
    let first = client.post(REGISTER, json!({ "username": "alice", "password": PASSWORD })).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    assert!(first.body.get("errcode").is_none(), "the first challenge is not an error: {}", first.body);
    let session = first.body["session"].as_str().unwrap();

    let done = client
        .post(
            REGISTER,
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    let body = done.assert_ok();
    assert_eq!(body["user_id"], "@alice:test.local");
    assert!(body["access_token"].as_str().unwrap().len() >= 43);
    assert!(body["device_id"].is_string());
    assert!(body.get("refresh_token").is_none());

    let token = body["access_token"].as_str().unwrap();
    let whoami = client.with_token(token).get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(whoami.assert_ok()["user_id"], "@alice:test.local");

    // A completed session cannot authorise a second registration.
    let replay = client
        .post(
            REGISTER,
            json!({ "username": "alice2", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert_ne!(replay.status, 200, "{}", replay.body);
}

#[tokio::test]
async fn usernames_are_checked_before_authentication() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("taken").await;
    for (username, errcode) in [
        ("taken", "M_USER_IN_USE"),
        ("TAKEN", "M_USER_IN_USE"),
        ("bad name", "M_INVALID_USERNAME"),
        ("é", "M_INVALID_USERNAME"),
    ] {
        let reply = client.post(REGISTER, json!({ "username": username, "password": PASSWORD })).await;
        reply.assert_error(400, errcode);
    }
    let long = "a".repeat(250);
    client
        .post(REGISTER, json!({ "username": long, "password": PASSWORD }))
        .await
        .assert_error(400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn usernames_are_lowercased_and_generated_when_absent() {
    let server = TestServer::start().await;
    let client = server.client();
    let jean = client.register("Jean.Dupont").await;
    assert_eq!(jean.user_id, "@jean.dupont:test.local");
    let reply = client.post(REGISTER, json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } })).await;
    let user_id = reply.assert_ok()["user_id"].as_str().unwrap().to_owned();
    assert!(user_id.ends_with(":test.local") && user_id.len() > "@:test.local".len());
}

#[tokio::test]
async fn a_password_is_required() {
    let server = TestServer::start().await;
    let reply =
        server.client().post(REGISTER, json!({ "username": "nopass", "auth": { "type": "m.login.dummy" } })).await;
    reply.assert_error(400, "M_MISSING_PARAM");
    assert_eq!(server.client().get("/_matrix/client/v3/register/available?username=nopass").await.status, 200);
}

#[tokio::test]
async fn availability_endpoint() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("bob").await;
    let free = client.get("/_matrix/client/v3/register/available?username=carol").await;
    assert_eq!(free.assert_ok()["available"], true);
    client.get("/_matrix/client/v3/register/available?username=bob").await.assert_error(400, "M_USER_IN_USE");
    client.get("/_matrix/client/v3/register/available?username=b%20b").await.assert_error(400, "M_INVALID_USERNAME");
    client.get("/_matrix/client/v3/register/available").await.assert_error(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn inhibit_login_creates_no_device() {
    let server = TestServer::start().await;
    let client = server.client();
    let reply = client
        .post(REGISTER, json!({ "username": "quiet", "password": PASSWORD, "inhibit_login": true, "auth": { "type": "m.login.dummy" } }))
        .await;
    let body = reply.assert_ok();
    assert_eq!(body["user_id"], "@quiet:test.local");
    assert!(body.get("access_token").is_none() && body.get("device_id").is_none());
    let login = client.login("quiet", PASSWORD).await;
    let token = login.assert_ok()["access_token"].as_str().unwrap();
    let devices = client.with_token(token).get("/_matrix/client/v3/devices").await;
    assert_eq!(devices.assert_ok()["devices"].as_array().unwrap().len(), 1, "only the login's device");
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "").replace("registration = \"open\"", "registration = \"closed\"");
    let server = TestServer::start_in(dir, &text).await;
    let reply = server
        .client()
        .post(REGISTER, json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
        .await;
    reply.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn guests_are_refused_unless_enabled() {
    let server = TestServer::start().await;
    let reply = server.client().post("/_matrix/client/v3/register?kind=guest", json!({})).await;
    reply.assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server
        .client()
        .post("/_matrix/client/v3/register?kind=robot", json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    let server = TestServer::start_with("allow_guest_registration = true").await;
    let reply = server.client().post("/_matrix/client/v3/register?kind=guest", json!({})).await;
    let token = reply.assert_ok()["access_token"].as_str().unwrap().to_owned();
    let guest = server.client().with_token(&token);
    let whoami = guest.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(whoami.assert_ok()["is_guest"], true);
    guest.get("/_matrix/client/v3/devices").await.assert_ok();
    // Guests read media through the authenticated routes (v1.12): an unknown id is 404, not 403.
    guest.get("/_matrix/client/v1/media/download/test.local/nothing").await.assert_error(404, "M_NOT_FOUND");
    guest
        .get("/_matrix/client/v1/media/thumbnail/test.local/nothing?width=8&height=8")
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Account maintenance beyond the spec's guest list is refused.
    let reply = guest.post("/_matrix/client/v3/account/password", json!({ "new_password": "x" })).await;
    reply.assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    let reply = guest.post("/_matrix/client/v3/account/deactivate", json!({})).await;
    reply.assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    let reply = guest.post("/_matrix/client/v3/delete_devices", json!({ "devices": [] })).await;
    reply.assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn malformed_session_ids_are_refused() {
    let server = TestServer::start().await;
    let body =
        json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": "not/valid" } });
    server.client().post(REGISTER, body).await.assert_error(400, "M_INVALID_PARAM");
    let body = json!({ "username": "x", "password": PASSWORD, "auth": { "type": 5 } });
    server.client().post(REGISTER, body).await.assert_error(400, "M_BAD_JSON");
}

fn token_config(dir: &std::path::Path) -> String {
    base_config(dir, "").replace("registration = \"open\"", "registration = \"token\"").replace(
        "[[listeners]]",
        "[[registration_tokens]]\ntoken = \"once\"\nuses_allowed = 1\n\
         [[registration_tokens]]\ntoken = \"expired\"\nexpiry_time = 1000\n\
         [[registration_tokens]]\ntoken = \"unlimited\"\n[[listeners]]",
    )
}

#[tokio::test]
async fn token_registration_checks_validity_uses_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let text = token_config(dir.path());
    let server = TestServer::start_in(dir, &text).await;
    let client = server.client();
    let validity =
        |token: &str| format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}");
    assert_eq!(client.get(&validity("once")).await.assert_ok()["valid"], true);
    assert_eq!(client.get(&validity("expired")).await.assert_ok()["valid"], false);
    assert_eq!(client.get(&validity("nope")).await.assert_ok()["valid"], false);
    assert_eq!(client.get(&validity("bad%20chars")).await.assert_ok()["valid"], false);

    let first = client.post(REGISTER, json!({ "username": "tok1", "password": PASSWORD })).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"], json!([{ "stages": ["m.login.registration_token"] }]));
    let session = first.body["session"].as_str().unwrap();

    let wrong = client
        .post(
            REGISTER,
            json!({ "username": "tok1", "password": PASSWORD,
            "auth": { "type": "m.login.registration_token", "token": "expired", "session": session } }),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["errcode"], "M_UNAUTHORIZED");
    let dummy = client
        .post(REGISTER, json!({ "username": "tok1", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(dummy.status, 401, "the dummy stage is not offered: {}", dummy.body);
    assert_eq!(dummy.body["errcode"], "M_FORBIDDEN");

    let ok = client
        .post(
            REGISTER,
            json!({ "username": "tok1", "password": PASSWORD,
            "auth": { "type": "m.login.registration_token", "token": "once", "session": session } }),
        )
        .await;
    ok.assert_ok();
    assert_eq!(client.get(&validity("once")).await.assert_ok()["valid"], false, "its single use is spent");
    let again = client
        .post(
            REGISTER,
            json!({ "username": "tok2", "password": PASSWORD,
            "auth": { "type": "m.login.registration_token", "token": "once" } }),
        )
        .await;
    assert_eq!(again.status, 401);

    // Uses survive a restart.
    let server = server.restart_with(&text).await;
    assert_eq!(server.client().get(&validity("once")).await.assert_ok()["valid"], false);
    assert_eq!(server.client().get(&validity("unlimited")).await.assert_ok()["valid"], true);
}

#[tokio::test]
async fn first_user_is_admin() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("first").await;
    client.register("second").await;
    let users = &server.services().users;
    assert!(users.get("first").unwrap().unwrap().is_admin);
    assert!(!users.get("second").unwrap().unwrap().is_admin);
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_yield_one_account() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = server.client();
        tasks.push(tokio::spawn(async move {
            client
                .post(
                    REGISTER,
                    json!({ "username": "race", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
                )
                .await
        }));
    }
    let mut successes = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            200 => successes += 1,
            _ => reply.assert_error(400, "M_USER_IN_USE"),
        }
    }
    assert_eq!(successes, 1);
}

/// Synapse's UIA behaviours clients and test suites rely on: `completed`
/// always in the 401, the first request's parameters remembered, a repeated
/// completed registration answered again, a password stage for another user
/// refused with 403.
#[tokio::test]
async fn registration_sessions_remember_parameters_and_repeat_idempotently() {
    let server = TestServer::start().await;
    let client = server.client();
    let first =
        client.post("/_matrix/client/v3/register", json!({ "username": "remembered", "password": PASSWORD })).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["completed"], json!([]), "{}", first.body);
    let session = first.body["session"].as_str().unwrap().to_owned();
    let auth_only = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let done = client.post("/_matrix/client/v3/register", auth_only.clone()).await;
    assert_eq!(done.assert_ok()["user_id"], "@remembered:test.local");
    client.login("remembered", PASSWORD).await.assert_ok();
    // The same request again (a lost answer retried): the same account, not an error.
    let again = client.post("/_matrix/client/v3/register", auth_only).await;
    assert_eq!(again.assert_ok()["user_id"], "@remembered:test.local");
    assert!(again.body["access_token"].is_string());
    // A client cannot slip in a password hash of its own.
    let forged = json!({ "username": "forger", "org.conduit.password_hash": "$argon2id$v=19$m=8,t=1,p=1$AAAA$AAAA" });
    let forged_reply = client.post("/_matrix/client/v3/register", forged).await;
    assert_eq!(forged_reply.status, 401, "no password: asked to authenticate first");
    let session = forged_reply.body["session"].as_str().unwrap().to_owned();
    let finish = client
        .post("/_matrix/client/v3/register", json!({ "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    finish.assert_error(400, "M_MISSING_PARAM");

    // A password stage naming someone else: 403, not a retryable 401.
    let alice = client.register("alice").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let challenge = alice.client.delete(&path, json!({})).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["completed"], json!([]));
    let session = challenge.body["session"].as_str().unwrap();
    let other = json!({ "auth": { "type": "m.login.password", "session": session, "password": PASSWORD,
        "identifier": { "type": "m.id.user", "user": "remembered" } } });
    alice.client.delete(&path, other).await.assert_error(403, "M_FORBIDDEN");
}

/// Guests set their display name (and nothing else of their profile), and
/// leave a room once it forbids guests.
#[tokio::test]
async fn guests_name_themselves_and_leave_rooms_that_stop_admitting_them() {
    let server = TestServer::start_with("allow_guest_registration = true").await;
    let client = server.client();
    let alice = client.register("alice").await;
    let reply = client.post("/_matrix/client/v3/register?kind=guest", json!({})).await;
    let guest_id = reply.assert_ok()["user_id"].as_str().unwrap().to_owned();
    let guest = client.with_token(reply.body["access_token"].as_str().unwrap());
    let name = format!("/_matrix/client/v3/profile/{}/displayname", crate::harness::enc(&guest_id));
    guest.put(&name, json!({ "displayname": "Visiteur" })).await.assert_ok();
    let avatar = format!("/_matrix/client/v3/profile/{}/avatar_url", crate::harness::enc(&guest_id));
    guest
        .put(&avatar, json!({ "avatar_url": "mxc://test.local/x" }))
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");

    let room = alice
        .create_room(json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }
        ] }))
        .await;
    guest.post(&format!("/_matrix/client/v3/rooms/{}/join", crate::harness::enc(&room)), json!({})).await.assert_ok();
    let member = crate::harness::state_path(&room, "m.room.member", &guest_id);
    assert_eq!(alice.client.get(&member).await.assert_ok()["displayname"], "Visiteur");
    let access = crate::harness::state_path(&room, "m.room.guest_access", "");
    alice.client.put(&access, json!({ "guest_access": "forbidden" })).await.assert_ok();
    assert_eq!(alice.client.get(&member).await.assert_ok()["membership"], "leave");
}

/// A guest registers with its access token and keeps its user id and rooms;
/// nobody else's token, and no other username, upgrades it.
#[tokio::test]
async fn a_guest_upgrades_to_a_full_account_keeping_its_user_id() {
    let server = TestServer::start_with("allow_guest_registration = true").await;
    let client = server.client();
    let alice = client.register("alice").await;
    let reply = client.post("/_matrix/client/v3/register?kind=guest", json!({})).await;
    let guest_id = reply.assert_ok()["user_id"].as_str().unwrap().to_owned();
    let guest_token = reply.body["access_token"].as_str().unwrap().to_owned();
    let guest = client.with_token(&guest_token);
    let room = alice
        .create_room(json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }
        ] }))
        .await;
    guest.post(&format!("/_matrix/client/v3/rooms/{}/join", crate::harness::enc(&room)), json!({})).await.assert_ok();
    let localpart = guest_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    assert_eq!(guest.get("/_matrix/client/v3/account/whoami").await.assert_ok()["is_guest"], true);
    let upgrade = |token: &str, username: &str| {
        json!({ "username": username, "password": "a guest no more", "guest_access_token": token,
                "auth": { "type": "m.login.dummy" } })
    };

    // A full account's token is no guest's, and a guest cannot take another name.
    let register = "/_matrix/client/v3/register";
    client.post(register, upgrade(&alice.token, "alice")).await.assert_error(403, "M_FORBIDDEN");
    client.post(register, upgrade(&guest_token, "alice")).await.assert_error(403, "M_FORBIDDEN");
    client.post(register, upgrade("not a token", &localpart)).await.assert_error(403, "M_FORBIDDEN");

    let upgraded = client.post(register, upgrade(&guest_token, &localpart)).await.assert_ok().clone();
    assert_eq!(upgraded["user_id"], guest_id.as_str());
    let full = client.with_token(upgraded["access_token"].as_str().unwrap());
    let whoami = full.get("/_matrix/client/v3/account/whoami").await.assert_ok().clone();
    assert_eq!(whoami["user_id"], guest_id.as_str());
    assert_ne!(whoami["is_guest"], true, "{whoami}");
    let before = guest.get("/_matrix/client/v3/account/whoami").await.assert_ok().clone();
    assert_ne!(before["is_guest"], true, "the guest's own device is a full account's now: {before}");
    let joined = full.get("/_matrix/client/v3/joined_rooms").await.assert_ok().clone();
    assert_eq!(joined["joined_rooms"], json!([room]), "the guest's rooms stay");
    // What guests may not do, the full account may; its password logs in.
    let avatar = format!("/_matrix/client/v3/profile/{}/avatar_url", crate::harness::enc(&guest_id));
    full.put(&avatar, json!({ "avatar_url": "mxc://test.local/x" })).await.assert_ok();
    client.login(&localpart, "a guest no more").await.assert_ok();
    // Once upgraded, the token upgrades nothing any more.
    client.post(register, upgrade(&guest_token, &localpart)).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_retried_before_its_answer_makes_one_account() {
    let server = TestServer::start().await;
    let client = server.client();
    for round in 0..5 {
        let first = client.post("/_matrix/client/v3/register", json!({ "password": PASSWORD })).await;
        assert_eq!(first.status, 401, "{}", first.body);
        let session = first.body["session"].as_str().unwrap().to_owned();
        let body = json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } });
        let attempts = (0..4).map(|_| client.post("/_matrix/client/v3/register", body.clone()));
        let users: std::collections::BTreeSet<String> = futures_util::future::join_all(attempts)
            .await
            .iter()
            .map(|reply| reply.assert_ok()["user_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(users.len(), 1, "round {round}: one account for every retry: {users:?}");
    }
}
