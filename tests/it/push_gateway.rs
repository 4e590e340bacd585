//! Pushes to a push gateway: a local gateway records what it receives and
//! answers as told (success, rejected pushkeys, failures).

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{base_config, Session, TestServer};

const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// A push gateway on 127.0.0.1 that records every notification it gets and
/// answers 500 while `failing`, else with the queued replies, else with 200
/// `{"rejected": []}`.
#[derive(Clone)]
pub struct Gateway {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
    replies: Arc<Mutex<VecDeque<(u16, Value)>>>,
    failing: Arc<AtomicBool>,
    /// The pushes answered with success.
    delivered: Arc<Mutex<Vec<Value>>>,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_serving(None).await
    }

    /// A gateway behind TLS with the given certificate.
    async fn start_tls(dir: &std::path::Path) -> Self {
        use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        crate::tls::write_certificate(dir, "gateway");
        let chain = vec![CertificateDer::from_pem_file(dir.join("gateway.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("gateway.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start_serving(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_serving(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let gateway = Self {
            addr: listener.local_addr().expect("gateway address"),
            received: Arc::default(),
            replies: Arc::default(),
            failing: Arc::default(),
            delivered: Arc::default(),
        };
        let state = gateway.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| state.clone().answer(request));
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http1::Builder::new().serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                        None => http1::Builder::new().serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        gateway
    }

    async fn answer(self, request: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let path_ok = request.uri().path() == NOTIFY_PATH && request.method() == hyper::Method::POST;
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let (status, reply) = if path_ok {
            let push: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.received.lock().unwrap().push(push.clone());
            let reply = if self.failing.load(Ordering::SeqCst) {
                (500, json!({ "errcode": "M_UNKNOWN" }))
            } else {
                self.replies.lock().unwrap().pop_front().unwrap_or((200, json!({ "rejected": [] })))
            };
            if reply.0 == 200 {
                self.delivered.lock().unwrap().push(push);
            }
            reply
        } else {
            (404, json!({}))
        };
        let mut response = hyper::Response::new(Full::new(Bytes::from(reply.to_string())));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        Ok(response)
    }

    pub fn url(&self) -> String {
        format!("http://{}{NOTIFY_PATH}", self.addr)
    }

    fn reply_next(&self, status: u16, body: Value) {
        self.replies.lock().unwrap().push_back((status, body));
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn delivered(&self) -> Vec<Value> {
        self.delivered.lock().unwrap().clone()
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` notifications arrived (or fails after 20 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway got {} notifications, expected {n}: {:?}", self.received().len(), self.received());
    }
}

/// Polls `condition` for up to 20 s.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

pub const ALLOW_LOCAL_GATEWAYS: &str = "[push]\nallow_private_gateways = true\n";

pub async fn set_pusher(session: &Session, pushkey: &str, data: Value) {
    let pusher = json!({
        "pushkey": pushkey,
        "kind": "http",
        "app_id": "fr.gouv.tchap.android",
        "app_display_name": "Tchap",
        "device_display_name": "Téléphone",
        "lang": "fr",
        "data": data,
        "append": true,
    });
    session.client.post("/_matrix/client/v3/pushers/set", pusher).await.assert_ok();
}

async fn pushers_of(session: &Session) -> Vec<Value> {
    session.client.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"].as_array().unwrap().clone()
}

#[tokio::test]
async fn notifications_reach_the_gateway_in_full_and_event_id_only_formats() {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(ALLOW_LOCAL_GATEWAYS).await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", crate::harness::enc(&room)),
            json!({"name": "Forum RH"}),
        )
        .await
        .assert_ok();
    alice
        .client
        .put("/_matrix/client/v3/profile/@alice:test.local/displayname", json!({"displayname": "Alice Martin"}))
        .await
        .assert_ok();
    set_pusher(&bob, "phone-key", json!({ "url": gateway.url(), "custom": "kept" })).await;

    let first = alice.send_text(&room, "t1", "Bonjour Bob").await;
    let received = gateway.wait_for(1).await;
    let notification = &received[0]["notification"];
    assert_eq!(notification["event_id"], first.as_str());
    assert_eq!(notification["id"], first.as_str(), "the pre-spec name too, for older gateways");
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], "@alice:test.local");
    assert_eq!(notification["sender_display_name"], "Alice Martin");
    assert_eq!(notification["room_name"], "Forum RH");
    assert_eq!(notification["content"]["body"], "Bonjour Bob");
    assert_eq!(notification["counts"]["unread"], 1);
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], "fr.gouv.tchap.android");
    assert_eq!(device["pushkey"], "phone-key");
    assert_eq!(device["data"], json!({ "custom": "kept" }), "the url is not sent to the gateway");

    // A mention highlights; a second pusher in event_id_only format gets no content.
    set_pusher(&bob, "tablet-key", json!({ "url": gateway.url(), "format": "event_id_only" })).await;
    let mention = alice
        .send_content(
            &room,
            "t2",
            json!({ "msgtype": "m.text", "body": "bob: réunion à 10h", "m.mentions": { "user_ids": ["@bob:test.local"] } }),
        )
        .await;
    let received = gateway.wait_for(3).await;
    let about_mention: Vec<&Value> =
        received.iter().map(|r| &r["notification"]).filter(|n| n["event_id"] == mention.as_str()).collect();
    assert_eq!(about_mention.len(), 2, "one push per pusher: {received:?}");
    let full = about_mention.iter().find(|n| n["devices"][0]["pushkey"] == "phone-key").unwrap();
    assert_eq!(full["devices"][0]["tweaks"]["highlight"], true);
    assert_eq!(full["prio"], "high");
    assert_eq!(full["counts"]["unread"], 2);
    let minimal = about_mention.iter().find(|n| n["devices"][0]["pushkey"] == "tablet-key").unwrap();
    assert!(minimal.get("content").is_none() && minimal.get("sender").is_none(), "{minimal}");
    assert!(!minimal.to_string().contains("réunion"));
    assert_eq!(minimal["room_id"], room.as_str());

    // The sender's own messages never push to the sender, and bob's own neither.
    bob.send_text(&room, "t3", "merci").await;
    alice.send_text(&room, "t4", "de rien").await;
    let last = alice.send_text(&room, "t5", "à demain").await;
    eventually("the last message is pushed to both pushers", async || {
        gateway.received().iter().filter(|r| r["notification"]["event_id"] == last.as_str()).count() == 2
    })
    .await;
    let received = gateway.received();
    assert_eq!(received.len(), 7, "t1 once, t2, t4 and t5 twice, t3 (bob's own) never: {received:?}");
    assert!(received.iter().all(|r| r["notification"]["sender"] != "@bob:test.local"));
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(ALLOW_LOCAL_GATEWAYS).await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    set_pusher(&bob, "expired-key", json!({ "url": gateway.url() })).await;
    gateway.reply_next(200, json!({ "rejected": ["expired-key"] }));
    alice.send_text(&room, "t1", "bonjour").await;
    gateway.wait_for(1).await;
    eventually("the rejected pusher is removed", async || pushers_of(&bob).await.is_empty()).await;

    // Later messages go to the pushers that remain only.
    set_pusher(&bob, "new-key", json!({ "url": gateway.url() })).await;
    let later = alice.send_text(&room, "t2", "vous êtes là ?").await;
    let received = gateway.wait_for(2).await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[1]["notification"]["event_id"], later.as_str());
    assert_eq!(received[1]["notification"]["devices"][0]["pushkey"], "new-key");
}

#[tokio::test]
async fn failed_pushes_are_retried_and_survive_a_restart() {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(ALLOW_LOCAL_GATEWAYS).await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    set_pusher(&bob, "phone-key", json!({ "url": gateway.url() })).await;

    // One failure, then success: the same notification arrives twice.
    gateway.reply_next(503, json!({}));
    let event = alice.send_text(&room, "t1", "premier").await;
    let received = gateway.wait_for(2).await;
    assert_eq!(received[0]["notification"]["event_id"], event.as_str());
    assert_eq!(received[1]["notification"]["event_id"], event.as_str());
    eventually("the queue is empty", async || server.services().storage.tables.push_queue.is_empty()).await;

    // The gateway keeps failing; the push waits in the queue across a restart.
    gateway.set_failing(true);
    let waiting = alice.send_text(&room, "t2", "deuxième").await;
    gateway.wait_for(3).await;
    assert_eq!(server.services().storage.tables.push_queue.len(), 1);
    let dir = server.stop().await;
    gateway.set_failing(false);
    let delivered = gateway.received().len();
    let text = base_config(dir.path(), ALLOW_LOCAL_GATEWAYS);
    let server = TestServer::start_in(dir, &text).await;
    eventually("the queued push is delivered after the restart", async || {
        gateway.received()[delivered..].iter().any(|r| r["notification"]["event_id"] == waiting.as_str())
    })
    .await;
    eventually("the queue is empty", async || server.services().storage.tables.push_queue.is_empty()).await;
    let _ = bob;
}

#[tokio::test]
async fn gateways_on_local_addresses_are_refused_by_default() {
    let gateway = Gateway::start().await;
    let server = TestServer::start().await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    // Refused when set, so the client knows, rather than accepted and never called.
    let by_name = format!("http://localhost:{}{NOTIFY_PATH}", gateway.addr.port());
    for url in [gateway.url(), by_name] {
        let pusher = json!({
            "pushkey": "phone-key", "kind": "http", "app_id": "fr.gouv.tchap.android", "app_display_name": "Tchap",
            "device_display_name": "Téléphone", "lang": "fr", "data": { "url": url },
        });
        let refused = bob.client.post("/_matrix/client/v3/pushers/set", pusher).await;
        refused.assert_error(400, "M_INVALID_PARAM");
        assert!(refused.body["error"].as_str().unwrap().contains("allow_private_gateways"), "{}", refused.body);
    }
    assert!(pushers_of(&bob).await.is_empty());
    alice.send_text(&room, "t1", "bonjour").await;
    assert!(server.services().storage.tables.push_queue.is_empty());
    assert!(gateway.received().is_empty());
}

#[tokio::test]
async fn read_events_are_not_pushed_and_deactivation_removes_pushers() {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(ALLOW_LOCAL_GATEWAYS).await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    set_pusher(&bob, "phone-key", json!({ "url": gateway.url() })).await;
    gateway.set_failing(true);
    let event = alice.send_text(&room, "t1", "bonjour").await;
    gateway.wait_for(1).await;
    // Bob reads it on another device while the gateway is failing: the retry is not sent.
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&event)
    );
    bob.client.post(&receipt, json!({})).await.assert_ok();
    let attempts_before_the_read = gateway.received().len();
    gateway.set_failing(false);
    eventually("the read push is dropped", async || server.services().storage.tables.push_queue.is_empty()).await;
    // What follows the read is the badge update only (counts, no event).
    let after: Vec<Value> = gateway.received()[attempts_before_the_read..].to_vec();
    assert!(after.iter().all(|r| r["notification"].get("event_id").is_none()), "no event after the read: {after:?}");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["notification"]["counts"], json!({ "unread": 0 }));
    assert_eq!(after[0]["notification"]["devices"][0]["pushkey"], "phone-key");

    let deactivate = bob.client.post("/_matrix/client/v3/account/deactivate", json!({})).await;
    let session = deactivate.body["session"].as_str().unwrap().to_owned();
    bob.client
        .post("/_matrix/client/v3/account/deactivate", json!({ "auth": bob.password_auth(&session) }))
        .await
        .assert_ok();
    let stored = server.services().users.pushers("bob").unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn https_gateways_are_trusted_through_the_configured_ca_file() {
    let certificates = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_tls(certificates.path()).await;
    let ca_file = certificates.path().join("gateway.pem").display().to_string();
    let server = TestServer::start_with(&format!("{ALLOW_LOCAL_GATEWAYS}ca_file = {ca_file:?}\n")).await;
    let ([alice, bob], room) = server.client().public_room_with(["alice", "bob"]).await;
    let url = format!("https://localhost:{}{NOTIFY_PATH}", gateway.addr.port());
    set_pusher(&bob, "phone-key", json!({ "url": url })).await;
    let event = alice.send_text(&room, "t1", "par TLS").await;
    let received = gateway.wait_for(1).await;
    assert_eq!(received[0]["notification"]["event_id"], event.as_str());
    assert_eq!(received[0]["notification"]["content"]["body"], "par TLS");
}

#[tokio::test]
async fn logging_a_device_out_removes_the_pushers_it_set() {
    let gateway = Gateway::start().await;
    let server = TestServer::start_with(ALLOW_LOCAL_GATEWAYS).await;
    let client = server.client();
    let ([alice, bob], room) = client.public_room_with(["alice", "bob"]).await;
    let phone = Session::from_reply(&client, client.login("bob", crate::harness::PASSWORD).await.assert_ok());
    set_pusher(&phone, "phone-key", json!({ "url": gateway.url() })).await;
    set_pusher(&bob, "laptop-key", json!({ "url": gateway.url() })).await;
    assert_eq!(pushers_of(&bob).await.len(), 2);

    // The phone is handed back: once it is logged out, it gets nothing more.
    phone.client.post("/_matrix/client/v3/logout", json!({})).await.assert_ok();
    let remaining = pushers_of(&bob).await;
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["pushkey"], "laptop-key");
    let event = alice.send_text(&room, "t1", "confidentiel").await;
    let received = gateway.wait_for(1).await;
    eventually("the queue is empty", async || server.services().storage.tables.push_queue.is_empty()).await;
    let received_now = gateway.received();
    assert_eq!(received_now.len(), 1, "{received_now:?}");
    assert_eq!(received[0]["notification"]["event_id"], event.as_str());
    assert_eq!(received[0]["notification"]["devices"][0]["pushkey"], "laptop-key");
}
