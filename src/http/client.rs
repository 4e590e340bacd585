//! Outgoing HTTP: the one place the server calls other services (push
//! gateways, pages previewed for clients; federation peers later).
//!
//! HTTP/1.1 over TCP, or over TLS (rustls, ring provider) checked against the
//! system's trusted roots plus an optional extra CA bundle — the usual case of
//! a ministry's own certificate authority. Idle connections are kept per
//! origin and reused. Every request has an overall deadline and a bounded
//! response body.
//!
//! Addresses: unless private destinations are allowed, a host that resolves
//! only to loopback, private, link-local, shared (CGNAT), multicast or
//! unspecified addresses is refused, so that a user-supplied URL (a pusher's)
//! cannot make the server probe its own network. The check is made on the
//! resolved address actually connected to, so a name cannot change between
//! check and use.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use rustls::{crypto::ring::default_provider, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest a whole request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a TCP connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Response bodies larger than this are refused (gateways answer a few bytes).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 8;

/// Why an outgoing request did not get a response.
#[derive(Debug)]
pub enum ClientError {
    InvalidUrl(String),
    /// The destination resolves only to addresses this server may not call.
    DeniedAddress(String),
    Connect(String),
    Tls(String),
    Http(String),
    Timeout,
    /// The response body was larger than this many bytes.
    ResponseTooLarge(usize),
}

/// What to send.
struct Outgoing {
    method: http::Method,
    body: Option<Bytes>,
    max_response: usize,
    authorization: Option<String>,
}

/// A request to another server: its URL names the server (the `Host`
/// header and the name its certificate is checked for); `connect_to`, when
/// given, is where to connect instead (`host:port`, as server discovery or
/// a static map says).
pub struct ServerRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub connect_to: Option<&'a str>,
    pub authorization: Option<String>,
    pub json_body: Option<Vec<u8>>,
    pub max_response: usize,
}

impl ServerRequest<'_> {
    /// Where it goes and what is sent.
    fn prepare(self) -> Result<(Target, Outgoing), ClientError> {
        let mut target = Target::parse(self.url)?;
        if let Some(address) = self.connect_to {
            target = target.connecting_to(address)?;
        }
        let method = http::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| ClientError::InvalidUrl(format!("method {}", self.method)))?;
        let outgoing = Outgoing {
            method,
            body: self.json_body.map(Bytes::from),
            max_response: self.max_response,
            authorization: self.authorization,
        };
        Ok((target, outgoing))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "invalid URL: {reason}"),
            Self::DeniedAddress(host) => write!(f, "{host} resolves only to private or local addresses"),
            Self::Connect(reason) => write!(f, "could not connect: {reason}"),
            Self::Tls(reason) => write!(f, "TLS: {reason}"),
            Self::Http(reason) => write!(f, "HTTP: {reason}"),
            Self::Timeout => f.write_str("no response in time"),
            Self::ResponseTooLarge(limit) => write!(f, "response larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A response: status, the headers callers use, and the whole body.
#[derive(Debug)]
pub struct ClientResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// `Location` of a redirection.
    pub location: Option<String>,
    pub body: Bytes,
}

/// The response headers callers use.
#[derive(Debug, Clone, Default)]
pub struct ResponseHeaders {
    pub content_type: Option<String>,
    /// `Location` of a redirection.
    pub location: Option<String>,
    pub content_disposition: Option<String>,
}

impl ResponseHeaders {
    fn of<B>(response: &http::Response<B>) -> Self {
        let header = |name: http::header::HeaderName| {
            response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
        };
        Self {
            content_type: header(http::header::CONTENT_TYPE),
            location: header(http::header::LOCATION),
            content_disposition: header(http::header::CONTENT_DISPOSITION),
        }
    }
}

/// A response whose body is read a chunk at a time, before a deadline.
pub struct StreamedResponse {
    pub status: u16,
    pub headers: ResponseHeaders,
    body: Incoming,
    deadline: tokio::time::Instant,
    /// Held until the body is read (the connection is not reused after).
    _connection: SendRequest<Full<Bytes>>,
}

impl StreamedResponse {
    /// The next bytes of the body; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            let frame =
                tokio::time::timeout_at(self.deadline, self.body.frame()).await.map_err(|_| ClientError::Timeout)?;
            match frame {
                None => return Ok(None),
                Some(Err(error)) => return Err(ClientError::Http(error.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The rest of the body, at most `max` bytes (an error's JSON).
    pub async fn read_to_end(mut self, max: usize) -> Result<Bytes, ClientError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if body.len() + chunk.len() > max {
                return Err(ClientError::ResponseTooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }
}

/// Where and how the client may connect.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicy {
    /// Allow loopback and private destinations (an air-gapped network's gateway).
    pub allow_private_addresses: bool,
    /// PEM certificates trusted in addition to the system's roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Skip certificate checks (tests only; `federation.verify_certificates`).
    pub skip_certificate_checks: bool,
}

/// The destination of a URL.
struct Target {
    https: bool,
    /// The host of the URL: the `Host` header, the name the certificate is checked for.
    host: String,
    port: u16,
    /// Where to connect, when not the URL's host and port.
    connect_to: Option<(String, u16)>,
    /// `host[:port]`, for the `Host` header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ClientError> {
        let uri: http::Uri = url.parse().map_err(|e| ClientError::InvalidUrl(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ClientError::InvalidUrl("the scheme must be http or https".to_owned())),
        };
        let authority = uri.authority().ok_or_else(|| ClientError::InvalidUrl("no host".to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(ClientError::InvalidUrl("credentials in URLs are not supported".to_owned()));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self { https, host, port, connect_to: None, authority: authority.as_str().to_owned(), path_and_query })
    }

    /// Connect to `host:port` instead of the URL's own.
    fn connecting_to(mut self, address: &str) -> Result<Self, ClientError> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_start_matches('[').trim_end_matches(']'), port.parse().ok()?)))
            .ok_or_else(|| ClientError::InvalidUrl(format!("{address} is not host:port")))?;
        self.connect_to = Some((host.to_owned(), port));
        Ok(self)
    }

    /// Where TCP goes.
    fn connect_host_port(&self) -> (&str, u16) {
        match &self.connect_to {
            Some((host, port)) => (host.as_str(), *port),
            None => (self.host.as_str(), self.port),
        }
    }

    /// Connections are reused per (scheme, name, address connected to).
    fn origin(&self) -> String {
        let (host, port) = self.connect_host_port();
        format!("{}://{}@{host}:{port}", if self.https { "https" } else { "http" }, self.host)
    }
}

/// True for addresses that are not on the public internet.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [first, second, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || first == 0
                || (first == 100 && (64..128).contains(&second))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private_address(IpAddr::V4(v4)))
        }
    }
}

pub struct HttpClient {
    policy: ClientPolicy,
    /// Built on the first https request (reading the system roots takes a while).
    tls: OnceLock<Result<TlsConnector, String>>,
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

impl HttpClient {
    pub fn new(policy: ClientPolicy) -> Self {
        Self { policy, tls: OnceLock::new(), idle: Mutex::new(HashMap::new()) }
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<ClientResponse, ClientError> {
        let target = Target::parse(url)?;
        let request = Outgoing {
            method: http::Method::POST,
            body: Some(Bytes::from(body)),
            max_response: MAX_RESPONSE_BYTES,
            authorization: None,
        };
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(&target, request)).await.map_err(|_| ClientError::Timeout)?
    }

    /// `GET url` (redirections are returned, not followed), with a response
    /// body of at most `max_response` bytes.
    pub async fn get(&self, url: &str, max_response: usize) -> Result<ClientResponse, ClientError> {
        let target = Target::parse(url)?;
        let request = Outgoing { method: http::Method::GET, body: None, max_response, authorization: None };
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(&target, request)).await.map_err(|_| ClientError::Timeout)?
    }

    /// A request to another server (see [`ServerRequest`]).
    pub async fn server_request(&self, request: ServerRequest<'_>) -> Result<ClientResponse, ClientError> {
        let (target, outgoing) = request.prepare()?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(&target, outgoing)).await.map_err(|_| ClientError::Timeout)?
    }

    async fn send(&self, target: &Target, outgoing: Outgoing) -> Result<ClientResponse, ClientError> {
        let max_response = outgoing.max_response;
        let (sender, origin, response) = self.start(target, outgoing).await?;
        let status = response.status().as_u16();
        let headers = ResponseHeaders::of(&response);
        let body = Limited::new(response.into_body(), max_response).collect().await.map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ClientError::ResponseTooLarge(max_response)
            } else {
                ClientError::Http(error.to_string())
            }
        })?;
        self.keep_idle(origin, sender);
        Ok(ClientResponse {
            status,
            content_type: headers.content_type,
            location: headers.location,
            body: body.to_bytes(),
        })
    }

    /// Sends a request; the connection, its origin and the response head.
    async fn start(
        &self,
        target: &Target,
        outgoing: Outgoing,
    ) -> Result<(SendRequest<Full<Bytes>>, String, http::Response<Incoming>), ClientError> {
        let origin = target.origin();
        let mut sender = match self.idle_connection(&origin) {
            Some(sender) => sender,
            None => self.connect(target).await?,
        };
        let mut request = http::Request::builder()
            .method(outgoing.method)
            .uri(target.path_and_query.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::USER_AGENT, concat!("conduit/", env!("CARGO_PKG_VERSION")));
        if outgoing.body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(authorization) = &outgoing.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization.as_str());
        }
        let request = request
            .body(Full::new(outgoing.body.unwrap_or_default()))
            .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
        sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| ClientError::Http(e.to_string()))?;
        Ok((sender, origin, response))
    }

    /// A request to another server whose answer is read as it arrives (a
    /// remote file): the whole exchange must end within `time`.
    pub async fn server_request_streamed(
        &self,
        request: ServerRequest<'_>,
        time: Duration,
    ) -> Result<StreamedResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + time;
        let (target, outgoing) = request.prepare()?;
        let started = tokio::time::timeout_at(deadline, self.start(&target, outgoing));
        let (connection, _, response) = started.await.map_err(|_| ClientError::Timeout)??;
        let headers = ResponseHeaders::of(&response);
        Ok(StreamedResponse {
            status: response.status().as_u16(),
            headers,
            body: response.into_body(),
            deadline,
            _connection: connection,
        })
    }

    /// `GET url` read as it arrives (a file another server redirects to).
    pub async fn get_streamed(&self, url: &str, time: Duration) -> Result<StreamedResponse, ClientError> {
        let request = ServerRequest {
            method: "GET",
            url,
            connect_to: None,
            authorization: None,
            json_body: None,
            max_response: 0,
        };
        self.server_request_streamed(request, time).await
    }

    /// Refuses a URL that this client would never call: invalid, or whose
    /// host resolves only to addresses it may not connect to. A host that
    /// does not resolve now passes (it may later).
    pub async fn check_destination(&self, url: &str) -> Result<(), ClientError> {
        let target = Target::parse(url)?;
        if self.policy.allow_private_addresses {
            return Ok(());
        }
        let Ok(resolved) = tokio::net::lookup_host((target.host.as_str(), target.port)).await else { return Ok(()) };
        let resolved: Vec<SocketAddr> = resolved.collect();
        if !resolved.is_empty() && resolved.iter().all(|address| is_private_address(address.ip())) {
            return Err(ClientError::DeniedAddress(target.host));
        }
        Ok(())
    }

    fn idle_connection(&self, origin: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.get_mut(origin)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn keep_idle(&self, origin: String, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.entry(origin).or_default();
        if senders.len() < MAX_IDLE_PER_ORIGIN {
            senders.push(sender);
        }
    }

    /// Resolves, checks the addresses, connects (TLS if https) and starts an
    /// HTTP/1.1 connection.
    async fn connect(&self, target: &Target) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream = self.tcp_connect(target).await?;
        if target.https {
            let connector = self.tls_connector()?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| ClientError::InvalidUrl(format!("host {}: {e}", target.host)))?;
            let tls = connector.connect(name, stream).await.map_err(|e| ClientError::Tls(e.to_string()))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(stream)).await
        }
    }

    async fn tcp_connect(&self, target: &Target) -> Result<TcpStream, ClientError> {
        let (host, port) = target.connect_host_port();
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ClientError::Connect(format!("resolving {host}: {e}")))?
            .collect();
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|address| self.policy.allow_private_addresses || !is_private_address(address.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(if resolved.is_empty() {
                ClientError::Connect(format!("{} has no address", target.host))
            } else {
                ClientError::DeniedAddress(target.host.clone())
            });
        }
        let mut last_error = String::new();
        for address in allowed {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last_error = format!("{address}: {error}"),
                Err(_) => last_error = format!("{address}: timed out"),
            }
        }
        Err(ClientError::Connect(last_error))
    }

    fn tls_connector(&self) -> Result<TlsConnector, ClientError> {
        self.tls.get_or_init(|| build_tls(&self.policy)).clone().map_err(ClientError::Tls)
    }
}

async fn handshake<Io>(io: TokioIo<Io>) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "outgoing connection ended with an error");
        }
    });
    Ok(sender)
}

/// The TLS client configuration: system roots plus the extra CA file.
fn build_tls(policy: &ClientPolicy) -> Result<TlsConnector, String> {
    if policy.skip_certificate_checks {
        tracing::warn!("outgoing TLS does not check certificates (federation.verify_certificates = false)");
        let provider = Arc::new(default_provider());
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        return Ok(TlsConnector::from(Arc::new(config)));
    }
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "could not read some system certificates");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = &policy.extra_ca_file {
        let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
        let (valid, invalid) = roots.add_parsable_certificates(extra);
        if valid == 0 || invalid > 0 {
            return Err(format!(
                "the CA file {} holds {valid} usable and {invalid} unusable certificates",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("no trusted certificate authority (no system roots and no CA file)".to_owned());
    }
    tracing::debug!(system_roots = added, "outgoing TLS configured");
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate (the signatures of the handshake are still
/// checked). Only for `federation.verify_certificates = false` in tests.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "193.51.24.1", "100.128.0.1", "2001:4860::8888", "::ffff:8.8.8.8"] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_parsed_and_checked() {
        let target = Target::parse("https://push.example.gouv.fr/_matrix/push/v1/notify").unwrap();
        assert!(target.https);
        assert_eq!((target.host.as_str(), target.port), ("push.example.gouv.fr", 443));
        assert_eq!(target.path_and_query, "/_matrix/push/v1/notify");
        let v6 = Target::parse("http://[::1]:8080/x?y=1").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path_and_query.as_str()), ("::1", 8080, "/x?y=1"));
        assert!(Target::parse("ftp://example.org/").is_err());
        assert!(Target::parse("http://user:pw@example.org/").is_err());
        assert!(Target::parse("/relative").is_err());
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let client = HttpClient::new(ClientPolicy::default());
        let refused = client.post_json("http://127.0.0.1:9/_matrix/push/v1/notify", b"{}".to_vec()).await;
        assert!(matches!(refused, Err(ClientError::DeniedAddress(_))), "{refused:?}");
        let allowed = HttpClient::new(ClientPolicy { allow_private_addresses: true, ..ClientPolicy::default() });
        // Port 9 (discard) is closed here: the connection is attempted and fails.
        let attempted = allowed.post_json("http://127.0.0.1:9/_matrix/push/v1/notify", b"{}".to_vec()).await;
        assert!(matches!(attempted, Err(ClientError::Connect(_))), "{attempted:?}");
    }
}
