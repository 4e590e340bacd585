//! Where to reach another server (server-server API "Resolving server
//! names"), cached.
//!
//! In order: the static map `federation.destinations` (a network without
//! DNS: connect there, check the certificate for the server name); an IP
//! literal (with its port, or 8448); a hostname with an explicit port; the
//! delegation of `https://<hostname>/.well-known/matrix/server` (cached 24 h
//! or as long as the answer says, up to 48 h; failures 1 h), which names a
//! host and maybe a port; else the hostname on port 8448.
//!
//! Not yet: the SRV records (`_matrix-fed._tcp`, then `_matrix._tcp`), which
//! need a DNS client; a deployment that relies on them maps the names in
//! `federation.destinations` meanwhile.

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
}

impl Resolver {
    pub fn new(static_map: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { static_map: static_map.into_iter().collect(), well_known: Mutex::default() }
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
        match delegated.and_then(|name| ServerName::parse(&name).ok()) {
            Some(delegated) => explicit(&delegated).unwrap_or_else(|| on_default_port(delegated.host())),
            None => on_default_port(server.host()),
        }
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
