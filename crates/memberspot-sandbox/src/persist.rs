//! The state file: the school plus what is needed to resume it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SandboxError;
use crate::config::SeedSize;
use crate::school::School;

const FORMAT: &str = "memberspot-sandbox-state";
const VERSION: u32 = 1;
/// About ±100 years; also the limit of `/_sandbox/clock`.
pub const MAX_CLOCK_OFFSET_MS: u64 = 3_200_000_000_000;

/// What is written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateOut<'a> {
    pub format: &'static str,
    pub version: u32,
    pub seed: u64,
    pub size: SeedSize,
    pub clock_offset_ms: i64,
    pub school: &'a School,
}

impl<'a> StateOut<'a> {
    pub fn new(seed: u64, size: SeedSize, clock_offset_ms: i64, school: &'a School) -> Self {
        StateOut {
            format: FORMAT,
            version: VERSION,
            seed,
            size,
            clock_offset_ms,
            school,
        }
    }
}

/// What is read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateIn {
    pub format: String,
    pub version: u32,
    pub seed: u64,
    pub size: SeedSize,
    #[serde(default)]
    pub clock_offset_ms: i64,
    pub school: School,
}

fn bad(path: &Path, message: impl Into<String>) -> SandboxError {
    SandboxError::BadStateFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Loads the file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<StateIn>, SandboxError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SandboxError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let mut state: StateIn = serde_path_to_error::deserialize(de)
        .map_err(|e| bad(path, format!("{} (at {})", e.inner(), e.path())))?;
    if state.format != FORMAT {
        return Err(bad(
            path,
            format!("not a sandbox state file (format {:?})", state.format),
        ));
    }
    if state.version != VERSION {
        return Err(bad(path, format!("unsupported version {}", state.version)));
    }
    if state.clock_offset_ms.unsigned_abs() > MAX_CLOCK_OFFSET_MS {
        return Err(bad(path, "clockOffsetMs is out of range"));
    }
    state.school.rebuild_index().map_err(|m| bad(path, m))?;
    Ok(Some(state))
}

pub fn encode(state: &StateOut<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(state)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes a temp file next to `path` and renames it over, so a crash never
/// leaves a half-written state file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    let tmp = temp_path(path);
    let io = |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: do not leave temp files behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
