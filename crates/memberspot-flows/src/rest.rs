//! REST routes of flows and the daily summary (admin token), merged into `/openapi.json`.

use axum::Json;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use memberspot_hub::Hub;
use memberspot_server::http::HttpError;
use memberspot_server::http::auth::AdminAuth;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Target, Trigger};
use crate::runner::RunError;
use crate::service::Flows;

impl FromRef<Flows> for Hub {
    fn from_ref(flows: &Flows) -> Hub {
        flows.hub().clone()
    }
}

#[derive(OpenApi)]
#[openapi(tags((name = "flows", description = "Flows, their runs, and the daily summary (admin token)")))]
struct FlowsDoc;

/// The routes and their OpenAPI document.
pub fn routes(flows: Flows) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(FlowsDoc::openapi())
        .routes(routes!(list_flows))
        .routes(routes!(run_flow))
        .routes(routes!(list_runs))
        .routes(routes!(show_run))
        .routes(routes!(digest))
        .split_for_parts();
    (router.with_state(flows), api)
}

#[utoipa::path(get, path = "/v1/flows", tag = "flows", security(("admin" = [])),
    responses((status = 200, description = "configured flows with their triggers and next runs (`next_run`: epoch milliseconds, like every time the hub records)")))]
async fn list_flows(State(flows): State<Flows>, _: AdminAuth) -> Json<Value> {
    let now = chrono::Utc::now();
    let list: Vec<Value> = flows
        .config()
        .flows
        .iter()
        .map(|f| {
            let (trigger, next) = match &f.trigger {
                Trigger::Cron { schedule, .. } => (
                    json!({"cron": schedule.expr(), "timezone": schedule.timezone().name()}),
                    schedule.next_after(now).map(|t| t.timestamp_millis()),
                ),
                Trigger::Event { kind, source } => (json!({"event": kind, "source": source}), None),
                Trigger::Manual => (json!({"manual": true}), None),
            };
            json!({"name": f.name, "description": f.description, "persona": f.persona,
                   "trigger": trigger, "next_run": next, "steps": f.steps.iter().map(|s| json!({"name": s.name, "kind": s.action.kind()})).collect::<Vec<_>>()})
        })
        .collect();
    let digest = flows.config().digest.as_ref().map(|d| {
        json!({"enabled": d.enabled, "cron": d.schedule.expr(), "timezone": d.timezone,
               "next_run": d.schedule.next_after(now).map(|t| t.timestamp_millis())})
    });
    Json(json!({"flows": list, "digest": digest}))
}

/// Run a flow now.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// Show what would be written without writing (read-only tools still run).
    #[serde(default)]
    dry_run: bool,
    /// Available to templates as `input`.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Option<Value>,
}

#[utoipa::path(post, path = "/v1/flows/{name}/run", tag = "flows", security(("admin" = [])),
    params(("name" = String, Path)), request_body = RunBody,
    responses((status = 200, description = "the run with every step"), (status = 404), (status = 409, description = "the flow is running")))]
async fn run_flow(
    State(flows): State<Flows>,
    _: AdminAuth,
    Path(name): Path<String>,
    body: Option<Json<RunBody>>,
) -> Result<Json<Value>, HttpError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let report = flows
        .run_flow(
            &name,
            "manual",
            body.input.unwrap_or_else(|| json!({})),
            None,
            body.dry_run,
        )
        .await
        .map_err(|e| match e {
            RunError::UnknownFlow(_) | RunError::UnknownRun(_) => {
                HttpError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            RunError::Busy(_) | RunError::AlreadyFired(_) => {
                HttpError::new(StatusCode::CONFLICT, "busy", e.to_string())
            }
            RunError::Store(s) => HttpError::from(memberspot_hub::HubError::Store(s)),
        })?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// Run filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only runs of this flow (`digest` for the daily summary)
    flow: Option<String>,
    /// At most this many (default 20)
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/flows/runs", tag = "flows", security(("admin" = [])), params(RunQuery),
    responses((status = 200, description = "runs, newest first")))]
async fn list_runs(
    State(flows): State<Flows>,
    _: AdminAuth,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, HttpError> {
    let runs = flows
        .hub()
        .flows_store()
        .list_runs(q.flow.as_deref(), q.limit.unwrap_or(20))
        .await
        .map_err(|e| HttpError::from(memberspot_hub::HubError::Store(e)))?;
    Ok(Json(json!({"runs": runs})))
}

#[utoipa::path(get, path = "/v1/flows/runs/{id}", tag = "flows", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "the run and its steps"), (status = 404)))]
async fn show_run(
    State(flows): State<Flows>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let store = flows.hub().flows_store();
    let to_http = |e| HttpError::from(memberspot_hub::HubError::Store(e));
    let run = store.get_run(&id).await.map_err(to_http)?.ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no run with id `{id}`"),
        )
    })?;
    let steps = store.run_steps(&id).await.map_err(to_http)?;
    Ok(Json(json!({"run": run, "steps": steps})))
}

/// Render or send the daily summary.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DigestBody {
    /// YYYY-MM-DD; default yesterday in the digest's time zone.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    date: Option<chrono::NaiveDate>,
    /// Render only: send nothing, record nothing.
    #[serde(default)]
    dry_run: bool,
    /// `slack`, `email`; default the configured targets.
    #[serde(default)]
    to: Vec<String>,
}

#[utoipa::path(post, path = "/v1/digest", tag = "flows", security(("admin" = [])), request_body = DigestBody,
    responses((status = 200, description = "the digest (numbers, text, HTML) and each delivery's result"), (status = 400)))]
async fn digest(
    State(flows): State<Flows>,
    _: AdminAuth,
    body: Option<Json<DigestBody>>,
) -> Result<Json<Value>, HttpError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let mut targets = Vec::new();
    for (i, t) in body.to.iter().enumerate() {
        match Target::parse(t) {
            Some(Target::Stdout) | None => {
                return Err(HttpError::field(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    &format!("to[{i}]"),
                    format!("`{t}`: use slack or email"),
                ));
            }
            Some(t) => targets.push(t),
        }
    }
    let run = flows
        .run_digest(body.date, &targets, body.dry_run, None)
        .await?
        .ok_or_else(|| {
            HttpError::new(StatusCode::CONFLICT, "busy", "this digest was already sent")
        })?;
    Ok(Json(json!({
        "run_id": run.run_id,
        "subject": run.subject,
        "text": run.digest.to_text(),
        "html": run.digest.to_html(),
        "digest": run.digest,
        "deliveries": run.deliveries.iter().map(|(t, r)| json!({"target": t, "ok": r.is_ok(), "detail": r.as_ref().ok(), "error": r.as_ref().err()})).collect::<Vec<_>>(),
    })))
}
