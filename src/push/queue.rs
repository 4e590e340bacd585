//! The push queue: owns the `push_queue` table. The rooms add a job per
//! (notification, http pusher) in the batch that stores the event (or the
//! receipt, for a badge update); the sender ([`super`]) reads the jobs in
//! event order and removes each once the gateway answered, the pusher is
//! gone, or the retries are exhausted.

use crate::storage::{
    keys::{PushJobKey, PusherId},
    records::PushJobRecord,
    Batch, Storage, StorageError,
};

/// What a queued push is about.
pub enum Push<'a> {
    /// The notification at the event's position in a room.
    Notification { room_id: &'a str },
    /// Only the unread count changed (the user read a room).
    Badge { room_id: &'a str },
}

/// Adds to `batch` a push to `pusher`, in order at position `count`.
pub fn add(
    storage: &Storage,
    batch: &mut Batch,
    count: u64,
    pusher: &PusherId,
    push: Push<'_>,
) -> Result<(), StorageError> {
    let (room_id, badge_only) = match push {
        Push::Notification { room_id } => (room_id, false),
        Push::Badge { room_id } => (room_id, true),
    };
    let job = PushJobRecord { room_id: room_id.to_owned(), attempts: 0, badge_only };
    batch.insert(&storage.tables.push_queue, &PushJobKey { count, pusher: pusher.clone() }, &job)?;
    Ok(())
}

/// The first `limit` jobs, in event order.
pub(super) fn first_jobs(storage: &Storage, limit: usize) -> Result<Vec<(PushJobKey, PushJobRecord)>, StorageError> {
    storage.tables.push_queue.first(limit)
}

/// Removes a job. Not waited for: a push sent again after a crash is harmless.
pub(super) fn remove(storage: &Storage, key: &PushJobKey) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    batch.remove(&storage.tables.push_queue, key);
    storage.apply(batch)
}

/// Stores a job's failed attempts. Not waited for: at worst a push is tried
/// once more than counted.
pub(super) fn record_attempt(storage: &Storage, key: &PushJobKey, job: &PushJobRecord) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    batch.insert(&storage.tables.push_queue, key, job)?;
    storage.apply(batch)
}
