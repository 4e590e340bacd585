//! The message search index's write side: words of new messages wait in
//! memory and are written as blocks, one stored entry per word for a whole
//! batch of messages.
//!
//! Written one entry per word and message, the index was half of the
//! entries a message stored (8.3 of about 16 in chat rooms) and sled's cost
//! follows the number of entries (about 12 µs to write and 130 bytes stored
//! each, see BENCHMARKS.md, #18). In a block, a word costs one entry for
//! every message of the batch that has it.
//!
//! Durability: `indexed_upto` (in `search_progress`) is the position up to
//! which every timeline event's words are stored; it is written in the same
//! atomic batch as the blocks. Postings wait here only for events with a
//! position above it, so after a crash the events above it are indexed
//! again from the timeline at start-up ([`super::Rooms::recover_search_queue`]).
//!
//! Consistency: a flush takes the postings at or below the visible position
//! (`Storage::visible_count`): those of every finished write, as writers push
//! before releasing their position. A search flushes first, so it sees every
//! message already answered. Blocks are written by a flush (new keys, and
//! the rewrites that redactions asked for) and rewritten by a purge; both
//! hold [`SearchQueue::writing`], so two rewrites of one block never lose
//! each other's change.
//!
//! Redactions: a redaction does not rewrite its target's blocks (a block of
//! a common word holds thousands of messages: rewriting a few of them per
//! redaction grew a 112 MiB database to 740 MiB over 10,000 redactions).
//! It records the target's words in `search_unindex`, in its own write, and
//! drops the target's waiting words, holding [`SearchQueue::writing`] from
//! before its write until after (no flush stores those words meanwhile).
//! The next flush removes the recorded targets from the blocks (up to
//! 4,096), each block rewritten once, and the records with them in the same
//! atomic write. A search flushes and reads the blocks holding
//! [`SearchQueue::writing`], and leaves out the targets still recorded, so it
//! never finds a redacted message. A flush starts when [`UNINDEX_AT`]
//! redactions wait.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use crate::storage::{
    records::{SearchBlock, SearchPosting},
    Batch, Storage, StorageError,
};

/// Postings held before a flush is started (about 90 bytes each with their
/// word: about 2 MiB, some 3,000 chat messages; a crash re-reads as many at
/// start-up).
pub const FLUSH_AT: usize = 24_576;

/// Redactions waiting to be removed from the blocks when a flush is started
/// (a moderation sweep; a record is about 100 bytes).
pub const UNINDEX_AT: usize = 2_048;

/// Redactions removed from the blocks by one flush at most (the others wait
/// for the next one; a search leaves them out meanwhile).
const UNINDEX_PER_FLUSH: usize = 4_096;

/// The key of the progress position in `search_progress`.
const INDEXED_UPTO: &str = "indexed_upto";

/// A word of an event, waiting to be written.
pub type PendingPosting = (String, SearchPosting);

/// A stored block and its key: (word, first position).
type StoredBlock = ((String, u64), SearchBlock);

pub struct SearchQueue {
    storage: Arc<Storage>,
    pending: Mutex<Vec<PendingPosting>>,
    /// Held while blocks are written or rewritten.
    writing: Mutex<()>,
    /// A background flush is on its way.
    flush_started: AtomicBool,
    /// Redacted events whose words are still in the blocks (`search_unindex`).
    unindex_waiting: AtomicUsize,
}

impl SearchQueue {
    pub fn new(storage: Arc<Storage>) -> Self {
        let unindex_waiting = AtomicUsize::new(storage.tables.search_unindex.len());
        Self {
            storage,
            pending: Mutex::default(),
            writing: Mutex::default(),
            flush_started: AtomicBool::new(false),
            unindex_waiting,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Vec<PendingPosting>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by whoever writes or rewrites blocks.
    pub fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the words of a stored event (before its position is released).
    /// Starts a flush in the background when enough wait.
    pub fn push(self: &Arc<Self>, postings: Vec<PendingPosting>) {
        if postings.is_empty() {
            return;
        }
        let due = {
            let mut pending = self.pending();
            pending.extend(postings);
            pending.len() >= FLUSH_AT
        };
        if due {
            self.flush_in_background();
        }
    }

    /// Starts a flush on a blocking thread, unless one is on its way. The
    /// caller must not hold [`Self::writing`].
    fn flush_in_background(self: &Arc<Self>) {
        if !self.flush_started.swap(true, Ordering::AcqRel) {
            let queue = Arc::clone(self);
            let flush = move || {
                if let Err(error) = queue.flush() {
                    tracing::warn!(%error, "could not write the message search index");
                }
                queue.flush_started.store(false, Ordering::Release);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(flush)),
                Err(_) => flush(),
            }
        }
    }

    /// How many postings wait.
    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position up to which every timeline event is indexed (none
    /// before the first start with blocks).
    pub fn indexed_upto(&self) -> Result<Option<u64>, StorageError> {
        self.storage.tables.search_progress.get(&INDEXED_UPTO.to_owned())
    }

    /// Writes the postings of every finished write as blocks, with the new
    /// progress position; returns how many postings were written. They
    /// leave the queue only once written: a failed write loses nothing.
    pub fn flush(&self) -> Result<usize, StorageError> {
        self.flush_holding(&self.writing())
    }

    /// [`Self::flush`] by the holder of [`Self::writing`] (a search, which
    /// keeps it while it reads the blocks).
    pub fn flush_holding(&self, _writing: &MutexGuard<'_, ()>) -> Result<usize, StorageError> {
        let upto = self.storage.visible_count()?;
        // Every posting at or below `upto` is here already (pushed before its
        // position was released), and none comes while `writing` is held
        // but from writes above it.
        let ready: Vec<PendingPosting> =
            self.pending().iter().filter(|(_, posting)| posting.position <= upto).cloned().collect();
        let unindex = self.storage.tables.search_unindex.first(UNINDEX_PER_FLUSH)?;
        let written = ready.len();
        // With nothing to write, nothing is written (a search flushes first:
        // no write on every read); the position then moves with the next words.
        if written == 0 && unindex.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for (word, block) in blocks_of(ready) {
            let first = block.postings.first().map_or(0, |posting| posting.position);
            batch.insert(&self.storage.tables.search_blocks, &(word, first), &block)?;
        }
        if written > 0 && self.indexed_upto()?.is_none_or(|indexed| indexed < upto) {
            batch.insert(&self.storage.tables.search_progress, &INDEXED_UPTO.to_owned(), &upto)?;
        }
        let mut removals: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (position, words) in &unindex {
            batch.remove(&self.storage.tables.search_unindex, position);
            for word in words {
                removals.entry(word.clone()).or_default().insert(*position);
            }
        }
        // The blocks rewritten are stored ones: a redacted event's waiting
        // words left the queue with its redaction's write.
        self.remove_events(&mut batch, &removals)?;
        self.storage.apply(batch)?;
        self.pending().retain(|(_, posting)| posting.position > upto);
        self.unindex_waiting.fetch_sub(unindex.len(), Ordering::AcqRel);
        Ok(written)
    }

    /// Records that everything up to `position` is indexed (a database whose
    /// earlier events are in the entry-per-word index).
    pub fn start_at(&self, position: u64) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.search_progress, &INDEXED_UPTO.to_owned(), &position)?;
        self.storage.apply(batch)
    }

    /// Drops the waiting postings of the event at `position` (once its
    /// removal from the blocks is written).
    pub fn forget(&self, position: u64) {
        self.pending().retain(|(_, posting)| posting.position != position);
    }

    /// Adds to a redaction's `batch` the record of its target's words (at
    /// `position`), which the next flush removes from the blocks. The caller
    /// holds [`Self::writing`] until `batch` is applied, then calls
    /// [`Self::redaction_written`].
    pub fn remove_later(&self, batch: &mut Batch, words: Vec<String>, position: u64) -> Result<(), StorageError> {
        batch.insert(&self.storage.tables.search_unindex, &position, &words)?;
        Ok(())
    }

    /// A redaction's write with [`Self::remove_later`] is applied: the
    /// target's waiting words go (the caller still holds [`Self::writing`]).
    pub fn redaction_written(&self, position: u64) {
        self.forget(position);
        self.unindex_waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// The positions of redacted events whose words are still in the blocks
    /// (a search by the holder of [`Self::writing`] leaves them out).
    pub fn redactions_waiting(&self, _writing: &MutexGuard<'_, ()>) -> Result<BTreeSet<u64>, StorageError> {
        if self.unindex_waiting.load(Ordering::Acquire) == 0 {
            return Ok(BTreeSet::new());
        }
        Ok(self.storage.tables.search_unindex.all()?.into_iter().map(|(position, _)| position).collect())
    }

    /// Starts a flush when many redactions wait (the caller holds no lock).
    pub fn flush_if_many_redactions(self: &Arc<Self>) {
        if self.unindex_waiting.load(Ordering::Acquire) >= UNINDEX_AT {
            self.flush_in_background();
        }
    }

    /// Adds to `batch` the removal of events' words (word → positions) from
    /// the stored blocks; the caller holds [`Self::writing`] until `batch`
    /// is applied. Each block is read and rewritten once, however many of
    /// its events go (a purge of thousands of messages rewrote a block per
    /// message and word otherwise).
    pub fn remove_events(
        &self,
        batch: &mut Batch,
        removals: &BTreeMap<String, BTreeSet<u64>>,
    ) -> Result<(), StorageError> {
        let mut changed: BTreeMap<(String, u64), SearchBlock> = BTreeMap::new();
        for (word, positions) in removals {
            for &position in positions {
                let holds = |block: &SearchBlock| block.postings.iter().any(|posting| posting.position == position);
                let loaded = changed
                    .range_mut((word.clone(), 0)..=(word.clone(), position))
                    .rev()
                    .find(|(_, block)| holds(block));
                if let Some((_, block)) = loaded {
                    block.postings.retain(|posting| posting.position != position);
                    continue;
                }
                for (key, block) in self.blocks_holding(word, position)? {
                    let block = changed.entry(key).or_insert(block);
                    block.postings.retain(|posting| posting.position != position);
                }
            }
        }
        for (key, block) in changed {
            self.write_rewritten(batch, key, block)?;
        }
        Ok(())
    }

    /// The blocks of `word` that hold `position`. Blocks written by flushes
    /// cover increasing, disjoint ranges (a flush takes every posting up to
    /// its position, the next only later ones; start-up recovery queues all
    /// it finds before any flush); blocks of one posting (history placed
    /// below, events indexed again) can sit anywhere. So the blocks starting
    /// at or before `position` are read backwards until one of several
    /// postings ends before it.
    fn blocks_holding(&self, word: &str, position: u64) -> Result<Vec<StoredBlock>, StorageError> {
        const PAGE: usize = 16;
        let blocks = &self.storage.tables.search_blocks;
        let mut holding = Vec::new();
        let mut end = position.saturating_add(1);
        loop {
            let page = blocks.range(&(word.to_owned(), 0), &(word.to_owned(), end), true, PAGE)?;
            let full = page.len() == PAGE;
            for (key, block) in page {
                end = key.1;
                let last = block.postings.last().map_or(0, |posting| posting.position);
                if block.postings.iter().any(|posting| posting.position == position) {
                    holding.push((key, block));
                } else if block.postings.len() > 1 && last < position {
                    return Ok(holding);
                }
            }
            if !full {
                return Ok(holding);
            }
        }
    }

    /// Adds to `batch` a block stored under `key` as it is now (keyed by
    /// its first position still), or its removal when nothing is left.
    fn write_rewritten(&self, batch: &mut Batch, key: (String, u64), block: SearchBlock) -> Result<(), StorageError> {
        let blocks = &self.storage.tables.search_blocks;
        match block.postings.first().map(|posting| posting.position) {
            None => {
                batch.remove(blocks, &key);
            }
            Some(first) => {
                if first != key.1 {
                    batch.remove(blocks, &key);
                }
                batch.insert(blocks, &(key.0, first), &block)?;
            }
        }
        Ok(())
    }
}

/// Postings grouped by word, each word's in position order.
fn blocks_of(postings: Vec<PendingPosting>) -> BTreeMap<String, SearchBlock> {
    let mut blocks: BTreeMap<String, SearchBlock> = BTreeMap::new();
    for (word, posting) in postings {
        blocks.entry(word).or_default().postings.push(posting);
    }
    for block in blocks.values_mut() {
        block.postings.sort_by_key(|posting| posting.position);
        block.postings.dedup_by_key(|posting| posting.position);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(position: u64) -> SearchPosting {
        SearchPosting { position, room_short: 1, field: 0, state_before: 2 }
    }

    fn queue() -> (tempfile::TempDir, Arc<SearchQueue>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 8 * 1024 * 1024).unwrap());
        // Positions up to 100 are taken and finished.
        while storage.next_count().unwrap() < 100 {}
        (dir, Arc::new(SearchQueue::new(storage)))
    }

    fn stored_blocks(queue: &SearchQueue) -> Vec<((String, u64), Vec<u64>)> {
        let all = queue.storage.tables.search_blocks.all().unwrap();
        all.into_iter().map(|(key, block)| (key, block.postings.iter().map(|p| p.position).collect())).collect()
    }

    #[test]
    fn a_flush_writes_one_block_per_word_and_only_finished_writes() {
        let (_dir, queue) = queue();
        let unfinished = queue.storage.reserve_count().unwrap();
        let visible = queue.storage.visible_count().unwrap();
        queue.push(vec![("hello".into(), posting(visible - 1)), ("world".into(), posting(visible - 1))]);
        queue.push(vec![("hello".into(), posting(visible))]);
        queue.push(vec![("hello".into(), posting(unfinished.count))]);
        assert_eq!(queue.flush().unwrap(), 3);
        assert_eq!(
            stored_blocks(&queue),
            [
                (("hello".into(), visible - 1), vec![visible - 1, visible]),
                (("world".into(), visible - 1), vec![visible - 1])
            ]
        );
        assert_eq!(queue.indexed_upto().unwrap(), Some(visible));
        assert_eq!(queue.len(), 1, "the unfinished write's words wait");
        drop(unfinished);
        assert_eq!(queue.flush().unwrap(), 1);
        assert!(queue.is_empty());
        assert!(queue.indexed_upto().unwrap().unwrap() > visible);
    }

    /// Removes an event's words from the stored blocks at once.
    fn remove_now(queue: &SearchQueue, words: &[&str], position: u64) {
        let removals = words.iter().map(|word| (word.to_string(), BTreeSet::from([position]))).collect();
        let _writing = queue.writing();
        let mut batch = Batch::new();
        queue.remove_events(&mut batch, &removals).unwrap();
        queue.storage.apply(batch).unwrap();
        queue.forget(position);
    }

    /// What a redaction does: its write records the target's words, then
    /// the target's waiting words go.
    fn redact(queue: &SearchQueue, words: &[&str], position: u64) {
        let _writing = queue.writing();
        let mut batch = Batch::new();
        queue.remove_later(&mut batch, words.iter().map(|word| word.to_string()).collect(), position).unwrap();
        queue.storage.apply(batch).unwrap();
        queue.redaction_written(position);
    }

    #[test]
    fn a_redaction_drops_its_target_s_waiting_words_and_the_next_flush_its_stored_ones() {
        let (_dir, queue) = queue();
        queue.push(vec![("a".into(), posting(3)), ("b".into(), posting(3))]);
        queue.push(vec![("a".into(), posting(5))]);
        queue.flush().unwrap();
        queue.push(vec![("a".into(), posting(7))]);
        redact(&queue, &["a", "b"], 3);
        redact(&queue, &["a"], 7);
        assert!(queue.is_empty(), "the waiting words of 7 went");
        assert_eq!(
            stored_blocks(&queue),
            [(("a".into(), 3), vec![3, 5]), (("b".into(), 3), vec![3])],
            "the blocks are not rewritten by the redactions"
        );
        assert_eq!(queue.storage.tables.search_unindex.len(), 2);
        assert_eq!(queue.redactions_waiting(&queue.writing()).unwrap(), BTreeSet::from([3, 7]), "left out of searches");

        assert_eq!(queue.flush().unwrap(), 0, "no new words, but the redactions' removals");
        assert!(queue.redactions_waiting(&queue.writing()).unwrap().is_empty());
        assert_eq!(stored_blocks(&queue), [(("a".into(), 5), vec![5])], "the head moved the key; b's block went");
        assert!(queue.storage.tables.search_unindex.is_empty(), "removed with the blocks' rewrite");
        assert_eq!(queue.unindex_waiting.load(Ordering::Acquire), 0);
        assert_eq!(queue.flush().unwrap(), 0);
    }

    #[test]
    fn redactions_waiting_at_a_restart_are_removed_by_its_first_flush() {
        let (dir, queue) = queue();
        queue.push(vec![("a".into(), posting(3)), ("a".into(), posting(4))]);
        queue.flush().unwrap();
        redact(&queue, &["a"], 4);
        let storage = Arc::clone(&queue.storage);
        drop(queue);
        storage.shutdown().unwrap();
        drop(storage);

        let storage = Arc::new(Storage::open(dir.path(), 8 * 1024 * 1024).unwrap());
        let queue = SearchQueue::new(storage);
        assert_eq!(queue.unindex_waiting.load(Ordering::Acquire), 1, "counted from the stored records");
        queue.flush().unwrap();
        assert_eq!(stored_blocks(&queue), [(("a".into(), 3), vec![3])]);
    }

    #[test]
    fn removing_many_events_rewrites_each_block_once() {
        let (_dir, queue) = queue();
        queue.push((1..=6).map(|position| ("a".to_owned(), posting(position))).collect());
        queue.push(vec![("b".into(), posting(2))]);
        queue.flush().unwrap();
        let removals =
            BTreeMap::from([("a".to_owned(), BTreeSet::from([1, 2, 5])), ("b".to_owned(), BTreeSet::from([2]))]);
        let mut batch = Batch::new();
        let _writing = queue.writing();
        queue.remove_events(&mut batch, &removals).unwrap();
        assert_eq!(batch.len(), 3, "block a moved to its new head (a removal and an insert), block b removed");
        queue.storage.apply(batch).unwrap();
        assert_eq!(stored_blocks(&queue), [(("a".into(), 3), vec![3, 4, 6])]);
    }

    #[test]
    fn a_block_of_one_posting_inside_another_block_s_range_is_found() {
        let (_dir, queue) = queue();
        queue.push(vec![("a".into(), posting(3)), ("a".into(), posting(5))]);
        queue.flush().unwrap();
        queue.push(vec![("a".into(), posting(20)), ("a".into(), posting(30))]);
        queue.flush().unwrap();
        // History placed below, in blocks of its own.
        let mut batch = Batch::new();
        for position in [4, 25] {
            let block = SearchBlock { postings: vec![posting(position)] };
            batch.insert(&queue.storage.tables.search_blocks, &("a".to_owned(), position), &block).unwrap();
        }
        queue.storage.apply(batch).unwrap();
        for gone in [30, 4] {
            remove_now(&queue, &["a"], gone);
        }
        assert_eq!(
            stored_blocks(&queue),
            [(("a".into(), 3), vec![3, 5]), (("a".into(), 20), vec![20]), (("a".into(), 25), vec![25])]
        );
    }
}
