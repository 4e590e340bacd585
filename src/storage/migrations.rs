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

use super::{Storage, StorageError};

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// One step from `to_version - 1` to `to_version`.
pub struct Migration {
    pub to_version: u32,
    pub description: &'static str,
    pub run: fn(&Storage) -> Result<(), StorageError>,
}

/// The real migrations, oldest first. Version 1 is the first released schema.
pub const MIGRATIONS: &[Migration] = &[];

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
    use crate::storage::{records::UserRecord, Batch};

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

    const TO_2: Migration = Migration { to_version: 2, description: "make everyone admin", run: mark_admins };
    const FAIL_TO_3: Migration = Migration { to_version: 3, description: "fails", run: failing };

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
        let storage = Storage::open_with_migrations(dir.path(), CACHE, &[TO_2]).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(2));
        assert!(storage.tables.users.get(&"alice".to_owned()).unwrap().unwrap().is_admin);
    }

    #[test]
    fn a_failed_migration_stops_at_the_last_good_version_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            put_user(&storage, "bob");
        }
        let error = Storage::open_with_migrations(dir.path(), CACHE, &[TO_2, FAIL_TO_3]).err().unwrap();
        assert!(error.to_string().contains("on purpose"));
        let storage = Storage::open_with_migrations(dir.path(), CACHE, &[TO_2]).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(2), "version 2 was recorded before 3 failed");
    }

    #[test]
    fn newer_databases_and_chain_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            put_user(&storage, "carol");
        }
        let gap = Migration { to_version: 3, description: "gap", run: mark_admins };
        let error = Storage::open_with_migrations(dir.path(), CACHE, &[gap]).err().unwrap();
        assert!(error.to_string().contains("no migration from schema version 1"), "{error}");
        {
            Storage::open_with_migrations(dir.path(), CACHE, &[TO_2]).unwrap();
        }
        let error = Storage::open(dir.path(), CACHE).err().unwrap();
        assert!(error.to_string().contains("newer than this build"), "{error}");
    }
}
