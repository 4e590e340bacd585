//! The content repository: uploaded files and their metadata.
//!
//! Spec: client-server API "Content repository" (`modules/content_repo.md`,
//! `authenticated_content_repo.yaml`, `content-repo.yaml`). Files are
//! content-addressed (named by their SHA-256 under `media.path`, two-level
//! fan-out), written as they arrive to a temporary file ([`spool`]: never
//! whole in memory), fsynced and renamed into place, so a file is either
//! whole or absent; identical uploads share one file. Downloads are opened
//! files the HTTP layer reads as it sends. The
//! metadata (type, name, size, uploader) is a storage record per media id,
//! written durably after the file. Thumbnails ([`thumbnail`]) are made on
//! first request and cached the same way. Media of other servers, once
//! fetched (by [`crate::federation::media`]), are cached here the same way
//! ([`Media::cached_remote`], [`Media::record_remote`]); so are their
//! thumbnails. Owns the `media`, `remote_media` and `thumbnails` tables.

pub mod admin;
pub mod files;
pub mod multipart;
pub mod preview;
pub mod spool;
pub mod thumbnail;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

pub use spool::{Spool, StoredContent};

use crate::{
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    storage::{
        records::{CachedThumbnail, MediaRecord},
        Batch, Storage,
    },
    util::now_ms,
};

/// How long a created-but-empty media id waits for its content.
pub const UNUSED_EXPIRY_MS: u64 = 24 * 60 * 60 * 1000;

/// Originals larger than this are not thumbnailed (they are read whole to decode).
const MAX_THUMBNAIL_SOURCE: u64 = 64 * 1024 * 1024;

pub struct Media {
    storage: Arc<Storage>,
    dir: PathBuf,
    max_size: u64,
    /// Files stored and not yet named by a record ([`files`]).
    files: Arc<files::FileRegistry>,
}

/// A stored file ready to be served: open, read as it is sent.
pub struct Download {
    pub file: tokio::fs::File,
    pub len: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

/// What a quarantined item's downloads answer (as Synapse: it is not found).
fn quarantined() -> Error {
    Error::not_found("This media is not available")
}

/// Media ids: letters and digits only (safe in URLs and file names).
fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Media {
    /// Opens the repository, before the server takes requests: unfinished
    /// uploads of a previous run and files no record names (an upload cut
    /// off between its file and its record) are removed.
    pub fn new(storage: Arc<Storage>, dir: PathBuf, max_size: u64) -> Self {
        spool::remove_leftovers(&dir);
        let media = Self { storage, dir, max_size, files: Default::default() };
        match media.remove_unreferenced_files() {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed media files no upload record names"),
            Err(error) => tracing::warn!(%error, "could not look for unreferenced media files"),
        }
        media
    }

    pub fn max_upload_size(&self) -> u64 {
        self.max_size
    }

    /// A new upload, written as it arrives.
    pub async fn spool(&self) -> Result<Spool> {
        Spool::create(&self.dir, self.max_size, &self.files).await
    }

    /// Opens a stored file.
    async fn open_file(&self, sha256: &str) -> Result<(tokio::fs::File, u64)> {
        let io = |e: std::io::Error| Error::internal("reading media", e);
        let file = tokio::fs::File::open(file_in(&self.dir, sha256)).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        Ok((file, len))
    }

    async fn put_record(&self, media_id: &str, record: &MediaRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.media, &media_id.to_owned(), record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// `POST /upload`: records stored content under a new media id.
    pub async fn upload(
        &self,
        uploader: &str,
        content: StoredContent,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        let media_id = random_alphanumeric(24);
        let record = MediaRecord {
            sha256: Some(content.sha256),
            content_type,
            filename,
            size: content.size,
            uploader: uploader.to_owned(),
            created_ts: now_ms(),
            quarantined_by: None,
        };
        self.put_record(&media_id, &record).await?;
        Ok(media_id)
    }

    /// `POST /create`: reserves a media id for a later upload by `uploader`.
    pub async fn create(&self, uploader: &str) -> Result<(String, u64)> {
        let media_id = random_alphanumeric(24);
        let now = now_ms();
        let record = MediaRecord {
            sha256: None,
            content_type: None,
            filename: None,
            size: 0,
            uploader: uploader.to_owned(),
            created_ts: now,
            quarantined_by: None,
        };
        self.put_record(&media_id, &record).await?;
        Ok((media_id, now + UNUSED_EXPIRY_MS))
    }

    /// Whether `uploader` may still give content to the created `media_id`
    /// (checked before the upload is read, and again when it is recorded).
    pub fn check_upload_to(&self, uploader: &str, media_id: &str) -> Result<MediaRecord> {
        let not_found = || Error::not_found("Unknown media id");
        if !valid_media_id(media_id) {
            return Err(not_found());
        }
        let record = self.storage.tables.media.get(&media_id.to_owned())?.ok_or_else(not_found)?;
        if record.uploader != uploader {
            return Err(Error::forbidden("This media id was created by someone else"));
        }
        if record.sha256.is_some() {
            return Err(Error::new(ErrorKind::CannotOverwriteMedia, "This media already has content"));
        }
        if now_ms() > record.created_ts + UNUSED_EXPIRY_MS {
            return Err(not_found());
        }
        Ok(record)
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a created id, once.
    pub async fn upload_to(
        &self,
        uploader: &str,
        media_id: &str,
        content: StoredContent,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let mut record = self.check_upload_to(uploader, media_id)?;
        record.size = content.size;
        record.sha256 = Some(content.sha256);
        record.content_type = content_type;
        record.filename = filename;
        self.put_record(media_id, &record).await
    }

    /// The record of an uploaded local media id, and its content address.
    fn uploaded(&self, media_id: &str) -> Result<(MediaRecord, String)> {
        let not_found = || Error::not_found("Unknown media");
        if !valid_media_id(media_id) {
            return Err(not_found());
        }
        let record = self.storage.tables.media.get(&media_id.to_owned())?.ok_or_else(not_found)?;
        if record.quarantined_by.is_some() {
            return Err(quarantined());
        }
        let sha256 = record
            .sha256
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::NotYetUploaded, "The media has not been uploaded yet"))?;
        Ok((record, sha256))
    }

    /// The content of a local media id.
    pub async fn download(&self, media_id: &str) -> Result<Download> {
        let (record, sha256) = self.uploaded(media_id)?;
        self.open_original(record, &sha256).await
    }

    /// The uploaded file of `record` (stored under `sha256`), opened.
    async fn open_original(&self, record: MediaRecord, sha256: &str) -> Result<Download> {
        let (file, len) = self.open_file(sha256).await?;
        Ok(Download {
            file,
            len,
            content_type: record.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
            filename: record.filename,
        })
    }
}

/// Another server's media item, as an `mxc://server/media_id` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMediaId<'a> {
    pub server: &'a ruma::ServerName,
    pub media_id: &'a str,
}

impl RemoteMediaId<'_> {
    pub(super) fn key(&self) -> (String, String) {
        (self.server.to_string(), self.media_id.to_owned())
    }

    /// The thumbnails table's key of one of its thumbnails.
    fn thumbnail_key(&self, label: String) -> (String, String) {
        (remote_thumbnails_owner(self.server.as_str(), self.media_id), label)
    }

    /// Whether the media id could be one (checked before asking its server).
    pub fn is_valid(&self) -> bool {
        valid_media_id(self.media_id)
    }
}

/// The first part of the thumbnails table's keys for another server's item.
fn remote_thumbnails_owner(server: &str, media_id: &str) -> String {
    format!("{server}/{media_id}")
}

/// What a remote server gave for a media item, stored in a spool.
#[derive(Debug)]
pub struct FetchedMedia {
    pub content: StoredContent,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl Media {
    /// A cached copy of another server's media item.
    pub async fn cached_remote(&self, id: RemoteMediaId<'_>) -> Result<Option<Download>> {
        let Some(record) = self.storage.tables.remote_media.get(&id.key())? else { return Ok(None) };
        if record.quarantined_by.is_some() {
            return Err(quarantined());
        }
        let Some(sha256) = record.sha256.clone() else { return Ok(None) };
        // A file lost from the disk is fetched again.
        Ok(self.open_original(record, &sha256).await.ok())
    }

    /// Caches another server's media item; the cached copy.
    pub async fn record_remote(&self, id: RemoteMediaId<'_>, fetched: FetchedMedia) -> Result<Download> {
        let sha256 = fetched.content.sha256.clone();
        let record = MediaRecord {
            sha256: Some(fetched.content.sha256),
            content_type: fetched.content_type,
            filename: fetched.filename,
            size: fetched.content.size,
            uploader: String::new(),
            created_ts: now_ms(),
            quarantined_by: None,
        };
        if self.storage.tables.remote_media.get(&id.key())?.is_some_and(|old| old.quarantined_by.is_some()) {
            return Err(quarantined()); // quarantined while it was being fetched
        }
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.remote_media, &id.key(), &record)?;
        self.storage.commit(batch).await?;
        self.open_original(record, &sha256).await
    }

    /// A cached thumbnail of another server's media item.
    pub async fn cached_remote_thumbnail(&self, id: RemoteMediaId<'_>, label: &str) -> Result<Option<Download>> {
        if self.storage.tables.remote_media.get(&id.key())?.is_some_and(|record| record.quarantined_by.is_some()) {
            return Err(quarantined());
        }
        let Some(cached) = self.storage.tables.thumbnails.get(&id.thumbnail_key(label.to_owned()))? else {
            return Ok(None);
        };
        let Ok((file, len)) = self.open_file(&cached.sha256).await else { return Ok(None) };
        Ok(Some(Download { file, len, content_type: cached.content_type, filename: None }))
    }

    /// Caches a thumbnail another server made; the cached copy.
    pub async fn record_remote_thumbnail(
        &self,
        id: RemoteMediaId<'_>,
        label: &str,
        fetched: FetchedMedia,
    ) -> Result<Download> {
        let content_type = fetched.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
        let cached = CachedThumbnail { sha256: fetched.content.sha256.clone(), content_type: content_type.clone() };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.thumbnails, &id.thumbnail_key(label.to_owned()), &cached)?;
        self.storage.commit(batch).await?;
        let (file, len) = self.open_file(&fetched.content.sha256).await?;
        Ok(Download { file, len, content_type, filename: None })
    }
}

impl Media {
    /// A thumbnail of a local image, made once and then served from its file.
    /// With `scale` and an image that already fits, the original is served.
    pub async fn thumbnail(
        &self,
        media_id: &str,
        width: u32,
        height: u32,
        method: thumbnail::Method,
        animated: bool,
    ) -> Result<Download> {
        let (record, sha256) = self.uploaded(media_id)?;
        let content_type = record.content_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned());
        let animated_source = matches!(content_type.as_str(), "image/gif" | "image/webp");
        if animated && animated_source {
            return self.open_original(record, &sha256).await; // the original keeps its animation
        }
        // Sizes past the bound make the same thumbnail: one cache entry for them.
        let (width, height) = thumbnail::bounded_size(width, height);
        let label = format!("{width}x{height}-{method:?}");
        let key = (media_id.to_owned(), label);
        if let Some(cached) = self.storage.tables.thumbnails.get(&key)? {
            if let Ok((file, len)) = self.open_file(&cached.sha256).await {
                return Ok(Download { file, len, content_type: cached.content_type, filename: None });
            }
        }
        if record.size > MAX_THUMBNAIL_SOURCE {
            return Err(Error::new(ErrorKind::BadRequest, "The image is too large to be thumbnailed"));
        }
        let original =
            tokio::fs::read(file_in(&self.dir, &sha256)).await.map_err(|e| Error::internal("reading media", e))?;
        let source_type = content_type.clone();
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&original, &source_type, width, height, method))
            .await
            .map_err(|e| Error::internal("thumbnail task", e))?;
        let made = made.map_err(|error| match error {
            thumbnail::ThumbnailError::Unsupported => {
                Error::new(ErrorKind::BadRequest, "Thumbnails are made of JPEG, PNG, GIF and WebP images only")
            }
            thumbnail::ThumbnailError::Refused(reason) => {
                Error::new(ErrorKind::BadRequest, format!("The image cannot be thumbnailed: {reason}"))
            }
        })?;
        let Some(made) = made else { return self.open_original(record, &sha256).await };
        let mut spool = Spool::create(&self.dir, u64::MAX, &self.files).await?;
        spool.write(&made.content).await?;
        let stored = spool.finish().await?;
        let mut batch = Batch::new();
        let cached = CachedThumbnail { sha256: stored.sha256.clone(), content_type: made.content_type.to_owned() };
        batch.insert(&self.storage.tables.thumbnails, &key, &cached)?;
        self.storage.commit(batch).await?;
        let (file, len) = self.open_file(&stored.sha256).await?;
        Ok(Download { file, len, content_type: made.content_type.to_owned(), filename: None })
    }
}

/// What a `Range` header asks of a file (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range` (absent, another unit, malformed): the whole file, 200.
    Whole,
    /// One range, as inclusive (first, last) offsets: 206.
    Part(u64, u64),
    /// Past the end, empty, or several ranges (not served here): 416.
    Unsatisfiable,
}

/// The range a `Range` header asks of a file of `len` bytes (`bytes=a-b`,
/// `bytes=a-`, `bytes=-n`; a last offset past the end is cut to it).
pub fn byte_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=").map(str::trim) else { return RangeRequest::Whole };
    if spec.contains(',') {
        return RangeRequest::Unsatisfiable;
    }
    let Some((first, last)) = spec.split_once('-').map(|(f, l)| (f.trim(), l.trim())) else {
        return RangeRequest::Whole;
    };
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else { return RangeRequest::Whole };
        return match (suffix, len) {
            (0, _) | (_, 0) => RangeRequest::Unsatisfiable,
            _ => RangeRequest::Part(len.saturating_sub(suffix), len - 1),
        };
    }
    let Ok(start) = first.parse::<u64>() else { return RangeRequest::Whole };
    let end = match last {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            // `bytes=20-10` is not a valid range: ignored.
            _ => return RangeRequest::Whole,
        },
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(start, end.map_or(len - 1, |end| end.min(len - 1)))
}

/// The file of a content hash (two-level fan-out; a malformed stored hash
/// names a file that does not exist rather than panicking).
pub fn file_in(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(sha256.get(..2).unwrap_or("--")).join(sha256)
}

/// Content types a browser may show inline without risk (no script can run).
const INLINE_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/apng",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "audio/mpeg",
    "audio/mp4",
    "audio/ogg",
    "audio/webm",
    "audio/wav",
    "audio/aac",
    "audio/flac",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
];

/// `Content-Disposition` for a download: `inline` only for safe types,
/// `attachment` otherwise (HTML, SVG, …), with the file name escaped.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    match filename {
        Some(name) if !name.is_empty() => {
            let ascii: String = name
                .chars()
                .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
                .collect();
            let encoded: String = name
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{kind}; filename=\"{ascii}\"; filename*=utf-8''{encoded}")
        }
        _ => kind.to_owned(),
    }
}

/// The `Content-Security-Policy` of every download: nothing runs.
pub const CONTENT_SECURITY_POLICY: &str =
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_byte_ranges_are_understood_others_ignored_or_refused() {
        use RangeRequest::*;
        assert_eq!(byte_range("bytes=10-19", 1000), Part(10, 19));
        assert_eq!(byte_range("bytes=990-", 1000), Part(990, 999));
        assert_eq!(byte_range("bytes=-5", 1000), Part(995, 999));
        assert_eq!(byte_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(byte_range("bytes=500-5000", 1000), Part(500, 999));
        for ignored in ["bytes=20-10", "items=0-1", "bytes=x-", "bytes=-", "bytes=5"] {
            assert_eq!(byte_range(ignored, 1000), Whole, "{ignored}");
        }
        for refused in ["bytes=1000-", "bytes=5000-6000", "bytes=0-1,5-6", "bytes=-0"] {
            assert_eq!(byte_range(refused, 1000), Unsatisfiable, "{refused}");
        }
        assert_eq!(byte_range("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn only_safe_types_are_inline_and_names_are_escaped() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(content_disposition("text/html; charset=utf-8", None), "attachment");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            content_disposition("image/jpeg", Some("Photo d'été \"x\".jpg")),
            "inline; filename=\"Photo d'_t_ _x_.jpg\"; filename*=utf-8''Photo%20d%27%C3%A9t%C3%A9%20%22x%22.jpg"
        );
    }
}
