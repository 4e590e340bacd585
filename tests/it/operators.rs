//! The operators' tools through the real binary: `conduit backup` of a
//! server under load and `conduit restore` into another, and the command line
//! administering a running server through its operators' socket.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::{
    harness::{enc, Client, Session, PASSWORD},
    process::{free_port, run_cli, server_in_new_dir, spawn_server, write_config},
};

const SENDERS: usize = 3;

fn cli_ok(config: &Path, args: &[&str]) -> String {
    let output = run_cli(config, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "conduit {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn cli_json(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = cli_ok(config, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("conduit {args:?} printed no JSON ({error}): {stdout}"))
}

async fn upload(session: &Session, body: &'static [u8]) -> String {
    let reply = session
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], Bytes::from_static(body))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["content_uri"].as_str().unwrap().to_owned()
}

/// Every message body of `room`, oldest last (paginating back from the end).
async fn all_bodies(session: &Session, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from = String::new();
    loop {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{from}", enc(room));
        let reply = session.client.get(&path).await;
        let page = reply.assert_ok();
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        bodies.extend(chunk.iter().filter_map(|event| event["content"]["body"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = format!("&from={}", enc(end)),
            _ => return bodies,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_concurrent_writes_restores_every_acknowledged_message_and_nothing_torn() {
    let (dir, config, mut server) = server_in_new_dir("").await;
    let client = Client::new(server.addr);
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({ "name": "Backed up" })).await;
    let file = upload(&alice, b"a file that must come back").await;

    // Senders keep sending numbered messages, each after the previous one's answer.
    let acknowledged: Arc<Vec<AtomicU64>> = Arc::new((0..SENDERS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (alice, room, acknowledged, stop) =
            (alice.clone(), room.clone(), Arc::clone(&acknowledged), Arc::clone(&stop));
        senders.push(tokio::spawn(async move {
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let body = json!({ "msgtype": "m.text", "body": format!("s{sender} {n}") });
                let reply = alice.send_message(&room, &format!("s{sender}n{n}"), body).await;
                assert_eq!(reply.status, 200, "{:?}", reply.body);
                acknowledged[sender].store(n + 1, Ordering::SeqCst);
            }
        }));
    }
    let counts = || acknowledged.iter().map(|count| count.load(Ordering::SeqCst)).collect::<Vec<_>>();
    while counts().iter().any(|&count| count < 10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = counts();
    let backup_dir = dir.path().join("backup");
    let backup_arg = backup_dir.display().to_string();
    let backed_up = {
        let config = config.clone();
        let backup_arg = backup_arg.clone();
        tokio::task::spawn_blocking(move || cli_json(&config, &["backup", &backup_arg])).await.unwrap()
    };
    let during = counts();
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(
        during.iter().zip(&before).any(|(during, before)| during > before),
        "the senders went on while the backup ran: {before:?} → {during:?}"
    );
    assert_eq!(backed_up["server_was_running"], true, "{backed_up}");
    assert_eq!(backed_up["media"]["files"], 1, "{backed_up}");

    // A running server's database is never restored over.
    let refused = run_cli(&config, &["restore", &backup_arg]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running"), "{refused:?}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Restored into another database directory, under the same server name.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_port = free_port();
    let restored_config = write_config(restored_dir.path(), restored_port, "");
    let restored = cli_ok(&restored_config, &["restore", &backup_arg]);
    assert!(restored.contains("restored"), "{restored}");
    let again = run_cli(&restored_config, &["restore", &backup_arg]);
    assert!(!again.status.success(), "a filled database is not restored over");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{again:?}");

    let mut restored_server = spawn_server(&restored_config, restored_port).await;
    let restored_client = Client::new(restored_server.addr);
    let login = restored_client.login("alice", PASSWORD).await;
    let alice_again = Session::from_reply(&restored_client, login.assert_ok());
    let bodies = all_bodies(&alice_again, &room).await;
    for sender in 0..SENDERS {
        let numbers: BTreeSet<u64> =
            bodies.iter().filter_map(|body| body.strip_prefix(&format!("s{sender} "))?.parse().ok()).collect();
        let count = numbers.len() as u64;
        // A point in time: each sender's messages up to some point, no gap.
        assert_eq!(numbers, (0..count).collect(), "sender {sender}'s messages have a gap: {numbers:?}");
        assert!(count >= before[sender], "sender {sender}: {count} restored, {} acknowledged before", before[sender]);
        assert!(count <= during[sender] + 1, "sender {sender}: {count} restored, only {} sent", during[sender] + 1);
    }
    let media = format!("/_matrix/client/v1/media/download/{}", file.trim_start_matches("mxc://"));
    let (status, _, body) = alice_again.client.send_raw("GET", &media, &[], Bytes::new()).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"a file that must come back"[..]));
    // Writes go on from where the copy stopped: new messages come after
    // every restored one, none replaced.
    for n in 0..5 {
        alice_again.send_text(&room, &format!("after{n}"), &format!("after the restore {n}")).await;
    }
    let after: Vec<String> = (0..5).rev().map(|n| format!("after the restore {n}")).collect();
    let mut expected = after.clone();
    expected.extend(bodies.iter().cloned());
    assert_eq!(all_bodies(&alice_again, &room).await, expected);
    restored_server.child.kill().unwrap();
    restored_server.child.wait().unwrap();

    // The next backup into the same directory (of the stopped server) copies no file again.
    let second = cli_json(&config, &["backup", &backup_arg]);
    assert_eq!(second["server_was_running"], false, "{second}");
    assert_eq!((second["media"]["files"].as_u64(), second["media"]["copied"].as_u64()), (Some(1), Some(0)));
}

#[tokio::test]
async fn the_command_line_administers_a_running_server_through_its_socket() {
    let (dir, config, mut server) = server_in_new_dir("").await;
    let client = Client::new(server.addr);
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = bob.create_room(json!({ "name": "Flood" })).await;

    use std::os::unix::fs::PermissionsExt;
    let socket = dir.path().join("db").join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's account may use the operators' socket");

    let stats = cli_json(&config, &["debug", "storage-stats"]);
    let trees = stats["trees"].as_array().unwrap();
    assert!(trees.iter().any(|tree| tree["name"] == "eventid_pdu" && tree["entries"].as_u64() > Some(0)), "{stats}");
    assert!(cli_ok(&config, &["debug", "storage-stats"]).contains("on disk:"));

    let users = cli_json(&config, &["user", "list"]);
    assert_eq!(users["total"], 2, "{users}");
    let listed = cli_ok(&config, &["user", "list", "--search", "bo"]);
    assert!(listed.contains("@bob:proc.test") && !listed.contains("@alice"), "{listed}");

    cli_ok(&config, &["user", "make-admin", "bob"]);
    let details = alice.client.get("/_synapse/admin/v2/users/@bob:proc.test").await;
    assert_eq!(details.assert_ok()["admin"], true);
    cli_ok(&config, &["user", "make-admin", "@bob:proc.test", "--revoke"]);
    let details = alice.client.get("/_synapse/admin/v2/users/@bob:proc.test").await;
    assert_eq!(details.assert_ok()["admin"], false);

    let token = cli_json(&config, &["user", "login-token", "bob"]);
    let as_bob = client.with_token(token["access_token"].as_str().unwrap());
    assert_eq!(as_bob.get("/_matrix/client/v3/account/whoami").await.assert_ok()["user_id"], "@bob:proc.test");

    let rooms = cli_ok(&config, &["room", "list"]);
    assert!(rooms.contains(&room) && rooms.contains("\"Flood\""), "{rooms}");
    let info = cli_json(&config, &["room", "info", &room]);
    assert_eq!((info["name"].as_str(), info["joined_members"].as_u64()), (Some("Flood"), Some(1)), "{info}");
    for n in 0..3 {
        bob.send_text(&room, &format!("flood{n}"), "flood").await;
    }
    let kept = cli_ok(&config, &["room", "purge-history", &room, "--days", "0"]);
    assert!(kept.contains("0 events") && kept.contains("--local-events"), "{kept}");
    let purged = cli_json(&config, &["room", "purge-history", &room, "--days", "0", "--local-events"]);
    assert_eq!(purged["purged_events"], 2, "every message but the latest: {purged}");

    let shut = cli_ok(&config, &["room", "shutdown", &room, "--block"]);
    assert!(shut.contains("1 local members removed; it is blocked"), "{shut}");
    bob.join(&room).await.assert_error(403, "M_FORBIDDEN");

    let file = upload(&bob, b"bob's file").await;
    let download = format!("/_matrix/client/v1/media/download/{}", file.trim_start_matches("mxc://"));
    let status = |client: Client| {
        let download = download.clone();
        async move { client.send_raw("GET", &download, &[], Bytes::new()).await.unwrap().0 }
    };
    let quarantined = cli_ok(&config, &["media", "quarantine", &file]);
    assert!(quarantined.contains("is quarantined"), "{quarantined}");
    assert_eq!(status(alice.client.clone()).await, 404);
    cli_ok(&config, &["media", "quarantine", &file, "--release"]);
    assert_eq!(status(alice.client.clone()).await, 200);
    let by_user = cli_json(&config, &["media", "quarantine", "--user", "bob"]);
    assert_eq!(by_user["num_quarantined"], 1, "{by_user}");
    assert_eq!(status(alice.client.clone()).await, 404);
    let purged = cli_ok(&config, &["media", "purge-remote", "--days", "0"]);
    assert!(purged.contains("0 cached items"), "{purged}");

    cli_ok(&config, &["user", "deactivate", "bob"]);
    client.login("bob", PASSWORD).await.assert_error(403, "M_USER_DEACTIVATED");

    // An unknown user is a clear failure (exit 1), not a crash.
    let missing = run_cli(&config, &["user", "deactivate", "ghost"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("M_NOT_FOUND"), "{missing:?}");

    // The socket stands in for an admin's token on the admin endpoints only.
    let operator = conduit::http::operator_socket::OperatorClient::new(socket);
    let answer = operator.send("GET", "/_synapse/admin/v2/users", None).await.unwrap();
    assert_eq!(answer.status, 200);
    let answer = operator.send("GET", "/_matrix/client/v3/account/whoami", None).await.unwrap();
    assert_eq!((answer.status, answer.json()["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    // Over the network, the backup is for server admins only.
    let carol = client.register("carol").await;
    carol.client.get("/_conduit/admin/v1/backup").await.assert_error(403, "M_FORBIDDEN");
    client.get("/_conduit/admin/v1/backup").await.assert_error(401, "M_MISSING_TOKEN");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
