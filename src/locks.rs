//! Async locks by key (a room, a device's transaction), each entry dropped
//! once nobody holds or waits for it: the map holds only keys in use.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

type Entries<K> = HashMap<K, Arc<tokio::sync::Mutex<()>>>;

pub struct KeyedLocks<K>(Mutex<Entries<K>>);

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

/// A held lock; dropping it releases the key (and its entry if unused).
pub struct KeyedGuard<'l, K: Hash + Eq> {
    locks: &'l KeyedLocks<K>,
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq> KeyedLocks<K> {
    /// Waits for `key`'s lock.
    pub async fn lock<Q>(&self, key: &Q) -> KeyedGuard<'_, K>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        let lock = Arc::clone(self.entries().entry(key.to_owned()).or_default());
        let guard = lock.lock_owned().await;
        KeyedGuard { locks: self, key: key.to_owned(), guard: Some(guard) }
    }

    fn entries(&self) -> MutexGuard<'_, Entries<K>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keys with a lock entry (held or waited for).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut entries = self.locks.entries();
        // Only the map holds the mutex: nobody holds it or waits for it.
        if entries.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_go_once_nobody_holds_or_waits() {
        let locks = Arc::new(KeyedLocks::<String>::default());
        let held = locks.lock("a").await;
        let waiter = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                let _second = locks.lock("a").await;
            }
        });
        tokio::task::yield_now().await;
        let other = locks.lock("b").await;
        assert_eq!(locks.len(), 2, "another key is not held up");
        drop(other);
        assert_eq!(locks.len(), 1);
        drop(held);
        waiter.await.unwrap();
        assert!(locks.is_empty(), "the entry went with the last holder");
    }
}
