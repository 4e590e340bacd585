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
    // Another server's media is fetched from it: one that cannot be reached is a bad gateway.
    bob.client.get("/_matrix/client/v1/media/download/elsewhere.example/abc").await.assert_error(502, "M_UNKNOWN");

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

    // Sizes past the largest thumbnail make the same one: no cache entry each.
    let cached = server.services().storage.tables.thumbnails.len();
    for size in ["3000", "4294967295"] {
        let query = format!("width={size}&height={size}&method=crop");
        let (status, _, _) = alice.client.send_raw("GET", &thumb(&query), &[], Bytes::new()).await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(server.services().storage.tables.thumbnails.len(), cached + 1);

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

/// Starts `POST /_matrix/media/v3/upload` over a raw connection with a
/// chunked body (no declared length).
async fn start_chunked_upload(server: &TestServer, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nhost: test.local\r\nauthorization: Bearer {token}\r\n\
         content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends one chunk; false once the server has stopped reading.
async fn send_chunk(stream: &mut tokio::net::TcpStream, chunk: &[u8]) -> bool {
    use tokio::io::AsyncWriteExt;
    stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_ok()
        && stream.write_all(chunk).await.is_ok()
        && stream.write_all(b"\r\n").await.is_ok()
}

/// A whole chunked upload of `chunks`: the raw response.
async fn chunked_upload(server: &TestServer, token: &str, chunks: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = start_chunked_upload(server, token).await;
    for chunk in chunks {
        // The server may answer (and close) before the whole body is sent.
        if !send_chunk(&mut stream, chunk).await {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Stored content files (in the two-level fan-out).
fn content_files(server: &TestServer) -> usize {
    let media = server.dir.path().join("db").join("media");
    let Ok(entries) = std::fs::read_dir(media) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|dir| std::fs::read_dir(dir.path()).map(|files| files.count()).unwrap_or(0))
        .sum()
}

async fn wait_for_leftovers(server: &TestServer, expected: usize) {
    for _ in 0..500 {
        if spool_leftovers(server) == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("expected {expected} temporary upload files, found {}", spool_leftovers(server));
}

fn spool_leftovers(server: &TestServer) -> usize {
    let media = server.dir.path().join("db").join("media");
    std::fs::read_dir(media)
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".spool-")).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn large_uploads_are_streamed_past_the_request_size_limit_and_back() {
    // JSON bodies are capped at 64 KiB; files stream to disk up to 8 MiB.
    let server = TestServer::start_with("max_request_size = 65536\n[media]\nmax_upload_size = 8388608\n").await;
    let client = server.client();
    let alice = client.register("alice").await;
    let content: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();

    // With a declared length, in one request.
    let reply = alice
        .client
        .try_send(
            "POST",
            "/_matrix/media/v3/upload",
            &[("content-type", "application/pdf")],
            Bytes::from(content.clone()),
        )
        .await
        .unwrap();
    let uri = reply.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    let (status, headers, body) = alice.client.send_raw("GET", &media_path(&uri), &[], Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], content.len().to_string().as_str());
    assert!(body[..] == content[..], "the download is the upload, byte for byte");

    // Chunked (no declared length), in many pieces.
    let chunks: Vec<Vec<u8>> = content.chunks(100_000).map(<[u8]>::to_vec).collect();
    let response = chunked_upload(&server, &alice.token, &chunks).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("mxc://test.local/"), "{response}");

    // JSON endpoints keep the request size limit.
    let big_json = serde_json::json!({ "displayname": "x".repeat(70_000) });
    let reply = alice.client.put("/_matrix/client/v3/profile/@alice:test.local/displayname", big_json).await;
    reply.assert_error(413, "M_TOO_LARGE");
    assert_eq!(spool_leftovers(&server), 0);
}

#[tokio::test]
async fn streamed_uploads_over_the_limit_or_cut_short_leave_nothing_behind() {
    let server = TestServer::start_with("[media]\nmax_upload_size = 1048576\n").await;
    let client = server.client();
    let alice = client.register("alice").await;

    // No declared length: refused once the limit is passed, mid-stream.
    let chunks: Vec<Vec<u8>> = (0..40).map(|_| vec![7u8; 64 * 1024]).collect();
    let response = chunked_upload(&server, &alice.token, &chunks).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("M_TOO_LARGE"), "{response}");

    // A declared length over the limit is refused before any byte is read.
    let declared =
        alice.client.try_send("POST", "/_matrix/media/v3/upload", &[], Bytes::from(vec![0u8; 1048577])).await.unwrap();
    declared.assert_error(413, "M_TOO_LARGE");

    // An upload in progress is on disk, not in memory; cut in the middle, it
    // stores nothing.
    let before = (server.services().storage.tables.media.len(), content_files(&server));
    let mut upload = start_chunked_upload(&server, &alice.token).await;
    for chunk in &chunks[..4] {
        assert!(send_chunk(&mut upload, chunk).await);
    }
    wait_for_leftovers(&server, 1).await;
    drop(upload);
    wait_for_leftovers(&server, 0).await;
    assert_eq!(content_files(&server), before.1, "no content file is kept");
    assert_eq!(server.services().storage.tables.media.len(), before.0, "no media is recorded");

    // Unauthenticated uploads are refused before their body is read.
    let anonymous =
        client.try_send("POST", "/_matrix/media/v3/upload", &[], Bytes::from_static(b"hello")).await.unwrap();
    anonymous.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn single_byte_ranges_are_served_partially_for_seeking() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let reply = alice
        .client
        .try_send("POST", "/_matrix/media/v3/upload", &[("content-type", "video/mp4")], Bytes::from(content.clone()))
        .await
        .unwrap();
    let path = media_path(reply.assert_ok()["content_uri"].as_str().unwrap());
    let get = |range: &'static str| {
        let (alice, path) = (alice.clone(), path.clone());
        async move { alice.client.send_raw("GET", &path, &[("range", range)], Bytes::new()).await.unwrap() }
    };
    for (range, first, last) in [("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999)] {
        let (status, headers, body) = get(range).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(headers["content-range"], format!("bytes {first}-{last}/1000").as_str());
        assert_eq!(headers["content-length"], (last - first + 1).to_string().as_str());
        assert_eq!(&body[..], &content[first..=last], "{range}");
    }
    // Several ranges, or a range past the end: 416 with the size.
    for range in ["bytes=0-1,5-6", "bytes=5000-", "bytes=-0"] {
        let (status, headers, _) = get(range).await;
        assert_eq!(status, 416, "{range}");
        assert_eq!(headers["content-range"], "bytes */1000", "{range}");
    }
    // A malformed or foreign range is ignored: the whole file.
    for range in ["bytes=20-10", "items=0-1"] {
        let (status, headers, body) = get(range).await;
        assert_eq!(status, 200, "{range}");
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(body.len(), 1000);
    }
}
