//! Consistent copies of a live database (`conduit backup`), and filling an
//! empty database from one (`conduit restore`).
//!
//! **How a copy stays consistent while writes go on.** Every write path of
//! [`super::Storage`] passes the [`WriteGate`]: a shared lock held for the
//! moment of the sled write, under which the written keys are noted while a
//! copy runs. A copy
//! 1. starts noting (taking the gate exclusively for an instant, so no write
//!    is half done and unnoted),
//! 2. walks every tree without stopping anyone (a fuzzy copy: each key holds
//!    some value it had during the walk),
//! 3. catches up without stopping anyone: takes the noted keys (starting a
//!    fresh set under the gate for an instant, so no write noted in the old
//!    set is half done) and appends their current values (or removals);
//!    again while many keys were written meanwhile;
//! 4. takes the gate exclusively (writers wait), reads the current value of
//!    every key written since the last round and appends it, then lets
//!    writers go.
//!
//! Replaying the walk, then the appended values in order, gives exactly the
//! database as it was at step 4: a key nobody wrote kept its value
//! throughout, and a written key ends on its value at step 4 (any write
//! after a round read it is noted for a later round). Writers wait only for
//! step 4, whose length is the number of keys written during the last
//! catch-up round. The noted keys are held in memory; past
//! [`MAX_NOTED_KEYS`] the copy takes the gate for the rest of its walk
//! instead (writers wait, memory stays bounded).
//!
//! A point-in-time state is what a crash at that instant would have left,
//! which every reader of the database already tolerates.
//!
//! **The format** (streamed, one pass each way): a magic header, then frames
//! `put(tree, key, value)` / `remove(tree, key)`, then an `end` frame with the
//! frame count and the SHA-256 of everything before it. A copy without its
//! end frame, or whose digest differs, is refused whole.

use std::{
    collections::HashSet,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
};

use super::{Storage, StorageError};

const MAGIC: &[u8; 16] = b"conduit-backup\0\x01";
const FRAME_END: u8 = 0;
const FRAME_PUT: u8 = 1;
const FRAME_REMOVE: u8 = 2;
/// sled's own tree, which this server never writes.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";
/// Keys noted during a copy before the copy stops writers for the rest of its walk.
pub const MAX_NOTED_KEYS: usize = 1 << 20;
/// Keys left to read back below which the copy holds writers for the last
/// round (a few in unit tests, so that their copies catch up in rounds).
const FREEZE_BELOW: usize = if cfg!(test) { 8 } else { 2_000 };
/// Catch-up rounds (without holding writers) at most before the last one.
const MAX_CATCH_UP_ROUNDS: usize = 4;
/// Entries written in one session of the database while filling it (a few
/// in unit tests, so that their restores reopen it).
const RESTORE_REOPEN_EVERY: usize = if cfg!(test) { 40 } else { 25_000 };
/// Entries per sled batch while filling a database.
const RESTORE_BATCH: usize = 10_000;
/// The longest tree name, key or value a copy may hold (sled's own limit is
/// far above what this server writes; this only stops a corrupt length from
/// allocating gigabytes).
const MAX_FIELD: u32 = 256 << 20;

/// Keys written while a copy runs: (tree name, key).
type NotedKeys = HashSet<(Vec<u8>, Vec<u8>)>;

/// The gate every write passes (see the module docs).
#[derive(Default)]
pub(super) struct WriteGate {
    lock: RwLock<()>,
    /// Held by the copy in progress: one at a time.
    copying: Mutex<()>,
    /// Whether a copy runs (changed only under the exclusive lock).
    noting: AtomicBool,
    noted: Mutex<Option<NotedKeys>>,
}

/// A write in progress: holds the gate shared; [`Writing::note`] records keys.
pub(super) struct Writing<'a> {
    gate: &'a WriteGate,
    _shared: RwLockReadGuard<'a, ()>,
}

impl WriteGate {
    pub(super) fn enter(&self) -> Writing<'_> {
        Writing { gate: self, _shared: self.lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()) }
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_noted(&self) -> std::sync::MutexGuard<'_, Option<NotedKeys>> {
        self.noted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn noted_len(&self) -> usize {
        self.lock_noted().as_ref().map_or(0, HashSet::len)
    }
}

impl Writing<'_> {
    /// Records that `key` of `tree` is being written (only while a copy runs).
    pub(super) fn note(&self, tree: &sled::Tree, key: &[u8]) {
        if !self.gate.noting.load(Ordering::Relaxed) {
            return;
        }
        if let Some(noted) = self.gate.lock_noted().as_mut() {
            noted.insert((tree.name().to_vec(), key.to_vec()));
        }
    }
}

/// What a copy or a restore moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Frames written or read (entries, and the values appended at the end).
    pub frames: u64,
    /// Bytes of the copy.
    pub bytes: u64,
    /// Catch-up rounds a copy made before its last, exclusive one.
    pub catch_up_rounds: usize,
}

/// Writes frames, counting them and hashing everything written.
struct FrameWriter<W: Write> {
    out: W,
    digest: ring::digest::Context,
    frames: u64,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    fn new(mut out: W) -> Result<Self, StorageError> {
        out.write_all(MAGIC).map_err(StorageError::Io)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(MAGIC);
        Ok(Self { out, digest, frames: 0, bytes: MAGIC.len() as u64 })
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.out.write_all(bytes).map_err(StorageError::Io)?;
        self.digest.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn field(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(bytes.len()).map_err(|_| StorageError::corrupt("an entry too large to copy"))?;
        self.raw(&len.to_be_bytes())?;
        self.raw(bytes)
    }

    fn put(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.raw(&[FRAME_PUT])?;
        self.field(tree)?;
        self.field(key)?;
        self.field(value)?;
        self.frames += 1;
        Ok(())
    }

    fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<(), StorageError> {
        self.raw(&[FRAME_REMOVE])?;
        self.field(tree)?;
        self.field(key)?;
        self.frames += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<SnapshotSummary, StorageError> {
        let digest = self.digest.clone().finish();
        let mut end = vec![FRAME_END];
        end.extend_from_slice(&self.frames.to_be_bytes());
        end.extend_from_slice(digest.as_ref());
        self.out.write_all(&end).map_err(StorageError::Io)?;
        self.out.flush().map_err(StorageError::Io)?;
        Ok(SnapshotSummary { frames: self.frames, bytes: self.bytes + end.len() as u64, catch_up_rounds: 0 })
    }
}

impl Storage {
    /// Writes a consistent copy of the whole database to `out` while the
    /// server keeps serving (see the module docs). Blocking: run it off the
    /// async threads.
    pub fn write_snapshot(&self, out: impl Write) -> Result<SnapshotSummary, StorageError> {
        let _one_copy_at_a_time = self.gate.copying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        {
            let _no_writer_in_progress = self.gate.exclusive();
            *self.gate.lock_noted() = Some(HashSet::new());
            self.gate.noting.store(true, Ordering::Relaxed);
        }
        let result = self.copy_then_catch_up(out);
        let _no_writer_in_progress = self.gate.exclusive();
        self.gate.noting.store(false, Ordering::Relaxed);
        *self.gate.lock_noted() = None;
        result
    }

    fn copy_then_catch_up(&self, out: impl Write) -> Result<SnapshotSummary, StorageError> {
        let mut writer = FrameWriter::new(out)?;
        let mut frozen = None;
        for name in self.db.tree_names() {
            if name.as_ref() == SLED_DEFAULT_TREE {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            for entry in tree.iter() {
                let (key, value) = entry?;
                writer.put(&name, &key, &value)?;
                if frozen.is_none() && writer.frames % 4096 == 0 && self.gate.noted_len() > MAX_NOTED_KEYS {
                    tracing::warn!("many writes during the backup: writers now wait until it ends");
                    frozen = Some(self.gate.exclusive());
                }
            }
        }
        // Catch-up rounds without stopping writers: each reads back the keys
        // written since the previous one (after a short exclusive moment to
        // start noting afresh, so no write noted before is still half done),
        // until few are left for the final, exclusive round.
        let mut rounds = 0;
        while frozen.is_none() && rounds < MAX_CATCH_UP_ROUNDS && self.gate.noted_len() > FREEZE_BELOW {
            let noted = {
                let _no_writer_in_progress = self.gate.exclusive();
                self.gate.lock_noted().replace(HashSet::new()).unwrap_or_default()
            };
            self.append_current_values(&mut writer, noted)?;
            rounds += 1;
        }
        let pause_started = std::time::Instant::now();
        let frozen = frozen.unwrap_or_else(|| self.gate.exclusive());
        let noted = self.gate.lock_noted().take().unwrap_or_default();
        let noted_keys = noted.len();
        // Read under the gate, written after it: a slow reader of the copy
        // does not keep writers waiting.
        let latest = self.current_values(noted)?;
        drop(frozen);
        let paused_ms = pause_started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(rounds, noted_keys, paused_ms, "backup: the keys written during the copy were read back");
        write_values(&mut writer, latest)?;
        Ok(SnapshotSummary { catch_up_rounds: rounds, ..writer.finish()? })
    }

    /// The current value (or absence) of each noted key, in key order.
    fn current_values(&self, noted: NotedKeys) -> Result<Vec<NotedValue>, StorageError> {
        let mut latest = Vec::with_capacity(noted.len());
        for (tree_name, key) in noted {
            let value = self.db.open_tree(&tree_name)?.get(&key)?;
            latest.push((tree_name, key, value));
        }
        latest.sort();
        Ok(latest)
    }

    fn append_current_values(
        &self,
        writer: &mut FrameWriter<impl Write>,
        noted: NotedKeys,
    ) -> Result<(), StorageError> {
        let latest = self.current_values(noted)?;
        write_values(writer, latest)
    }
}

/// A noted key and what it held when read back: (tree, key, value).
type NotedValue = (Vec<u8>, Vec<u8>, Option<sled::IVec>);

fn write_values(writer: &mut FrameWriter<impl Write>, latest: Vec<NotedValue>) -> Result<(), StorageError> {
    for (tree, key, value) in latest {
        match value {
            Some(value) => writer.put(&tree, &key, &value)?,
            None => writer.remove(&tree, &key)?,
        }
    }
    Ok(())
}

/// Reads frames, hashing what it read.
struct FrameReader<R: Read> {
    input: R,
    digest: ring::digest::Context,
    frames: u64,
    bytes: u64,
}

enum Frame {
    Put { tree: Vec<u8>, key: Vec<u8>, value: Vec<u8> },
    Remove { tree: Vec<u8>, key: Vec<u8> },
    End,
}

fn truncated() -> StorageError {
    StorageError::corrupt("the backup is truncated or damaged (no valid end)")
}

impl<R: Read> FrameReader<R> {
    fn new(mut input: R) -> Result<Self, StorageError> {
        let mut magic = [0u8; 16];
        input.read_exact(&mut magic).map_err(|_| StorageError::corrupt("not a conduit backup"))?;
        if &magic != MAGIC {
            return Err(StorageError::corrupt("not a conduit backup (or one of an unknown format version)"));
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(&magic);
        Ok(Self { input, digest, frames: 0, bytes: MAGIC.len() as u64 })
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let mut bytes = [0u8; N];
        self.input.read_exact(&mut bytes).map_err(|_| truncated())?;
        self.bytes += N as u64;
        Ok(bytes)
    }

    fn hashed<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let bytes = self.exact::<N>()?;
        self.digest.update(&bytes);
        Ok(bytes)
    }

    fn field(&mut self) -> Result<Vec<u8>, StorageError> {
        let len = u32::from_be_bytes(self.hashed::<4>()?);
        if len > MAX_FIELD {
            return Err(truncated());
        }
        let mut bytes = vec![0u8; len as usize];
        self.input.read_exact(&mut bytes).map_err(|_| truncated())?;
        self.digest.update(&bytes);
        self.bytes += u64::from(len);
        Ok(bytes)
    }

    fn next(&mut self) -> Result<Frame, StorageError> {
        let [tag] = self.exact::<1>()?;
        match tag {
            FRAME_PUT | FRAME_REMOVE => {
                self.digest.update(&[tag]);
                let (tree, key) = (self.field()?, self.field()?);
                self.frames += 1;
                if tag == FRAME_PUT {
                    Ok(Frame::Put { tree, key, value: self.field()? })
                } else {
                    Ok(Frame::Remove { tree, key })
                }
            }
            FRAME_END => {
                let expected = self.digest.clone().finish();
                let frames = u64::from_be_bytes(self.exact::<8>()?);
                let digest = self.exact::<32>()?;
                if frames != self.frames || digest != expected.as_ref() {
                    return Err(StorageError::corrupt("the backup is damaged (its checksum does not match)"));
                }
                Ok(Frame::End)
            }
            _ => Err(truncated()),
        }
    }
}

/// Fills the database at `target` from a copy: refused unless `target` is
/// absent or an empty directory. The copy is loaded beside it and moved into
/// place only once complete and opened (schema checked, migrations run), so
/// a failed restore leaves nothing behind.
pub fn restore_snapshot(
    input: impl Read,
    target: &Path,
    cache_capacity_bytes: u64,
) -> Result<SnapshotSummary, StorageError> {
    ensure_restorable(target)?;
    let staging = staging_path(target);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(StorageError::Io)?;
    }
    let result = fill(input, &staging, cache_capacity_bytes).and_then(|summary| {
        Storage::open(&staging, cache_capacity_bytes)?.shutdown()?;
        // sled's threads may hold the files for a moment after the close.
        std::thread::sleep(std::time::Duration::from_millis(100));
        if target.exists() {
            std::fs::remove_dir(target).map_err(StorageError::Io)?;
        }
        std::fs::rename(&staging, target).map_err(StorageError::Io)?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Reads a whole copy, checking its frames and checksum.
pub fn verify_snapshot(input: impl Read) -> Result<SnapshotSummary, StorageError> {
    let mut reader = FrameReader::new(std::io::BufReader::with_capacity(1 << 20, input))?;
    while !matches!(reader.next()?, Frame::End) {}
    Ok(SnapshotSummary { frames: reader.frames, bytes: reader.bytes, catch_up_rounds: 0 })
}

fn staging_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".restoring");
    target.with_file_name(name)
}

/// A restore never overwrites: the target must be absent or an empty directory.
fn ensure_restorable(target: &Path) -> Result<(), StorageError> {
    match std::fs::read_dir(target) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::Io(error)),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(StorageError::NotEmpty(target.to_owned())),
        },
    }
}

fn fill(input: impl Read, path: &Path, cache_capacity_bytes: u64) -> Result<SnapshotSummary, StorageError> {
    let mut db = Some(super::open_sled(path, cache_capacity_bytes)?);
    let mut reader = FrameReader::new(std::io::BufReader::with_capacity(1 << 20, input))?;
    let mut pending: Option<(Vec<u8>, sled::Batch, usize)> = None;
    let mut since_reopen = 0;
    loop {
        let (tree, key, value) = match reader.next()? {
            Frame::End => break,
            Frame::Put { tree, key, value } => (tree, key, Some(value)),
            Frame::Remove { tree, key } => (tree, key, None),
        };
        if pending.as_ref().is_some_and(|(current, _, count)| *current != tree || *count >= RESTORE_BATCH) {
            since_reopen += apply_pending(db.as_ref(), &mut pending)?;
        }
        // sled keeps much of what was written in one session in memory,
        // whatever its cache size: a large restore reopens the database as
        // it goes, so its memory stays bounded.
        if since_reopen >= RESTORE_REOPEN_EVERY {
            if let Some(open) = db.take() {
                open.flush()?;
            }
            db = Some(super::open_sled(path, cache_capacity_bytes)?);
            since_reopen = 0;
        }
        let (_, batch, count) = pending.get_or_insert_with(|| (tree, sled::Batch::default(), 0));
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
        *count += 1;
    }
    apply_pending(db.as_ref(), &mut pending)?;
    if let Some(db) = db {
        db.flush()?;
    }
    Ok(SnapshotSummary { frames: reader.frames, bytes: reader.bytes, catch_up_rounds: 0 })
}

/// Applies the batch being gathered; how many entries it held.
fn apply_pending(
    db: Option<&sled::Db>,
    pending: &mut Option<(Vec<u8>, sled::Batch, usize)>,
) -> Result<usize, StorageError> {
    let (Some(db), Some((tree, batch, count))) = (db, pending.take()) else { return Ok(0) };
    db.open_tree(tree)?.apply_batch(batch)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{records::UserRecord, Batch};
    use std::sync::Arc;

    fn user(created_ts: u64) -> UserRecord {
        UserRecord::new(None, created_ts, false, false)
    }

    fn snapshot_of(storage: &Storage) -> Vec<u8> {
        let mut copy = Vec::new();
        storage.write_snapshot(&mut copy).unwrap();
        copy
    }

    #[test]
    fn a_copy_restores_every_table_and_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("a"), 8 << 20).unwrap();
        let mut batch = Batch::new();
        for i in 0..100 {
            batch.insert(&storage.tables.users, &format!("user{i}"), &user(i)).unwrap();
        }
        storage.apply(batch).unwrap();
        let count = storage.next_count().unwrap();
        let copy = snapshot_of(&storage);
        let target = dir.path().join("b");
        let summary = restore_snapshot(copy.as_slice(), &target, 8 << 20).unwrap();
        assert_eq!(summary.bytes, copy.len() as u64);
        let restored = Storage::open(&target, 8 << 20).unwrap();
        assert_eq!(restored.tables.users.len(), 100);
        assert_eq!(restored.tables.users.get(&"user42".to_owned()).unwrap().unwrap().created_ts, 42);
        assert!(restored.current_count().unwrap() >= count, "the copy keeps the counter's ceiling");
        assert!(!staging_path(&target).exists());
    }

    #[test]
    fn a_restore_never_overwrites_and_refuses_a_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("a"), 8 << 20).unwrap();
        storage.next_count().unwrap();
        let copy = snapshot_of(&storage);
        let error = restore_snapshot(copy.as_slice(), &dir.path().join("a"), 8 << 20).unwrap_err();
        assert!(matches!(error, StorageError::NotEmpty(_)), "{error}");
        for damaged in [&copy[..copy.len() - 1], &copy[..40]] {
            let target = dir.path().join("c");
            let error = restore_snapshot(damaged, &target, 8 << 20).unwrap_err();
            assert!(error.to_string().contains("truncated"), "{error}");
            assert!(!target.exists() && !staging_path(&target).exists(), "a failed restore leaves nothing");
        }
        let mut flipped = copy.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let error = restore_snapshot(flipped.as_slice(), &dir.path().join("d"), 8 << 20).unwrap_err();
        assert!(matches!(error, StorageError::Corrupt(_)), "{error}");
        let error = restore_snapshot(&b"hello"[..], &dir.path().join("e"), 8 << 20).unwrap_err();
        assert!(error.to_string().contains("not a conduit backup"), "{error}");
    }

    /// Writers keep writing pairs of keys that must agree (one batch each);
    /// every copy taken meanwhile holds agreeing pairs only.
    #[test]
    fn a_copy_taken_under_concurrent_writes_is_a_point_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(&dir.path().join("a"), 8 << 20).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (storage, stop) = (Arc::clone(&storage), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        round += 1;
                        let mut batch = Batch::new();
                        for slot in 0..20 {
                            let key = format!("w{w}-{slot}");
                            batch.insert(&storage.tables.users, &key, &user(round)).unwrap();
                            let device = (key.clone(), "D".to_owned());
                            let record = crate::storage::records::DeviceRecord {
                                display_name: None,
                                created_ts: round,
                                last_seen_ts: None,
                                last_seen_ip: None,
                                token_hashes: vec![],
                            };
                            batch.insert(&storage.tables.devices, &device, &record).unwrap();
                        }
                        // New keys each round, so that copies have many to catch up on.
                        batch.insert(&storage.tables.users, &format!("w{w}-round{round:09}"), &user(round)).unwrap();
                        // Some keys come and go.
                        if round % 2 == 0 {
                            batch.remove(&storage.tables.users, &format!("w{w}-odd"));
                        } else {
                            batch.insert(&storage.tables.users, &format!("w{w}-odd"), &user(round)).unwrap();
                        }
                        storage.apply(batch).unwrap();
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                })
            })
            .collect();
        let mut rounds = 0;
        for copy_number in 0..5 {
            let mut copy = Vec::new();
            rounds += storage.write_snapshot(&mut copy).unwrap().catch_up_rounds;
            let target = dir.path().join(format!("copy{copy_number}"));
            restore_snapshot(copy.as_slice(), &target, 8 << 20).unwrap();
            let restored = Storage::open(&target, 8 << 20).unwrap();
            for w in 0..2 {
                let rounds: HashSet<u64> = (0..20)
                    .flat_map(|slot| {
                        let key = format!("w{w}-{slot}");
                        let user = restored.tables.users.get(&key).unwrap().map(|u| u.created_ts);
                        let device = restored.tables.devices.get(&(key, "D".to_owned())).unwrap().map(|d| d.created_ts);
                        [user, device]
                    })
                    .map(|round| round.unwrap_or(0))
                    .collect();
                assert_eq!(rounds.len(), 1, "copy {copy_number}: writer {w}'s batch is torn: {rounds:?}");
                let round = *rounds.iter().next().unwrap();
                let odd = restored.tables.users.contains(&format!("w{w}-odd")).unwrap();
                assert_eq!(odd, round % 2 == 1, "copy {copy_number}: the removal of round {round} is torn");
                let rounds_kept = restored.tables.users.scan_prefix(format!("w{w}-round").as_bytes()).unwrap().len();
                assert_eq!(rounds_kept as u64, round, "copy {copy_number}: writer {w}'s new keys stop at its round");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(rounds > 0, "the copies caught up without holding writers at least once");
    }
}
