//! Sending local events to the other servers of their rooms (server-server
//! API "Transactions").
//!
//! The rooms queue each local event durably for every destination in the
//! event's own write (`rooms::outbox`). Here, one task per destination with
//! queued events sends them in order, in transactions of at most
//! [`MAX_PDUS`] PDUs, one transaction in flight per destination, and removes
//! them once the destination answered 200. A failure waits before the next
//! attempt: 1 s, doubling up to `federation.max_retry_interval_secs`, cut
//! short when that server sends us a request ([`Sender::contacted`]). After
//! an outage (a failed attempt) with more than [`CATCH_UP_THRESHOLD`]
//! events waiting, only the latest event of each room is sent: the peer
//! fetches the gap. A backlog under load alone is sent whole. A slow or dead
//! server has its own task and delays no other. A task with nothing to send
//! for [`IDLE_EXIT`] ends; a new event starts it again.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use ruma::{OwnedServerName, ServerName};
use serde_json::{json, Value};

use crate::{
    error::Result, http::request::percent_encode, rooms::outbox::OutboxEntry, services::Services, util::now_ms,
};

/// Most PDUs in one transaction.
pub const MAX_PDUS: usize = 50;
/// Events waiting for one server beyond which only each room's latest is sent.
pub const CATCH_UP_THRESHOLD: usize = 500;
/// How long a destination's task waits for new events before ending.
const IDLE_EXIT: Duration = Duration::from_secs(300);

/// Most EDUs in one transaction, and waiting for one destination (beyond,
/// the oldest typing notification, receipt or presence is dropped, else the
/// oldest EDU).
pub const MAX_EDUS: usize = 100;

/// The destinations' tasks, each with the signal that wakes it, and the
/// EDUs waiting for each destination (in memory: typing notifications and
/// read receipts are not worth a disk write each).
#[derive(Default)]
pub struct Sender {
    workers: std::sync::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Notify>>>,
    edus: std::sync::Mutex<HashMap<OwnedServerName, std::collections::VecDeque<Value>>>,
}

impl Sender {
    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedServerName, Arc<tokio::sync::Notify>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `server` just sent us a request: it is up, so a pending retry to it
    /// happens now.
    pub fn contacted(&self, server: &ServerName) {
        if let Some(wake) = self.workers().get(server) {
            wake.notify_one();
        }
    }

    /// Destinations with a task.
    pub fn active(&self) -> usize {
        self.workers().len()
    }

    fn edus(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedServerName, std::collections::VecDeque<Value>>> {
        self.edus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an EDU for `destination` (the caller wakes its task).
    pub fn queue_edu(&self, destination: &ServerName, edu: Value) {
        let mut edus = self.edus();
        let queue = edus.entry(destination.to_owned()).or_default();
        if queue.len() >= MAX_EDUS {
            make_room(queue);
        }
        queue.push_back(edu);
    }

    /// Up to [`MAX_EDUS`] EDUs waiting for `destination`.
    fn take_edus(&self, destination: &ServerName) -> Vec<Value> {
        let mut edus = self.edus();
        let Some(queue) = edus.get_mut(destination) else { return Vec::new() };
        let taken: Vec<Value> = queue.drain(..queue.len().min(MAX_EDUS)).collect();
        if queue.is_empty() {
            edus.remove(destination);
        }
        taken
    }

    /// EDUs a failed transaction carried, queued again ahead of newer ones (within the bound).
    fn requeue_edus(&self, destination: &ServerName, failed: Vec<Value>) {
        let mut edus = self.edus();
        let queue = edus.entry(destination.to_owned()).or_default();
        for edu in failed.into_iter().rev() {
            if queue.len() >= MAX_EDUS {
                break;
            }
            queue.push_front(edu);
        }
    }

    fn has_edus(&self, destination: &ServerName) -> bool {
        self.edus().contains_key(destination)
    }
}

/// Drops one EDU of a full queue: the oldest of those superseded by later
/// ones or of little worth late (typing, receipts, presence), else the
/// oldest (to-device messages and key changes are kept longest).
fn make_room(queue: &mut std::collections::VecDeque<Value>) {
    let ephemeral =
        queue.iter().position(|edu| matches!(edu["edu_type"].as_str(), Some("m.typing" | "m.receipt" | "m.presence")));
    queue.remove(ephemeral.unwrap_or(0));
}

/// Starts sending: the destinations queued before a restart, then each new
/// event's as the rooms signal them.
pub fn start(services: &Arc<Services>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(services);
    runtime.spawn(async move {
        match weak.upgrade().map(|s| s.rooms.outbox_destinations()) {
            Some(Ok(destinations)) => {
                for destination in destinations {
                    ensure_worker(&weak, destination);
                }
            }
            Some(Err(error)) => tracing::error!(%error, "could not read the federation queue"),
            None => return,
        }
        let Some(signal) = weak.upgrade().map(|s| s.rooms.outbox_signal()) else { return };
        loop {
            // Registered before the set is read: no signal is lost in between.
            let notified = signal.wakeup.notified();
            let marked = signal.take();
            if weak.strong_count() == 0 {
                return;
            }
            for destination in marked {
                ensure_worker(&weak, destination);
            }
            notified.await;
        }
    });
}

/// Wakes `destination`'s task, starting one if it has none.
fn ensure_worker(services: &Weak<Services>, destination: OwnedServerName) {
    let Some(strong) = services.upgrade() else { return };
    let mut workers = strong.federation.sender.workers();
    if let Some(wake) = workers.get(&destination) {
        wake.notify_one();
        return;
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    workers.insert(destination.clone(), Arc::clone(&wake));
    tokio::spawn(run_destination(services.clone(), destination, wake));
}

/// One destination's task: send what is queued, in order, until idle.
async fn run_destination(services: Weak<Services>, destination: OwnedServerName, wake: Arc<tokio::sync::Notify>) {
    let mut failures = 0u32;
    loop {
        let Some(s) = services.upgrade() else { return };
        let page = match next_page(&s, &destination, failures > 0).await {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(%destination, %error, "could not read the federation queue");
                Vec::new()
            }
        };
        let edus = s.federation.sender.take_edus(&destination);
        if page.is_empty() && edus.is_empty() {
            drop(s);
            if tokio::time::timeout(IDLE_EXIT, wake.notified()).await.is_ok() {
                continue;
            }
            if let Some(s) = services.upgrade() {
                let mut workers = s.federation.sender.workers();
                // Checked again under the lock: an event queued meanwhile keeps the task.
                let idle = s.rooms.outbox_page(&destination, 1).map(|p| p.is_empty()).unwrap_or(true)
                    && !s.federation.sender.has_edus(&destination);
                if idle {
                    workers.remove(&destination);
                    return;
                }
            }
            continue;
        }
        match send_transaction(&s, &destination, &page, &edus).await {
            Ok(()) => {
                failures = 0;
                let positions: Vec<u64> = page.iter().map(|entry| entry.position).collect();
                if let Err(error) = s.rooms.outbox_remove(&destination, &positions).await {
                    tracing::error!(%destination, %error, "could not remove sent events from the queue");
                }
            }
            Err(error) => {
                s.federation.sender.requeue_edus(&destination, edus);
                failures = failures.saturating_add(1);
                let wait = retry_wait(failures, s.config.federation.max_retry_interval_secs);
                tracing::info!(%destination, %error, retry_in_secs = wait.as_secs(), "transaction not delivered");
                drop(s);
                let _ = tokio::time::timeout(wait, wake.notified()).await;
            }
        }
    }
}

/// A transaction's id: its first and last positions and a digest of all of
/// them, so a retry with other events (one queued late, below the last)
/// never reuses the id of what the peer already answered.
fn transaction_id(page: &[OutboxEntry]) -> String {
    let digest = page.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, entry| {
        (hash ^ entry.position).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
    });
    let (first, last) = (page.first().map_or(0, |e| e.position), page.last().map_or(0, |e| e.position));
    format!("{first}-{last}-{digest:016x}")
}

/// The wait after `failures` failed attempts in a row: 1 s doubling, capped.
pub fn retry_wait(failures: u32, max_secs: u64) -> Duration {
    let secs = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(secs.min(max_secs.max(1)))
}

/// The next events to send; after failures (an outage), a long backlog is
/// first cut to each room's latest event.
async fn next_page(s: &Services, destination: &ServerName, after_failures: bool) -> Result<Vec<OutboxEntry>> {
    let dropped = if after_failures { s.rooms.outbox_catch_up(destination, CATCH_UP_THRESHOLD).await? } else { 0 };
    if dropped > 0 {
        tracing::info!(%destination, dropped, "long backlog: only each room's latest event is sent, the server fetches the rest");
    }
    s.rooms.outbox_page(destination, MAX_PDUS)
}

/// One transaction with `page`'s events; Ok once the destination answered 200.
async fn send_transaction(s: &Services, destination: &ServerName, page: &[OutboxEntry], edus: &[Value]) -> Result<()> {
    let mut pdus = Vec::with_capacity(page.len());
    for entry in page {
        match s.rooms.get_pdu(&entry.event_id)? {
            Some((_, stored)) => pdus.push(serde_json::from_str::<Value>(&stored.json).unwrap_or(Value::Null)),
            None => tracing::warn!(event = %entry.event_id, "a queued event is not stored; skipped"),
        }
    }
    let txn_id = match page.is_empty() {
        false => transaction_id(page),
        // EDUs alone: a transaction id never used before.
        true => format!("edu-{}-{}", now_ms(), crate::crypto::tokens::random_alphanumeric(8)),
    };
    let body = json!({
        "origin": s.config.server_name,
        "origin_server_ts": now_ms(),
        "pdus": pdus,
        "edus": edus,
    });
    let path = format!("/_matrix/federation/v1/send/{}", percent_encode(&txn_id));
    let answer = s.federation.request(destination, "PUT", &path, Some(&body)).await?;
    for (event_id, result) in answer.get("pdus").and_then(Value::as_object).into_iter().flatten() {
        if let Some(error) = result.get("error") {
            tracing::info!(%destination, event = %event_id, %error, "the server refused an event");
        }
    }
    tracing::debug!(%destination, txn = %txn_id, events = page.len(), "transaction delivered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_typing_before_to_device_messages() {
        let sender = Sender::default();
        let server = <&ServerName>::try_from("b.example").expect("a server name");
        sender.queue_edu(server, json!({ "edu_type": "m.direct_to_device", "content": { "n": 0 } }));
        for n in 1..MAX_EDUS {
            sender.queue_edu(server, json!({ "edu_type": "m.typing", "content": { "n": n } }));
        }
        sender.queue_edu(server, json!({ "edu_type": "m.direct_to_device", "content": { "n": MAX_EDUS } }));
        let queued = sender.take_edus(server);
        assert_eq!(queued.len(), MAX_EDUS);
        assert_eq!(queued[0]["content"]["n"], 0, "the to-device message is kept");
        assert_eq!(queued[1]["content"]["n"], 2, "the oldest typing notification went");
        assert_eq!(queued[MAX_EDUS - 1]["content"]["n"], MAX_EDUS);
    }

    #[test]
    fn retries_double_up_to_the_configured_maximum() {
        let waits: Vec<u64> = (1..=12).map(|n| retry_wait(n, 300).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_wait(u32::MAX, 300).as_secs(), 300);
        assert_eq!(retry_wait(3, 0).as_secs(), 1, "never a busy loop");
    }
}
