//! Rate limits (`[rate_limits]`): a token bucket per (action, who) — the
//! user for what users do, the client's address for what anyone may ask
//! (registration, login, address validation), the origin server for
//! incoming federation transactions. A bucket holds `burst` tokens and
//! gains `per_second`; an action takes one or is refused with 429
//! `M_LIMIT_EXCEEDED`, `retry_after_ms` and `Retry-After` (see
//! [`crate::api::dispatch`], which exempts server admins).
//!
//! The defaults never slow a person or the load tool's default run (a
//! burst of hundreds of actions, then several per second) but stop one
//! client from flooding the server. Failed logins have their own, stricter
//! brake ([`crate::users::rate_limit`]). Kept in memory, at most
//! [`MAX_BUCKETS`] buckets: beyond, full buckets are forgotten first.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::{RateLimit, RateLimitsConfig};

/// Buckets kept at most.
pub const MAX_BUCKETS: usize = 100_000;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sending a room event (a message).
    Message,
    RoomCreation,
    Join,
    Invite,
    MediaUpload,
    /// Per client address.
    Registration,
    /// Per client address (whatever the outcome).
    Login,
    /// `requestToken`, per client address (each may send a mail).
    ThreepidRequest,
    /// Per origin server.
    FederationTransaction,
}

impl Action {
    fn limit(self, config: &RateLimitsConfig) -> &RateLimit {
        match self {
            Action::Message => &config.message,
            Action::RoomCreation => &config.room_creation,
            Action::Join => &config.join,
            Action::Invite => &config.invite,
            Action::MediaUpload => &config.media_upload,
            Action::Registration => &config.registration,
            Action::Login => &config.login,
            Action::ThreepidRequest => &config.threepid_request,
            Action::FederationTransaction => &config.federation_transaction,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimits {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self { config: config.clone(), buckets: Mutex::default() }
    }

    /// Takes a token for `action` by `who`, or says how long to wait for one.
    pub fn take(&self, action: Action, who: &str) -> Result<(), Duration> {
        self.take_at(action, who, Instant::now())
    }

    fn take_at(&self, action: Action, who: &str, now: Instant) -> Result<(), Duration> {
        if !self.config.enabled {
            return Ok(());
        }
        let limit = action.limit(&self.config);
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&(action, who.to_owned())) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry((action, who.to_owned())).or_insert(Bucket { tokens: burst, updated: now });
        let gained = now.saturating_duration_since(bucket.updated).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + gained).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - bucket.tokens;
        let wait = if limit.per_second > 0.0 { missing / limit.per_second } else { 3600.0 };
        Err(Duration::from_secs_f64(wait.min(3600.0)))
    }

    /// Drops the buckets that have refilled (their users look idle); if too
    /// many are left still, all of them (a flood of new keys forgives).
    fn forget_full(&self, buckets: &mut HashMap<(Action, String), Bucket>, now: Instant) {
        let config = &self.config;
        buckets.retain(|(action, _), bucket| {
            let limit = action.limit(config);
            let gained = now.saturating_duration_since(bucket.updated).as_secs_f64() * limit.per_second;
            bucket.tokens + gained < f64::from(limit.burst.max(1))
        });
        if buckets.len() >= MAX_BUCKETS {
            buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: f64, burst: u32) -> RateLimits {
        let limit = RateLimit { per_second, burst };
        RateLimits::new(&RateLimitsConfig { message: limit, ..RateLimitsConfig::default() })
    }

    #[test]
    fn a_burst_then_the_rate_per_user() {
        let limits = limits(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limits.take_at(Action::Message, "@a:x", start).is_ok());
        }
        let wait = limits.take_at(Action::Message, "@a:x", start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(limits.take_at(Action::Message, "@b:x", start).is_ok(), "another user has their own bucket");
        assert!(limits.take_at(Action::Message, "@a:x", start + Duration::from_millis(500)).is_ok(), "refilled");
        assert!(limits.take_at(Action::Join, "@a:x", start).is_ok(), "another action has its own bucket");
    }

    #[test]
    fn off_means_off() {
        let config =
            RateLimitsConfig { enabled: false, message: RateLimit { per_second: 0.0, burst: 1 }, ..Default::default() };
        let limits = RateLimits::new(&config);
        for _ in 0..10 {
            assert!(limits.take(Action::Message, "@a:x").is_ok());
        }
    }
}
