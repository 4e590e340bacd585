//! Where to reach another server (server-server API "Resolving server
//! names"), cached.
//!
//! In order: the static map `federation.destinations` (a network without
//! DNS: connect there, check the certificate for the server name); an IP
//! literal (with its port, or 8448); a hostname with an explicit port; the
//! delegation of `https://<hostname>/.well-known/matrix/server` (cached 24 h;
//! failures 1 h), which names a host and maybe a port — a delegated IP
//! literal or port is used as is, else the delegated host's SRV records;
//! without delegation, the hostname's SRV records; else port 8448. SRV
//! records are `_matrix-fed._tcp.<host>`, then the deprecated
//! `_matrix._tcp.<host>` (the lowest priority, then the highest weight; a
//! target of `.` means no service): the connection goes to the target, the
//! `Host` header and the certificate stay the host's. DNS through
//! `hickory-resolver` with the system's configuration (or
//! `federation.nameservers`), its cache honouring the records' TTLs; without
//! a usable DNS configuration, SRV is skipped.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::ServerName;
use serde_json::Value;

use crate::http::client::{HttpClient, ServerRequest};

/// The default federation port.
pub const DEFAULT_PORT: u16 = 8448;
/// How long a delegation (or its absence) is trusted without a cache header.
const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a failed `.well-known` lookup is remembered.
const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);
/// Largest `.well-known` document read.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;
/// Names remembered at most; beyond, the cache starts over.
const MAX_CACHED: usize = 10_000;

/// Where requests to a server go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `host[:port]` of the URL: the `Host` header and the name the
    /// certificate is checked for.
    pub authority: String,
    /// Where to connect when not `authority` itself (`host:port`).
    pub connect_to: Option<String>,
}

impl Destination {
    /// The URL of `path_and_query` at this destination.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.authority)
    }
}

/// The resolver and its cache.
pub struct Resolver {
    static_map: HashMap<String, String>,
    /// Server name → (delegation found, or none; until when it holds).
    well_known: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// SRV lookups (none without a DNS configuration).
    dns: Option<hickory_resolver::TokioResolver>,
    /// Host → SRV target found, or none; until when it holds (a network
    /// without DNS would otherwise wait for timeouts at every request).
    srv: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// How long an SRV answer (or its absence) is kept.
const SRV_TTL: Duration = Duration::from_secs(3600);

/// How long one DNS query may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

impl Resolver {
    pub fn new(static_map: impl IntoIterator<Item = (String, String)>) -> Self {
        Self::with_nameservers(static_map, &[])
    }

    /// A resolver asking `nameservers` (`ip:port`) for SRV records, or the
    /// system's when none are given.
    pub fn with_nameservers(static_map: impl IntoIterator<Item = (String, String)>, nameservers: &[String]) -> Self {
        Self {
            static_map: static_map.into_iter().collect(),
            well_known: Mutex::default(),
            dns: dns_client(nameservers),
            srv: Mutex::default(),
        }
    }

    /// Where to reach `server`, asking its `.well-known` through `client` when needed.
    pub async fn resolve(&self, client: &HttpClient, server: &ServerName) -> Destination {
        if let Some(address) = self.static_map.get(server.as_str()) {
            return Destination { authority: server.to_string(), connect_to: Some(address.clone()) };
        }
        if let Some(destination) = explicit(server) {
            return destination;
        }
        let delegated = self.delegation(client, server.host()).await;
        let host = match delegated.and_then(|name| ServerName::parse(&name).ok()) {
            Some(delegated) => match explicit(&delegated) {
                Some(destination) => return destination,
                None => delegated.host().to_owned(),
            },
            None => server.host().to_owned(),
        };
        match self.cached_srv_target(&host).await {
            Some(target) => Destination { authority: host, connect_to: Some(target) },
            None => on_default_port(&host),
        }
    }

    /// [`Self::srv_target`], remembered for [`SRV_TTL`].
    async fn cached_srv_target(&self, host: &str) -> Option<String> {
        let now = Instant::now();
        if let Some((target, until)) = self.srv.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            if *until > now {
                return target.clone();
            }
        }
        let target = self.srv_target(host).await;
        let mut cache = self.srv.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(host.to_owned(), (target.clone(), now + SRV_TTL));
        target
    }

    /// `target:port` of the host's SRV records, `_matrix-fed._tcp` first.
    async fn srv_target(&self, host: &str) -> Option<String> {
        let dns = self.dns.as_ref()?;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let query = format!("{service}.{host}.");
            let records = match tokio::time::timeout(DNS_TIMEOUT, dns.srv_lookup(query.as_str())).await {
                Ok(Ok(lookup)) => lookup,
                Ok(Err(error)) => {
                    tracing::debug!(%query, %error, "no SRV record");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%query, "SRV lookup timed out");
                    continue;
                }
            };
            let best = records
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv),
                    _ => None,
                })
                .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
            if let Some(srv) = best {
                let target = srv.target.to_ascii();
                let target = target.trim_end_matches('.');
                // A target of "." means the service is not offered here.
                return (!target.is_empty()).then(|| format!("{target}:{}", srv.port));
            }
        }
        None
    }

    /// The `m.server` of the host's `.well-known`, cached.
    async fn delegation(&self, client: &HttpClient, host: &str) -> Option<String> {
        let now = Instant::now();
        if let Some((delegated, until)) = self.cache().get(host) {
            if *until > now {
                return delegated.clone();
            }
        }
        let (delegated, ttl) = match fetch_well_known(client, host).await {
            Ok(delegated) => (delegated, WELL_KNOWN_TTL),
            Err(reason) => {
                tracing::debug!(%host, %reason, "no server delegation");
                (None, WELL_KNOWN_ERROR_TTL)
            }
        };
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(host.to_owned(), (delegated.clone(), now + ttl));
        delegated
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Instant)>> {
        self.well_known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A DNS client: the given name servers (UDP and TCP), or the system's.
fn dns_client(nameservers: &[String]) -> Option<hickory_resolver::TokioResolver> {
    use hickory_resolver::{
        config::{ConnectionConfig, NameServerConfig, ResolverConfig},
        net::runtime::TokioRuntimeProvider,
        TokioResolver,
    };
    let mut builder = if nameservers.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::info!(%error, "no DNS configuration: SRV records are not looked up");
                return None;
            }
        }
    } else {
        let servers = nameservers
            .iter()
            .filter_map(|server| server.parse::<std::net::SocketAddr>().ok())
            .map(|address| {
                let connection = |mut config: ConnectionConfig| {
                    config.port = address.port();
                    config
                };
                NameServerConfig::new(
                    address.ip(),
                    true,
                    vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())],
                )
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    builder.options_mut().timeout = DNS_TIMEOUT;
    builder.options_mut().attempts = 2;
    match builder.build() {
        Ok(resolver) => Some(resolver),
        Err(error) => {
            tracing::info!(%error, "no DNS client: SRV records are not looked up");
            None
        }
    }
}

/// An IP literal, or a name with an explicit port: no lookup needed.
fn explicit(server: &ServerName) -> Option<Destination> {
    let port = server.port();
    if server.is_ip_literal() {
        let authority = match port {
            Some(_) => server.to_string(),
            None => format!("{}:{DEFAULT_PORT}", server.host()),
        };
        return Some(Destination { authority, connect_to: None });
    }
    port.map(|_| Destination { authority: server.to_string(), connect_to: None })
}

fn on_default_port(host: &str) -> Destination {
    Destination { authority: format!("{host}:{DEFAULT_PORT}"), connect_to: None }
}

async fn fetch_well_known(client: &HttpClient, host: &str) -> Result<Option<String>, String> {
    let url = format!("https://{host}/.well-known/matrix/server");
    let request = ServerRequest {
        method: "GET",
        url: &url,
        connect_to: None,
        authorization: None,
        json_body: None,
        max_response: MAX_WELL_KNOWN_BYTES,
    };
    let response = client.server_request(request).await.map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Ok(None);
    }
    let document: Value = serde_json::from_slice(&response.body).map_err(|e| format!("not JSON: {e}"))?;
    Ok(document.get("m.server").and_then(Value::as_str).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ruma::OwnedServerName {
        ServerName::parse(text).unwrap()
    }

    #[tokio::test]
    async fn static_map_ip_literals_and_ports_need_no_lookup() {
        let resolver = Resolver::new([("culture.gouv.example".to_owned(), "10.0.0.7:8448".to_owned())]);
        let client = HttpClient::new(Default::default());
        let mapped = resolver.resolve(&client, &name("culture.gouv.example")).await;
        assert_eq!(
            mapped,
            Destination { authority: "culture.gouv.example".into(), connect_to: Some("10.0.0.7:8448".into()) }
        );
        let ip = resolver.resolve(&client, &name("192.0.2.5")).await;
        assert_eq!(ip.authority, "192.0.2.5:8448");
        let ipv6 = resolver.resolve(&client, &name("[2001:db8::1]:9000")).await;
        assert_eq!(ipv6.authority, "[2001:db8::1]:9000");
        let port = resolver.resolve(&client, &name("matrix.example.org:8000")).await;
        assert_eq!(port, Destination { authority: "matrix.example.org:8000".into(), connect_to: None });
        assert_eq!(
            port.url("/_matrix/federation/v1/version"),
            "https://matrix.example.org:8000/_matrix/federation/v1/version"
        );
    }

    /// A DNS server on loopback answering SRV questions from `records`
    /// (name → [(priority, weight, port, target)]), NXDOMAIN otherwise.
    /// (priority, weight, port, target) of one SRV record.
    type Srv = (u16, u16, u16, &'static str);

    async fn fake_dns(records: Vec<(&'static str, Vec<Srv>)>) -> String {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let query = &buffer[..length];
                // The question: labels from byte 12 to the root label, then type and class.
                let mut end = 12;
                let mut labels = Vec::new();
                while end < query.len() && query[end] != 0 {
                    let size = query[end] as usize;
                    labels.push(String::from_utf8_lossy(&query[end + 1..end + 1 + size]).to_lowercase());
                    end += 1 + size;
                }
                let question_end = end + 5;
                let name = labels.join(".");
                let answers = records.iter().find(|(n, _)| *n == name).map(|(_, a)| a.clone()).unwrap_or_default();
                let mut reply = query[..2].to_vec();
                reply.extend(if answers.is_empty() { [0x81, 0x83] } else { [0x81, 0x80] });
                reply.extend([0, 1, 0, answers.len() as u8, 0, 0, 0, 0]);
                reply.extend(&query[12..question_end]);
                for (priority, weight, port, target) in answers {
                    let mut rdata = Vec::new();
                    for value in [priority, weight, port] {
                        rdata.extend(value.to_be_bytes());
                    }
                    for label in target.split('.').filter(|l| !l.is_empty()) {
                        rdata.push(label.len() as u8);
                        rdata.extend(label.as_bytes());
                    }
                    rdata.push(0);
                    reply.extend([0xC0, 0x0C, 0, 33, 0, 1, 0, 0, 0, 60]);
                    reply.extend((rdata.len() as u16).to_be_bytes());
                    reply.extend(rdata);
                }
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn srv_records_are_followed_matrix_fed_first() {
        let dns = fake_dns(vec![
            (
                "_matrix-fed._tcp.interieur.example",
                vec![(20, 0, 9000, "backup.example."), (10, 5, 8449, "fed.interieur.example.")],
            ),
            ("_matrix._tcp.interieur.example", vec![(0, 0, 1111, "legacy.example.")]),
            ("_matrix._tcp.old.example", vec![(0, 0, 8450, "matrix.old.example.")]),
            ("_matrix-fed._tcp.closed.example", vec![(0, 0, 0, ".")]),
        ])
        .await;
        let resolver = Resolver::with_nameservers([], &[dns]);
        assert_eq!(resolver.srv_target("interieur.example").await.as_deref(), Some("fed.interieur.example:8449"));
        assert_eq!(resolver.srv_target("old.example").await.as_deref(), Some("matrix.old.example:8450"));
        assert_eq!(resolver.srv_target("closed.example").await, None, "a target of . offers no service");
        assert_eq!(resolver.srv_target("nothing.example").await, None);
    }

    #[tokio::test]
    async fn without_delegation_the_default_port_is_used_and_the_failure_cached() {
        let resolver = Resolver::new([]);
        // No server answers for this name (and private addresses are refused anyway).
        let client = HttpClient::new(Default::default());
        let destination = resolver.resolve(&client, &name("localhost")).await;
        assert_eq!(destination.authority, "localhost:8448");
        assert!(resolver.cache().contains_key("localhost"), "the failed lookup is remembered");
    }
}
