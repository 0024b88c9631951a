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

use anyhow::bail;
use memberspot_api::{ApiKey, Client, DEFAULT_BASE_URL};
use memberspot_hub::bootstrap::{self, HubSettings};
use memberspot_hub::{EmbeddedSandbox, Hub, Principal, SANDBOX_CONNECTION};

use crate::cli::Global;
use crate::config::ConfigFile;
use crate::local_school::{LocalSchool, Role};

/// A resolved connection. Call [`Session::close`] to persist the embedded
/// sandbox's state.
pub struct Session {
    pub hub: Hub,
    pub principal: Principal,
    /// Set for an ad-hoc connection (key from flags or environment).
    pub client: Option<Client>,
    sandbox: Option<LocalSchool>,
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
        self.hub.close().await;
        if let Some(school) = self.sandbox {
            school.close().await?;
        }
        Ok(())
    }
}

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

/// The hub's database, for checking a rules or flows file against it: `Ok(None)` when the
/// hub has none yet (checking never creates one).
pub async fn visible_store(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<Option<memberspot_hub::store::Store>> {
    let settings = hub_settings(global, file);
    let custom = settings
        .database_url
        .as_deref()
        .is_some_and(|u| !u.trim().is_empty());
    if !custom && !settings.data_dir.join("hub.db").exists() {
        return Ok(None);
    }
    Ok(Some(
        memberspot_hub::store::Store::open(&settings.database_url()).await?,
    ))
}

/// The hub's connections, for checking which school a rules or flows file acts on:
/// `Ok(None)` when the hub has no database yet.
pub async fn visible_schools(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<Option<memberspot_hub::schools::Schools>> {
    let Some(store) = visible_store(global, file).await? else {
        return Ok(None);
    };
    let connections = store.list_connections().await;
    store.close().await;
    Ok(Some(memberspot_hub::schools::Schools::new(&connections?)))
}

/// Prints what `validate` found beyond the file's own problems (each an object with a
/// `message`, and a `line` when it has one) and answers exit code 1.
pub fn report_problems(
    global: &Global,
    path: &std::path::Path,
    problems: &[serde_json::Value],
) -> anyhow::Result<std::process::ExitCode> {
    if global.json {
        crate::output::print_json(&serde_json::json!({
            "ok": false, "file": path.display().to_string(), "problems": problems,
        }))?;
    } else {
        for p in problems {
            let message = p["message"].as_str().unwrap_or_default();
            match p["line"].as_u64() {
                Some(line) => eprintln!("{}:{line}: {message}", path.display()),
                None => eprintln!("{}: {message}", path.display()),
            }
        }
        eprintln!("{} problem(s)", problems.len());
    }
    Ok(std::process::ExitCode::from(1))
}

/// The schools of a validated file's items, as `rules validate` / `flows validate` show
/// them.
pub type ItemSchools = Vec<(String, memberspot_hub::schools::School)>;

/// Decides which school each item of a validated file acts on, when the hub's database
/// can be seen: `Ok(None)` when it cannot (decided when `serve` starts), `Err(code)` after
/// reporting every item that has none.
pub async fn check_schools(
    global: &Global,
    file: &ConfigFile,
    path: &std::path::Path,
    resolve: impl FnOnce(
        &memberspot_hub::schools::Schools,
    ) -> Result<ItemSchools, memberspot_hub::schools::Unresolved>,
) -> anyhow::Result<Result<Option<ItemSchools>, std::process::ExitCode>> {
    let known = match visible_schools(global, file).await {
        Ok(Some(known)) => known,
        Ok(None) => return Ok(Ok(None)),
        Err(e) => {
            eprintln!("warning: the connections were not checked: {e:#}");
            return Ok(Ok(None));
        }
    };
    match resolve(&known) {
        Ok(schools) => Ok(Ok(Some(schools))),
        Err(unresolved) => Ok(Err(report_problems(
            global,
            path,
            &unresolved_json(&unresolved),
        )?)),
    }
}

/// Items without a school, as `validate` problems.
pub fn unresolved_json(unresolved: &memberspot_hub::schools::Unresolved) -> Vec<serde_json::Value> {
    unresolved
        .0
        .iter()
        .map(|e| serde_json::json!({"message": e.to_string()}))
        .collect()
}

/// How an item's school reads in `validate` output.
pub fn school_of(schools: &Option<ItemSchools>, item: &str) -> String {
    match schools {
        None => "the school decided when `serve` starts (no hub database to check yet)".to_owned(),
        Some(list) => list
            .iter()
            .find(|(i, _)| i == item)
            .map_or_else(|| "(no school)".to_owned(), |(_, s)| s.to_string()),
    }
}

/// `{item: {connection, choice}}` for `--json`.
pub fn schools_json(schools: &[(String, memberspot_hub::schools::School)]) -> serde_json::Value {
    schools
        .iter()
        .map(|(item, s)| (item.clone(), serde_json::json!(s)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The embedded sandbox school of the data directory: run by this process, or by another
/// one on the same directory (see [`LocalSchool`]).
pub async fn start_embedded(
    global: &Global,
    file: &ConfigFile,
    role: Role,
) -> anyhow::Result<(LocalSchool, EmbeddedSandbox)> {
    LocalSchool::open(
        &data_dir(global, file).join("sandbox"),
        role,
        file.sandbox_shapes()?,
    )
    .await
}

/// Opens the hub with the embedded sandbox running, for one-off admin commands.
/// Who the CLI's admin operations are recorded as: `cli:` and the operating-system user
/// (`$USER`), or `cli:operator` when it is not set.
pub fn cli_actor() -> memberspot_hub::admin::Actor {
    memberspot_hub::admin::Actor {
        surface: memberspot_hub::Surface::Cli,
        name: std::env::var("USER")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "operator".into()),
    }
}

pub async fn open_hub(global: &Global) -> anyhow::Result<(Hub, LocalSchool, ConfigFile)> {
    open_hub_as(global, Role::Command).await
}

/// Opens the hub with the embedded sandbox running (`serve` and `mcp` as [`Role::Service`]).
pub async fn open_hub_as(
    global: &Global,
    role: Role,
) -> anyhow::Result<(Hub, LocalSchool, ConfigFile)> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let (school, embedded) = start_embedded(global, &file, role).await?;
    let (hub, _) = bootstrap::open(&hub_settings(global, &file), Some(embedded)).await?;
    Ok((hub, school, file))
}

/// Closes what [`open_hub`] opened: the store's connections, then the
/// embedded sandbox (saving its school if this process runs it).
pub async fn close_hub(hub: &Hub, school: LocalSchool) -> anyhow::Result<()> {
    hub.close().await;
    school.close().await
}

pub async fn open(global: &Global) -> anyhow::Result<Session> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    // Both checked already: flags by their parsers, the file's values when it was loaded.
    let rate_limit = global
        .rate_limit
        .or(file.memberspot.rate_limit)
        .unwrap_or(memberspot_api::DEFAULT_RATE_LIMIT);
    let timeout = global
        .timeout
        .or(file.memberspot.timeout_secs)
        .unwrap_or(30.0);
    let api_key = match &global.api_key {
        Some(k) => Some(k.clone()),
        None => file.api_key()?,
    }
    .filter(|k| !k.trim().is_empty());
    let settings = hub_settings(global, &file);

    if let Some(name) = &global.persona {
        if global.api_key.is_some() || global.connection.is_some() {
            return Err(crate::output::Usage(
                "--persona acts on the persona's own connection: drop --api-key/--connection"
                    .into(),
            )
            .into());
        }
        let (sandbox, embedded) = start_embedded(global, &file, Role::Command).await?;
        let (hub, _) = bootstrap::open(&settings, Some(embedded)).await?;
        // Revoked or not: a revoked persona's call is refused by the hub, and recorded.
        let persona = hub.find_persona(name).await?;
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
    if file.memberspot.base_url.is_some()
        && api_key.is_none()
        && global.connection.is_none()
        && !global.sandbox
    {
        bail!(
            "`memberspot.base_url` is set in the config file but no API key is; set \
             `memberspot.api_key_file` or MEMBERSPOT_API_KEY, use --connection NAME or --sandbox, \
             or remove the base URL to use the embedded sandbox"
        );
    }
    let connection = if global.sandbox {
        None
    } else {
        global.connection.clone()
    };
    let (sandbox, embedded) = start_embedded(global, &file, Role::Command).await?;
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
