//! Room state, stored compactly.
//!
//! - Event ids and `(type, state_key)` pairs get short numeric ids, so a state
//!   is a map of 8-byte keys to 8-byte values.
//! - A state snapshot is stored either whole, or as the entries that changed
//!   over its parent snapshot (a layer). After [`MAX_LAYERS`] layers the next
//!   snapshot is stored whole again, so reading one never walks far.
//! - Snapshots never change once written and are shared by every event whose
//!   state they describe; full maps are cached.
//!
//! Spec: the state of a room ("Room State" in the server-server API). The
//! layout follows the design notes in ARCHITECTURE.md.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    cache::BoundedCache,
    error::Result,
    storage::{records::StateSnapshotRecord, Batch, Storage, StorageError},
};

/// Short state key → short event id.
pub type StateMap = BTreeMap<u64, u64>;

/// Layers of diffs allowed before a snapshot is written whole.
pub const MAX_LAYERS: u32 = 8;

/// State entries of the full maps kept in memory per cache generation (about
/// 16 bytes each, at most twice this many held: 1,000 snapshots of 500
/// entries, or 50 of a 10,000-member forum).
const CACHE_STATE_ENTRIES: usize = 512_000;

pub struct StateStore {
    storage: Arc<Storage>,
    cache: BoundedCache<u64, Arc<StateMap>>,
}

/// A snapshot as its parent and the entries it changes.
pub struct SnapshotDelta {
    pub parent: u64,
    /// (short state key, short event id).
    pub changes: Vec<(u64, u64)>,
}

impl StateStore {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, cache: BoundedCache::weighted(CACHE_STATE_ENTRIES, |state| state.len()) }
    }

    /// The short id of `(kind, state_key)`, allocated on first use.
    pub fn short_state_key(&self, kind: &str, state_key: &str) -> Result<u64> {
        let tables = &self.storage.tables;
        let key = (kind.to_owned(), state_key.to_owned());
        if let Some(id) = tables.statekey_shortid.get(&key)? {
            return Ok(id);
        }
        let id = self.storage.next_count()?;
        // Reverse entry first: a racing allocation may leave it unused, never wrong.
        let mut batch = Batch::new();
        batch.insert(&tables.shortid_statekey, &id, &key)?;
        self.storage.apply(batch)?;
        if tables.statekey_shortid.insert_if_absent(&key, &id)? {
            Ok(id)
        } else {
            tables.statekey_shortid.get(&key)?.ok_or_else(|| StorageError::corrupt("state key id vanished").into())
        }
    }

    /// The short id of `(kind, state_key)` if it was ever used.
    pub fn existing_short_state_key(&self, kind: &str, state_key: &str) -> Result<Option<u64>> {
        Ok(self.storage.tables.statekey_shortid.get(&(kind.to_owned(), state_key.to_owned()))?)
    }

    /// The `(type, state_key)` of a short id.
    pub fn state_key_of(&self, short: u64) -> Result<(String, String)> {
        self.storage
            .tables
            .shortid_statekey
            .get(&short)?
            .ok_or_else(|| StorageError::corrupt(format!("unknown short state key {short}")).into())
    }

    /// The full state of a snapshot.
    pub fn full_state(&self, snapshot: u64) -> Result<Arc<StateMap>> {
        if let Some(map) = self.cache.get(&snapshot) {
            return Ok(map);
        }
        let record = self.snapshot(snapshot)?;
        let map = match record.parent {
            None => record.entries.into_iter().collect(),
            Some(parent) => {
                let mut map = StateMap::clone(self.full_state(parent)?.as_ref());
                map.extend(record.entries);
                map
            }
        };
        let map = Arc::new(map);
        self.cache.insert(snapshot, Arc::clone(&map));
        Ok(map)
    }

    fn snapshot(&self, id: u64) -> Result<StateSnapshotRecord> {
        self.storage
            .tables
            .snapshot_state
            .get(&id)?
            .ok_or_else(|| StorageError::corrupt(format!("missing state snapshot {id}")).into())
    }

    /// A stored snapshot's parent and the entries it changes over it (`None`
    /// for a whole snapshot, or one not written yet).
    pub fn delta(&self, id: u64) -> Result<Option<SnapshotDelta>> {
        let Some(record) = self.storage.tables.snapshot_state.get(&id)? else { return Ok(None) };
        Ok(record.parent.map(|parent| SnapshotDelta { parent, changes: record.entries }))
    }

    /// Adds to `batch` a snapshot equal to `parent` with `changes` applied, and
    /// returns its id. With no parent the changes are the whole state. The
    /// new snapshot is readable at once (cached), before `batch` is applied.
    pub fn new_snapshot(&self, batch: &mut Batch, parent: Option<u64>, changes: &[(u64, u64)]) -> Result<u64> {
        let id = self.storage.next_count()?;
        let mut entries: Vec<(u64, u64)> = changes.to_vec();
        entries.sort_unstable();
        entries.dedup_by_key(|(key, _)| *key);
        let (record, full) = match parent {
            None => {
                let map = entries.iter().copied().collect();
                (StateSnapshotRecord { parent: None, layer: 0, entries }, Some(map))
            }
            Some(parent_id) => {
                let parent_record = self.snapshot(parent_id)?;
                let parent_map = self.full_state(parent_id)?;
                let mut map = StateMap::clone(parent_map.as_ref());
                map.extend(entries.iter().copied());
                if parent_record.layer >= MAX_LAYERS {
                    let whole = map.iter().map(|(k, v)| (*k, *v)).collect();
                    (StateSnapshotRecord { parent: None, layer: 0, entries: whole }, Some(map))
                } else {
                    (
                        StateSnapshotRecord { parent: Some(parent_id), layer: parent_record.layer + 1, entries },
                        Some(map),
                    )
                }
            }
        };
        batch.insert(&self.storage.tables.snapshot_state, &id, &record)?;
        if let Some(map) = full {
            self.cache.insert(id, Arc::new(map));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Storage>, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 8 << 20).unwrap());
        let store = StateStore::new(Arc::clone(&storage));
        (dir, storage, store)
    }

    #[test]
    fn short_state_keys_are_stable_and_reversible() {
        let (_dir, _storage, store) = store();
        let a = store.short_state_key("m.room.member", "@a:x").unwrap();
        let b = store.short_state_key("m.room.member", "@b:x").unwrap();
        assert_ne!(a, b);
        assert_eq!(store.short_state_key("m.room.member", "@a:x").unwrap(), a);
        assert_eq!(store.state_key_of(b).unwrap(), ("m.room.member".into(), "@b:x".into()));
        assert_eq!(store.existing_short_state_key("m.room.name", "").unwrap(), None);
    }

    /// Many successive changes: every snapshot reads back as the model says,
    /// also after the cache is gone, and layers never exceed the bound.
    #[test]
    fn layered_snapshots_match_a_plain_map() {
        let (_dir, storage, store) = store();
        let mut model = StateMap::new();
        let mut snapshots = Vec::new();
        let mut parent = None;
        for step in 0..40u64 {
            let changes = vec![(step % 7, 1000 + step), (100 + step, step)];
            let mut batch = Batch::new();
            let id = store.new_snapshot(&mut batch, parent, &changes).unwrap();
            storage.apply(batch).unwrap();
            model.extend(changes);
            snapshots.push((id, model.clone()));
            parent = Some(id);
        }
        let cold = StateStore::new(Arc::clone(&storage));
        for (id, expected) in &snapshots {
            assert_eq!(*store.full_state(*id).unwrap(), *expected);
            assert_eq!(*cold.full_state(*id).unwrap(), *expected, "read without the cache");
            assert!(store.snapshot(*id).unwrap().layer <= MAX_LAYERS);
        }
        let full = snapshots.iter().filter(|(id, _)| store.snapshot(*id).unwrap().parent.is_none()).count();
        assert!(full >= 40 / (MAX_LAYERS as usize + 1), "whole snapshots are written periodically");
        assert!(full < 40, "most snapshots are diffs");
    }

    #[test]
    fn a_missing_snapshot_is_an_error() {
        let (_dir, _storage, store) = store();
        assert!(store.full_state(424242).is_err());
    }
}
