//! A small bounded in-memory cache for values that are immutable or
//! invalidated explicitly (parsed events, state maps, room summaries).
//!
//! Two generations approximate LRU without per-access bookkeeping: entries go
//! into the young map; a hit in the old map is promoted; when the young map is
//! full the old one is dropped and the young one becomes old. At most
//! `2 × capacity` entries are held — or, for a cache built with
//! [`BoundedCache::weighted`], `2 × capacity` units of weight (a big room's
//! state map or member list weighs its entries, so a forum of 10,000
//! members does not multiply the memory of every cached snapshot).
//!
//! Invalidation is race-free: [`BoundedCache::epoch`] is read before loading a
//! value from storage and passed to [`BoundedCache::insert_if_current`], which
//! refuses the value if an invalidation happened meanwhile (the loaded value
//! may predate the write that caused it).

use std::{borrow::Borrow, collections::HashMap, hash::Hash, sync::Mutex};

pub struct BoundedCache<K, V> {
    capacity: usize,
    weigh: fn(&V) -> usize,
    inner: Mutex<Generations<K, V>>,
}

struct Generations<K, V> {
    young: HashMap<K, V>,
    /// The weight of the young generation's values.
    young_weight: usize,
    old: HashMap<K, V>,
    epoch: u64,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    /// At most `capacity` entries per generation.
    pub fn new(capacity: usize) -> Self {
        Self::weighted(capacity, |_| 1)
    }

    /// At most `capacity` units of weight per generation, a value weighing
    /// `weigh(value)` (at least 1).
    pub fn weighted(capacity: usize, weigh: fn(&V) -> usize) -> Self {
        let generations = Generations { young: HashMap::new(), young_weight: 0, old: HashMap::new(), epoch: 0 };
        Self { capacity: capacity.max(1), weigh, inner: Mutex::new(generations) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<K, V>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let mut inner = self.lock();
        if let Some(value) = inner.young.get(key) {
            return Some(value.clone());
        }
        let (key, value) = inner.old.remove_entry(key)?;
        let found = value.clone();
        let weight = (self.weigh)(&value);
        inner.store(key, value, weight, self.capacity);
        Some(found)
    }

    /// The invalidation counter, to read before loading a value.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Caches a value loaded after `epoch` was read, unless something was
    /// invalidated since.
    pub fn insert_if_current(&self, key: K, value: V, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch {
            let weight = (self.weigh)(&value);
            inner.store(key, value, weight, self.capacity);
        }
    }

    /// Caches a value that cannot go stale (immutable once written).
    pub fn insert(&self, key: K, value: V) {
        let weight = (self.weigh)(&value);
        self.lock().store(key, value, weight, self.capacity);
    }

    /// Drops a value whose stored form changed; call after the change is written.
    pub fn invalidate<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.young.remove(key);
        inner.old.remove(key);
    }

    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.young.len() + inner.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn store(&mut self, key: K, value: V, weight: usize, capacity: usize) {
        let weight = weight.max(1);
        if self.young_weight + weight > capacity && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
            self.young_weight = 0;
        }
        // A replaced value's weight stays counted until the generation turns.
        self.young_weight += weight;
        self.young.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_two_generations_and_keeps_what_is_used() {
        let cache = BoundedCache::new(2);
        cache.insert(1, "one");
        cache.insert(2, "two");
        cache.insert(3, "three"); // young {3}, old {1, 2}
        assert_eq!(cache.get(&1), Some("one")); // promoted: young {3, 1}, old {2}
        cache.insert(4, "four"); // young {4}, old {3, 1}: 2 is dropped
        assert_eq!(cache.get(&2), None);
        assert_eq!(cache.get(&1), Some("one"));
        assert_eq!(cache.get(&3), Some("three"));
        assert!(cache.len() <= 4);
    }

    #[test]
    fn a_weighted_cache_holds_at_most_two_generations_of_weight() {
        let cache: BoundedCache<u32, Vec<u8>> = BoundedCache::weighted(100, Vec::len);
        cache.insert(1, vec![0; 60]);
        cache.insert(2, vec![0; 30]); // young {1, 2}: 90
        cache.insert(3, vec![0; 50]); // young {3}, old {1, 2}
        assert_eq!(cache.len(), 3);
        cache.insert(4, vec![0; 60]); // young {4}, old {3}: 1 and 2 are dropped
        assert_eq!((cache.get(&1), cache.get(&2)), (None, None));
        assert!(cache.get(&3).is_some());
        cache.insert(5, vec![0; 500]); // heavier than a generation: alone in its own
        assert!(cache.get(&5).is_some());
        let held: usize = [3, 4, 5].iter().filter_map(|key| cache.get(key)).map(|value| value.len()).sum();
        assert!(held <= 2 * 500, "{held}");
    }

    #[test]
    fn a_value_loaded_before_an_invalidation_is_not_cached() {
        let cache = BoundedCache::new(8);
        cache.insert("event", "original");
        let epoch = cache.epoch();
        // A reader loaded "original" from storage; then the event is redacted.
        cache.invalidate(&"event");
        cache.insert_if_current("event", "original", epoch);
        assert_eq!(cache.get(&"event"), None);
        let epoch = cache.epoch();
        cache.insert_if_current("event", "redacted", epoch);
        assert_eq!(cache.get(&"event"), Some("redacted"));
    }
}
