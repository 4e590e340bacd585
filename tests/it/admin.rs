//! The administration API (Synapse's subset): shared-secret registration
//! with Synapse's own `register_new_matrix_user` (from the pinned venv the
//! federation tests install), the users as synapse-admin lists and edits
//! them, and the health check.

use serde_json::{json, Value};

use crate::harness::{enc, Session, TestServer, PASSWORD};

/// Runs Synapse's `register_new_matrix_user` against `server`; its exit status and output.
async fn register_new_matrix_user(server: &TestServer, args: &[&str]) -> (bool, String) {
    let venv = tokio::task::spawn_blocking(crate::synapse::venv).await.expect("install Synapse");
    let mut command = std::process::Command::new(venv.join("bin/python"));
    command.args(["-m", "synapse._scripts.register_new_matrix_user"]).args(args).arg(format!("http://{}", server.addr));
    let output = tokio::task::spawn_blocking(move || command.stdin(std::process::Stdio::null()).output())
        .await
        .expect("run register_new_matrix_user")
        .expect("start register_new_matrix_user");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test]
async fn synapses_register_new_matrix_user_creates_an_admin_with_the_shared_secret() {
    let server = TestServer::start_with("registration_shared_secret = \"s3cret\"").await;
    let (ok, output) =
        register_new_matrix_user(&server, &["-u", "operator", "-p", "op-pass", "-a", "-k", "s3cret"]).await;
    assert!(ok, "{output}");
    let login = server.client().login("operator", "op-pass").await;
    let operator = Session::from_reply(&server.client(), login.assert_ok());
    let me = operator.client.get(&format!("/_synapse/admin/v2/users/{}", enc(&operator.user_id))).await;
    assert_eq!(me.assert_ok()["admin"], true, "{}", me.body);

    let (ok, output) =
        register_new_matrix_user(&server, &["-u", "intruder", "-p", "pw", "--no-admin", "-k", "guess"]).await;
    assert!(!ok, "a wrong secret registers nobody: {output}");
    server.client().login("intruder", "pw").await.assert_error(403, "M_FORBIDDEN");
    let (ok, output) =
        register_new_matrix_user(&server, &["-u", "agent", "-p", "agent-pass", "--no-admin", "-k", "s3cret"]).await;
    assert!(ok, "{output}");
    let agent = server.client().login("agent", "agent-pass").await;
    let agent = Session::from_reply(&server.client(), agent.assert_ok());
    let listed = agent.client.get("/_synapse/admin/v2/users").await;
    listed.assert_error(403, "M_FORBIDDEN");

    // A nonce serves once; without a secret configured, nothing.
    let nonce = server.client().get("/_synapse/admin/v1/register").await;
    assert!(nonce.assert_ok()["nonce"].is_string());
    let closed = TestServer::start().await;
    closed.client().get("/_synapse/admin/v1/register").await.assert_error(400, "M_UNKNOWN");
}

/// The users page of synapse-admin: `GET /v2/users` with its parameters.
async fn users_page(admin: &Session, query: &str) -> Value {
    let reply = admin.client.get(&format!("/_synapse/admin/v2/users?{query}")).await;
    reply.assert_ok().clone()
}

fn names(page: &Value) -> Vec<String> {
    page["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_admin_api_manages_users_as_synapse_admin_does() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "name": "Support" })).await;

    // synapse-admin's list: first page of 2, then the next.
    let first = users_page(&admin, "from=0&limit=2&guests=false&order_by=name&dir=f").await;
    assert_eq!(names(&first), ["@admin:test.local", "@alice:test.local"]);
    assert_eq!((first["total"].as_u64(), first["next_token"].as_str()), (Some(3), Some("2")));
    let second = users_page(&admin, "from=2&limit=2&guests=false&order_by=name&dir=f").await;
    assert_eq!(names(&second), ["@bob:test.local"]);
    assert!(second.get("next_token").is_none());
    assert_eq!(names(&users_page(&admin, "name=ali").await), ["@alice:test.local"]);
    assert_eq!(first["users"][0]["admin"], true);
    assert_eq!(first["users"][1]["deactivated"], false);

    // Create, change, read.
    let carol = "/_synapse/admin/v2/users/%40carol%3Atest.local";
    let created = admin.client.put(carol, json!({ "password": "carol-pass", "displayname": "Carol" })).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["displayname"], "Carol");
    client.login("carol", "carol-pass").await.assert_ok();
    let promoted = admin.client.put(carol, json!({ "admin": true })).await;
    assert_eq!((promoted.status, &promoted.body["admin"]), (200, &json!(true)));
    let read = admin.client.get(carol).await;
    assert_eq!(read.assert_ok()["threepids"], json!([]));

    // Support: who is connected, the joined rooms, logging in as alice.
    let alice_path = format!("/_synapse/admin/v1/whois/{}", enc(&alice.user_id));
    let whois = admin.client.get(&alice_path).await;
    assert!(whois.assert_ok()["devices"][&alice.device_id].is_object(), "{}", whois.body);
    let spec_whois = format!("/_matrix/client/v3/admin/whois/{}", enc(&alice.user_id));
    alice.client.get(&spec_whois).await.assert_ok();
    bob.client.get(&spec_whois).await.assert_error(403, "M_FORBIDDEN");
    let joined = admin.client.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", enc(&alice.user_id))).await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([room]));
    let login_as =
        admin.client.post(&format!("/_synapse/admin/v1/users/{}/login", enc(&alice.user_id)), json!({})).await;
    let puppet = client.with_token(login_as.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(puppet.get("/_matrix/client/v3/account/whoami").await.assert_ok()["user_id"], alice.user_id.as_str());
    let refused = admin.client.post("/_synapse/admin/v1/users/%40carol%3Atest.local/login", json!({})).await;
    refused.assert_error(403, "M_FORBIDDEN");

    // Devices: listed, one removed (its token dies).
    let devices = admin.client.get(&format!("/_synapse/admin/v2/users/{}/devices", enc(&bob.user_id))).await;
    assert_eq!(devices.assert_ok()["total"], 1);
    let device = format!("/_synapse/admin/v2/users/{}/devices/{}", enc(&bob.user_id), bob.device_id);
    admin.client.delete(&device, json!({})).await.assert_ok();
    assert_eq!(bob.client.get("/_matrix/client/v3/account/whoami").await.status, 401);

    // A password reset signs the user out; deactivation ends the account.
    let reset = json!({ "new_password": "new-pass", "logout_devices": true });
    admin.client.post(&format!("/_synapse/admin/v1/reset_password/{}", enc(&alice.user_id)), reset).await.assert_ok();
    assert_eq!(alice.client.get("/_matrix/client/v3/account/whoami").await.status, 401);
    client.login("alice", PASSWORD).await.assert_error(403, "M_FORBIDDEN");
    client.login("alice", "new-pass").await.assert_ok();
    let deactivated = admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", enc(&bob.user_id)), json!({ "erase": true }))
        .await;
    deactivated.assert_ok();
    client.login("bob", PASSWORD).await.assert_error(403, "M_USER_DEACTIVATED");
    assert_eq!(names(&users_page(&admin, "guests=false").await).len(), 3, "deactivated users are left out by default");
    assert_eq!(names(&users_page(&admin, "deactivated=true").await).len(), 4);

    // Not for the others.
    alice.client.get("/_synapse/admin/v2/users").await.assert_error(401, "M_UNKNOWN_TOKEN");
    let other = client.login("alice", "new-pass").await;
    let alice = Session::from_reply(&client, other.assert_ok());
    for (method, path) in [
        ("GET", "/_synapse/admin/v2/users"),
        ("GET", carol),
        ("POST", "/_synapse/admin/v1/deactivate/%40admin%3Atest.local"),
    ] {
        let reply = alice.client.send(method, path, &[], bytes::Bytes::from_static(b"{}")).await;
        reply.assert_error(403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn the_health_check_answers_while_the_database_does() {
    let server = TestServer::start().await;
    let (status, headers, body) =
        server.client().send_raw("GET", "/_conduit/health", &[], Default::default()).await.unwrap();
    assert_eq!((status, body.as_ref()), (200, b"OK".as_ref()));
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let version = server.client().get("/_synapse/admin/v1/server_version").await;
    assert!(version.assert_ok()["server_version"].as_str().unwrap().starts_with("conduit "));
}

fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_admin_api_lists_inspects_and_shuts_down_rooms() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let alpha = alice
        .create_room(
            json!({ "name": "Alpha", "preset": "public_chat", "room_alias_name": "alpha", "visibility": "public" }),
        )
        .await;
    bob.join(&alpha).await.assert_ok();
    let beta = alice.create_room(json!({ "name": "Beta" })).await;
    bob.client.get("/_synapse/admin/v1/rooms").await.assert_error(403, "M_FORBIDDEN");

    // synapse-admin's room list, its orders and search.
    let page = admin.client.get("/_synapse/admin/v1/rooms?from=0&limit=10&order_by=name&dir=f").await;
    let page = page.assert_ok().clone();
    assert_eq!(room_ids(&page), [alpha.clone(), beta.clone()]);
    assert_eq!((page["total_rooms"].as_u64(), page["offset"].as_u64()), (Some(2), Some(0)));
    let first = &page["rooms"][0];
    assert_eq!((first["name"].as_str(), first["joined_members"].as_u64()), (Some("Alpha"), Some(2)));
    assert_eq!((first["canonical_alias"].as_str(), first["public"].as_bool()), (Some("#alpha:test.local"), Some(true)));
    assert_eq!(first["join_rules"], "public");
    let by_size = admin.client.get("/_synapse/admin/v1/rooms?order_by=joined_members&dir=b").await;
    assert_eq!(room_ids(by_size.assert_ok()), [beta.clone(), alpha.clone()]);
    let found = admin.client.get("/_synapse/admin/v1/rooms?search_term=bet").await;
    assert_eq!(room_ids(found.assert_ok()), vec![beta.clone()]);
    let paged = admin.client.get("/_synapse/admin/v1/rooms?limit=1").await;
    assert_eq!(paged.assert_ok()["next_batch"], 1);

    // One room in detail.
    let details = admin.client.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&alpha))).await;
    assert_eq!(details.assert_ok()["creator"], alice.user_id.as_str());
    let members = admin.client.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&alpha))).await;
    assert_eq!(members.assert_ok()["total"], 2);
    let state = admin.client.get(&format!("/_synapse/admin/v1/rooms/{}/state", enc(&alpha))).await;
    assert!(state.assert_ok()["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));

    // The admin takes over a private room they are not in.
    let take_over =
        admin.client.post(&format!("/_synapse/admin/v1/rooms/{}/make_room_admin", enc(&beta)), json!({})).await;
    take_over.assert_ok();
    admin.join(&beta).await.assert_ok();
    let levels = admin.client.get(&crate::harness::state_path(&beta, "m.room.power_levels", "")).await;
    assert_eq!(levels.assert_ok()["users"][&admin.user_id], 100);

    // Shut Alpha down: everyone out and into a notice room, the alias gone, the room blocked.
    let shutdown =
        json!({ "new_room_user_id": admin.user_id, "room_name": "Fermé", "message": "Salon fermé", "block": true });
    let deleted = admin.client.delete(&format!("/_synapse/admin/v2/rooms/{}", enc(&alpha)), shutdown).await;
    let delete_id = deleted.assert_ok()["delete_id"].as_str().unwrap().to_owned();
    let status = admin.client.get(&format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}")).await;
    let status = status.assert_ok().clone();
    assert_eq!(status["status"], "complete", "{status}");
    let mut kicked: Vec<&str> =
        status["shutdown_room"]["kicked_users"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    kicked.sort();
    assert_eq!(kicked, [alice.user_id.as_str(), bob.user_id.as_str()]);
    let new_room = status["shutdown_room"]["new_room_id"].as_str().unwrap().to_owned();
    let by_room = admin.client.get(&format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&alpha))).await;
    assert_eq!(by_room.assert_ok()["results"][0]["delete_id"], delete_id.as_str());
    let joined = bob.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([new_room]), "moved into the notice room");
    bob.join(&alpha).await.assert_error(403, "M_FORBIDDEN");
    client.get("/_matrix/client/v3/directory/room/%23alpha%3Atest.local").await.assert_error(404, "M_NOT_FOUND");
    let public = client.get("/_matrix/client/v3/publicRooms").await;
    assert_eq!(public.assert_ok()["chunk"], json!([]));

    // Purged (Synapse's default): the room left the database.
    admin.client.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&alpha))).await.assert_error(404, "M_NOT_FOUND");
    let mut left_behind = 0;
    server
        .services()
        .storage
        .tables
        .eventid_pdu
        .for_each(|_, stored| left_behind += usize::from(stored.room_id == alpha))
        .unwrap();
    assert_eq!(left_behind, 0, "no event of the purged room is stored");
    bob.client.get("/_matrix/client/v3/sync").await.assert_ok();
    let messages = bob.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&alpha))).await;
    assert!(messages.status == 403 || messages.status == 404, "{}", messages.status);

    // Without purge, the room and its history stay.
    let kept =
        admin.client.delete(&format!("/_synapse/admin/v2/rooms/{}", enc(&beta)), json!({ "purge": false })).await;
    kept.assert_ok();
    let details = admin.client.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&beta))).await;
    assert_eq!(details.assert_ok()["joined_members"], 0);
}

#[tokio::test]
async fn reported_events_are_listed_read_and_dismissed_as_synapse_admin_does() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = alice.create_room(json!({ "name": "Café", "preset": "public_chat" })).await;
    bob.join(&room).await.assert_ok();
    let event = bob.send_text(&room, "t1", "something offensive").await;
    let report = json!({ "reason": "offensive", "score": -100 });
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event)), report)
        .await
        .assert_ok();
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/report", enc(&room)), json!({ "reason": "the room" }))
        .await
        .assert_ok();

    let listed = admin.client.get("/_synapse/admin/v1/event_reports?from=0&limit=10&dir=b").await;
    let listed = listed.assert_ok().clone();
    assert_eq!(listed["total"], 1, "only reports of events: {listed}");
    let entry = &listed["event_reports"][0];
    assert_eq!(
        (entry["event_id"].as_str(), entry["user_id"].as_str()),
        (Some(event.as_str()), Some(alice.user_id.as_str()))
    );
    assert_eq!((entry["sender"].as_str(), entry["name"].as_str()), (Some(bob.user_id.as_str()), Some("Café")));
    assert_eq!(entry["reason"], "offensive");
    let id = entry["id"].as_u64().unwrap();
    let details = admin.client.get(&format!("/_synapse/admin/v1/event_reports/{id}")).await;
    assert_eq!(details.assert_ok()["event_json"]["content"]["body"], "something offensive");
    bob.client.get("/_synapse/admin/v1/event_reports").await.assert_error(403, "M_FORBIDDEN");
    admin.client.delete(&format!("/_synapse/admin/v1/event_reports/{id}"), json!({})).await.assert_ok();
    admin.client.get(&format!("/_synapse/admin/v1/event_reports/{id}")).await.assert_error(404, "M_NOT_FOUND");
    let empty = admin.client.get("/_synapse/admin/v1/event_reports").await;
    assert_eq!(empty.assert_ok()["total"], 0);
}

#[tokio::test]
async fn server_notices_reach_users_in_a_tagged_room_of_their_own() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    // Nobody takes the notices account before the server makes it.
    let squatter = json!({ "username": "server-notices", "password": "pw", "auth": { "type": "m.login.dummy" } });
    client.post("/_matrix/client/v3/register", squatter).await.assert_error(400, "M_USER_IN_USE");
    let notice = |body: &str| json!({ "user_id": alice.user_id, "content": { "msgtype": "m.text", "body": body } });
    let first = admin.client.post("/_synapse/admin/v1/send_server_notice", notice("Maintenance tonight")).await;
    assert!(first.assert_ok()["event_id"].is_string());
    admin.client.post("/_synapse/admin/v1/send_server_notice", notice("Maintenance done")).await.assert_ok();

    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let invites = sync.assert_ok()["rooms"]["invite"].as_object().cloned().unwrap_or_default();
    assert_eq!(invites.len(), 1, "one notices room for both: {}", sync.body);
    let room = invites.keys().next().unwrap().clone();
    alice.join(&room).await.assert_ok();
    let messages = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10", enc(&room))).await;
    let bodies = crate::harness::message_bodies(&messages.assert_ok()["chunk"]);
    assert_eq!(bodies, ["Maintenance done", "Maintenance tonight"]);
    let tags =
        alice.client.get(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room))).await;
    assert!(tags.assert_ok()["tags"]["m.server_notice"].is_object(), "{}", tags.body);
    let notice_event =
        messages.body["chunk"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.message").unwrap();
    assert_eq!(notice_event["sender"], "@server-notices:test.local");
    alice
        .send_message(&room, "t1", json!({ "msgtype": "m.text", "body": "hi" }))
        .await
        .assert_error(403, "M_FORBIDDEN");

    alice.client.post("/_synapse/admin/v1/send_server_notice", notice("x")).await.assert_error(403, "M_FORBIDDEN");
    let nobody = json!({ "user_id": "@nobody:test.local", "content": { "msgtype": "m.text", "body": "x" } });
    admin.client.post("/_synapse/admin/v1/send_server_notice", nobody).await.assert_error(400, "M_INVALID_PARAM");
    client.login("server-notices", "").await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_users_uploads_are_listed_and_one_is_deleted() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let upload = |name: &'static str| {
        let alice = alice.clone();
        async move {
            let path = format!("/_matrix/media/v3/upload?filename={name}");
            let headers = [("content-type", "text/plain")];
            let reply =
                alice.client.send("POST", &path, &headers, bytes::Bytes::from(format!("content of {name}"))).await;
            reply.assert_ok()["content_uri"].as_str().unwrap().to_owned()
        }
    };
    let first = upload("a.txt").await;
    let second = upload("b.txt").await;
    let media_id = |uri: &str| uri.rsplit('/').next().unwrap().to_owned();

    let listed = admin.client.get(&format!("/_synapse/admin/v1/users/{}/media", enc(&alice.user_id))).await;
    let listed = listed.assert_ok().clone();
    assert_eq!(listed["total"], 2);
    let ids: Vec<&str> = listed["media"].as_array().unwrap().iter().filter_map(|m| m["media_id"].as_str()).collect();
    assert_eq!(ids, [media_id(&second), media_id(&first)], "newest first");
    assert_eq!(listed["media"][0]["upload_name"], "b.txt");
    assert_eq!(listed["media"][0]["media_length"], "content of b.txt".len());

    let path = format!("/_synapse/admin/v1/media/test.local/{}", media_id(&first));
    alice.client.delete(&path, json!({})).await.assert_error(403, "M_FORBIDDEN");
    let deleted = admin.client.delete(&path, json!({})).await;
    assert_eq!(deleted.assert_ok()["deleted_media"], json!([media_id(&first)]));
    let download = format!("/_matrix/client/v1/media/download/test.local/{}", media_id(&first));
    assert_eq!(alice.client.send_raw("GET", &download, &[], Default::default()).await.unwrap().0, 404);
    admin.client.delete(&path, json!({})).await.assert_error(404, "M_NOT_FOUND");
    let remote = admin.client.delete("/_synapse/admin/v1/media/other.example/abc", json!({})).await;
    remote.assert_error(400, "M_INVALID_PARAM");
    let listed = admin.client.get(&format!("/_synapse/admin/v1/users/{}/media", enc(&alice.user_id))).await;
    assert_eq!(listed.assert_ok()["total"], 1);

    // The deleted upload's file is gone at once; a file two uploads share
    // stays until the second one goes.
    let media_dir = server.dir.path().join("db").join("media");
    assert_eq!(content_files(&media_dir), 1, "only b.txt's file is left");
    let twin_a = upload("twin.txt").await;
    let twin_b = upload("twin.txt").await;
    assert_eq!(content_files(&media_dir), 2, "identical content is stored once");
    let delete = |uri: String| {
        let admin = admin.clone();
        async move {
            let path = format!("/_synapse/admin/v1/media/test.local/{}", media_id(&uri));
            admin.client.delete(&path, json!({})).await.assert_ok();
        }
    };
    delete(twin_a).await;
    assert_eq!(content_files(&media_dir), 2, "the other twin still names the file");
    let download = format!("/_matrix/client/v1/media/download/test.local/{}", media_id(&twin_b));
    assert_eq!(alice.client.send_raw("GET", &download, &[], Default::default()).await.unwrap().0, 200);
    delete(twin_b).await;
    assert_eq!(content_files(&media_dir), 1);
}

/// The stored content files under a media directory.
pub fn content_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    conduit::media::files::for_each_content_file(dir, |_, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    count
}

#[tokio::test]
async fn media_is_quarantined_by_item_by_room_and_by_user() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let upload = |who: Session, body: &'static str| async move {
        let reply = who
            .client
            .send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], bytes::Bytes::from(body))
            .await;
        reply.assert_ok()["content_uri"].as_str().unwrap().to_owned()
    };
    let posted = upload(alice.clone(), "posted in the room").await;
    let kept = upload(alice.clone(), "never posted").await;
    let bobs = upload(bob.clone(), "bob's").await;
    let room = alice.create_room(json!({})).await;
    alice.send_content(&room, "t1", json!({ "msgtype": "m.file", "body": "f", "url": posted })).await;
    let status = |uri: &str| {
        let path = format!("/_matrix/client/v1/media/download/{}", uri.trim_start_matches("mxc://"));
        let bob = bob.clone();
        async move { bob.client.send_raw("GET", &path, &[], Default::default()).await.unwrap().0 }
    };
    assert_eq!((status(&posted).await, status(&kept).await, status(&bobs).await), (200, 200, 200));

    let room_path = format!("/_synapse/admin/v1/room/{}/media/quarantine", enc(&room));
    alice.client.post(&room_path, json!({})).await.assert_error(403, "M_FORBIDDEN");
    let answer = admin.client.post(&room_path, json!({})).await;
    assert_eq!(answer.assert_ok()["num_quarantined"], 1);
    assert_eq!((status(&posted).await, status(&kept).await), (404, 200));
    let thumbnail =
        format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", posted.trim_start_matches("mxc://"));
    assert_eq!(bob.client.send_raw("GET", &thumbnail, &[], Default::default()).await.unwrap().0, 404);
    let listed = admin.client.get(&format!("/_synapse/admin/v1/users/{}/media", enc(&alice.user_id))).await;
    let listed = listed.assert_ok().clone();
    let quarantined: Vec<&Value> = listed["media"].as_array().unwrap().iter().map(|m| &m["quarantined_by"]).collect();
    assert_eq!(quarantined, [&Value::Null, &json!(admin.user_id)], "newest (never posted) first");

    let item =
        |action: &str, uri: &str| format!("/_synapse/admin/v1/media/{action}/{}", uri.trim_start_matches("mxc://"));
    admin.client.post(&item("unquarantine", &posted), json!({})).await.assert_ok();
    assert_eq!(status(&posted).await, 200);
    admin.client.post(&item("quarantine", &bobs), json!({})).await.assert_ok();
    assert_eq!(status(&bobs).await, 404);
    admin
        .client
        .post(&item("quarantine", "mxc://test.local/NoSuchMedia"), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");

    let user_path = format!("/_synapse/admin/v1/user/{}/media/quarantine", enc(&alice.user_id));
    let answer = admin.client.post(&user_path, json!({})).await;
    assert_eq!(answer.assert_ok()["num_quarantined"], 2);
    assert_eq!((status(&posted).await, status(&kept).await), (404, 404));
    // Quarantined media survives a restart quarantined (and its file stays).
    let server = server.restart().await;
    let bob = Session { client: server.client().with_token(&bob.token), ..bob };
    let path = format!("/_matrix/client/v1/media/download/{}", kept.trim_start_matches("mxc://"));
    assert_eq!(bob.client.send_raw("GET", &path, &[], Default::default()).await.unwrap().0, 404);
    assert_eq!(content_files(&server.dir.path().join("db").join("media")), 3);
}

#[tokio::test]
async fn a_rooms_old_history_is_purged_and_the_room_goes_on() {
    let server = TestServer::start().await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let room = admin.create_room(json!({ "preset": "public_chat" })).await;
    alice.join(&room).await.assert_ok();
    let mut old = Vec::new();
    for i in 0..10 {
        old.push(alice.send_text(&room, &format!("old{i}"), &format!("ancient{i} words")).await);
    }
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    admin.client.put(&topic, json!({ "topic": "kept, being state" })).await.assert_ok();
    let reply =
        json!({ "msgtype": "m.text", "body": "a reply", "m.relates_to": { "m.in_reply_to": { "event_id": old[0] } } });
    old.push(alice.send_content(&room, "reply", reply).await);
    let thread = json!({ "msgtype": "m.text", "body": "in a thread", "m.relates_to": { "rel_type": "m.thread", "event_id": old[1] } });
    old.push(alice.send_content(&room, "thread", thread).await);
    let boundary = alice.send_text(&room, "boundary", "boundary stays").await;
    alice.send_text(&room, "new0", "recent words").await;
    let notifications = |session: Session| async move {
        let reply = session.client.get("/_matrix/client/v3/notifications?limit=100").await;
        reply.assert_ok()["notifications"].as_array().unwrap().len()
    };
    let admins_notifications = notifications(admin.clone()).await;
    assert!(admins_notifications >= 12, "alice's messages notify admin in a two-member room: {admins_notifications}");

    let path = format!("/_synapse/admin/v1/purge_history/{}", enc(&room));
    let body = json!({ "purge_up_to_event_id": boundary, "delete_local_events": true });
    alice.client.post(&path, body.clone()).await.assert_error(403, "M_FORBIDDEN");
    admin.client.post(&path, json!({})).await.assert_error(400, "M_MISSING_PARAM");
    let elsewhere = admin.create_room(json!({})).await;
    let wrong_room = format!("/_synapse/admin/v1/purge_history/{}", enc(&elsewhere));
    admin.client.post(&wrong_room, body.clone()).await.assert_error(404, "M_NOT_FOUND");
    // Without delete_local_events only other servers' events go: none here.
    let id = admin.client.post(&path, json!({ "purge_up_to_event_id": boundary })).await;
    let id = id.assert_ok()["purge_id"].as_str().unwrap().to_owned();
    let status = admin.client.get(&format!("/_synapse/admin/v1/purge_history_status/{id}")).await;
    assert_eq!(status.assert_ok()["status"], "complete");
    assert_eq!(status.body["purged_events"], 0);

    let stored_before = server.services().storage.tables.eventid_pdu.len();
    let chains_before = server.services().storage.tables.shortid_authchain.len();
    let id = admin.client.post(&path, body).await;
    let id = id.assert_ok()["purge_id"].as_str().unwrap().to_owned();
    let status = admin.client.get(&format!("/_synapse/admin/v1/purge_history_status/{id}")).await;
    assert_eq!(
        (status.assert_ok()["status"].as_str(), status.body["purged_events"].as_u64()),
        (Some("complete"), Some(12))
    );
    assert_eq!(server.services().storage.tables.eventid_pdu.len(), stored_before - 12, "the events left the database");
    assert_eq!(
        server.services().storage.tables.shortid_authchain.len(),
        chains_before,
        "messages have no stored auth chain (state events keep theirs)"
    );

    // What is left: the state events, the boundary and what came after.
    let messages = admin.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room))).await;
    let chunk = messages.assert_ok()["chunk"].as_array().unwrap().clone();
    let ids: Vec<&str> = chunk.iter().filter_map(|event| event["event_id"].as_str()).collect();
    assert!(ids.contains(&boundary.as_str()));
    assert!(old.iter().all(|purged| !ids.contains(&purged.as_str())), "purged events are gone from /messages");
    assert!(
        chunk.iter().filter(|event| event.get("state_key").is_none()).count() == 2,
        "the boundary and the newer message"
    );
    assert!(chunk.iter().any(|event| event["content"]["topic"] == "kept, being state"));
    let context = format!("/_matrix/client/v3/rooms/{}/context/{}", enc(&room), enc(&old[3]));
    admin.client.get(&context).await.assert_error(404, "M_NOT_FOUND");
    let search = |word: &str| json!({ "search_categories": { "room_events": { "search_term": word } } });
    let found = admin.client.post("/_matrix/client/v3/search", search("ancient3")).await;
    assert_eq!(found.assert_ok()["search_categories"]["room_events"]["count"], 0);
    let found = admin.client.post("/_matrix/client/v3/search", search("recent")).await;
    assert_eq!(found.assert_ok()["search_categories"]["room_events"]["count"], 1);
    let threads = admin.client.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room))).await;
    assert_eq!(threads.assert_ok()["chunk"], json!([]), "the purged thread root is no thread any more");
    assert_eq!(notifications(admin.clone()).await, admins_notifications - 12, "the purged events' notifications went");

    // The room goes on.
    alice.send_text(&room, "after", "after the purge").await;
    let jobs = admin.client.get("/_conduit/admin/v1/jobs").await;
    let operations = jobs.assert_ok()["operations"].as_array().unwrap().clone();
    assert_eq!(
        (operations[0]["kind"].as_str(), operations[0]["status"].as_str()),
        (Some("purge_history"), Some("complete"))
    );
    assert!(jobs.body["queues"]["push"].is_u64(), "{}", jobs.body);
    let updates = admin.client.get("/_synapse/admin/v1/background_updates/status").await;
    assert_eq!(updates.assert_ok()["current_updates"], json!({}));
}
