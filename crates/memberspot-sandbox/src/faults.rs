//! Seeded fault injection.
//!
//! Every request draws the same number of random values whatever is enabled,
//! so the decision for the n-th request depends only on the seed and n.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Faults;
use crate::errors::ApiError;

/// What to do with one request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Serve it normally.
    Pass,
    /// Hang this long, then answer 504 without applying it.
    Timeout(Duration),
    /// Answer with this error without applying it.
    Fail(ApiError),
}

#[derive(Debug, PartialEq)]
pub struct Decision {
    pub latency: Duration,
    pub outcome: Outcome,
}

pub struct FaultInjector {
    faults: Faults,
    rng: StdRng,
    burst_left: u32,
}

impl FaultInjector {
    /// `school_seed` is used when the faults carry no seed of their own.
    pub fn new(faults: Faults, school_seed: u64) -> Self {
        let rng = StdRng::seed_from_u64(faults.seed.unwrap_or(school_seed));
        FaultInjector {
            faults,
            rng,
            burst_left: 0,
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn decide(&mut self) -> Decision {
        let f = &self.faults;
        let [timeout, burst, error, kind]: [f64; 4] = self.rng.random();
        let latency = Duration::from_millis(f.latency_ms);
        let outcome = if timeout < f.timeout_rate {
            Outcome::Timeout(Duration::from_millis(f.timeout()))
        } else if self.burst_left > 0 {
            self.burst_left -= 1;
            Outcome::Fail(ApiError::too_many_requests(1))
        } else if burst < f.rate_limit_rate {
            self.burst_left = f.burst_len().saturating_sub(1);
            Outcome::Fail(ApiError::too_many_requests(1))
        } else if error < f.error_rate {
            // Mostly the app's own 500, sometimes the load balancer's 502/503.
            Outcome::Fail(if kind < 0.7 {
                ApiError::internal()
            } else if kind < 0.85 {
                ApiError::bad_gateway()
            } else {
                ApiError::unavailable()
            })
        } else {
            Outcome::Pass
        };
        Decision { latency, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(faults: Faults, n: usize) -> Vec<u16> {
        let mut f = FaultInjector::new(faults, 1);
        (0..n)
            .map(|_| match f.decide().outcome {
                Outcome::Pass => 200,
                Outcome::Timeout(_) => 504,
                Outcome::Fail(e) => e.status.as_u16(),
            })
            .collect()
    }

    #[test]
    fn no_faults_by_default() {
        assert!(statuses(Faults::default(), 100).iter().all(|s| *s == 200));
    }

    #[test]
    fn error_rate_one_always_fails_with_5xx() {
        let s = statuses(
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            200,
        );
        assert!(s.iter().all(|s| [500, 502, 503].contains(s)));
        assert!(s.contains(&500) && s.contains(&502) && s.contains(&503));
    }

    #[test]
    fn bursts_have_the_configured_length() {
        let s = statuses(
            Faults {
                rate_limit_rate: 1.0,
                rate_limit_burst: 4,
                ..Faults::default()
            },
            8,
        );
        assert!(s.iter().all(|s| *s == 429));
        let s = statuses(
            Faults {
                rate_limit_rate: 0.05,
                rate_limit_burst: 5,
                ..Faults::default()
            },
            2000,
        );
        let runs: Vec<usize> = s
            .split(|s| *s != 429)
            .map(<[u16]>::len)
            .filter(|l| *l > 0)
            .collect();
        assert!(
            !runs.is_empty() && runs.iter().all(|l| l % 5 == 0),
            "{runs:?}"
        );
    }

    #[test]
    fn decisions_are_reproducible() {
        let f = Faults {
            error_rate: 0.3,
            timeout_rate: 0.1,
            seed: Some(9),
            ..Faults::default()
        };
        assert_eq!(statuses(f.clone(), 300), statuses(f, 300));
    }
}
