//! Configuration of a sandbox instance.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// Everything needed to start a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The only accepted `X-API-KEY` value.
    pub api_key: String,
    /// Seed of the generated school.
    pub seed: u64,
    /// Size of the generated school.
    pub size: SeedSize,
    /// Requests per second per API key; `0.0` = unlimited.
    pub rate_limit: f64,
    /// Fault injection settings.
    pub faults: Faults,
    /// Persist the school here: loaded at start when present, else seeded and written.
    pub state_file: Option<PathBuf>,
    /// Which of the reported answer shapes the sandbox speaks.
    pub shapes: Shapes,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            api_key: "sk_sandbox_demo_key".to_string(),
            seed: 42,
            size: SeedSize::default(),
            rate_limit: memberspot_wire::DEFAULT_RATE_LIMIT,
            faults: Faults::default(),
            state_file: None,
            shapes: Shapes::default(),
        }
    }
}

impl SandboxConfig {
    /// Rejects settings that would make the sandbox misbehave instead of failing later.
    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        if self.api_key.is_empty() {
            return Err(SandboxError::Config("the API key must not be empty".into()));
        }
        validate_rps(self.rate_limit).map_err(SandboxError::Config)?;
        self.faults
            .validate()
            .map_err(|errors| SandboxError::Config(errors.join("; ")))
    }
}

/// The environment variable test harnesses read to run a suite against the sandbox in
/// another shape mode (`documented` when unset).
pub const SHAPES_ENV: &str = "MEMBERSPOT_SANDBOX_SHAPES";

/// Which of the answer shapes public material reports the sandbox speaks. The school and
/// its rules are the same in every mode; only the answers' form differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shapes {
    /// The shapes docs/api-shapes.md calls canonical (what the n8n and Pipedream clients
    /// read).
    #[default]
    Documented,
    /// Every alternative another integration platform's published types show, at once:
    /// `{data, nextPage}` user pages; members with `created`, `customUserProperties`, a
    /// member-level `active` and embedded `progress` counts; offers with `hasCourseIds`;
    /// property definitions with `schoolId`; a `loginUrl` beside the login token;
    /// `{active, email, offerId|orderId}` from the state changes; the text `ok` from
    /// delete-users.
    Alternate,
}

impl Shapes {
    pub const ALL: [Shapes; 2] = [Shapes::Documented, Shapes::Alternate];

    pub fn as_str(self) -> &'static str {
        match self {
            Shapes::Documented => "documented",
            Shapes::Alternate => "alternate",
        }
    }

    /// The mode named in [`SHAPES_ENV`], `documented` when it is unset or empty.
    pub fn from_env() -> Result<Shapes, String> {
        match std::env::var(SHAPES_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| format!("{SHAPES_ENV}: {e}")),
            _ => Ok(Shapes::Documented),
        }
    }
}

impl std::str::FromStr for Shapes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Shapes::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown shapes `{s}`: use documented or alternate"))
    }
}

impl std::fmt::Display for Shapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How big the seeded school is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSize {
    pub users: usize,
    pub offers: usize,
    pub courses: usize,
}

impl Default for SeedSize {
    fn default() -> Self {
        SeedSize {
            users: 50,
            offers: 4,
            courses: 3,
        }
    }
}

/// Upper bounds keep a typo (`users: 10000000`) from exhausting memory.
pub(crate) const MAX_USERS: usize = 100_000;
pub(crate) const MAX_OFFERS: usize = 1_000;
pub(crate) const MAX_COURSES: usize = 1_000;

/// Fault injection settings, adjustable at run time via `/_sandbox/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Added to every /v1 answer.
    pub latency_ms: u64,
    /// Share (0..=1) of requests answered 500/502/503 without being applied.
    pub error_rate: f64,
    /// Share of requests that start a burst of 429 answers.
    pub rate_limit_rate: f64,
    /// Length of such a burst (3 when 0).
    pub rate_limit_burst: u32,
    /// Share of requests that hang for `timeout_ms`, then answer 504, not applied.
    pub timeout_rate: f64,
    /// How long a timeout hangs (30000 when 0).
    pub timeout_ms: u64,
    /// RNG seed for fault decisions; defaults to the school seed.
    pub seed: Option<u64>,
    /// Lists (members, a member's progress) answer a page asked for with a cursor with
    /// that same cursor as `nextPage` again: the loop a client must not follow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeat_cursor: bool,
}

impl Faults {
    pub(crate) fn burst_len(&self) -> u32 {
        if self.rate_limit_burst == 0 {
            3
        } else {
            self.rate_limit_burst
        }
    }

    pub(crate) fn timeout(&self) -> u64 {
        if self.timeout_ms == 0 {
            30_000
        } else {
            self.timeout_ms
        }
    }

    /// Checks the shares are probabilities; answers one message per bad field.
    pub(crate) fn validate(&self) -> Result<(), Vec<String>> {
        let errors: Vec<String> = [
            ("errorRate", self.error_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("timeoutRate", self.timeout_rate),
        ]
        .into_iter()
        .filter(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(v)))
        .map(|(name, _)| format!("{name} must be a number between 0 and 1"))
        .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

pub(crate) fn validate_rps(rps: f64) -> Result<(), String> {
    if rps.is_finite() && rps >= 0.0 {
        Ok(())
    } else {
        Err("rps must be a finite number >= 0 (0 = unlimited)".to_string())
    }
}
