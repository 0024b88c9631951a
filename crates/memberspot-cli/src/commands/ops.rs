//! `memberspot migrate` and `memberspot status`: rendering what the store and the hub
//! report (`Store::schema_status`, `memberspot_hub::status`).

use std::process::ExitCode;

use memberspot_hub::status::HubStatus;
use memberspot_hub::store::{SchemaStatus, Store};

use crate::cli::{Global, MigrateArgs};
use crate::config::ConfigFile;
use crate::connection::hub_settings;
use crate::output::print_json;

/// `migrate --check`: migrations would run (or there is no database yet).
pub const EXIT_PENDING: u8 = 3;
/// `migrate --check`: the database was migrated by a newer binary.
pub const EXIT_NEWER: u8 = 4;

pub async fn migrate(args: MigrateArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let url = hub_settings(global, &file).database_url();
    if args.check {
        let s = Store::schema_status(&url).await?;
        let (code, result) = if !s.modified.is_empty() {
            (1, "modified")
        } else if s.is_newer_than_binary() {
            (EXIT_NEWER, "newer_than_binary")
        } else if !s.exists || !s.pending.is_empty() {
            (EXIT_PENDING, "pending")
        } else {
            (0, "up_to_date")
        };
        if global.json {
            let mut v = serde_json::to_value(&s)?;
            v["result"] = result.into();
            print_json(&v)?;
        } else {
            render_check(&s);
        }
        return Ok(ExitCode::from(code));
    }
    let before = Store::migrate(&url).await?;
    if global.json {
        print_json(&serde_json::json!({
            "applied": before.pending,
            "schema_version": before.binary_version,
        }))?;
    } else if before.pending.is_empty() {
        println!(
            "nothing to apply: the database is at schema version {}",
            before.binary_version
        );
    } else {
        for m in &before.pending {
            println!("applied {:04} {}", m.version, m.description);
        }
        println!(
            "the database is at schema version {}",
            before.binary_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn render_check(s: &SchemaStatus) {
    let db = match (s.exists, s.database_version) {
        (false, _) => "no database yet".to_owned(),
        (true, None) => "no migrations applied".to_owned(),
        (true, Some(v)) => format!("schema version {v}"),
    };
    println!(
        "database: {db}; this binary: schema version {}",
        s.binary_version
    );
    if !s.modified.is_empty() {
        println!(
            "applied migrations differ from this binary's: {:?} (the database does not open)",
            s.modified
        );
    }
    if s.is_newer_than_binary() {
        println!(
            "the database is newer than this binary (migrations {:?} unknown here): run the \
             newer memberspot, or restore a backup taken before the upgrade",
            s.unknown
        );
    }
    if s.pending.is_empty() {
        if s.exists && !s.is_newer_than_binary() && s.modified.is_empty() {
            println!("nothing would run");
        }
    } else {
        println!("would apply ({}):", s.pending.len());
        for m in &s.pending {
            println!("  {:04} {}", m.version, m.description);
        }
    }
}

pub async fn status(global: &Global) -> anyhow::Result<ExitCode> {
    let (file, _) = ConfigFile::load(global.config.as_deref())?;
    let status = memberspot_hub::status::read(&hub_settings(global, &file)).await?;
    if global.json {
        print_json(&status)?;
    } else {
        render_status(&status);
    }
    Ok(if status.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render_status(s: &HubStatus) {
    let schema = &s.store.schema;
    println!("memberspot {}", s.version);
    let location = if s.store.location.is_empty() {
        String::new()
    } else {
        format!(" {}", s.store.location)
    };
    println!(
        "store        {}{location}, schema {} (this binary {})",
        s.store.backend,
        schema
            .database_version
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        schema.binary_version
    );
    println!("master key   {}", s.master_key);
    if let Some(e) = &s.events {
        println!(
            "events       {} pending, {} processing, {} dead letters ({} in all)",
            e.pending, e.processing, e.dead, e.total
        );
    }
    if s.events.is_some() {
        match &s.last_digest {
            Some(r) => println!(
                "last digest  {} {}{}",
                when(r.started_at),
                r.status,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => println!("last digest  none yet"),
        }
        if s.polls.is_empty() {
            println!("last poll    no poller has run");
        }
        for p in &s.polls {
            let error = match (&p.last_error, p.last_error_at) {
                (Some(e), Some(at)) if Some(at) > p.last_cycle_at => {
                    format!(" (failed {}: {e})", when(at))
                }
                _ => String::new(),
            };
            println!(
                "last poll    {}: {}{error}",
                p.connection,
                p.last_cycle_at.map_or_else(|| "never".to_owned(), when)
            );
        }
        println!("audit head   {}", s.audit_head.as_deref().unwrap_or("-"));
    }
    if s.problems.is_empty() {
        println!("all well");
    } else {
        println!("needs attention:");
        for p in &s.problems {
            println!("  - {p}");
        }
    }
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}
