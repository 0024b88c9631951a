use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use memberspot_api::{ApiKey, BaseUrlError, resolve_base_url};
use memberspot_hub::admin::ConnectionView;
use memberspot_hub::secrets::MasterKey;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::{ConnectionsCommand, Global, MasterKeyCommand};
use crate::connection::{cli_actor, close_hub, open_hub};
use crate::output::{Usage, confirm, print_json, print_table, table};

/// The API key for `add` / `rotate-key`: the global flag or environment,
/// standard input, or a prompt that does not echo.
fn read_key(global: &Global, stdin: bool) -> anyhow::Result<SecretString> {
    let key = if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the API key from stdin")?;
        s
    } else if let Some(k) = &global.api_key {
        k.clone()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Memberspot API key (input hidden): ")
            .context("reading the API key")?
    } else {
        bail!(
            "no API key: pass --api-key-stdin, set MEMBERSPOT_API_KEY, or run on a terminal to be asked"
        );
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!("the API key is empty");
    }
    Ok(SecretString::from(key))
}

/// Where the API answers for `url` with `key` (offers are listed there, nothing changes):
/// `url` itself or `url/v1`. A URL that answers neither way is bad input.
async fn resolve_url(global: &Global, url: &str, key: &SecretString) -> anyhow::Result<String> {
    let timeout = Duration::from_secs_f64(global.timeout.unwrap_or(30.0));
    let key = ApiKey::new(key.expose_secret());
    match resolve_base_url(url, &key, timeout).await {
        Ok(found) => {
            if found.added_v1 {
                eprintln!(
                    "note: the API answers at {} (with /v1); the connection uses that URL",
                    found.base_url
                );
            }
            Ok(found.base_url)
        }
        Err(e @ BaseUrlError::NotTheApi { .. }) => Err(Usage(e.to_string()).into()),
        Err(BaseUrlError::Api(e)) => {
            Err(anyhow::Error::new(e).context(format!("checking `{url}` with the key")))
        }
    }
}

pub async fn run(cmd: ConnectionsCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, _) = open_hub(global).await?;
    let result = async {
        match cmd {
            ConnectionsCommand::Add { name, url, api_key_stdin, rps } => {
                let key = read_key(global, api_key_stdin)?;
                let url = resolve_url(global, &url, &key).await?;
                let c = hub.acting_as(cli_actor()).add_connection(&name, &url, &key, rps).await?;
                if global.json {
                    print_json(&c)?;
                } else {
                    println!("connection `{}` added ({}, key {}): Memberspot accepts the key there.", c.name, c.base_url, c.key_hint);
                }
            }
            ConnectionsCommand::List => {
                let cs: Vec<ConnectionView> = hub.list_connections().await?.iter().map(ConnectionView::from).collect();
                if global.json {
                    print_json(&cs)?;
                } else {
                    let mut t = table(&["name", "base URL", "key", "requests/s"]);
                    for c in &cs {
                        t.add_row(vec![c.name.clone(), c.base_url.clone(), c.key_hint.clone(), c.rate_limit.to_string()]);
                    }
                    print_table(&t);
                }
            }
            ConnectionsCommand::Test { name } => {
                hub.acting_as(cli_actor()).test_connection(&name).await?;
                if global.json {
                    print_json(&serde_json::json!({ "name": name, "ok": true }))?;
                } else {
                    println!("ok: Memberspot accepts the key of `{name}`");
                }
            }
            ConnectionsCommand::RotateKey { name, api_key_stdin } => {
                let key = read_key(global, api_key_stdin)?;
                hub.acting_as(cli_actor()).rotate_connection_key(&name, &key).await?;
                println!("the API key of `{name}` was replaced; personas on it use the new key from their next call");
            }
            ConnectionsCommand::Update { name, url, rename, rps } => {
                let change = memberspot_hub::store::ConnectionUpdate { name: rename, base_url: url, rate_limit: rps };
                let c = hub.acting_as(cli_actor()).update_connection(&name, change).await?;
                if global.json {
                    print_json(&c)?;
                } else {
                    println!("connection `{}` updated ({}, {} requests/s); its key is sealed for this name and URL", c.name, c.base_url, c.rate_limit);
                }
            }
            ConnectionsCommand::Remove { name, yes } => {
                confirm(&format!("Remove connection `{name}`?"), yes)?;
                hub.acting_as(cli_actor()).remove_connection(&name).await?;
                println!("connection `{name}` removed");
            }
        }
        anyhow::Ok(())
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result.map(|_| ExitCode::SUCCESS)
}

pub async fn master_key(cmd: MasterKeyCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let MasterKeyCommand::Rotate { yes } = cmd;
    if std::env::var(memberspot_hub::secrets::MASTER_KEY_ENV).is_ok() {
        bail!(
            "the master key comes from {}; rotate it there: generate a key, re-run with the new value after `memberspot master-key rotate` writes it to the key file, or unset the variable",
            memberspot_hub::secrets::MASTER_KEY_ENV
        );
    }
    confirm(
        "Re-encrypt every stored API key under a new master key?",
        yes,
    )?;
    let (hub, sandbox, file) = open_hub(global).await?;
    let settings = crate::connection::hub_settings(global, &file);
    let new_key = MasterKey::generate();
    let result = async {
        // Write the new key beside the old one first: if re-encryption then
        // fails nothing changed, and if it succeeds the key is already safe.
        let path = settings.key_file();
        let staged = path.with_extension("new");
        crate::output::write_private(&staged, new_key.encode().expose_secret())?;
        let n = match hub.rotate_master_key(&new_key).await {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e.into());
            }
        };
        std::fs::rename(&staged, &path).with_context(|| {
            format!("the keys are re-encrypted under the new key in {}, but it could not replace {}: move it there by hand", staged.display(), path.display())
        })?;
        println!("re-encrypted {n} stored key(s); the new master key is in {}", path.display());
        anyhow::Ok(())
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result.map(|_| ExitCode::SUCCESS)
}
