//! Events: deliveries refused at the door, events by status (keyset paging by `seq`), an
//! event's detail (payload, history, tool calls linked to their audit records), replaying a
//! dead event (owner only, after a confirmation page), the rules file's sources with their
//! receiver URLs. A replay goes through [`memberspot_events::Events::replay`] like
//! `memberspot events replay` and is recorded in the audit log as `console:NAME`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use memberspot_hub::HubError;
use memberspot_hub::store::{EventFilter, EventStatus, StoredEvent};
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure};
use crate::form::{Change, Owner};
use crate::i18n::Lang;
use crate::layout::{View, badge, copy_field, empty, notice};
use crate::personas::actor;
use crate::session::Signed;

const PAGE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    replayed: Option<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    email: String,
    /// Refused deliveries older than this `seq` (their own paging).
    #[serde(default)]
    refused_before: Option<i64>,
}

/// Refused deliveries shown a page.
const REFUSED_PAGE: u32 = 20;

/// A text filter: `None` when empty.
fn given(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

pub(crate) fn status_kind(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Done | EventStatus::Ignored => "ok",
        EventStatus::Dead | EventStatus::Rejected | EventStatus::RefusedAmount => "failed",
        _ => "warning",
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn host_base(c: &Console, headers: &HeaderMap) -> String {
    if let Some(u) = &c.settings.public_url {
        return u.as_str().trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

pub async fn list(
    State(c): State<Arc<Console>>,
    s: Signed,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let status = q
        .status
        .as_deref()
        .filter(|x| !x.is_empty())
        .and_then(EventStatus::parse);
    let filter = EventFilter {
        statuses: status.into_iter().collect(),
        source: given(&q.source),
        order_id: given(&q.order),
        email: given(&q.email),
        before_seq: q.before,
        limit: Some(PAGE),
        ..EventFilter::default()
    };
    let store = c.hub.events_store();
    let events = match store.list_events(&filter).await {
        Ok(e) => e,
        Err(e) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let refused_list = match store
        .refused_deliveries_before(None, q.refused_before, REFUSED_PAGE)
        .await
    {
        Ok(r) => r,
        Err(e) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let v = View::signed(&c, &s, "/events");
    let base = host_base(&c, &headers);
    let sources: Vec<(String, String)> = c
        .events
        .get()
        .map(|ev| {
            ev.config()
                .sources
                .values()
                .map(|src| (src.name.clone(), src.provider.to_string()))
                .collect()
        })
        .unwrap_or_default();
    // The filters as a query string, for the paging links.
    let filters = {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        f.append_pair("status", status.map(|x| x.as_str()).unwrap_or(""));
        for (k, val) in [
            ("source", &q.source),
            ("order", &q.order),
            ("email", &q.email),
        ] {
            if !val.trim().is_empty() {
                f.append_pair(k, val.trim());
            }
        }
        f.finish()
    };
    let older_refused = (refused_list.len() as u32 == REFUSED_PAGE)
        .then(|| refused_list.last().map(|(seq, _)| *seq))
        .flatten();
    let older = (events.len() as u32 == PAGE)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    v.page(
        StatusCode::OK,
        &v.t("events-title"),
        html! {
            @if let Some(id) = &q.replayed {
                (notice("ok", &v.ta("events-replayed", &[("id", id.clone().into())])))
            }
            form.filters method="get" action="/events" {
                div {
                    label for="status" { (v.t("events-status")) }
                    select id="status" name="status" {
                        option value="" selected[status.is_none()] { (v.t("audit-any")) }
                        @for st in EventStatus::ALL {
                            option value=(st.as_str()) selected[status == Some(st)] { (v.label("event-status", st.as_str())) }
                        }
                    }
                }
                div {
                    label for="source" { (v.t("events-source")) }
                    input #source type="text" name="source" value=(q.source);
                }
                div {
                    label for="order" { (v.t("events-order")) }
                    input #order type="text" name="order" value=(q.order);
                }
                div {
                    label for="email" { (v.t("events-email")) }
                    input #email type="email" name="email" value=(q.email);
                }
                div { button type="submit" { (v.t("audit-filter")) } }
            }
            @if events.is_empty() {
                (empty(&v.t("events-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (v.t("audit-time")) }
                        th scope="col" { (v.t("events-source")) }
                        th scope="col" { (v.t("events-name")) }
                        th scope="col" { (v.t("events-order")) }
                        th scope="col" { (v.t("events-status")) }
                    } }
                    tbody { @for e in &events { (row(&v, e)) } }
                } }
                p {
                    @if let Some(seq) = older {
                        a href={ "/events?" (filters) "&before=" (seq) } { (v.t("events-older")) }
                    }
                    @if q.before.is_some() {
                        " " a href={ "/events?" (filters) } { (v.t("events-newest")) }
                    }
                }
            }
            h2 #refused { (v.t("events-refused")) }
            @if refused_list.is_empty() {
                (empty(&v.t("events-refused-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("audit-time")) }
                        th scope="col" { (v.t("events-source")) }
                        th scope="col" { (v.t("events-bytes")) }
                        th scope="col" { (v.t("events-reason")) }
                    } }
                    tbody { @for (_, d) in &refused_list {
                        tr {
                            td { (v.when(d.received_at)) }
                            td { (d.source) " (" (d.provider) ")" }
                            td.num { (crate::format::number(v.lang, d.body_bytes)) }
                            td { (d.error.clone().unwrap_or_default()) }
                        }
                    } }
                } }
                p {
                    @if let Some(seq) = older_refused {
                        a href={ "/events?" (filters) "&refused_before=" (seq) "#refused" } { (v.t("events-refused-older")) }
                    }
                    @if q.refused_before.is_some() {
                        " " a href={ "/events?" (filters) "#refused" } { (v.t("events-newest")) }
                    }
                }
            }
            h2 { (v.t("events-sources")) }
            @if sources.is_empty() {
                (empty(&v.t("events-sources-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("events-source")) }
                        th scope="col" { (v.t("events-provider")) }
                        th scope="col" { (v.t("events-receiver")) }
                    } }
                    tbody { @for (i, (name, provider)) in sources.iter().enumerate() {
                        tr {
                            td { (name) }
                            td { (provider) }
                            td {
                                (copy_field(&v, &format!("receiver-{i}"),
                                    &v.ta("events-receiver-of", &[("name", name.clone().into())]),
                                    &format!("{base}/hooks/{}", urlencode(name)), true))
                            }
                        }
                    } }
                } }
            }
        },
    )
}

fn row(v: &View<'_>, e: &StoredEvent) -> maud::Markup {
    html! {
        tr {
            td { a href={ "/events/" (urlencode(&e.id)) } { (e.seq) } }
            td { (v.when(e.received_at)) }
            td { (e.source) }
            td { a href={ "/events/" (urlencode(&e.id)) } { (e.name) } }
            td { (e.order_id.clone().unwrap_or_default()) }
            td { (badge(status_kind(e.status), &v.label("event-status", e.status.as_str()))) }
        }
    }
}

async fn load(c: &Console, lang: Lang, id: &str) -> Result<StoredEvent, HubError> {
    c.hub.events_store().get_event(id).await?.ok_or_else(|| {
        HubError::NotFound(c.i18n.text(lang, "events-unknown", &[("id", id.into())]))
    })
}

pub async fn detail(State(c): State<Arc<Console>>, s: Signed, Path(id): Path<String>) -> Response {
    let store = c.hub.events_store();
    let event = match load(&c, s.lang, &id).await {
        Ok(e) => e,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let (history, actions) = match (store.event_log(&id).await, store.event_actions(&id).await) {
        (Ok(h), Ok(a)) => (h, a),
        (Err(e), _) | (_, Err(e)) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let mut calls = Vec::new();
    for a in &actions {
        let filter = memberspot_hub::store::AuditFilter {
            request_id: Some(a.request_id.clone()),
            limit: Some(10),
            ..memberspot_hub::store::AuditFilter::default()
        };
        match c.hub.audit(&filter).await {
            Ok(records) => calls.push((a, records.into_iter().map(|r| r.seq).collect::<Vec<_>>())),
            Err(e) => return failure(&c, s.lang, &e),
        }
    }
    let delivery = match &event.delivery_id {
        Some(d) => match store.get_delivery(d).await {
            Ok(x) => x,
            Err(e) => return failure(&c, s.lang, &HubError::from(e)),
        },
        None => None,
    };
    let body = delivery
        .as_ref()
        .and_then(|d| d.body.as_ref())
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let payload = serde_json::to_string_pretty(&event.data).unwrap_or_default();
    // The decision: what the last entry that ended the event says (which rule, what it
    // planned, or why nothing); retries and hand-overs decide nothing.
    let decision = history.iter().rev().find_map(|h| {
        let status = EventStatus::parse(&h.outcome)?;
        let decided = !matches!(
            status,
            EventStatus::Pending | EventStatus::Processing | EventStatus::Retry
        );
        decided.then_some(h.detail.as_str())
    });
    let v = View::signed(&c, &s, "/events");
    v.page(
        StatusCode::OK,
        &v.ta("events-detail-title", &[("name", event.name.clone().into())]),
        html! {
            dl.record {
                div { dt { (v.t("field-id")) } dd { code { (event.id) } } }
                div { dt { (v.t("events-status")) } dd { (badge(status_kind(event.status), &v.label("event-status", event.status.as_str()))) } }
                div { dt { (v.t("events-source")) } dd { (event.source) " (" (event.provider) ")" } }
                div { dt { (v.t("audit-time")) } dd { (v.when(event.received_at)) } }
                div { dt { (v.t("events-order")) } dd { (event.order_id.clone().unwrap_or_default()) } }
                div { dt { (v.t("events-email")) } dd { (event.email.clone().unwrap_or_default()) } }
                div { dt { (v.t("events-attempts")) } dd { (event.attempts) } }
                @if let Some(err) = &event.last_error { div { dt { (v.t("events-error")) } dd { (err) } } }
                @if let Some(r) = &event.refusal { div { dt { (v.t("events-reason")) } dd { (r) } } }
                @match decision {
                    Some(d) => div { dt { (v.t("events-decision")) } dd { (d) } },
                    // Final without a word in its history (stored so, or imported): the
                    // status and its error say it.
                    None => @if matches!(event.status, EventStatus::Pending | EventStatus::Processing | EventStatus::Retry) {
                        div { dt { (v.t("events-decision")) } dd { (v.t("events-decision-none")) } }
                    },
                }
            }
            p {
                @if event.status == EventStatus::Dead && s.is_owner() {
                    a.button href={ "/events/" (urlencode(&event.id)) "/replay" } { (v.t("events-replay")) } " "
                }
                @if c.events.get().is_some() {
                    a.button.secondary href={ "/events/" (urlencode(&event.id)) "/dry-run" } { (v.t("events-dry-run")) }
                }
            }
            @if event.status == EventStatus::Dead && !s.is_owner() {
                (notice("warning", &v.t("events-dead-viewer")))
            }
            h2 { (v.t("events-payload")) }
            pre.payload { (payload) }
            @if let Some(d) = &delivery {
                h2 { (v.t("events-delivery")) }
                p { (v.when(d.received_at)) " · " (d.body_bytes) " " (v.t("events-bytes")) " · " (v.label("verification", d.verification.as_str())) }
                @if let Some(b) = &body { pre.payload { (b) } }
            }
            h2 { (v.t("events-history")) }
            @if history.is_empty() {
                (empty(&v.t("events-history-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("audit-time")) }
                        th scope="col" { (v.t("events-by")) }
                        th scope="col" { (v.t("events-attempts")) }
                        th scope="col" { (v.t("audit-outcome")) }
                        th scope="col" { (v.t("events-detail")) }
                    } }
                    tbody { @for h in &history {
                        tr { td { (v.when(h.at)) } td { (h.worker) } td { (h.attempt) } td { (v.label("event-status", &h.outcome)) } td { (h.detail) } }
                    } }
                } }
            }
            h2 { (v.t("events-calls")) }
            @if calls.is_empty() {
                (empty(&v.t("events-calls-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (v.t("audit-tool")) }
                        th scope="col" { (v.t("events-status")) }
                        th scope="col" { (v.t("events-detail")) }
                        th scope="col" { (v.t("nav-audit")) }
                    } }
                    tbody { @for (a, seqs) in &calls {
                        tr {
                            td { (a.step) }
                            td { code { (a.tool) } }
                            td { (v.label("action-state", &a.state)) }
                            td { (a.detail.clone().unwrap_or_default()) }
                            td { @for seq in seqs { a href={ "/audit/" (seq) } { (seq) } " " } }
                        }
                    } }
                } }
            }
            p { a href="/events" { (v.t("back")) } }
        },
    )
}

pub async fn confirm_replay(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(id): Path<String>,
) -> Response {
    let event = match load(&c, s.lang, &id).await {
        Ok(e) => e,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let v = View::signed(&c, &s, "/events");
    v.page(
        StatusCode::OK,
        &v.ta(
            "events-replay-title",
            &[("name", event.name.clone().into())],
        ),
        html! {
            p { (v.t("events-replay-explain")) }
            form method="post" action={ "/events/" (urlencode(&event.id)) "/replay" } {
                input type="hidden" name="csrf" value=(s.csrf);
                button type="submit" { (v.t("events-replay-confirm")) }
            }
            p { a href={ "/events/" (urlencode(&event.id)) } { (v.t("back")) } }
        },
    )
}

pub async fn replay(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    let who = actor(&s);
    let result = match c.events.get() {
        Some(events) => events.replay(&id, &who).await,
        // Without the events service (tests, tools): queued in the store; the workers
        // of the serving process find it on their next look.
        None => memberspot_events::replay_event(&c.hub, &who, &id).await,
    };
    match result {
        Ok(_) => Redirect::to(&format!("/events?replayed={}", urlencode(&id))).into_response(),
        Err(e) => failure(&c, s.lang, &e),
    }
}

/// What processing the event would do now under the running rules, from its order's
/// stored state ([`memberspot_events::Events::preview`], the workers' own checks and
/// decision): which rule, which tool calls. Changes nothing, so viewers may look too.
pub async fn dry_run(State(c): State<Arc<Console>>, s: Signed, Path(id): Path<String>) -> Response {
    let Some(events) = c.events.get() else {
        return failure(
            &c,
            s.lang,
            &HubError::NotFound(c.i18n.text(s.lang, "events-not-running", &[])),
        );
    };
    let event = match load(&c, s.lang, &id).await {
        Ok(e) => e,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let p = match events.preview(&id).await {
        Ok(p) => p,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let v = View::signed(&c, &s, "/events");
    let json = |x: &serde_json::Value| serde_json::to_string(x).unwrap_or_default();
    v.page(
        StatusCode::OK,
        &v.ta("events-dry-run-title", &[("name", event.name.clone().into())]),
        html! {
            (notice("warning", &v.t("events-dry-run-note")))
            @for caveat in &p.caveats { (notice("warning", caveat)) }
            dl.record {
                div { dt { (v.t("events-rule")) } dd {
                    @match &p.rule {
                        Some(r) => (v.ta("events-rule-line", &[
                            ("index", r.index.into()), ("line", r.line.into()),
                            ("product", r.product.clone().into()), ("offer", r.offer.clone().into()),
                        ])),
                        None => (v.t("events-rule-none")),
                    }
                } }
                div { dt { (v.t("events-outcome")) } dd {
                    @match p.final_status {
                        Some(st) => (badge(status_kind(st), &v.label("event-status", st.as_str()))),
                        None => (v.ta("events-would-call", &[("count", p.calls.len().into())])),
                    }
                } }
                div { dt { (v.t("events-detail")) } dd { (p.note) } }
                @if let Some(now) = &p.order_state {
                    div { dt { (v.t("events-order-state")) } dd {
                        (now) @if let Some(after) = &p.new_state { " → " (after) }
                    } }
                }
            }
            @if p.resumes_plan { (notice("warning", &v.t("events-dry-run-resumes"))) }
            h2 { (v.t("events-calls")) }
            @if p.calls.is_empty() {
                (empty(&v.t("events-dry-run-no-calls")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (v.t("audit-tool")) }
                        th scope="col" { (v.t("audit-arguments")) }
                        @if p.resumes_plan { th scope="col" { (v.t("events-status")) } }
                    } }
                    tbody { @for (i, call) in p.calls.iter().enumerate() {
                        tr {
                            td { (i) }
                            td { code { (call.tool) } }
                            td { code { (json(&call.args)) } }
                            @if p.resumes_plan { td { (call.state.as_deref().map(|st| v.label("action-state", st)).unwrap_or_default()) } }
                        }
                    } }
                } }
            }
            p { a href={ "/events/" (urlencode(&event.id)) } { (v.t("back")) } }
        },
    )
}
