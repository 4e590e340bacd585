//! Storage: the only module that knows sled.
//!
//! What it offers the rest of the server:
//! - [`Table`]: a typed tree, with a key codec and a versioned record type
//!   ([`codec`]); the tables themselves are declared in [`tables`], their
//!   records in [`records`] and the keys that are not plain tuples in
//!   [`keys`], so the whole on-disk schema is read in one place (no other
//!   module builds or splits key bytes);
//! - [`Batch`]: writes to several tables applied atomically;
//! - [`Storage::commit`] / [`Storage::wait_durable`]: a write acknowledged to a
//!   client is on disk first, with concurrent writers sharing flushes
//!   ([`group_commit`]);
//! - [`Storage::next_count`]: a persisted, strictly increasing global counter
//!   (the future sync token);
//! - a schema version checked at open, with ordered migrations ([`migrations`]).
//!
//! Invariant: nothing outside this module names a sled type.

pub mod codec;
mod group_commit;
pub mod keys;
pub mod migrations;
pub mod records;
pub mod snapshot;
pub mod tables;

use sled::Transactional;
use std::{
    fmt,
    fs::File,
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::Arc,
};

use codec::{decode_record, encode_record};
pub use codec::{prefix_of, KeyCodec, PrefixOf, Record};
use group_commit::GroupCommit;
use migrations::Migration;
use snapshot::WriteGate;
pub use snapshot::{restore_snapshot, SnapshotSummary};
pub use tables::Tables;

use crate::error::Error;

const META_TREE: &str = "meta";
const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";
const COUNTER_KEY: &[u8] = b"global_counter";

/// A storage failure. Shown to clients as a generic internal error.
#[derive(Debug)]
pub enum StorageError {
    Io(std::io::Error),
    /// Another process (a running server) holds the database.
    Locked(PathBuf),
    Corrupt(String),
    /// The database was written by a newer or unknown schema.
    Schema(String),
    Closed,
    /// A restore's target already holds something.
    NotEmpty(PathBuf),
}

impl StorageError {
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(message.into())
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "storage I/O error: {e}"),
            Self::Locked(path) => write!(
                f,
                "the database at {} is in use by another process (is the server running? stop it first)",
                path.display()
            ),
            Self::Corrupt(m) => write!(f, "corrupt stored data: {m}"),
            Self::Schema(m) => write!(f, "database schema: {m}"),
            Self::Closed => f.write_str("storage is shut down"),
            Self::NotEmpty(path) => write!(
                f,
                "{} is not empty: a restore only fills an absent or empty database directory (move the old one away first)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<sled::Error> for StorageError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io) => Self::Io(io),
            sled::Error::Corruption { at, .. } => Self::Corrupt(format!("sled reports corruption at {at:?}")),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        Error::internal("storage", error)
    }
}

/// The opened database.
pub struct Storage {
    db: sled::Db,
    /// The last counter value whose write is durable; sync waits on it.
    changes: tokio::sync::watch::Sender<u64>,
    meta: sled::Tree,
    path: PathBuf,
    commit: Arc<GroupCommit>,
    /// Counter values reserved by writes not yet finished (see [`Storage::reserve_count`]).
    in_flight: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// The global counter, handed out from memory (see [`Counter`]).
    counter: std::sync::Mutex<Counter>,
    /// Passed by every write, so a backup can copy a consistent state ([`snapshot`]).
    gate: Arc<WriteGate>,
    pub tables: Tables,
}

/// The global counter in memory: values are handed out up to `ceiling`,
/// the value stored in `meta`; reaching it stores a new ceiling
/// [`COUNTER_BLOCK`] further before going on. One stored write per block
/// rather than per value (each event took two). Every value handed out is
/// at most the stored ceiling, which was written before it: a durable write
/// that used a value implies a durable ceiling at or above it (sled recovers
/// a prefix of its log), so values keep increasing across restarts, which
/// start from the stored ceiling.
#[derive(Debug)]
struct Counter {
    last: u64,
    ceiling: u64,
}

/// Counter values taken per stored ceiling.
const COUNTER_BLOCK: u64 = 1024;

/// A counter value held by a write in progress: readers positioned by
/// [`Storage::visible_count`] stay below it until it is dropped (after the
/// write, whether it succeeded or not).
pub struct Reservation<'a> {
    storage: &'a Storage,
    pub count: u64,
}

impl Reservation<'_> {
    /// Ends the reservation, then wakes `/sync`: in this order, so a woken
    /// sync already sees the write as visible.
    pub fn announce(self) {
        let storage = self.storage;
        drop(self);
        storage.announce_change();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.storage.lock_in_flight().remove(&self.count);
    }
}

impl Storage {
    /// Opens (or creates) the database at `path`, checking and migrating its schema.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self, StorageError> {
        Self::open_with_migrations(path, cache_capacity_bytes, migrations::MIGRATIONS)
    }

    /// [`Storage::open`] with an explicit migration list (tests exercise the mechanism).
    pub fn open_with_migrations(
        path: &Path,
        cache_capacity_bytes: u64,
        migrations: &[Migration],
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(path).map_err(StorageError::Io)?;
        let db = open_sled(path, cache_capacity_bytes)?;
        let data_file = File::open(path.join("db")).ok();
        let commit = GroupCommit::start(db.clone(), data_file)?;
        let meta = db.open_tree(META_TREE)?;
        let gate = Arc::new(WriteGate::default());
        let tables = Tables::open(&TableOpener { db: &db, gate: &gate })?;
        let (changes, _) = tokio::sync::watch::channel(0);
        let stored = match meta.get(COUNTER_KEY)? {
            Some(bytes) => u64::decode(&bytes)?,
            None => 0,
        };
        let counter = std::sync::Mutex::new(Counter { last: stored, ceiling: stored });
        let storage = Self {
            db,
            changes,
            meta,
            path: path.to_owned(),
            commit,
            in_flight: Default::default(),
            counter,
            gate,
            tables,
        };
        migrations::bring_up_to_date(&storage, migrations)?;
        Ok(storage)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` atomically, then waits until it is on disk.
    pub async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        self.apply(batch)?;
        self.wait_durable().await
    }

    /// Commits `batch` atomically, then `derived` (data recomputable from the
    /// batch's content, such as per-user notification records) with one
    /// atomic batch per tree rather than a cross-tree transaction, which is
    /// far cheaper for many keys; both are durable on return. A crash between
    /// the two loses only derived entries.
    pub async fn commit_with_derived(&self, batch: Batch, derived: Batch) -> Result<(), StorageError> {
        self.apply_with_derived(batch, derived)?;
        self.wait_durable().await
    }

    /// [`Storage::commit_with_derived`] without waiting: the writes are
    /// visible to readers at once and durable once a later
    /// [`Storage::wait_durable`] returns (a writer that must release a lock
    /// before the flush).
    pub fn apply_with_derived(&self, batch: Batch, derived: Batch) -> Result<(), StorageError> {
        self.apply(batch)?;
        self.apply_derived(derived)
    }

    /// The second half of [`Storage::apply_with_derived`], for a writer with
    /// work to do once its main batch is applied.
    pub fn apply_derived(&self, derived: Batch) -> Result<(), StorageError> {
        self.apply_per_tree(derived)
    }

    /// Applies `batch` as one atomic sled batch per tree (not across trees).
    fn apply_per_tree(&self, batch: Batch) -> Result<(), StorageError> {
        let mut per_tree: Vec<(sled::Tree, sled::Batch)> = Vec::new();
        let writing = self.gate.enter();
        for op in batch.ops {
            writing.note(&op.tree, &op.key);
            let index = match per_tree.iter().position(|(tree, _)| tree.name() == op.tree.name()) {
                Some(index) => index,
                None => {
                    per_tree.push((op.tree.clone(), sled::Batch::default()));
                    per_tree.len() - 1
                }
            };
            match op.value {
                Some(value) => per_tree[index].1.insert(op.key.as_slice(), value),
                None => per_tree[index].1.remove(op.key.as_slice()),
            }
        }
        for (tree, batch) in per_tree {
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Applies `batch` atomically without waiting for the disk.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let mut trees: Vec<&sled::Tree> = Vec::new();
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let index = match trees.iter().position(|t| t.name() == op.tree.name()) {
                Some(index) => index,
                None => {
                    trees.push(&op.tree);
                    trees.len() - 1
                }
            };
            ops.push((index, &op.key, &op.value));
        }
        let writing = self.gate.enter();
        for op in &batch.ops {
            writing.note(&op.tree, &op.key);
        }
        trees
            .as_slice()
            .transaction(|views| {
                for (index, key, value) in &ops {
                    match value {
                        Some(value) => views[*index].insert(key.as_slice(), value.as_slice())?,
                        None => views[*index].remove(key.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StorageError::from(e),
                sled::transaction::TransactionError::Abort(()) => StorageError::corrupt("batch aborted"),
            })
    }

    /// Waits until every write made so far is on disk (shared with concurrent callers).
    pub async fn wait_durable(&self) -> Result<(), StorageError> {
        self.commit.wait_durable().await
    }

    /// Flushes synchronously (command-line tools, shutdown).
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        let data_file = File::open(self.path.join("db")).ok();
        group_commit::flush_to_disk(&self.db, data_file.as_ref())
    }

    /// Group flushes run so far.
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes()
    }

    /// Returns the next value of the global counter: strictly increasing across
    /// restarts, as long as what used the value was itself made durable.
    pub fn next_count(&self) -> Result<u64, StorageError> {
        self.take_counts(1)
    }

    /// Takes `n` values of the counter; the first of them.
    fn take_counts(&self, n: u64) -> Result<u64, StorageError> {
        let mut counter = self.lock_counter();
        let first = counter.last.checked_add(1).ok_or_else(|| StorageError::corrupt("counter exhausted"))?;
        let last = counter.last.saturating_add(n);
        if last > counter.ceiling {
            let ceiling = last.saturating_add(COUNTER_BLOCK);
            let writing = self.gate.enter();
            writing.note(&self.meta, COUNTER_KEY);
            self.meta.insert(COUNTER_KEY, ceiling.encode())?;
            counter.ceiling = ceiling;
        }
        counter.last = last;
        Ok(first)
    }

    fn lock_counter(&self) -> std::sync::MutexGuard<'_, Counter> {
        self.counter.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `n` values of the global counter at once (a range kept for later,
    /// such as the positions below a room joined through another server,
    /// which history fetched from peers fills); the first of them.
    pub fn skip_counts(&self, n: u64) -> Result<u64, StorageError> {
        self.take_counts(n)
    }

    /// Announces a finished durable write: wakes `/sync` (and the other
    /// readers by position) when the visible position moved past what they
    /// were last told. Measured here rather than taken from the write: a
    /// write finishing after a later one makes both visible only then, and
    /// must wake the readers that the later one's announcement left short.
    pub fn announce_change(&self) {
        let Ok(visible) = self.visible_count() else {
            self.changes.send_modify(|_| ()); // woken for nothing at worst
            return;
        };
        self.changes.send_if_modified(|announced| {
            let newer = visible > *announced;
            if newer {
                *announced = visible;
            }
            newer
        });
    }

    /// Changes whenever a write is announced.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next counter value, for a write that readers find by position
    /// (events, receipts, account data…): [`Storage::visible_count`] stays
    /// below it while the reservation lives.
    pub fn reserve_count(&self) -> Result<Reservation<'_>, StorageError> {
        let mut in_flight = self.lock_in_flight();
        let count = self.next_count()?;
        in_flight.insert(count);
        Ok(Reservation { storage: self, count })
    }

    /// The highest position readers may use: every reserved write at or
    /// below it is finished, so nothing can appear there later.
    pub fn visible_count(&self) -> Result<u64, StorageError> {
        let in_flight = self.lock_in_flight();
        let current = self.current_count()?;
        Ok(in_flight.first().map_or(current, |first| first - 1))
    }

    /// Entries and bytes of every tree, largest first (walks the whole
    /// database: for operators' inspection, not for the request path).
    pub fn tree_stats(&self) -> Result<Vec<TreeStats>, StorageError> {
        let mut stats = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            let mut tree_stats = TreeStats { name: String::from_utf8_lossy(&name).into_owned(), ..Default::default() };
            for entry in tree.iter() {
                let (key, value) = entry?;
                tree_stats.entries += 1;
                tree_stats.key_bytes += key.len() as u64;
                tree_stats.value_bytes += value.len() as u64;
            }
            if tree_stats.entries > 0 {
                stats.push(tree_stats);
            }
        }
        stats.sort_by_key(|tree| std::cmp::Reverse(tree.key_bytes + tree.value_bytes));
        Ok(stats)
    }

    /// The database's size on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()?)
    }

    /// The current value of the global counter: the last value handed out
    /// (0 before the first use; after a restart, the stored ceiling).
    pub fn current_count(&self) -> Result<u64, StorageError> {
        Ok(self.lock_counter().last)
    }

    pub fn schema_version(&self) -> Result<Option<u32>, StorageError> {
        match self.meta.get(SCHEMA_VERSION_KEY)? {
            Some(bytes) => {
                let array: [u8; 4] = bytes.as_ref().try_into().map_err(|_| StorageError::corrupt("schema version"))?;
                Ok(Some(u32::from_be_bytes(array)))
            }
            None => Ok(None),
        }
    }

    fn set_schema_version(&self, version: u32) -> Result<(), StorageError> {
        {
            let writing = self.gate.enter();
            writing.note(&self.meta, SCHEMA_VERSION_KEY);
            self.meta.insert(SCHEMA_VERSION_KEY, &version.to_be_bytes())?;
        }
        self.flush_blocking()
    }

    /// A record in the `meta` tree (server-wide singletons such as the signing key).
    pub fn meta_get<V: Record>(&self, key: &str) -> Result<Option<V>, StorageError> {
        self.meta.get(key.as_bytes())?.map(|bytes| decode_record(&bytes)).transpose()
    }

    /// Stores (or replaces) a `meta` record, durably.
    pub fn meta_put<V: Record>(&self, key: &str, value: &V) -> Result<(), StorageError> {
        let encoded = encode_record(value)?;
        {
            let writing = self.gate.enter();
            writing.note(&self.meta, key.as_bytes());
            self.meta.insert(key.as_bytes(), encoded)?;
        }
        self.flush_blocking()
    }

    /// Stores a `meta` record if none exists; returns the record now stored,
    /// which is the earlier one if there was one.
    pub fn meta_insert_if_absent<V: Record + Clone>(&self, key: &str, value: &V) -> Result<V, StorageError> {
        let encoded = encode_record(value)?;
        let swapped = {
            let writing = self.gate.enter();
            writing.note(&self.meta, key.as_bytes());
            self.meta.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(encoded))?
        };
        match swapped {
            Ok(()) => {
                self.flush_blocking()?;
                Ok(value.clone())
            }
            Err(conflict) => {
                let current = conflict.current.ok_or_else(|| StorageError::corrupt(key.to_owned()))?;
                decode_record(&current)
            }
        }
    }

    /// True when no table holds any record (a fresh database).
    fn is_empty(&self) -> bool {
        self.db.tree_names().iter().all(|name| {
            name.as_ref() == META_TREE.as_bytes() || self.db.open_tree(name).map(|t| t.is_empty()).unwrap_or(false)
        })
    }

    /// Flushes and stops the flusher; the database closes when dropped.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let result = self.flush_blocking();
        self.commit.shutdown();
        result
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.commit.shutdown();
    }
}

/// How long an open waits for a lock that is about to be released: sled's
/// background threads can hold the files for a moment after a database in the
/// same process is dropped (a restart in tests, or a quick stop and start).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_sled(path: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, StorageError> {
    let started = std::time::Instant::now();
    loop {
        let opened =
            sled::Config::new().path(path).cache_capacity(cache_capacity_bytes).mode(sled::Mode::LowSpace).open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StorageError::Locked(path.to_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// What [`Tables::open`] opens each table with.
pub struct TableOpener<'a> {
    db: &'a sled::Db,
    gate: &'a Arc<WriteGate>,
}

/// What one tree holds ([`Storage::tree_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub name: String,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// A typed tree.
pub struct Table<K, V> {
    tree: sled::Tree,
    gate: Arc<WriteGate>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self { tree: self.tree.clone(), gate: Arc::clone(&self.gate), _types: PhantomData }
    }
}

impl<K: KeyCodec, V: Record> Table<K, V> {
    fn open(opener: &TableOpener<'_>, name: &str) -> Result<Self, StorageError> {
        Ok(Self { tree: opener.db.open_tree(name)?, gate: Arc::clone(opener.gate), _types: PhantomData })
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, StorageError> {
        self.tree.get(key.encode())?.map(|bytes| decode_record(&bytes)).transpose()
    }

    pub fn contains(&self, key: &K) -> Result<bool, StorageError> {
        Ok(self.tree.contains_key(key.encode())?)
    }

    /// Inserts `value` only if `key` is absent; true when it was inserted.
    pub fn insert_if_absent(&self, key: &K, value: &V) -> Result<bool, StorageError> {
        let (key, value) = (key.encode(), encode_record(value)?);
        let writing = self.gate.enter();
        writing.note(&self.tree, &key);
        let outcome = self.tree.compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
        Ok(outcome.is_ok())
    }

    /// Atomically replaces the record at `key` by `f(current)` (`None` removes it)
    /// and returns the new record. `f` may run more than once under contention.
    pub fn update_and_fetch(&self, key: &K, f: impl Fn(Option<V>) -> Option<V>) -> Result<Option<V>, StorageError> {
        let mut failure = None;
        let key = key.encode();
        let writing = self.gate.enter();
        writing.note(&self.tree, &key);
        let updated = self.tree.update_and_fetch(key, |old| {
            let current = match old.map(decode_record::<V>).transpose() {
                Ok(current) => current,
                Err(error) => {
                    failure = Some(error);
                    return old.map(<[u8]>::to_vec);
                }
            };
            match f(current).map(|new| encode_record(&new)).transpose() {
                Ok(bytes) => bytes,
                Err(error) => {
                    failure = Some(error);
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        drop(writing);
        if let Some(error) = failure {
            return Err(error);
        }
        updated.map(|bytes| decode_record(&bytes)).transpose()
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(K, V)>, StorageError> {
        self.tree
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((K::decode(&key)?, decode_record(&value)?))
            })
            .collect()
    }

    /// Every entry whose leading key parts are `parts` (a tuple of references
    /// to the first parts of a tuple key), in key order.
    pub fn scan_leading<P: PrefixOf<K>>(&self, parts: P) -> Result<Vec<(K, V)>, StorageError> {
        self.scan_prefix(&parts.prefix())
    }

    /// The first `limit` entries, in key order.
    pub fn first(&self, limit: usize) -> Result<Vec<(K, V)>, StorageError> {
        self.tree
            .iter()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((K::decode(&key)?, decode_record(&value)?))
            })
            .collect()
    }

    /// Up to `limit` entries with `start <= key < end`, in key order, or in
    /// reverse order from the end when `reverse`.
    pub fn range(&self, start: &K, end: &K, reverse: bool, limit: usize) -> Result<Vec<(K, V)>, StorageError> {
        let range = self.tree.range(start.encode()..end.encode());
        let decode = |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Result<(K, V), StorageError> {
            let (key, value) = entry?;
            Ok((K::decode(&key)?, decode_record(&value)?))
        };
        if reverse {
            range.rev().take(limit).map(decode).collect()
        } else {
            range.take(limit).map(decode).collect()
        }
    }

    /// Calls `visit` with every entry in key order, one at a time (for
    /// tables too large to hold whole).
    pub fn for_each(&self, mut visit: impl FnMut(K, V)) -> Result<(), StorageError> {
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            visit(K::decode(&key)?, decode_record(&value)?);
        }
        Ok(())
    }

    /// Every entry, in key order.
    pub fn all(&self) -> Result<Vec<(K, V)>, StorageError> {
        self.scan_prefix(&[])
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

struct Op {
    tree: sled::Tree,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Writes to one or more tables, applied all together or not at all.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert<K: KeyCodec, V: Record>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<&mut Self, StorageError> {
        self.ops.push(Op { tree: table.tree.clone(), key: key.encode(), value: Some(encode_record(value)?) });
        Ok(self)
    }

    pub fn remove<K: KeyCodec, V: Record>(&mut self, table: &Table<K, V>, key: &K) -> &mut Self {
        self.ops.push(Op { tree: table.tree.clone(), key: key.encode(), value: None });
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends the writes of `other`, which apply after these.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records::UserRecord;

    fn open() -> (tempfile::TempDir, Arc<Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 8 << 20).unwrap());
        (dir, storage)
    }

    fn user(created_ts: u64) -> UserRecord {
        UserRecord::new(None, created_ts, false, false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let (_dir, storage) = open();
        let writers = 64;
        let barrier = Arc::new(tokio::sync::Barrier::new(writers));
        let mut tasks = Vec::new();
        for i in 0..writers {
            let storage = Arc::clone(&storage);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut batch = Batch::new();
                batch.insert(&storage.tables.users, &format!("user{i}"), &user(i as u64)).unwrap();
                storage.commit(batch).await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(storage.tables.users.len(), writers);
        // Each flush answers every ticket queued while the previous one ran,
        // so 64 simultaneous writers need far fewer than 64 flushes.
        let flushes = storage.flush_count();
        assert!((1..writers as u64).contains(&flushes), "{flushes} flushes for {writers} writers");
    }

    #[test]
    fn batches_are_atomic_across_tables() {
        let (_dir, storage) = open();
        let mut batch = Batch::new();
        batch.insert(&storage.tables.users, &"a".to_owned(), &user(1)).unwrap();
        let device = records::DeviceRecord {
            display_name: None,
            created_ts: 1,
            last_seen_ts: None,
            last_seen_ip: None,
            token_hashes: vec![],
        };
        batch.insert(&storage.tables.devices, &("a".to_owned(), "D".to_owned()), &device).unwrap();
        batch.remove(&storage.tables.users, &"missing".to_owned());
        assert_eq!(batch.len(), 3);
        storage.apply(batch).unwrap();
        assert!(storage.tables.users.contains(&"a".to_owned()).unwrap());
        assert_eq!(storage.tables.devices.scan_prefix(&prefix_of("a")).unwrap().len(), 1);
        assert!(storage.tables.devices.scan_prefix(&prefix_of("")).unwrap().is_empty());
    }

    #[test]
    fn counter_blocks_are_stored_ahead_of_every_value_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let handed_out = {
            let storage = Storage::open(dir.path(), 8 << 20).unwrap();
            let mut last = 0;
            // Across several blocks, one value and one long range at a time.
            for _ in 0..(3 * COUNTER_BLOCK) {
                let next = storage.next_count().unwrap();
                assert_eq!(next, last + 1, "consecutive within a process");
                last = next;
            }
            let first = storage.skip_counts(5 * COUNTER_BLOCK).unwrap();
            assert_eq!(first, last + 1);
            last = first + 5 * COUNTER_BLOCK - 1;
            assert_eq!(storage.current_count().unwrap(), last);
            let stored = u64::decode(&storage.meta.get(COUNTER_KEY).unwrap().unwrap()).unwrap();
            assert!(stored >= last && stored <= last + COUNTER_BLOCK, "ceiling {stored} for {last}");
            storage.flush_blocking().unwrap();
            last
        };
        let storage = Storage::open(dir.path(), 8 << 20).unwrap();
        assert!(storage.next_count().unwrap() > handed_out);
    }

    #[test]
    fn counter_increases_strictly_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let storage = Storage::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(storage.current_count().unwrap(), 0);
            let a = storage.next_count().unwrap();
            let b = storage.next_count().unwrap();
            assert!(b > a);
            storage.flush_blocking().unwrap();
            b
        };
        let storage = Storage::open(dir.path(), 8 << 20).unwrap();
        assert!(storage.current_count().unwrap() >= last, "restarts from the stored ceiling");
        assert!(storage.next_count().unwrap() > last);
    }

    #[test]
    fn visible_count_stays_below_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 8 * 1024 * 1024).unwrap();
        let first = storage.reserve_count().unwrap();
        let second = storage.reserve_count().unwrap();
        let unrelated = storage.next_count().unwrap();
        assert_eq!(storage.visible_count().unwrap(), first.count - 1);
        drop(first);
        assert_eq!(storage.visible_count().unwrap(), second.count - 1, "the second write is not finished");
        drop(second);
        assert_eq!(storage.visible_count().unwrap(), unrelated);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_woken_reader_already_sees_the_announced_write() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 8 * 1024 * 1024).unwrap());
        for _ in 0..50 {
            let mut changes = storage.subscribe_changes();
            changes.borrow_and_update();
            let reader = {
                let storage = Arc::clone(&storage);
                tokio::spawn(async move {
                    changes.changed().await.unwrap();
                    storage.visible_count().unwrap()
                })
            };
            let reservation = storage.reserve_count().unwrap();
            let count = reservation.count;
            reservation.announce();
            assert!(reader.await.unwrap() >= count, "woken before the write became visible");
        }
    }

    #[tokio::test]
    async fn a_write_finishing_after_a_later_one_still_wakes_readers() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 8 * 1024 * 1024).unwrap();
        let mut changes = storage.subscribe_changes();
        changes.borrow_and_update();
        let (earlier, later) = (storage.reserve_count().unwrap(), storage.reserve_count().unwrap());
        let earlier_count = earlier.count;
        later.announce();
        assert!(!changes.has_changed().unwrap(), "nothing new is visible while the earlier write runs");
        earlier.announce();
        assert!(changes.has_changed().unwrap(), "both writes are visible now: readers are woken");
        assert!(storage.visible_count().unwrap() > earlier_count);
    }

    #[test]
    fn update_and_fetch_and_insert_if_absent() {
        let (_dir, storage) = open();
        let users = &storage.tables.users;
        let key = "u".to_owned();
        assert!(users.insert_if_absent(&key, &user(1)).unwrap());
        assert!(!users.insert_if_absent(&key, &user(2)).unwrap());
        assert_eq!(users.get(&key).unwrap().unwrap().created_ts, 1);
        let updated = users.update_and_fetch(&key, |u| u.map(|u| UserRecord { created_ts: 5, ..u })).unwrap();
        assert_eq!(updated.unwrap().created_ts, 5);
        assert!(users.update_and_fetch(&key, |_| None).unwrap().is_none());
        assert!(!users.contains(&key).unwrap());
    }

    #[test]
    fn a_second_open_of_the_same_database_is_refused_as_locked() {
        let (dir, _storage) = open();
        let error = Storage::open(dir.path(), 8 << 20).err().unwrap();
        assert!(matches!(error, StorageError::Locked(_)), "{error}");
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let (_dir, storage) = open();
        storage.tables.users.tree.insert(b"bad", &[1u8, 0xC1][..]).unwrap();
        assert!(storage.tables.users.get(&"bad".to_owned()).is_err());
        assert!(storage.tables.users.all().is_err());
    }
}
