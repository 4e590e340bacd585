//! `GET /_conduit/admin/v1/backup`: a consistent copy of the whole database
//! while the server runs ([`crate::storage::snapshot`]), for `conduit backup`.
//! Not in Synapse's API (its backups are the database engine's).
//!
//! The copy is written first to an unnamed file beside the database (removed
//! from the directory at once, so nothing is left behind whatever happens),
//! then sent: the writers' pause does not depend on how fast the operator's
//! side reads.

use std::{
    io::{BufWriter, Seek},
    sync::Arc,
};

use crate::{
    crypto::tokens::random_alphanumeric,
    error::{Error, Result},
    http::{response::FileBody, Response},
    services::Services,
};

pub async fn database(s: &Services) -> Result<Response> {
    let storage = Arc::clone(&s.storage);
    let (file, len) = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64)> {
        let failed = |error: std::io::Error| Error::internal("backup", error);
        let path = storage.path().join(format!("backup-{}.tmp", random_alphanumeric(12)));
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(failed)?;
        std::fs::remove_file(&path).map_err(failed)?;
        let summary = storage.write_snapshot(BufWriter::with_capacity(1 << 20, &mut file))?;
        file.rewind().map_err(failed)?;
        tracing::info!(frames = summary.frames, bytes = summary.bytes, "database copied for a backup");
        Ok((file, summary.bytes))
    })
    .await
    .map_err(|error| Error::internal("backup", error))??;
    Ok(Response::file(FileBody::new(tokio::fs::File::from_std(file), len), "application/octet-stream".to_owned()))
}
