//! Token bucket per API key, like a throttler guard in front of every route.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Capacity `max(1, rps)`, refilled at `rps` tokens per second; `rps == 0` = unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(rps: f64) -> Self {
        RateLimiter {
            rps,
            buckets: HashMap::new(),
        }
    }

    pub fn rps(&self) -> f64 {
        self.rps
    }

    /// Changing the rate starts every bucket full again.
    pub fn set_rps(&mut self, rps: f64) {
        self.rps = rps;
        self.buckets.clear();
    }

    fn capacity(&self) -> f64 {
        self.rps.max(1.0)
    }

    /// Takes a token for `key`; `Err(seconds)` tells when the next one is due.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rps <= 0.0 || !self.rps.is_finite() {
            return Ok(());
        }
        let (rps, capacity) = (self.rps, self.capacity());
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rps).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rps).ceil();
            Err(if wait.is_finite() && wait >= 1.0 {
                wait as u64
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_empties_and_refills() {
        let mut rl = RateLimiter::new(2.0);
        let t0 = Instant::now();
        assert!(rl.check("k", t0).is_ok());
        assert!(rl.check("k", t0).is_ok());
        assert_eq!(rl.check("k", t0), Err(1));
        assert!(rl.check("other", t0).is_ok(), "buckets are per key");
        assert!(rl.check("k", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check("k", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn slow_rates_and_unlimited() {
        let mut rl = RateLimiter::new(0.1);
        let t0 = Instant::now();
        assert!(rl.check("k", t0).is_ok());
        assert_eq!(rl.check("k", t0), Err(10));
        rl.set_rps(0.0);
        for _ in 0..100 {
            assert!(rl.check("k", t0).is_ok());
        }
    }
}
