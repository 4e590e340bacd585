//! Test harness: a real server on 127.0.0.1:0 with a temporary database, and
//! a small HTTP client that speaks to it over real sockets.

use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use conduit::{config::Config, http, services::Services};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;

pub const PASSWORD: &str = "correct horse battery staple";

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    handle: Option<http::ServerHandle>,
}

/// The configuration tests start from: open registration, loopback, any port.
pub fn base_config(dir: &Path, extra: &str) -> String {
    format!(
        "server_name = \"test.local\"\ndatabase_path = {:?}\ndatabase_cache_mb = 8\nregistration = \"open\"\n{extra}\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n",
        dir.join("db").display().to_string()
    )
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts with extra top-level configuration keys.
    pub async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let text = base_config(dir.path(), extra);
        Self::start_in(dir, &text).await
    }

    /// Starts with a complete configuration text, in `dir`.
    pub async fn start_in(dir: TempDir, config_text: &str) -> Self {
        // Server logs at `warn` (or CONDUIT_TEST_LOG) show with a failing test's output.
        let filter = std::env::var("CONDUIT_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
        let config = Config::from_toml_with_env(config_text, Vec::new()).expect("test configuration");
        let services = Services::open(config).expect("open storage");
        let handle = http::start(services).await.expect("start server");
        let addr = handle.local_addrs[0];
        Self { addr, dir, handle: Some(handle) }
    }

    pub fn handle(&self) -> &http::ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    pub fn services(&self) -> Arc<Services> {
        Arc::clone(self.handle().services())
    }

    /// Shuts down gracefully and hands back the data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        self.dir
    }

    /// Restarts on the same database (a new port).
    pub async fn restart(self) -> Self {
        let text = base_config(self.dir.path(), "");
        self.restart_with(&text).await
    }

    pub fn client(&self) -> Client {
        Client { addr: self.addr, token: None, source: None }
    }
}

/// The answer to a request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts the status and errcode of an error reply.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!((self.status, self.errcode()), (status, errcode), "body: {}", self.body);
        assert!(self.body["error"].is_string(), "errors carry a message: {}", self.body);
    }

    /// [`Reply::assert_ok`], handing back the reply itself.
    #[track_caller]
    pub fn assert_ok_ref(&self) -> &Self {
        self.assert_ok();
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "body: {}", self.body);
        &self.body
    }
}

#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
    /// The local address connections come from (another loopback address
    /// stands for another client machine); any when unset.
    pub source: Option<std::net::IpAddr>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, token: None, source: None }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client { addr: self.addr, token: Some(token.to_owned()), source: self.source }
    }

    /// The same client connecting from `source` (such as `127.0.0.2`).
    pub fn connecting_from(&self, source: &str) -> Client {
        Client { source: Some(source.parse().expect("an IP address")), ..self.clone() }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, &[], Bytes::from(body.to_string())).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send("PUT", path, &[], Bytes::from(body.to_string())).await
    }

    pub async fn delete(&self, path: &str, body: Value) -> Reply {
        self.send("DELETE", path, &[], Bytes::from(body.to_string())).await
    }

    /// Sends any request; the client's token goes in the Authorization header.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
        self.try_send(method, path, headers, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Client::send`] that reports transport failures instead of panicking.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let (status, headers, bytes) = self.send_raw(method, path, headers, body).await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|_| format!("response is not JSON: {}", String::from_utf8_lossy(&bytes)))?
        };
        Ok(Reply { status, headers, body })
    }

    /// One request; the response's status, headers and raw body.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, ::http::HeaderMap, Bytes), String> {
        let stream = match self.source {
            None => TcpStream::connect(self.addr).await,
            Some(source) => {
                let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
                socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
                socket.connect(self.addr).await
            }
        }
        .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let mut request = ::http::Request::builder().method(method).uri(path).header("host", "test.local");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("request: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("response: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, headers, bytes))
    }

    /// Registers `names` and puts them all in a new public room created by the
    /// first: the sessions, in order, and the room id.
    pub async fn public_room_with<const N: usize>(&self, names: [&str; N]) -> ([Session; N], String) {
        let mut sessions = Vec::with_capacity(N);
        for name in names {
            sessions.push(self.register(name).await);
        }
        let room = sessions[0].create_room(json!({ "preset": "public_chat" })).await;
        for member in &sessions[1..] {
            member.join(&room).await.assert_ok();
        }
        let sessions: [Session; N] = sessions.try_into().unwrap_or_else(|_| unreachable!("N sessions"));
        (sessions, room)
    }

    /// Registers `username` with the default password (open registration,
    /// dummy auth) and returns a client logged in as them.
    pub async fn register(&self, username: &str) -> Session {
        let reply = self
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": username, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        Session::from_reply(self, reply.assert_ok())
    }

    pub async fn login(&self, user: &str, password: &str) -> Reply {
        self.post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password }),
        )
        .await
    }
}

/// A logged-in user.
#[derive(Clone)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub client: Client,
}

impl Session {
    /// `POST /createRoom`, expecting success; the room id.
    pub async fn create_room(&self, body: Value) -> String {
        let reply = self.client.post("/_matrix/client/v3/createRoom", body).await;
        reply.assert_ok()["room_id"].as_str().expect("room_id").to_owned()
    }

    /// `POST /rooms/{roomId}/join`.
    pub async fn join(&self, room: &str) -> Reply {
        self.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), json!({})).await
    }

    /// `POST /rooms/{roomId}/invite` of `user`.
    pub async fn invite(&self, room: &str, user: &str) -> Reply {
        self.client.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room)), json!({ "user_id": user })).await
    }

    /// `POST /rooms/{roomId}/leave`.
    pub async fn leave(&self, room: &str) -> Reply {
        self.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room)), json!({})).await
    }

    /// Sends an `m.room.message` with `content`.
    pub async fn send_message(&self, room: &str, txn: &str, content: Value) -> Reply {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        self.client.put(&path, content).await
    }

    /// Sends an `m.room.message` with `content`, expecting success; the event id.
    pub async fn send_content(&self, room: &str, txn: &str, content: Value) -> String {
        let reply = self.send_message(room, txn, content).await;
        reply.assert_ok()["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sends a text message, expecting success; the event id.
    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> String {
        let reply = self.send_message(room, txn, json!({ "msgtype": "m.text", "body": body })).await;
        reply.assert_ok()["event_id"].as_str().expect("event_id").to_owned()
    }

    pub fn from_reply(client: &Client, body: &Value) -> Self {
        let token = body["access_token"].as_str().expect("access_token").to_owned();
        Session {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            client: client.with_token(&token),
            token,
        }
    }

    /// The user-interactive password stage for `session`.
    pub fn password_auth(&self, session: &str) -> Value {
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": self.user_id },
            "password": PASSWORD,
            "session": session,
        })
    }
}

impl TestServer {
    /// Restarts on the same database with a given configuration text.
    pub async fn restart_with(self, config_text: &str) -> Self {
        let dir = self.stop().await;
        Self::start_in(dir, config_text).await
    }
}

/// The path of a room's state event `(kind, state_key)`.
pub fn state_path(room: &str, kind: &str, state_key: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(state_key))
}

/// Percent-encodes a Matrix id (room, event, user, alias) for a URL path.
pub fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('!', "%21")
        .replace('$', "%24")
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('#', "%23")
}

/// Percent-encodes JSON for a query parameter (filters).
pub fn enc_json(value: &Value) -> String {
    value
        .to_string()
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The bodies of the `m.room.message` events of a JSON array of events.
pub fn message_bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("an array of events")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}
