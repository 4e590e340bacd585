//! What the administration API does with media: a user's uploads; deleting
//! one; quarantining items (downloads answer 404; a remote item is not
//! fetched again); purging the cache of other servers' media. Deleted and
//! purged files are removed at once when nothing else names them
//! ([`super::files`]).

use std::collections::HashSet;

use super::{Media, RemoteMediaId};
use crate::{
    error::{Error, Result},
    storage::{records::MediaRecord, Batch},
    util::now_ms,
};

/// A media item as an `mxc://server/media_id` URI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaItem<'a> {
    Local(&'a str),
    Remote(RemoteMediaId<'a>),
}

impl<'a> MediaItem<'a> {
    /// The item `server`/`media_id` names, as seen from `local_server`.
    pub fn of(local_server: &ruma::ServerName, server: &'a ruma::ServerName, media_id: &'a str) -> Self {
        if server == local_server {
            Self::Local(media_id)
        } else {
            Self::Remote(RemoteMediaId { server, media_id })
        }
    }
}

/// A local upload as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub media_id: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub created_ts: u64,
    pub quarantined_by: Option<String>,
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
                    quarantined_by: record.quarantined_by,
                });
            }
        })?;
        uploads.sort_by(|a, b| a.created_ts.cmp(&b.created_ts).then(a.media_id.cmp(&b.media_id)));
        Ok(uploads)
    }

    /// Deletes a local upload (downloads then answer 404) and its file when
    /// nothing else names it; whether there was one.
    pub async fn delete_upload(&self, media_id: &str) -> Result<bool> {
        let tables = &self.storage.tables;
        let Some(record) = tables.media.get(&media_id.to_owned())? else {
            return Ok(false);
        };
        let mut files: HashSet<String> = record.sha256.into_iter().collect();
        let mut batch = Batch::new();
        batch.remove(&tables.media, &media_id.to_owned());
        for (key, thumbnail) in tables.thumbnails.scan_leading((media_id,))? {
            files.insert(thumbnail.sha256);
            batch.remove(&tables.thumbnails, &key);
        }
        self.storage.commit(batch).await?;
        let removed = self.remove_unnamed_files(files).await?;
        tracing::info!(media = media_id, files_removed = removed, "media deleted");
        Ok(true)
    }

    /// Quarantines an item (`by`: the admin) or releases it (`None`). A
    /// remote item not cached yet is remembered as quarantined all the
    /// same. Whether anything changed; an unknown local item is 404.
    pub async fn set_quarantine(&self, item: MediaItem<'_>, by: Option<&str>) -> Result<bool> {
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        match item {
            MediaItem::Local(media_id) => {
                let key = media_id.to_owned();
                let mut record = tables.media.get(&key)?.ok_or_else(|| Error::not_found("Unknown media"))?;
                if record.quarantined_by.as_deref() == by {
                    return Ok(false);
                }
                record.quarantined_by = by.map(str::to_owned);
                batch.insert(&tables.media, &key, &record)?;
            }
            MediaItem::Remote(id) => {
                let key = id.key();
                let record = match (tables.remote_media.get(&key)?, by) {
                    (Some(record), _) if record.quarantined_by.as_deref() == by => return Ok(false),
                    // Released and never fetched: the placeholder goes.
                    (Some(record), None) if record.sha256.is_none() => {
                        batch.remove(&tables.remote_media, &key);
                        self.storage.commit(batch).await?;
                        return Ok(true);
                    }
                    (Some(record), _) => MediaRecord { quarantined_by: by.map(str::to_owned), ..record },
                    (None, None) => return Ok(false),
                    (None, Some(by)) => MediaRecord {
                        sha256: None,
                        content_type: None,
                        filename: None,
                        size: 0,
                        uploader: String::new(),
                        created_ts: now_ms(),
                        quarantined_by: Some(by.to_owned()),
                    },
                };
                batch.insert(&tables.remote_media, &key, &record)?;
            }
        }
        self.storage.commit(batch).await?;
        Ok(true)
    }

    /// Quarantines every upload of `user_id`; how many were not already.
    pub async fn quarantine_uploads_of(&self, user_id: &str, by: &str) -> Result<usize> {
        let mut quarantined = 0;
        for upload in self.uploads_of(user_id)? {
            if self.set_quarantine(MediaItem::Local(&upload.media_id), Some(by)).await? {
                quarantined += 1;
            }
        }
        Ok(quarantined)
    }

    /// Removes the cached copies of other servers' media fetched before
    /// `before_ts` (quarantined ones stay, so they are not fetched again),
    /// and their thumbnails; how many items went.
    pub async fn purge_remote_cache(&self, before_ts: u64) -> Result<usize> {
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        let mut files = HashSet::new();
        let mut purged = 0;
        for ((server, media_id), record) in tables.remote_media.all()? {
            if record.created_ts >= before_ts || record.quarantined_by.is_some() {
                continue;
            }
            files.extend(record.sha256.clone());
            let owner = super::remote_thumbnails_owner(&server, &media_id);
            for (key, thumbnail) in tables.thumbnails.scan_leading((owner.as_str(),))? {
                files.insert(thumbnail.sha256);
                batch.remove(&tables.thumbnails, &key);
            }
            batch.remove(&tables.remote_media, &(server, media_id));
            purged += 1;
        }
        self.storage.commit(batch).await?;
        let removed = self.remove_unnamed_files(files).await?;
        tracing::info!(purged, files_removed = removed, "remote media cache purged");
        Ok(purged)
    }
}
