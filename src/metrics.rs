//! What an operator's Prometheus scrapes at `GET /metrics` on the
//! `[metrics] address` listener (OpenMetrics text, encoded by the
//! `prometheus-client` crate): requests by endpoint and status with
//! latency histograms, `/sync` long-polls open, events persisted, the
//! federation, push and mail queues, the database's size and cache, the
//! process's memory and open files, uptime and build information.
//!
//! Counters and histograms are updated as requests go; the queue depths,
//! sizes and process figures are read when a scrape asks for them.

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label sets: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// Seconds bounds of the request latency histograms.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram>,
    long_polls: Arc<AtomicI64>,
    long_polls_gauge: Gauge,
    events_persisted: Counter,
    events_seen: AtomicU64,
    federation_queue: Family<Labels, Gauge>,
    push_queue: Gauge,
    mail_queue: Gauge,
    database_bytes: Gauge,
    resident_memory_bytes: Gauge,
    open_fds: Gauge,
    uptime_seconds: Gauge,
    started: Instant,
}

/// What a scrape reads from the rest of the server.
pub struct Snapshot {
    pub events_persisted: u64,
    pub federation_queue: Vec<(String, usize)>,
    pub push_queue: usize,
    pub mail_queue: usize,
    pub database_bytes: u64,
}

/// Counts a `/sync` long-poll while it is held.
pub struct LongPoll(Arc<AtomicI64>);

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new(database_cache_bytes: u64) -> Self {
        let mut registry = Registry::with_prefix("conduit");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "Requests answered, by endpoint and status", requests.clone());
        let request_seconds = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register("http_request_duration_seconds", "Time to answer, by endpoint", request_seconds.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let long_polls_gauge = gauge(&mut registry, "sync_long_polls", "/sync requests waiting for something new");
        let events_persisted = Counter::default();
        registry.register("events_persisted", "Room events stored since start", events_persisted.clone());
        let federation_queue = Family::<Labels, Gauge>::default();
        registry.register("federation_queue_depth", "Events waiting for each destination", federation_queue.clone());
        let push_queue = gauge(&mut registry, "push_queue_depth", "Pushes waiting for their gateway");
        let mail_queue = gauge(&mut registry, "mail_queue_depth", "Mails waiting for the SMTP server");
        let database_bytes = gauge(&mut registry, "database_bytes", "The database's size on disk");
        let cache = gauge(&mut registry, "database_cache_bytes", "The database's page cache (database_cache_mb)");
        cache.set(i64::try_from(database_cache_bytes).unwrap_or(i64::MAX));
        let resident_memory_bytes = gauge(&mut registry, "process_resident_memory_bytes", "Resident memory");
        let open_fds = gauge(&mut registry, "process_open_fds", "Open file descriptors");
        let uptime_seconds = gauge(&mut registry, "uptime_seconds", "Seconds since start");
        let build_info = Family::<Labels, Gauge>::default();
        registry.register("build_info", "The running version", build_info.clone());
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        Self {
            registry,
            requests,
            request_seconds,
            long_polls: Arc::default(),
            long_polls_gauge,
            events_persisted,
            events_seen: AtomicU64::new(0),
            federation_queue,
            push_queue,
            mail_queue,
            database_bytes,
            resident_memory_bytes,
            open_fds,
            uptime_seconds,
            started: Instant::now(),
        }
    }

    /// One request answered.
    pub fn observe_request(&self, endpoint: &str, status: u16, elapsed: Duration) {
        let endpoint = endpoint.to_owned();
        self.requests.get_or_create(&vec![("endpoint", endpoint.clone()), ("status", status.to_string())]).inc();
        self.request_seconds.get_or_create(&vec![("endpoint", endpoint)]).observe(elapsed.as_secs_f64());
    }

    /// Counts a `/sync` long-poll until the guard is dropped.
    pub fn long_poll(&self) -> LongPoll {
        self.long_polls.fetch_add(1, Ordering::Relaxed);
        LongPoll(Arc::clone(&self.long_polls))
    }

    /// The OpenMetrics text of every metric, the read ones as `snapshot` says.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let seen = self.events_seen.swap(snapshot.events_persisted, Ordering::Relaxed);
        self.events_persisted.inc_by(snapshot.events_persisted.saturating_sub(seen));
        self.long_polls_gauge.set(self.long_polls.load(Ordering::Relaxed));
        self.federation_queue.clear();
        for (destination, depth) in &snapshot.federation_queue {
            self.federation_queue.get_or_create(&vec![("destination", destination.clone())]).set(count(*depth));
        }
        self.push_queue.set(count(snapshot.push_queue));
        self.mail_queue.set(count(snapshot.mail_queue));
        self.database_bytes.set(i64::try_from(snapshot.database_bytes).unwrap_or(i64::MAX));
        let (resident, fds) = process_figures();
        self.resident_memory_bytes.set(resident);
        self.open_fds.set(fds);
        self.uptime_seconds.set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Resident memory (bytes) and open file descriptors, from `/proc` (0 elsewhere).
fn process_figures() -> (i64, i64) {
    let resident = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |entries| count(entries.count()));
    (resident, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_read_figures_are_rendered() {
        let metrics = Metrics::new(8 << 20);
        metrics.observe_request("Versions", 200, Duration::from_millis(3));
        let poll = metrics.long_poll();
        let snapshot = Snapshot {
            events_persisted: 7,
            federation_queue: vec![("b.example".into(), 3)],
            push_queue: 1,
            mail_queue: 2,
            database_bytes: 4096,
        };
        let text = metrics.render(&snapshot);
        assert!(text.contains("conduit_http_requests_total{endpoint=\"Versions\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("conduit_sync_long_polls 1"), "{text}");
        assert!(text.contains("conduit_events_persisted_total 7"), "{text}");
        assert!(text.contains("conduit_federation_queue_depth{destination=\"b.example\"} 3"), "{text}");
        drop(poll);
        let again = metrics.render(&Snapshot { events_persisted: 9, ..snapshot });
        assert!(again.contains("conduit_events_persisted_total 9") && again.contains("conduit_sync_long_polls 0"));
        assert!(again.ends_with("# EOF\n"));
    }
}
