//! The user directory index: local users by display name and user id, for
//! `POST /user_directory/search`.
//!
//! Spec: client-server API "User directory". Matching is by word prefix,
//! case- and accent-insensitive ("helene" finds "Hélène Müller"): names,
//! localparts and email addresses are folded (Unicode decomposition, combining marks dropped,
//! lowercase) and split into words; each search word must be the prefix of
//! one of a user's words. Ranking: an exact match of the whole name or
//! localpart first, then users with a whole-word match, then prefix matches,
//! each by name. The index lives in memory, built at start-up from the
//! users table and kept up to date on registration, profile changes and
//! deactivation; which results a searcher may see is decided by the caller.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::RwLock,
};

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// Folds text for matching: decomposed, without combining marks, lowercase.
pub fn fold(text: &str) -> String {
    text.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// The folded words of a text (split on anything not alphanumeric).
pub fn words(text: &str) -> Vec<String> {
    fold(text).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// Whether every word of a search is the prefix of a word of `name` or of
/// the user id's localpart (the index's rule, for users outside it: other
/// servers' users met in rooms).
pub fn matches(wanted: &[String], name: Option<&str>, localpart: &str) -> bool {
    let mut own = words(localpart);
    own.extend(name.map(words).unwrap_or_default());
    !wanted.is_empty() && wanted.iter().all(|word| own.iter().any(|w| w.starts_with(word.as_str())))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub localpart: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    /// The account's email addresses: found by their words too.
    pub emails: Vec<String>,
}

impl DirectoryEntry {
    fn words(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = words(&self.localpart).into_iter().collect();
        all.insert(fold(&self.localpart));
        if let Some(name) = &self.display_name {
            all.extend(words(name));
        }
        for address in &self.emails {
            all.extend(words(address));
        }
        all
    }
}

/// An entry with its folded forms, computed once.
struct Indexed {
    entry: DirectoryEntry,
    folded_name: String,
    folded_localpart: String,
    words: BTreeSet<String>,
}

/// Users are numbered (slots are reused after removals) so that matching
/// works on small integers rather than strings.
#[derive(Default)]
struct Index {
    entries: Vec<Option<Indexed>>,
    slot_of: HashMap<String, u32>,
    free: Vec<u32>,
    /// Folded word → the slots of the users having it.
    words: BTreeMap<String, Vec<u32>>,
}

#[derive(Default)]
pub struct UserDirectory {
    index: RwLock<Index>,
}

impl UserDirectory {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or replaces a user.
    pub fn upsert(&self, entry: DirectoryEntry) {
        let indexed = Indexed {
            folded_name: entry.display_name.as_deref().map(fold).unwrap_or_default(),
            folded_localpart: fold(&entry.localpart),
            words: entry.words(),
            entry,
        };
        let mut index = self.write();
        index.remove(&indexed.entry.localpart);
        let slot = match index.free.pop() {
            Some(slot) => slot,
            None => {
                index.entries.push(None);
                (index.entries.len() - 1) as u32
            }
        };
        for word in &indexed.words {
            index.words.entry(word.clone()).or_default().push(slot);
        }
        index.slot_of.insert(indexed.entry.localpart.clone(), slot);
        index.entries[slot as usize] = Some(indexed);
    }

    /// Removes a user (deactivated).
    pub fn remove(&self, localpart: &str) {
        self.write().remove(localpart);
    }

    pub fn len(&self) -> usize {
        self.read().slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Users matching every word of `term`, best first.
    pub fn search(&self, term: &str) -> Vec<DirectoryEntry> {
        let mut all = Vec::new();
        let _ = self.search_visible(term, usize::MAX, |entry| {
            all.push(entry.clone());
            Ok::<bool, std::convert::Infallible>(true)
        });
        all
    }

    /// Up to `limit` users matching every word of `term` that `visible`
    /// accepts, best first, and whether more were left out.
    pub fn search_visible<E>(
        &self,
        term: &str,
        limit: usize,
        mut visible: impl FnMut(&DirectoryEntry) -> Result<bool, E>,
    ) -> Result<(Vec<DirectoryEntry>, bool), E> {
        let wanted = words(term);
        if wanted.is_empty() {
            return Ok((Vec::new(), false));
        }
        let index = self.read();
        let mut candidates: Vec<u32> = Vec::new();
        for (position, word) in wanted.iter().enumerate() {
            let mut matching: Vec<u32> = index
                .words
                .range::<String, _>(word.clone()..)
                .take_while(|(indexed, _)| indexed.starts_with(word.as_str()))
                .flat_map(|(_, slots)| slots.iter().copied())
                .collect();
            matching.sort_unstable();
            matching.dedup();
            candidates = if position == 0 {
                matching
            } else {
                candidates.into_iter().filter(|slot| matching.binary_search(slot).is_ok()).collect()
            };
            if candidates.is_empty() {
                return Ok((Vec::new(), false));
            }
        }
        let folded_term = fold(term.trim());
        // Whole-word matches, from the index: the users having each word as
        // it was typed (none at all, for a short prefix, most of the time).
        let whole_words: Option<Vec<Vec<u32>>> = wanted
            .iter()
            .map(|word| {
                let mut slots = index.words.get(word)?.clone();
                slots.sort_unstable();
                Some(slots)
            })
            .collect();
        let mut ranked: Vec<(u8, &Indexed)> = candidates
            .into_iter()
            .filter_map(|slot| Some((slot, index.entries.get(slot as usize)?.as_ref()?)))
            .map(|(slot, indexed)| {
                let whole = |lists: &Vec<Vec<u32>>| lists.iter().all(|list| list.binary_search(&slot).is_ok());
                let rank = if indexed.folded_name == folded_term || indexed.folded_localpart == folded_term {
                    0
                } else if whole_words.as_ref().is_some_and(whole) {
                    1
                } else {
                    2
                };
                (rank, indexed)
            })
            .collect();
        let order = |(rank_a, a): &(u8, &Indexed), (rank_b, b): &(u8, &Indexed)| {
            (rank_a, &a.folded_name, &a.entry.localpart).cmp(&(rank_b, &b.folded_name, &b.entry.localpart))
        };
        // Only the best few need ordering: sort a prefix large enough for the
        // limit (most candidates are usually visible), the rest only if needed.
        let mut results = Vec::new();
        let mut sorted_up_to = 0;
        let mut position = 0;
        while position < ranked.len() {
            if position == sorted_up_to {
                let rest = &mut ranked[sorted_up_to..];
                let take = limit.saturating_mul(4).saturating_add(1).min(rest.len());
                if take < rest.len() {
                    rest.select_nth_unstable_by(take, order);
                }
                rest[..take].sort_unstable_by(order);
                sorted_up_to += take;
            }
            let entry = &ranked[position].1.entry;
            position += 1;
            if !visible(entry)? {
                continue;
            }
            if results.len() == limit {
                return Ok((results, true));
            }
            results.push(entry.clone());
        }
        Ok((results, false))
    }
}

impl Index {
    fn remove(&mut self, localpart: &str) {
        let Some(slot) = self.slot_of.remove(localpart) else { return };
        let Some(old) = self.entries.get_mut(slot as usize).and_then(Option::take) else { return };
        for word in &old.words {
            if let Some(slots) = self.words.get_mut(word) {
                slots.retain(|s| *s != slot);
                if slots.is_empty() {
                    self.words.remove(word);
                }
            }
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(localpart: &str, name: &str) -> DirectoryEntry {
        DirectoryEntry {
            localpart: localpart.into(),
            display_name: Some(name.into()),
            avatar_url: None,
            emails: vec![],
        }
    }

    fn found(directory: &UserDirectory, term: &str) -> Vec<String> {
        directory.search(term).into_iter().map(|e| e.localpart).collect()
    }

    #[test]
    fn word_prefixes_match_without_case_or_accents_and_exact_matches_rank_first() {
        let directory = UserDirectory::default();
        directory.upsert(entry("hmuller", "Hélène Müller"));
        directory.upsert(entry("fdupont", "François Dupont"));
        directory.upsert(entry("helen", "Helen"));
        directory.upsert(entry("helenea", "Hélène Arnaud"));
        assert_eq!(found(&directory, "helene"), ["helenea", "hmuller"]);
        assert_eq!(found(&directory, "HÉL"), ["helen", "helenea", "hmuller"]);
        assert_eq!(found(&directory, "helen"), ["helen", "helenea", "hmuller"], "the exact name first");
        assert_eq!(found(&directory, "francois"), ["fdupont"]);
        assert_eq!(found(&directory, "mull hel"), ["hmuller"], "every word must match");
        assert_eq!(found(&directory, "dupon"), ["fdupont"]);
        assert_eq!(found(&directory, "fdup"), ["fdupont"], "the localpart matches too");
        assert!(found(&directory, "upont").is_empty(), "prefixes of words only");
        assert!(found(&directory, "  ").is_empty());
    }

    #[test]
    fn renames_and_removals_apply_at_once() {
        let directory = UserDirectory::default();
        directory.upsert(entry("a1", "Old Name"));
        directory.upsert(entry("a1", "New Name"));
        assert!(found(&directory, "old").is_empty());
        assert_eq!(found(&directory, "new"), ["a1"]);
        directory.remove("a1");
        assert!(found(&directory, "name").is_empty());
        assert!(directory.is_empty());
    }
}
