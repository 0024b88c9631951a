use std::process::ExitCode;

use anyhow::Context;
use memberspot_api::doctor::{self, Check, Verdict};

use super::Ctx;
use crate::cli::DoctorArgs;
use crate::output::print_json;

pub async fn run(ctx: &Ctx, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.session.client().await?;
    if !ctx.json {
        eprintln!(
            "checking {} with read-only calls; nothing is changed",
            client.base_url()
        );
    }
    let report = doctor::run(&client).await;
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if ctx.json {
        print_json(&report)?;
    } else {
        for check in &report.checks {
            render(check);
        }
        println!();
        if report.all_read() {
            println!("every answer was read");
        } else {
            println!("some answers could not be read or the calls failed (see above)");
        }
        match &args.report {
            Some(path) => println!(
                "report written to {} (field names, JSON types and lengths only; no value from the school)",
                path.display()
            ),
            None if report.checks.iter().any(|c| c.verdict != Verdict::Ok) => {
                println!(
                    "to report it: memberspot doctor --report shapes.json, and attach the file"
                )
            }
            None => {}
        }
    }
    Ok(if report.all_read() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(c: &Check) {
    let verdict = match c.verdict {
        Verdict::Ok => "ok",
        Verdict::Differs => "differs",
        Verdict::Undecodable => "unreadable",
        Verdict::Failed => "failed",
        Verdict::Skipped => "skipped",
    };
    let status = c.status.map(|s| format!(" ({s})")).unwrap_or_default();
    match &c.reason {
        Some(reason) => println!("{verdict:<11} {}{status}: {reason}", c.request),
        None => println!("{verdict:<11} {}{status}", c.request),
    }
    let Some(f) = &c.findings else {
        return;
    };
    let line = |label: &str, items: Vec<String>| {
        if !items.is_empty() {
            println!("{:12}{label}: {}", "", items.join(", "));
        }
    };
    line(
        "fields this version does not read",
        f.unknown_fields.iter().cloned().collect(),
    );
    line(
        "other types",
        f.type_mismatches
            .iter()
            .map(|m| format!("{} is {} (expected {})", m.path, m.found, m.expected))
            .collect(),
    );
    line("missing", f.missing_fields.iter().cloned().collect());
    line(
        "read under other names",
        f.other_names.iter().cloned().collect(),
    );
}
