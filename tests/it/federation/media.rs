//! Media across servers: a file uploaded on one server is downloaded (and
//! thumbnailed) by a user of another, fetched over federation once and then
//! served from that server's cache — also while its origin is down and
//! after a restart; the size limit holds for remote files; an older peer
//! without the federation media endpoints is read through the legacy
//! download, and a `Location` in the answer is followed.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::{free_port, restart_peer, start_peer, two_servers, TestCa};
use crate::harness::Session;

/// "photo d'été.png", as a query parameter.
const FILE_NAME: &str = "photo%20d%27%C3%A9t%C3%A9.png";

/// Uploads `body` as `alice`; its `server/media_id`.
async fn upload(alice: &Session, content_type: &str, body: Vec<u8>) -> String {
    let path = format!("/_matrix/media/v3/upload?filename={FILE_NAME}");
    let reply = alice.client.try_send("POST", &path, &[("content-type", content_type)], Bytes::from(body)).await;
    let uri = reply.unwrap().assert_ok()["content_uri"].as_str().unwrap().to_owned();
    uri.strip_prefix("mxc://").unwrap().to_owned()
}

async fn get(session: &Session, path: &str) -> (u16, ::http::HeaderMap, Bytes) {
    session.client.send_raw("GET", path, &[], Bytes::new()).await.unwrap()
}

#[tokio::test]
async fn remote_media_is_fetched_once_then_served_from_the_cache() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let png = conduit::media::thumbnail::blank_png(400, 200);
    let media = upload(&alice, "image/png", png.clone()).await;
    let download = format!("/_matrix/client/v1/media/download/{media}");
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/{media}?width=96&height=96&method=crop");

    // bob (b.test) downloads alice's file through his own server.
    let (status, headers, body) = get(&bob, &download).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, png);
    assert_eq!(headers["content-type"], "image/png");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(disposition.contains("filename*=utf-8''photo%20d%27%C3%A9t%C3%A9.png"), "{disposition}");
    let (status, headers, thumb) = get(&bob, &thumbnail).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (200, "image/png"));
    let image = image::load_from_memory(&thumb).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96), "made by a.test as asked");

    // Media a.test does not have: its answer passed on.
    let (status, _, _) = get(&bob, "/_matrix/client/v1/media/download/a.test/NoSuchMedia").await;
    assert_eq!(status, 404);
    let cached = b.services().storage.tables.remote_media.len();
    assert_eq!(cached, 1, "one remote file cached");

    // a.test goes away: b.test still serves what it fetched, also after a restart.
    let _a_dir = a.stop().await;
    let b = restart_peer(b).await;
    let bob = Session { client: b.client().with_token(&bob.token), ..bob };
    let (status, _, again) = get(&bob, &download).await;
    assert_eq!((status, again), (200, Bytes::from(png)), "served from the cache");
    let (status, _, thumb_again) = get(&bob, &thumbnail).await;
    assert_eq!((status, thumb_again), (200, thumb));
    let (status, _, _) = get(&bob, "/_matrix/client/v1/media/download/a.test/NotFetchedBefore").await;
    assert_eq!(status, 502, "the origin is down");
    // Ids that cannot be media ids are not asked for.
    let (status, _, _) = get(&bob, "/_matrix/client/v1/media/download/a.test/bad%2Fid").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_purges_the_remote_media_cache_and_quarantines_remote_media() {
    let (_ca, a, b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await; // b.test's first account: its admin
    let carol = b.client().register("carol").await;
    let media = upload(&alice, "text/plain", b"across servers".to_vec()).await;
    let download = format!("/_matrix/client/v1/media/download/{media}");
    assert_eq!(get(&carol, &download).await.0, 200);
    let b_media = b.dir.path().join("db").join("media");
    assert_eq!(crate::admin::content_files(&b_media), 1, "cached on b.test");

    let now = conduit::util::now_ms();
    carol
        .client
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={now}"), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.client.post("/_synapse/admin/v1/purge_media_cache", json!({})).await.assert_error(400, "M_MISSING_PARAM");
    let old = bob.client.post("/_synapse/admin/v1/purge_media_cache?before_ts=1000", json!({})).await;
    assert_eq!(old.assert_ok()["deleted"], 0, "nothing was fetched that long ago");
    let purged =
        bob.client.post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={}", now + 1), json!({})).await;
    assert_eq!(purged.assert_ok()["deleted"], 1);
    assert_eq!(b.services().storage.tables.remote_media.len(), 0);
    assert_eq!(crate::admin::content_files(&b_media), 0, "the cached file is removed at once");
    assert_eq!(get(&carol, &download).await.0, 200, "fetched again when asked");

    // Quarantined on b.test: not served, not fetched again; released, served.
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/{media}");
    bob.client.post(&quarantine, json!({})).await.assert_ok();
    assert_eq!(get(&carol, &download).await.0, 404);
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/{media}?width=32&height=32");
    assert_eq!(get(&carol, &thumbnail).await.0, 404);
    let purged =
        bob.client.post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={}", u64::MAX), json!({})).await;
    assert_eq!(purged.assert_ok()["deleted"], 0, "a quarantined item stays (so it is not fetched again)");
    bob.client.post(&format!("/_synapse/admin/v1/media/unquarantine/{media}"), json!({})).await.assert_ok();
    assert_eq!(get(&carol, &download).await.0, 200);
    // An item never fetched can be quarantined ahead.
    let unseen = upload(&alice, "text/plain", b"not fetched yet".to_vec()).await;
    bob.client.post(&format!("/_synapse/admin/v1/media/quarantine/{unseen}"), json!({})).await.assert_ok();
    assert_eq!(get(&carol, &format!("/_matrix/client/v1/media/download/{unseen}")).await.0, 404);
}

#[tokio::test]
async fn a_remote_file_past_the_size_limit_is_refused_and_not_cached() {
    let (_ca, a, b) = two_servers("", "[media]\nmax_upload_size = 1000\n").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let media = upload(&alice, "application/octet-stream", vec![7; 5000]).await;
    let reply = bob.client.get(&format!("/_matrix/client/v1/media/download/{media}")).await;
    reply.assert_error(502, "M_TOO_LARGE");
    assert_eq!(b.services().storage.tables.remote_media.len(), 0);
}

#[tokio::test]
async fn the_federation_media_endpoints_need_a_signed_request() {
    let (ca, a, _b) = two_servers("", "").await;
    let alice = a.client().register("alice").await;
    let media = upload(&alice, "text/plain", b"hello".to_vec()).await;
    let id = media.split('/').nth(1).unwrap();
    for path in [
        format!("/_matrix/federation/v1/media/download/{id}"),
        format!("/_matrix/federation/v1/media/thumbnail/{id}?width=1&height=1"),
    ] {
        let (status, body) = super::tls_request(&ca.pem(), super::tls_addr(&a), "a.test", "GET", &path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{path}");
    }
}

/// What the old peer serves: its routes and answers.
async fn old_peer_answer(path: &str, file_url: &str) -> hyper::Response<Full<Bytes>> {
    let respond = |status: u16, content_type: &str, body: Vec<u8>| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-disposition", "inline; filename=\"old.txt\"")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let unknown = json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" }).to_string();
    if path.starts_with("/_matrix/federation/v1/media/download/Redirected") {
        let body = format!(
            "--BOUNDARY\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--BOUNDARY\r\nLocation: {file_url}\r\n\r\n\r\n--BOUNDARY--\r\n"
        );
        return respond(200, "multipart/mixed; boundary=BOUNDARY", body.into_bytes());
    }
    match path {
        "/_matrix/media/v3/download/old.test/Legacy?allow_remote=false" => {
            respond(200, "text/plain", b"from the legacy route".to_vec())
        }
        "/elsewhere/file" => respond(200, "text/plain", b"from the redirection".to_vec()),
        _ => respond(404, "application/json", unknown.into_bytes()),
    }
}

fn serve_old_peer<I>(io: I, file_url: String)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        let file_url = file_url.clone();
        async move { Ok::<_, std::convert::Infallible>(old_peer_answer(&path, &file_url).await) }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
    });
}

/// A server that predates the federation media endpoints, on TLS at
/// `port` (as old.test) and plain HTTP at `plain` (where it redirects to).
async fn start_old_peer(ca: &TestCa, port: u16) -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "old.test");
    let cert = CertificateDer::from_pem_file(dir.path().join("old.test.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("old.test.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tls = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let file_url = format!("http://{plain_addr}/elsewhere/file");
    let tls_file_url = file_url.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tls.accept().await {
            if let Ok(stream) = acceptor.accept(tcp).await {
                serve_old_peer(TokioIo::new(stream), tls_file_url.clone());
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = plain.accept().await {
            serve_old_peer(TokioIo::new(tcp), file_url.clone());
        }
    });
    std::mem::forget(dir);
    plain_addr
}

#[tokio::test]
async fn an_older_peer_is_read_through_the_legacy_route_and_redirections_are_followed() {
    let ca = TestCa::new();
    let (old_port, b_port) = (free_port(), free_port());
    start_old_peer(&ca, old_port).await;
    let b = start_peer(&ca, "b.test", b_port, &[("old.test", old_port), ("b.test", b_port)], "").await;
    let bob = b.client().register("bob").await;

    let (status, headers, body) = get(&bob, "/_matrix/client/v1/media/download/old.test/Legacy").await;
    assert_eq!((status, &body[..]), (200, &b"from the legacy route"[..]));
    assert_eq!(headers["content-type"], "text/plain");
    assert!(headers["content-disposition"].to_str().unwrap().contains("old.txt"));

    let (status, _, body) = get(&bob, "/_matrix/client/v1/media/download/old.test/Redirected").await;
    assert_eq!((status, &body[..]), (200, &b"from the redirection"[..]));

    // Not on the old server either: its 404 passed on, nothing cached.
    let (status, _, _) = get(&bob, "/_matrix/client/v1/media/download/old.test/Missing").await;
    assert_eq!(status, 404);
    assert_eq!(b.services().storage.tables.remote_media.len(), 2);
}
