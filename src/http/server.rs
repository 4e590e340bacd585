//! Listeners, connections and the request loop.
//!
//! - Every configured listener is bound before any is served; a failure to bind
//!   stops start-up.
//! - TLS listeners negotiate HTTP/2 or HTTP/1.1 by ALPN; plain ones speak both
//!   (HTTP/2 with prior knowledge).
//! - A semaphore caps open connections across listeners; at the cap, new
//!   connections wait in the kernel's backlog.
//! - Slow clients are bounded: the TLS handshake and request headers must
//!   arrive within `request_timeout_secs`, and the body within the same again
//!   (media uploads, streamed to their handler: no more than that between two
//!   pieces of the body, however long the whole upload takes). A connection
//!   with no request in flight is dropped when it misses its deadline
//!   ([`super::connection`]): idle, half an HTTP/2 preface, headers sent a
//!   byte at a time, or a keep-alive connection unused for
//!   `keepalive_timeout_secs`.
//! - Each request runs in its own task, so a handler panic becomes a 500 and a
//!   client hanging up does not cancel a write half-way.
//! - Shutdown stops accepting, lets in-flight requests finish (bounded), then
//!   flushes storage.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tracing::{field::Empty, Instrument};

use super::{
    connection::{Activity, TrackedBody},
    request::{parse_query, BodyStream, Chunk, Method, Request},
    response::{into_hyper, preflight, HyperBody, Response},
    router::{self, Match},
    tls::{ReloadableCertificate, TlsError},
};
use crate::{
    api,
    error::{Error, ErrorKind, Result},
    services::Services,
};

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Tls(TlsError),
    Bind { address: SocketAddr, error: std::io::Error },
    OperatorSocket { path: std::path::PathBuf, error: std::io::Error },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "TLS configuration: {e}"),
            Self::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            Self::OperatorSocket { path, error } => {
                write!(f, "cannot create the operators' socket {} (admin_socket): {error}", path.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A running server.
pub struct ServerHandle {
    pub local_addrs: Vec<SocketAddr>,
    /// The metrics listener's address, when `[metrics]` is set.
    pub metrics_addr: Option<SocketAddr>,
    certificates: Vec<Arc<ReloadableCertificate>>,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
    graceful: Arc<GracefulShutdown>,
    services: Arc<Services>,
}

pub(super) struct Shared {
    services: Arc<Services>,
    builder: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    request_timeout: Duration,
    max_body: usize,
    /// Limit of streamed bodies (media uploads).
    max_streamed_body: u64,
    /// How long an idle keep-alive connection is kept.
    keepalive_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<super::client_address::Network>,
}

/// Binds every listener and starts serving.
pub async fn start(services: Arc<Services>) -> Result<ServerHandle, StartError> {
    let config = &services.config;
    let mut bound = Vec::new();
    let mut certificates = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let acceptor = match &listener.tls {
            Some(tls) => {
                let certificate =
                    ReloadableCertificate::load(&format!("listeners[{i}].tls"), tls).map_err(StartError::Tls)?;
                let acceptor = TlsAcceptor::from(certificate.server_config().map_err(StartError::Tls)?);
                certificates.push(certificate);
                Some(acceptor)
            }
            None => None,
        };
        let socket = TcpListener::bind(listener.address)
            .await
            .map_err(|error| StartError::Bind { address: listener.address, error })?;
        bound.push((socket, acceptor));
    }
    let metrics_socket = match &config.metrics {
        Some(metrics) => Some(
            TcpListener::bind(metrics.address)
                .await
                .map_err(|error| StartError::Bind { address: metrics.address, error })?,
        ),
        None => None,
    };
    let operator_path = config.admin_socket_path();
    let operator_socket = super::operator_socket::bind(&operator_path)
        .map_err(|error| StartError::OperatorSocket { path: operator_path.clone(), error })?;

    let request_timeout = Duration::from_secs(config.request_timeout_secs);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(request_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(100);
    let shared = Arc::new(Shared {
        services: Arc::clone(&services),
        builder,
        connections: Arc::new(Semaphore::new(config.max_connections)),
        request_timeout,
        max_body: usize::try_from(config.max_request_size).unwrap_or(usize::MAX),
        max_streamed_body: config.max_upload_size(),
        trusted_proxies: config.trusted_proxy_networks(),
        keepalive_timeout: Duration::from_secs(config.keepalive_timeout_secs),
    });

    let (stop, stopped) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let mut listeners = JoinSet::new();
    let mut local_addrs = Vec::new();
    for (socket, acceptor) in bound {
        let address = socket.local_addr().map_err(|error| StartError::Bind { address: socket_addr(&socket), error })?;
        tracing::info!(%address, tls = acceptor.is_some(), "listening");
        local_addrs.push(address);
        listeners.spawn(accept_loop(socket, acceptor, Arc::clone(&shared), Arc::clone(&graceful), stopped.clone()));
    }
    let mut metrics_addr = None;
    if let Some(socket) = metrics_socket {
        let address = socket.local_addr().map_err(|error| StartError::Bind { address: socket_addr(&socket), error })?;
        tracing::info!(%address, "metrics listening");
        metrics_addr = Some(address);
        listeners.spawn(super::metrics_listener::serve(socket, Arc::clone(&services), stopped.clone()));
    }
    tracing::info!(path = %operator_path.display(), "operators' socket listening");
    listeners.spawn(super::operator_socket::serve(
        operator_socket,
        operator_path,
        Arc::clone(&shared),
        Arc::clone(&graceful),
        stopped.clone(),
    ));
    Ok(ServerHandle { local_addrs, metrics_addr, certificates, stop, listeners, graceful, services })
}

fn socket_addr(socket: &TcpListener) -> SocketAddr {
    socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl ServerHandle {
    /// Re-reads every TLS certificate and key (SIGHUP). A listener whose new
    /// files are bad keeps its old certificate; the first error is returned.
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        let mut first_error = None;
        for certificate in &self.certificates {
            if let Err(error) = certificate.reload() {
                tracing::error!(%error, "certificate reload failed; keeping the previous one");
                first_error.get_or_insert(error);
            }
        }
        if first_error.is_none() {
            tracing::info!(count = self.certificates.len(), "certificates reloaded");
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Stops accepting, waits for in-flight requests (bounded), flushes storage.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        let graceful = Arc::try_unwrap(self.graceful).unwrap_or_default();
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections were still open after the grace period");
        }
        // The search words still waiting, so that the next start has none to redo.
        if let Err(error) = self.services.rooms.flush_search_queue() {
            tracing::warn!(%error, "could not write the waiting search words");
        }
        if let Err(error) = self.services.storage.shutdown() {
            tracing::error!(%error, "final storage flush failed");
        }
        tracing::info!("stopped");
    }
}

async fn accept_loop(
    socket: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&shared.connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => match tokio::time::timeout(shared.request_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(&shared, watcher, tls, peer, Via::Network).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => serve_connection(&shared, watcher, stream, peer, Via::Network).await,
            }
            drop(permit);
        });
    }
}

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// A configured listener: clients and servers, authenticated per request.
    Network,
    /// The operators' socket ([`super::operator_socket`]).
    OperatorSocket,
}

/// Serves the requests of one connection until it ends or idles past its
/// deadline ([`super::connection`]).
pub(super) async fn serve_connection<S>(
    shared: &Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    peer: SocketAddr,
    via: Via,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(shared.request_timeout, shared.keepalive_timeout);
    let service = service_fn(|request| {
        let in_flight = activity.begin();
        let shared = Arc::clone(shared);
        async move {
            let response = handle(shared, request, peer, via).await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight)))
        }
    });
    let served = watcher.watch(shared.builder.serve_connection(TokioIo::new(stream), service));
    match activity.watch(served).await {
        (Some(Err(error)), _) => tracing::debug!(%peer, %error, "connection ended with an error"),
        (None, _) => tracing::debug!(%peer, "idle connection closed"),
        (Some(Ok(())), _) => {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    via: Via,
) -> Result<http::Response<HyperBody>, Infallible> {
    let started = Instant::now();
    let method = Method::parse(request.method().as_str());
    let path = request.uri().path().to_owned();
    let forwarded_for = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let client = super::client_address::client_address(peer.ip(), forwarded_for, &shared.trusted_proxies);
    let span = tracing::info_span!("request", method = request.method().as_str(), path = %path, %client, user = Empty);
    // Routed once: the endpoint serves both the request and its metrics label.
    let found = router::find(api::routes(), method, &path);
    let endpoint = endpoint_label(method, &found);
    // A refusal that leaves the body unread closes an HTTP/1 connection
    // (the rest of the body would be read as the next request): say so.
    let http1_with_body = request.version() < http::Version::HTTP_2 && has_body(request.headers());
    let unrouted = !matches!(found, Match::Found { .. });
    // A streamed body (an upload) is read by its handler: a refusal may
    // come before it read anything (a bad token, a forbidden upload).
    let streamed = matches!(&found, Match::Found { endpoint, .. } if endpoint.streams_body());
    let response = async {
        let response = if method == Method::Options {
            preflight()
        } else {
            process(&shared, request, method, found, path, client, via).await.unwrap_or_else(Response::from)
        };
        shared.services.metrics.observe_request(&endpoint, response.status, started.elapsed());
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if response.status >= 500 {
            tracing::warn!(status = response.status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status = response.status, elapsed_ms, "request");
        }
        response
    }
    .instrument(span.clone())
    .await;
    let body_unread = unrouted || response.status == 413 || (streamed && response.status >= 400);
    let mut response = into_hyper(response);
    if http1_with_body && body_unread {
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// Whether a request announces a body.
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// The endpoint a request is counted under in the metrics (a bounded set:
/// the endpoints' names, and one name for everything else).
fn endpoint_label(method: Method, found: &Match<api::Endpoint>) -> String {
    match found {
        Match::Found { endpoint, .. } => format!("{endpoint:?}"),
        _ if method == Method::Options => "Preflight".to_owned(),
        _ => "Unrecognized".to_owned(),
    }
}

async fn process(
    shared: &Shared,
    request: hyper::Request<Incoming>,
    method: Method,
    found: Match<api::Endpoint>,
    path: String,
    client: std::net::IpAddr,
    via: Via,
) -> Result<Response> {
    let (endpoint, params) = match found {
        Match::Found { endpoint, params } => (endpoint, params),
        Match::MethodNotAllowed => {
            return Err(Error::new(ErrorKind::MethodNotAllowed, "This endpoint does not support this method"))
        }
        Match::NotFound => return Err(Error::new(ErrorKind::UnrecognizedEndpoint, "Unrecognized request")),
    };
    let raw_query = request.uri().query().map(str::to_owned);
    let query = raw_query.as_deref().map(parse_query).unwrap_or_default();
    let authorization =
        request.headers().get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let access_token = bearer_token(request.headers())
        .or_else(|| query.iter().find(|(key, _)| key == "access_token").map(|(_, value)| value.clone()));
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let header = |name: http::header::HeaderName| {
        request.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let (range, accept_language) = (header(http::header::RANGE), header(http::header::ACCEPT_LANGUAGE));
    let (body, body_stream) = if endpoint.streams_body() {
        (Bytes::new(), Some(stream_body(shared, request)?))
    } else {
        (read_body(shared, request, endpoint.max_body(shared.max_body as u64)).await?, None)
    };
    let client_ip = client.to_string();
    let request = Request {
        method,
        path,
        params,
        query,
        raw_query,
        authorization,
        body,
        body_stream,
        content_type,
        range,
        accept_language,
        client_ip,
        access_token,
        operator: via == Via::OperatorSocket,
    };
    let services = Arc::clone(&shared.services);
    let task = tokio::spawn(api::dispatch(services, endpoint, request).in_current_span());
    task.await.unwrap_or_else(|join_error| Err(Error::internal("request handler", join_error)))
}

fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn too_large(limit: u64) -> Error {
    Error::new(ErrorKind::TooLarge, format!("The request body exceeds {limit} bytes"))
}

/// Refuses at once a body whose declared length is over `limit`.
fn check_declared_length(request: &hyper::Request<Incoming>, limit: u64) -> Result<()> {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Hands the body to the handler as it arrives: a task reads it (so that
/// the client's `Expect: 100-continue` is answered only once the handler
/// reads), passing chunks through a small channel (backpressure), with the
/// size limit and an idle timeout between chunks rather than for the whole
/// body (large files on slow links).
fn stream_body(shared: &Shared, request: hyper::Request<Incoming>) -> Result<BodyStream> {
    let limit = shared.max_streamed_body;
    check_declared_length(&request, limit)?;
    let idle_timeout = shared.request_timeout;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut body = request.into_body();
    tokio::spawn(async move {
        let mut total: u64 = 0;
        let last = loop {
            let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
                Err(_) => break Chunk::Failed(Error::new(ErrorKind::RequestTimeout, "The request body stalled")),
                Ok(None) => break Chunk::End,
                Ok(Some(Err(error))) => {
                    break Chunk::Failed(Error::bad_json(format!("Could not read the request body: {error}")))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            total += data.len() as u64;
            if total > limit {
                break Chunk::Failed(too_large(limit));
            }
            if sender.send(Chunk::Data(data)).await.is_err() {
                return; // the handler stopped reading
            }
        };
        let _ = sender.send(last).await;
    });
    Ok(BodyStream::new(receiver))
}

async fn read_body(shared: &Shared, request: hyper::Request<Incoming>, limit: u64) -> Result<Bytes> {
    check_declared_length(&request, limit)?;
    let too_large = || too_large(limit);
    let limited = Limited::new(request.into_body(), usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(shared.request_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(Error::bad_json(format!("Could not read the request body: {error}"))),
        Err(_) => Err(Error::new(ErrorKind::RequestTimeout, "The request body was not received in time")),
    }
}
