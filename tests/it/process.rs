//! The real binary as a process: crash durability under SIGKILL, graceful
//! shutdown on SIGTERM, configuration refusals, and the operator commands.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::json;

use crate::harness::{Client, PASSWORD};

const BINARY: &str = env!("CARGO_BIN_EXE_conduit");

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running conduit process, killed if a test ends (or fails) without stopping it.
pub(crate) struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("conduit.toml");
    let text = format!(
        "server_name = \"proc.test\"\ndatabase_path = {:?}\nregistration = \"open\"\nlog = \"warn\"\n{extra}\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n",
        dir.join("db").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A new data directory, its configuration (with `extra`) and a server
/// running on it.
pub(crate) async fn server_in_new_dir(extra: &str) -> (tempfile::TempDir, PathBuf, Process) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, extra);
    let server = spawn_server(&config, port).await;
    (dir, config, server)
}

pub(crate) async fn spawn_server(config: &Path, port: u16) -> Process {
    spawn_server_logging_to(config, port, Stdio::inherit()).await
}

async fn spawn_server_logging_to(config: &Path, port: u16, stderr: Stdio) -> Process {
    let child = Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn conduit");
    let process = Process { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = Client::new(process.addr);
        if let Ok(reply) = client.try_send("GET", "/_matrix/client/versions", &[], Bytes::new()).await {
            if reply.status == 200 {
                return process;
            }
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn run_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BINARY).arg("--config").arg(config).args(args).stdin(Stdio::null()).output().expect("run conduit")
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();

    for round in 0..3 {
        let mut server = spawn_server(&config, port).await;
        let client = Client::new(server.addr);
        // Writers keep registering accounts while the process is killed under them.
        let mut writers = Vec::new();
        for writer in 0..4 {
            let client = client.clone();
            let acknowledged = Arc::clone(&acknowledged);
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("r{round}w{writer}n{i}");
                    let body = json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" }, "inhibit_login": true });
                    let body = Bytes::from(body.to_string());
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.try_send("POST", "/_matrix/client/v3/register", &[], body),
                    );
                    match attempt.await {
                        Ok(Ok(reply)) if reply.status == 200 => acknowledged.lock().unwrap().push(name),
                        _ => return,
                    }
                }
            }));
        }
        let target = (round + 1) * 12;
        while acknowledged.lock().unwrap().len() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    let names = acknowledged.lock().unwrap().clone();
    assert!(names.len() >= 36);
    for name in &names {
        let reply = client.get(&format!("/_matrix/client/v3/register/available?username={name}")).await;
        reply.assert_error(400, "M_USER_IN_USE");
    }
    // A few full logins too (password hashes intact, not just keys).
    for name in names.iter().step_by(names.len() / 4) {
        client.login(name, PASSWORD).await.assert_ok();
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A push queued with an acknowledged message survives SIGKILL and goes out
/// once the server is back.
#[tokio::test]
async fn a_queued_push_survives_sigkill() {
    use crate::push_gateway::{set_pusher, Gateway, ALLOW_LOCAL_GATEWAYS};
    let gateway = Gateway::start().await;
    gateway.set_failing(true);
    let (_dir, config, mut server) = server_in_new_dir(ALLOW_LOCAL_GATEWAYS).await;
    let port = server.addr.port();
    let client = Client::new(server.addr);
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    set_pusher(&bob, "phone-key", json!({ "url": gateway.url() })).await;
    let event = alice.send_text(&room, "t1", "avant la panne").await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    gateway.set_failing(false);
    let mut server = spawn_server(&config, port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The gateway failed every attempt before the kill: a delivery comes from the restarted server.
    while !gateway.delivered().iter().any(|r| r["notification"]["event_id"] == event.as_str()) {
        assert!(Instant::now() < deadline, "the push never arrived after the restart: {:?}", gateway.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// An acknowledged upload is whole after SIGKILL: the file and its record.
#[tokio::test]
async fn an_acknowledged_upload_survives_sigkill() {
    let (_dir, config, mut server) = server_in_new_dir("").await;
    let port = server.addr.port();
    let client = Client::new(server.addr);
    let alice = client.register("alice").await;
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let reply = alice
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "video/mp4")], Bytes::from(content.clone()))
        .await
        .unwrap();
    let uri = reply.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    let mut server = spawn_server(&config, port).await;
    let path = uri.replace("mxc://", "/_matrix/client/v1/media/download/");
    let (status, headers, body) = alice.client.send_raw("GET", &path, &[], Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "video/mp4");
    assert!(body[..] == content[..], "the file is whole after the crash");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let (_dir, config, mut server) = server_in_new_dir("").await;
    let port = server.addr.port();
    let client = Client::new(server.addr);
    client.register("graceful").await;
    let status = Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let mut server = spawn_server(&config, port).await;
    Client::new(server.addr).login("graceful", PASSWORD).await.assert_ok();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn json_logs_name_the_client_and_leave_out_auth_rule_chatter() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("conduit.toml");
    let text = format!(
        "server_name = \"proc.test\"\ndatabase_path = {:?}\nregistration = \"open\"\nlog = \"info\"\n\
         log_format = \"json\"\ntrusted_proxies = [\"127.0.0.1\"]\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n",
        dir.path().join("db").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let log_path = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut server = spawn_server_logging_to(&config, port, Stdio::from(log_file)).await;
    let alice = Client::new(server.addr).register("alice").await;
    let forwarded = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
    let reply = alice.client.send("POST", "/_matrix/client/v3/createRoom", &forwarded, Bytes::from("{}")).await;
    reply.assert_ok();
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let records: Vec<serde_json::Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| !r["target"].as_str().unwrap_or_default().starts_with("ruma_state_res")),
        "the auth rules' per-event lines are quiet at info: {log}"
    );
    let create = records
        .iter()
        .find(|r| r["fields"]["message"] == "request" && r["span"]["path"] == "/_matrix/client/v3/createRoom")
        .unwrap_or_else(|| panic!("a request line for createRoom: {log}"));
    assert_eq!(create["span"]["client"], "203.0.113.9", "the trusted proxy's client, not the forged first hop");
    let register = records
        .iter()
        .find(|r| r["fields"]["message"] == "request" && r["span"]["path"] == "/_matrix/client/v3/register")
        .unwrap_or_else(|| panic!("a request line for register: {log}"));
    assert_eq!(register["span"]["client"], "127.0.0.1");
}

#[tokio::test]
async fn invalid_configuration_exits_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        ("registraton = \"open\"", "registraton"),
        ("max_request_size = \"big\"", "max_request_size"),
        ("registration = \"token\"", "registration"),
        ("trusted_proxies = [\"10.0.0.0/99\"]", "trusted_proxies"),
        ("log_format = \"xml\"", "log_format"),
    ];
    for (extra, key) in cases {
        let config = write_config(dir.path(), port, extra);
        let output = Command::new(BINARY).arg("--config").arg(&config).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{extra}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "the message names `{key}`: {stderr}");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "the port was never taken");
    }

    let tls = format!(
        "server_name = \"proc.test\"\ndatabase_path = {:?}\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         tls = {{ certificate = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }}\n",
        dir.path().join("db").display().to_string()
    );
    let config = dir.path().join("tls.toml");
    std::fs::write(&config, tls).unwrap();
    let output = Command::new(BINARY).arg("--config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("listeners[0].tls.certificate"));

    let output = Command::new(BINARY).arg("--config").arg(dir.path().join("missing.toml")).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));

    let env_override = Command::new(BINARY)
        .arg("--config")
        .arg(write_config(dir.path(), port, ""))
        .env("CONDUIT_NO_SUCH_KEY", "1")
        .output()
        .unwrap();
    assert_eq!(env_override.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&env_override.stderr).contains("no_such_key"));
}

#[tokio::test]
async fn operator_commands_work_on_a_stopped_or_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");

    let created = run_cli(&config, &["user", "create", "Operator", "--admin", "--password", "op-pass"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("@operator:proc.test"));
    let generated = run_cli(&config, &["user", "create", "second"]);
    let stdout = String::from_utf8_lossy(&generated.stdout).to_string();
    let generated_password =
        stdout.lines().find_map(|l| l.strip_prefix("password: ")).expect("a generated password").to_owned();
    let duplicate = run_cli(&config, &["user", "create", "operator"]);
    assert!(!duplicate.status.success());

    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    client.login("operator", "op-pass").await.assert_ok();
    client.login("second", &generated_password).await.assert_ok();

    // While it runs, through its operators' socket.
    let reset = run_cli(&config, &["user", "reset-password", "operator", "--password", "mid-pass"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(String::from_utf8_lossy(&reset.stdout).contains("all its devices were logged out"));
    client.login("operator", "op-pass").await.assert_error(403, "M_FORBIDDEN");
    client.login("operator", "mid-pass").await.assert_ok();
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let reset = run_cli(&config, &["user", "reset-password", "@operator:proc.test", "--password", "new-pass"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let missing = run_cli(&config, &["user", "reset-password", "ghost", "--password", "x"]);
    assert!(!missing.status.success());

    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    client.login("operator", "mid-pass").await.assert_error(403, "M_FORBIDDEN");
    client.login("operator", "new-pass").await.assert_ok();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn config_check_validates_and_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "registration_shared_secret = \"sup3r-s3cret\"\n[[registration_tokens]]\ntoken = \"t0ken-s3cret\"\n\
                 [email]\nsmtp_url = \"smtps://mailer:pa55word@mail.example.org\"\nfrom = \"noreply@proc.test\"\n";
    let config = write_config(dir.path(), free_port(), extra);
    let checked = run_cli(&config, &["config", "check"]);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(stdout.contains("proc.test") && stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("smtps://mailer:<hidden>@mail.example.org:465"), "the effective SMTP URL: {stdout}");
    for secret in ["sup3r-s3cret", "t0ken-s3cret", "pa55word"] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }

    let broken = write_config(dir.path(), free_port(), "max_connections = 0\n");
    let refused = run_cli(&broken, &["config", "check"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("max_connections"));
}

#[tokio::test]
async fn operators_renew_and_expire_accounts_on_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = "[email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"noreply@proc.test\"\n\
                 [account_validity]\nperiod_days = 30\nrenew_before_days = [7]\n";
    let config = write_config(dir.path(), port, extra);
    let cli = |args: &[&str]| {
        let output = run_cli(&config, args);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(cli(&["user", "create", "operator", "--admin", "--password", "op-pass"]).0);
    assert!(cli(&["user", "create", "agent", "--password", "agent-pass"]).0);
    let (ok, out, err) = cli(&["user", "expire", "agent"]);
    assert!(ok && out.contains("agent has expired"), "{out}{err}");

    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    let agent = client.login("agent", "agent-pass").await;
    let agent = client.with_token(agent.assert_ok()["access_token"].as_str().unwrap());
    agent.get("/_matrix/client/v3/account/whoami").await.assert_error(403, "ORG_MATRIX_EXPIRED_ACCOUNT");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let (ok, out, err) = cli(&["user", "renew", "agent", "--days", "90"]);
    assert!(ok && out.contains("agent is valid until"), "{out}{err}");
    assert!(!cli(&["user", "renew", "ghost"]).0);
    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    let agent = client.login("agent", "agent-pass").await;
    let agent = client.with_token(agent.assert_ok()["access_token"].as_str().unwrap());
    agent.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_the_old_one_published() {
    let (_dir, config, mut server) = server_in_new_dir("").await;
    let port = server.addr.port();
    let client = Client::new(server.addr);
    let before = client.get("/_matrix/key/v2/server").await;
    let old_id = before.assert_ok()["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    let old_key = before.body["verify_keys"][&old_id]["key"].clone();
    let refused = run_cli(&config, &["server", "rotate-key"]);
    assert!(!refused.status.success(), "refused while the server runs");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let rotated = run_cli(&config, &["server", "rotate-key"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(String::from_utf8_lossy(&rotated.stdout).contains(&old_id));
    let mut server = spawn_server(&config, port).await;
    let after = Client::new(server.addr).get("/_matrix/key/v2/server").await;
    let document = after.assert_ok();
    let new_id = document["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert_ne!(new_id, old_id);
    assert_eq!(document["old_verify_keys"][&old_id]["key"], old_key, "{document}");
    assert!(document["old_verify_keys"][&old_id]["expired_ts"].as_u64().is_some());
    // The document verifies with the new key.
    let key = document["verify_keys"][&new_id]["key"].as_str().unwrap();
    let object = document.as_object().unwrap().clone();
    conduit::crypto::json_signatures::verify(&object, "proc.test", &new_id, key).unwrap();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn starts_with_no_configuration_on_the_development_default() {
    let dir = tempfile::tempdir().unwrap();
    // The default listens on 127.0.0.1:6167; skip if something else holds it.
    if TcpListener::bind("127.0.0.1:6167").is_err() {
        eprintln!("port 6167 is busy; skipping the embedded-default test");
        return;
    }
    let child = Command::new(BINARY)
        .current_dir(dir.path())
        .env_remove("CONDUIT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], 6167));
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the default server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alice = Client::new(addr).register("alice").await;
    assert_eq!(alice.user_id, "@alice:localhost");
    assert!(dir.path().join("conduit-data").is_dir(), "data goes to ./conduit-data");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("development default"), "the first log lines say so: {stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate() {
    use crate::tls::{connector, peer_certificate, write_certificate};
    use rustls::pki_types::ServerName;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let old_pem = write_certificate(dir.path(), "live");
    let text = format!(
        "server_name = \"proc.test\"\ndatabase_path = {:?}\nlog = \"warn\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         tls = {{ certificate = {:?}, key = {:?} }}\n",
        dir.path().join("db").display().to_string(),
        dir.path().join("live.pem").display().to_string(),
        dir.path().join("live.key").display().to_string(),
    );
    let config = dir.path().join("conduit.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BINARY).arg("--config").arg(&config).stdin(Stdio::null()).spawn().unwrap();
    let process = Process { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };

    let handshake = |trusted: Vec<String>| async move {
        let refs: Vec<&str> = trusted.iter().map(String::as_str).collect();
        let tcp = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await.ok()?;
        let stream = connector(&refs, b"h2").connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
        Some(peer_certificate(&stream))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(certificate) = handshake(vec![old_pem.clone()]).await {
            break certificate;
        }
        assert!(Instant::now() < deadline, "the TLS server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let new_pem = write_certificate(dir.path(), "next");
    std::fs::rename(dir.path().join("next.pem"), dir.path().join("live.pem")).unwrap();
    std::fs::rename(dir.path().join("next.key"), dir.path().join("live.key")).unwrap();
    let status = Command::new("kill").arg("-HUP").arg(process.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(certificate) = handshake(vec![new_pem.clone()]).await {
            assert_ne!(certificate, first);
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not bring in the new certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(process);
}

/// Words of messages not yet written to the search index (they wait in
/// memory for a block write) are indexed again after SIGKILL; a message
/// redacted while its words waited stays out of the index.
#[tokio::test]
async fn acknowledged_messages_are_searchable_after_sigkill() {
    let (_dir, config, mut server) = server_in_new_dir("").await;
    let port = server.addr.port();
    let client = Client::new(server.addr);
    let ([alice, _bob], room) = client.public_room_with(["alice", "bob"]).await;
    let redact = |event_id: String, txn: &str| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
            crate::harness::enc(&room),
            crate::harness::enc(&event_id)
        );
        let client = alice.client.clone();
        async move {
            client.put(&path, json!({})).await.assert_ok();
        }
    };
    let stored = alice.send_text(&room, "t0", "ancienne adresse stockée").await;
    // A search writes the waiting words: this message's are stored, in blocks.
    let body = json!({ "search_categories": { "room_events": { "search_term": "stockée" } } });
    let before = alice.client.post("/_matrix/client/v3/search", body).await;
    assert_eq!(before.assert_ok()["search_categories"]["room_events"]["count"], 1);
    redact(stored, "r0").await;
    alice.send_text(&room, "t1", "avant la panne générale").await;
    let secret = alice.send_text(&room, "t2", "motdepasse confidentiel").await;
    redact(secret, "r1").await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    let mut server = spawn_server(&config, port).await;
    let client = Client::new(server.addr);
    let alice = crate::harness::Session::from_reply(&client, client.login("alice", PASSWORD).await.assert_ok());
    let search = |term: &str| {
        let body = json!({ "search_categories": { "room_events": { "search_term": term } } });
        let client = alice.client.clone();
        async move {
            client.post("/_matrix/client/v3/search", body).await.assert_ok()["search_categories"]["room_events"].clone()
        }
    };
    let found = search("panne").await;
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(found["results"][0]["result"]["content"]["body"], "avant la panne générale");
    assert_eq!(search("confidentiel").await["count"], 0, "the redacted message's waiting words");
    assert_eq!(search("stockée").await["count"], 0, "the redacted message's stored words");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
