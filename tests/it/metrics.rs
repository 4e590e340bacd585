//! `GET /metrics` on its own listener, scraped and parsed by Prometheus's
//! own Python client (`prometheus_client` 0.26.0, pinned, in a venv made on
//! first use): requests by endpoint and status, latency histograms, sync
//! long-polls, events persisted, queues, process figures, build info.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::harness::{Client, TestServer};

/// The samples of an OpenMetrics text, as `prometheus_client`'s parser reads them:
/// sample name → [(labels, value)].
async fn parse_openmetrics(text: String) -> BTreeMap<String, Vec<(Value, f64)>> {
    let venv =
        tokio::task::spawn_blocking(|| crate::synapse::python_venv("metrics-venv", &["prometheus_client==0.26.0"]))
            .await
            .expect("install prometheus_client");
    let script = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(venv.join("bin/python"))
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the metrics");
        child.wait_with_output().expect("parse")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "the parser refused the text: {}", String::from_utf8_lossy(&output.stderr));
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&output.stdout).expect("the parser's JSON");
    let mut by_name: BTreeMap<String, Vec<(Value, f64)>> = BTreeMap::new();
    for (name, labels, value) in samples {
        by_name.entry(name).or_default().push((labels, value));
    }
    by_name
}

fn value(samples: &BTreeMap<String, Vec<(Value, f64)>>, name: &str, labels: Value) -> f64 {
    let found = samples.get(name).and_then(|all| all.iter().find(|(l, _)| *l == labels));
    found.map(|(_, v)| *v).unwrap_or_else(|| panic!("no {name} {labels}: {:?}", samples.get(name)))
}

async fn scrape(server: &TestServer) -> BTreeMap<String, Vec<(Value, f64)>> {
    let addr = server.handle().metrics_addr.expect("a metrics listener");
    let (status, headers, body) = Client::new(addr).send_raw("GET", "/metrics", &[], Default::default()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    parse_openmetrics(String::from_utf8(body.to_vec()).unwrap()).await
}

#[tokio::test]
async fn prometheus_parses_what_the_metrics_listener_serves() {
    let server = TestServer::start_with("[metrics]\naddress = \"127.0.0.1:0\"").await;
    let client = server.client();
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "t1", "hello").await;
    for _ in 0..3 {
        client.get("/_matrix/client/versions").await.assert_ok();
    }
    client.get("/_matrix/client/v3/nowhere").await.assert_error(404, "M_UNRECOGNIZED");

    // A long-poll held open while the scrape happens.
    let since = alice.client.get("/_matrix/client/v3/sync?timeout=0").await.assert_ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let poller = alice.clone();
    let poll = tokio::spawn(async move {
        poller.client.get(&format!("/_matrix/client/v3/sync?timeout=20000&since={since}")).await
    });
    // Scraped until the poll is seen (it may take a moment to arrive on a busy machine).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let samples = loop {
        let samples = scrape(&server).await;
        if value(&samples, "conduit_sync_long_polls", json!({})) == 1.0 {
            break samples;
        }
        assert!(std::time::Instant::now() < deadline, "the long-poll never showed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    alice.send_text(&room, "t2", "wake up").await;
    poll.await.unwrap().assert_ok();

    assert!(value(&samples, "conduit_http_requests_total", json!({ "endpoint": "Versions", "status": "200" })) >= 3.0);
    assert_eq!(
        value(&samples, "conduit_http_requests_total", json!({ "endpoint": "Unrecognized", "status": "404" })),
        1.0
    );
    let count = value(&samples, "conduit_http_request_duration_seconds_count", json!({ "endpoint": "Versions" }));
    assert!(count >= 3.0);
    let buckets = samples["conduit_http_request_duration_seconds_bucket"]
        .iter()
        .filter(|(l, _)| l["endpoint"] == "Versions")
        .count();
    assert_eq!(buckets, 13, "12 bounds and +Inf");
    assert!(value(&samples, "conduit_events_persisted_total", json!({})) >= 7.0, "the room's events and the message");
    assert!(value(&samples, "conduit_process_resident_memory_bytes", json!({})) > 1_000_000.0);
    assert!(value(&samples, "conduit_process_open_fds", json!({})) > 3.0);
    assert!(value(&samples, "conduit_database_bytes", json!({})) > 0.0);
    assert_eq!(value(&samples, "conduit_database_cache_bytes", json!({})), 8.0 * 1024.0 * 1024.0);
    assert_eq!(value(&samples, "conduit_mail_queue_depth", json!({})), 0.0);
    assert_eq!(value(&samples, "conduit_build_info", json!({ "version": env!("CARGO_PKG_VERSION") })), 1.0);
    assert!(samples.contains_key("conduit_uptime_seconds"));

    let later = scrape(&server).await;
    assert_eq!(value(&later, "conduit_sync_long_polls", json!({})), 0.0, "the poll ended (it was answered)");

    // Only /metrics there; and /metrics is not on the client listener.
    let addr = server.handle().metrics_addr.unwrap();
    let (status, _, _) =
        Client::new(addr).send_raw("GET", "/_matrix/client/versions", &[], Default::default()).await.unwrap();
    assert_eq!(status, 404);
    client.get("/metrics").await.assert_error(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn without_metrics_there_is_no_metrics_listener() {
    let server = TestServer::start().await;
    assert!(server.handle().metrics_addr.is_none());
}
