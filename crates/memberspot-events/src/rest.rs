//! REST routes of the event store (admin token): list, show, replay, dead letters and a
//! dry run of the rules. Merged into the hub's `/openapi.json`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use memberspot_hub::store::{EventFilter, EventStatus};
use memberspot_server::http::HttpError;
use memberspot_server::http::auth::AdminAuth;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Events;

#[derive(OpenApi)]
#[openapi(
    paths(crate::receiver::receive),
    tags(
        (name = "events", description = "Webhook and poller events, their processing and the tool calls they caused (admin token)"),
        (name = "webhooks", description = "Where payment providers and Memberspot deliver (see docs/events.md); no token, each source verifies its own")
    )
)]
struct EventsDoc;

/// The routes and their OpenAPI document.
pub fn routes(events: Events) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(EventsDoc::openapi())
        .routes(routes!(list_events))
        .routes(routes!(dead_events))
        .routes(routes!(refused_deliveries))
        .routes(routes!(dry_run))
        .routes(routes!(show_event))
        .routes(routes!(replay_event))
        .split_for_parts();
    (router.with_state(events), api)
}

/// Event filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Comma-separated: pending, processing, retry, done, unmatched, ignored, rejected, dead
    status: Option<String>,
    source: Option<String>,
    /// purchase, refund, chargeback, member_created, ...
    kind: Option<String>,
    email: Option<String>,
    order_id: Option<String>,
    /// RFC 3339 time or epoch milliseconds
    since: Option<String>,
    until: Option<String>,
    /// Only events older than this sequence number (paging backwards)
    before_seq: Option<i64>,
    /// Only events newer than this sequence number, oldest first (following the stream)
    after_seq: Option<i64>,
    /// At most this many events (default 100, max 10000)
    limit: Option<u32>,
}

impl EventQuery {
    fn filter(&self) -> Result<EventFilter, HttpError> {
        let statuses = match &self.status {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    EventStatus::parse(s).ok_or_else(|| {
                        HttpError::field(
                            StatusCode::BAD_REQUEST,
                            "invalid_query",
                            "status",
                            format!(
                                "unknown status `{s}`; use {}",
                                EventStatus::ALL.map(|v| v.as_str()).join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(EventFilter {
            statuses,
            source: self.source.clone(),
            kind: self.kind.clone(),
            email: self.email.clone(),
            order_id: self.order_id.clone(),
            since: memberspot_server::http::query_time("since", self.since.as_deref())?,
            until: memberspot_server::http::query_time("until", self.until.as_deref())?,
            finished_since: None,
            before_seq: self.before_seq,
            after_seq: self.after_seq,
            oldest_first: self.after_seq.is_some(),
            limit: self.limit,
            trusted: None,
        })
    }
}

#[utoipa::path(get, path = "/v1/events", tag = "events", security(("admin" = [])), params(EventQuery),
    responses((status = 200, description = "matching events, newest first"), (status = 400)))]
async fn list_events(
    State(events): State<Events>,
    _: AdminAuth,
    Query(q): Query<EventQuery>,
) -> Result<Json<Value>, HttpError> {
    let list = events.list(&q.filter()?).await?;
    Ok(Json(json!({ "events": list })))
}

#[utoipa::path(get, path = "/v1/events/dead", tag = "events", security(("admin" = [])), params(EventQuery),
    responses((status = 200, description = "dead-lettered events, newest first")))]
async fn dead_events(
    State(events): State<Events>,
    _: AdminAuth,
    Query(q): Query<EventQuery>,
) -> Result<Json<Value>, HttpError> {
    let mut f = q.filter()?;
    f.statuses = vec![EventStatus::Dead];
    let list = events.list(&f).await?;
    Ok(Json(json!({ "events": list })))
}

/// Which refused deliveries to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RefusedQuery {
    /// Only this webhook source
    source: Option<String>,
    /// At most this many (default 50)
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/events/refused", tag = "events", security(("admin" = [])), params(RefusedQuery),
    responses((status = 200, description = "deliveries refused before they became events (bad signature or token, too large, another shop), newest first: source, time, size and reason", body = [crate::service::RefusedDelivery])))]
async fn refused_deliveries(
    State(events): State<Events>,
    _: AdminAuth,
    Query(q): Query<RefusedQuery>,
) -> Result<Json<Value>, HttpError> {
    let list = events
        .refused(q.source.as_deref(), q.limit.unwrap_or(50))
        .await?;
    Ok(Json(json!({ "refused": list })))
}

#[utoipa::path(get, path = "/v1/events/dry-run", tag = "events", security(("admin" = [])), params(EventQuery),
    responses((status = 200, description = "what each stored event would do under the loaded rules (nothing is written)")))]
async fn dry_run(
    State(events): State<Events>,
    _: AdminAuth,
    Query(q): Query<EventQuery>,
) -> Result<Json<Value>, HttpError> {
    let lines = events.dry_run(&q.filter()?).await?;
    Ok(Json(json!({ "events": lines })))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", security(("admin" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "the event, its delivery, history, tool calls and their audit records"), (status = 404)))]
async fn show_event(
    State(events): State<Events>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let detail = events.show(&id).await?;
    Ok(Json(serde_json::to_value(detail).unwrap_or_default()))
}

#[utoipa::path(post, path = "/v1/events/{id}/replay", tag = "events", security(("admin" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "queued again"), (status = 404), (status = 409, description = "being processed right now")))]
async fn replay_event(
    State(events): State<Events>,
    admin: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let e = events.replay(&id, &admin.actor()).await?;
    Ok(Json(json!({ "event": e })))
}
