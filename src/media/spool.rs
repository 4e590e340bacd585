//! Writing a file as it arrives, so that a large upload never sits whole in
//! memory.
//!
//! Chunks go to a temporary file in the media directory while their SHA-256
//! is computed and their size checked against the limit (`M_TOO_LARGE` as
//! soon as it is passed). [`Spool::finish`] fsyncs the file and renames it to
//! its content address (or drops it when identical content is already
//! stored), then fsyncs the directory: a stored file is whole or absent. A
//! spool dropped unfinished (refused, broken connection) removes its
//! temporary file; leftovers of a crash are removed at start-up.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::{
    file_in,
    files::{FileRegistry, PendingFile},
};
use crate::util::sync_dir;
use crate::{
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
};

/// Names of temporary files start with this (never a content address).
pub(super) const SPOOL_PREFIX: &str = ".spool-";

/// What was stored: the content's address and size. Its file is kept
/// while this (or a clone) lives, until the record naming it is written
/// ([`super::files`]).
#[derive(Debug, Clone)]
pub struct StoredContent {
    pub sha256: String,
    pub size: u64,
    _pending: std::sync::Arc<PendingFile>,
}

pub struct Spool {
    dir: PathBuf,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: ring::digest::Context,
    size: u64,
    max_size: u64,
    registry: std::sync::Arc<FileRegistry>,
}

fn io_error(error: std::io::Error) -> Error {
    Error::internal("writing media", error)
}

impl Spool {
    pub(super) async fn create(dir: &Path, max_size: u64, registry: &std::sync::Arc<FileRegistry>) -> Result<Self> {
        tokio::fs::create_dir_all(dir).await.map_err(io_error)?;
        let path = dir.join(format!("{SPOOL_PREFIX}{}", random_alphanumeric(16)));
        let file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            file: Some(file),
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            max_size,
            registry: std::sync::Arc::clone(registry),
        })
    }

    /// Appends a chunk; refuses with `M_TOO_LARGE` past the limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.max_size {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("The file is larger than the {} bytes this server accepts", self.max_size),
            ));
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().ok_or_else(|| Error::internal("writing media", "spool already finished"))?;
        file.write_all(chunk).await.map_err(io_error)
    }

    /// Makes the content durable under its address.
    pub async fn finish(mut self) -> Result<StoredContent> {
        let mut file = self.file.take().ok_or_else(|| Error::internal("writing media", "spool already finished"))?;
        file.flush().await.map_err(io_error)?;
        file.sync_all().await.map_err(io_error)?;
        drop(file);
        let hasher = std::mem::replace(&mut self.hasher, ring::digest::Context::new(&ring::digest::SHA256));
        let sha256: String = hasher.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let target = file_in(&self.dir, &sha256);
        let (temporary, dir, registry) = (self.path.clone(), self.dir.clone(), std::sync::Arc::clone(&self.registry));
        let address = sha256.clone();
        let moved = tokio::task::spawn_blocking(move || {
            registry.store(&address, || -> std::io::Result<()> {
                if target.exists() {
                    return std::fs::remove_file(&temporary); // identical content already stored
                }
                let parent = target.parent().unwrap_or(&dir);
                std::fs::create_dir_all(parent)?;
                std::fs::rename(&temporary, &target)?;
                sync_dir(parent);
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::internal("media write task", e))?;
        let ((), pending) = moved.map_err(io_error)?;
        self.path = PathBuf::new(); // nothing left to clean up
        Ok(StoredContent { sha256, size: self.size, _pending: std::sync::Arc::new(pending) })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes temporary files left by a crash (start-up, before any upload).
pub(super) fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(SPOOL_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn content_is_stored_under_its_hash_once_and_unfinished_spools_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let registry = std::sync::Arc::default();
        let mut spool = Spool::create(dir.path(), 1024, &registry).await.unwrap();
        spool.write(b"bonjour ").await.unwrap();
        spool.write(b"le monde").await.unwrap();
        let stored = spool.finish().await.unwrap();
        assert_eq!(stored.size, 16);
        let expected: String = ring::digest::digest(&ring::digest::SHA256, b"bonjour le monde")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(stored.sha256, expected);
        assert_eq!(std::fs::read(file_in(dir.path(), &expected)).unwrap(), b"bonjour le monde");

        // The same content again: one file.
        let mut again = Spool::create(dir.path(), 1024, &registry).await.unwrap();
        again.write(b"bonjour le monde").await.unwrap();
        let again = again.finish().await.unwrap();
        assert_eq!((again.sha256, again.size), (stored.sha256.clone(), stored.size));

        // Too large: refused, and the temporary file is gone once dropped.
        let mut big = Spool::create(dir.path(), 4, &registry).await.unwrap();
        let refused = big.write(b"12345").await.unwrap_err();
        assert_eq!(refused.status(), 413);
        drop(big);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(SPOOL_PREFIX))
            .collect();
        assert!(leftovers.is_empty());

        // A crash's leftover is removed at start-up.
        std::fs::write(dir.path().join(format!("{SPOOL_PREFIX}crashed")), b"partial").unwrap();
        remove_leftovers(dir.path());
        assert!(!dir.path().join(format!("{SPOOL_PREFIX}crashed")).exists());
        assert!(file_in(dir.path(), &expected).exists());
    }
}
