//! Schema versions and migrations.
//!
//! The `meta` tree holds the schema version. At open:
//! - a fresh database is stamped with [`CURRENT_SCHEMA_VERSION`];
//! - an older one runs each migration above its version, in order, stamping the
//!   version after each (so an interrupted upgrade resumes where it stopped;
//!   migrations must therefore be idempotent);
//! - a newer one, an unversioned non-empty one, or a gap in the migration chain
//!   is refused before anything is written.
//!
//! Record-level format changes that only add defaulted fields need no
//! migration (see [`super::codec`]).

use super::{Batch, Storage, StorageError};

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 2;

/// One step from `to_version - 1` to `to_version`.
pub struct Migration {
    pub to_version: u32,
    pub description: &'static str,
    pub run: fn(&Storage) -> Result<(), StorageError>,
}

/// The real migrations, oldest first. Version 1 is the first released schema.
pub const MIGRATIONS: &[Migration] = &[Migration {
    to_version: 2,
    description: "index countable events (unread counts) and receipt positions (incremental sync)",
    run: index_countable_events_and_receipts,
}];

/// Entries read per step of a migration that walks a whole table.
const PAGE: usize = 1024;

/// Version 2: fills `room_countable` from the timelines and
/// `receipt_positions` from the receipts. Idempotent (rewrites the same entries).
fn index_countable_events_and_receipts(storage: &Storage) -> Result<(), StorageError> {
    let tables = &storage.tables;
    let mut start = (0, 0);
    loop {
        let page = tables.room_timeline.range(&start, &(u64::MAX, u64::MAX), false, PAGE)?;
        let mut batch = Batch::new();
        for ((room, count), event_id) in &page {
            let Some(stored) = tables.eventid_pdu.get(event_id)? else { continue };
            let event: serde_json::Value = serde_json::from_str(&stored.json)
                .map_err(|e| StorageError::corrupt(format!("stored event {event_id}: {e}")))?;
            let kind = event["type"].as_str().unwrap_or_default();
            if kind != "m.room.message" && kind != "m.room.encrypted" {
                continue;
            }
            let relates_to = &event["content"]["m.relates_to"];
            let thread = match relates_to["rel_type"].as_str() {
                Some("m.thread") => relates_to["event_id"].as_str().unwrap_or_default(),
                _ => "",
            };
            let sender = event["sender"].as_str().unwrap_or_default().to_owned();
            batch.insert(&tables.room_countable, &(*room, *count), &(sender, thread.to_owned()))?;
        }
        storage.apply(batch)?;
        match page.last() {
            Some(((room, count), _)) if page.len() == PAGE => start = (*room, count + 1),
            _ => break,
        }
    }
    let mut batch = Batch::new();
    for ((room_id, receipt_key), receipt) in tables.receipts.all()? {
        batch.insert(&tables.receipt_positions, &(room_id, receipt.count), &receipt_key)?;
    }
    storage.apply(batch)?;
    storage.flush_blocking()
}

pub(super) fn bring_up_to_date(storage: &Storage, migrations: &[Migration]) -> Result<(), StorageError> {
    let target = migrations.last().map_or(CURRENT_SCHEMA_VERSION, |m| m.to_version.max(CURRENT_SCHEMA_VERSION));
    let Some(mut version) = storage.schema_version()? else {
        if !storage.is_empty() {
            return Err(StorageError::Schema("database has data but no schema version".into()));
        }
        tracing::info!(version = target, "new database");
        return storage.set_schema_version(target);
    };
    if version > target {
        return Err(StorageError::Schema(format!(
            "database schema version {version} is newer than this build's {target}; use a newer conduit"
        )));
    }
    while version < target {
        let step = migrations.iter().find(|m| m.to_version == version + 1).ok_or_else(|| {
            StorageError::Schema(format!("no migration from schema version {version} to {}", version + 1))
        })?;
        tracing::info!(from = version, to = step.to_version, what = step.description, "migrating database");
        (step.run)(storage)?;
        storage.set_schema_version(step.to_version)?;
        version = step.to_version;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::UserRecord;

    const CACHE: u64 = 8 * 1024 * 1024;

    fn mark_admins(storage: &Storage) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        for (name, mut user) in storage.tables.users.all()? {
            user.is_admin = true;
            batch.insert(&storage.tables.users, &name, &user)?;
        }
        storage.apply(batch)
    }

    fn failing(_: &Storage) -> Result<(), StorageError> {
        Err(StorageError::corrupt("migration failed on purpose"))
    }

    /// Synthetic migrations above the real ones.
    const NEXT: u32 = CURRENT_SCHEMA_VERSION + 1;
    const TO_NEXT: Migration = Migration { to_version: NEXT, description: "make everyone admin", run: mark_admins };
    const FAIL_AFTER_NEXT: Migration = Migration { to_version: NEXT + 1, description: "fails", run: failing };

    fn put_user(storage: &Storage, name: &str) {
        let mut batch = Batch::new();
        batch.insert(&storage.tables.users, &name.to_owned(), &UserRecord::new(None, 0, false, false)).unwrap();
        storage.apply(batch).unwrap();
        storage.flush_blocking().unwrap();
    }

    #[test]
    fn fresh_database_is_stamped_with_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), CACHE).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(CURRENT_SCHEMA_VERSION));
    }

    #[test]
    fn migrations_run_in_order_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            put_user(&storage, "alice");
        }
        let storage = Storage::open_with_migrations(dir.path(), CACHE, &[TO_NEXT]).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(NEXT));
        assert!(storage.tables.users.get(&"alice".to_owned()).unwrap().unwrap().is_admin);
    }

    #[test]
    fn a_failed_migration_stops_at_the_last_good_version_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            put_user(&storage, "bob");
        }
        let error = Storage::open_with_migrations(dir.path(), CACHE, &[TO_NEXT, FAIL_AFTER_NEXT]).err().unwrap();
        assert!(error.to_string().contains("on purpose"));
        let storage = Storage::open_with_migrations(dir.path(), CACHE, &[TO_NEXT]).unwrap();
        assert_eq!(
            storage.schema_version().unwrap(),
            Some(NEXT),
            "the first step was recorded before the second failed"
        );
    }

    #[test]
    fn newer_databases_and_chain_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            put_user(&storage, "carol");
        }
        let gap = Migration { to_version: NEXT + 1, description: "gap", run: mark_admins };
        let error = Storage::open_with_migrations(dir.path(), CACHE, &[gap]).err().unwrap();
        let expected = format!("no migration from schema version {CURRENT_SCHEMA_VERSION}");
        assert!(error.to_string().contains(&expected), "{error}");
        {
            Storage::open_with_migrations(dir.path(), CACHE, &[TO_NEXT]).unwrap();
        }
        let error = Storage::open(dir.path(), CACHE).err().unwrap();
        assert!(error.to_string().contains("newer than this build"), "{error}");
    }

    #[test]
    fn version_2_indexes_countable_events_and_receipt_positions() {
        use crate::storage::records::{ReceiptRecord, StoredPdu};
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            let tables = &storage.tables;
            let mut batch = Batch::new();
            let events = [
                (7, r#"{"type":"m.room.message","sender":"@a:x","content":{"body":"hi"}}"#),
                (8, r#"{"type":"m.room.topic","sender":"@a:x","state_key":"","content":{}}"#),
                (
                    9,
                    r#"{"type":"m.room.encrypted","sender":"@b:x","content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}"#,
                ),
            ];
            for (count, json) in events {
                let id = format!("$event{count}");
                let stored = StoredPdu {
                    json: json.to_owned(),
                    room_id: "!r:x".to_owned(),
                    room_version: "12".to_owned(),
                    count,
                    state_before: 0,
                    redacted: false,
                };
                batch.insert(&tables.eventid_pdu, &id, &stored).unwrap();
                batch.insert(&tables.room_timeline, &(3, count), &id).unwrap();
            }
            let receipt = ReceiptRecord { event_id: "$event7".to_owned(), ts: 1, count: 10, thread_id: None };
            batch.insert(&tables.receipts, &("!r:x".to_owned(), "@b:x\nm.read\n".to_owned()), &receipt).unwrap();
            storage.apply(batch).unwrap();
            storage.set_schema_version(1).unwrap();
            storage.flush_blocking().unwrap();
        }
        let storage = Storage::open(dir.path(), CACHE).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(2));
        let countable = storage.tables.room_countable.all().unwrap();
        assert_eq!(
            countable,
            vec![((3, 7), ("@a:x".to_owned(), String::new())), ((3, 9), ("@b:x".to_owned(), "$root".to_owned())),]
        );
        let positions = storage.tables.receipt_positions.all().unwrap();
        assert_eq!(positions, vec![(("!r:x".to_owned(), 10), "@b:x\nm.read\n".to_owned())]);
    }
}
