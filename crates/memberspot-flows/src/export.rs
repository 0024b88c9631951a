//! Cross-tool sync, export direction: members with their offers (and progress in chosen
//! courses) to a CSV or JSON file, or POSTed as JSON to another app's endpoint.
//!
//! Incremental: the first run exports every member; later runs export only the members the
//! event store saw change since the previous run (poller observations, webhook purchases
//! and refunds, Memberspot's own events), from a checkpoint kept in the store. The
//! checkpoint moves only after the export was written or accepted, so nothing is skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use memberspot_hub::store::{EventFilter, Trusted};
use memberspot_hub::{CallContext, Hub, HubError, Surface};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use memberspot_tools::tools::ListUsersInput;

use crate::FlowsError;
use crate::personas::{CallError, call_as, connection_of, member_json, users_as};
use crate::sync::without_url;

/// One `[[exports]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    pub name: String,
    /// Read-only persona the school is read as (created with `read` when missing).
    #[serde(default = "default_persona")]
    pub persona: String,
    /// The school read: as the flows file names it, filled in when flows start.
    pub connection: Option<String>,
    /// Write to this file (relative to the flows file)…
    pub file: Option<PathBuf>,
    /// …or POST the records as a JSON array to this URL.
    pub url: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `csv` or `json` (files only; URLs get JSON). Default: by the file's extension.
    pub format: Option<String>,
    /// Course ids whose progress is added (one call per member and course).
    #[serde(default)]
    pub courses: Vec<String>,
    /// Only changes since the previous run (default true); false exports everyone each time.
    pub incremental: Option<bool>,
}

fn default_persona() -> String {
    "export".into()
}

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub export: String,
    /// `full` or `incremental`.
    pub mode: String,
    pub members: usize,
    /// Where it went (file path or URL host).
    pub target: String,
    pub api_calls: usize,
    /// The event store position the next incremental run starts after.
    pub checkpoint: i64,
}

/// Runs an export.
pub async fn run(
    hub: &Hub,
    http: &reqwest::Client,
    spec: &ExportSpec,
    base: Option<&std::path::Path>,
) -> Result<ExportReport, FlowsError> {
    let mut calls = 0usize;
    let store = hub.flows_store();
    let key = format!("export.{}.after_seq", spec.name);
    let previous = store
        .get_meta(&key)
        .await?
        .and_then(|v| v.parse::<i64>().ok());
    // The newest event now: the next run starts after it.
    let newest = store
        .list_events(&EventFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await?
        .first()
        .map_or(0, |e| e.seq);
    let incremental = spec.incremental.unwrap_or(true) && previous.is_some();
    let mut ctx = CallContext::new(Surface::Flow);
    ctx.prompt = Some(format!("export {}", spec.name));

    let mut members: Vec<Value> = Vec::new();
    if incremental {
        let connection = connection_of(hub, &spec.persona)
            .await
            .map_err(|e| match e {
                CallError::Persona(m) => FlowsError::Persona(m),
                CallError::Call(HubError::Store(e)) => FlowsError::Store(e),
                CallError::Call(e) => {
                    FlowsError::Persona(format!("persona `{}`: {e}", spec.persona))
                }
            })?;
        let trusted = Trusted::live(connection);
        let changed = changed_emails(hub, &trusted, previous.unwrap_or(0), newest).await?;
        for (email, deletion_seen) in changed {
            calls += 1;
            match call_as(
                hub,
                &spec.persona,
                &ctx,
                "find_user_by_email",
                json!({"email": email}),
            )
            .await
            {
                Ok(u) => members.push(u),
                // Exported as deleted only when the school itself was seen deleting the
                // member (the poller): a buyer who never became a member, or an e-mail
                // from a payment, is no reason to tell the other app to delete anyone.
                Err(CallError::Call(e)) if e.is_not_found() && deletion_seen => {
                    members.push(json!({"email": email, "deleted": true}))
                }
                Err(CallError::Call(e)) if e.is_not_found() => {}
                Err(e) => return Err(FlowsError::call_about("find_user_by_email", &email, e)),
            }
        }
    } else {
        // Every member, 100 per call; a repeated cursor fails the export.
        let (users, pages) = users_as(hub, &spec.persona, &ctx, ListUsersInput::default())
            .await
            .map_err(|e| FlowsError::call("list_users", e))?;
        calls += pages;
        for u in users {
            members.push(member_json(u)?);
        }
    }
    for m in members.iter_mut().filter(|m| m["deleted"] != true) {
        let email = m["email"].as_str().unwrap_or_default().to_owned();
        let mut progress = serde_json::Map::new();
        for course in &spec.courses {
            calls += 1;
            let args = json!({"email": email, "course_id": course});
            match call_as(hub, &spec.persona, &ctx, "get_user_course_progress", args).await {
                Ok(p) => {
                    progress.insert(course.clone(), p);
                }
                // Best effort per course, but a persona that cannot act stops the export.
                Err(e @ CallError::Persona(_)) => {
                    return Err(FlowsError::call("get_user_course_progress", e));
                }
                Err(CallError::Call(_)) => {}
            }
        }
        if !spec.courses.is_empty() {
            m["progress"] = Value::Object(progress);
        }
    }

    let target = write(http, spec, base, &members).await?;
    store.set_meta(&key, &newest.to_string()).await?;
    Ok(ExportReport {
        export: spec.name.clone(),
        mode: if incremental { "incremental" } else { "full" }.into(),
        members: members.len(),
        target,
        api_calls: calls,
        checkpoint: newest,
    })
}

/// E-mails that trusted events after `after` (up to `upto`) were about, each with whether
/// the school was seen deleting that member.
async fn changed_emails(
    hub: &Hub,
    trusted: &Trusted,
    after: i64,
    upto: i64,
) -> Result<BTreeMap<String, bool>, FlowsError> {
    let mut out = BTreeMap::new();
    let mut cursor = after;
    loop {
        let page = hub
            .events_store()
            .list_events(&EventFilter {
                after_seq: Some(cursor),
                oldest_first: true,
                limit: Some(1000),
                trusted: Some(trusted.clone()),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        for e in page.iter().filter(|e| e.seq <= upto) {
            if let Some(m) = &e.email {
                let deleted = out.entry(m.to_ascii_lowercase()).or_insert(false);
                *deleted |= e.kind == "member_deleted";
            }
        }
        if last >= upto {
            break;
        }
        cursor = last;
    }
    Ok(out)
}

/// One flat row per member and offer, for CSV.
fn csv_rows(members: &[Value]) -> Vec<[String; 8]> {
    let s = |v: &Value| match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut rows = Vec::new();
    for m in members {
        let base = [
            s(&m["email"]),
            s(&m["firstname"]),
            s(&m["name"]),
            if m["deleted"] == true {
                "yes".into()
            } else {
                String::new()
            },
        ];
        let offers = m["offers"].as_array().cloned().unwrap_or_default();
        let progress = m.get("progress").map(Value::to_string).unwrap_or_default();
        if offers.is_empty() {
            rows.push([
                base[0].clone(),
                base[1].clone(),
                base[2].clone(),
                base[3].clone(),
                String::new(),
                String::new(),
                String::new(),
                progress.clone(),
            ]);
        }
        for o in offers {
            rows.push([
                base[0].clone(),
                base[1].clone(),
                base[2].clone(),
                base[3].clone(),
                s(&o["offerId"]),
                s(&o["active"]),
                s(&o["expiresAt"]),
                progress.clone(),
            ]);
        }
    }
    rows
}

async fn write(
    http: &reqwest::Client,
    spec: &ExportSpec,
    base: Option<&std::path::Path>,
    members: &[Value],
) -> Result<String, FlowsError> {
    let fail = |m: String| FlowsError::Destination(m);
    match (&spec.file, &spec.url) {
        (Some(path), None) => {
            let path = match base {
                Some(b) if path.is_relative() => b.join(path),
                _ => path.clone(),
            };
            let format = spec.format.clone().unwrap_or_else(|| {
                if path.extension().is_some_and(|e| e == "json") {
                    "json"
                } else {
                    "csv"
                }
                .into()
            });
            // Written next to the target and renamed: a reader never sees half a file.
            let tmp = path.with_extension("partial");
            let cannot_write =
                |e: &dyn std::fmt::Display| fail(format!("cannot write {}: {e}", tmp.display()));
            match format.as_str() {
                "json" => {
                    let text =
                        serde_json::to_string_pretty(members).map_err(|e| cannot_write(&e))?;
                    std::fs::write(&tmp, text).map_err(|e| cannot_write(&e))?;
                }
                "csv" => {
                    let mut w = csv::Writer::from_path(&tmp).map_err(|e| cannot_write(&e))?;
                    w.write_record([
                        "email",
                        "first_name",
                        "last_name",
                        "deleted",
                        "offer_id",
                        "active",
                        "expires_at",
                        "progress",
                    ])
                    .map_err(|e| cannot_write(&e))?;
                    for r in csv_rows(members) {
                        w.write_record(&r).map_err(|e| cannot_write(&e))?;
                    }
                    w.flush().map_err(|e| cannot_write(&e))?;
                }
                other => {
                    return Err(fail(format!(
                        "export `{}`: format `{other}`; use csv or json",
                        spec.name
                    )));
                }
            }
            std::fs::rename(&tmp, &path)
                .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
            Ok(path.display().to_string())
        }
        (None, Some(url)) => {
            let mut req = http.post(url).json(members);
            for (k, v) in &spec.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            // The URL may carry a token in its query: messages name only the host.
            let resp = req.send().await.map_err(|e| {
                fail(format!(
                    "POST {host}: {}; the checkpoint was not moved",
                    without_url(&e)
                ))
            })?;
            if !resp.status().is_success() {
                return Err(fail(format!(
                    "POST {host} answered {}; the checkpoint was not moved",
                    resp.status()
                )));
            }
            Ok(host)
        }
        _ => Err(fail(format!(
            "export `{}`: give exactly one of `file` and `url`",
            spec.name
        ))),
    }
}
