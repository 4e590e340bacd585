//! Bounded growth of notification records.
//!
//! Every notifying event leaves one record per notified member (they drive
//! `unread_notifications` and `GET /notifications`), so a busy room adds
//! records at the rate of its messages times its members. Records older than
//! [`NOTIFICATION_RETENTION_MS`] are removed once read (main timeline or
//! their thread, as the unread counts read them), or whatever their state
//! once the user is no longer joined; unread ones in joined rooms stay, since
//! they still count. `GET /notifications` thus shows a month of history, as
//! Synapse does.
//!
//! Records are keyed by position, not time: the maintenance task writes a
//! (time, position) checkpoint each hour, and the cut-off is the position of
//! the last checkpoint older than the retention.

use ruma::{OwnedRoomId, UserId};

use super::Rooms;
use crate::{
    error::Result,
    storage::{keys::NotificationKey, Batch},
};

/// How long notification records are kept once read.
pub const NOTIFICATION_RETENTION_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How often a (time, position) checkpoint is written.
const CHECKPOINT_INTERVAL_MS: u64 = 60 * 60 * 1000;
/// Checkpoints are kept this much longer than the retention.
const CHECKPOINT_SLACK_MS: u64 = 2 * 24 * 60 * 60 * 1000;

impl Rooms {
    /// Writes a checkpoint of the current position at `now_ms` unless the
    /// latest is less than an hour old, and drops checkpoints no longer needed.
    pub fn checkpoint_position(&self, now_ms: u64) -> Result<()> {
        let table = &self.storage.tables.position_checkpoints;
        let latest = table.range(&0, &u64::MAX, true, 1)?.into_iter().next();
        if latest.is_some_and(|(at, _)| now_ms.saturating_sub(at) < CHECKPOINT_INTERVAL_MS) {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.insert(table, &now_ms, &self.storage.current_count()?)?;
        let oldest_needed = now_ms.saturating_sub(NOTIFICATION_RETENTION_MS + CHECKPOINT_SLACK_MS);
        for (at, _) in table.range(&0, &oldest_needed, false, usize::MAX)? {
            batch.remove(table, &at);
        }
        Ok(self.storage.apply(batch)?)
    }

    /// The position at or below which records are older than the retention,
    /// if the server has run long enough to know it.
    pub fn retention_cutoff(&self, now_ms: u64) -> Result<Option<u64>> {
        let Some(before) = now_ms.checked_sub(NOTIFICATION_RETENTION_MS) else { return Ok(None) };
        let table = &self.storage.tables.position_checkpoints;
        Ok(table.range(&0, &before.saturating_add(1), true, 1)?.into_iter().next().map(|(_, count)| count))
    }

    /// Removes the notification records at or below `cutoff` that no longer
    /// count (read, or of a room the user is not joined to). Returns how many.
    pub fn compact_notifications(&self, cutoff: u64) -> Result<usize> {
        let tables = &self.storage.tables;
        let mut removed = 0;
        for ((localpart, room_id), membership) in tables.localpart_roomid_membership.all()? {
            let old = tables.notifications.range(
                &NotificationKey::new(&localpart, &room_id, 0),
                &NotificationKey::new(&localpart, &room_id, cutoff.saturating_add(1)),
                false,
                usize::MAX,
            )?;
            if old.is_empty() {
                continue;
            }
            let user = UserId::parse_with_server_name(localpart.as_str(), &self.server_name);
            let (Ok(room), Ok(user)) = (OwnedRoomId::try_from(room_id), user) else { continue };
            let joined = super::Membership::parse(&membership) == Some(super::Membership::Join);
            let (everywhere, threads) = if joined { self.read_positions(&room, &user)? } else { Default::default() };
            let mut batch = Batch::new();
            for (key, record) in old {
                let count = key.count;
                let thread =
                    if record.thread.is_empty() { super::receipts::MAIN_THREAD } else { record.thread.as_str() };
                let read = count <= everywhere || threads.get(thread).is_some_and(|position| count <= *position);
                if read || !joined {
                    batch.remove(&tables.notifications, &key);
                    removed += 1;
                }
            }
            // Derived data: redone on the next pass if lost in a crash.
            self.storage.apply(batch)?;
        }
        Ok(removed)
    }
}
