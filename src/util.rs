//! Small helpers with no better home.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as Matrix timestamps are written.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs CPU-heavy `work` (an initial sync, a search) without holding up the
/// async worker it was called on: on the multi-threaded runtime the worker
/// hands its other tasks to the rest of the pool for the duration
/// (`block_in_place`); elsewhere (a single-threaded test runtime) it simply runs.
pub fn off_async_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn heavy_work_leaves_the_only_worker_free_for_other_tasks() {
        let other = tokio::spawn(async { 42 });
        // With one worker, the spawned task can only run while this one is
        // blocked if the worker was handed over.
        let seen = off_async_workers(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !other.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other.is_finished()
        });
        assert!(seen, "the other task ran while the heavy work was going on");
    }

    #[tokio::test]
    async fn on_a_single_threaded_runtime_it_just_runs() {
        assert_eq!(off_async_workers(|| 7), 7);
    }
}
