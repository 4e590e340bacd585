//! Real client libraries against the server: the Node project in
//! `tests/clients/` (pinned in its lockfile) is installed on first use and run
//! against a server started here.
//!
//! Needs Node.js 20+ and npm. Without them the test fails with a clear message;
//! set `CONDUIT_SKIP_CLIENT_TESTS=1` to skip it explicitly (it then says so).

use std::{path::PathBuf, process::Command, sync::Mutex};

use crate::harness::TestServer;

static INSTALL: Mutex<()> = Mutex::new(());

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn skip_requested() -> bool {
    std::env::var("CONDUIT_SKIP_CLIENT_TESTS").is_ok_and(|v| v == "1")
}

/// Installs the pinned packages unless they are already there.
fn ensure_installed() {
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let node = Command::new("node").arg("--version").output();
    match node {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "Node.js (20 or newer) is needed for the real-client tests in tests/clients; \
             install it, or set CONDUIT_SKIP_CLIENT_TESTS=1 to skip these tests explicitly"
        ),
    }
    let dir = clients_dir();
    if dir.join("node_modules/matrix-js-sdk/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm is needed to install the client test packages");
    assert!(status.success(), "npm ci in tests/clients failed");
}

/// Runs `script` with the servers' base URLs as its arguments; it must end
/// with "N passed, 0 failed".
async fn run_script(script: &str, base_urls: Vec<String>) {
    run_in(clients_dir(), "node".into(), script, base_urls).await;
}

/// Runs `program script args…` in `dir`; the script must succeed and end
/// with "N passed, 0 failed".
async fn run_in(dir: PathBuf, program: PathBuf, script: &str, args: Vec<String>) {
    let name = script.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program).arg(&name).args(&args).current_dir(&dir).output().expect("run the client script")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{script} failed:\n{stdout}");
    assert!(stdout.lines().any(|l| l.ends_with(" passed, 0 failed")), "{stdout}");
}

/// Installs the client packages if needed and runs `script` against a fresh server.
async fn run_client_script(script: &str) {
    if skip_requested() {
        eprintln!("CONDUIT_SKIP_CLIENT_TESTS=1: skipping {script} as asked");
        return;
    }
    tokio::task::spawn_blocking(ensure_installed).await.unwrap();
    let server = TestServer::start().await;
    run_script(script, vec![format!("http://{}", server.addr)]).await;
}

/// Installs the client packages if needed and runs `script` against a fresh
/// server started with `extra` configuration.
async fn run_client_script_with(script: &str, extra: &str) {
    if skip_requested() {
        eprintln!("CONDUIT_SKIP_CLIENT_TESTS=1: skipping {script} as asked");
        return;
    }
    tokio::task::spawn_blocking(ensure_installed).await.unwrap();
    let server = TestServer::start_with(extra).await;
    run_script(script, vec![format!("http://{}", server.addr)]).await;
}

/// Installs the client packages if needed and runs `script` against running
/// servers (several, for the federation scripts), named by their base URLs.
pub async fn run_client_script_against(script: &str, base_urls: Vec<String>) {
    if skip_requested() {
        eprintln!("CONDUIT_SKIP_CLIENT_TESTS=1: skipping {script} as asked");
        return;
    }
    tokio::task::spawn_blocking(ensure_installed).await.unwrap();
    run_script(script, base_urls).await;
}

#[tokio::test]
async fn matrix_js_sdk_registers_logs_in_and_manages_devices() {
    run_client_script("accounts.mjs").await;
}

#[tokio::test]
async fn matrix_js_sdk_creates_rooms_talks_and_moderates() {
    run_client_script("rooms.mjs").await;
}

#[tokio::test]
async fn matrix_js_sdk_old_client_session_and_ignoring_a_user() {
    run_client_script("reading.mjs").await;
}

/// matrix-nio (PyPI, pinned with its dependencies in
/// `tests/clients/nio/requirements.txt`, in a venv made on first use).
#[tokio::test]
async fn matrix_nio_old_client_session_and_ignoring_a_user() {
    if skip_requested() {
        eprintln!("CONDUIT_SKIP_CLIENT_TESTS=1: skipping the matrix-nio script as asked");
        return;
    }
    let dir = clients_dir().join("nio");
    let requirements = std::fs::read_to_string(dir.join("requirements.txt")).expect("read the nio requirements");
    let pins: Vec<String> = requirements.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let venv = tokio::task::spawn_blocking(move || {
        let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
        crate::synapse::python_venv("nio-venv", &pins)
    })
    .await
    .unwrap();
    let server = TestServer::start().await;
    run_in(dir, venv.join("bin/python"), "reading.py", vec![format!("http://{}", server.addr)]).await;
}

#[tokio::test]
async fn matrix_js_sdk_creates_a_dm_a_private_room_and_a_forum_under_the_public_sector_rules() {
    run_client_script_with("policy.mjs", "[policy]\naccess_rules = true\nexternal_servers = [\"externes.example\"]\n")
        .await;
}

#[tokio::test]
async fn matrix_js_sdk_rust_crypto_encrypts_cross_signs_and_restores_backups() {
    run_client_script("e2ee.mjs").await;
}

#[tokio::test]
async fn matrix_js_sdk_registers_logs_in_finds_and_invites_by_work_email() {
    let smtp = crate::smtp::SmtpServer::start(crate::smtp::Options::default()).await;
    let server = TestServer::start_with(&format!("{}\n[email_identity]\n", smtp.email_config())).await;
    let mail_dir = smtp.mail_dir().display().to_string();
    run_client_script_against("identity.mjs", vec![format!("http://{}", server.addr), mail_dir]).await;
}
