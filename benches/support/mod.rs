//! What the load tools share: one keep-alive HTTP/1.1 connection speaking
//! JSON, percent-encoding, registration through user-interactive auth, and
//! latency percentiles. Included by `load.rs` and `abuse.rs` with `mod support;`.

#![allow(dead_code)] // each tool uses its own part

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

pub type Result<T> = std::result::Result<T, String>;

/// One keep-alive HTTP/1.1 connection, authenticated or not.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    pub token: Option<String>,
}

impl Connection {
    pub async fn open(addr: SocketAddr, host: &str, token: Option<String>) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { sender, host: host.to_owned(), token })
    }

    pub async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let bytes = body.map(|b| Bytes::from(b.to_string()));
        self.call_raw(method, path, bytes).await
    }

    /// A request with a body given as bytes (not necessarily valid JSON).
    pub async fn call_raw(&mut self, method: &str, path: &str, body: Option<Bytes>) -> Result<(u16, Value)> {
        let mut request = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default())).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let response = self.sender.send_request(request).await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn ok(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {value}"));
        }
        Ok(value)
    }
}

#[derive(Clone)]
pub struct Account {
    pub token: String,
}

pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

impl Target {
    pub async fn connect(&self, account: Option<&Account>) -> Result<Connection> {
        Connection::open(self.addr, &self.host, account.map(|a| a.token.clone())).await
    }

    pub fn from_base_url(base_url: &str) -> Result<Target> {
        let rest = base_url.strip_prefix("http://").ok_or("only http:// base URLs are supported")?;
        let authority = rest.trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .map_err(|e| format!("resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {authority}"))?;
        Ok(Target { addr, host: authority.to_owned() })
    }
}

pub fn enc(text: &str) -> String {
    conduit::http::request::percent_encode(text)
}

/// Registers through user-interactive auth: first the flows, then a dummy
/// (or registration token) stage with the session. The answer's status and
/// body (200 with an access token, or the refusal).
pub async fn register_raw(
    target: &Target,
    username: &str,
    password: &str,
    registration_token: Option<&str>,
) -> Result<(u16, Value)> {
    let mut connection = target.connect(None).await?;
    let path = "/_matrix/client/v3/register";
    let mut body = json!({ "username": username, "password": password, "inhibit_login": false });
    let (status, reply) = connection.call("POST", path, Some(&body)).await?;
    if status != 401 {
        return Ok((status, reply));
    }
    let session = reply["session"].clone();
    if let Some(token) = registration_token {
        body["auth"] = json!({ "type": "m.login.registration_token", "token": token, "session": session });
        let (status, reply) = connection.call("POST", path, Some(&body)).await?;
        if status == 200 {
            return Ok((status, reply));
        }
    }
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    connection.call("POST", path, Some(&body)).await
}

/// [`register_raw`], expecting success.
pub async fn register(
    target: &Target,
    username: &str,
    password: &str,
    registration_token: Option<&str>,
) -> Result<Account> {
    let (status, reply) = register_raw(target, username, password, registration_token).await?;
    if status != 200 {
        return Err(format!("register {username}: {status} {reply}"));
    }
    let token = reply["access_token"].as_str().ok_or("no access_token")?.to_owned();
    Ok(Account { token })
}

pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// (count, p50, p99, max) of latency samples, in milliseconds.
pub fn summary(mut samples: Vec<Duration>) -> (usize, f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let max = samples.last().copied().unwrap_or_default();
    (samples.len(), ms(percentile(&samples, 0.5)), ms(percentile(&samples, 0.99)), ms(max))
}

pub fn report(name: &str, samples: Vec<Duration>) {
    let (n, p50, p99, max) = summary(samples);
    println!("{name:<34} n={n:<6} p50 {p50:>8.2} ms   p99 {p99:>8.2} ms   max {max:>8.2} ms");
}

pub fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}", nanos % 0xffff_ffff)
}

/// A conduit binary started by a tool, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` on `config` (written as `conduit.toml` in `dir`, which
/// lives as long as the process).
pub fn spawn_conduit(binary: &std::path::Path, config: &str, dir: tempfile::TempDir) -> Result<Process> {
    spawn_conduit_logging(binary, config, dir, std::process::Stdio::inherit())
}

/// [`spawn_conduit`] with the server's log (stderr) sent to `log`.
pub fn spawn_conduit_logging(
    binary: &std::path::Path,
    config: &str,
    dir: tempfile::TempDir,
    log: std::process::Stdio,
) -> Result<Process> {
    let config_path = dir.path().join("conduit.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    Ok(Process { child, _dir: dir })
}

/// A port nothing listens on now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits (10 s at most) until something listens on `addr`.
pub async fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("nothing listens on {addr}"))
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
