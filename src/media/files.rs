//! Removing stored files no record names any more, while the server runs.
//!
//! A file exists shortly before the record that names it (an upload, a
//! fetched remote item, a thumbnail: [`super::Spool::finish`], then the
//! record's commit), and identical content shares one file. So a file is
//! removed only when, at one instant, no record names it and no file stored
//! under that address is waiting for its record:
//! - [`FileRegistry::store`] renames a file into place while holding the
//!   registry's lock, and hands back a [`PendingFile`] that stays with the
//!   content until its record is written (or abandoned);
//! - a removal scans the records, then, holding the same lock, removes each
//!   candidate that is neither named nor pending — unless a pending file got
//!   its record during the scan (the generation moved), then it scans again.
//!
//! At start-up, before any upload, every unnamed file goes
//! ([`super::Media::new`]).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{file_in, Media};
use crate::error::Result;

/// Scans before a removal gives up under constant uploads (the files then
/// go at the next start).
const MAX_SCANS: usize = 5;

#[derive(Default)]
struct Pending {
    /// Content address → files stored under it still waiting for their record.
    waiting: HashMap<String, usize>,
    /// Moves each time a pending file is released.
    generation: u64,
}

/// Files stored and not yet named by a record (see the module docs).
#[derive(Default)]
pub struct FileRegistry {
    pending: Mutex<Pending>,
}

/// A stored file whose record is not written yet: its file is not removed
/// while this lives.
pub struct PendingFile {
    registry: Arc<FileRegistry>,
    sha256: String,
}

impl std::fmt::Debug for PendingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PendingFile").field(&self.sha256).finish()
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        let mut pending = self.registry.lock();
        if let Some(count) = pending.waiting.get_mut(&self.sha256) {
            *count -= 1;
            if *count == 0 {
                pending.waiting.remove(&self.sha256);
            }
        }
        pending.generation += 1;
    }
}

impl FileRegistry {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `place` (which puts the file of `sha256` in place) under the
    /// lock, marking the file pending until the returned guard is dropped.
    pub(super) fn store<T>(
        self: &Arc<Self>,
        sha256: &str,
        place: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<(T, PendingFile)> {
        let mut pending = self.lock();
        let placed = place()?;
        *pending.waiting.entry(sha256.to_owned()).or_default() += 1;
        Ok((placed, PendingFile { registry: Arc::clone(self), sha256: sha256.to_owned() }))
    }
}

impl Media {
    /// Every content address a record names (uploads, remote items, thumbnails).
    pub(super) fn referenced_files(&self) -> Result<HashSet<String>> {
        let tables = &self.storage.tables;
        let mut referenced = HashSet::new();
        tables.media.for_each(|_, record| referenced.extend(record.sha256))?;
        tables.thumbnails.for_each(|_, thumbnail| {
            referenced.insert(thumbnail.sha256);
        })?;
        tables.remote_media.for_each(|_, record| referenced.extend(record.sha256))?;
        Ok(referenced)
    }

    /// Removes the files of `candidates` that no record names and no upload
    /// is about to name; how many went.
    pub(super) async fn remove_unnamed_files(&self, candidates: HashSet<String>) -> Result<usize> {
        if candidates.is_empty() {
            return Ok(0);
        }
        for _ in 0..MAX_SCANS {
            let generation = self.files.lock().generation;
            let referenced = self.referenced_files()?;
            let pending = self.files.lock();
            if pending.generation != generation {
                continue; // a file got its record meanwhile: look again
            }
            let removed = candidates
                .iter()
                .filter(|sha256| !referenced.contains(*sha256) && !pending.waiting.contains_key(*sha256))
                .filter(|sha256| std::fs::remove_file(file_in(&self.dir, sha256)).is_ok())
                .count();
            return Ok(removed);
        }
        tracing::info!("uploads kept coming: unnamed media files will be removed at the next start");
        Ok(0)
    }

    /// Removes every stored file no record names (start-up, before any upload).
    pub(super) fn remove_unreferenced_files(&self) -> Result<usize> {
        let referenced = self.referenced_files()?;
        let mut removed = 0;
        let walked = for_each_content_file(&self.dir, |name, path| {
            if !referenced.contains(name) && std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
            Ok(())
        });
        walked.map_err(|error| crate::error::Error::internal("walking the media directory", error))?;
        Ok(removed)
    }
}

/// Calls `visit` with the content address and path of every stored file
/// under `dir` (`xx/<64 hex digits>`, as [`super::file_in`] names them;
/// temporary files and strangers, such as a mount's `lost+found`, are
/// skipped unread). An absent `dir` has none; a fan-out directory that
/// cannot be read, or an error of `visit`, stops the walk.
pub fn for_each_content_file(
    dir: &Path,
    mut visit: impl FnMut(&str, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let fan_out = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for directory in fan_out {
        let directory = directory?;
        let name = directory.file_name();
        let fan_out_name = name.len() == 2 && name.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit);
        if !fan_out_name || !directory.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(directory.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                visit(&name, &file.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[tokio::test]
    async fn a_stored_file_waiting_for_its_record_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(&dir.path().join("db"), 8 << 20).unwrap());
        let media = Media::new(storage, dir.path().join("media"), 1 << 20);
        let mut spool = media.spool().await.unwrap();
        spool.write(b"waiting for its record").await.unwrap();
        let content = spool.finish().await.unwrap();
        let path = file_in(&media.dir, &content.sha256);
        let candidates = HashSet::from([content.sha256.clone()]);
        assert_eq!(media.remove_unnamed_files(candidates.clone()).await.unwrap(), 0);
        assert!(path.exists(), "kept while its upload is being recorded");
        drop(content); // the upload was abandoned before its record
        assert_eq!(media.remove_unnamed_files(candidates).await.unwrap(), 1);
        assert!(!path.exists());
    }

    #[test]
    fn the_walk_reads_only_fan_out_directories() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "ab".to_owned() + &"0".repeat(62);
        let stored = file_in(dir.path(), &hash);
        std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
        std::fs::write(&stored, b"x").unwrap();
        // A mount's lost+found, or any stranger, is not read (it may not be readable).
        let stranger = dir.path().join("lost+found");
        std::fs::create_dir(&stranger).unwrap();
        std::fs::write(stranger.join(&hash), b"y").unwrap();
        let mut visited = Vec::new();
        for_each_content_file(dir.path(), |name, path| {
            visited.push((name.to_owned(), path.to_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(visited, vec![(hash, stored)]);
    }
}
