//! Failed-login rate limiting: a sliding window of failures per key (an account,
//! a client address). Kept in memory: a restart forgives, which is acceptable
//! for a brute-force brake.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::{Error, ErrorKind, Result};

/// Keys tracked at most; beyond it, keys with no recent failure are dropped.
const MAX_KEYS: usize = 100_000;

pub struct FailureLimiter {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit: limit as usize, window, failures: Mutex::default() }
    }

    /// Refuses with `M_LIMIT_EXCEEDED` when any key has used up its failures.
    pub fn check(&self, keys: &[String]) -> Result<()> {
        self.check_at(keys, Instant::now())
    }

    fn check_at(&self, keys: &[String], now: Instant) -> Result<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = failures.get_mut(key) {
                prune(times, now, self.window);
                if times.len() >= self.limit {
                    let oldest = times[times.len() - self.limit];
                    wait = wait.max(self.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms }, "Too many failed attempts; try again later"))
        }
    }

    pub fn record_failure(&self, keys: &[String]) {
        self.record_failure_at(keys, Instant::now());
    }

    fn record_failure_at(&self, keys: &[String], now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, times| {
                prune(times, now, self.window);
                !times.is_empty()
            });
        }
        for key in keys {
            let times = failures.entry(key.clone()).or_default();
            prune(times, now, self.window);
            times.push_back(now);
        }
    }

    /// Forgets the failures of `key` (after a successful login of that account).
    pub fn clear(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_recovers_after_the_window() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let keys = vec!["user:alice".to_owned()];
        let start = Instant::now();
        for _ in 0..3 {
            limiter.check_at(&keys, start).unwrap();
            limiter.record_failure_at(&keys, start);
        }
        let error = limiter.check_at(&keys, start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::LimitExceeded { retry_after_ms: 50_000 });
        assert!(limiter.check_at(&["user:bob".to_owned()], start).is_ok(), "other keys are unaffected");
        assert!(limiter.check_at(&keys, start + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn clearing_forgives() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let keys = vec!["user:carol".to_owned()];
        limiter.record_failure(&keys);
        assert!(limiter.check(&keys).is_err());
        limiter.clear("user:carol");
        assert!(limiter.check(&keys).is_ok());
    }
}
