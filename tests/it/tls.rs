//! TLS listeners: HTTP/1.1 and HTTP/2 by ALPN, and certificate reload without
//! dropping open connections.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::harness::TestServer;

pub fn write_certificate(dir: &Path, name: &str) -> String {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    generated.cert.pem()
}

pub fn connector(trusted: &[&str], alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for pem in trusted {
        roots.add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn connect(server: &TestServer, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

pub fn peer_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

async fn start_tls_server() -> (TestServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let pem = write_certificate(dir.path(), "live");
    let text = format!(
        "server_name = \"test.local\"\ndatabase_path = {:?}\nregistration = \"open\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ certificate = {:?}, key = {:?} }}\n",
        dir.path().join("db").display().to_string(),
        dir.path().join("live.pem").display().to_string(),
        dir.path().join("live.key").display().to_string(),
    );
    (TestServer::start_in(dir, &text).await, pem)
}

fn versions_request() -> http::Request<Empty<Bytes>> {
    http::Request::builder().uri("https://localhost/_matrix/client/versions").body(Empty::new()).unwrap()
}

#[tokio::test]
async fn serves_http1_and_http2_over_tls() {
    let (server, pem) = start_tls_server().await;

    let stream = connect(&server, &connector(&[&pem], b"http/1.1")).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri("/_matrix/client/versions")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let stream = connect(&server, &connector(&[&pem], b"h2")).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(versions_request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("versions"));
}

#[tokio::test]
async fn untrusted_clients_fail_the_handshake_and_the_server_carries_on() {
    let (server, pem) = start_tls_server().await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap().cert.pem();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let refused = connector(&[&other], b"h2").connect(ServerName::try_from("localhost").unwrap(), tcp).await;
    assert!(refused.is_err(), "a client that does not trust the certificate cannot connect");
    // Plain HTTP on a TLS port is not served either.
    let plain = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await.map(|_| ())
    })
    .await;
    assert!(plain.is_ok(), "the server answers (and closes) rather than hanging");
    connect(&server, &connector(&[&pem], b"h2")).await;
}

#[tokio::test]
async fn certificate_reload_keeps_open_connections() {
    let (server, old_pem) = start_tls_server().await;
    let dir = server.dir.path().to_owned();
    let both = connector(&[&old_pem], b"h2");

    let old_stream = connect(&server, &both).await;
    let old_certificate = peer_certificate(&old_stream);
    let (mut old_sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(old_stream)).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(old_sender.send_request(versions_request()).await.unwrap().status(), 200);

    // Replace the files and reload, as SIGHUP does.
    let new_pem = write_certificate(&dir, "next");
    std::fs::rename(dir.join("next.pem"), dir.join("live.pem")).unwrap();
    std::fs::rename(dir.join("next.key"), dir.join("live.key")).unwrap();
    server.handle().reload_certificates().unwrap();

    let new_stream = connect(&server, &connector(&[&new_pem], b"h2")).await;
    assert_ne!(peer_certificate(&new_stream), old_certificate, "new handshakes use the new certificate");
    // The connection opened before the reload still works.
    assert_eq!(old_sender.send_request(versions_request()).await.unwrap().status(), 200);

    // A broken file is refused and the current certificate stays.
    std::fs::write(dir.join("live.key"), "not a key").unwrap();
    assert!(server.handle().reload_certificates().is_err());
    let stream = connect(&server, &connector(&[&new_pem], b"h2")).await;
    assert_eq!(peer_certificate(&stream), peer_certificate(&new_stream));
}
