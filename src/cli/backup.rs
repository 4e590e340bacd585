//! `conduit backup DIR` and `conduit restore DIR`.
//!
//! A backup directory holds
//! - `database.cbk`: a consistent copy of the database, taken while the
//!   server runs ([`crate::storage::snapshot`]; through the operators' socket,
//!   or in this process when the server is stopped), replaced whole by each
//!   backup (written beside it, checked, then renamed);
//! - `media/`: the uploaded files, content-addressed and never changed, so a
//!   backup into the same directory copies only the files it lacks;
//! - `manifest.json`: the server name, the version, when, and what was copied.
//!
//! The database is copied before the media: every file its records name was
//! on disk before the record (uploads write the file first), and files are
//! removed only at start-up, so the copied files cover the copied records.
//!
//! `restore` fills an absent or empty database directory and never
//! overwrites one (a running server's is never empty); the media files are
//! copied into the media directory where missing.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::operator::{print, Operator, Output};
use crate::{config::Config, http::operator_socket::OperatorClient, media, storage, util::sync_dir};

const DATABASE_FILE: &str = "database.cbk";
const MANIFEST_FILE: &str = "manifest.json";
const MEDIA_DIR: &str = "media";
const FORMAT: u64 = 1;

fn io_error<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> String + 'a {
    let what = what.to_owned();
    move |error| format!("{what} {}: {error}", path.display())
}

/// `conduit backup DIR`.
pub async fn backup(config: &Config, dir: &Path, output: Output) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
    let operator = Operator::connect(config).await?;
    let copied = copy_database(operator.client(), dir).await;
    let server_running = operator.server_running;
    operator.finish().await;
    let database = copied?;
    let media = copy_media(&config.media_path(), &dir.join(MEDIA_DIR))?;
    let manifest = json!({
        "format": FORMAT,
        "server_name": config.server_name.as_str(),
        "conduit_version": env!("CARGO_PKG_VERSION"),
        "created_ts": crate::util::now_ms(),
        "server_was_running": server_running,
        "database": { "file": DATABASE_FILE, "bytes": database.bytes, "entries": database.frames },
        "media": { "files": media.files, "copied": media.copied, "bytes_copied": media.bytes_copied },
    });
    write_atomically(&dir.join(MANIFEST_FILE), manifest.to_string().as_bytes())?;
    print(output, &manifest, || {
        format!(
            "backed up {} to {}: database {} bytes ({} entries){}; media: {} files, {} new ({} bytes)",
            config.server_name,
            dir.display(),
            database.bytes,
            database.frames,
            if server_running { ", copied while the server ran" } else { "" },
            media.files,
            media.copied,
            media.bytes_copied,
        )
    });
    Ok(())
}

/// Downloads the copy beside its final name, checks it whole, then renames it.
async fn copy_database(client: &OperatorClient, dir: &Path) -> Result<storage::SnapshotSummary, String> {
    let partial = dir.join(format!("{DATABASE_FILE}.partial"));
    let mut file = tokio::fs::File::create(&partial).await.map_err(io_error("cannot write", &partial))?;
    let reply = client.download("/_conduit/admin/v1/backup", &mut file).await.map_err(|error| error.to_string())?;
    if reply.status != 200 {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "the server refused the backup ({}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    file.sync_all().await.map_err(io_error("cannot write", &partial))?;
    drop(file);
    let checked = std::fs::File::open(&partial).map_err(io_error("cannot read", &partial)).and_then(|file| {
        storage::snapshot::verify_snapshot(file).map_err(|error| format!("the copy received is unusable: {error}"))
    });
    let summary = match checked {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    let target = dir.join(DATABASE_FILE);
    std::fs::rename(&partial, &target).map_err(io_error("cannot write", &target))?;
    sync_dir(dir);
    Ok(summary)
}

#[derive(Debug, Default)]
struct MediaCopy {
    files: u64,
    copied: u64,
    bytes_copied: u64,
}

/// Copies every content file of `from` missing in `to` (same fan-out).
fn copy_media(from: &Path, to: &Path) -> Result<MediaCopy, String> {
    let mut result = MediaCopy::default();
    // The fan-out directories files were renamed into: each synced once at the end.
    let mut touched = std::collections::BTreeSet::new();
    let walked = media::files::for_each_content_file(from, |sha256, source| {
        result.files += 1;
        let target = media::file_in(to, sha256);
        if target.exists() {
            return Ok(());
        }
        let bytes = copy_durably(source, &target)?;
        touched.extend(target.parent().map(Path::to_path_buf));
        result.copied += 1;
        result.bytes_copied += bytes;
        Ok(())
    });
    walked.map_err(|error| format!("copying the media files from {} to {}: {error}", from.display(), to.display()))?;
    for directory in &touched {
        sync_dir(directory);
    }
    sync_dir(to);
    Ok(result)
}

/// Copies `source` beside `target`, fsyncs it, then renames it into place
/// (durable once the caller syncs the target's directory).
fn copy_durably(source: &Path, target: &Path) -> std::io::Result<u64> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let bytes = std::fs::copy(source, &partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, target)?;
    Ok(bytes)
}

/// `conduit restore DIR`.
pub async fn restore(config: &Config, dir: &Path, output: Output) -> Result<(), String> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest: Value = std::fs::read(&manifest_path)
        .map_err(io_error("not a backup directory: cannot read", &manifest_path))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|error| format!("{}: {error}", manifest_path.display()))
        })?;
    if manifest["format"] != FORMAT {
        return Err(format!("{} is of an unknown backup format {}", manifest_path.display(), manifest["format"]));
    }
    if manifest["server_name"] != config.server_name.as_str() {
        return Err(format!(
            "this backup is of {}, and this configuration's server is {}: a server's name cannot change",
            manifest["server_name"], config.server_name
        ));
    }
    if OperatorClient::new(config.admin_socket_path()).send("GET", "/_conduit/health", None).await.is_ok() {
        return Err("the server is running: stop it, and restore into an empty database directory".to_owned());
    }
    let database = dir.join(DATABASE_FILE);
    let input = std::fs::File::open(&database).map_err(io_error("cannot read", &database))?;
    let target = config.database_path.clone();
    let cache = config.cache_capacity_bytes();
    let summary = tokio::task::spawn_blocking(move || storage::restore_snapshot(input, &target, cache))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let media = copy_media(&dir.join(MEDIA_DIR), &config.media_path())?;
    let report = json!({
        "database_path": config.database_path,
        "database": { "bytes": summary.bytes, "entries": summary.frames },
        "media": { "files": media.files, "copied": media.copied, "bytes_copied": media.bytes_copied },
        "backup_created_ts": manifest["created_ts"],
    });
    print(output, &report, || {
        format!(
            "restored {} into {}: {} entries; media: {} files copied",
            dir.display(),
            config.database_path.display(),
            summary.frames,
            media.copied
        )
    });
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let mut file = std::fs::File::create(&partial).map_err(io_error("cannot write", &partial))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error("cannot write", &partial))?;
    std::fs::rename(&partial, path).map_err(io_error("cannot write", path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}
