//! Client transaction ids of the room endpoints (`PUT /rooms/{roomId}/send`
//! and `PUT /rooms/{roomId}/redact`): a repeated request is answered with the
//! first event's id instead of sending the event again.
//!
//! Spec: client-server API "Transaction identifiers": a retransmission is the
//! same transaction id on the same path from the same device. How long a
//! server remembers is left open; Synapse forgets event transaction ids after
//! a day, and so does this module, without a time index or a scan: the
//! transactions are written in two tables that take turns. New ones go into
//! the *current* table; once it has been current for [`GENERATION_MS`], the
//! other table (whose every entry is older than that) is emptied and becomes
//! the current one. Both are read, so an id is remembered for one to two
//! days (plus the maintenance interval), and the table space is reused
//! instead of growing by one entry a message for ever.
//!
//! Owns `txnid_eventid`, `txnid_eventid_b` and the `client_txn_generation`
//! meta record (which table is current, since when).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    error::Result,
    storage::{records::TxnGenerationRecord, Batch, Storage, Table},
};

use super::TxnKey;

/// How long a table takes new transactions before the other one does.
pub const GENERATION_MS: u64 = 24 * 3600 * 1000;

/// Entries removed per write while a table is emptied.
const REMOVE_PER_WRITE: usize = 1_000;

const GENERATION_KEY: &str = "client_txn_generation";

/// The two tables and which of them is current (loaded on first use).
pub struct ClientTransactions {
    storage: Arc<Storage>,
    generation: Mutex<Option<TxnGenerationRecord>>,
}

impl ClientTransactions {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, generation: Mutex::new(None) }
    }

    /// Reads (or, on a database without one, stores) the current
    /// generation: at start-up, so that no request pays for it.
    pub fn load(&self) -> Result<()> {
        self.current(crate::util::now_ms()).map(drop)
    }

    /// The event a transaction already sent, if it is remembered.
    pub fn event_of(&self, key: &TxnKey) -> Result<Option<String>> {
        let current = self.current(crate::util::now_ms())?.current;
        for table in [self.table(current), self.table(1 - current)] {
            if let Some(event_id) = table.get(key)? {
                return Ok(Some(event_id));
            }
        }
        Ok(None)
    }

    /// Records the transaction's event in `batch` (the event's own write).
    pub fn record(&self, batch: &mut Batch, key: &TxnKey, event_id: &str) -> Result<()> {
        let current = self.current(crate::util::now_ms())?.current;
        batch.insert(self.table(current), key, &event_id.to_owned())?;
        Ok(())
    }

    /// When the current table has taken transactions for a generation:
    /// empties the other one and makes it current (maintenance; blocking).
    /// How many transactions were forgotten.
    pub fn forget_old(&self, now: u64) -> Result<usize> {
        let generation = self.current(now)?;
        if now.saturating_sub(generation.started_ts) < GENERATION_MS {
            return Ok(0);
        }
        let other = 1 - generation.current;
        let forgotten = self.empty(self.table(other))?;
        let next = TxnGenerationRecord { current: other, started_ts: now };
        self.storage.meta_put(GENERATION_KEY, &next)?;
        *self.lock() = Some(next);
        tracing::debug!(forgotten, table = other, "client transactions of the previous generation forgotten");
        Ok(forgotten)
    }

    /// Removes every entry of `table`, a bounded write at a time.
    fn empty(&self, table: &Table<TxnKey, String>) -> Result<usize> {
        let mut removed = 0;
        loop {
            let entries = table.first(REMOVE_PER_WRITE)?;
            if entries.is_empty() {
                return Ok(removed);
            }
            let mut batch = Batch::new();
            for (key, _) in &entries {
                batch.remove(table, key);
            }
            self.storage.apply(batch)?;
            removed += entries.len();
        }
    }

    /// The current generation, stored on first use (a database that has none
    /// yet starts one now, its older transactions counted in it).
    fn current(&self, now: u64) -> Result<TxnGenerationRecord> {
        let mut generation = self.lock();
        if let Some(loaded) = *generation {
            return Ok(loaded);
        }
        let first = TxnGenerationRecord { current: 0, started_ts: now };
        let loaded = match self.storage.meta_get::<TxnGenerationRecord>(GENERATION_KEY)? {
            Some(stored) if stored.current <= 1 => stored,
            _ => {
                self.storage.meta_put(GENERATION_KEY, &first)?;
                first
            }
        };
        *generation = Some(loaded);
        Ok(loaded)
    }

    fn table(&self, which: u8) -> &Table<TxnKey, String> {
        match which {
            0 => &self.storage.tables.txnid_eventid,
            _ => &self.storage.tables.txnid_eventid_b,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<TxnGenerationRecord>> {
        self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::TxnRequest;

    fn storage() -> (tempfile::TempDir, Arc<Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 1 << 20).unwrap());
        (dir, storage)
    }

    fn key(txn_id: &str) -> TxnKey {
        TxnKey {
            localpart: "alice".into(),
            device_id: "DEV".into(),
            request: TxnRequest::Send { room_id: "!r:x".into(), event_type: "m.room.message".into() },
            txn_id: txn_id.into(),
        }
    }

    fn send(transactions: &ClientTransactions, storage: &Storage, txn_id: &str, event_id: &str) {
        let mut batch = Batch::new();
        transactions.record(&mut batch, &key(txn_id), event_id).unwrap();
        storage.apply(batch).unwrap();
    }

    #[test]
    fn a_transaction_is_remembered_for_one_generation_at_least_and_two_at_most() {
        let (_dir, storage) = storage();
        let transactions = ClientTransactions::new(Arc::clone(&storage));
        let start = transactions.current(1_000).unwrap().started_ts;
        send(&transactions, &storage, "t1", "$one");

        assert_eq!(transactions.forget_old(start + GENERATION_MS - 1).unwrap(), 0, "too early");
        assert_eq!(transactions.event_of(&key("t1")).unwrap().as_deref(), Some("$one"));

        assert_eq!(transactions.forget_old(start + GENERATION_MS).unwrap(), 0, "the other table was empty");
        assert_eq!(transactions.event_of(&key("t1")).unwrap().as_deref(), Some("$one"), "still remembered");
        send(&transactions, &storage, "t2", "$two");
        assert_eq!(storage.tables.txnid_eventid_b.len(), 1, "new transactions go to the other table");

        assert_eq!(transactions.forget_old(start + 2 * GENERATION_MS - 1).unwrap(), 0);
        assert_eq!(transactions.forget_old(start + 2 * GENERATION_MS).unwrap(), 1);
        assert_eq!(transactions.event_of(&key("t1")).unwrap(), None, "forgotten after two generations");
        assert_eq!(transactions.event_of(&key("t2")).unwrap().as_deref(), Some("$two"));
        assert!(storage.tables.txnid_eventid.is_empty());
    }

    #[test]
    fn the_generation_survives_a_restart_and_an_older_database_keeps_its_transactions() {
        let (dir, storage) = storage();
        let mut batch = Batch::new();
        batch.insert(&storage.tables.txnid_eventid, &key("old"), &"$old".to_owned()).unwrap();
        storage.apply(batch).unwrap();
        let transactions = ClientTransactions::new(Arc::clone(&storage));
        assert_eq!(transactions.event_of(&key("old")).unwrap().as_deref(), Some("$old"));
        let start = transactions.current(0).unwrap().started_ts;
        transactions.forget_old(start + GENERATION_MS).unwrap();
        drop(transactions);
        storage.shutdown().unwrap();
        drop(storage);

        let storage = Arc::new(Storage::open(dir.path(), 1 << 20).unwrap());
        let transactions = ClientTransactions::new(Arc::clone(&storage));
        let generation = transactions.current(u64::MAX).unwrap();
        assert_eq!(generation, TxnGenerationRecord { current: 1, started_ts: start + GENERATION_MS });
        assert_eq!(transactions.event_of(&key("old")).unwrap().as_deref(), Some("$old"));
        assert_eq!(transactions.forget_old(start + 2 * GENERATION_MS).unwrap(), 1);
        assert_eq!(transactions.event_of(&key("old")).unwrap(), None);
    }

    #[test]
    fn emptying_a_table_takes_several_writes_and_misses_nothing() {
        let (_dir, storage) = storage();
        let transactions = ClientTransactions::new(Arc::clone(&storage));
        let start = transactions.current(0).unwrap().started_ts;
        for n in 0..(REMOVE_PER_WRITE * 2 + 7) {
            send(&transactions, &storage, &format!("t{n}"), "$e");
        }
        transactions.forget_old(start + GENERATION_MS).unwrap();
        assert_eq!(transactions.forget_old(start + 2 * GENERATION_MS).unwrap(), REMOVE_PER_WRITE * 2 + 7);
        assert!(storage.tables.txnid_eventid.is_empty() && storage.tables.txnid_eventid_b.is_empty());
    }
}
