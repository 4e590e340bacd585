//! The content repository: uploads, downloads, safe headers, limits.

use bytes::Bytes;

use crate::harness::{enc, TestServer};

const PNG: &[u8] = b"\\x89PNG\\r\\n\\x1a\\nnot really an image";

fn media_path(uri: &str) -> String {
    let rest = uri.strip_prefix("mxc://").expect("an mxc URI");
    format!("/_matrix/client/v1/media/download/{rest}")
}

#[tokio::test]
async fn uploads_come_back_with_their_type_and_safe_headers() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let upload = |content_type: &'static str, body: &'static [u8], name: &str| {
        let alice = alice.clone();
        let path = format!("/_matrix/media/v3/upload?filename={}", enc(name));
        async move {
            let reply = alice
                .client
                .try_send("POST", &path, &[("content-type", content_type)], Bytes::from_static(body))
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            reply.body["content_uri"].as_str().unwrap().to_owned()
        }
    };
    let image = upload("image/png", PNG, "holiday.png").await;
    assert!(image.starts_with("mxc://test.local/"), "{image}");

    // Any logged-in user downloads it; the bytes and type come back as uploaded.
    let (status, headers, body) = bob.client.send_raw("GET", &media_path(&image), &[], Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], PNG);
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers["content-disposition"].to_str().unwrap().starts_with("inline; filename="));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("sandbox"));
    let named = format!("{}/other.png", media_path(&image));
    let (_, headers, _) = bob.client.send_raw("GET", &named, &[], Bytes::new()).await.unwrap();
    assert!(headers["content-disposition"].to_str().unwrap().contains("other.png"));

    // HTML is never shown inline.
    let page = upload("text/html", b"<script>alert(1)</script>", "page.html").await;
    let (_, headers, _) = bob.client.send_raw("GET", &media_path(&page), &[], Bytes::new()).await.unwrap();
    assert!(headers["content-disposition"].to_str().unwrap().starts_with("attachment"));

    // Authentication is required on the authenticated route; the legacy route is off by default.
    client.get(&media_path(&image)).await.assert_error(401, "M_MISSING_TOKEN");
    let legacy = media_path(&image).replace("/_matrix/client/v1/media/", "/_matrix/media/v3/");
    client.get(&legacy).await.assert_error(404, "M_NOT_FOUND");
    bob.client.get("/_matrix/client/v1/media/download/test.local/unknownid").await.assert_error(404, "M_NOT_FOUND");
    bob.client.get("/_matrix/client/v1/media/download/elsewhere.example/abc").await.assert_error(404, "M_NOT_FOUND");

    let config = bob.client.get("/_matrix/client/v1/media/config").await;
    assert!(config.assert_ok()["m.upload.size"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn created_media_is_uploaded_once_by_its_creator() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let created = alice.client.post("/_matrix/media/v1/create", serde_json::json!({})).await.assert_ok().clone();
    let uri = created["content_uri"].as_str().unwrap().to_owned();
    assert!(created["unused_expires_at"].as_u64().is_some());
    bob.client.get(&media_path(&uri)).await.assert_error(504, "M_NOT_YET_UPLOADED");

    let put_path = uri.replace("mxc://", "/_matrix/media/v3/upload/");
    let put = |session: &crate::harness::Session, body: &'static [u8]| {
        let client = session.client.clone();
        let path = put_path.clone();
        async move {
            client.try_send("PUT", &path, &[("content-type", "text/plain")], Bytes::from_static(body)).await.unwrap()
        }
    };
    put(&bob, b"intruder").await.assert_error(403, "M_FORBIDDEN");
    put(&alice, b"hello").await.assert_ok();
    put(&alice, b"again").await.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    let (status, _, body) = bob.client.send_raw("GET", &media_path(&uri), &[], Bytes::new()).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_and_legacy_downloads_can_be_enabled() {
    let server =
        TestServer::start_with("[media]\nmax_upload_size = 16\nlegacy_unauthenticated_downloads = true\n").await;
    let client = server.client();
    let alice = client.register("alice").await;
    let big = Bytes::from(vec![b'x'; 17]);
    let reply = alice
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], big)
        .await
        .unwrap();
    reply.assert_error(413, "M_TOO_LARGE");
    let small = Bytes::from_static(b"small");
    let reply = alice
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], small)
        .await
        .unwrap();
    let uri = reply.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    let legacy = uri.replace("mxc://", "/_matrix/media/v3/download/");
    let (status, _, body) = client.send_raw("GET", &legacy, &[], Bytes::new()).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"small"[..]));
}

#[tokio::test]
async fn thumbnails_are_made_once_for_images_only() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let png = Bytes::from(conduit::media::thumbnail::blank_png(400, 200));
    let reply =
        alice.client.try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "image/png")], png).await.unwrap();
    let uri = reply.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    let thumb = |query: &str| format!("{}?{query}", uri.replace("mxc://", "/_matrix/client/v1/media/thumbnail/"));

    let (status, headers, body) =
        alice.client.send_raw("GET", &thumb("width=96&height=96&method=crop"), &[], Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96));
    let (_, _, again) =
        alice.client.send_raw("GET", &thumb("width=96&height=96&method=crop"), &[], Bytes::new()).await.unwrap();
    assert_eq!(again, body, "served from the cached thumbnail");
    let (_, _, scaled) =
        alice.client.send_raw("GET", &thumb("width=100&height=100&method=scale"), &[], Bytes::new()).await.unwrap();
    let image = image::load_from_memory(&scaled).unwrap();
    assert_eq!((image.width(), image.height()), (100, 50), "aspect ratio kept");

    alice.client.get(&thumb("height=10")).await.assert_error(400, "M_MISSING_PARAM");
    alice.client.get(&thumb("width=10&height=10&method=zoom")).await.assert_error(400, "M_INVALID_PARAM");
    client.get(&thumb("width=10&height=10")).await.assert_error(401, "M_MISSING_TOKEN");
    let text = Bytes::from_static(b"just text");
    let reply = alice
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "text/plain")], text)
        .await
        .unwrap();
    let text_uri =
        reply.assert_ok()["content_uri"].as_str().unwrap().replace("mxc://", "/_matrix/client/v1/media/thumbnail/");
    alice.client.get(&format!("{text_uri}?width=32&height=32")).await.assert_error(400, "M_UNKNOWN");
}
