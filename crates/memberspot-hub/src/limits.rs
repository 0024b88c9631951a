//! Per-persona call limits (calls per minute), on top of the per-connection
//! Memberspot rate limit. Kept in memory: with several hub instances each
//! instance enforces the limit on its own share of the calls.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A GCRA limiter per persona (`governor`): up to `per_minute` calls in a burst,
/// refilled continuously. Personas with the same limit share one keyed limiter.
#[derive(Default)]
pub struct PersonaLimiter {
    by_limit: Mutex<HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<String>>>>,
}

impl PersonaLimiter {
    /// Takes one call from `persona`'s budget, or says how long to wait.
    pub fn try_take(&self, persona: &str, per_minute: u32) -> Result<(), Duration> {
        let Some(limit) = NonZeroU32::new(per_minute) else {
            return Err(Duration::from_secs(60));
        };
        let limiter = {
            // The map only ever gains complete entries, so one left by a panicking
            // thread is still sound: a poisoned lock must not open the limit.
            let mut by_limit = self.by_limit.lock().unwrap_or_else(PoisonError::into_inner);
            by_limit
                .entry(limit)
                .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_minute(limit))))
                .clone()
        };
        limiter
            .check_key(&persona.to_string())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_persona() {
        let l = PersonaLimiter::default();
        for _ in 0..3 {
            assert!(l.try_take("a", 3).is_ok());
        }
        let wait = l.try_take("a", 3).expect_err("over budget");
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.try_take("b", 3).is_ok(), "other personas are unaffected");
        assert!(
            l.try_take("c", 0).is_err(),
            "a limit of zero allows nothing"
        );
    }

    #[test]
    fn a_poisoned_lock_does_not_open_the_limit() {
        let l = Arc::new(PersonaLimiter::default());
        assert!(l.try_take("a", 1).is_ok());
        let poisoner = l.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.by_limit.lock();
            panic!("a panic while the limiter's lock is held");
        })
        .join();
        assert!(l.by_limit.is_poisoned());
        assert!(
            l.try_take("a", 1).is_err(),
            "still over budget after the lock was poisoned"
        );
        assert!(l.try_take("b", 1).is_ok(), "and still working for others");
    }
}
