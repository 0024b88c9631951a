//! `memberspot backup` and `memberspot restore`: the passphrase, the files in use, and
//! rendering; the backup itself is `memberspot_hub::backup`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use memberspot_hub::backup::{self, BackupRequest, HubFile, Progress};
use secrecy::SecretString;

use crate::cli::{BackupArgs, Global, RestoreArgs};
use crate::config::ConfigFile;
use crate::connection::{data_dir, hub_settings};
use crate::output::{Usage, print_json};

pub async fn backup(args: BackupArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let (file, config_path) = ConfigFile::load(global.config.as_deref())?;
    if args.file.exists() {
        return Err(backup::BackupError::Exists(args.file.clone()).into());
    }
    let passphrase = passphrase(args.passphrase_env.as_deref(), true)?;
    let request = BackupRequest {
        settings: hub_settings(global, &file),
        files: hub_files(global, &file, config_path)?,
        include_master_key: !args.without_master_key,
        files_only: args.files_only,
    };
    let report = backup::create(&request, &passphrase, &args.file, &progress(global)).await?;
    if global.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = &report.manifest;
    println!(
        "backup written: {} ({}, encrypted)",
        report.file,
        size(report.bytes)
    );
    if m.database_included {
        println!(
            "  database    SQLite, schema {}, audit head {}",
            m.schema_version.unwrap_or_default(),
            m.audit_head.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "  database    NOT INCLUDED: the store is PostgreSQL; back it up with pg_dump \
             (docs/operations.md)"
        );
    }
    if m.master_key_included {
        println!("  master key  included");
    } else {
        println!(
            "  master key  NOT INCLUDED: keep it separately; without it the connections' API \
             keys do not open after a restore"
        );
    }
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    println!("  files       {}", names.join(", "));
    println!("Keep the passphrase: without it the backup does not open.");
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let dir = args.into.clone().unwrap_or_else(|| data_dir(global, &file));
    // Before asking for the passphrase: a directory in use is refused at once.
    backup::check_empty(&dir)?;
    if !args.file.is_file() {
        return Err(Usage(format!("{} is not a file", args.file.display())).into());
    }
    let passphrase = passphrase(args.passphrase_env.as_deref(), false)?;
    let master_key = std::env::var(memberspot_hub::secrets::MASTER_KEY_ENV).ok();
    let report = backup::restore(
        &args.file,
        &passphrase,
        &dir,
        master_key.as_deref(),
        &progress(global),
    )
    .await?;
    if global.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = &report.manifest;
    println!("restored into {}", report.dir);
    println!(
        "  from        a backup of {} by memberspot {}",
        m.created_at, m.hub_version
    );
    if let Some(db) = &report.database {
        let opening = db
            .connections_opening
            .map(|n| format!(" ({n} open with the master key)"))
            .unwrap_or_default();
        println!(
            "  database    schema {}, {} personas, {} connections{opening}, {} events",
            db.schema_version.unwrap_or_default(),
            db.personas,
            db.connections,
            db.events
        );
        println!(
            "  audit       verified: {} records, head {}",
            db.audit.records, db.audit.head
        );
    }
    for note in &report.notes {
        println!("  note: {note}");
    }
    println!(
        "next: memberspot --data-dir {} status, then serve with the same data directory",
        report.dir
    );
    Ok(ExitCode::SUCCESS)
}

/// The passphrase: from the environment variable `env`, else asked on the terminal
/// (twice for a new backup). Never an argument: arguments show up in `ps` and history.
fn passphrase(env: Option<&str>, new: bool) -> anyhow::Result<SecretString> {
    if let Some(var) = env {
        let value = std::env::var(var)
            .map_err(|_| Usage(format!("--passphrase-env {var}: the variable is not set")))?;
        if value.is_empty() {
            return Err(Usage(format!("--passphrase-env {var}: the variable is empty")).into());
        }
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Usage(
            "no passphrase: standard input is not a terminal, so it cannot be asked for; \
             give --passphrase-env VAR with the passphrase in that environment variable"
                .into(),
        )
        .into());
    }
    let a = rpassword::prompt_password("Backup passphrase (input hidden): ")
        .context("reading the passphrase")?;
    let pass = SecretString::from(a.clone());
    if new {
        backup::check_passphrase(&pass)?;
        let b = rpassword::prompt_password("Repeat it: ").context("reading the passphrase")?;
        if a != b {
            anyhow::bail!("the two passphrases differ; nothing was written");
        }
    }
    Ok(pass)
}

/// The hub's files in use besides the data directory's own: rules, flows, models and
/// the config file (each where the flags, environment and config file say).
fn hub_files(
    global: &Global,
    file: &ConfigFile,
    config_path: Option<PathBuf>,
) -> anyhow::Result<Vec<HubFile>> {
    let dir = data_dir(global, file);
    let pick = |explicit: Option<PathBuf>, default: PathBuf| -> anyhow::Result<Option<PathBuf>> {
        match explicit {
            Some(p) if !p.is_file() => Err(Usage(format!("{} does not exist", p.display())).into()),
            Some(p) => Ok(Some(p)),
            None => Ok(default.is_file().then_some(default)),
        }
    };
    let mut out = Vec::new();
    let candidates = [
        (
            "rules.toml",
            global.rules.clone().or_else(|| file.rules_file.clone()),
        ),
        (
            "flows.toml",
            global.flows.clone().or_else(|| file.flows_file.clone()),
        ),
        (
            "models.toml",
            global.models.clone().or_else(|| file.models_file.clone()),
        ),
    ];
    for (name, explicit) in candidates {
        if let Some(path) = pick(explicit, dir.join(name))? {
            out.push(HubFile { name, path });
        }
    }
    if let Some(path) = config_path {
        out.push(HubFile {
            name: "config.toml",
            path,
        });
    }
    Ok(out)
}

/// Progress lines on stderr, only for a person at a terminal, never with `--json`.
fn progress(global: &Global) -> impl Fn(Progress) + Sync + use<> {
    let show = !global.json && std::io::stderr().is_terminal();
    move |p| {
        if show {
            eprintln!("  {}", describe(&p));
        }
    }
}

fn describe(p: &Progress) -> String {
    match p {
        Progress::Snapshot { bytes } => format!("database copied ({})", size(*bytes)),
        Progress::File { name, bytes } => format!("{name} ({})", size(*bytes)),
        Progress::Checked => "database opened, master key and audit chain checked".into(),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}
