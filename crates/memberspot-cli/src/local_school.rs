//! The embedded sandbox school of a data directory: one per directory, whatever number of
//! `memberspot` processes use it.
//!
//! The first process takes an exclusive lock on `<data dir>/sandbox/lock`, runs the
//! school (loading and, on close, saving `school.json`) and writes where it listens to
//! `owner.json`. Every other process sends its calls to that school instead of running a
//! copy of its own, so `memberspot users grant …` next to a running `serve` changes the
//! school `serve` sees, and neither overwrites the other's changes when it exits.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use memberspot_api::ApiKey;
use memberspot_hub::EmbeddedSandbox;
use memberspot_sandbox::{Sandbox, SandboxConfig, Shapes};
use serde::{Deserialize, Serialize};

/// The embedded sandbox's fixed key: it listens only on loopback.
const EMBEDDED_KEY: &str = "sk_sandbox_embedded";
/// How long a process waits for the school's owner to say where it listens.
const OWNER_WAIT: Duration = Duration::from_secs(10);

/// What a process does with the school: a long-running service (`serve`, `mcp`) should
/// not depend on a one-off command that is about to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Service,
    Command,
}

/// Written by the owner next to the lock.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    base_url: String,
    pid: u32,
    role: Role,
}

pub enum LocalSchool {
    /// This process runs the school and saves it on close.
    Owned {
        sandbox: Sandbox,
        dir: PathBuf,
        _lock: File,
    },
    /// Another process runs it; this one only calls it.
    Attached,
}

impl LocalSchool {
    /// Runs the school of `dir` (its `sandbox` subdirectory), or joins the process that
    /// already does. A service waits up to [`OWNER_WAIT`] for a one-off command that runs
    /// it to finish, then takes it over, rather than joining a school about to go away.
    /// `shapes` applies when this process runs the school (a joined one speaks its
    /// owner's).
    pub async fn open(
        dir: &Path,
        role: Role,
        shapes: Shapes,
    ) -> anyhow::Result<(LocalSchool, EmbeddedSandbox)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let started = Instant::now();
        let mut said_waiting = false;
        loop {
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("cannot open {}", lock_path.display()))?;
            match lock.try_lock() {
                Ok(()) => return Self::run(dir, lock, role, shapes).await,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
                }
            }
            let waited = started.elapsed();
            if let Some(owner) = read_owner(dir)
                && answers(&owner.base_url).await
                && (role == Role::Command || owner.role == Role::Service || waited >= OWNER_WAIT)
            {
                tracing::debug!(pid = owner.pid, url = %owner.base_url, "using the embedded sandbox of another process");
                let embedded = EmbeddedSandbox {
                    base_url: owner.base_url,
                    api_key: ApiKey::new(EMBEDDED_KEY),
                };
                return Ok((LocalSchool::Attached, embedded));
            }
            if waited >= OWNER_WAIT {
                anyhow::bail!(
                    "another memberspot process holds the embedded sandbox of {} but does not answer; \
                     stop it, or remove {} if no such process is running",
                    dir.display(),
                    lock_path.display()
                );
            }
            if !said_waiting && waited >= Duration::from_secs(1) {
                eprintln!(
                    "waiting for another memberspot command using the embedded sandbox of {} to finish",
                    dir.display()
                );
                said_waiting = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(
        dir: &Path,
        lock: File,
        role: Role,
        shapes: Shapes,
    ) -> anyhow::Result<(LocalSchool, EmbeddedSandbox)> {
        let config = SandboxConfig {
            api_key: EMBEDDED_KEY.to_string(),
            state_file: Some(dir.join("school.json")),
            shapes,
            // Same limit as the real API, so what works here works there.
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::start_local(config)
            .await
            .context("starting the embedded sandbox")?;
        let owner = Owner {
            base_url: sandbox.base_url(),
            pid: std::process::id(),
            role,
        };
        let path = dir.join("owner.json");
        std::fs::write(&path, serde_json::to_vec(&owner)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let embedded = EmbeddedSandbox {
            base_url: sandbox.base_url(),
            api_key: ApiKey::new(sandbox.api_key()),
        };
        Ok((
            LocalSchool::Owned {
                sandbox,
                dir: dir.to_path_buf(),
                _lock: lock,
            },
            embedded,
        ))
    }

    /// Saves and stops the school if this process runs it.
    pub async fn close(self) -> anyhow::Result<()> {
        if let LocalSchool::Owned {
            sandbox,
            dir,
            _lock,
        } = self
        {
            let saved = sandbox
                .shutdown()
                .await
                .context("saving the sandbox school");
            // Before the lock goes (with `_lock`): nobody may join a stopped school.
            let _ = std::fs::remove_file(dir.join("owner.json"));
            saved?;
        }
        Ok(())
    }
}

fn read_owner(dir: &Path) -> Option<Owner> {
    let text = std::fs::read(dir.join("owner.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether something accepts connections where the owner says it listens
/// (`http://127.0.0.1:PORT/v1`).
async fn answers(base_url: &str) -> bool {
    let Some(authority) = base_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
    else {
        return false;
    };
    let connect = tokio::net::TcpStream::connect(authority);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}
