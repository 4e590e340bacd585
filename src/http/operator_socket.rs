//! The operators' socket: a Unix socket (`admin_socket`, default `admin.sock`
//! in `database_path`) through which the command line reaches the running
//! server's admin API (`conduit user list`, `conduit backup`…).
//!
//! Whoever can open the socket is the server's administrator: it is created
//! with mode 0600, so only the server's own account (and root) can. Requests
//! on it need no access token for the admin endpoints; every other endpoint
//! behaves as on a network listener. The same connection limits and
//! deadlines apply ([`super::connection`]).
//!
//! [`OperatorClient`] is the command line's side: HTTP/1.1 over the socket.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
    sync::watch,
};

use super::server::{serve_connection, Shared, Via};

/// The address requests on the socket are logged and rate-limited under.
const SOCKET_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Binds the socket at `path`, replacing a stale one (the caller holds the
/// database, so no other server of this database is using it).
pub(super) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the socket until `stopped` changes, then removes it.
pub(super) async fn serve(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "operators' socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let watcher = graceful.watcher();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            serve_connection(&shared, watcher, stream, SOCKET_PEER, Via::OperatorSocket).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Why the command line could not use the socket.
#[derive(Debug)]
pub enum OperatorError {
    /// Nothing listens there: the server is not running.
    NotRunning,
    Failed(String),
}

impl std::fmt::Display for OperatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRunning => f.write_str("the server is not running"),
            Self::Failed(message) => f.write_str(message),
        }
    }
}

/// An answer of the running server.
pub struct OperatorReply {
    pub status: u16,
    pub body: Bytes,
}

impl OperatorReply {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The command line's connection to a running server.
pub struct OperatorClient {
    path: PathBuf,
}

impl OperatorClient {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, OperatorError> {
        let stream = match UnixStream::connect(&self.path).await {
            Ok(stream) => stream,
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
            {
                return Err(OperatorError::NotRunning)
            }
            Err(error) => {
                return Err(OperatorError::Failed(format!(
                    "cannot open the operators' socket {}: {error}",
                    self.path.display()
                )))
            }
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| OperatorError::Failed(format!("operators' socket: {error}")))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<hyper::Request<Full<Bytes>>, OperatorError> {
        let bytes = body.map(|body| Bytes::from(body.to_string())).unwrap_or_default();
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|error| OperatorError::Failed(format!("bad request {path}: {error}")))
    }

    /// Sends one request; the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<OperatorReply, OperatorError> {
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(Self::request(method, path, body)?)
            .await
            .map_err(|error| OperatorError::Failed(format!("the server did not answer {path}: {error}")))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| OperatorError::Failed(format!("reading the answer to {path}: {error}")))?
            .to_bytes();
        Ok(OperatorReply { status, body })
    }

    /// Sends a `GET` and writes a successful answer's body to `out` as it
    /// arrives; an error answer is returned whole instead.
    pub async fn download(&self, path: &str, out: &mut tokio::fs::File) -> Result<OperatorReply, OperatorError> {
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(Self::request("GET", path, None)?)
            .await
            .map_err(|error| OperatorError::Failed(format!("the server did not answer {path}: {error}")))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Ok(OperatorReply { status, body });
        }
        let failed = |error: &dyn std::fmt::Display| OperatorError::Failed(format!("receiving {path}: {error}"));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(&e))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await.map_err(|e| failed(&e))?;
            }
        }
        Ok(OperatorReply { status, body: Bytes::new() })
    }
}
