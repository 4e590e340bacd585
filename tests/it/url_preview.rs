//! URL previews (`GET /_matrix/client/v1/media/preview_url`): a local web
//! site serves a page with OpenGraph tags, a redirection and an image.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::harness::{enc, TestServer};

const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Requests the test sites answered for `/counted`.
static COUNTED: AtomicUsize = AtomicUsize::new(0);

/// A web site on 127.0.0.1: `/page` (OpenGraph), `/moved` (302 to `/page`),
/// `/logo.png`, `/huge` (2 MiB, over the page limit), `/counted` (a page
/// that counts its requests).
async fn start_site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind site");
    let addr = listener.local_addr().expect("site address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let response = match request.uri().path() {
                        "/page" => hyper::Response::builder().header("content-type", "text/html; charset=utf-8").body(
                            Full::new(Bytes::from_static(
                                br#"<html><head><title>Fallback</title>
                                <meta property="og:title" content="Mairie de Saint-&Eacute;tienne &amp; services">
                                <meta property="og:description" content="Horaires et d&#233;marches">
                                <meta property="og:image" content="/logo.png"></head><body>x</body></html>"#,
                            )),
                        ),
                        "/moved" => {
                            hyper::Response::builder().status(302).header("location", "/page").body(Full::default())
                        }
                        "/huge" => hyper::Response::builder()
                            .header("content-type", "text/html")
                            .body(Full::new(Bytes::from(format!("<title>big</title>{}", "x".repeat(2 << 20))))),
                        "/counted" => {
                            COUNTED.fetch_add(1, Ordering::SeqCst);
                            hyper::Response::builder()
                                .header("content-type", "text/html")
                                .body(Full::new(Bytes::from_static(b"<title>Counted</title>")))
                        }
                        "/logo.png" => hyper::Response::builder()
                            .header("content-type", "image/png")
                            .body(Full::new(Bytes::from_static(PNG))),
                        _ => hyper::Response::builder().status(404).body(Full::default()),
                    };
                    Ok::<_, Infallible>(response.expect("response"))
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

fn preview_path(url: &str) -> String {
    format!("/_matrix/client/v1/media/preview_url?url={}", enc(url).replace('&', "%26").replace('?', "%3F"))
}

#[tokio::test]
async fn pages_are_previewed_with_their_image_copied_locally() {
    let site = start_site().await;
    let server = TestServer::start_with("[media]\nurl_previews = true\nurl_preview_allow_private = true\n").await;
    let alice = server.client().register("alice").await;

    // Followed through a redirection; og tags decoded; the image copied to this server.
    let reply = alice.client.get(&preview_path(&format!("http://{site}/moved"))).await;
    let preview = reply.assert_ok().clone();
    assert_eq!(preview["og:title"], "Mairie de Saint-&Eacute;tienne & services", "unknown entities stay as written");
    assert_eq!(preview["og:description"], "Horaires et démarches");
    assert_eq!(preview["matrix:image:size"], PNG.len());
    assert_eq!(preview["og:image:type"], "image/png");
    let image = preview["og:image"].as_str().expect("og:image");
    let media_path = image.strip_prefix("mxc://").expect("an mxc URI");
    let (status, _, bytes) = alice
        .client
        .send_raw("GET", &format!("/_matrix/client/v1/media/download/{media_path}"), &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!((status, bytes.as_ref()), (200, PNG));

    // The legacy route answers too; a direct image is previewed as itself.
    let direct = alice.client.get(&format!("/_matrix/media/v3/preview_url?url=http://{site}/logo.png")).await;
    assert_eq!(direct.assert_ok()["matrix:image:size"], PNG.len());

    // A preview is fetched once, then served from the cache.
    for _ in 0..3 {
        let counted = alice.client.get(&preview_path(&format!("http://{site}/counted"))).await;
        assert_eq!(counted.assert_ok()["og:title"], "Counted");
    }
    assert_eq!(COUNTED.load(Ordering::SeqCst), 1, "the site was asked once");
    // A page over the size limit is not read whole: an error, not a hang or a 500.
    let huge = alice.client.get(&preview_path(&format!("http://{site}/huge"))).await;
    assert!(huge.status == 404 || huge.status == 502, "{} {}", huge.status, huge.body);

    // Unknown pages, other schemes, a missing parameter, no token.
    alice.client.get(&preview_path(&format!("http://{site}/nothing"))).await.assert_error(404, "M_NOT_FOUND");
    alice.client.get(&preview_path("file:///etc/passwd")).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.get("/_matrix/client/v1/media/preview_url").await.assert_error(400, "M_MISSING_PARAM");
    server.client().get(&preview_path(&format!("http://{site}/page"))).await.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn previews_are_off_by_default_and_private_addresses_refused() {
    let site = start_site().await;
    let off = TestServer::start().await;
    let alice = off.client().register("alice").await;
    alice.client.get(&preview_path(&format!("http://{site}/page"))).await.assert_error(403, "M_FORBIDDEN");

    let public_only = TestServer::start_with("[media]\nurl_previews = true\n").await;
    let bob = public_only.client().register("bob").await;
    let refused = bob.client.get(&preview_path(&format!("http://{site}/page"))).await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.body["error"].as_str().unwrap().contains("127.0.0.1"), "{}", refused.body);
}
