//! Request rate limits, global and per credential, with the GCRA limiter of `governor`.
//!
//! The limiter is a lock-free structure shared by the HTTP workers rather than an actor,
//! because it is consulted on every request and must not add a message round trip. It
//! sits behind [`RateLimits::check`], so a shared backend can replace it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// Settings of `[rate_limiting]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained rate allowed to each credential and, separately, to all of them together.
    pub max_requests_per_minute: NonZeroU32,
    /// Requests allowed at once above the sustained rate.
    pub burst_size: NonZeroU32,
}

/// Limit that rejected a request, and the time to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub scope: Scope,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Credential,
    Global,
}

pub struct RateLimits {
    config: RateLimitConfig,
    per_credential: DefaultKeyedRateLimiter<[u8; 32]>,
    global: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> Self {
        let quota =
            Quota::per_minute(config.max_requests_per_minute).allow_burst(config.burst_size);
        Self {
            config,
            per_credential: DefaultKeyedRateLimiter::keyed(quota),
            // The global bucket allows the same rate as one credential: a shared daemon
            // then cannot exceed the upstream account's limit that one key would hit.
            global: DefaultDirectRateLimiter::direct(quota),
            clock: DefaultClock::default(),
        }
    }

    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Takes one request from the credential's bucket and then from the global one.
    ///
    /// NOTE: a request rejected by the global bucket has already spent a unit of its
    /// credential's bucket; under a global overload, credentials drain a little faster.
    pub fn check(&self, credential: &[u8; 32]) -> Result<(), Rejection> {
        let now = self.clock.now();
        if let Err(not_until) = self.per_credential.check_key(credential) {
            return Err(Rejection {
                scope: Scope::Credential,
                retry_after: not_until.wait_time_from(now),
            });
        }
        if let Err(not_until) = self.global.check() {
            return Err(Rejection {
                scope: Scope::Global,
                retry_after: not_until.wait_time_from(now),
            });
        }
        Ok(())
    }

    /// Forgets credentials whose buckets are full again, so the map stays small.
    pub fn forget_idle(&self) {
        self.per_credential.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, burst: u32) -> RateLimits {
        RateLimits::new(RateLimitConfig {
            max_requests_per_minute: NonZeroU32::new(per_minute).unwrap(),
            burst_size: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn burst_then_rejection_with_retry_after() {
        let limits = limits(60, 3);
        let key = [1; 32];
        for attempt in 0..3 {
            assert!(
                limits.check(&key).is_ok(),
                "attempt {attempt} within the burst"
            );
        }
        let rejection = limits.check(&key).unwrap_err();
        assert_eq!(rejection.scope, Scope::Credential);
        // 60 per minute refills one request per second.
        assert!(
            rejection.retry_after <= Duration::from_secs(1),
            "{rejection:?}"
        );
        assert!(
            rejection.retry_after > Duration::from_millis(500),
            "{rejection:?}"
        );
    }

    #[test]
    fn credentials_have_separate_buckets_but_share_global() {
        let limits = limits(60, 2);
        assert!(limits.check(&[1; 32]).is_ok());
        assert!(limits.check(&[1; 32]).is_ok());
        assert_eq!(limits.check(&[1; 32]).unwrap_err().scope, Scope::Credential);
        let rejection = limits.check(&[2; 32]).unwrap_err();
        assert_eq!(rejection.scope, Scope::Global);
    }
}
