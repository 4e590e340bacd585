//! What the administration API does with local media: a user's uploads, and
//! deleting one (its record and its thumbnails' records). The files go at
//! the next start, with every file no record names any more (an upload
//! being written has its file before its record, so files are not removed
//! while the server runs).

use super::Media;
use crate::{error::Result, storage::Batch};

/// A local upload as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub media_id: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub created_ts: u64,
}

impl Media {
    /// The uploads of `user_id` (full user id), oldest first.
    pub fn uploads_of(&self, user_id: &str) -> Result<Vec<Upload>> {
        let mut uploads = Vec::new();
        self.storage.tables.media.for_each(|media_id, record| {
            if record.uploader == user_id {
                uploads.push(Upload {
                    media_id,
                    content_type: record.content_type,
                    filename: record.filename,
                    size: record.size,
                    created_ts: record.created_ts,
                });
            }
        })?;
        uploads.sort_by(|a, b| a.created_ts.cmp(&b.created_ts).then(a.media_id.cmp(&b.media_id)));
        Ok(uploads)
    }

    /// Deletes a local upload (downloads then answer 404); whether there was one.
    pub async fn delete_upload(&self, media_id: &str) -> Result<bool> {
        let tables = &self.storage.tables;
        if tables.media.get(&media_id.to_owned())?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.remove(&tables.media, &media_id.to_owned());
        for (key, _) in tables.thumbnails.scan_leading((media_id,))? {
            batch.remove(&tables.thumbnails, &key);
        }
        self.storage.commit(batch).await?;
        tracing::info!(media = media_id, "media deleted");
        Ok(true)
    }
}
