//! Client-side pacing, shared by every clone of a [`crate::Client`].

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter as Gcra};
use tokio::time::Instant;

/// Paces requests to at most `rps` per second, evenly spaced (no bursts, so
/// a server that allows `rps` per second never throttles us), and holds all
/// callers back when the server asks for a pause with `Retry-After`.
pub(crate) struct Pacer {
    gcra: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `rps <= 0` disables pacing.
    pub(crate) fn new(rps: f64) -> Result<Self, String> {
        let gcra = if rps > 0.0 && rps.is_finite() {
            let period = Duration::from_secs_f64(1.0 / rps);
            let quota = Quota::with_period(period)
                .ok_or_else(|| format!("rate limit {rps} requests/second is too high"))?
                .allow_burst(NonZeroU32::MIN);
            Some(Gcra::direct(quota))
        } else {
            None
        };
        Ok(Pacer {
            gcra,
            paused_until: Mutex::new(None),
        })
    }

    /// Waits for this caller's turn.
    pub(crate) async fn acquire(&self) {
        loop {
            let pause = self.paused_until.lock().ok().and_then(|p| *p);
            match pause {
                Some(until) if until > Instant::now() => {
                    report_wait(until - Instant::now());
                    tokio::time::sleep_until(until).await
                }
                _ => break,
            }
        }
        if let Some(gcra) = &self.gcra {
            // `check` takes the turn when it is free; otherwise it says how long to wait.
            if let Err(not_yet) = gcra.check() {
                report_wait(not_yet.wait_time_from(governor::clock::Clock::now(gcra.clock())));
                gcra.until_ready().await;
            }
        }
    }

    /// Holds every caller back for `d` (the server's `Retry-After`).
    pub(crate) fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        if let Ok(mut p) = self.paused_until.lock()
            && p.is_none_or(|cur| cur < until)
        {
            *p = Some(until);
        }
    }
}

fn report_wait(d: Duration) {
    if d >= crate::progress::WAIT_WORTH_REPORTING {
        crate::progress::report(crate::progress::Progress::Waiting(d));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::progress::{self, Progress, ProgressSink};

    #[tokio::test]
    async fn a_long_wait_for_the_pacer_is_reported_to_the_calls_sink() {
        let pacer = Pacer::new(1.0).expect("pacer");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = ProgressSink::new(move |p| s.lock().expect("lock").push(p));
        progress::scope(Some(sink), async {
            pacer.acquire().await; // free
            pacer.acquire().await; // about a second later
        })
        .await;
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            matches!(seen[0], Progress::Waiting(d) if d >= WAIT && d <= Duration::from_secs(1)),
            "{seen:?}"
        );
    }

    const WAIT: Duration = crate::progress::WAIT_WORTH_REPORTING;
}
