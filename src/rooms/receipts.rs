//! Read receipts and unread counts.
//!
//! Spec: client-server API modules "Receipts" (`m.read`, `m.read.private`,
//! threaded receipts) and "Read and unread markers". Receipts are stored
//! durably with a counter value, so `/sync` delivers those changed since its
//! token; private receipts go to their owner only. Unread counts are the
//! user's notifications (see [`super::notifications`]) after their latest
//! receipt, per thread for threaded receipts.
//!
//! Receipts are also indexed by the counter value at which they were set, so
//! an incremental sync reads only the receipts changed since its token.
//! Owns the `receipts` and `receipt_positions` tables.

use std::collections::BTreeMap;

use ruma::{RoomId, UserId};
use serde_json::{json, Map, Value};

use super::Rooms;
use crate::{
    error::Result,
    storage::{
        keys::{ReceiptId, ReceiptKey},
        records::ReceiptRecord,
        Batch,
    },
    util::now_ms,
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";

/// The thread id of main-timeline receipts.
pub(super) const MAIN_THREAD: &str = "main";

/// Notifications and highlights counted together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub notifications: u64,
    pub highlights: u64,
}

/// Unread notifications of a user in a room: all of them, those of the main
/// timeline, and those of each thread (by thread root).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    pub total: Count,
    pub main: Count,
    pub threads: BTreeMap<String, Count>,
}

impl Rooms {
    /// Stores a receipt and wakes syncs.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
        event_id: &ruma::EventId,
        thread: Option<&str>,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let count = reservation.count;
        let receipt = ReceiptId {
            user_id: user_id.to_string(),
            receipt_type: kind.to_owned(),
            thread_id: thread.filter(|thread| !thread.is_empty()).map(str::to_owned),
        };
        let receipt_key = ReceiptKey { room_id: room_id.to_string(), receipt };
        let event_position = self.get_pdu(event_id)?.and_then(|(_, stored)| stored.position());
        let record = ReceiptRecord {
            event_id: event_id.to_string(),
            ts: now_ms(),
            count,
            thread_id: thread.map(str::to_owned),
            event_position,
        };
        let mut batch = Batch::new();
        if let Some(previous) = tables.receipts.get(&receipt_key)? {
            batch.remove(&tables.receipt_positions, &(room_id.to_string(), previous.count));
        }
        batch.insert(&tables.receipt_positions, &(room_id.to_string(), count), &receipt_key.receipt)?;
        batch.insert(&tables.receipts, &receipt_key, &record)?;
        let badge_changes =
            (kind == READ || kind == READ_PRIVATE) && self.queue_badge_updates(&mut batch, room_id, user_id, count)?;
        self.storage.commit(batch).await?;
        reservation.announce();
        if badge_changes {
            self.push_wakeup.notify_one();
        }
        Ok(())
    }

    /// The `m.receipt` event of receipts changed in `(since, upto]`, as
    /// `viewer` may see them (others' private receipts left out).
    pub fn receipts_since(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        since: Option<u64>,
        upto: u64,
    ) -> Result<Option<Value>> {
        let tables = &self.storage.tables;
        let changed: Vec<(ReceiptId, ReceiptRecord)> = match since {
            None => tables
                .receipts
                .scan_prefix(&ReceiptKey::room_prefix(room_id.as_str()))?
                .into_iter()
                .map(|(key, record)| (key.receipt, record))
                .collect(),
            Some(since) => {
                let (start, end) = ((room_id.to_string(), since + 1), (room_id.to_string(), upto.saturating_add(1)));
                let mut changed = Vec::new();
                for ((room_id, count), receipt) in tables.receipt_positions.range(&start, &end, false, usize::MAX)? {
                    // A concurrent update of the same receipt may leave a stale position behind.
                    let key = ReceiptKey { room_id, receipt };
                    match tables.receipts.get(&key)? {
                        Some(record) if record.count == count => changed.push((key.receipt, record)),
                        _ => {}
                    }
                }
                changed
            }
        };
        let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (receipt, record) in changed {
            if since.is_some_and(|since| record.count <= since) || record.count > upto {
                continue;
            }
            let (user, kind) = (receipt.user_id.as_str(), receipt.receipt_type.as_str());
            if kind == READ_PRIVATE && user != viewer.as_str() {
                continue;
            }
            let mut receipt = json!({ "ts": record.ts });
            if let Some(thread) = &record.thread_id {
                receipt["thread_id"] = json!(thread);
            }
            let by_kind = content.entry(record.event_id.clone()).or_default();
            let users = by_kind.entry(kind.to_owned()).or_insert_with(|| json!({}));
            if let Some(users) = users.as_object_mut() {
                users.insert(user.to_owned(), receipt);
            }
        }
        Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
    }

    /// Whether any receipt of the room changed in `(since, upto]`.
    pub fn receipts_changed(&self, room_id: &RoomId, since: u64, upto: u64) -> Result<bool> {
        let (start, end) = ((room_id.to_string(), since + 1), (room_id.to_string(), upto.saturating_add(1)));
        Ok(!self.storage.tables.receipt_positions.range(&start, &end, false, 1)?.is_empty())
    }

    /// Read positions of a user in a room from their receipts (public or
    /// private): unthreaded ones apply everywhere, `main` to the main
    /// timeline, others to their thread.
    pub(super) fn read_positions(&self, room_id: &RoomId, user_id: &UserId) -> Result<(u64, BTreeMap<String, u64>)> {
        let prefix = ReceiptKey::user_prefix(room_id.as_str(), user_id.as_str());
        let mut everywhere = 0;
        let mut threads: BTreeMap<String, u64> = BTreeMap::new();
        for (key, receipt) in self.storage.tables.receipts.scan_prefix(&prefix)? {
            let kind = key.receipt.receipt_type.as_str();
            if kind != READ && kind != READ_PRIVATE {
                continue;
            }
            let position = match receipt.event_position {
                Some(position) => position,
                // Written when an event's short id was its position.
                None => match self.storage.tables.eventid_shortid.get(&receipt.event_id)? {
                    Some(position) => position,
                    None => continue,
                },
            };
            match receipt.thread_id.as_deref() {
                None => everywhere = everywhere.max(position),
                Some(thread) => {
                    let entry = threads.entry(thread.to_owned()).or_default();
                    *entry = (*entry).max(position);
                }
            }
        }
        Ok((everywhere, threads))
    }
}
