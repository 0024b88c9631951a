//! The audit log as files for people and other tools: JSON lines, and CSV for
//! spreadsheets.
//!
//! Prompts, end users, arguments and errors come from callers, and a spreadsheet runs a
//! cell that starts like a formula (`=HYPERLINK(…)`, `@SUM(…)`, …). So every CSV cell that
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return (OWASP's list for CSV
//! injection) gets a leading `'`, which spreadsheets show as text. JSON lines are exact.

use std::borrow::Cow;

use memberspot_store::{AuditRecord, canonical_json};

use crate::HubError;

/// The CSV columns: the fields of a JSON line, in the same order.
const CSV_HEADER: [&str; 19] = [
    "seq",
    "id",
    "at",
    "request_id",
    "surface",
    "connection",
    "persona",
    "end_user",
    "prompt",
    "tool",
    "arguments",
    "outcome",
    "response",
    "error",
    "upstream_status",
    "latency_ms",
    "prev_hash",
    "hash",
    "oauth_client",
];

/// Audit records as CSV: a header, then one row per record with the fields of
/// [`audit_jsonl`] (`at` in epoch milliseconds, as in the JSON lines and every time the hub
/// records; JSON values as compact text, absent values empty), rows ending in `\n`, quoted as RFC 4180 says (a cell with a line break
/// stays one quoted cell), and neutralised against formula injection.
pub fn audit_csv(records: &[AuditRecord]) -> Result<String, HubError> {
    audit_csv_rows(records, true)
}

/// As [`audit_csv`], the header only when `header` is set (the first page of an export
/// written page by page).
pub fn audit_csv_rows(records: &[AuditRecord], header: bool) -> Result<String, HubError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let failed = |e: csv::Error| HubError::Unavailable(format!("writing the CSV export: {e}"));
    if header {
        w.write_record(CSV_HEADER).map_err(failed)?;
    }
    for r in records {
        let at = r.at.to_string();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let row: [String; 19] = [
            r.seq.to_string(),
            r.id.clone(),
            at,
            r.request_id.clone(),
            r.surface.to_string(),
            opt(&r.connection),
            opt(&r.persona),
            opt(&r.end_user),
            opt(&r.prompt),
            r.tool.clone(),
            canonical_json(&r.arguments),
            r.outcome.to_string(),
            r.response.as_ref().map(canonical_json).unwrap_or_default(),
            opt(&r.error),
            r.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
            r.latency_ms.to_string(),
            r.prev_hash.clone(),
            r.hash.clone(),
            opt(&r.oauth_client),
        ];
        w.write_record(row.iter().map(|c| neutralise(c).into_owned()))
            .map_err(failed)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| HubError::Unavailable(format!("writing the CSV export: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| HubError::Unavailable(format!("writing the CSV export: {e}")))
}

/// A cell a spreadsheet would evaluate, made text by a leading `'`.
fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Audit records as JSON lines, exactly as stored.
pub fn audit_jsonl(records: &[AuditRecord]) -> Result<String, HubError> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).map_err(|e| HubError::Unavailable(e.to_string()))?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_become_text_and_others_stay() {
        for (cell, out) in [
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "'=HYPERLINK(\"http://evil\",\"x\")",
            ),
            ("@SUM(1)", "'@SUM(1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("\tx", "'\tx"),
            ("\r=1", "'\r=1"),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise(cell), out, "{cell:?}");
        }
    }
}
