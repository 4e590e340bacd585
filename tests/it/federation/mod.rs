//! Federation between real servers in one test: each on its own TLS
//! listener with a certificate from a test CA made here, server names mapped
//! to their ports by `federation.destinations`, requests signed and checked
//! both ways — and the forged, unsigned, misdirected and denied paths.
//! Rooms shared across servers are in [`rooms`].

mod bad_peers;
mod e2ee;
mod email;
mod media;
mod partial_state;
mod partition;
mod policy;
mod rooms;
mod synapse;

use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::{enc, TestServer};

/// A certificate authority of the test, and leaf certificates it signs.
struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    dir: TempDir,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: with rcgen's default name on both the CA and its
        // leaves, OpenSSL (Synapse) takes a leaf for self-signed and refuses it.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "conduit test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Self { key, cert, dir }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `name` in `dir` (`name.pem`, `name.key`).
    fn issue(&self, dir: &Path, name: &str) {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// A port for a server's TLS listener, named in the others' configuration
/// before it is bound: taken below the kernel's ephemeral range (where the
/// test's other sockets, bound to port 0, never land), each once per run.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(0, 20_000 + (std::process::id() % 4_000) as u16, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server named `name` on a TLS listener at `port` (its second listener;
/// the first, plain, serves the harness's clients), knowing where the
/// others are (`peers`: name → port), trusting the test CA.
async fn start_peer(ca: &TestCa, name: &str, port: u16, peers: &[(&str, u16)], extra: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    // A server name with a port (`localhost:8448`) has a certificate for its host.
    let host = name.split(':').next().unwrap_or(name);
    ca.issue(dir.path(), host);
    let destinations: String =
        peers.iter().map(|(peer, port)| format!("\"{peer}\" = \"127.0.0.1:{port}\"\n")).collect();
    let text = format!(
        "server_name = \"{name}\"\ndatabase_path = {:?}\nregistration = \"open\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\ntls = {{ certificate = {:?}, key = {:?} }}\n\
         [federation]\nca_file = {:?}\nallow_private_addresses = true\n{extra}\n[federation.destinations]\n{destinations}",
        dir.path().join("db").display().to_string(),
        dir.path().join(format!("{host}.pem")).display().to_string(),
        dir.path().join(format!("{host}.key")).display().to_string(),
        ca.ca_file(),
    );
    std::fs::write(dir.path().join("conduit.toml"), &text).unwrap();
    TestServer::start_in(dir, &text).await
}

/// Restarts a server started by [`start_peer`] on its database and ports.
async fn restart_peer(server: TestServer) -> TestServer {
    let text = std::fs::read_to_string(server.dir.path().join("conduit.toml")).unwrap();
    server.restart_with(&text).await
}

/// The TLS (federation) listener of a server started by [`start_peer`].
fn tls_addr(server: &TestServer) -> SocketAddr {
    server.handle().local_addrs[1]
}

/// A request over TLS to `addr`, checking the certificate for `name`.
async fn tls_request(
    ca_pem: &str,
    addr: SocketAddr,
    name: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    tls_request_with_body(ca_pem, addr, name, method, path, authorization, None).await
}

/// [`tls_request`] with a JSON body.
async fn tls_request_with_body(
    ca_pem: &str,
    addr: SocketAddr,
    name: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", name);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let bytes = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
    let response = sender.send_request(request.body(Full::new(bytes)).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `PUT /send/{txn}` to b.test, signed by a.test's real key.
async fn send_transaction_as_a(
    ca: &TestCa,
    a: &TestServer,
    b: &TestServer,
    txn: &str,
    pdus: Vec<Value>,
    edus: Vec<Value>,
) -> (u16, Value) {
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let body = json!({ "origin": "a.test", "origin_server_ts": 1_800_000_000_000u64, "pdus": pdus, "edus": edus });
    let key = &a.services().server_key;
    let authorization =
        conduit::federation::x_matrix::authorization(key, "a.test", "b.test", "PUT", &path, Some(&body)).unwrap();
    tls_request_with_body(&ca.pem(), tls_addr(b), "b.test", "PUT", &path, Some(&authorization), Some(&body)).await
}

/// A request signed by `from` (named `from_name`) to `to` (named `to_name`), over TLS.
#[allow(clippy::too_many_arguments)]
async fn signed_request(
    ca: &TestCa,
    (from, from_name): (&TestServer, &str),
    (to, to_name): (&TestServer, &str),
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let key = &from.services().server_key;
    let authorization =
        conduit::federation::x_matrix::authorization(key, from_name, to_name, method, path, Some(&body)).unwrap();
    tls_request_with_body(&ca.pem(), tls_addr(to), to_name, method, path, Some(&authorization), Some(&body)).await
}

/// Waits (30 s at most) until `server` holds the whole state of a room it joined with partial state.
async fn wait_for_whole_state(server: &TestServer, room_id: &ruma::RoomId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.services().rooms.has_partial_state(room_id).unwrap() {
        assert!(std::time::Instant::now() < deadline, "the state of {room_id} was never completed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Two servers that know each other (`a.test`, `b.test`), and the CA.
async fn two_servers(extra_a: &str, extra_b: &str) -> (TestCa, TestServer, TestServer) {
    let ca = TestCa::new();
    let (port_a, port_b) = (free_port(), free_port());
    let peers = [("a.test", port_a), ("b.test", port_b)];
    let a = start_peer(&ca, "a.test", port_a, &peers, extra_a).await;
    let b = start_peer(&ca, "b.test", port_b, &peers, extra_b).await;
    (ca, a, b)
}

/// A client request over TLS with an access token.
async fn client_get(ca: &TestCa, server: &TestServer, name: &str, token: &str, path: &str) -> (u16, Value) {
    tls_request(&ca.pem(), tls_addr(server), name, "GET", path, Some(&format!("Bearer {token}"))).await
}

/// An account on `server` and an access token (the harness client speaks
/// plain HTTP, so the account is made through the services).
async fn register(server: &TestServer, user: &str) -> String {
    let services = server.services();
    services.users.create_account(user, Some(crate::harness::PASSWORD), false, false).await.unwrap();
    services.users.open_session(user, None, None, false, "127.0.0.1").await.unwrap().access_token
}

#[tokio::test]
async fn the_first_requests_of_a_server_arriving_together_share_one_key_fetch() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    b.client().register("bob").await;
    // Eight profile lookups at once: b.test receives eight signed requests of
    // a.test before it has a.test's key; all wait for one fetch, none is refused.
    let lookups = (0..8).map(|_| {
        let alice = alice.clone();
        async move { alice.client.get(&format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"))).await.status }
    });
    let statuses = futures_util::future::join_all(lookups).await;
    assert_eq!(statuses, vec![200; 8]);
}

#[tokio::test]
async fn profiles_cross_servers_with_signed_requests_over_tls() {
    let (ca, a, b) = two_servers("", "").await;
    let alice = register(&a, "alice").await;
    let _bob = register(&b, "bob").await;
    b.services()
        .users
        .set_profile_field("bob", conduit::users::ProfileField::DisplayName, Some("Bob Martin".into()))
        .await
        .unwrap();

    // alice (a.test) reads bob's profile: a.test signs, b.test fetches a.test's key and checks.
    let (status, profile) =
        client_get(&ca, &a, "a.test", &alice, &format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"))).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["displayname"], "Bob Martin");
    let (status, field) = client_get(
        &ca,
        &a,
        "a.test",
        &alice,
        &format!("/_matrix/client/v3/profile/{}/displayname", enc("@bob:b.test")),
    )
    .await;
    assert_eq!((status, field["displayname"].as_str()), (200, Some("Bob Martin")));
    let (status, _) =
        client_get(&ca, &a, "a.test", &alice, &format!("/_matrix/client/v3/profile/{}", enc("@nobody:b.test"))).await;
    assert_eq!(status, 404);

    // a.test as a notary: b.test's keys, signed by b.test and countersigned by a.test.
    let (status, answer) =
        tls_request(&ca.pem(), tls_addr(&a), "a.test", "GET", "/_matrix/key/v2/query/b.test", None).await;
    assert_eq!(status, 200);
    let document = &answer["server_keys"][0];
    assert_eq!(document["server_name"], "b.test");
    assert!(document["signatures"]["b.test"].is_object() && document["signatures"]["a.test"].is_object(), "{document}");
    let (status, version) =
        tls_request(&ca.pem(), tls_addr(&b), "b.test", "GET", "/_matrix/federation/v1/version", None).await;
    assert_eq!((status, version["server"]["name"].as_str()), (200, Some("conduit")));
}

#[tokio::test]
async fn unsigned_forged_and_misdirected_server_requests_are_refused() {
    let (ca, a, b) = two_servers("", "").await;
    register(&b, "bob").await;
    // a.test's key is known to b.test once a.test has asked something.
    let alice = register(&a, "alice").await;
    client_get(&ca, &a, "a.test", &alice, &format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"))).await;

    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", enc("@bob:b.test"));
    let call = |authorization: Option<String>| {
        let (ca_pem, addr, path) = (ca.pem(), tls_addr(&b), path.clone());
        async move { tls_request(&ca_pem, addr, "b.test", "GET", &path, authorization.as_deref()).await }
    };
    let (status, body) = call(None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "no signature: {body}");
    let (status, body) = call(Some("X-Matrix origin=a.test,key=\"ed25519:x\"".to_owned())).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "malformed: {body}");

    // Signed by a key that is not a.test's, with a.test's key id.
    let a_key_id = a.services().server_key.key_id().to_owned();
    let forger =
        conduit::crypto::signing_key::ServerKey::from_seed(a_key_id.trim_start_matches("ed25519:"), &[7u8; 32])
            .unwrap();
    let forged = conduit::federation::x_matrix::authorization(&forger, "a.test", "b.test", "GET", &path, None).unwrap();
    let (status, body) = call(Some(forged)).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "forged: {body}");

    // a.test's real key, but signed for another destination, or another path.
    let real = a.services();
    let key = &real.server_key;
    let elsewhere = conduit::federation::x_matrix::authorization(key, "a.test", "c.test", "GET", &path, None).unwrap();
    let (status, body) = call(Some(elsewhere)).await;
    assert_eq!(status, 401, "signed for c.test: {body}");
    let other_path =
        conduit::federation::x_matrix::authorization(key, "a.test", "b.test", "GET", "/other", None).unwrap();
    assert_eq!(call(Some(other_path)).await.0, 401, "signed for another request");
    // Properly signed: served.
    let good = conduit::federation::x_matrix::authorization(key, "a.test", "b.test", "GET", &path, None).unwrap();
    assert_eq!(call(Some(good)).await.0, 200);
}

#[tokio::test]
async fn closed_federations_refuse_other_servers_both_ways() {
    // b.test federates with a.test only... and a.test denies b.test.
    let (ca, a, b) = two_servers("denied_servers = [\"b.test\"]", "allowed_servers = [\"c.test\"]").await;
    let alice = register(&a, "alice").await;
    register(&b, "bob").await;
    // Outgoing: refused before any connection.
    let (status, body) =
        client_get(&ca, &a, "a.test", &alice, &format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"))).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // Incoming: b.test refuses a.test's properly signed request (a.test is not in its allowlist).
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", enc("@bob:b.test"));
    let signed =
        conduit::federation::x_matrix::authorization(&a.services().server_key, "a.test", "b.test", "GET", &path, None)
            .unwrap();
    let (status, body) = tls_request(&ca.pem(), tls_addr(&b), "b.test", "GET", &path, Some(&signed)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
}

#[tokio::test]
async fn peers_are_trusted_only_through_the_configured_ca() {
    // a.test does not know the test CA: b.test's certificate is refused.
    let ca = TestCa::new();
    let (port_a, port_b) = (free_port(), free_port());
    let peers = [("a.test", port_a), ("b.test", port_b)];
    let b = start_peer(&ca, "b.test", port_b, &peers, "").await;
    let other_ca = TestCa::new();
    let a = start_peer(&other_ca, "a.test", port_a, &peers, "").await;
    let token = register(&a, "alice").await;
    register(&b, "bob").await;
    let path = format!("/_matrix/client/v3/profile/{}", enc("@bob:b.test"));
    let (status, body) =
        tls_request(&other_ca.pem(), tls_addr(&a), "a.test", "GET", &path, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503, "an untrusted certificate is not accepted: {body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("TLS"), "{body}");
}
