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
    description: "index receipt positions (incremental sync)",
    run: index_receipt_positions,
}];

/// Version 2: fills `receipt_positions` from the receipts. Idempotent
/// (rewrites the same entries).
fn index_receipt_positions(storage: &Storage) -> Result<(), StorageError> {
    let tables = &storage.tables;
    let mut batch = Batch::new();
    for (key, receipt) in tables.receipts.all()? {
        batch.insert(&tables.receipt_positions, &(key.room_id, receipt.count), &key.receipt)?;
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
    fn version_2_indexes_receipt_positions() {
        use crate::storage::{
            keys::{ReceiptId, ReceiptKey},
            records::ReceiptRecord,
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            let mut batch = Batch::new();
            let receipt = ReceiptRecord {
                event_id: "$event7".to_owned(),
                ts: 1,
                count: 10,
                thread_id: None,
                event_position: None,
            };
            let receipt_id =
                ReceiptId { user_id: "@b:x".to_owned(), receipt_type: "m.read".to_owned(), thread_id: None };
            let key = ReceiptKey { room_id: "!r:x".to_owned(), receipt: receipt_id };
            batch.insert(&storage.tables.receipts, &key, &receipt).unwrap();
            storage.apply(batch).unwrap();
            storage.set_schema_version(1).unwrap();
            storage.flush_blocking().unwrap();
        }
        let storage = Storage::open(dir.path(), CACHE).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(2));
        let positions = storage.tables.receipt_positions.all().unwrap();
        let receipt_id = ReceiptId { user_id: "@b:x".to_owned(), receipt_type: "m.read".to_owned(), thread_id: None };
        assert_eq!(positions, vec![(("!r:x".to_owned(), 10), receipt_id)]);
    }
}
