//! Full-text message search: the word index kept as events are stored, and
//! the query behind `POST /search` (`room_events`).
//!
//! Spec: client-server API "Server Side Search" (`search.yaml`). Indexed:
//! `content.body` of messages, `content.name` and `content.topic` of room
//! names and topics, unencrypted by nature. Words are folded like the user
//! directory's (no case, no accents); each query word must start a word of
//! the event (word-prefix). The index is derived data: the words of new
//! messages are written in blocks by [`super::search_queue`]; a redaction or
//! a purge removes the event's words. Owns the `search_index` table, the
//! entry-per-word index of earlier versions (its entries are
//! [`crate::storage::records::SearchEntry`]), still read and cleaned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{EventPlace, Rooms};
use crate::events::kinds;
use crate::{
    error::Result,
    events::Pdu,
    storage::{
        records::{SearchBlock, SearchEntry, SearchPosting, SearchRoom},
        Batch,
    },
    sync::filter::RoomEventFilter,
    users::directory::words,
};

/// The searchable fields of an event: (key, text).
pub fn searchable_fields(pdu: &Pdu) -> Vec<(&'static str, String)> {
    // Most events have nothing to index: their content is not parsed.
    let (key, name) = match pdu.kind().to_string().as_str() {
        kinds::MESSAGE => ("content.body", "body"),
        kinds::NAME => ("content.name", "name"),
        kinds::TOPIC => ("content.topic", "topic"),
        _ => return Vec::new(),
    };
    let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
    content[name].as_str().map(|text| (key, text.to_owned())).into_iter().collect()
}

/// (word, key) pairs of an event, each once.
fn indexed_words(pdu: &Pdu) -> BTreeSet<(String, &'static str)> {
    searchable_fields(pdu).into_iter().flat_map(|(key, text)| words(&text).into_iter().map(move |w| (w, key))).collect()
}

/// The indexed fields, by their code in a [`SearchPosting`].
const FIELDS: [&str; 3] = ["content.body", "content.name", "content.topic"];

/// The postings of an event's words (one per word: the first field has it).
pub(super) fn postings_of(
    pdu: &Pdu,
    room_short: u64,
    position: u64,
    state_before: u64,
) -> Vec<(String, SearchPosting)> {
    let mut postings: BTreeMap<String, SearchPosting> = BTreeMap::new();
    for (word, key) in indexed_words(pdu) {
        let field = FIELDS.iter().position(|field| *field == key).map_or(0, |code| code as u8);
        postings.entry(word).or_insert(SearchPosting { position, room_short, field, state_before });
    }
    postings.into_iter().collect()
}

/// The distinct words of an event, as the index holds them.
fn words_of(pdu: &Pdu) -> Vec<String> {
    let words: BTreeSet<String> = indexed_words(pdu).into_iter().map(|(word, _)| word).collect();
    words.into_iter().collect()
}

/// A matching event while words are intersected: its room, its snapshot and
/// how many query words matched whole.
type Candidate = (String, Option<u64>, usize);

/// One hit of a search: an event position and how well it matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub count: u64,
    pub room_id: String,
    /// Share of the query words matching a whole word (not only a prefix).
    pub rank: f64,
    /// The state snapshot before the event, when the index has it.
    pub state_before: Option<u64>,
}

/// How results are ordered (`order_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first (the share of whole-word matches), newest among equals.
    Rank,
    /// Newest first.
    Recent,
}

/// Orders hits (pure).
pub fn order_hits(hits: &mut [Hit], order: SearchOrder) {
    match order {
        SearchOrder::Recent => hits.sort_by_key(|hit| std::cmp::Reverse(hit.count)),
        SearchOrder::Rank => hits.sort_by(|a, b| b.rank.total_cmp(&a.rank).then(b.count.cmp(&a.count))),
    }
}

/// One page of results, and how many results there are in all.
pub struct SearchPage {
    pub visible: Vec<(Hit, Pdu, std::sync::Arc<EventPlace>)>,
    pub total: usize,
}

impl Rooms {
    /// The page at `offset` of the ordered `hits` that `user_id` may see and
    /// `filter` accepts, with the exact count of all of them.
    ///
    /// Visibility depends only on the state before an event (searchable
    /// events are never membership events), so it is decided once per state
    /// snapshot; the index gives the snapshot, so without type, sender or URL
    /// conditions a hit outside the page is never read.
    pub fn search_page(
        &self,
        user_id: &ruma::UserId,
        hits: Vec<Hit>,
        filter: &RoomEventFilter,
        offset: usize,
        page: usize,
    ) -> Result<SearchPage> {
        let mut visible = Vec::new();
        let mut total = 0;
        let mut verdicts: HashMap<u64, bool> = HashMap::new();
        let mut can_see = |room_id: &str, snapshot: u64| -> Result<bool> {
            if let Some(verdict) = verdicts.get(&snapshot) {
                return Ok(*verdict);
            }
            let verdict = self.can_see_in_snapshot(user_id, room_id, snapshot, None)?;
            verdicts.insert(snapshot, verdict);
            Ok(verdict)
        };
        let judges_events = filter.judges_events();
        for hit in hits {
            let on_page = total >= offset && visible.len() < page;
            if let (Some(snapshot), false, false) = (hit.state_before, judges_events, on_page) {
                total += usize::from(can_see(&hit.room_id, snapshot)?);
                continue;
            }
            let Ok(room_id) = ruma::RoomId::parse(&hit.room_id) else { continue };
            let Some(event_id) = self.event_id_at(&room_id, hit.count)? else { continue };
            let Some((pdu, stored)) = self.get_pdu(&event_id)? else { continue };
            let Some(before) = stored.state_before else { continue };
            if stored.redacted || !filter.accepts(&pdu) || !can_see(&stored.room_id, before)? {
                continue;
            }
            total += 1;
            if total > offset && visible.len() < page {
                visible.push((hit, pdu, stored));
            }
        }
        Ok(SearchPage { visible, total })
    }

    /// Adds an event's words to the index (in `batch`) as blocks of their
    /// own: for events placed below the positions the queue writes
    /// (history fetched from a peer, events indexed again).
    pub(super) fn index_search_words(
        &self,
        batch: &mut Batch,
        room_short: u64,
        pdu: &Pdu,
        count: u64,
        state_before: u64,
    ) -> Result<()> {
        for (word, posting) in postings_of(pdu, room_short, count, state_before) {
            let block = SearchBlock { postings: vec![posting] };
            batch.insert(&self.storage.tables.search_blocks, &(word, count), &block)?;
        }
        Ok(())
    }

    /// Removes a redacted or purged event's entries of the earlier index (in
    /// `batch`); its blocks are [`Self::unindex_redacted`]'s and
    /// [`Self::unindex_purged`]'s.
    pub(super) fn unindex_search_words(&self, batch: &mut Batch, pdu: &Pdu, count: u64) {
        // Databases made since blocks have none: no removals to write.
        if self.storage.tables.search_index.is_empty() {
            return;
        }
        for (word, _) in indexed_words(pdu) {
            batch.remove(&self.storage.tables.search_index, &(word, count));
        }
    }

    /// Removes purged events' words (event, position) from the blocks, at
    /// once (before the purge is written: a crash between leaves the events
    /// unsearchable, not hits without their events), each block rewritten once.
    pub(super) fn unindex_purged(&self, events: &[(Pdu, u64)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut removals: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (pdu, position) in events {
            for word in words_of(pdu) {
                removals.entry(word).or_default().insert(*position);
            }
        }
        let _writing = self.search_queue.writing();
        let mut batch = Batch::new();
        self.search_queue.remove_events(&mut batch, &removals)?;
        self.storage.apply(batch)?;
        for (_, position) in events {
            self.search_queue.forget(*position);
        }
        Ok(())
    }

    /// For a redaction being stored: records its target's words (in
    /// `batch`) for the next flush to remove from the blocks. The guard
    /// returned must be held until `batch` is applied (then
    /// [`RedactionUnindex::written`]), so that no flush writes the target's
    /// waiting words meanwhile.
    pub(super) fn unindex_redacted(&self, batch: &mut Batch, target: &ruma::EventId) -> Result<RedactionUnindex<'_>> {
        // The target changes only under its room's lock, which the caller
        // holds: its words are read before the queue's lock is taken, and
        // that lock only when there are words (not for a reaction's target
        // being redacted, for instance).
        let Some((pdu, stored)) = self.get_pdu(target)? else { return Ok(RedactionUnindex::nothing(self)) };
        let words = words_of(&pdu);
        let Some(position) = stored.position().filter(|_| !words.is_empty()) else {
            return Ok(RedactionUnindex::nothing(self));
        };
        let writing = self.search_queue.writing();
        self.search_queue.remove_later(batch, words, position)?;
        Ok(RedactionUnindex { rooms: self, held: Some((position, writing)) })
    }

    /// Queues a new timeline event's words for the next block write.
    pub(super) fn queue_search_words(&self, room_short: u64, pdu: &Pdu, position: u64, state_before: u64) {
        self.search_queue.push(postings_of(pdu, room_short, position, state_before));
    }

    /// Indexes the timeline events after the index's progress position (the
    /// words that were waiting in memory at a crash), or, on the first start
    /// with blocks, records that every earlier event is indexed (by the
    /// earlier index). Returns how many events were read.
    pub fn recover_search_queue(&self) -> Result<usize> {
        let Some(indexed_upto) = self.search_queue.indexed_upto()? else {
            self.search_queue.start_at(self.storage.visible_count()?)?;
            return Ok(0);
        };
        // Queued all at once, so that no flush moves the progress position
        // before every room was read; an unreadable event or room is skipped.
        let mut read = 0;
        let mut postings = Vec::new();
        for (_, room) in self.storage.tables.roomid_room.all()? {
            let mut from = indexed_upto.saturating_add(1);
            loop {
                let page = match self.timeline_page(&room, from, false, BACKFILL_PAGE) {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(room = room.short_id, %error, "a room's timeline unreadable: its last events are not searchable");
                        break;
                    }
                };
                for (position, event_id) in &page {
                    read += 1;
                    let Ok(Some((pdu, stored))) = self.get_pdu(event_id) else { continue };
                    if let (false, Some(before)) = (stored.redacted, stored.state_before) {
                        postings.extend(postings_of(&pdu, room.short_id, *position, before));
                    }
                }
                match page.last() {
                    Some((position, _)) if page.len() == BACKFILL_PAGE => from = position + 1,
                    _ => break,
                }
            }
        }
        self.search_queue.push(postings);
        self.search_queue.flush()?;
        Ok(read)
    }

    /// Writes the waiting words (a search sees every answered message).
    pub fn flush_search_queue(&self) -> Result<usize> {
        Ok(self.search_queue.flush()?)
    }

    /// Events of `rooms` whose indexed fields (of `keys`, all when empty)
    /// contain a word starting with each word of `term`.
    pub fn search_index(&self, term: &str, keys: &[String], rooms: &BTreeSet<String>) -> Result<Vec<Hit>> {
        let wanted = words(term);
        if wanted.is_empty() || rooms.is_empty() {
            return Ok(Vec::new());
        }
        // Held while the blocks are read: no redaction is written meanwhile,
        // and those whose words are still in the blocks are left out.
        let writing = self.search_queue.writing();
        if let Err(error) = self.search_queue.flush_holding(&writing) {
            // The words written before are still searched.
            tracing::warn!(%error, "could not write the waiting search words");
        }
        let redacted = self.search_queue.redactions_waiting(&writing)?;
        // The rooms by short id, as entries name them.
        let mut by_short = HashMap::new();
        for room_id in rooms {
            let Ok(parsed) = ruma::RoomId::parse(room_id.as_str()) else { continue };
            if let Some(room) = self.room(&parsed)? {
                by_short.insert(room.short_id, room_id.clone());
            }
        }
        // Per event: the room, its snapshot, and how many query words matched whole.
        let mut candidates: Option<BTreeMap<u64, Candidate>> = None;
        for query_word in &wanted {
            let mut matches: BTreeMap<u64, (String, Option<u64>, bool)> = BTreeMap::new();
            for ((word, _), block) in self.storage.tables.search_blocks.scan_prefix(query_word.as_bytes())? {
                let whole = word == *query_word;
                for posting in block.postings {
                    if redacted.contains(&posting.position) {
                        continue;
                    }
                    let Some(room_id) = by_short.get(&posting.room_short) else { continue };
                    let field = FIELDS.get(usize::from(posting.field)).copied().unwrap_or_default();
                    if !keys.is_empty() && !keys.iter().any(|key| key == field) {
                        continue;
                    }
                    let slot = matches
                        .entry(posting.position)
                        .or_insert_with(|| (room_id.clone(), Some(posting.state_before), false));
                    slot.2 |= whole;
                }
            }
            for ((word, count), entry) in self.storage.tables.search_index.scan_prefix(query_word.as_bytes())? {
                let SearchEntry { room, field, state_before } = entry;
                let room_id = match room {
                    SearchRoom::Short(short) => by_short.get(&short).cloned(),
                    SearchRoom::Id(id) => rooms.contains(&id).then_some(id),
                };
                let Some(room_id) = room_id else { continue };
                if !keys.is_empty() && !keys.contains(&field) {
                    continue;
                }
                let whole = word == *query_word;
                let slot = matches.entry(count).or_insert_with(|| (room_id, state_before, false));
                slot.2 |= whole;
            }
            candidates = Some(match candidates {
                None => matches
                    .into_iter()
                    .map(|(count, (room, state_before, whole))| (count, (room, state_before, usize::from(whole))))
                    .collect(),
                Some(previous) => previous
                    .into_iter()
                    .filter_map(|(count, (room, state_before, wholes))| {
                        matches
                            .get(&count)
                            .map(|(_, _, whole)| (count, (room, state_before, wholes + usize::from(*whole))))
                    })
                    .collect(),
            });
        }
        Ok(candidates
            .unwrap_or_default()
            .into_iter()
            .map(|(count, (room_id, state_before, wholes))| Hit {
                count,
                room_id,
                rank: (1 + wholes) as f64 / (1 + wanted.len()) as f64,
                state_before,
            })
            .collect())
    }
}

/// A redaction's removal of its target's words from the search blocks,
/// holding the queue's write lock until its batch is written.
pub(super) struct RedactionUnindex<'a> {
    rooms: &'a Rooms,
    /// The target's position and the queue's lock, when the target is in
    /// the timeline and has words.
    held: Option<(u64, std::sync::MutexGuard<'a, ()>)>,
}

impl<'a> RedactionUnindex<'a> {
    /// A target with no words to remove.
    fn nothing(rooms: &'a Rooms) -> Self {
        Self { rooms, held: None }
    }

    /// The redaction's batch is written: the target's waiting words go too,
    /// and its stored ones with the next flush.
    pub(super) fn written(self) {
        let Self { rooms, held } = self;
        let Some((position, writing)) = held else { return };
        rooms.search_queue.redaction_written(position);
        drop(writing);
        rooms.search_queue.flush_if_many_redactions();
    }
}

/// Marks, in the `meta` tree, that events stored before the search index
/// existed have been indexed.
const BACKFILLED: &str = "search_index_backfilled";

/// Timeline entries indexed per step of the backfill.
const BACKFILL_PAGE: usize = 1024;

impl Rooms {
    /// Indexes, once per database, the events stored before the index
    /// existed (redacted ones excepted). Returns how many events were read.
    pub fn backfill_search_index(&self) -> Result<usize> {
        if self.storage.meta_get::<u64>(BACKFILLED)?.is_some() {
            return Ok(0);
        }
        let read = self.reindex_search_words()?;
        self.storage.meta_insert_if_absent(BACKFILLED, &crate::util::now_ms())?;
        Ok(read)
    }

    /// Indexes every stored, unredacted event (idempotent); returns how many
    /// timeline entries were read.
    pub fn reindex_search_words(&self) -> Result<usize> {
        let tables = &self.storage.tables;
        let mut start = (0, 0);
        let mut read = 0;
        loop {
            let page = tables.room_timeline.range(&start, &(u64::MAX, u64::MAX), false, BACKFILL_PAGE)?;
            for ((room_short, count), event_id) in &page {
                read += 1;
                let Ok(event_id) = ruma::OwnedEventId::try_from(event_id.as_str()) else { continue };
                // An unreadable event is skipped, not a reason to start again.
                let Ok(Some((pdu, stored))) = self.get_pdu(&event_id) else { continue };
                if let (false, Some(before)) = (stored.redacted, stored.state_before) {
                    // A block already keyed at this position holds it (a flush's
                    // first event): left whole.
                    for (word, posting) in postings_of(&pdu, *room_short, *count, before) {
                        let block = SearchBlock { postings: vec![posting] };
                        tables.search_blocks.insert_if_absent(&(word, *count), &block)?;
                    }
                }
            }
            match page.last() {
                Some(((room, count), _)) if page.len() == BACKFILL_PAGE => start = (*room, count + 1),
                _ => break,
            }
        }
        self.storage.flush_blocking()?;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(count: u64, rank: f64) -> Hit {
        Hit { count, room_id: "!r:x".into(), rank, state_before: None }
    }

    #[test]
    fn hits_order_by_rank_then_recency_or_by_recency_alone() {
        let mut hits = vec![hit(1, 0.5), hit(3, 1.0), hit(2, 1.0), hit(4, 0.0)];
        order_hits(&mut hits, SearchOrder::Rank);
        assert_eq!(hits.iter().map(|h| h.count).collect::<Vec<_>>(), [3, 2, 1, 4]);
        order_hits(&mut hits, SearchOrder::Recent);
        assert_eq!(hits.iter().map(|h| h.count).collect::<Vec<_>>(), [4, 3, 2, 1]);
    }
}
