//! `users grant`: one member, or every row of a CSV file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use memberspot_tools::ToolError;
use memberspot_tools::bulk::{self, RowError, RowStatus, Summary};
use serde_json::json;

use super::Ctx;
use super::users::render_users;
use crate::cli::GrantArgs;
use crate::output::{print_json, print_table, progress, table};

pub async fn run(ctx: &Ctx, args: GrantArgs) -> anyhow::Result<ExitCode> {
    if let Some(csv) = &args.csv {
        return from_csv(ctx, csv, &args).await;
    }
    let email = args.email.clone().unwrap_or_default();
    let offer = args
        .offer
        .clone()
        .ok_or_else(|| ToolError::invalid("--offer", "give the offer id or name to grant"))?;
    let offer = ctx.offer_id("--offer", Some(offer)).await?;
    let mut tool_args = json!({ "email": email, "offer_id": offer });
    for (k, v) in [
        ("first_name", &args.first),
        ("last_name", &args.last),
        ("order_id", &args.order),
    ] {
        if let Some(v) = v {
            tool_args[k] = json!(v);
        }
    }
    let out = ctx.call("grant_user_offer_by_email", tool_args).await?;
    match out.get("user").filter(|u| !u.is_null()) {
        Some(user) if !ctx.json => render_users(ctx, std::slice::from_ref(user)).await?,
        _ => print_json(&out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Every row's offer checked against the school (dry runs included) and names turned into
/// ids: a row naming an unknown or ambiguous offer is refused with its line, not sent. The
/// school's offers are read once for the file (and once more for an offer not found).
async fn offers_by_id(ctx: &Ctx, parsed: &mut bulk::ParsedCsv) -> anyhow::Result<()> {
    let rows = std::mem::take(&mut parsed.rows);
    for mut row in rows {
        match ctx
            .offers
            .find(&row.offer_id)
            .await
            .map_err(super::cli_error)?
        {
            Ok(id) => {
                row.offer_id = id;
                parsed.rows.push(row);
            }
            Err(e) => parsed.rejected.push(bulk::RowOutcome {
                line: row.line,
                email: row.email.clone(),
                offer_id: row.offer_id.clone(),
                status: RowStatus::Invalid {
                    field: "offer_id".into(),
                    message: e.to_string(),
                },
                row: Some(row),
            }),
        }
    }
    Ok(())
}

fn default_failed_path(csv: &Path) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "grants".into());
    csv.with_file_name(format!("{stem}.failed.csv"))
}

async fn from_csv(ctx: &Ctx, path: &Path, args: &GrantArgs) -> anyhow::Result<ExitCode> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut parsed = bulk::read_grant_csv(file, args.offer.as_deref())
        .with_context(|| format!("{}", path.display()))?;
    offers_by_id(ctx, &mut parsed).await?;
    let to_send = parsed.rows.len();
    let parsed_source = parsed.source;
    let bar = progress(
        Some(to_send as u64),
        if args.dry_run { "checking" } else { "granting" },
    );
    let mut outcomes = bulk::run_grants(
        parsed.rows,
        usize::from(args.concurrency),
        args.dry_run,
        |row| async move {
            ctx.call("grant_user_offer_by_email", row.to_args())
                .await
                .map_err(|e| match e.downcast::<ToolError>() {
                    Ok(t) => RowError::from(t),
                    Err(other) => RowError {
                        code: "error".into(),
                        message: format!("{other:#}"),
                    },
                })
        },
        |outcome| {
            bar.inc(1);
            if let RowStatus::Failed { message, .. } = &outcome.status {
                bar.println(format!(
                    "line {}: {} — {message}",
                    outcome.line, outcome.email
                ));
            }
        },
    )
    .await;
    bar.finish_and_clear();
    outcomes.extend(parsed.rejected);
    outcomes.sort_by_key(|o| o.line);
    let summary = Summary::of(&outcomes);

    let failed_path = args
        .failed_out
        .clone()
        .unwrap_or_else(|| default_failed_path(path));
    let retry_rows = outcomes.iter().filter(|o| !o.is_ok()).count();
    if retry_rows > 0 {
        let out = std::fs::File::create(&failed_path)
            .with_context(|| format!("cannot write the retry file {}", failed_path.display()))?;
        bulk::write_retry_csv(out, &parsed_source, &outcomes)
            .with_context(|| format!("writing {}", failed_path.display()))?;
    }

    if ctx.json {
        print_json(&json!({
            "summary": summary,
            "rows": outcomes,
            "retry_file": (retry_rows > 0).then(|| failed_path.display().to_string()),
        }))?;
    } else {
        // The rows were checked against these offers: no further read for the names.
        let offers = ctx.offers.index().await.unwrap_or_default();
        let mut t = table(&["line", "email", "offer", "result"]);
        for o in &outcomes {
            let result = match &o.status {
                RowStatus::Granted { uid } => format!(
                    "granted{}",
                    uid.as_ref().map(|u| format!(" ({u})")).unwrap_or_default()
                ),
                RowStatus::WouldGrant => "would grant".into(),
                RowStatus::Failed { message, .. } => format!("FAILED: {message}"),
                RowStatus::Invalid { field, message } => format!("INVALID {field}: {message}"),
                RowStatus::Duplicate { first_line } => {
                    format!("skipped: duplicate of line {first_line}")
                }
            };
            t.add_row(vec![
                o.line.to_string(),
                o.email.clone(),
                offers.label(&o.offer_id),
                result,
            ]);
        }
        print_table(&t);
        println!(
            "{} rows: {} granted, {} would grant, {} failed, {} invalid, {} duplicate",
            summary.rows,
            summary.granted,
            summary.would_grant,
            summary.failed,
            summary.invalid,
            summary.duplicate
        );
        if retry_rows > 0 {
            println!(
                "{retry_rows} row(s) not granted were written to {}; fix them and run again with --csv {}",
                failed_path.display(),
                failed_path.display()
            );
        }
    }
    Ok(if summary.failed + summary.invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
