//! Read receipts and unread counts.
//!
//! Spec: client-server API modules "Receipts" (`m.read`, `m.read.private`,
//! threaded receipts) and "Read and unread markers". Receipts are stored
//! durably with a counter value, so `/sync` delivers those changed since its
//! token; private receipts go to their owner only. Until push rules exist,
//! the unread count is the number of messages from others after the user's
//! latest main-timeline receipt.

use std::collections::BTreeMap;

use ruma::{RoomId, UserId};
use serde_json::{json, Map, Value};

use super::Rooms;
use crate::{
    error::Result,
    storage::{prefix_of, records::ReceiptRecord, records::RoomRecord, Batch},
    util::now_ms,
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";

/// Messages counted as unread at most (the count says "this many or more").
const MAX_UNREAD: usize = 999;

fn key(user_id: &UserId, kind: &str, thread: Option<&str>) -> String {
    format!("{user_id}\n{kind}\n{}", thread.unwrap_or_default())
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
        let count = self.storage.next_count()?;
        let record =
            ReceiptRecord { event_id: event_id.to_string(), ts: now_ms(), count, thread_id: thread.map(str::to_owned) };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.receipts, &(room_id.to_string(), key(user_id, kind, thread)), &record)?;
        self.storage.commit(batch).await?;
        self.storage.announce_change(count);
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
        let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for ((_, key), record) in self.storage.tables.receipts.scan_prefix(&prefix_of(room_id.as_str()))? {
            if since.is_some_and(|since| record.count <= since) || record.count > upto {
                continue;
            }
            let mut parts = key.splitn(3, '\n');
            let (Some(user), Some(kind)) = (parts.next(), parts.next()) else { continue };
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

    /// The position of the user's latest main-timeline read receipt.
    fn read_position(&self, room_id: &RoomId, user_id: &UserId) -> Result<u64> {
        let mut position = 0;
        for kind in [READ, READ_PRIVATE] {
            for thread in [None, Some("main")] {
                let receipt = self.storage.tables.receipts.get(&(room_id.to_string(), key(user_id, kind, thread)))?;
                let Some(receipt) = receipt else { continue };
                let Ok(event_id) = ruma::EventId::parse(&receipt.event_id) else { continue };
                if let Some((_, stored)) = self.get_pdu(&event_id)? {
                    position = position.max(stored.count);
                }
            }
        }
        Ok(position)
    }

    /// Messages from others after the user's read receipt (and after they joined).
    pub fn unread_count(
        &self,
        room: &RoomRecord,
        room_id: &RoomId,
        user_id: &UserId,
        joined_at: u64,
        upto: u64,
    ) -> Result<u64> {
        let mut position = self.read_position(room_id, user_id)?.max(joined_at) + 1;
        let mut unread = 0;
        while unread < MAX_UNREAD {
            let page = self.timeline_page(room, position, false, 100)?;
            let last_page = page.len() < 100;
            for (count, event_id) in page {
                if count > upto {
                    return Ok(unread as u64);
                }
                position = count + 1;
                let Some((pdu, _)) = self.get_pdu(&event_id)? else { continue };
                let kind = pdu.kind().to_string();
                if pdu.sender_str() != user_id.as_str() && (kind == "m.room.message" || kind == "m.room.encrypted") {
                    unread += 1;
                }
            }
            if last_page {
                break;
            }
        }
        Ok(unread.min(MAX_UNREAD) as u64)
    }
}
