//! A real Synapse (the reference homeserver, pinned on PyPI) as a federation
//! peer on loopback.
//!
//! The venv is made on first use under the target directory (like the Node
//! packages of `tests/clients`): `python3 -m venv` plus `pip install
//! matrix-synapse==SYNAPSE_VERSION`, about half a minute. Needs Python 3.10+
//! with the `venv` module. Each [`SynapsePeer`] runs in its own temporary
//! directory with SQLite, a TLS listener for federation (and clients) and a
//! plain one for clients, trusting the test CA for outbound federation.
//!
//! Self-contained (no harness types): `benches/federation.rs` includes this
//! file too.

use std::{
    fs,
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Synapse release the tests federate with.
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// How long a peer may take to answer `/_matrix/client/versions`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The venvs made so far in this process, by directory name.
static VENVS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// `CARGO_TARGET_DIR`, or `<crate>/target`: the parent of the per-build
/// `CARGO_TARGET_TMPDIR` Cargo gives integration tests (`<target>/tmp`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).filter(|d| d.is_absolute()) {
        return dir;
    }
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The file a finished install leaves in a venv: it names what was installed.
fn marker_name(packages: &[&str]) -> String {
    let name = packages.join("-").replace(['=', '<', '>', '/'], "_");
    if name.len() <= 120 {
        return format!("installed-{name}");
    }
    // A long pin list (a requirements file): its FNV-1a hash, to stay a valid file name.
    let hash = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    format!("installed-{hash:016x}")
}

/// The venv with Synapse installed, made on first use.
pub fn venv() -> PathBuf {
    python_venv("synapse-venv", &[&format!("matrix-synapse=={SYNAPSE_VERSION}")])
}

/// A Python venv under the target directory named `name`, with `packages`
/// (pinned) installed, made on first use.
///
/// Concurrent test processes are safe: each installs into a private
/// directory, writes the marker file there once pip has finished, and renames
/// the whole directory into place; a process that loses the race drops its
/// copy. A venv is only ever used through `bin/python -m ...` (entry-point
/// scripts keep the absolute path of the directory they were installed in).
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let mut made = VENVS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, dir)) = made.iter().find(|(made_name, _)| made_name == name) {
        return dir.clone();
    }
    let target = target_dir();
    let dir = target.join(name);
    if !dir.join(marker_name(packages)).exists() {
        install(&target, &dir, packages);
    }
    made.push((name.to_owned(), dir.clone()));
    dir
}

fn install(target: &Path, dir: &Path, packages: &[&str]) {
    let marker = marker_name(packages);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    fs::create_dir_all(target).unwrap_or_else(|e| panic!("create {}: {e}", target.display()));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let staging = target.join(format!("{name}.tmp-{}-{nanos}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    eprintln!("installing {} into {} (once)", packages.join(" "), dir.display());
    let output = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&staging)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("python3 (3.10 or newer, with venv) is needed for {}: {e}", packages.join(" ")));
    if !output.status.success() {
        let _ = fs::remove_dir_all(&staging);
        panic!(
            "python3 -m venv {} failed ({}):\n{}{}",
            staging.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = Command::new(staging.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run pip in {}: {e}", staging.display()));
    if !output.status.success() {
        let _ = fs::remove_dir_all(&staging);
        panic!(
            "pip install {} failed ({}):\n{}{}",
            packages.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::write(staging.join(&marker), "").expect("write the venv's marker file");
    if dir.exists() && !dir.join(&marker).exists() {
        // A venv of other packages (or a broken one): move it aside first.
        let old = target.join(format!("{name}.old-{}-{nanos}", std::process::id()));
        if fs::rename(dir, &old).is_ok() {
            let _ = fs::remove_dir_all(&old);
        }
    }
    if fs::rename(&staging, dir).is_err() {
        // Another process put its venv in place first; use that one.
        let _ = fs::remove_dir_all(&staging);
        assert!(dir.join(&marker).exists(), "could not move the venv into place at {}", dir.display());
    }
}

/// A port for Synapse to bind later: taken below the kernel's ephemeral
/// range (where other sockets, bound to port 0, never land), once per run.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(0, 25_000 + (std::process::id() % 4_000) as u16, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A Synapse process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct SynapsePeer {
    /// `localhost:<port of the TLS listener>` (federation and client API,
    /// certificate for `localhost`).
    pub server_name: String,
    /// The plain HTTP listener (client API only).
    pub client_port: u16,
    dir: TempDir,
    child: Child,
}

/// Starts a Synapse whose TLS listener presents `cert_pem_path`/`key_pem_path`
/// (a certificate for DNS `localhost`) and which trusts only the CA in
/// `ca_pem_path` for outbound federation, with `extra_yaml` appended to its
/// `homeserver.yaml` (a key given again there replaces the earlier value).
/// Returns once its client API answers.
pub async fn start_with(
    cert_pem_path: &Path,
    key_pem_path: &Path,
    ca_pem_path: &Path,
    extra_yaml: &str,
) -> SynapsePeer {
    let venv = tokio::task::spawn_blocking(venv).await.expect("install Synapse");
    let dir = tempfile::tempdir().expect("temporary directory");
    let client_port = free_port();
    let federation_port = free_port();
    let server_name = format!("localhost:{federation_port}");
    let path = |name: &str| dir.path().join(name).display().to_string();

    fs::write(dir.path().join("signing.key"), signing_key()).expect("write signing.key");
    fs::write(dir.path().join("log.yaml"), log_config(&path("homeserver.log"))).expect("write log.yaml");
    let config = homeserver_yaml(
        &server_name,
        client_port,
        federation_port,
        dir.path(),
        &absolute(cert_pem_path),
        &absolute(key_pem_path),
        &absolute(ca_pem_path),
    );
    fs::write(dir.path().join("homeserver.yaml"), format!("{config}{extra_yaml}\n")).expect("write homeserver.yaml");

    let stdout = fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
    let stderr = fs::File::create(dir.path().join("stderr.log")).expect("create stderr.log");
    let started = Instant::now();
    let child = Command::new(venv.join("bin/python"))
        .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start Synapse from {}: {e}", venv.display()));
    let mut peer = SynapsePeer { server_name, client_port, dir, child };
    peer.wait_ready(started).await;
    peer
}

impl SynapsePeer {
    /// The plain client listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The server's temporary directory (`homeserver.yaml`, `homeserver.log`, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of Synapse's log, then of its stderr if it wrote any.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = tail(&self.dir.path().join("homeserver.log"), lines);
        let stderr = tail(&self.dir.path().join("stderr.log"), lines);
        if !stderr.trim().is_empty() {
            text.push_str("\n--- stderr ---\n");
            text.push_str(&stderr);
        }
        text
    }

    async fn wait_ready(&mut self, started: Instant) {
        let request = format!(
            "GET /_matrix/client/versions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.client_port
        );
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited during start-up ({status}):\n{}", self.log_tail(60));
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "Synapse did not answer /_matrix/client/versions within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(60)
                );
            }
            let attempt = async {
                let mut stream = tokio::net::TcpStream::connect(self.client_addr()).await.ok()?;
                stream.write_all(request.as_bytes()).await.ok()?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response).await.ok()?;
                Some(response)
            };
            if let Ok(Some(response)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                if response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SynapsePeer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let mut bytes = Vec::new();
    if fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).is_err() {
        return format!("({} unreadable)", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// A fresh ed25519 signing key in Synapse's format: `ed25519 <version> <seed, unpadded base64>`.
fn signing_key() -> String {
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)).expect("read /dev/urandom");
    format!("ed25519 a_test {}\n", STANDARD_NO_PAD.encode(seed))
}

/// Python logging configuration: INFO and above to `file`, unbuffered.
fn log_config(file: &str) -> String {
    format!(
        "version: 1\n\
         formatters:\n  \
           precise:\n    \
             format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'\n\
         handlers:\n  \
           file:\n    \
             class: logging.FileHandler\n    \
             formatter: precise\n    \
             filename: {file:?}\n    \
             encoding: utf8\n\
         loggers:\n  \
           synapse.storage.SQL:\n    \
             level: INFO\n  \
           synapse.handlers.federation_event:\n    \
             level: DEBUG\n  \
           synapse.event_auth:\n    \
             level: DEBUG\n\
         root:\n  \
           level: INFO\n  \
           handlers: [file]\n\
         disable_existing_loggers: false\n"
    )
}

/// The rate limits raised so tests never meet a 429.
const NO_RATE_LIMIT: &str = "{per_second: 100000, burst_count: 1000000}";

fn homeserver_yaml(
    server_name: &str,
    client_port: u16,
    federation_port: u16,
    dir: &Path,
    cert: &str,
    key: &str,
    ca: &str,
) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let rc = NO_RATE_LIMIT;
    format!(
        "server_name: {server_name:?}\n\
         report_stats: false\n\
         listeners:\n  \
           - port: {federation_port}\n    \
             bind_addresses: ['127.0.0.1']\n    \
             type: http\n    \
             tls: true\n    \
             x_forwarded: false\n    \
             resources:\n      \
               - names: [client, federation]\n        \
                 compress: false\n  \
           - port: {client_port}\n    \
             bind_addresses: ['127.0.0.1']\n    \
             type: http\n    \
             tls: false\n    \
             x_forwarded: false\n    \
             resources:\n      \
               - names: [client]\n        \
                 compress: false\n\
         tls_certificate_path: {cert:?}\n\
         tls_private_key_path: {key:?}\n\
         federation_verify_certificates: true\n\
         federation_custom_ca_list: [{ca:?}]\n\
         ip_range_whitelist: ['127.0.0.0/8', '::1/128']\n\
         trusted_key_servers: []\n\
         suppress_key_server_warning: true\n\
         database:\n  \
           name: sqlite3\n  \
           args:\n    \
             database: {db:?}\n\
         signing_key_path: {signing_key:?}\n\
         log_config: {log_config:?}\n\
         media_store_path: {media:?}\n\
         macaroon_secret_key: 'test macaroon secret'\n\
         form_secret: 'test form secret'\n\
         registration_shared_secret: 'test registration secret'\n\
         enable_registration: true\n\
         enable_registration_without_verification: true\n\
         bcrypt_rounds: 4\n\
         presence:\n  \
           enabled: false\n\
         allow_public_rooms_over_federation: true\n\
         federation:\n  \
           destination_min_retry_interval: 1000\n  \
           destination_max_retry_interval: 10000\n  \
           max_long_retry_delay: 5000\n\
         rc_message: {rc}\n\
         rc_registration: {rc}\n\
         rc_registration_token_validity: {rc}\n\
         rc_login:\n  \
           address: {rc}\n  \
           account: {rc}\n  \
           failed_attempts: {rc}\n\
         rc_admin_redaction: {rc}\n\
         rc_joins:\n  \
           local: {rc}\n  \
           remote: {rc}\n\
         rc_joins_per_room: {rc}\n\
         rc_key_requests: {rc}\n\
         rc_3pid_validation: {rc}\n\
         rc_invites:\n  \
           per_room: {rc}\n  \
           per_user: {rc}\n  \
           per_issuer: {rc}\n\
         rc_third_party_invite: {rc}\n\
         rc_media_create: {rc}\n\
         rc_presence:\n  \
           per_user: {rc}\n\
         rc_delayed_event_mgmt: {rc}\n\
         rc_room_creation: {rc}\n\
         rc_reports: {rc}\n\
         rc_user_directory: {rc}\n\
         rc_profile: {rc}\n\
         rc_federation:\n  \
           window_size: 1000\n  \
           sleep_limit: 100000\n  \
           sleep_delay: 1\n  \
           reject_limit: 100000\n  \
           concurrent: 1000\n\
         federation_rr_transactions_per_room_per_second: 100000\n",
        db = path("homeserver.db"),
        signing_key = path("signing.key"),
        log_config = path("log.yaml"),
        media = path("media_store"),
    )
}
