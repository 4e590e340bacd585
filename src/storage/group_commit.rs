//! Group commit: many writers, one flush.
//!
//! A writer that needs its write on disk takes a ticket and waits until a flush
//! that *started after* the ticket was issued has finished. A single flusher
//! thread runs one flush for every ticket that queued up while the previous flush
//! was running, so concurrent requests share the cost of an fsync instead of
//! paying one each.
//!
//! A flush is sled's own flush followed by an `fsync` of the data file: sled
//! writes with `sync_file_range`, which does not flush the drive's cache.

use std::{
    fs::File,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
};

use tokio::sync::watch;

use super::StorageError;

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    flushed: u64,
    /// Every ticket up to this one failed to flush (and later ones may retry).
    failed: u64,
}

#[derive(Default)]
struct Requests {
    issued: u64,
    shutdown: bool,
}

pub struct GroupCommit {
    requests: Mutex<Requests>,
    worker: Mutex<Option<thread::JoinHandle<()>>>,
    flushes: AtomicU64,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`, fsyncing `data_file` after each flush.
    pub fn start(db: sled::Db, data_file: Option<File>) -> Result<Arc<Self>, StorageError> {
        let (progress, _) = watch::channel(Progress::default());
        let this = Arc::new(Self {
            requests: Mutex::default(),
            worker: Mutex::default(),
            flushes: AtomicU64::new(0),
            wake: Condvar::new(),
            progress,
        });
        let worker = Arc::clone(&this);
        let handle = thread::Builder::new()
            .name("storage-flush".into())
            .spawn(move || worker.run(&db, data_file.as_ref()))
            .map_err(StorageError::Io)?;
        *this.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(this)
    }

    fn run(&self, db: &sled::Db, data_file: Option<&File>) {
        let mut handled = 0;
        loop {
            let target = {
                let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
                while requests.issued == handled && !requests.shutdown {
                    requests = self.wake.wait(requests).unwrap_or_else(|p| p.into_inner());
                }
                if requests.issued == handled {
                    return; // shut down with nothing left to flush
                }
                requests.issued
            };
            let result = flush_to_disk(db, data_file);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.progress.send_modify(|progress| match result {
                Ok(()) => progress.flushed = target,
                Err(ref error) => {
                    tracing::error!(%error, "storage flush failed");
                    progress.failed = target;
                }
            });
            handled = target;
        }
    }

    /// Waits until every write made before this call is on disk. After
    /// [`GroupCommit::shutdown`] nothing flushes any more: `Closed` at once
    /// (a task still running then must not wait forever, holding the
    /// database open).
    pub async fn wait_durable(&self) -> Result<(), StorageError> {
        let ticket = self.issue_ticket().ok_or(StorageError::Closed)?;
        let mut progress = self.progress.subscribe();
        let reached =
            progress.wait_for(|p| p.flushed >= ticket || p.failed >= ticket).await.map_err(|_| StorageError::Closed)?;
        if reached.flushed >= ticket {
            Ok(())
        } else {
            Err(StorageError::Io(std::io::Error::other("flush to disk failed")))
        }
    }

    fn issue_ticket(&self) -> Option<u64> {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if requests.shutdown {
            return None;
        }
        requests.issued += 1;
        self.wake.notify_one();
        Some(requests.issued)
    }

    /// Stops the flusher after it has flushed every ticket issued so far, and
    /// waits for it (it holds a handle on the database, and so its lock).
    pub fn shutdown(&self) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            requests.shutdown = true;
            self.wake.notify_one();
        }
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            if worker.thread().id() != thread::current().id() && worker.join().is_err() {
                tracing::error!("the storage flusher thread panicked");
            }
        }
    }

    /// Flushes run so far (each may answer many tickets).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

pub fn flush_to_disk(db: &sled::Db, data_file: Option<&File>) -> Result<(), StorageError> {
    db.flush().map_err(StorageError::from)?;
    if let Some(file) = data_file {
        file.sync_all().map_err(StorageError::Io)?;
    }
    Ok(())
}
