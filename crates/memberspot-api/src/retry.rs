//! Retry as a pure decision: (policy, what happened, attempt, whether the
//! action may be repeated) -> wait and retry, or give up. The client runs
//! the one loop that executes it.

use std::time::Duration;

use crate::Idempotency;

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

/// Exponential back-off with "equal jitter": half fixed, half random, so
/// delays grow but concurrent callers do not retry in lockstep.
fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let capped = exp.min(policy.max_delay);
    let jitter = jitter.clamp(0.0, 1.0);
    capped / 2 + capped.mul_f64(jitter / 2.0)
}

#[cfg(test)]
mod tests {
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
