//! Failed-login rate limiting, designed so that nobody can lock a user out.
//!
//! Failures are counted in a sliding window (`login_rate_limit.window_secs`)
//! under three keys, and a check refuses (`M_LIMIT_EXCEEDED`, with the wait)
//! when any of them is used up:
//!
//! - **(account, address)**: `failed_attempts` failures. Guessing one
//!   account's password from one address is slowed down; the same account
//!   from any other address is not affected — five wrong passwords typed by
//!   someone else no longer keep the real user out.
//! - **address**: `failed_attempts_per_address` failures across accounts
//!   (credential stuffing from one host). Generous, since a ministry's whole
//!   network may reach the server through one NAT address.
//! - **account under attack**: once an account has `account_attack_threshold`
//!   failures in the window (from however many addresses), each address gets
//!   a single failure on it per window instead of `failed_attempts`. A botnet
//!   gets one guess per address per window; an address with no failure on the
//!   account is never refused, so the real user with the right password from
//!   their own device gets in during the attack. The design refuses to block
//!   the account itself: any account-wide lock can be held by an attacker for
//!   as long as they keep failing.
//!
//! A successful login forgets the failures of its (account, address).
//! Kept in memory: a restart forgives, which is acceptable for a brake.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    config::LoginRateLimit,
    error::{Error, ErrorKind, Result},
};

/// Keys tracked at most; beyond it, keys with no recent failure are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair { account: String, address: String },
    Address(String),
    Account(String),
}

pub struct LoginLimiter {
    per_pair: usize,
    per_address: usize,
    attack_threshold: usize,
    window: Duration,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(config: &LoginRateLimit) -> Self {
        Self {
            per_pair: config.failed_attempts.max(1) as usize,
            per_address: config.failed_attempts_per_address.max(1) as usize,
            attack_threshold: config.account_attack_threshold.max(1) as usize,
            window: Duration::from_secs(config.window_secs),
            failures: Mutex::default(),
        }
    }

    /// Refuses with `M_LIMIT_EXCEEDED` when `address` may not try `account` now.
    pub fn check(&self, account: &str, address: &str) -> Result<()> {
        self.check_at(account, address, Instant::now())
    }

    fn check_at(&self, account: &str, address: &str, now: Instant) -> Result<()> {
        let mut failures = self.lock();
        let under_attack =
            self.recent(&mut failures, &Key::Account(account.to_owned()), now).len() >= self.attack_threshold;
        let pair_limit = if under_attack { 1 } else { self.per_pair };
        let pair = Key::Pair { account: account.to_owned(), address: address.to_owned() };
        let waits = [
            self.wait(&mut failures, &pair, pair_limit, now),
            self.wait(&mut failures, &Key::Address(address.to_owned()), self.per_address, now),
        ];
        let wait = waits.into_iter().max().unwrap_or_default();
        if wait.is_zero() {
            return Ok(());
        }
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms }, "Too many failed attempts; try again later"))
    }

    pub fn record_failure(&self, account: &str, address: &str) {
        self.record_failure_at(account, address, Instant::now());
    }

    fn record_failure_at(&self, account: &str, address: &str, now: Instant) {
        let mut failures = self.lock();
        if failures.len() >= MAX_KEYS {
            let window = self.window;
            failures.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
        let keys = [
            Key::Pair { account: account.to_owned(), address: address.to_owned() },
            Key::Address(address.to_owned()),
            Key::Account(account.to_owned()),
        ];
        for key in keys {
            let times = failures.entry(key).or_default();
            prune(times, now, self.window);
            times.push_back(now);
        }
    }

    /// Forgets the failures of this (account, address) after a successful login.
    pub fn record_success(&self, account: &str, address: &str) {
        self.lock().remove(&Key::Pair { account: account.to_owned(), address: address.to_owned() });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failures of `key` still in the window.
    fn recent<'m>(
        &self,
        failures: &'m mut HashMap<Key, VecDeque<Instant>>,
        key: &Key,
        now: Instant,
    ) -> &'m VecDeque<Instant> {
        static EMPTY: VecDeque<Instant> = VecDeque::new();
        match failures.get_mut(key) {
            Some(times) => {
                prune(times, now, self.window);
                times
            }
            None => &EMPTY,
        }
    }

    /// How long until `key` has fewer than `limit` failures in the window.
    fn wait(&self, failures: &mut HashMap<Key, VecDeque<Instant>>, key: &Key, limit: usize, now: Instant) -> Duration {
        let times = self.recent(failures, key, now);
        if times.len() < limit {
            return Duration::ZERO;
        }
        let oldest_counted = times[times.len() - limit];
        self.window.saturating_sub(now.duration_since(oldest_counted))
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

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(&LoginRateLimit {
            failed_attempts: 3,
            window_secs: 60,
            failed_attempts_per_address: 10,
            account_attack_threshold: 6,
        })
    }

    fn fail(limiter: &LoginLimiter, account: &str, address: &str, times: usize, at: Instant) {
        for _ in 0..times {
            limiter.record_failure_at(account, address, at);
        }
    }

    #[test]
    fn a_pair_is_slowed_down_but_not_the_account_from_elsewhere() {
        let limiter = limiter();
        let start = Instant::now();
        fail(&limiter, "alice", "10.0.0.66", 3, start);
        let error = limiter.check_at("alice", "10.0.0.66", start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::LimitExceeded { retry_after_ms: 50_000 });
        assert!(limiter.check_at("alice", "10.0.0.1", start).is_ok(), "the real user's address is not affected");
        assert!(limiter.check_at("bob", "10.0.0.66", start).is_ok(), "other accounts are not affected");
        assert!(limiter.check_at("alice", "10.0.0.66", start + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn an_address_failing_across_accounts_is_stopped() {
        let limiter = limiter();
        let start = Instant::now();
        for account in 0..10 {
            fail(&limiter, &format!("user{account}"), "10.0.0.66", 1, start);
        }
        assert!(limiter.check_at("someone-new", "10.0.0.66", start).is_err());
        assert!(limiter.check_at("someone-new", "10.0.0.1", start).is_ok());
    }

    #[test]
    fn an_account_under_attack_gives_each_address_one_guess_and_clean_addresses_all() {
        let limiter = limiter();
        let start = Instant::now();
        // Six addresses fail once each: the account is under attack.
        for bot in 0..6 {
            fail(&limiter, "alice", &format!("192.0.2.{bot}"), 1, start);
        }
        assert!(limiter.check_at("alice", "192.0.2.0", start).is_err(), "one guess per address during an attack");
        assert!(limiter.check_at("alice", "192.0.2.99", start).is_ok(), "an address without failures is let in");
        assert!(limiter.check_at("alice", "192.0.2.0", start + Duration::from_secs(61)).is_ok(), "the window passes");
    }

    #[test]
    fn success_forgives_its_pair() {
        let limiter = limiter();
        let start = Instant::now();
        fail(&limiter, "carol", "10.0.0.5", 3, start);
        assert!(limiter.check_at("carol", "10.0.0.5", start).is_err());
        limiter.record_success("carol", "10.0.0.5");
        assert!(limiter.check_at("carol", "10.0.0.5", start).is_ok());
    }
}
