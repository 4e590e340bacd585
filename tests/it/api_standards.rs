//! API standards: error responses, limits, CORS, discovery endpoints.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::TestServer;

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_unrecognized() {
    let server = TestServer::start().await;
    let client = server.client();
    client.get("/_matrix/client/v3/no/such/endpoint").await.assert_error(404, "M_UNRECOGNIZED");
    client.get("/").await.assert_error(404, "M_UNRECOGNIZED");
    client.put("/_matrix/client/v3/login", json!({})).await.assert_error(405, "M_UNRECOGNIZED");
    client.delete("/_matrix/client/versions", json!({})).await.assert_error(405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn bodies_that_are_not_json_or_of_the_wrong_shape_are_refused() {
    let server = TestServer::start().await;
    let client = server.client();
    let reply = client.send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"{not json")).await;
    reply.assert_error(400, "M_NOT_JSON");
    let reply = client.send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"[1,2]")).await;
    reply.assert_error(400, "M_BAD_JSON");
    let reply = client.post("/_matrix/client/v3/login", json!({ "type": 42 })).await;
    reply.assert_error(400, "M_BAD_JSON");
    assert!(reply.body["error"].as_str().unwrap().contains("type"), "names the field: {}", reply.body);
    let reply = client.post("/_matrix/client/v3/register", json!({ "username": "x", "inhibit_login": "yes" })).await;
    reply.assert_error(400, "M_BAD_JSON");
    assert!(reply.body["error"].as_str().unwrap().contains("inhibit_login"), "{}", reply.body);
    let reply = client.send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"\xff\xfe")).await;
    reply.assert_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn oversized_bodies_get_too_large_whether_declared_or_streamed() {
    let server = TestServer::start_with("max_request_size = 2048").await;
    let client = server.client();
    let big = format!("{{\"username\": \"{}\"}}", "a".repeat(4096));
    let reply = client.send("POST", "/_matrix/client/v3/register", &[], Bytes::from(big.clone())).await;
    reply.assert_error(413, "M_TOO_LARGE");
    // Chunked, with no Content-Length to reject up front: the limit applies while streaming.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /_matrix/client/v3/register HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        let chunk = "a".repeat(1000);
        let _ = stream.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("M_TOO_LARGE"), "{response}");
    // The server is still fine afterwards.
    server.client().get("/_matrix/client/versions").await.assert_ok();
}

/// The head of the answer to `request`, sent on a fresh connection.
async fn answer_head(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).to_lowercase()
}

/// A keep-alive client must learn when a refusal leaves its body unread
/// (the connection cannot carry another request): `Connection: close`.
#[tokio::test]
async fn refusals_before_the_body_is_read_close_the_connection_and_say_so() {
    let server = TestServer::start_with("max_request_size = 2048").await;
    let body = "x".repeat(100_000);
    let unknown =
        format!("POST /_matrix/client/v3/no/such HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    let head = answer_head(&server, unknown.as_bytes()).await;
    assert!(head.starts_with("http/1.1 404") && head.contains("connection: close"), "{head}");
    let declared = "POST /_matrix/client/v3/register HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n{";
    let head = answer_head(&server, declared.as_bytes()).await;
    assert!(head.starts_with("http/1.1 413") && head.contains("connection: close"), "{head}");
    // An upload (a streamed body) refused for its token before anything was read.
    let upload = "POST /_matrix/media/v3/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n";
    let head = answer_head(&server, upload.as_bytes()).await;
    assert!(head.starts_with("http/1.1 401") && head.contains("connection: close"), "{head}");
    // A refusal after the body was read keeps the connection.
    let read = "POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    let head = answer_head(&server, read.as_bytes()).await;
    assert!(head.starts_with("http/1.1 401") && !head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let server = TestServer::start().await;
    let client = server.client();
    client.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_MISSING_TOKEN");
    let reply = client.with_token("cdt_not-a-real-token").get("/_matrix/client/v3/account/whoami").await;
    reply.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(reply.body["soft_logout"], false);
    let reply =
        client.send("GET", "/_matrix/client/v3/account/whoami", &[("authorization", "Basic abc")], Bytes::new()).await;
    reply.assert_error(401, "M_MISSING_TOKEN");

    let alice = client.register("alice").await;
    let path = format!("/_matrix/client/v3/account/whoami?access_token={}", alice.token);
    let reply = client.get(&path).await;
    assert_eq!(reply.assert_ok()["user_id"], "@alice:test.local", "older clients send the token in the query");
}

#[tokio::test]
async fn cors_headers_on_every_response_and_preflight_runs_no_logic() {
    let server = TestServer::start().await;
    let client = server.client();
    for reply in [
        client.get("/_matrix/client/versions").await,
        client.get("/_matrix/client/v3/nothing").await,
        client.get("/_matrix/client/v3/account/whoami").await,
    ] {
        assert_eq!(reply.headers["access-control-allow-origin"], "*");
        assert!(reply.headers["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
        assert!(reply.headers["access-control-allow-headers"].to_str().unwrap().contains("Authorization"));
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    // Preflight of an authenticated endpoint succeeds without a token.
    let reply = client.send("OPTIONS", "/_matrix/client/v3/account/whoami", &[], Bytes::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    // Preflight of logout must not log anybody out.
    let alice = client.register("alice").await;
    let reply = alice.client.send("OPTIONS", "/_matrix/client/v3/logout", &[], Bytes::new()).await;
    assert_eq!(reply.status, 200);
    alice.client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
}

#[tokio::test]
async fn versions_well_known_and_capabilities() {
    let server = TestServer::start().await;
    let client = server.client();
    let versions = client.get("/_matrix/client/versions").await;
    let list = versions.assert_ok()["versions"].as_array().unwrap().clone();
    assert!(list.contains(&json!("v1.3")), "refresh tokens (v1.3) are implemented");
    assert!(list.contains(&json!("v1.11")), "authenticated media (v1.11) is implemented");
    let unstable = &versions.body["unstable_features"];
    assert_eq!(unstable["org.matrix.msc3916.stable"], true, "clients of before v1.11 look for this flag");

    client.get("/.well-known/matrix/client").await.assert_error(404, "M_NOT_FOUND");
    client.get("/.well-known/matrix/server").await.assert_error(404, "M_NOT_FOUND");

    client.get("/_matrix/client/v3/capabilities").await.assert_error(401, "M_MISSING_TOKEN");
    let alice = client.register("alice").await;
    let caps = alice.client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(caps.assert_ok()["capabilities"]["m.change_password"]["enabled"], true);
}

#[tokio::test]
async fn well_known_is_served_from_configuration() {
    let extra = "[well_known]\nclient = \"https://matrix.test.local\"\nserver = \"matrix.test.local:443\"";
    let dir = tempfile::tempdir().unwrap();
    // Tables must come after top-level keys: append the listener after [well_known].
    let text = crate::harness::base_config(dir.path(), "").replace("[[listeners]]", &format!("{extra}\n[[listeners]]"));
    let server = TestServer::start_in(dir, &text).await;
    let client = server.client();
    let reply = client.get("/.well-known/matrix/client").await;
    assert_eq!(reply.assert_ok()["m.homeserver"]["base_url"], "https://matrix.test.local");
    let reply = client.get("/.well-known/matrix/server").await;
    assert_eq!(reply.assert_ok()["m.server"], "matrix.test.local:443");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let server = TestServer::start_with("request_timeout_secs = 1").await;
    // Headers that never finish: the connection is closed.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server closed the connection instead of waiting forever");

    // A body that never finishes: 408.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /_matrix/client/v3/login HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");

    server.client().get("/_matrix/client/versions").await.assert_ok();
}

#[tokio::test]
async fn anonymous_endpoints_take_small_bodies_only() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    // A login padded with 100 KiB of unknown members: refused unread.
    let padding: String = (0..10_000).map(|i| format!(",\"p{i}\":0")).collect();
    let login = format!(
        "{{\"type\":\"m.login.password\",\"user\":\"alice\",\"password\":\"{}\"{padding}}}",
        crate::harness::PASSWORD
    );
    assert!(login.len() > 64 * 1024);
    let reply = server.client().send("POST", "/_matrix/client/v3/login", &[], Bytes::from(login)).await;
    reply.assert_error(413, "M_TOO_LARGE");
    // Under the limit, unknown members are skipped as they are parsed.
    let padding: String = (0..3_000).map(|i| format!(",\"p{i}\":[{{}}]")).collect();
    let login = format!(
        "{{\"type\":\"m.login.password\",\"user\":\"alice\",\"password\":\"{}\"{padding}}}",
        crate::harness::PASSWORD
    );
    server.client().send("POST", "/_matrix/client/v3/login", &[], Bytes::from(login)).await.assert_ok();
    // Authenticated endpoints keep max_request_size.
    let big = json!({ "notes": "x".repeat(200 * 1024) });
    alice
        .client
        .put(&format!("/_matrix/client/v3/user/{}/account_data/org.example.notes", alice.user_id), big)
        .await
        .assert_ok();
    // Not an object, not JSON, trailing garbage.
    let client = server.client();
    client
        .send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"\"text\""))
        .await
        .assert_error(400, "M_BAD_JSON");
    client
        .send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"{\"type\":"))
        .await
        .assert_error(400, "M_NOT_JSON");
    client
        .send("POST", "/_matrix/client/v3/login", &[], Bytes::from_static(b"{} {}"))
        .await
        .assert_error(400, "M_NOT_JSON");
    let deep = format!("{{\"type\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    client.send("POST", "/_matrix/client/v3/login", &[], Bytes::from(deep)).await.assert_error(413, "M_TOO_LARGE");
    // Deep nesting where it is ignored costs nothing (skipped without recursion); where it is read, refused.
    let nested = format!("{{\"x\":{}{}}}", "[".repeat(30_000), "]".repeat(30_000));
    let reply = client.send("POST", "/_matrix/client/v3/login", &[], Bytes::from(nested.clone())).await;
    reply.assert_error(400, "M_BAD_JSON");
    assert!(reply.body["error"].as_str().unwrap().contains("type"), "{}", reply.body);
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.deep", alice.user_id);
    alice.client.send("PUT", &path, &[], Bytes::from(nested)).await.assert_error(400, "M_NOT_JSON");
}

/// Whether the server closes `stream` within 10 s (reading whatever it sends first).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await, Ok(Ok(_)))
}

#[tokio::test]
async fn connections_that_do_not_use_their_slot_are_closed() {
    let server = TestServer::start_with("request_timeout_secs = 1\nkeepalive_timeout_secs = 2").await;
    // Nothing at all.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half of the HTTP/2 preface: the protocol is never decided.
    let mut half_preface = TcpStream::connect(server.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // Headers trickled a byte at a time, never finished.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        for byte in b"GET /_matrix/client/versions HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed_by_server(&mut trickle).await
    });
    assert!(closed_by_server(&mut silent).await, "a silent connection is closed");
    assert!(closed_by_server(&mut half_preface).await, "half an HTTP/2 preface is closed");
    assert!(trickling.await.unwrap(), "trickled headers are cut off");

    // A keep-alive connection: served, then closed once unused past its deadline…
    let mut keepalive = TcpStream::connect(server.addr).await.unwrap();
    keepalive.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut status = [0u8; 12];
    keepalive.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    assert!(closed_by_server(&mut keepalive).await, "an unused keep-alive connection is closed");

    // …but a request in flight longer than both deadlines (a long poll) is not cut.
    let alice = server.client().register("alice").await;
    let started = std::time::Instant::now();
    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let since = sync.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let poll = alice.client.get(&format!("/_matrix/client/v3/sync?timeout=3500&since={since}")).await;
    poll.assert_ok();
    assert!(started.elapsed() >= Duration::from_secs(3), "the long poll ran its course");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_their_turn() {
    let server = TestServer::start_with("max_connections = 2").await;
    let request = b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        stream.write_all(request).await.unwrap();
        let mut buffer = [0u8; 12];
        stream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"HTTP/1.1 200");
    }
    // Both stay open (keep-alive): a third client is not served yet.
    let third = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request).await.unwrap();
            let mut buffer = [0u8; 12];
            stream.read_exact(&mut buffer).await.unwrap();
            buffer
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "the third connection waits while two are open");
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(10), third).await.expect("served once a slot frees").unwrap();
    assert_eq!(&served, b"HTTP/1.1 200");
}

#[tokio::test]
async fn plain_listeners_also_speak_http2_with_prior_knowledge() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = TestServer::start().await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder().uri("http://x/_matrix/client/versions").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(!response.into_body().collect().await.unwrap().to_bytes().is_empty());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let body = r#"{"type":"m.login.password","user":"nobody","password":"x"}"#;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /_matrix/client/v3/login HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the request in flight");
    assert!(TcpStream::connect(addr).await.is_err(), "no new connections once shutdown began");

    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 403"), "the request completed: {response}");
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown completes").unwrap();
}

/// Every endpoint, called with well-formed parameters and an empty object:
/// a refusal is fine, an internal error (a handler reading a parameter its
/// paths do not name, say) is not.
#[tokio::test]
async fn no_endpoint_fails_internally_on_well_formed_parameters() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let value = |name: &str| -> String {
        let raw = match name {
            "room_id" | "room_id_or_alias" => room.clone(),
            "user_id" => alice.user_id.clone(),
            "event_id" => "$nope".to_owned(),
            "room_alias" => "#nope:test.local".to_owned(),
            "server_name" => "test.local".to_owned(),
            "scope" => "global".to_owned(),
            "kind" => "override".to_owned(),
            "rule_id" => "org.example.rule".to_owned(),
            "attribute" => "enabled".to_owned(),
            "field" => "displayname".to_owned(),
            "receipt_type" => "m.read".to_owned(),
            "device_id" => alice.device_id.clone(),
            "version" => "1".to_owned(),
            _ => "x".to_owned(),
        };
        crate::harness::enc(&raw)
    };
    // Those that end the session go last.
    use conduit::api::Endpoint as E;
    let ends_session = |e: E| {
        matches!(
            e,
            E::Logout
                | E::LogoutAll
                | E::DeleteDevice
                | E::DeleteDevices
                | E::Deactivate
                | E::AdminDeactivate
                | E::AdminResetPassword
                | E::AdminDeleteDevice
        )
    };
    let specs = conduit::api::ENDPOINTS.iter().filter(|s| !ends_session(s.endpoint));
    for spec in specs.chain(conduit::api::ENDPOINTS.iter().filter(|s| ends_session(s.endpoint))) {
        for pattern in spec.paths {
            let path: Vec<String> = pattern
                .split('/')
                .map(|part| match part {
                    p if p.starts_with(':') => value(p.trim_matches(&[':', '?'][..])),
                    p if p.starts_with('{') => {
                        p.trim_matches(&['{', '}'][..]).split('|').next_back().unwrap_or("v3").to_owned()
                    }
                    p => p.to_owned(),
                })
                .collect();
            let path = path.join("/");
            let method = spec.method.as_str();
            let reply = alice.client.send_raw(method, &path, &[], Bytes::from_static(b"{}")).await;
            let (status, _, body) = reply.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let body = String::from_utf8_lossy(&body);
            assert_ne!(status, 500, "{method} {path}: {body}");
            if !ends_session(spec.endpoint) {
                assert!(!body.contains("M_UNKNOWN_TOKEN"), "{method} {path}: the session is still valid");
            }
        }
    }
}
