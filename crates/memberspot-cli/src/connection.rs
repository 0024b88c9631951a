//! Which school a command talks to: flags, then environment, then the
//! config file; with no API key anywhere, an embedded sandbox school that
//! keeps its state in the data directory, so a fresh install works offline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use memberspot_api::{ApiKey, Client, DEFAULT_BASE_URL};
use memberspot_sandbox::{Sandbox, SandboxConfig};

use crate::cli::Global;
use crate::config::ConfigFile;

/// A resolved connection. Call [`Session::close`] to persist the embedded
/// sandbox's state.
pub struct Session {
    pub client: Client,
    /// `Some` when talking to the embedded sandbox.
    sandbox: Option<Sandbox>,
}

impl Session {
    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
    }

    pub async fn close(self) -> anyhow::Result<()> {
        if let Some(sb) = self.sandbox {
            sb.shutdown().await.context("saving the sandbox school")?;
        }
        Ok(())
    }
}

/// The embedded sandbox's fixed key: it only listens on loopback for the
/// lifetime of one command.
const EMBEDDED_KEY: &str = "sk_sandbox_embedded";

pub fn data_dir(global: &Global, file: &ConfigFile) -> PathBuf {
    global
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .or_else(|| dirs::data_dir().map(|d| d.join("memberspot")))
        .unwrap_or_else(|| PathBuf::from(".memberspot"))
}

pub async fn open(global: &Global) -> anyhow::Result<Session> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let rate_limit = global
        .rate_limit
        .or(file.memberspot.rate_limit)
        .unwrap_or(4.0);
    if !(rate_limit >= 0.0 && rate_limit.is_finite()) {
        bail!("--rate-limit must be a number >= 0, got {rate_limit}");
    }
    let timeout = global
        .timeout
        .or(file.memberspot.timeout_secs)
        .unwrap_or(30.0);
    if !(timeout > 0.0 && timeout.is_finite()) {
        bail!("--timeout must be a number of seconds > 0, got {timeout}");
    }
    let api_key = match &global.api_key {
        Some(k) => Some(k.clone()),
        None => file.api_key()?,
    }
    .filter(|k| !k.trim().is_empty());

    if global.sandbox || api_key.is_none() {
        if api_key.is_none() && global.base_url.is_some() {
            bail!(
                "a base URL is set (--base-url / MEMBERSPOT_BASE_URL) but no API key; set MEMBERSPOT_API_KEY, \
                 or unset the base URL to use the embedded sandbox"
            );
        }
        let why = if api_key.is_some() {
            "--sandbox given"
        } else {
            "no API key configured"
        };
        return open_embedded(global, &file, rate_limit, timeout, why).await;
    }
    let base_url = global
        .base_url
        .clone()
        .or(file.memberspot.base_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
    let key = ApiKey::new(api_key.unwrap_or_default().trim());
    let client = Client::builder(base_url)
        .api_key(key)
        .rate_limit(rate_limit)
        .timeout(Duration::from_secs_f64(timeout))
        .build()?;
    Ok(Session {
        client,
        sandbox: None,
    })
}

async fn open_embedded(
    global: &Global,
    file: &ConfigFile,
    rate_limit: f64,
    timeout: f64,
    why: &str,
) -> anyhow::Result<Session> {
    let dir = data_dir(global, file).join("sandbox");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let state_file = dir.join("school.json");
    let config = SandboxConfig {
        api_key: EMBEDDED_KEY.to_string(),
        state_file: Some(state_file.clone()),
        // Same limit as the real API, so what works here works there.
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start_local(config)
        .await
        .context("starting the embedded sandbox")?;
    eprintln!(
        "sandbox: using the embedded sandbox school ({why}; data in {}). \
         Set MEMBERSPOT_API_KEY to work with your school.",
        state_file.display()
    );
    let client = Client::builder(sandbox.base_url())
        .api_key(ApiKey::new(sandbox.api_key()))
        .rate_limit(rate_limit)
        .timeout(Duration::from_secs_f64(timeout))
        .build()?;
    Ok(Session {
        client,
        sandbox: Some(sandbox),
    })
}
