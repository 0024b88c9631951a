//! The audit log as files for people and other tools: JSON lines, and CSV for
//! spreadsheets.
//!
//! Prompts, end users, arguments and errors come from callers, and a spreadsheet runs a
//! cell that starts like a formula (`=HYPERLINK(…)`, `@SUM(…)`, …). So every CSV cell that
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return (OWASP's list for CSV
//! injection) gets a leading `'`, which spreadsheets show as text. JSON lines are exact.

use std::borrow::Cow;

use memberspot_store::{AuditFilter, AuditRecord, canonical_json};

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

/// The two export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditExportFormat {
    Jsonl,
    Csv,
}

impl AuditExportFormat {
    /// `jsonl` or `csv`; anything else is `None` (the caller names the field).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jsonl" => Some(Self::Jsonl),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Jsonl => "audit.jsonl",
            Self::Csv => "audit.csv",
        }
    }
}

/// Records one query of an export asks for (the store's most).
const EXPORT_PAGE: u32 = 10_000;

/// Every record `filter` matches, oldest first, at most `limit` (all when `None`), as the
/// export's text one page of up to 10,000 records at a time, so an export of millions of
/// records neither stops at the store's page size nor holds them all in memory. The CSV
/// header comes once, with the first page (also when nothing matches).
///
/// The first page is read before this returns, so a store that cannot answer is an error
/// the caller can still report; a later page's failure ends the stream with it.
pub async fn audit_export_pages(
    hub: crate::Hub,
    filter: AuditFilter,
    limit: Option<u64>,
    format: AuditExportFormat,
) -> Result<impl futures::Stream<Item = Result<String, HubError>> + Send + 'static, HubError> {
    use futures::{StreamExt, TryStreamExt};
    let mut pages = Box::pin(pages(hub, filter, limit, format));
    let first = pages.try_next().await?.unwrap_or_default();
    Ok(futures::stream::once(async move { Ok(first) }).chain(pages))
}

fn pages(
    hub: crate::Hub,
    filter: AuditFilter,
    limit: Option<u64>,
    format: AuditExportFormat,
) -> impl futures::Stream<Item = Result<String, HubError>> + Send + 'static {
    struct Next {
        hub: crate::Hub,
        filter: AuditFilter,
        left: u64,
        first: bool,
    }
    let mut filter = filter;
    filter.newest_first = false;
    let start = Next {
        hub,
        filter,
        left: limit.unwrap_or(u64::MAX),
        first: true,
    };
    futures::stream::try_unfold(Some(start), move |state| async move {
        let Some(mut next) = state else {
            return Ok(None);
        };
        let page = u32::try_from(next.left).map_or(EXPORT_PAGE, |l| l.min(EXPORT_PAGE));
        next.filter.limit = Some(page);
        let records = if page == 0 {
            Vec::new()
        } else {
            next.hub.audit(&next.filter).await?
        };
        let text = match format {
            AuditExportFormat::Jsonl => audit_jsonl(&records)?,
            AuditExportFormat::Csv => audit_csv_rows(&records, next.first)?,
        };
        next.first = false;
        next.left = next.left.saturating_sub(records.len() as u64);
        // A short page was the last one.
        let more = next.left > 0 && records.len() == page as usize;
        if let Some(last) = records.last() {
            next.filter.after_seq = Some(last.seq);
        }
        Ok(Some((text, more.then_some(next))))
    })
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
