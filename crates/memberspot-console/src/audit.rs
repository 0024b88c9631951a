//! The audit log: filters, newest first with keyset pagination (`before=SEQ`), a record's
//! detail, and verifying the chain. An offer id in a record's arguments is shown with the
//! offer's name: one read of each school's offers per page view, never one per row.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDateTime, TimeZone};
use maud::{Markup, html};
use memberspot_hub::CallContext;
use memberspot_hub::offer_names::{self, OfferNamesByConnection, offer_ids_in};
use memberspot_hub::store::{
    AuditFilter, AuditOutcome, AuditRecord, ChainHead, StoredText, Surface,
};
use serde::Deserialize;

use crate::Console;
use crate::auth::failure;
use crate::i18n::Lang;
use crate::layout::{View, badge, empty, notice};
use crate::session::Signed;

const PAGE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    persona: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    surface: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    request_id: String,
    /// Keyset: records with a smaller seq than this.
    #[serde(default)]
    before: Option<i64>,
}

pub(crate) fn outcome_kind(o: AuditOutcome) -> &'static str {
    match o {
        AuditOutcome::Ok => "ok",
        AuditOutcome::Denied | AuditOutcome::Invalid => "warning",
        AuditOutcome::ToolError | AuditOutcome::Cancelled => "failed",
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A `datetime-local` value (`2026-12-04T10:30`) in the console's time zone.
fn local_time(console: &Console, lang: Lang, field: &str, v: &str) -> Result<Option<i64>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let parsed = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"));
    let args = [("field", field.into()), ("value", v.into())];
    let Ok(naive) = parsed else {
        return Err(console.i18n.text(lang, "error-not-date-time", &args));
    };
    console
        .settings
        .time_zone
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| Some(t.timestamp_millis()))
        .ok_or_else(|| console.i18n.text(lang, "error-not-in-time-zone", &args))
}

/// Who a record is about: the persona, or the actor of an admin action (`console:anna`).
fn who(r: &AuditRecord) -> String {
    r.persona
        .clone()
        .or_else(|| r.end_user.clone())
        .unwrap_or_else(|| "—".into())
}

/// The offer names of the schools a page shows, read as their operator under the signed-in
/// console user.
pub(crate) fn offer_names(c: &Console, s: &Signed) -> OfferNamesByConnection {
    let mut ctx = CallContext::new(Surface::Console);
    ctx.end_user = Some(format!("console:{}", s.name));
    OfferNamesByConnection::new(&c.hub, ctx)
}

/// The offers `r`'s arguments name, `Name (id)` where the school knows the name.
fn offers_of(r: &AuditRecord, names: &BTreeMap<String, String>) -> Vec<String> {
    offer_ids_in(&r.arguments)
        .into_iter()
        .map(|id| offer_names::label(&id, names.get(&id).map(String::as_str)))
        .collect()
}

fn query_string(q: &AuditQuery, before: Option<i64>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("persona", &q.persona),
        ("tool", &q.tool),
        ("outcome", &q.outcome),
        ("surface", &q.surface),
        ("since", &q.since),
        ("until", &q.until),
        ("request_id", &q.request_id),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    if let Some(b) = before {
        s.append_pair("before", &b.to_string());
    }
    s.finish()
}

fn filters(v: &View<'_>, q: &AuditQuery) -> Markup {
    html! {
        form.filters method="get" action="/audit" {
            div { label for="f-persona" { (v.t("audit-persona")) } input #f-persona type="text" name="persona" value=(q.persona); }
            div { label for="f-tool" { (v.t("audit-tool")) } input #f-tool type="text" name="tool" value=(q.tool); }
            div {
                label for="f-outcome" { (v.t("audit-outcome")) }
                select #f-outcome name="outcome" {
                    option value="" { (v.t("audit-any")) }
                    @for o in AuditOutcome::ALL { option value=(o.as_str()) selected[q.outcome == o.as_str()] { (v.label("outcome", o.as_str())) } }
                }
            }
            div {
                label for="f-surface" { (v.t("audit-surface")) }
                select #f-surface name="surface" {
                    option value="" { (v.t("audit-any")) }
                    @for su in Surface::ALL { option value=(su.as_str()) selected[q.surface == su.as_str()] { (v.label("surface", su.as_str())) } }
                }
            }
            div { label for="f-since" { (v.t("audit-since")) } input #f-since type="datetime-local" name="since" value=(q.since); }
            div { label for="f-until" { (v.t("audit-until")) } input #f-until type="datetime-local" name="until" value=(q.until); }
            div { button type="submit" { (v.t("audit-filter")) } }
        }
    }
}

/// The filter of the query, or what is wrong with it (naming the field).
fn parse_filter(c: &Console, lang: Lang, q: &AuditQuery) -> Result<AuditFilter, String> {
    let since_ms = local_time(c, lang, "since", &q.since)?;
    let until_ms = local_time(c, lang, "until", &q.until)?;
    let use_one_of = |field: &str, choices: String| {
        c.i18n.text(
            lang,
            "error-use-choices",
            &[("field", field.into()), ("choices", choices.into())],
        )
    };
    if !q.outcome.is_empty() && AuditOutcome::parse(&q.outcome).is_none() {
        return Err(use_one_of(
            "outcome",
            <AuditOutcome as StoredText>::choices(),
        ));
    }
    if !q.surface.is_empty() && Surface::parse(&q.surface).is_none() {
        return Err(use_one_of("surface", <Surface as StoredText>::choices()));
    }
    Ok(AuditFilter {
        persona: some(&q.persona),
        request_id: some(&q.request_id),
        tool: some(&q.tool),
        outcome: some(&q.outcome),
        surface: some(&q.surface),
        since_ms,
        until_ms,
        after_seq: None,
        before_seq: q.before,
        limit: Some(PAGE + 1),
        newest_first: true,
    })
}

pub async fn list(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<AuditQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/audit");
    let filter = match parse_filter(&c, s.lang, &q) {
        Ok(f) => f,
        Err(msg) => {
            return v.page(
                StatusCode::BAD_REQUEST,
                &v.t("audit-title"),
                html! { (filters(&v, &q)) (notice("failed", &msg)) },
            );
        }
    };
    let mut records = match c.hub.audit(&filter).await {
        Ok(r) => r,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let more = records.len() > PAGE as usize;
    records.truncate(PAGE as usize);
    let older = more.then(|| records.last().map(|r| r.seq)).flatten();
    let names = offer_names(&c, &s).in_records(&records).await;
    v.page(
        StatusCode::OK,
        &v.t("audit-title"),
        html! {
            (filters(&v, &q))
            p.links {
                a href="/audit/verify" { (v.t("audit-verify")) }
                " · "
                a href={ "/audit/export?format=csv&" (query_string(&q, None)) } { (v.t("audit-export-csv")) }
                " · "
                a href={ "/audit/export?format=jsonl&" (query_string(&q, None)) } { (v.t("audit-export-jsonl")) }
            }
            @if records.is_empty() {
                (empty(&v.t("audit-empty")))
            } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "#" }
                            th scope="col" { (v.t("audit-time")) }
                            th scope="col" { (v.t("audit-surface")) }
                            th scope="col" { (v.t("audit-who")) }
                            th scope="col" { (v.t("audit-tool")) }
                            th scope="col" { (v.t("audit-offer")) }
                            th scope="col" { (v.t("audit-outcome")) }
                            th scope="col" { (v.t("audit-latency")) }
                        } }
                        tbody {
                            @for (r, names) in records.iter().zip(&names) {
                                tr {
                                    td { a href={ "/audit/" (r.seq) } { (r.seq) } }
                                    td { (v.when(r.at)) }
                                    td { (v.label("surface", r.surface.as_str())) }
                                    td { (who(r)) }
                                    td { code { (r.tool) } }
                                    td { @for (i, offer) in offers_of(r, names).iter().enumerate() { @if i > 0 { br; } (offer) } }
                                    td { (badge(outcome_kind(r.outcome), &v.label("outcome", r.outcome.as_str()))) }
                                    td.num { (v.ms(r.latency_ms)) }
                                }
                            }
                        }
                    }
                }
                nav.pages {
                    @if q.before.is_some() { a href={ "/audit?" (query_string(&q, None)) } { (v.t("audit-newest")) } }
                    @if let Some(seq) = older { a href={ "/audit?" (query_string(&q, Some(seq))) } { (v.t("audit-older")) } }
                }
            }
        },
    )
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub async fn detail(State(c): State<Arc<Console>>, s: Signed, Path(seq): Path<String>) -> Response {
    let v = View::signed(&c, &s, "/audit");
    let Ok(seq) = seq.parse::<i64>() else {
        return v.message(StatusCode::NOT_FOUND, "error-title", &v.t("not-found"));
    };
    let filter = AuditFilter {
        after_seq: Some(seq.saturating_sub(1)),
        limit: Some(1),
        ..AuditFilter::default()
    };
    let record = match c.hub.audit(&filter).await {
        Ok(r) => r.into_iter().find(|r| r.seq == seq),
        Err(e) => return failure(&c, s.lang, &e),
    };
    let Some(r) = record else {
        return v.message(StatusCode::NOT_FOUND, "error-title", &v.t("not-found"));
    };
    let names = offer_names(&c, &s).in_record(&r).await;
    let offers = offers_of(&r, &names);
    let row = |label: String, value: Markup| html! { div { dt { (label) } dd { (value) } } };
    v.page(
        StatusCode::OK,
        &v.ta("audit-record", &[("seq", r.seq.into())]),
        html! {
            dl.record {
                (row(v.t("audit-time"), html! { (v.when(r.at)) }))
                (row(v.t("audit-surface"), html! { (v.label("surface", r.surface.as_str())) }))
                (row(v.t("audit-who"), html! { (who(&r)) }))
                (row(v.t("audit-tool"), html! { code { (r.tool) } }))
                @if !offers.is_empty() { (row(v.t("audit-offer"), html! { (offers.join(", ")) })) }
                (row(v.t("audit-outcome"), badge(outcome_kind(r.outcome), &v.label("outcome", r.outcome.as_str()))))
                (row(v.t("audit-latency"), html! { (v.ms(r.latency_ms)) }))
                (row(v.t("audit-connection"), html! { (r.connection.as_deref().unwrap_or("—")) }))
                (row(v.t("audit-end-user"), html! { (r.end_user.as_deref().unwrap_or("—")) }))
                @if let Some(client) = &r.oauth_client {
                    (row(v.t("audit-oauth-client"), html! { (client) }))
                }
                (row(v.t("audit-request"), html! { a href={ "/audit?request_id=" (r.request_id) } { code { (r.request_id) } } }))
                (row(v.t("audit-hash"), html! { code.hash { (r.hash) } }))
            }
            @if let Some(p) = &r.prompt { h2 { (v.t("audit-prompt")) } pre { (p) } }
            h2 { (v.t("audit-arguments")) }
            pre { (pretty(&r.arguments)) }
            @if let Some(resp) = &r.response { h2 { (v.t("audit-response")) } pre { (pretty(resp)) } }
            @if let Some(e) = &r.error { h2 { (v.t("audit-error")) } pre.failed { (e) } }
            p { a href="/audit" { (v.t("back")) } }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct VerifyQuery {
    /// `SEQ:HASH` kept outside the database (`memberspot audit anchor`, the digest).
    #[serde(default)]
    anchor: String,
}

pub async fn verify(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<VerifyQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/audit");
    let form = html! {
        form.filters method="get" action="/audit/verify" {
            div {
                label for="anchor" { (v.t("audit-anchor")) }
                input #anchor type="text" name="anchor" value=(q.anchor) placeholder="SEQ:HASH" spellcheck="false";
            }
            div { button type="submit" { (v.t("audit-verify")) } }
        }
    };
    let anchor = match q.anchor.trim() {
        "" => None,
        a => match a.parse::<ChainHead>() {
            Ok(h) => Some(h),
            Err(_) => {
                let msg = v.ta("audit-anchor-invalid", &[("value", a.to_owned().into())]);
                return v.page(
                    StatusCode::BAD_REQUEST,
                    &v.t("audit-verify"),
                    html! { (form) (notice("failed", &msg)) },
                );
            }
        },
    };
    let result = match c.hub.verify_audit(anchor.as_ref()).await {
        Ok(r) => r,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let body = if result.ok {
        notice(
            "ok",
            &v.ta(
                "audit-verify-ok",
                &[
                    ("records", (result.records as i64).into()),
                    ("head", result.head.to_string().into()),
                ],
            ),
        )
    } else {
        notice(
            "failed",
            &v.ta(
                "audit-verify-bad",
                &[
                    ("seq", result.first_bad_seq.unwrap_or_default().into()),
                    ("problem", result.problem.clone().unwrap_or_default().into()),
                ],
            ),
        )
    };
    v.page(
        StatusCode::OK,
        &v.t("audit-verify"),
        html! {
            (body)
            @if let Some(a) = &anchor { p { (v.ta("audit-anchor-checked", &[("anchor", a.to_string().into())])) } }
            (form)
            p { a href="/audit" { (v.t("back")) } }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct ExportQuery {
    #[serde(default)]
    format: String,
    #[serde(flatten)]
    filter: AuditQuery,
}

/// The filtered view as CSV (neutralised for spreadsheets) or JSON lines, oldest first,
/// every matching record (read and sent 10,000 at a time): the same files as `audit
/// export` and `/v1/audit/export`.
pub async fn export(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<ExportQuery>,
) -> Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    use futures::TryStreamExt;
    use memberspot_hub::admin::{AuditExportFormat, audit_export_pages};
    let v = View::signed(&c, &s, "/audit");
    let mut filter = match parse_filter(&c, s.lang, &q.filter) {
        Ok(f) => f,
        Err(msg) => return v.message(StatusCode::BAD_REQUEST, "error-title", &msg),
    };
    let name = if q.format.is_empty() {
        "jsonl"
    } else {
        q.format.as_str()
    };
    let Some(format) = AuditExportFormat::parse(name) else {
        let msg = v.ta(
            "error-use-either",
            &[
                ("field", "format".into()),
                ("value", name.into()),
                ("first", "csv".into()),
                ("second", "jsonl".into()),
            ],
        );
        return v.message(StatusCode::BAD_REQUEST, "error-title", &msg);
    };
    // The whole filtered view, not the page on screen.
    filter.before_seq = None;
    filter.after_seq = None;
    let pages = match audit_export_pages(c.hub.clone(), filter, None, format).await {
        Ok(pages) => pages.inspect_err(|e| tracing::warn!(error = %e, "audit export stopped")),
        Err(e) => return failure(&c, s.lang, &e),
    };
    let disposition = format!("attachment; filename=\"{}\"", format.file_name());
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        axum::body::Body::from_stream(pages),
    )
        .into_response()
}
