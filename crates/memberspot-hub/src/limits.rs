//! Per-persona call limits (calls per minute), on top of the per-connection
//! Memberspot rate limit. Kept in memory: with several hub instances each
//! instance enforces the limit on its own share of the calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket per persona: up to `per_minute` calls in a burst,
/// refilled continuously.
#[derive(Default)]
pub struct PersonaLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl PersonaLimiter {
    /// Takes one call from `persona`'s budget, or says how long to wait.
    pub fn try_take(&self, persona: &str, per_minute: u32) -> Result<(), Duration> {
        if per_minute == 0 {
            return Err(Duration::from_secs(60));
        }
        let cap = f64::from(per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = buckets.entry(persona.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
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
    }
}
