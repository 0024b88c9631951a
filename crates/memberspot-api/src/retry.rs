//! Retry as a pure decision: (policy, what happened, attempt, whether the
//! action may be repeated) -> wait and retry, or give up. The client runs
//! the one loop that executes it.
//!
//! [`Backoff`] and [`parse_retry_after`] are shared with everything else in the hub that
//! retries (the events worker, Slack delivery, flow steps, the digest's e-mail), so all
//! of them grow their waits and read a server's `Retry-After` the same way.

use std::time::{Duration, SystemTime};

use crate::Idempotency;

/// The longest pause a `Retry-After` can ask for; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Exponential back-off: the wait before retry `n` (1 = the first retry) is
/// `first · 2^(n-1)`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The wait before retry `retry` (1-based; 0 counts as 1), without jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(20);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] with "equal jitter": half fixed, half scaled by `jitter` in
    /// `0.0..=1.0`, so waits grow but concurrent callers do not retry in lockstep.
    pub fn equal_jitter(&self, retry: u32, jitter: f64) -> Duration {
        let d = self.delay(retry);
        d / 2 + d.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// [`Backoff::delay`] spread by `±spread` (e.g. `0.2` for ±20 %); `jitter` in
    /// `0.0..=1.0` picks the point in that range (0.5 is the middle).
    pub fn spread(&self, retry: u32, spread: f64, jitter: f64) -> Duration {
        let spread = spread.clamp(0.0, 1.0);
        let factor = 1.0 - spread + 2.0 * spread * jitter.clamp(0.0, 1.0);
        self.delay(retry).mul_f64(factor)
    }
}

/// A `Retry-After` header value (RFC 9110 §10.2.3) as a pause from `now`: delay-seconds
/// (fractions tolerated) or an HTTP date (a date in the past is no pause). `None` when
/// it is neither; at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite())
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// How persistently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Back-off before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of a single back-off.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// 429, with the server's `Retry-After` if any. Nothing was done.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx: the request may or may not have been applied.
    ServerError { status: u16 },
    /// No answer in time: the request may or may not have been applied.
    Timeout,
    /// The connection could not be made: nothing was sent.
    ConnectFailed,
    /// Any other answer or failure: retrying will not help.
    Final,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
}

/// Decides whether attempt number `attempt` (0 = the first) should be
/// followed by another. `jitter` in `0.0..=1.0` spreads retries of
/// concurrent callers; pass `0.5` for a deterministic middle.
pub fn decide(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    outcome: Outcome,
    attempt: u32,
    jitter: f64,
) -> Decision {
    if attempt >= policy.max_retries {
        return Decision::GiveUp;
    }
    let backoff = backoff(policy, attempt, jitter);
    match outcome {
        // A throttled or unconnected request was never processed: always safe.
        Outcome::RateLimited { retry_after } => {
            Decision::RetryAfter(retry_after.map_or(backoff, |ra| ra.max(backoff.min(ra * 2))))
        }
        Outcome::ConnectFailed => Decision::RetryAfter(backoff),
        // The request may have been applied: only repeat what is safe to repeat.
        Outcome::ServerError { .. } | Outcome::Timeout if idempotency.safe_to_retry() => {
            Decision::RetryAfter(backoff)
        }
        _ => Decision::GiveUp,
    }
}

/// The back-off before retrying after attempt `attempt` (0 = the first), with equal jitter.
fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    Backoff::new(policy.base_delay, policy.max_delay)
        .equal_jitter(attempt.saturating_add(1), jitter)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const P: RetryPolicy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };

    fn ms(n: u64) -> Decision {
        Decision::RetryAfter(Duration::from_millis(n))
    }

    #[test]
    fn decision_table() {
        use Idempotency::*;
        use Outcome::*;
        let cases = [
            // (idempotency, outcome, attempt, jitter, expected)
            (Idempotent, ServerError { status: 503 }, 0, 0.0, ms(50)),
            (Idempotent, ServerError { status: 503 }, 0, 1.0, ms(100)),
            (Idempotent, ServerError { status: 500 }, 1, 0.0, ms(100)),
            (Idempotent, ServerError { status: 500 }, 2, 1.0, ms(400)),
            (
                Idempotent,
                ServerError { status: 500 },
                3,
                0.5,
                Decision::GiveUp,
            ),
            (Idempotent, Timeout, 0, 0.0, ms(50)),
            (SafeToRepeat, Timeout, 0, 0.0, ms(50)),
            (NotSafe, Timeout, 0, 0.0, Decision::GiveUp),
            (
                NotSafe,
                ServerError { status: 502 },
                0,
                0.0,
                Decision::GiveUp,
            ),
            (NotSafe, ConnectFailed, 0, 0.0, ms(50)),
            (NotSafe, RateLimited { retry_after: None }, 1, 0.0, ms(100)),
            (
                Idempotent,
                RateLimited {
                    retry_after: Some(Duration::from_secs(2)),
                },
                0,
                0.0,
                ms(2000),
            ),
            (
                Idempotent,
                RateLimited {
                    retry_after: Some(Duration::from_millis(10)),
                },
                2,
                0.0,
                ms(20),
            ),
            (Idempotent, Final, 0, 0.0, Decision::GiveUp),
        ];
        for (i, (idem, outcome, attempt, jitter, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(&P, idem, outcome, attempt, jitter),
                want,
                "case {i}: {idem:?} {outcome:?} #{attempt}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let secs: Vec<u64> = (0..=6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 5, 10, 20, 40, 60, 60]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(b.equal_jitter(2, 0.0), Duration::from_secs(5));
        assert_eq!(b.equal_jitter(2, 1.0), Duration::from_secs(10));
        assert_eq!(b.spread(2, 0.2, 0.0), Duration::from_secs(8));
        assert_eq!(b.spread(2, 0.2, 0.5), Duration::from_secs(10));
        assert_eq!(b.spread(2, 0.2, 1.0), Duration::from_secs(12));
    }

    #[test]
    fn retry_after_forms() {
        // 1994-11-06 08:49:37 UTC, the example date of RFC 9110.
        let date = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let at = |v: &str| parse_retry_after(v, date - Duration::from_secs(30));
        assert_eq!(at("2"), Some(Duration::from_secs(2)));
        assert_eq!(at(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(at("86400"), Some(MAX_RETRY_AFTER));
        for bad in ["soon", "-1", "inf", "NaN", "", "Sun, 06 Nov 1994 08:49:37"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
        // The three date forms HTTP allows, 30 s ahead of `now`.
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(at(form), Some(Duration::from_secs(30)), "{form}");
        }
        // A date in the past is no pause; one far ahead is capped.
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                date + Duration::from_secs(5)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", UNIX_EPOCH),
            Some(MAX_RETRY_AFTER)
        );
        // Dates that do not exist are not read as some other time.
        for bad in [
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn backoff_is_capped() {
        let d = decide(
            &RetryPolicy {
                max_retries: 100,
                ..P
            },
            Idempotency::Idempotent,
            Outcome::Timeout,
            60,
            1.0,
        );
        assert_eq!(d, ms(1000));
    }
}
