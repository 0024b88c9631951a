//! `memberspot events …` and `memberspot rules …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use memberspot_events::{Events, EventsConfig};
use memberspot_hub::offer_names::{self, OfferNames, OfferNamesByConnection, offer_ids_in};
use memberspot_hub::store::{EventFilter, EventStatus, StoredEvent};

use crate::cli::{EventFilterArgs, EventsCommand, Global, RulesCommand};
use crate::commands::audit::parse_since;
use crate::config::ConfigFile;
use crate::connection::{
    check_schools, cli_actor, close_hub, data_dir, open_hub, school_of, schools_json,
};
use crate::output::{print_json, print_table, table};

/// The rules file in use: `--rules`/`MEMBERSPOT_RULES`, the config file's `rules_file`,
/// else `<data dir>/rules.toml` when it exists.
pub fn rules_path(global: &Global, file: &ConfigFile) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = global.rules.clone().or_else(|| file.rules_file.clone()) {
        if !p.exists() {
            bail!("the rules file {} does not exist", p.display());
        }
        return Ok(Some(p));
    }
    let default = data_dir(global, file).join("rules.toml");
    Ok(default.exists().then_some(default))
}

/// Loads and validates the rules (an empty configuration when there is no file).
pub fn load_rules(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<(EventsConfig, Option<PathBuf>)> {
    match rules_path(global, file)? {
        None => Ok((EventsConfig::default(), None)),
        Some(p) => {
            let cfg = EventsConfig::load(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((cfg, Some(p)))
        }
    }
}

pub async fn run(cmd: EventsCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, file) = open_hub(global).await?;
    let result = async {
        let (cfg, _) = load_rules(global, &file)?;
        // Reading and replaying need no personas; only `serve` acts.
        let events = Events::offline(hub.clone(), cfg)?;
        match cmd {
            EventsCommand::List(args) if args.refused => {
                let list = events.refused(args.source.as_deref(), args.limit).await?;
                render_refused(&list, global.json)?;
            }
            EventsCommand::List(args) => {
                render(&events.list(&filter(&args)?).await?, global.json)?;
            }
            EventsCommand::Dead { limit } => {
                let f = EventFilter {
                    statuses: vec![EventStatus::Dead],
                    limit: Some(limit),
                    ..Default::default()
                };
                render(&events.list(&f).await?, global.json)?;
            }
            EventsCommand::Show { id, body } => {
                let d = events.show(&id).await?;
                if global.json {
                    print_json(&d)?;
                } else {
                    let e = &d.event;
                    // Offer names from the school the event was received for (one read).
                    let offers = match &e.connection {
                        Some(c) => {
                            OfferNamesByConnection::new(&hub, super::call_context(global.reason.clone()))
                                .of(c)
                                .await
                        }
                        None => None,
                    };
                    println!("event      {}", e.id);
                    println!(
                        "received   {}  ({} redeliveries)",
                        time(e.received_at),
                        e.redeliveries
                    );
                    println!("source     {} ({})", e.source, e.provider);
                    println!("kind       {}  [{}]", e.kind, e.name);
                    println!("status     {}  after {} attempt(s)", e.status, e.attempts);
                    for (k, v) in [
                        ("order", &e.order_id),
                        ("product", &e.product_id),
                        ("email", &e.email),
                        ("connection", &e.connection),
                        ("refused", &e.refusal),
                        ("error", &e.last_error),
                    ] {
                        if let Some(v) = v {
                            println!("{k:<10} {v}");
                        }
                    }
                    if e.test {
                        println!("test       yes (provider test traffic)");
                    }
                    if let Some(line) = rule_line(&events, e, offers.as_deref()).await {
                        println!("rule       {line}");
                    }
                    if let Some(del) = &d.delivery {
                        println!(
                            "delivery   {} ({} bytes, {})",
                            del.id, del.body_bytes, del.verification
                        );
                    }
                    if !d.history.is_empty() {
                        println!("\nhistory");
                        for h in &d.history {
                            println!(
                                "  {}  #{} {:<10} {}",
                                time(h.at),
                                h.attempt,
                                h.outcome,
                                h.detail
                            );
                        }
                    }
                    if !d.actions.is_empty() {
                        println!("\ntool calls");
                        for a in &d.actions {
                            let mut named = Vec::new();
                            if let Some(o) = &offers {
                                for id in offer_ids_in(&a.arguments) {
                                    if let Some(name) = o.name_of(&id).await {
                                        named.push(offer_names::label(&id, Some(&name)));
                                    }
                                }
                            }
                            let named = if named.is_empty() {
                                String::new()
                            } else {
                                format!("  [offer {}]", named.join(", "))
                            };
                            println!(
                                "  {}. {} {}{named}  -> {}{}  (request {})",
                                a.step + 1,
                                a.tool,
                                a.arguments,
                                a.state,
                                a.detail
                                    .as_deref()
                                    .map(|x| format!(": {x}"))
                                    .unwrap_or_default(),
                                a.request_id
                            );
                        }
                    }
                    if !d.audit.is_empty() {
                        println!("\naudit records");
                        for r in &d.audit {
                            println!(
                                "  seq {}  {} as {}  {}",
                                r["seq"],
                                r["tool"].as_str().unwrap_or(""),
                                r["persona"].as_str().unwrap_or("-"),
                                r["outcome"].as_str().unwrap_or("")
                            );
                        }
                    }
                    if body && let Some(b) = &d.body {
                        println!("\nbody\n{b}");
                    }
                }
            }
            EventsCommand::Purge { days, refused_days } => {
                let mut retention = events.config().retention;
                retention.events_days = days.unwrap_or(retention.events_days);
                retention.refused_days = refused_days.unwrap_or(retention.refused_days);
                let purged = events.purge(retention).await?;
                if global.json {
                    print_json(&serde_json::json!({
                        "events_days": retention.events_days,
                        "refused_days": retention.refused_days,
                        "purged": purged,
                    }))?;
                } else {
                    println!(
                        "deleted {} event(s) older than {} days with {} deliveries, and {} refused delivery attempt(s) older than {} days",
                        purged.events,
                        retention.events_days,
                        purged.deliveries,
                        purged.refused_deliveries,
                        retention.refused_days
                    );
                }
            }
            EventsCommand::Replay { ids, all_dead } => {
                let ids = if all_dead {
                    let f = EventFilter {
                        statuses: vec![EventStatus::Dead],
                        limit: Some(10_000),
                        ..Default::default()
                    };
                    events.list(&f).await?.into_iter().map(|e| e.id).collect()
                } else {
                    ids
                };
                let mut replayed = Vec::new();
                let actor = cli_actor();
                for id in &ids {
                    replayed.push(
                        events
                            .replay(id, &actor)
                            .await
                            .with_context(|| format!("event {id}"))?,
                    );
                }
                if global.json {
                    print_json(&replayed)?;
                } else {
                    println!(
                        "queued {} event(s) again; a running `memberspot serve` processes them",
                        replayed.len()
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}

pub async fn rules(cmd: RulesCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::Validate {
            file: explicit,
            offline,
        } => {
            let (file, _) = ConfigFile::load(global.config.as_deref())?;
            let path = match explicit {
                Some(p) => p,
                None => rules_path(global, &file)?.context(
                    "no rules file: give a path, --rules, or create <data dir>/rules.toml",
                )?,
            };
            match EventsConfig::load(&path) {
                Ok(mut cfg) => {
                    let schools = match check_schools(global, &file, &path, |known| {
                        cfg.resolve_connections(known)
                    })
                    .await?
                    {
                        Ok(schools) => schools,
                        Err(code) => return Ok(code),
                    };
                    let offers = match (&schools, offline) {
                        (Some(_), false) => Some(check_offers(global, &mut cfg).await?),
                        _ => None,
                    };
                    if let Some(problems) = offers.as_ref().filter(|p| !p.is_empty()) {
                        if global.json {
                            print_json(&serde_json::json!({
                                "ok": false, "file": path.display().to_string(),
                                "problems": problems.iter().map(|p| serde_json::json!({"line": p.line, "column": 1, "message": p.to_string()})).collect::<Vec<_>>(),
                            }))?;
                        } else {
                            for p in problems {
                                eprintln!("{}:{p}", path.display());
                            }
                            eprintln!("{} problem(s)", problems.len());
                        }
                        return Ok(ExitCode::from(1));
                    }
                    if global.json {
                        print_json(&serde_json::json!({
                            "ok": true, "file": path.display().to_string(),
                            "offers_checked": offers.is_some(),
                            "sources": cfg.sources.keys().collect::<Vec<_>>(),
                            "rules": cfg.rules.len(), "poller": cfg.poller.is_some(),
                            "schools": schools.as_deref().map(schools_json),
                            "warnings": cfg.warnings,
                        }))?;
                    } else {
                        println!(
                            "{}: ok — {} source(s), {} rule(s){}",
                            path.display(),
                            cfg.sources.len(),
                            cfg.rules.len(),
                            if cfg.poller.is_some() {
                                ", poller on"
                            } else {
                                ""
                            }
                        );
                        for s in cfg.sources.values() {
                            println!(
                                "  /hooks/{:<16} {:<12} acts on {} as persona `{}`",
                                s.name,
                                s.provider.as_str(),
                                school_of(&schools, &format!("source `{}`", s.name)),
                                s.persona
                            );
                        }
                        if let Some(p) = &cfg.poller {
                            println!(
                                "  poller acts on {} as persona `{}`",
                                school_of(&schools, "the poller"),
                                p.persona
                            );
                        }
                        if offers.is_none() && !cfg.rules.is_empty() {
                            println!(
                                "  offers not checked ({}); `serve` checks them at start",
                                if offline {
                                    "--offline"
                                } else {
                                    "no hub database yet"
                                }
                            );
                        }
                        for w in &cfg.warnings {
                            eprintln!("warning: {w}");
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if global.json {
                        print_json(&serde_json::json!({
                            "ok": false, "file": e.file,
                            "problems": e.problems.iter().map(|p| serde_json::json!({"line": p.line, "column": p.column, "message": p.message})).collect::<Vec<_>>(),
                        }))?;
                    } else {
                        eprintln!("{e}");
                        eprintln!("{} problem(s)", e.problems.len());
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        RulesCommand::DryRun(args) => {
            let (hub, sandbox, file) = open_hub(global).await?;
            let result = async {
                let (cfg, path) = load_rules(global, &file)?;
                if path.is_none() {
                    bail!("no rules file: give --rules FILE or create <data dir>/rules.toml");
                }
                let events = Events::offline(hub.clone(), cfg)?;
                let lines = events.dry_run(&filter(&args)?).await?;
                if global.json {
                    print_json(&lines)?;
                } else {
                    let mut t = table(&[
                        "received", "event", "source", "kind", "order", "rule", "would do",
                    ]);
                    for l in &lines {
                        let what = if l.actions.is_empty() {
                            l.note.clone()
                        } else {
                            format!("{}\n{}", l.note, l.actions.join("\n"))
                        };
                        t.add_row(vec![
                            time(l.received_at),
                            l.event_id.clone(),
                            l.source.clone(),
                            l.kind.clone(),
                            l.order_id.clone().unwrap_or_default(),
                            l.rule.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                            what,
                        ]);
                    }
                    print_table(&t);
                    println!("{} event(s); nothing was written", lines.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            .await;
            close_hub(&hub, sandbox).await?;
            result
        }
    }
}

/// The rule the event falls under, with its offer's name from the school the event was
/// received for (best effort: the id alone when the school cannot be read).
async fn rule_line(
    events: &Events,
    e: &StoredEvent,
    offers: Option<&OfferNames>,
) -> Option<String> {
    let cfg = events.config();
    let rule = cfg.rule_for_event(&e.source, &e.provider, e.product_id.as_deref())?;
    e.connection.as_ref()?;
    let offer = match offers {
        Some(o) => o.label(&rule.offer).await,
        None => rule.offer.clone(),
    };
    Some(format!(
        "{} (line {}): product `{}` grants {offer}",
        rule.index, rule.line, rule.product
    ))
}

/// The rules' offers checked against their schools (names become ids); the hub is
/// opened for the schools' keys and closed again.
async fn check_offers(
    global: &Global,
    cfg: &mut EventsConfig,
) -> anyhow::Result<Vec<memberspot_events::offers::OfferProblem>> {
    let (hub, sandbox, _) = open_hub(global).await?;
    let ctx = super::call_context(global.reason.clone());
    let checked = memberspot_events::offers::check_rule_offers(&hub, &ctx, cfg).await;
    close_hub(&hub, sandbox).await?;
    checked.context("checking the rules' offers (--offline skips it)")
}

fn filter(a: &EventFilterArgs) -> anyhow::Result<EventFilter> {
    let mut statuses = Vec::new();
    for s in &a.status {
        statuses.push(EventStatus::parse(s.trim()).with_context(|| {
            format!(
                "--status `{s}`: use {}",
                EventStatus::ALL.map(|v| v.as_str()).join(", ")
            )
        })?);
    }
    if a.unmatched {
        statuses.push(EventStatus::Unmatched);
    }
    Ok(EventFilter {
        statuses,
        source: a.source.clone(),
        kind: a.kind.clone(),
        email: a.email.clone(),
        order_id: a.order_id.clone(),
        since: a.since.as_deref().map(parse_since).transpose()?,
        limit: Some(a.limit),
        ..Default::default()
    })
}

fn render_refused(
    list: &[memberspot_events::service::RefusedDelivery],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(list);
    }
    if list.is_empty() {
        println!("no refused deliveries");
        return Ok(());
    }
    let mut t = table(&["received", "id", "source", "provider", "bytes", "reason"]);
    for d in list {
        t.add_row(vec![
            time(d.received_at),
            d.id.clone(),
            d.source.clone(),
            d.provider.clone(),
            d.bytes.to_string(),
            d.reason.clone(),
        ]);
    }
    print_table(&t);
    Ok(())
}

fn render(list: &[StoredEvent], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(list);
    }
    let mut t = table(&[
        "received", "id", "source", "kind", "order", "email", "status", "tries", "note",
    ]);
    for e in list {
        t.add_row(vec![
            time(e.received_at),
            e.id.clone(),
            e.source.clone(),
            e.kind.clone(),
            e.order_id.clone().unwrap_or_default(),
            e.email.clone().unwrap_or_default(),
            format!("{}{}", e.status, if e.test { " (test)" } else { "" }),
            e.attempts.to_string(),
            e.refusal
                .clone()
                .or_else(|| e.last_error.clone())
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    print_table(&t);
    Ok(())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
