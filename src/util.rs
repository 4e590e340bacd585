//! Small helpers with no better home.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as Matrix timestamps are written.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `true`, for serde's `#[serde(default = "crate::util::yes")]`.
pub fn yes() -> bool {
    true
}

/// A clock that tests can move forward (time-driven behaviour such as
/// account expiry is tested without sleeping): the system's time plus an
/// offset, zero outside tests.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: std::sync::atomic::AtomicU64,
}

impl Clock {
    /// Milliseconds since the Unix epoch, as this clock reads them.
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add(self.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The calendar date (year, month, day; UTC) of a Unix time in milliseconds
/// (Howard Hinnant's civil-from-days).
pub fn utc_date(unix_ms: u64) -> (i64, u32, u32) {
    let days = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

/// Makes renames in `dir` durable (best effort: not every platform can
/// fsync a directory).
pub fn sync_dir(dir: &std::path::Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(utc_date(0), (1970, 1, 1));
        assert_eq!(utc_date(951_782_400_000), (2000, 2, 29));
        assert_eq!(utc_date(1_796_083_200_000), (2026, 12, 1));
    }

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
