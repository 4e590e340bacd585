//! The content repository: uploaded files and their metadata.
//!
//! Spec: client-server API "Content repository" (`modules/content_repo.md`,
//! `authenticated_content_repo.yaml`, `content-repo.yaml`). Files are
//! content-addressed (named by their SHA-256 under `media.path`, two-level
//! fan-out), written to a temporary file, fsynced and renamed into place, so
//! a file is either whole or absent; identical uploads share one file. The
//! metadata (type, name, size, uploader) is a storage record per media id,
//! written durably after the file. Thumbnails ([`thumbnail`]) are made on
//! first request and cached the same way.

pub mod thumbnail;

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;

use crate::{
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    storage::{records::MediaRecord, Batch, Storage},
    util::now_ms,
};

/// How long a created-but-empty media id waits for its content.
pub const UNUSED_EXPIRY_MS: u64 = 24 * 60 * 60 * 1000;

pub struct Media {
    storage: Arc<Storage>,
    dir: PathBuf,
    max_size: u64,
}

/// A stored file ready to be served.
pub struct Download {
    pub content: Vec<u8>,
    pub content_type: String,
    pub filename: Option<String>,
}

/// Media ids: letters and digits only (safe in URLs and file names).
fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Media {
    pub fn new(storage: Arc<Storage>, dir: PathBuf, max_size: u64) -> Self {
        Self { storage, dir, max_size }
    }

    pub fn max_upload_size(&self) -> u64 {
        self.max_size
    }

    fn file_of(&self, sha256: &str) -> PathBuf {
        file_in(&self.dir, sha256)
    }

    /// Writes the content under its hash, atomically and durably, off the
    /// async workers (hashing and fsync take a while for big files).
    async fn write_file(&self, content: Bytes) -> Result<String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_file_in(&dir, &content))
            .await
            .map_err(|e| Error::internal("media write task", e))?
    }

    /// The content of a stored file.
    async fn read_file(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(self.file_of(sha256)).await
    }

    fn check_size(&self, content: &[u8]) -> Result<()> {
        if content.len() as u64 > self.max_size {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("The file is larger than the {} bytes this server accepts", self.max_size),
            ));
        }
        Ok(())
    }

    async fn put_record(&self, media_id: &str, record: &MediaRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.media, &media_id.to_owned(), record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// `POST /upload`: stores the content; returns the new media id.
    pub async fn upload(
        &self,
        uploader: &str,
        content: Bytes,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        self.check_size(&content)?;
        let size = content.len() as u64;
        let sha256 = self.write_file(content).await?;
        let media_id = random_alphanumeric(24);
        let record = MediaRecord {
            sha256: Some(sha256),
            content_type,
            filename,
            size,
            uploader: uploader.to_owned(),
            created_ts: now_ms(),
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
        };
        self.put_record(&media_id, &record).await?;
        Ok((media_id, now + UNUSED_EXPIRY_MS))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a created id, once.
    pub async fn upload_to(
        &self,
        uploader: &str,
        media_id: &str,
        content: Bytes,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let not_found = || Error::not_found("Unknown media id");
        if !valid_media_id(media_id) {
            return Err(not_found());
        }
        let mut record = self.storage.tables.media.get(&media_id.to_owned())?.ok_or_else(not_found)?;
        if record.uploader != uploader {
            return Err(Error::forbidden("This media id was created by someone else"));
        }
        if record.sha256.is_some() {
            return Err(Error::new(ErrorKind::CannotOverwriteMedia, "This media already has content"));
        }
        if now_ms() > record.created_ts + UNUSED_EXPIRY_MS {
            return Err(not_found());
        }
        self.check_size(&content)?;
        record.size = content.len() as u64;
        record.sha256 = Some(self.write_file(content).await?);
        record.content_type = content_type;
        record.filename = filename;
        self.put_record(media_id, &record).await
    }

    /// The content of a local media id.
    pub async fn download(&self, media_id: &str) -> Result<Download> {
        let not_found = || Error::not_found("Unknown media");
        if !valid_media_id(media_id) {
            return Err(not_found());
        }
        let record = self.storage.tables.media.get(&media_id.to_owned())?.ok_or_else(not_found)?;
        let sha256 = record
            .sha256
            .ok_or_else(|| Error::new(ErrorKind::NotYetUploaded, "The media has not been uploaded yet"))?;
        let content = self.read_file(&sha256).await.map_err(|e| Error::internal("reading media", e))?;
        Ok(Download {
            content,
            content_type: record.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
            filename: record.filename,
        })
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
        let original = self.download(media_id).await?;
        let animated_source = matches!(original.content_type.as_str(), "image/gif" | "image/webp");
        if animated && animated_source {
            return Ok(original); // the original keeps its animation
        }
        let label = format!("{width}x{height}-{method:?}");
        let key = (media_id.to_owned(), label);
        if let Some(cached) = self.storage.tables.thumbnails.get(&key)? {
            if let Some((sha256, content_type)) = cached.split_once('\n') {
                if let Ok(content) = self.read_file(sha256).await {
                    return Ok(Download { content, content_type: content_type.to_owned(), filename: None });
                }
            }
        }
        let content_type = original.content_type.clone();
        let made = tokio::task::spawn_blocking(move || {
            thumbnail::make(&original.content, &content_type, width, height, method).map(|t| (t, original))
        })
        .await
        .map_err(|e| Error::internal("thumbnail task", e))?;
        let (made, original) = made.map_err(|error| match error {
            thumbnail::ThumbnailError::Unsupported => {
                Error::new(ErrorKind::BadRequest, "Thumbnails are made of JPEG, PNG, GIF and WebP images only")
            }
            thumbnail::ThumbnailError::Refused(reason) => {
                Error::new(ErrorKind::BadRequest, format!("The image cannot be thumbnailed: {reason}"))
            }
        })?;
        let Some(made) = made else { return Ok(original) };
        let content = Bytes::from(made.content);
        let sha256 = self.write_file(content.clone()).await?;
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.thumbnails, &key, &format!("{sha256}\n{}", made.content_type))?;
        self.storage.commit(batch).await?;
        Ok(Download { content: content.to_vec(), content_type: made.content_type.to_owned(), filename: None })
    }
}

/// The file of a content hash (two-level fan-out; a malformed stored hash
/// names a file that does not exist rather than panicking).
fn file_in(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(sha256.get(..2).unwrap_or("--")).join(sha256)
}

fn write_file_in(dir: &Path, content: &[u8]) -> Result<String> {
    let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, content).as_ref());
    let target = file_in(dir, &sha256);
    if target.exists() {
        return Ok(sha256);
    }
    let io = |e: std::io::Error| Error::internal("writing media", e);
    let parent = target.parent().ok_or_else(|| Error::internal("media path", "no parent"))?;
    std::fs::create_dir_all(parent).map_err(io)?;
    let temporary = parent.join(format!(".{sha256}.{}", random_alphanumeric(8)));
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(content).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &target).map_err(io)?;
    sync_dir(parent);
    Ok(sha256)
}

/// Makes a rename durable (best effort: not every platform can fsync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
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
