//! Shared state of a running sandbox.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::config::{Faults, SandboxConfig, SeedSize, Shapes};
use crate::faults::FaultInjector;
use crate::persist::{self, StateOut};
use crate::ratelimit::RateLimiter;
use crate::request_log::RequestLog;
use crate::school::School;
use crate::{SandboxError, seed};

/// Locks a mutex; a panic elsewhere must not take the whole sandbox down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub faults: AtomicU64,
    /// Successful API calls per route (`"POST /users/grant-user-offer-by-mail"`).
    pub succeeded: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Inner {
    pub api_key: String,
    pub school: Mutex<School>,
    /// Seed and size of the current school, for resets and the state file.
    pub origin: Mutex<(u64, SeedSize)>,
    pub clock_offset_ms: AtomicI64,
    pub limiter: Mutex<RateLimiter>,
    pub faults: Mutex<FaultInjector>,
    pub log: Mutex<RequestLog>,
    pub counters: Counters,
    /// Ids and tokens made at run time.
    pub ids: Mutex<StdRng>,
    pub dirty: AtomicBool,
    pub shutdown: watch::Sender<bool>,
    pub state_file: Option<PathBuf>,
    /// The answer shapes spoken; fixed for the sandbox's life.
    pub shapes: Shapes,
}

/// Handle to the sandbox's state; cheap to clone. Build one with
/// [`SandboxState::new`] and serve it with [`crate::router`].
#[derive(Clone)]
pub struct SandboxState {
    pub(crate) inner: Arc<Inner>,
}

/// Run-time ids must not repeat the seeded ones, so their RNG is derived, not shared.
fn id_rng(seed: u64, users: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15 ^ users as u64)
}

impl SandboxState {
    /// Loads `config.state_file` when it exists, else seeds a school (and
    /// writes the file when one is configured).
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        config.validate()?;
        let size = clamp_size(config.size);
        let loaded = match &config.state_file {
            Some(path) => persist::load(path)?,
            None => None,
        };
        let (school, seed, size, offset, ids) = match loaded {
            // The seeded id sequence may already be used up by the loaded school.
            Some(state) => {
                let ids = StdRng::from_rng(&mut rand::rng());
                (
                    state.school,
                    state.seed,
                    state.size,
                    state.clock_offset_ms,
                    ids,
                )
            }
            None => {
                let ids = id_rng(config.seed, size.users);
                (
                    seed::seed_school(config.seed, &size),
                    config.seed,
                    size,
                    0,
                    ids,
                )
            }
        };
        let (shutdown, _) = watch::channel(false);
        let state = SandboxState {
            inner: Arc::new(Inner {
                api_key: config.api_key,
                school: Mutex::new(school),
                origin: Mutex::new((seed, size)),
                clock_offset_ms: AtomicI64::new(offset),
                limiter: Mutex::new(RateLimiter::new(config.rate_limit)),
                faults: Mutex::new(FaultInjector::new(config.faults, seed)),
                log: Mutex::new(RequestLog::default()),
                counters: Counters::default(),
                ids: Mutex::new(ids),
                dirty: AtomicBool::new(false),
                shutdown,
                state_file: config.state_file,
                shapes: config.shapes,
            }),
        };
        if let Some(path) = state.inner.state_file.as_ref().filter(|p| !p.exists()) {
            persist::write_atomic(path, &state.snapshot()?)?;
        }
        Ok(state)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    /// The answer shapes this sandbox speaks.
    pub fn shapes(&self) -> Shapes {
        self.inner.shapes
    }

    /// The school's id, as the alternate shapes name it on property definitions:
    /// derived from the seed, so the same seed gives the same id.
    pub(crate) fn school_id(&self) -> String {
        let seed = self.origin().0;
        seed::firebase_id(&mut StdRng::seed_from_u64(seed ^ 0x5C00_1D00_5C00_1D00))
    }

    /// The sandbox clock: wall clock plus the offset set via `/_sandbox/clock`.
    pub fn now(&self) -> DateTime<Utc> {
        let wall = Utc::now();
        Duration::try_milliseconds(self.inner.clock_offset_ms.load(Ordering::Relaxed))
            .and_then(|offset| wall.checked_add_signed(offset))
            .unwrap_or(wall)
    }

    pub(crate) fn advance_clock(&self, millis: i64) {
        self.inner
            .clock_offset_ms
            .fetch_add(millis, Ordering::Relaxed);
        self.mark_dirty();
    }

    pub(crate) fn mark_dirty(&self) {
        self.inner.dirty.store(true, Ordering::SeqCst);
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&School) -> R) -> R {
        f(&lock(&self.inner.school))
    }

    /// Runs a mutation; marks the state dirty while still holding the lock, so
    /// a concurrent flush either sees the change or flushes again later.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut School) -> R) -> R {
        let mut school = lock(&self.inner.school);
        let r = f(&mut school);
        self.mark_dirty();
        r
    }

    pub(crate) fn new_id(&self) -> String {
        seed::firebase_id(&mut *lock(&self.inner.ids))
    }

    pub(crate) fn new_token(&self) -> String {
        seed::random_string(&mut *lock(&self.inner.ids), 48)
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.inner.faults).faults().clone()
    }

    /// Replaces the fault settings and restarts their RNG, so a test that sets
    /// faults gets the same sequence every time.
    pub(crate) fn set_faults(&self, faults: Faults) {
        let seed = lock(&self.inner.origin).0;
        *lock(&self.inner.faults) = FaultInjector::new(faults, seed);
    }

    /// Regenerates the school; the clock offset goes back to zero.
    pub(crate) fn reset(
        &self,
        seed: Option<u64>,
        users: Option<usize>,
        offers: Option<usize>,
        courses: Option<usize>,
    ) {
        let (seed, size) = {
            let mut origin = lock(&self.inner.origin);
            let size = clamp_size(SeedSize {
                users: users.unwrap_or(origin.1.users),
                offers: offers.unwrap_or(origin.1.offers),
                courses: courses.unwrap_or(origin.1.courses),
            });
            *origin = (seed.unwrap_or(origin.0), size);
            *origin
        };
        let school = seed::seed_school(seed, &size);
        *lock(&self.inner.ids) = id_rng(seed, size.users);
        self.inner.clock_offset_ms.store(0, Ordering::Relaxed);
        self.write(|s| *s = school);
    }

    pub(crate) fn origin(&self) -> (u64, SeedSize) {
        *lock(&self.inner.origin)
    }

    /// The state file's bytes for the current state.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>, SandboxError> {
        let (seed, size) = self.origin();
        let offset = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let school = lock(&self.inner.school);
        persist::encode(&StateOut::new(seed, size, offset, &school)).map_err(|e| {
            SandboxError::BadStateFile {
                path: self.inner.state_file.clone().unwrap_or_default(),
                message: format!("could not encode the state: {e}"),
            }
        })
    }

    /// Writes the state file when something changed since the last write.
    pub(crate) async fn flush(&self) -> Result<(), SandboxError> {
        let Some(path) = self.inner.state_file.clone() else {
            return Ok(());
        };
        if !self.inner.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = match self.snapshot() {
            Ok(bytes) => tokio::task::spawn_blocking(move || persist::write_atomic(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(SandboxError::Task(e.to_string()))),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Try again on the next tick.
            self.mark_dirty();
        }
        result
    }

    pub(crate) fn signal_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has been requested.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        // An error means the sender is gone, which also means we are done.
        let _ = rx.wait_for(|down| *down).await;
    }
}

fn clamp_size(size: SeedSize) -> SeedSize {
    use crate::config::{MAX_COURSES, MAX_OFFERS, MAX_USERS};
    SeedSize {
        users: size.users.min(MAX_USERS),
        offers: size.offers.min(MAX_OFFERS),
        courses: size.courses.min(MAX_COURSES),
    }
}
