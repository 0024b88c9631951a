//! Events: deliveries refused at the door, events by status (keyset paging by `seq`), an
//! event's detail (payload, history, tool calls linked to their audit records), replaying a
//! dead event (owner only, after a confirmation page), the rules file's sources with their
//! receiver URLs. A replay goes through [`memberspot_events::Events::replay`] like
//! `memberspot events replay` and is recorded in the audit log as `console:NAME`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use maud::html;
use memberspot_hub::HubError;
use memberspot_hub::store::{EventFilter, EventStatus, StoredEvent};
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure, refused};
use crate::layout::{View, badge, empty, notice};
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
        before_seq: q.before,
        limit: Some(PAGE),
        ..EventFilter::default()
    };
    let store = c.hub.events_store();
    let events = match store.list_events(&filter).await {
        Ok(e) => e,
        Err(e) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let refused_list = match store.refused_deliveries(None, 20).await {
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
    let status_q = status.map(|x| x.as_str()).unwrap_or("");
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
                            option value=(st.as_str()) selected[status == Some(st)] { (st.as_str()) }
                        }
                    }
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
                        a href={ "/events?status=" (status_q) "&before=" (seq) } { (v.t("events-older")) }
                    }
                    @if q.before.is_some() {
                        " " a href={ "/events?status=" (status_q) } { (v.t("events-newest")) }
                    }
                }
            }
            h2 { (v.t("events-refused")) }
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
                    tbody { @for d in &refused_list {
                        tr {
                            td { (v.when(d.received_at)) }
                            td { (d.source) " (" (d.provider) ")" }
                            td { (d.body_bytes) }
                            td { (d.error.clone().unwrap_or_default()) }
                        }
                    } }
                } }
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
                    tbody { @for (name, provider) in &sources {
                        tr {
                            td { (name) }
                            td { (provider) }
                            td { code { (base) "/hooks/" (urlencode(name)) } }
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
            td { (badge(status_kind(e.status), e.status.as_str())) }
        }
    }
}

async fn load(c: &Console, id: &str) -> Result<StoredEvent, HubError> {
    c.hub
        .events_store()
        .get_event(id)
        .await?
        .ok_or_else(|| HubError::NotFound(format!("no event with id `{id}`")))
}

pub async fn detail(State(c): State<Arc<Console>>, s: Signed, Path(id): Path<String>) -> Response {
    let store = c.hub.events_store();
    let event = match load(&c, &id).await {
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
    let v = View::signed(&c, &s, "/events");
    v.page(
        StatusCode::OK,
        &v.ta("events-detail-title", &[("name", event.name.clone().into())]),
        html! {
            dl.record {
                div { dt { "id" } dd { code { (event.id) } } }
                div { dt { (v.t("events-status")) } dd { (badge(status_kind(event.status), event.status.as_str())) } }
                div { dt { (v.t("events-source")) } dd { (event.source) " (" (event.provider) ")" } }
                div { dt { (v.t("audit-time")) } dd { (v.when(event.received_at)) } }
                div { dt { (v.t("events-order")) } dd { (event.order_id.clone().unwrap_or_default()) } }
                div { dt { (v.t("events-email")) } dd { (event.email.clone().unwrap_or_default()) } }
                div { dt { (v.t("events-attempts")) } dd { (event.attempts) } }
                @if let Some(err) = &event.last_error { div { dt { (v.t("events-error")) } dd { (err) } } }
                @if let Some(r) = &event.refusal { div { dt { (v.t("events-reason")) } dd { (r) } } }
            }
            @if event.status == EventStatus::Dead {
                @if s.is_owner() {
                    p { a.button href={ "/events/" (urlencode(&event.id)) "/replay" } { (v.t("events-replay")) } }
                } @else {
                    (notice("warning", &v.t("events-dead-viewer")))
                }
            }
            h2 { (v.t("events-payload")) }
            pre.payload { (payload) }
            @if let Some(d) = &delivery {
                h2 { (v.t("events-delivery")) }
                p { (v.when(d.received_at)) " · " (d.body_bytes) " " (v.t("events-bytes")) " · " (d.verification.as_str()) }
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
                        tr { td { (v.when(h.at)) } td { (h.worker) } td { (h.attempt) } td { (h.outcome) } td { (h.detail) } }
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
                            td { (a.state) }
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
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    if !s.is_owner() {
        return refused(&c, s.lang, crate::session::Refusal::Viewer);
    }
    let event = match load(&c, &id).await {
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
    s: Signed,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = c.check_change(&s, &headers, &f.csrf) {
        return refused(&c, s.lang, r);
    }
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
