//! Cross-tool sync, import direction: read records from another app (a CSV file, a CSV or
//! JSON URL, or a paginated JSON API), map each to the access a member should have, compare
//! with the school and write only the differences through the tools, as a persona.
//!
//! Idempotent by construction: the plan is the difference between what the records say and
//! what the school holds, so a second run of the same records plans nothing. Every record
//! gets a line in the report — created, updated, unchanged, or failed with its reason and
//! line number — and nothing is sent for a bad record.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use futures::StreamExt;
use memberspot_api::wire::Offer;
use memberspot_hub::offer_names::{OfferIndex, OfferNameError};
use memberspot_hub::{CallContext, Hub, Surface};
use memberspot_tools::tools::ListUsersInput;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::FlowsError;
use crate::personas::{CallError, call_as, member_json, users_as};
use crate::template;

/// Where records come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A CSV file (first line: column names), relative to the flows file.
    pub csv: Option<PathBuf>,
    /// A URL answering CSV (`format = "csv"`) or JSON (an array, or an object holding one
    /// at `items`).
    pub url: Option<String>,
    pub format: Option<String>,
    /// For JSON: where the list of records is (`data`, `result.items`).
    pub items: Option<String>,
    /// For paginated APIs: where the next page's URL is (`links.next`, `next`)...
    pub next: Option<String>,
    /// ... or where the next cursor is, sent back as query parameter `cursor_param`.
    pub cursor: Option<String>,
    pub cursor_param: Option<String>,
    /// Sent with every request (often a credential): shown as `<redacted>`.
    #[serde(default, serialize_with = "redacted_values")]
    pub headers: BTreeMap<String, String>,
    /// Stop after this many pages (a runaway API cannot loop forever).
    pub max_pages: Option<u32>,
    /// Largest answer read from `url`, per page (default [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: Option<u64>,
}

/// Default of `source.max_bytes`: 50 MB per page.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// The redirect policy of remote sources and export targets: only on the origin of the
/// first URL (scheme, host and port), at most 10, so credential headers (which reqwest
/// keeps on a redirect, except `Authorization` and cookies) never go to another host. A
/// redirect elsewhere is not followed; the 3xx is reported.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if same && attempt.previous().len() <= 10 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// `scheme://host[:port]` of a URL, for messages (never its path or query).
fn origin_text(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

/// Reads an answer's body, refusing it past `max` bytes (counted as it arrives:
/// `Content-Length` may be missing or wrong).
async fn read_capped(
    mut resp: reqwest::Response,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, FlowsError> {
    let too_large = || {
        FlowsError::Source(format!(
            "{what}: the answer is larger than {max} bytes (source.max_bytes); raise it if that is expected"
        ))
    };
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        FlowsError::Source(format!(
            "{what}: reading the answer failed: {}",
            without_url(&e)
        ))
    })? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error without its URL (which may carry a token in its query).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Header names with their values hidden, for listings (`sync list --json`).
fn redacted_values<S: serde::Serializer>(
    headers: &BTreeMap<String, String>,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_map(headers.keys().map(|k| (k, "<redacted>")))
}

/// How a record becomes access. Values are templates over `row`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub email: String,
    pub offer: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub order_id: Option<String>,
    /// A date or time; empty means no expiration.
    pub expires_at: Option<String>,
    /// `false`, `no`, `nein`, `0`, `inactive` revoke; `true`, `yes`, `ja`, `1`, `active`
    /// (or empty, or absent) grant; anything else is an error for that row.
    pub active: Option<String>,
    /// Custom property id → value template.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// One `[[syncs]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    pub name: String,
    #[serde(default = "default_persona")]
    pub persona: String,
    /// The school written to (the persona is created on it): as the flows file names it,
    /// filled in when flows start (see [`crate::FlowsConfig::resolve_connections`]).
    pub connection: Option<String>,
    pub source: SourceSpec,
    pub map: Mapping,
    /// Writes in flight at once (the connection's rate limit paces them).
    pub concurrency: Option<usize>,
}

fn default_persona() -> String {
    "sync".into()
}

/// What happened (or would happen) to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOutcome {
    Created,
    Updated,
    Unchanged,
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RowReport {
    /// Line in the CSV file (1 = header), or position in the JSON list (1-based).
    pub line: usize,
    pub email: Option<String>,
    pub offer: Option<String>,
    pub outcome: RowOutcome,
    /// The tool calls made (or planned in a dry run).
    pub changes: Vec<String>,
    pub reason: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub sync: String,
    pub dry_run: bool,
    pub rows: Vec<RowReport>,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub api_calls: usize,
}

/// The tool calls that bring one member to its wanted state.
type Plan = Vec<(&'static str, Value)>;

/// A record's wanted state.
#[derive(Debug, Clone)]
struct Wanted {
    line: usize,
    email: String,
    offer: String,
    first_name: Option<String>,
    last_name: Option<String>,
    order_id: Option<String>,
    expires_at: Option<String>,
    active: bool,
    properties: BTreeMap<String, String>,
}

/// Reads the records: `(line, record)`.
pub async fn read_source(
    http: &reqwest::Client,
    spec: &SourceSpec,
    base: Option<&std::path::Path>,
) -> Result<Vec<(usize, Value)>, FlowsError> {
    let fail = |m: String| FlowsError::Source(m);
    if let Some(path) = &spec.csv {
        let path = match base {
            Some(b) if path.is_relative() => b.join(path),
            _ => path.clone(),
        };
        let text = std::fs::read(&path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        return parse_csv(&text);
    }
    let Some(url) = &spec.url else {
        return Err(fail("the source needs `csv` (a file) or `url`".into()));
    };
    let format =
        spec.format
            .as_deref()
            .unwrap_or(if url.ends_with(".csv") { "csv" } else { "json" });
    let origin = url::Url::parse(url).map_err(|e| fail(format!("source.url: {e}")))?;
    let max_bytes = spec.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let mut out = Vec::new();
    let mut next_url = Some(origin.clone());
    let mut pages = 0;
    while let Some(u) = next_url.take() {
        pages += 1;
        if pages > spec.max_pages.unwrap_or(1000) {
            return Err(fail(format!(
                "stopped after {} pages; raise source.max_pages if that is expected",
                pages - 1
            )));
        }
        // The headers are often a credential: never sent to another origin.
        if u.origin() != origin.origin() {
            return Err(fail(format!(
                "page {pages}: the next link points to {}, another origin than source.url ({}); \
                 only links on the source's origin are followed, so its headers never go elsewhere",
                origin_text(&u),
                origin_text(&origin)
            )));
        }
        let what = format!("GET {} (page {pages})", host(u.as_str()));
        let mut req = http.get(u.clone());
        for (k, v) in &spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| fail(format!("{what}: {}", without_url(&e))))?;
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| u.join(l).ok())
                .map_or_else(|| "nowhere".to_string(), |t| origin_text(&t));
            return Err(fail(format!(
                "{what} answered {} with a redirect to {to}; redirects to another origin are not followed",
                resp.status()
            )));
        }
        if !resp.status().is_success() {
            return Err(fail(format!("{what} answered {}", resp.status())));
        }
        let bytes = read_capped(resp, max_bytes, &what).await?;
        if format == "csv" {
            return parse_csv(&bytes);
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("{} did not answer JSON: {e}", host(u.as_str()))))?;
        let items = match &spec.items {
            Some(path) => lookup(&body, path).cloned().unwrap_or(Value::Null),
            None => body.clone(),
        };
        let Value::Array(items) = items else {
            return Err(fail(format!(
                "no list at `{}` in the answer of {}",
                spec.items.as_deref().unwrap_or("(top level)"),
                host(u.as_str())
            )));
        };
        let offset = out.len();
        out.extend(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (offset + i + 1, v)),
        );
        if let Some(path) = &spec.next {
            // A relative link is resolved against the page it came from.
            next_url = match lookup(&body, path)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(link) => Some(u.join(link).map_err(|e| {
                    fail(format!(
                        "page {pages}: the next link at `{path}` is not a URL: {e}"
                    ))
                })?),
                None => None,
            };
        } else if let Some(path) = &spec.cursor
            && let Some(c) = lookup(&body, path)
                .and_then(scalar)
                .filter(|s| !s.is_empty())
        {
            let mut next = origin.clone();
            next.query_pairs_mut()
                .append_pair(spec.cursor_param.as_deref().unwrap_or("cursor"), &c);
            next_url = Some(next);
        }
    }
    Ok(out)
}

fn parse_csv(bytes: &[u8]) -> Result<Vec<(usize, Value)>, FlowsError> {
    let fail = |m: String| FlowsError::Source(m);
    let text = std::str::from_utf8(bytes).map_err(|e| fail(format!("CSV is not UTF-8: {e}")))?;
    let text = memberspot_tools::bulk::normalize_line_endings(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| fail(format!("CSV header: {e}")))?
        .clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| fail(format!("CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row: serde_json::Map<String, Value> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    h.to_owned(),
                    Value::String(record.get(i).unwrap_or("").to_owned()),
                )
            })
            .collect();
        out.push((line, Value::Object(row)));
    }
    Ok(out)
}

/// Runs a sync (or plans it, with `dry_run`). `progress(done, total)` is called as writes
/// complete.
pub async fn run(
    hub: &Hub,
    http: &reqwest::Client,
    spec: &SyncSpec,
    base: Option<&std::path::Path>,
    dry_run: bool,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<SyncReport, FlowsError> {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    // As the sync's persona, read for every call: a revocation stops the rest of the run.
    let call = |tool: &'static str, args: Value, prompt: String| {
        let calls = &calls;
        async move {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut ctx = CallContext::new(Surface::Flow);
            ctx.prompt = Some(prompt);
            call_as(hub, &spec.persona, &ctx, tool, args)
                .await
                .map_err(|e: CallError| FlowsError::call(tool, e))
        }
    };
    let records = read_source(http, &spec.source, base).await?;

    // The school's offers: a mapped offer is an id or a name, and one the school does not
    // have (or has twice under that name) fails its row before anything is sent.
    let offers = call(
        "list_offers",
        json!({}),
        format!("sync {}: offers", spec.name),
    )
    .await?;
    let offers = SchoolOffers::from_list(&offers);

    let mut rows: Vec<RowReport> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (line, row) in records {
        let w = match map_row(&spec.map, line, &row) {
            Ok(w) => w,
            Err(reason) => {
                rows.push(failed(line, None, None, reason));
                continue;
            }
        };
        let w = match offers.resolve(&w.offer) {
            Ok(id) => Wanted { offer: id, ..w },
            Err(reason) => {
                rows.push(failed(line, Some(w.email), Some(w.offer), reason));
                continue;
            }
        };
        match seen.get(&(w.email.clone(), w.offer.clone())) {
            Some(first) => {
                let reason = format!("duplicate of line {first} (same e-mail and offer)");
                rows.push(failed(line, Some(w.email), Some(w.offer), reason));
            }
            None => {
                seen.insert((w.email.clone(), w.offer.clone()), line);
                wanted.push(w);
            }
        }
    }

    // What the school holds now: every member, 100 per call.
    let mut school: HashMap<String, Value> = HashMap::new();
    let mut ctx = CallContext::new(Surface::Flow);
    ctx.prompt = Some(format!("sync {}: read members", spec.name));
    let read = users_as(hub, &spec.persona, &ctx, ListUsersInput::default()).await;
    let (users, pages) = read.map_err(|e| FlowsError::call("list_users", e))?;
    calls.fetch_add(pages, std::sync::atomic::Ordering::Relaxed);
    for u in users {
        let email = u.email.to_ascii_lowercase();
        school.insert(email, member_json(u)?);
    }

    // The plan: only differences.
    let plans: Vec<(Wanted, Plan, bool)> = wanted
        .into_iter()
        .map(|w| {
            let current = school.get(&w.email);
            let (steps, is_new) = plan(&w, current);
            (w, steps, is_new)
        })
        .collect();
    let total = plans.iter().filter(|(_, s, _)| !s.is_empty()).count();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let concurrency = spec.concurrency.unwrap_or(16).clamp(1, 64);
    let results: Vec<RowReport> = futures::stream::iter(plans)
        .map(|(w, steps, is_new)| {
            let call = &call;
            let done = &done;
            let name = &spec.name;
            async move {
                let changes: Vec<String> = steps.iter().map(|(t, a)| format!("{t} {a}")).collect();
                if steps.is_empty() {
                    return report(&w, RowOutcome::Unchanged, changes, None);
                }
                let outcome = if is_new {
                    RowOutcome::Created
                } else {
                    RowOutcome::Updated
                };
                if dry_run {
                    return report(&w, outcome, changes, None);
                }
                for (tool, args) in steps {
                    if let Err(e) = call(tool, args, format!("sync {name} line {}", w.line)).await {
                        progress(
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                            total,
                        );
                        return report(&w, RowOutcome::Failed, changes, Some(e.to_string()));
                    }
                }
                progress(
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    total,
                );
                report(&w, outcome, changes, None)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    rows.extend(results);
    rows.sort_by_key(|r| r.line);
    let count = |o: RowOutcome| rows.iter().filter(|r| r.outcome == o).count();
    Ok(SyncReport {
        sync: spec.name.clone(),
        dry_run,
        created: count(RowOutcome::Created),
        updated: count(RowOutcome::Updated),
        unchanged: count(RowOutcome::Unchanged),
        failed: count(RowOutcome::Failed),
        api_calls: calls.load(std::sync::atomic::Ordering::Relaxed),
        rows,
    })
}

/// The school's offers as the sync read them, behind the hub's one offer-name index.
struct SchoolOffers(OfferIndex);

impl SchoolOffers {
    fn from_list(answer: &Value) -> SchoolOffers {
        let offers: Vec<Offer> = answer["offers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|o| serde_json::from_value(o.clone()).ok())
            .collect();
        SchoolOffers(OfferIndex::new(offers))
    }

    /// The id a mapped offer stands for (an id, an exact name, a name regardless of case:
    /// [`OfferIndex::resolve`]). Otherwise the row's reason, naming the offers it could
    /// have meant.
    fn resolve(&self, given: &str) -> Result<String, String> {
        self.0.resolve(given).map_err(|e| match &e {
            OfferNameError::Unknown { given, candidates } => format!(
                "offer `{given}` does not exist in the school: no offer has this id or name ({})",
                if candidates.is_empty() {
                    "it has none".to_owned()
                } else {
                    format!("its offers: {}", e.listing())
                }
            ),
            OfferNameError::Ambiguous { given, candidates } => format!(
                "offer `{given}` is the name of {} offers: {}; give the id",
                candidates.len(),
                e.listing()
            ),
        })
    }
}

fn map_row(m: &Mapping, line: usize, row: &Value) -> Result<Wanted, String> {
    let ctx = json!({"row": row, "line": line});
    let render = |field: &str, t: &str| -> Result<String, String> {
        template::render(t, &ctx)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{field}: {e}"))
    };
    let opt = |field: &str, t: &Option<String>| -> Result<Option<String>, String> {
        match t {
            None => Ok(None),
            Some(t) => render(field, t).map(|s| (!s.is_empty()).then_some(s)),
        }
    };
    let email = render("email", &m.email)?.to_ascii_lowercase();
    if email.is_empty() {
        return Err("email: missing".into());
    }
    if !looks_like_email(&email) {
        return Err(format!("email: `{email}` is not an e-mail address"));
    }
    let offer = render("offer", &m.offer)?;
    if offer.is_empty() {
        return Err("offer: missing".into());
    }
    let expires_at = opt("expires_at", &m.expires_at)?;
    if let Some(e) = &expires_at
        && !valid_time(e)
    {
        return Err(format!(
            "expires_at: `{e}` is not a date (YYYY-MM-DD) or an RFC 3339 time"
        ));
    }
    // Only a clear yes or no: a typo ("nien") must not grant access.
    let active = match opt("active", &m.active)? {
        None => true,
        Some(v) => match v.trim().to_lowercase().as_str() {
            "true" | "yes" | "1" | "active" | "ja" | "aktiv" => true,
            "false" | "no" | "0" | "inactive" | "nein" | "inaktiv" => false,
            _ => {
                return Err(format!(
                    "active: `{v}` is neither yes nor no (true/false, yes/no, ja/nein, 1/0, \
                     active/inactive; empty grants)"
                ));
            }
        },
    };
    let mut properties = BTreeMap::new();
    for (id, t) in &m.properties {
        properties.insert(id.clone(), render(&format!("properties.{id}"), t)?);
    }
    Ok(Wanted {
        line,
        email,
        offer,
        first_name: opt("first_name", &m.first_name)?,
        last_name: opt("last_name", &m.last_name)?,
        order_id: opt("order_id", &m.order_id)?,
        expires_at,
        active,
        properties,
    })
}

/// The tool calls that bring the member to the wanted state; `true` when the member is new.
fn plan(w: &Wanted, current: Option<&Value>) -> (Plan, bool) {
    let mut steps = Vec::new();
    let holding = current.and_then(|u| {
        u["offers"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["offerId"].as_str() == Some(&w.offer)))
    });
    let is_active = holding.is_some_and(|h| h["active"].as_bool().unwrap_or(true));
    if w.active && !is_active {
        let mut args = json!({"email": w.email, "offer_id": w.offer});
        for (k, v) in [
            ("first_name", &w.first_name),
            ("last_name", &w.last_name),
            ("order_id", &w.order_id),
        ] {
            if let Some(v) = v {
                args[k] = json!(v);
            }
        }
        steps.push(("grant_user_offer_by_email", args));
    }
    if !w.active && is_active {
        steps.push((
            "set_user_offer_state",
            json!({"email": w.email, "offer_id": w.offer, "state": "inactive"}),
        ));
    }
    if w.active {
        let current_exp = holding
            .and_then(|h| h["expiresAt"].as_str())
            .and_then(epoch);
        let wanted_exp = w.expires_at.as_deref().and_then(epoch);
        // A fresh grant clears an old expiration, so it is set again after granting.
        let granted_now = !is_active;
        if wanted_exp != current_exp || (granted_now && wanted_exp.is_some()) {
            let mut args = json!({"email": w.email, "offer_id": w.offer});
            if let Some(e) = &w.expires_at {
                args["expires_at"] = json!(e);
            }
            if wanted_exp.is_some() || current_exp.is_some() {
                steps.push(("set_offer_expiration", args));
            }
        }
    }
    let props: Vec<Value> = w
        .properties
        .iter()
        .filter(|(id, v)| {
            current
                .and_then(|u| u["customProperties"].get(id.as_str()))
                .and_then(scalar)
                .as_deref()
                != Some(v.as_str())
        })
        .map(|(id, v)| json!({"id": id, "value": v}))
        .collect();
    if !props.is_empty() {
        steps.push((
            "set_custom_user_properties",
            json!({"email": w.email, "properties": props}),
        ));
    }
    (steps, current.is_none())
}

fn report(
    w: &Wanted,
    outcome: RowOutcome,
    changes: Vec<String>,
    reason: Option<String>,
) -> RowReport {
    RowReport {
        line: w.line,
        email: Some(w.email.clone()),
        offer: Some(w.offer.clone()),
        outcome,
        changes,
        reason,
    }
}

fn failed(line: usize, email: Option<String>, offer: Option<String>, reason: String) -> RowReport {
    RowReport {
        line,
        email,
        offer,
        outcome: RowOutcome::Failed,
        changes: Vec::new(),
        reason: Some(reason),
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn valid_time(s: &str) -> bool {
    epoch(s).is_some()
}

/// Seconds since the epoch of a date (midnight UTC) or an RFC 3339 time.
fn epoch(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp())
        })
}

fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(v, |cur, seg| match seg.parse::<usize>() {
            Ok(i) if cur.is_array() => cur.get(i),
            _ => cur.get(seg),
        })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "the URL".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_lines_and_mapping_errors() {
        let rows = parse_csv(b"Email,Offer\na@b.de,o1\n,o1\nnot-an-email,o1\n").unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4]);
        // What spreadsheets write: the same lines with CRLF endings.
        let crlf = parse_csv(b"Email,Offer\r\na@b.de,o1\r\n,o1\r\nnot-an-email,o1\r\n").unwrap();
        assert_eq!(crlf, rows);
        let err = parse_csv(b"Email,Offer\n\xff,o1\n").unwrap_err();
        assert!(
            matches!(&err, FlowsError::Source(m) if m.contains("not UTF-8")),
            "{err}"
        );
        let m = Mapping {
            email: "{{ row.Email }}".into(),
            offer: "{{ row.Offer }}".into(),
            first_name: None,
            last_name: None,
            order_id: None,
            expires_at: None,
            active: None,
            properties: BTreeMap::new(),
        };
        assert!(map_row(&m, 2, &rows[0].1).is_ok());
        assert_eq!(map_row(&m, 3, &rows[1].1).unwrap_err(), "email: missing");
        assert!(
            map_row(&m, 4, &rows[2].1)
                .unwrap_err()
                .contains("not an e-mail address")
        );

        // `active` takes a clear yes or no; a typo fails the row instead of granting.
        let m = Mapping {
            active: Some("{{ row.Aktiv }}".into()),
            ..m
        };
        let rows = parse_csv(
            b"Email,Offer,Aktiv
a@b.de,o1,nein
a@b.de,o1,Ja
a@b.de,o1,nien
",
        )
        .unwrap();
        assert!(!map_row(&m, 2, &rows[0].1).unwrap().active);
        assert!(map_row(&m, 3, &rows[1].1).unwrap().active);
        let err = map_row(&m, 4, &rows[2].1).unwrap_err();
        assert!(err.contains("nien"), "{err}");
    }

    #[test]
    fn offers_by_id_then_exact_name_then_name_regardless_of_case() {
        let offers = SchoolOffers::from_list(&json!({"offers": [
            {"id": "o1", "name": "Online-Kurs Basis"},
            {"id": "o2", "name": "Premium"},
            {"id": "o3", "name": "premium"},
            {"id": "o4", "name": "Gold"},
            {"id": "o5", "name": "GOLD "},
        ]}));
        assert_eq!(offers.resolve("o2").unwrap(), "o2");
        assert_eq!(offers.resolve("online-kurs basis").unwrap(), "o1");
        // An exact name wins over names that differ only in case.
        assert_eq!(offers.resolve("Premium").unwrap(), "o2");
        assert_eq!(offers.resolve("premium").unwrap(), "o3");
        assert_eq!(
            offers.resolve("gold").unwrap_err(),
            "offer `gold` is the name of 2 offers: o4 (Gold), o5 (GOLD ); give the id"
        );
        let unknown = offers.resolve("Platin").unwrap_err();
        assert!(
            unknown.starts_with("offer `Platin` does not exist in the school")
                && unknown.contains("o1 (Online-Kurs Basis), o2 (Premium)"),
            "{unknown}"
        );
        assert!(
            SchoolOffers::from_list(&json!({"offers": []}))
                .resolve("o1")
                .unwrap_err()
                .contains("it has none")
        );
    }

    #[test]
    fn plans_only_differences() {
        let w = Wanted {
            line: 2,
            email: "a@b.de".into(),
            offer: "o1".into(),
            first_name: None,
            last_name: None,
            order_id: None,
            expires_at: Some("2027-01-01".into()),
            active: true,
            properties: [("p1".to_owned(), "ACME".to_owned())].into(),
        };
        let (steps, new) = plan(&w, None);
        assert!(new);
        assert_eq!(
            steps.iter().map(|s| s.0).collect::<Vec<_>>(),
            [
                "grant_user_offer_by_email",
                "set_offer_expiration",
                "set_custom_user_properties"
            ]
        );
        let holding = json!({"email": "a@b.de", "offers": [{"offerId": "o1", "active": true, "expiresAt": "2027-01-01T00:00:00.000Z"}], "customProperties": {"p1": "ACME"}});
        let (steps, new) = plan(&w, Some(&holding));
        assert!(!new);
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn listings_never_show_header_values() {
        let spec: SourceSpec = toml::from_str(
            "url = \"https://crm.example/api\"\nheaders = { Authorization = \"Bearer SUPERSECRET\" }\n",
        )
        .unwrap();
        assert_eq!(
            spec.headers["Authorization"], "Bearer SUPERSECRET",
            "kept for use"
        );
        let shown = serde_json::to_string(&spec).unwrap();
        assert!(!shown.contains("SUPERSECRET"), "{shown}");
        assert!(
            shown.contains("\"Authorization\":\"<redacted>\""),
            "{shown}"
        );
    }
}
