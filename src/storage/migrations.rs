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
//! Record-level format changes that only append defaulted fields need no
//! migration (see [`super::codec`]).

use super::{Batch, Storage, StorageError};

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 4;

/// One step from `to_version - 1` to `to_version`.
pub struct Migration {
    pub to_version: u32,
    pub description: &'static str,
    pub run: fn(&Storage) -> Result<(), StorageError>,
}

/// The real migrations, oldest first. Version 1 is the first released schema.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        to_version: 2,
        description: "index receipt positions (incremental sync)",
        run: index_receipt_positions,
    },
    Migration {
        to_version: 3,
        description: "per-member notification records become push exceptions with running totals",
        run: notifications_to_push_exceptions,
    },
    Migration {
        to_version: 4,
        description: "drop the stored auth chains of non-state events (computed when asked)",
        run: drop_message_auth_chains,
    },
];

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

/// Legacy notification records converted per write.
const CONVERSION_PAGE: usize = 10_000;

/// Version 3: schema 2 kept one record per notified member and event. Each
/// becomes that member's push exception (the events' default outcome being
/// "nothing" for these old events), with the running totals of the user's
/// exceptions in the room, so unread counts and `GET /notifications` read
/// the same. Each page of records is converted and removed in one atomic
/// write, and a group's totals resume from its last converted exception:
/// an interrupted run resumes. The retention checkpoints go too.
fn notifications_to_push_exceptions(storage: &Storage) -> Result<(), StorageError> {
    use super::{
        keys::NotificationKey,
        records::{PushRecord, PushTally},
    };
    let tables = &storage.tables;
    let end = NotificationKey::new("\u{7f}", "", 0);
    let mut start = NotificationKey::new("", "", 0);
    /// The group being converted: (localpart, room id), short room id and running totals.
    type Group = ((String, String), Option<u64>, PushTally, PushTally);
    let mut group: Option<Group> = None;
    loop {
        let page = tables.legacy_notifications.range(&start, &end, false, CONVERSION_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        start = NotificationKey::new(&last.localpart, &last.room_id, last.count.saturating_add(1));
        let mut batch = Batch::new();
        for (key, record) in page {
            batch.remove(&tables.legacy_notifications, &key);
            let group_key = (key.localpart.clone(), key.room_id.clone());
            if group.as_ref().is_none_or(|(current, ..)| *current != group_key) {
                let short = tables.roomid_room.get(&key.room_id)?.map(|room| room.short_id);
                let (all, main) = match short {
                    Some(short) => tables
                        .push_exceptions
                        .range(&(key.localpart.clone(), short, 0), &(key.localpart.clone(), short, u64::MAX), true, 1)?
                        .into_iter()
                        .next()
                        .map(|(_, latest)| (latest.all, latest.main))
                        .unwrap_or_default(),
                    None => Default::default(),
                };
                group = Some((group_key, short, all, main));
            }
            let Some((_, Some(short), all, main)) = group.as_mut() else { continue };
            let tally = PushTally { notifications: 1, highlights: i64::from(record.highlight) };
            *all = *all + tally;
            if record.thread.is_empty() {
                *main = *main + tally;
            }
            let exception = PushRecord {
                actions: record.actions,
                highlight: record.highlight,
                thread: record.thread,
                all: *all,
                main: *main,
            };
            batch.insert(&tables.push_exceptions, &(key.localpart, *short, key.count), &exception)?;
        }
        storage.apply(batch)?;
    }
    let mut batch = Batch::new();
    for (at, _) in tables.legacy_position_checkpoints.all()? {
        batch.remove(&tables.legacy_position_checkpoints, &at);
    }
    storage.apply(batch)?;
    storage.flush_blocking()
}

/// Version 4: only state events keep a stored auth chain (a message's is
/// computed from its auth events' when a peer asks); the others' go, a page
/// at a time. Idempotent.
fn drop_message_auth_chains(storage: &Storage) -> Result<(), StorageError> {
    let tables = &storage.tables;
    let mut start = 0;
    loop {
        let page = tables.shortid_authchain.range(&start, &u64::MAX, false, CONVERSION_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        start = last.saturating_add(1);
        let mut batch = Batch::new();
        for (short, _) in page {
            let Some(event_id) = tables.shortid_eventid.get(&short)? else { continue };
            let Some(stored) = tables.eventid_pdu.get(&event_id)? else { continue };
            let is_state = serde_json::from_str::<serde_json::Value>(&stored.json)
                .map(|event| event.get("state_key").is_some())
                // Unreadable: keep its chain.
                .unwrap_or(true);
            if !is_state {
                batch.remove(&tables.shortid_authchain, &short);
            }
        }
        storage.apply(batch)?;
        if start == u64::MAX {
            break;
        }
    }
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

    /// A database written at schema `version` by `fill`, then reopened by
    /// this build (every migration above `version` run).
    fn migrated_from(
        version: u32,
        fill: impl FnOnce(&crate::storage::Tables, &mut Batch),
    ) -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path(), CACHE).unwrap();
            let mut batch = Batch::new();
            fill(&storage.tables, &mut batch);
            storage.apply(batch).unwrap();
            storage.set_schema_version(version).unwrap();
            storage.flush_blocking().unwrap();
        }
        let storage = Storage::open(dir.path(), CACHE).unwrap();
        assert_eq!(storage.schema_version().unwrap(), Some(CURRENT_SCHEMA_VERSION));
        (dir, storage)
    }

    #[test]
    fn version_2_indexes_receipt_positions() {
        use crate::storage::{
            keys::{ReceiptId, ReceiptKey},
            records::ReceiptRecord,
        };
        let (_dir, storage) = migrated_from(1, |tables, batch| {
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
            batch.insert(&tables.receipts, &key, &receipt).unwrap();
        });
        let positions = storage.tables.receipt_positions.all().unwrap();
        let receipt_id = ReceiptId { user_id: "@b:x".to_owned(), receipt_type: "m.read".to_owned(), thread_id: None };
        assert_eq!(positions, vec![(("!r:x".to_owned(), 10), receipt_id)]);
    }

    #[test]
    fn version_3_turns_notification_records_into_push_exceptions_with_running_totals() {
        use crate::storage::{
            keys::NotificationKey,
            records::{NotificationRecord, PushTally, RoomRecord},
        };
        let notification = |highlight: bool, thread: &str| NotificationRecord {
            highlight,
            thread: thread.to_owned(),
            actions: r#"["notify"]"#.to_owned(),
        };
        let (_dir, storage) = migrated_from(2, |tables, batch| {
            let room = RoomRecord {
                version: "10".to_owned(),
                short_id: 77,
                current_state: 1,
                forward_extremities: Vec::new(),
                max_depth: 1,
                backfill_floor: 0,
            };
            batch.insert(&tables.roomid_room, &"!r:x".to_owned(), &room).unwrap();
            let legacy = &tables.legacy_notifications;
            batch.insert(legacy, &NotificationKey::new("bob", "!r:x", 5), &notification(false, "")).unwrap();
            batch.insert(legacy, &NotificationKey::new("bob", "!r:x", 9), &notification(true, "$root")).unwrap();
            batch.insert(legacy, &NotificationKey::new("bob", "!r:x", 12), &notification(true, "")).unwrap();
            batch.insert(legacy, &NotificationKey::new("carol", "!r:x", 9), &notification(false, "$root")).unwrap();
            batch.insert(legacy, &NotificationKey::new("dave", "!gone:x", 3), &notification(false, "")).unwrap();
            batch.insert(&tables.legacy_position_checkpoints, &1_000, &4).unwrap();
        });
        let exceptions = storage.tables.push_exceptions.all().unwrap();
        let tally = |notifications, highlights| PushTally { notifications, highlights };
        let summary: Vec<_> = exceptions
            .iter()
            .map(|((user, room, count), record)| {
                (user.as_str(), *room, *count, record.thread.as_str(), record.all, record.main)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bob", 77, 5, "", tally(1, 0), tally(1, 0)),
                ("bob", 77, 9, "$root", tally(2, 1), tally(1, 0)),
                ("bob", 77, 12, "", tally(3, 2), tally(2, 1)),
                ("carol", 77, 9, "$root", tally(1, 0), tally(0, 0)),
            ],
            "a room that no longer exists has nothing to count"
        );
        assert!(exceptions.iter().all(|(_, record)| record.actions == r#"["notify"]"#));
        assert!(storage.tables.legacy_notifications.is_empty());
        assert!(storage.tables.legacy_position_checkpoints.is_empty());
    }

    #[test]
    fn version_4_keeps_the_auth_chains_of_state_events_only() {
        use crate::storage::records::StoredPdu;
        let event = |json: &str, short: u64| StoredPdu {
            json: json.to_owned(),
            room_id: "!r:x".to_owned(),
            room_version: "10".to_owned(),
            count: short,
            state_before: None,
            redacted: false,
            redacted_by: None,
            short: Some(short),
            status: Default::default(),
            transaction: None,
        };
        let (_dir, storage) = migrated_from(3, |tables, batch| {
            for (short, id, json) in [
                (1, "$state", r#"{"type":"m.room.member","state_key":"@a:x"}"#),
                (2, "$message", r#"{"type":"m.room.message"}"#),
                (3, "$unreadable", "not json"),
            ] {
                batch.insert(&tables.shortid_eventid, &short, &id.to_owned()).unwrap();
                batch.insert(&tables.eventid_pdu, &id.to_owned(), &event(json, short)).unwrap();
                batch.insert(&tables.shortid_authchain, &short, &vec![7u64]).unwrap();
            }
        });
        let kept: Vec<u64> =
            storage.tables.shortid_authchain.all().unwrap().into_iter().map(|(short, _)| short).collect();
        assert_eq!(kept, vec![1, 3], "the message's chain went; a state event's and an unreadable one's stay");
    }
}
