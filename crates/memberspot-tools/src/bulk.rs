//! Bulk grants from a CSV file: parse every row up front (bad rows are
//! reported with their line number and never sent), grant the good ones
//! concurrently within the client's rate limit, and report per row so that
//! failed rows can be written out and retried. Nothing is silently dropped.

use std::future::Future;
use std::io::{Read, Write};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::ToolError;
use crate::inputs::{Email, Id};

/// One grant to make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrantRow {
    /// Line in the file (1 = header).
    pub line: u64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub offer_id: String,
    pub order_id: Option<String>,
}

impl GrantRow {
    /// Arguments of the `grant_user_offer_by_email` tool.
    pub fn to_args(&self) -> Value {
        let mut args = json!({ "email": self.email, "offer_id": self.offer_id });
        for (k, v) in [
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("order_id", &self.order_id),
        ] {
            if let Some(v) = v {
                args[k] = json!(v);
            }
        }
        args
    }
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RowStatus {
    Granted {
        uid: Option<String>,
    },
    /// Dry run: valid and would be sent.
    WouldGrant,
    /// Sent, but Memberspot (or the network) refused after all retries.
    Failed {
        code: String,
        message: String,
    },
    /// Not sent: the row itself is invalid.
    Invalid {
        field: String,
        message: String,
    },
    /// Not sent: the same e-mail and offer appear on an earlier line.
    Duplicate {
        first_line: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowOutcome {
    pub line: u64,
    pub email: String,
    pub offer_id: String,
    #[serde(flatten)]
    pub status: RowStatus,
    /// The row, for writing a retry file.
    #[serde(skip)]
    pub row: Option<GrantRow>,
}

impl RowOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(
            self.status,
            RowStatus::Granted { .. } | RowStatus::WouldGrant
        )
    }
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rows: usize,
    pub granted: usize,
    pub would_grant: usize,
    pub failed: usize,
    pub invalid: usize,
    pub duplicate: usize,
}

impl Summary {
    pub fn of(outcomes: &[RowOutcome]) -> Self {
        let mut s = Summary {
            rows: outcomes.len(),
            ..Summary::default()
        };
        for o in outcomes {
            match o.status {
                RowStatus::Granted { .. } => s.granted += 1,
                RowStatus::WouldGrant => s.would_grant += 1,
                RowStatus::Failed { .. } => s.failed += 1,
                RowStatus::Invalid { .. } => s.invalid += 1,
                RowStatus::Duplicate { .. } => s.duplicate += 1,
            }
        }
        s
    }
}

/// A file that cannot be read at all (as opposed to bad rows).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("CSV header has no e-mail column (expected one of: email, e-mail, mail); found: {0}")]
    NoEmailColumn(String),
    #[error("CSV has no offer column (offer_id, offer) and no default offer was given (--offer)")]
    NoOffer,
}

/// Rows ready to send, and rows rejected while reading.
#[derive(Debug, Default)]
pub struct ParsedCsv {
    pub rows: Vec<GrantRow>,
    pub rejected: Vec<RowOutcome>,
    /// The file as read, so a retry file gives back every column of a row.
    pub source: CsvSource,
}

/// A grant file's header and rows exactly as read (every column, the delimiter), keyed
/// by line: a retry file written from it, corrected and read again, grants what a
/// correct first file would have (names and order ids included).
#[derive(Debug, Default, Clone)]
pub struct CsvSource {
    delimiter: u8,
    headers: Vec<String>,
    records: std::collections::HashMap<u64, Vec<String>>,
}

/// The columns a retry file adds (and replaces, when retrying a retry file).
const RETRY_COLUMNS: [&str; 2] = ["line", "error"];

/// Spreadsheets write CRLF; the CSV reader counts the `\r` as a line of its own, so line
/// numbers are taken from the text with plain `\n` endings.
pub fn normalize_line_endings(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn column(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    headers.iter().position(|h| {
        let h = h
            .trim()
            .trim_start_matches('\u{feff}')
            .to_lowercase()
            .replace([' ', '-'], "_");
        names.contains(&h.as_str())
    })
}

/// Reads a grant CSV. The delimiter (`,` or `;`, as German spreadsheets
/// write) is detected from the header; column names are matched loosely.
pub fn read_grant_csv<R: Read>(
    mut input: R,
    default_offer: Option<&str>,
) -> Result<ParsedCsv, CsvError> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| CsvError::Csv(csv::Error::from(e)))?;
    let text = normalize_line_endings(&text);
    let header_line = text.lines().next().unwrap_or_default();
    let delimiter = if header_line.matches(';').count() > header_line.matches(',').count() {
        b';'
    } else {
        b','
    };
    // Not trimmed while reading: cells are trimmed where they are used, and a retry
    // file gives them back as they were.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let email_col = column(&headers, &["email", "e_mail", "mail", "email_address"])
        .ok_or_else(|| CsvError::NoEmailColumn(headers.iter().collect::<Vec<_>>().join(", ")))?;
    let first_col = column(&headers, &["first_name", "firstname", "first", "vorname"]);
    let last_col = column(
        &headers,
        &["last_name", "lastname", "last", "name", "nachname"],
    );
    let offer_col = column(
        &headers,
        &[
            "offer_id",
            "offer",
            "offerid",
            "grant_offer",
            "grantoffer",
            "zugang",
        ],
    );
    let order_col = column(&headers, &["order_id", "order", "orderid", "bestellung"]);
    if offer_col.is_none() && default_offer.is_none() {
        return Err(CsvError::NoOffer);
    }

    let mut parsed = ParsedCsv {
        source: CsvSource {
            delimiter,
            headers: headers.iter().map(str::to_owned).collect(),
            records: Default::default(),
        },
        ..ParsedCsv::default()
    };
    let mut seen: std::collections::HashMap<(String, String), u64> = Default::default();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                parsed
                    .rejected
                    .push(invalid(line, "", "", "row", e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let get = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        parsed
            .source
            .records
            .insert(line, record.iter().map(str::to_owned).collect());
        let raw_email = get(Some(email_col)).unwrap_or_default();
        let offer = get(offer_col).or(default_offer).unwrap_or_default();
        let email = match Email::parse(raw_email) {
            Ok(e) => e,
            Err(_) if raw_email.is_empty() => {
                parsed.rejected.push(invalid(
                    line,
                    raw_email,
                    offer,
                    "email",
                    "the e-mail is missing".into(),
                ));
                continue;
            }
            Err(msg) => {
                parsed
                    .rejected
                    .push(invalid(line, raw_email, offer, "email", msg));
                continue;
            }
        };
        let offer_id = match Id::parse(offer) {
            Ok(o) => o,
            Err(msg) => {
                parsed.rejected.push(invalid(
                    line,
                    email.as_str(),
                    offer,
                    "offer_id",
                    format!("the offer id {msg}"),
                ));
                continue;
            }
        };
        let key = (email.as_str().to_lowercase(), offer_id.to_string());
        if let Some(&first_line) = seen.get(&key) {
            parsed.rejected.push(RowOutcome {
                line,
                email: email.to_string(),
                offer_id: offer_id.to_string(),
                status: RowStatus::Duplicate { first_line },
                row: None,
            });
            continue;
        }
        seen.insert(key, line);
        parsed.rows.push(GrantRow {
            line,
            email: email.to_string(),
            first_name: get(first_col).map(str::to_string),
            last_name: get(last_col).map(str::to_string),
            offer_id: offer_id.to_string(),
            order_id: get(order_col).map(str::to_string),
        });
    }
    Ok(parsed)
}

fn invalid(line: u64, email: &str, offer: &str, field: &str, message: String) -> RowOutcome {
    RowOutcome {
        line,
        email: email.to_string(),
        offer_id: offer.to_string(),
        status: RowStatus::Invalid {
            field: field.to_string(),
            message,
        },
        row: None,
    }
}

/// Why one grant failed: a stable code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub code: String,
    pub message: String,
}

impl From<ToolError> for RowError {
    fn from(e: ToolError) -> Self {
        RowError {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

/// Sends every row through `grant` with up to `concurrency` in flight,
/// calling `on_done` as each finishes. Outcomes come back in file order.
pub async fn run_grants<F, Fut>(
    rows: Vec<GrantRow>,
    concurrency: usize,
    dry_run: bool,
    grant: F,
    mut on_done: impl FnMut(&RowOutcome),
) -> Vec<RowOutcome>
where
    F: Fn(GrantRow) -> Fut,
    Fut: Future<Output = Result<Value, RowError>>,
{
    let grant = &grant;
    let mut outcomes: Vec<RowOutcome> = futures::stream::iter(rows)
        .map(|row| async move {
            let status = if dry_run {
                RowStatus::WouldGrant
            } else {
                match grant(row.clone()).await {
                    Ok(v) => RowStatus::Granted {
                        uid: v
                            .pointer("/user/uid")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    },
                    Err(e) => RowStatus::Failed {
                        code: e.code,
                        message: e.message,
                    },
                }
            };
            RowOutcome {
                line: row.line,
                email: row.email.clone(),
                offer_id: row.offer_id.clone(),
                status,
                row: Some(row),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .inspect(|o| on_done(o))
        .collect()
        .await;
    outcomes.sort_by_key(|o| o.line);
    outcomes
}

/// Writes the rows that did not succeed as a CSV that `read_grant_csv` can read again:
/// the source's header and every column of each row as read, in its delimiter, plus the
/// row's `line` in the source and the `error` (both ignored on re-import). Returns how
/// many rows were written.
pub fn write_retry_csv<W: Write>(
    out: W,
    source: &CsvSource,
    outcomes: &[RowOutcome],
) -> Result<usize, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(if source.delimiter == 0 {
            b','
        } else {
            source.delimiter
        })
        .flexible(true)
        .from_writer(out);
    let mut headers = source.headers.clone();
    let extra: Vec<usize> = RETRY_COLUMNS
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
                .unwrap_or_else(|| {
                    headers.push((*name).to_owned());
                    headers.len() - 1
                })
        })
        .collect();
    w.write_record(&headers)?;
    let mut written = 0;
    for o in outcomes.iter().filter(|o| !o.is_ok()) {
        let error = match &o.status {
            RowStatus::Failed { message, .. } | RowStatus::Invalid { message, .. } => {
                message.clone()
            }
            RowStatus::Duplicate { first_line } => format!("duplicate of line {first_line}"),
            _ => String::new(),
        };
        let mut fields = source.records.get(&o.line).cloned().unwrap_or_default();
        fields.resize(fields.len().max(headers.len()), String::new());
        fields[extra[0]] = o.line.to_string();
        fields[extra[1]] = error;
        w.write_record(&fields)?;
        written += 1;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_semicolons_aliases_and_reports_bad_rows_by_line() {
        let csv = "\u{feff}E-Mail;Vorname;Nachname;Zugang;Bestellung\n\
                   anna@example.com;Anna;Schmidt;o1;DS24-1\n\
                   ;No;Mail;o1;\n\
                   not-an-email;X;Y;o1;\n\
                   ANNA@example.com;Anna;Schmidt;o1;\n\
                   \n\
                   ben@example.com;;;;\n";
        let parsed = read_grant_csv(csv.as_bytes(), Some("default")).expect("reads");
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].order_id.as_deref(), Some("DS24-1"));
        assert_eq!(parsed.rows[0].last_name.as_deref(), Some("Schmidt"));
        assert_eq!(
            parsed.rows[1].offer_id, "default",
            "an empty offer cell takes --offer"
        );
        let lines: Vec<u64> = parsed.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(matches!(
            parsed.rejected[2].status,
            RowStatus::Duplicate { first_line: 2 }
        ));
    }

    #[test]
    fn missing_columns_are_explained() {
        assert!(matches!(
            read_grant_csv("name,offer\nx,y\n".as_bytes(), None),
            Err(CsvError::NoEmailColumn(_))
        ));
        assert!(matches!(
            read_grant_csv("email\na@b.de\n".as_bytes(), None),
            Err(CsvError::NoOffer)
        ));
    }

    #[test]
    fn retry_file_round_trips() {
        let row = GrantRow {
            line: 7,
            email: "a@b.de".into(),
            first_name: Some("A".into()),
            last_name: None,
            offer_id: "o".into(),
            order_id: Some("x".into()),
        };
        let source = CsvSource {
            delimiter: b',',
            headers: vec![
                "email".into(),
                "vorname".into(),
                "offer".into(),
                "order".into(),
            ],
            records: [(7, vec!["a@b.de".into(), "A".into(), "o".into(), "x".into()])].into(),
        };
        let outcomes = vec![RowOutcome {
            line: 7,
            email: row.email.clone(),
            offer_id: "o".into(),
            status: RowStatus::Failed {
                code: "upstream".into(),
                message: "503".into(),
            },
            row: Some(row.clone()),
        }];
        let mut buf = Vec::new();
        assert_eq!(
            write_retry_csv(&mut buf, &source, &outcomes).expect("writes"),
            1
        );
        let again = read_grant_csv(buf.as_slice(), None).expect("reads");
        assert_eq!(again.rows.len(), 1);
        assert_eq!(again.rows[0].to_args(), row.to_args());
    }

    /// A row refused for its e-mail keeps its names, order id and any other column; fixed
    /// and read again, it grants what a correct first file would have.
    #[test]
    fn invalid_rows_come_back_whole_and_a_fixed_retry_grants_like_a_first_run() {
        let csv = "E-Mail;Vorname;Nachname;Zugang;Bestellung;Notiz\r\n\
                   anna@example.com;Anna;Schmidt;o1;DS24-1;vip\r\n\
                   ben(at)example.com;Ben;Bauer;o1;DS24-2;\"Rechnung; bezahlt\"\r\n\
                   carla@example.com;Carla;Klein;o2;DS24-3;\r\n";
        let first = read_grant_csv(csv.as_bytes(), None).expect("reads");
        assert_eq!(first.rows.len(), 2);
        assert_eq!(first.rejected.len(), 1);
        assert_eq!(
            first.rejected[0].line, 3,
            "CRLF files keep their line numbers"
        );

        let mut buf = Vec::new();
        write_retry_csv(&mut buf, &first.source, &first.rejected).expect("writes");
        let retry = String::from_utf8(buf).expect("utf-8");
        let mut lines = retry.lines();
        assert_eq!(
            lines.next(),
            Some("E-Mail;Vorname;Nachname;Zugang;Bestellung;Notiz;line;error")
        );
        let row = lines.next().expect("the refused row");
        assert!(
            row.starts_with("ben(at)example.com;Ben;Bauer;o1;DS24-2;\"Rechnung; bezahlt\";3;"),
            "{row}"
        );

        let fixed = retry.replace("ben(at)example.com", "ben@example.com");
        let again = read_grant_csv(fixed.as_bytes(), None).expect("reads again");
        assert!(again.rejected.is_empty(), "{:?}", again.rejected);
        let correct = csv.replace("ben(at)example.com", "ben@example.com");
        let correct = read_grant_csv(correct.as_bytes(), None).expect("reads");
        assert_eq!(again.rows[0].to_args(), correct.rows[1].to_args());
        assert_eq!(
            again.rows[0].to_args()["order_id"],
            "DS24-2",
            "the order id survives, so a refund can revoke"
        );

        // Retrying the retry file replaces its `line` and `error` columns, never adds more.
        let refused_again = read_grant_csv(retry.as_bytes(), None).expect("reads");
        let mut buf = Vec::new();
        write_retry_csv(&mut buf, &refused_again.source, &refused_again.rejected).expect("writes");
        let header = String::from_utf8(buf).expect("utf-8");
        assert_eq!(
            header.lines().next(),
            Some("E-Mail;Vorname;Nachname;Zugang;Bestellung;Notiz;line;error")
        );
    }
}
