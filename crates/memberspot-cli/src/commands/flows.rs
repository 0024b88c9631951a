//! `memberspot digest …` and `memberspot flows …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use memberspot_agent::config::ModelsConfig;
use memberspot_flows::config::{DIGEST_ITEM, Target, Trigger};
use memberspot_flows::personas::check_scopes;
use memberspot_flows::runner::RunError;
use memberspot_flows::{Flows, FlowsConfig};
use memberspot_hub::Hub;
use memberspot_hub::schools::Schools;
use memberspot_hub::store::{Persona, RunStatus};

use crate::cli::{DigestArgs, DigestTarget, FlowsCommand, Global};
use crate::config::ConfigFile;
use crate::connection::{
    close_hub, data_dir, open_hub, report_problems, school_of, schools_json, unresolved_json,
    visible_store,
};
use crate::output::{print_json, print_table, table};

/// An explicit path must exist; the default one is used when present.
fn pick(
    explicit: Option<PathBuf>,
    default: PathBuf,
    what: &str,
) -> anyhow::Result<Option<PathBuf>> {
    match explicit {
        Some(p) if !p.exists() => bail!("the {what} file {} does not exist", p.display()),
        Some(p) => Ok(Some(p)),
        None => Ok(default.exists().then_some(default)),
    }
}

/// The flows file: `--flows`, `MEMBERSPOT_FLOWS`, `flows_file`, else `<data dir>/flows.toml`.
pub fn load_flows(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<(FlowsConfig, Option<PathBuf>)> {
    let explicit = global.flows.clone().or_else(|| file.flows_file.clone());
    match pick(explicit, data_dir(global, file).join("flows.toml"), "flows")? {
        None => Ok((FlowsConfig::default(), None)),
        Some(p) => Ok((
            FlowsConfig::load(&p).map_err(|e| anyhow::anyhow!("{e}"))?,
            Some(p),
        )),
    }
}

/// The models file: `--models`, `MEMBERSPOT_MODELS`, `models_file`, else `<data dir>/models.toml`.
pub fn load_models(global: &Global, file: &ConfigFile) -> anyhow::Result<ModelsConfig> {
    let explicit = global.models.clone().or_else(|| file.models_file.clone());
    match pick(
        explicit,
        ModelsConfig::default_path(&data_dir(global, file)),
        "models",
    )? {
        None => Ok(ModelsConfig::default()),
        Some(p) => ModelsConfig::load(&p).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// The flows subsystem on `hub`: each item's school decided, its personas in place.
pub async fn open_flows(
    hub: &Hub,
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<(Flows, Option<PathBuf>)> {
    let (cfg, path) = load_flows(global, file)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let models = load_models(global, file)?;
    let flows = Flows::start(hub.clone(), cfg, models).await?;
    Ok((flows, path))
}

pub async fn digest(args: DigestArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, file) = open_hub(global).await?;
    let result = async {
        let (flows, _) = open_flows(&hub, global, &file).await?;
        let mut targets: Vec<Target> = args
            .to
            .iter()
            .map(|t| match t {
                DigestTarget::Slack => Target::Slack,
                DigestTarget::Email => Target::Email,
                DigestTarget::Stdout => Target::Stdout,
            })
            .collect();
        let configured = flows.config().delivery.slack.is_some() || flows.config().delivery.email.is_some();
        if targets.is_empty() && (!configured || args.dry_run) {
            // Nothing to send to (or a dry run): show it.
            targets.push(Target::Stdout);
        }
        let quiet_stdout = global.json;
        let targets: Vec<Target> = if quiet_stdout {
            targets.into_iter().filter(|t| *t != Target::Stdout).collect()
        } else {
            targets
        };
        let run = flows
            .run_digest(args.date, &targets, args.dry_run, None)
            .await?
            .context("the digest was not produced")?;
        if global.json {
            print_json(&serde_json::json!({
                "run_id": run.run_id, "subject": run.subject, "digest": run.digest,
                "deliveries": run.deliveries.iter().map(|(t, r)| serde_json::json!({
                    "target": t, "ok": r.is_ok(), "detail": r.as_ref().ok(), "error": r.as_ref().err(),
                })).collect::<Vec<_>>(),
            }))?;
        }
        let mut failed = false;
        for (t, r) in &run.deliveries {
            match r {
                Ok(d) if *t != Target::Stdout => eprintln!("sent to {t:?}: {d}"),
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    eprintln!("error: delivery to {t:?} failed: {e}");
                }
            }
        }
        if let Some(note) = &run.digest.summary_note {
            eprintln!("note: {note}");
        }
        Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}

pub async fn run(cmd: FlowsCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let FlowsCommand::Validate { file: explicit } = &cmd {
        let (file, _) = ConfigFile::load(global.config.as_deref())?;
        let path = match explicit.clone() {
            Some(p) => p,
            None => global
                .flows
                .clone()
                .or_else(|| file.flows_file.clone())
                .unwrap_or_else(|| data_dir(global, &file).join("flows.toml")),
        };
        return match FlowsConfig::load(&path) {
            Ok(mut cfg) => {
                // With the hub's database: each item's school and its persona's scopes,
                // every problem of both reported at once.
                let hub_data = match hub_data(global, &file).await {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!(
                            "warning: the schools and persona scopes were not checked: {e:#}"
                        );
                        None
                    }
                };
                let mut problems = Vec::new();
                let schools = match &hub_data {
                    Some((known, _)) => match cfg.resolve_connections(known) {
                        Ok(schools) => Some(schools),
                        Err(unresolved) => {
                            problems.extend(unresolved_json(&unresolved));
                            None
                        }
                    },
                    None => None,
                };
                let scopes_checked = hub_data.is_some();
                if let Some((_, personas)) = &hub_data {
                    for p in check_scopes(&cfg, personas) {
                        problems.push(serde_json::to_value(p)?);
                    }
                }
                if !problems.is_empty() {
                    return report_problems(global, &path, &problems);
                }
                if global.json {
                    print_json(&serde_json::json!({
                        "ok": true, "file": path.display().to_string(),
                        "digest": cfg.digest.as_ref().map(|d| d.enabled), "flows": cfg.flows.iter().map(|f| &f.name).collect::<Vec<_>>(),
                        "schools": schools.as_deref().map(schools_json),
                        "scopes_checked": scopes_checked,
                        "warnings": cfg.warnings,
                    }))?;
                } else {
                    println!(
                        "{}: ok — {} flow(s); daily summary {}",
                        path.display(),
                        cfg.flows.len(),
                        match &cfg.digest {
                            Some(d) if d.enabled =>
                                format!("on ({} {})", d.schedule.expr(), d.timezone),
                            _ => "off".into(),
                        }
                    );
                    if cfg.digest.as_ref().is_some_and(|d| d.enabled) {
                        println!(
                            "  {DIGEST_ITEM} acts on {}",
                            school_of(&schools, DIGEST_ITEM)
                        );
                    }
                    let items = cfg
                        .flows
                        .iter()
                        .map(|f| (format!("flow `{}`", f.name), &f.persona))
                        .chain(
                            cfg.syncs
                                .iter()
                                .map(|s| (format!("sync `{}`", s.name), &s.persona)),
                        )
                        .chain(
                            cfg.exports
                                .iter()
                                .map(|e| (format!("export `{}`", e.name), &e.persona)),
                        );
                    for (item, persona) in items {
                        println!(
                            "  {item} acts on {} as persona `{persona}`",
                            school_of(&schools, &item)
                        );
                    }
                    if !scopes_checked {
                        println!(
                            "  persona scopes not checked (no hub database yet); `serve` creates \
                             a missing flow persona with read, a sync's with the tools a sync uses"
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
                    print_json(&serde_json::json!({"ok": false, "file": e.file,
                        "problems": e.problems.iter().map(|p| serde_json::json!({"line": p.line, "column": p.column, "message": p.message})).collect::<Vec<_>>()}))?;
                } else {
                    eprintln!("{e}");
                    eprintln!("{} problem(s)", e.problems.len());
                }
                Ok(ExitCode::from(1))
            }
        };
    }
    let (hub, sandbox, file) = open_hub(global).await?;
    let result = async {
        let (flows, _) = open_flows(&hub, global, &file).await?;
        match cmd {
            // Handled before the hub is opened.
            FlowsCommand::Validate { .. } => {}
            FlowsCommand::List => {
                let now = chrono::Utc::now();
                let mut rows = Vec::new();
                if let Some(d) = &flows.config().digest {
                    rows.push(("digest".to_owned(), format!("cron {} {}", d.schedule.expr(), d.timezone),
                        if d.enabled { d.schedule.next_after(now).map(|t| t.to_rfc3339()).unwrap_or_default() } else { "off".into() }, "digest".to_owned()));
                }
                for f in &flows.config().flows {
                    let (trigger, next) = match &f.trigger {
                        Trigger::Cron { schedule, .. } => (format!("cron {} {}", schedule.expr(), schedule.timezone().name()),
                            schedule.next_after(now).map(|t| t.to_rfc3339()).unwrap_or_default()),
                        Trigger::Event { kind, source } => (format!("event {kind}{}", source.as_deref().map(|s| format!(" from {s}")).unwrap_or_default()), "on event".into()),
                        Trigger::Manual => ("manual".into(), "-".into()),
                    };
                    rows.push((f.name.clone(), trigger, next, f.persona.clone()));
                }
                if global.json {
                    // Times in JSON are epoch milliseconds, as everywhere in the hub's output.
                    let next_run = |name: &str| -> Option<i64> {
                        let schedule = if name == "digest" {
                            flows.config().digest.as_ref().filter(|d| d.enabled).map(|d| &d.schedule)
                        } else {
                            flows.config().flows.iter().find(|f| f.name == name).and_then(|f| match &f.trigger {
                                Trigger::Cron { schedule, .. } => Some(schedule.as_ref()),
                                _ => None,
                            })
                        };
                        schedule.and_then(|s| s.next_after(now)).map(|t| t.timestamp_millis())
                    };
                    print_json(&rows.iter().map(|(n, t, _, p)| serde_json::json!({"name": n, "trigger": t, "next_run": next_run(n), "persona": p})).collect::<Vec<_>>())?;
                } else {
                    let mut t = table(&["flow", "trigger", "next run", "persona"]);
                    for (n, tr, x, p) in rows {
                        t.add_row(vec![n, tr, x, p]);
                    }
                    print_table(&t);
                }
            }
            FlowsCommand::Rerun { run, dry_run } => {
                let report = flows.rerun(&run, dry_run).await?;
                print_report(&report, global.json)?;
                if report.status != RunStatus::Ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            FlowsCommand::Run { name, dry_run, input } => {
                let input: serde_json::Value = match input {
                    Some(t) => serde_json::from_str(&t).context("--input must be JSON")?,
                    None => serde_json::json!({}),
                };
                let report = flows.run_flow(&name, "manual", input, None, dry_run).await?;
                print_report(&report, global.json)?;
                if report.status != RunStatus::Ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            FlowsCommand::History { name, limit } => {
                let runs = hub.flows_store().list_runs(name.as_deref(), limit).await?;
                if global.json {
                    print_json(&runs)?;
                } else {
                    let mut t = table(&["started", "run", "flow", "trigger", "status", "error"]);
                    for r in runs {
                        t.add_row(vec![
                            chrono::DateTime::from_timestamp_millis(r.started_at).map(|x| x.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                            r.id, r.flow, format!("{}{}", r.trigger, if r.dry_run { " (dry)" } else { "" }), r.status.to_string(),
                            r.error.unwrap_or_default().chars().take(60).collect(),
                        ]);
                    }
                    print_table(&t);
                }
            }
            FlowsCommand::Show { run } => {
                let r = hub.flows_store().get_run(&run).await?.ok_or_else(|| RunError::UnknownRun(run.clone()))?;
                let steps = hub.flows_store().run_steps(&run).await?;
                if global.json {
                    print_json(&serde_json::json!({"run": r, "steps": steps}))?;
                } else {
                    println!("run      {}\nflow     {}\ntrigger  {}\nstatus   {}{}", r.id, r.flow, r.trigger, r.status,
                        r.error.map(|e| format!("\nerror    {e}")).unwrap_or_default());
                    for s in steps {
                        println!("\n{} ({}, {} ms, {} attempt(s))", s.name, s.kind, s.duration_ms, s.attempts);
                        if let Some(i) = s.input { println!("  input   {i}"); }
                        if let Some(o) = s.output { println!("  output  {}", o.to_string().chars().take(400).collect::<String>()); }
                        if let Some(e) = s.error { println!("  error   {e}"); }
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}

/// The hub's schools and personas, when it has a database (reading never creates one).
async fn hub_data(
    global: &Global,
    file: &ConfigFile,
) -> anyhow::Result<Option<(Schools, Vec<Persona>)>> {
    let Some(store) = visible_store(global, file).await? else {
        return Ok(None);
    };
    let read = async {
        let known = Schools::new(&store.list_connections().await?);
        anyhow::Ok((known, store.list_personas().await?))
    }
    .await;
    store.close().await;
    read.map(Some)
}

fn print_report(report: &memberspot_flows::runner::RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    for s in &report.steps {
        let what = match (&s.error, &s.output) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, Some(o)) => o.to_string().chars().take(100).collect(),
            _ => String::new(),
        };
        println!(
            "{:<24} {:<10} {:>6} ms  {what}",
            s.name, s.kind, s.duration_ms
        );
    }
    println!(
        "run {} {}{}",
        report.run_id,
        report.status,
        if report.dry_run {
            " (dry run: nothing was written)"
        } else {
            ""
        }
    );
    Ok(())
}

pub async fn sync(cmd: crate::cli::SyncCommand, global: &Global) -> anyhow::Result<ExitCode> {
    use crate::cli::SyncCommand;
    let (hub, sandbox, file) = open_hub(global).await?;
    let result = async {
        let (flows, path) = open_flows(&hub, global, &file).await?;
        match cmd {
            SyncCommand::List => {
                let syncs = &flows.config().syncs;
                if global.json {
                    print_json(syncs)?;
                } else if syncs.is_empty() {
                    println!(
                        "no syncs in {}",
                        path.map_or_else(
                            || "the flows file (none found)".to_owned(),
                            |p| p.display().to_string()
                        )
                    );
                } else {
                    let mut t = table(&["sync", "source", "persona"]);
                    for s in syncs {
                        let source = s
                            .source
                            .csv
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .or_else(|| s.source.url.clone())
                            .unwrap_or_default();
                        t.add_row(vec![s.name.clone(), source, s.persona.clone()]);
                    }
                    print_table(&t);
                }
                Ok(ExitCode::SUCCESS)
            }
            SyncCommand::Export { name } => {
                let r = flows.run_export(&name).await?;
                if global.json {
                    print_json(&r)?;
                } else {
                    println!(
                        "{} export: {} member(s) to {} ({} API calls)",
                        r.mode, r.members, r.target, r.api_calls
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            SyncCommand::Run {
                name,
                dry_run,
                report,
            } => {
                let bar = crate::output::progress(None, &format!("sync {name}"));
                let tick = {
                    let bar = bar.clone();
                    move |done: usize, total: usize| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    }
                };
                let r = flows.run_sync(&name, dry_run, &tick).await;
                bar.finish_and_clear();
                let r = r?;
                if let Some(out) = report {
                    let mut w = csv::Writer::from_path(&out)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    w.write_record(["line", "email", "offer", "outcome", "changes", "reason"])?;
                    for row in &r.rows {
                        w.write_record([
                            row.line.to_string(),
                            row.email.clone().unwrap_or_default(),
                            row.offer.clone().unwrap_or_default(),
                            format!("{:?}", row.outcome).to_lowercase(),
                            row.changes.join(" | "),
                            row.reason.clone().unwrap_or_default(),
                        ])?;
                    }
                    w.flush()?;
                }
                if global.json {
                    print_json(&r)?;
                } else {
                    for row in r.rows.iter().filter(|x| x.reason.is_some()) {
                        println!(
                            "line {:>5}: {}",
                            row.line,
                            row.reason.as_deref().unwrap_or_default()
                        );
                    }
                    println!(
                        "{}{} created, {} updated, {} unchanged, {} failed ({} API calls)",
                        if dry_run {
                            "dry run (nothing written): would have "
                        } else {
                            ""
                        },
                        r.created,
                        r.updated,
                        r.unchanged,
                        r.failed,
                        r.api_calls
                    );
                }
                Ok(if r.failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}
