//! The long operations the admin API runs — room shutdowns and history
//! purges — with their statuses, and the server's background work:
//! `GET /_conduit/admin/v1/jobs` (queues and the recent operations),
//! `GET /_conduit/admin/v1/storage` (what each table of the database holds) and
//! Synapse's `GET /_synapse/admin/v1/background_updates/status` (this server
//! migrates its database at start-up, never in the background: always idle).
//!
//! Each operation runs within its request (a client hanging up does not
//! stop it), so its status is final when the answer comes; the statuses of
//! the last [`MAX_OPERATIONS`] are kept in memory, as Synapse keeps its own.

use std::{collections::VecDeque, sync::Mutex};

use ruma::{OwnedRoomId, RoomId};
use serde_json::{json, Value};

use crate::{http::Response, services::Services, util::now_ms};

/// Operation statuses kept (the oldest go first).
pub const MAX_OPERATIONS: usize = 1_000;

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shutdown,
    PurgeHistory,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::PurgeHistory => "purge_history",
        }
    }
}

struct Operation {
    id: String,
    kind: Kind,
    room_id: OwnedRoomId,
    started_ts: u64,
    finished_ts: u64,
    /// The status as the operation's own status endpoint shows it.
    status: Value,
}

/// The recent operations, by id.
#[derive(Default)]
pub struct Operations {
    done: Mutex<VecDeque<Operation>>,
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Operation>> {
        self.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps the final `status` of an operation that started at `started_ts`.
    pub fn record(&self, kind: Kind, id: &str, room_id: &RoomId, started_ts: u64, status: Value) {
        let mut done = self.lock();
        if done.len() >= MAX_OPERATIONS {
            done.pop_front();
        }
        let operation = Operation {
            id: id.to_owned(),
            kind,
            room_id: room_id.to_owned(),
            started_ts,
            finished_ts: now_ms(),
            status,
        };
        done.push_back(operation);
    }

    /// The statuses of a room's operations of `kind`, oldest first.
    pub fn of_room(&self, kind: Kind, room_id: &RoomId) -> Vec<Value> {
        let done = self.lock();
        done.iter().filter(|op| op.kind == kind && op.room_id == room_id).map(|op| op.status.clone()).collect()
    }

    /// The status of the operation `id` of `kind`.
    pub fn by_id(&self, kind: Kind, id: &str) -> Option<Value> {
        self.lock().iter().find(|op| op.kind == kind && op.id == id).map(|op| op.status.clone())
    }

    fn summaries(&self) -> Vec<Value> {
        let done = self.lock();
        done.iter()
            .rev()
            .map(|op| {
                json!({
                    "id": op.id,
                    "kind": op.kind.name(),
                    "room_id": op.room_id,
                    "status": op.status["status"],
                    "started_ts": op.started_ts,
                    "finished_ts": op.finished_ts,
                })
            })
            .collect()
    }
}

/// `GET /_conduit/admin/v1/jobs`: what waits in the queues, and the recent
/// operations (newest first).
pub fn jobs(s: &Services) -> Response {
    let queues = s.queue_depths();
    let federation: serde_json::Map<String, Value> =
        queues.federation.into_iter().map(|(destination, depth)| (destination, json!(depth))).collect();
    Response::json(&json!({
        "queues": { "federation": federation, "push": queues.push, "mail": queues.mail },
        "operations": s.admin_operations.summaries(),
    }))
}

/// `GET /_synapse/admin/v1/background_updates/status`.
pub fn background_updates() -> Response {
    Response::json(&json!({ "enabled": true, "current_updates": {} }))
}

/// `GET /_conduit/admin/v1/storage`: the database's size on disk and what
/// each of its trees holds (entries, key and value bytes), largest first.
/// Walks the whole database: seconds on a large one.
pub async fn storage(s: &Services) -> crate::error::Result<Response> {
    let (size, trees) = s.storage_stats().await?;
    let trees: Vec<Value> = trees
        .into_iter()
        .map(|tree| {
            json!({
                "name": tree.name,
                "entries": tree.entries,
                "key_bytes": tree.key_bytes,
                "value_bytes": tree.value_bytes,
            })
        })
        .collect();
    Ok(Response::json(&json!({ "size_on_disk": size, "trees": trees })))
}
