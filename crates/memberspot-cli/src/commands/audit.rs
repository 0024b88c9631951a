use std::process::ExitCode;
use std::time::Duration;

use memberspot_hub::admin::{AuditExportFormat, audit_export_pages};
use memberspot_hub::offer_names::{self, OfferNamesByConnection, offer_ids_in};
use memberspot_hub::store::{AuditFilter, AuditRecord};
use serde_json::Value;

use crate::cli::{AuditCommand, AuditFilterArgs, ExportFormat, Global};
use crate::connection::{cli_actor, close_hub, open_hub};
use crate::output::{Usage, confirm, print_json, print_table, table};

/// `--since`: RFC 3339, a date, or a duration back from now (`30m`, `2h`, `7d`, `1h 30m`).
pub(crate) fn parse_since(v: &str) -> anyhow::Result<i64> {
    since_at(v, chrono::Utc::now().timestamp_millis())
}

fn since_at(v: &str, now_ms: i64) -> anyhow::Result<i64> {
    let v = v.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or_default());
    }
    let ago = humantime::parse_duration(v).map_err(|e| {
        anyhow::anyhow!(
            "--since `{v}`: use an RFC 3339 time, a date or a duration like 2h or 1h30m ({e})"
        )
    })?;
    i64::try_from(ago.as_millis())
        .ok()
        .and_then(|ago| now_ms.checked_sub(ago))
        .filter(|t| *t >= 0)
        .ok_or_else(|| anyhow::anyhow!("--since `{v}`: reaches back before 1970"))
}

fn filter(a: &AuditFilterArgs) -> anyhow::Result<AuditFilter> {
    Ok(AuditFilter {
        persona: a.persona.clone(),
        request_id: a.request_id.clone(),
        tool: a.tool.clone(),
        outcome: a.outcome.clone(),
        surface: a.surface.clone(),
        since_ms: a.since.as_deref().map(parse_since).transpose()?,
        until_ms: None,
        after_seq: None,
        limit: Some(a.limit.unwrap_or(100)),
        before_seq: None,
        newest_first: false,
    })
}

/// Records as a table, or as JSON (each record as stored, with `offer_names`, id → name,
/// when its arguments name offers the school knows). Offer names come from one read of
/// each school's offers for the whole command.
async fn render(
    records: &[AuditRecord],
    json: bool,
    offers: &OfferNamesByConnection,
) -> anyhow::Result<()> {
    let names = offers.in_records(records).await;
    if json {
        let mut list = Vec::with_capacity(records.len());
        for (r, names) in records.iter().zip(names) {
            let mut v = serde_json::to_value(r)?;
            if let (Value::Object(map), false) = (&mut v, names.is_empty()) {
                map.insert("offer_names".into(), serde_json::to_value(names)?);
            }
            list.push(v);
        }
        return print_json(&list);
    }
    let mut t = table(&[
        "seq",
        "time",
        "surface",
        "persona",
        "tool",
        "offer",
        "outcome",
        "ms",
        "prompt / error",
    ]);
    for (r, names) in records.iter().zip(names) {
        let offer = offer_ids_in(&r.arguments)
            .into_iter()
            .map(|id| offer_names::label(&id, names.get(&id).map(String::as_str)))
            .collect::<Vec<_>>()
            .join("\n");
        let time = chrono::DateTime::from_timestamp_millis(r.at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let note = r
            .error
            .clone()
            .or_else(|| r.prompt.clone())
            .unwrap_or_default();
        let note: String = note.chars().take(80).collect();
        t.add_row(vec![
            r.seq.to_string(),
            time,
            r.surface.to_string(),
            r.persona.clone().unwrap_or_else(|| "(operator)".into()),
            r.tool.clone(),
            offer,
            r.outcome.to_string(),
            r.latency_ms.to_string(),
            note,
        ]);
    }
    print_table(&t);
    Ok(())
}

pub async fn run(cmd: AuditCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, file) = open_hub(global).await?;
    let json = global.json;
    let offers = OfferNamesByConnection::new(&hub, super::call_context(global.reason.clone()));
    let result = async {
        match cmd {
            AuditCommand::Tail { lines, follow } => {
                let mut latest = hub
                    .audit(&AuditFilter { limit: Some(lines), newest_first: true, ..AuditFilter::default() })
                    .await?;
                latest.reverse();
                render(&latest, json, &offers).await?;
                // Sequence numbers start at 1, so 0 means "from the beginning".
                let mut after = latest.last().map_or(0, |r| r.seq);
                if follow {
                    loop {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        let filter = AuditFilter { after_seq: Some(after), limit: Some(1000), ..AuditFilter::default() };
                        let new = hub.audit(&filter).await?;
                        if let Some(last) = new.last() {
                            after = last.seq;
                            render(&new, json, &offers).await?;
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Search(args) => {
                // The newest matches, shown oldest first like `tail`.
                let mut f = filter(&args)?;
                f.newest_first = true;
                let mut found = hub.audit(&f).await?;
                found.reverse();
                render(&found, json, &offers).await?;
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Export { filter: args, format } => {
                let format = match format {
                    ExportFormat::Jsonl => AuditExportFormat::Jsonl,
                    ExportFormat::Csv => AuditExportFormat::Csv,
                };
                let pages = audit_export_pages(
                    hub.clone(),
                    filter(&args)?,
                    args.limit.map(u64::from),
                    format,
                )
                .await?;
                let mut pages = std::pin::pin!(pages);
                let mut out = std::io::stdout().lock();
                while let Some(text) = futures::TryStreamExt::try_next(&mut pages).await? {
                    std::io::Write::write_all(&mut out, text.as_bytes())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify { anchor } => {
                let v = hub.verify_audit(anchor.as_ref()).await?;
                if json {
                    print_json(&serde_json::json!({
                        "records": v.records, "ok": v.ok, "first_bad_seq": v.first_bad_seq, "problem": v.problem,
                        "head": v.head, "anchor": anchor.as_ref().map(ToString::to_string),
                    }))?;
                } else if v.ok {
                    let against = anchor.map(|a| format!("; record {} has the anchored hash", a.seq)).unwrap_or_default();
                    println!("ok: {} audit records, hash chain intact{against}; head {}", v.records, v.head);
                } else {
                    println!("TAMPERED: {}", v.problem.clone().unwrap_or_default());
                }
                Ok(if v.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            AuditCommand::Anchor => {
                let head = hub.audit_head().await?;
                if json {
                    print_json(&serde_json::json!({ "seq": head.seq, "hash": head.hash, "anchor": head.to_string() }))?;
                } else {
                    println!("{head}");
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Purge { days, yes } => {
                let Some(days) = days.or(file.retention_days()?) else {
                    return Err(Usage(
                        "give --days, or set audit_retention_days in the config file".into(),
                    )
                    .into());
                };
                confirm(&format!("Delete audit records older than {days} days?"), yes)?;
                let n = hub.acting_as(cli_actor()).purge_audit_older_than(days).await?;
                println!("deleted {n} audit record(s) older than {days} days; the remaining chain still verifies");
                Ok(ExitCode::SUCCESS)
            }
        }
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn since_takes_times_dates_and_durations() {
        let at = |v: &str| since_at(v, NOW).map_err(|e| e.to_string());
        assert_eq!(at("2026-01-02T03:04:05Z"), Ok(1_767_323_045_000));
        assert_eq!(at("2026-01-02"), Ok(1_767_312_000_000));
        assert_eq!(at("30m"), Ok(NOW - 1_800_000));
        assert_eq!(at(" 2h "), Ok(NOW - 7_200_000));
        assert_eq!(at("7d"), Ok(NOW - 7 * 86_400_000));
        assert_eq!(at("45s"), Ok(NOW - 45_000));
        // Combined units, as people write them.
        assert_eq!(at("1h30m"), Ok(NOW - 5_400_000));
        assert_eq!(at("1h 30m"), Ok(NOW - 5_400_000));
        assert_eq!(at("2days"), Ok(NOW - 2 * 86_400_000));
    }

    #[test]
    fn since_refuses_what_is_not_a_time_ago() {
        for bad in ["yesterday", "", "2", "-2h", "2x", "h"] {
            let err = since_at(bad, NOW).expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!("--since `{}`:", bad.trim())),
                "{err}"
            );
        }
        // Far too long ago: an error, not an overflow.
        for huge in ["99999999999999999d", "9999999999y"] {
            let err = since_at(huge, NOW).expect_err(huge).to_string();
            assert!(err.contains(huge), "{err}");
        }
    }
}
