//! Which school a command talks to, and the hub every call goes through
//! (so CLI calls are audited like MCP and REST ones).
//!
//! Precedence: an API key from a flag, the environment or the config file
//! (an ad-hoc connection); else `--connection NAME` (a stored connection);
//! else the built-in `sandbox` connection to an embedded sandbox school
//! that keeps its state in the data directory, so a fresh install works
//! offline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use memberspot_api::{ApiKey, Client, DEFAULT_BASE_URL};
use memberspot_hub::bootstrap::{self, HubSettings};
use memberspot_hub::{EmbeddedSandbox, Hub, Principal, SANDBOX_CONNECTION};
use memberspot_sandbox::{Sandbox, SandboxConfig};

use crate::cli::Global;
use crate::config::ConfigFile;

/// A resolved connection. Call [`Session::close`] to persist the embedded
/// sandbox's state.
pub struct Session {
    pub hub: Hub,
    pub principal: Principal,
    /// Set for an ad-hoc connection (key from flags or environment).
    pub client: Option<Client>,
    sandbox: Option<Sandbox>,
}

impl Session {
    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
            && self.client.is_none()
            && self.principal.connection() == SANDBOX_CONNECTION
    }

    /// The client calls go to.
    pub async fn client(&self) -> anyhow::Result<Client> {
        match &self.client {
            Some(c) => Ok(c.clone()),
            None => Ok(self.hub.client_for(self.principal.connection()).await?),
        }
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.hub.store().close().await;
        if let Some(sb) = self.sandbox {
            sb.shutdown().await.context("saving the sandbox school")?;
        }
        Ok(())
    }
}

/// The embedded sandbox's fixed key: it listens only on loopback, for the
/// lifetime of one process.
const EMBEDDED_KEY: &str = "sk_sandbox_embedded";

pub fn data_dir(global: &Global, file: &ConfigFile) -> PathBuf {
    global
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .or_else(|| dirs::data_dir().map(|d| d.join("memberspot")))
        .unwrap_or_else(|| PathBuf::from(".memberspot"))
}

pub fn hub_settings(global: &Global, file: &ConfigFile) -> HubSettings {
    HubSettings {
        data_dir: data_dir(global, file),
        database_url: global
            .database_url
            .clone()
            .or_else(|| file.database_url.clone()),
        master_key: std::env::var(memberspot_hub::secrets::MASTER_KEY_ENV).ok(),
    }
}

/// Starts the embedded sandbox with its state in the data directory.
pub async fn start_embedded(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<(Sandbox, EmbeddedSandbox)> {
    let dir = data_dir(global, file).join("sandbox");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let config = SandboxConfig {
        api_key: EMBEDDED_KEY.to_string(),
        state_file: Some(dir.join("school.json")),
        // Same limit as the real API, so what works here works there.
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start_local(config)
        .await
        .context("starting the embedded sandbox")?;
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    Ok((sandbox, embedded))
}

/// Opens the hub with the embedded sandbox running (for `serve`, `mcp` and admin commands).
pub async fn open_hub(global: &Global) -> anyhow::Result<(Hub, Sandbox, ConfigFile)> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let (sandbox, embedded) = start_embedded(global, &file).await?;
    let (hub, _) = bootstrap::open(&hub_settings(global, &file), Some(embedded)).await?;
    Ok((hub, sandbox, file))
}

/// Closes what [`open_hub`] opened: the store's connections, then the
/// embedded sandbox (saving its school).
pub async fn close_hub(hub: &Hub, sandbox: Sandbox) -> anyhow::Result<()> {
    hub.store().close().await;
    sandbox
        .shutdown()
        .await
        .context("saving the sandbox school")?;
    Ok(())
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
    let settings = hub_settings(global, &file);

    if let Some(name) = &global.persona {
        if global.api_key.is_some() || global.connection.is_some() {
            bail!("--persona acts on the persona's own connection: drop --api-key/--connection");
        }
        let (sandbox, embedded) = start_embedded(global, &file).await?;
        let (hub, _) = bootstrap::open(&settings, Some(embedded)).await?;
        let persona = hub.persona(name).await?;
        return Ok(Session {
            hub,
            principal: Principal::Persona(persona),
            client: None,
            sandbox: Some(sandbox),
        });
    }

    if let (Some(key), false) = (&api_key, global.sandbox) {
        let base_url = global
            .base_url
            .clone()
            .or(file.memberspot.base_url.clone())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let client = Client::builder(base_url)
            .api_key(ApiKey::new(key.trim()))
            .rate_limit(rate_limit)
            .timeout(Duration::from_secs_f64(timeout))
            .build()?;
        let (hub, _) = bootstrap::open(&settings, None).await?;
        return Ok(Session {
            hub,
            principal: Principal::Operator {
                connection: "env".into(),
            },
            client: Some(client),
            sandbox: None,
        });
    }
    if global.base_url.is_some() && api_key.is_none() {
        bail!(
            "a base URL is set (--base-url / MEMBERSPOT_BASE_URL) but no API key; set MEMBERSPOT_API_KEY, \
             use --connection NAME, or unset the base URL to use the embedded sandbox"
        );
    }
    let connection = if global.sandbox {
        None
    } else {
        global.connection.clone()
    };
    let (sandbox, embedded) = start_embedded(global, &file).await?;
    let (hub, _) = bootstrap::open(&settings, Some(embedded)).await?;
    let connection = match connection {
        Some(name) => {
            hub.connection(&name).await?;
            name
        }
        None => {
            let why = if api_key.is_some() {
                "--sandbox given"
            } else {
                "no API key configured"
            };
            eprintln!(
                "sandbox: using the embedded sandbox school ({why}; data in {}). \
                 Set MEMBERSPOT_API_KEY to work with your school.",
                settings.data_dir.join("sandbox").display()
            );
            SANDBOX_CONNECTION.to_string()
        }
    };
    Ok(Session {
        hub,
        principal: Principal::Operator { connection },
        client: None,
        sandbox: Some(sandbox),
    })
}
