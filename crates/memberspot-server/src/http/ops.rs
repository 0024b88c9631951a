use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use memberspot_hub::Hub;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long a check of the schools answers `/readyz`: probes every few seconds cost one
/// request per school per this much, not per probe.
pub const SCHOOLS_CHECK_TTL: Duration = Duration::from_secs(30);

/// The schools' last check: when, and each school's answer.
type SchoolsCheck = Option<(Instant, Vec<(String, Result<(), String>)>)>;

/// What the operations routes need: the hub, and whether readiness includes the schools.
#[derive(Clone)]
pub struct Ops {
    hub: Hub,
    /// `Some` when `/readyz` also checks the schools (the last check, shared by probes).
    schools: Option<Arc<tokio::sync::Mutex<SchoolsCheck>>>,
}

impl Ops {
    pub fn new(hub: Hub, check_schools: bool) -> Ops {
        Ops {
            hub,
            schools: check_schools.then(Default::default),
        }
    }

    /// Each school's answer, checked at most once per [`SCHOOLS_CHECK_TTL`]; probes
    /// arriving during a check wait for it.
    async fn schools(&self) -> Option<Result<Vec<(String, Result<(), String>)>, String>> {
        let cache = self.schools.as_ref()?;
        let mut last = cache.lock().await;
        if let Some((at, results)) = last.as_ref()
            && at.elapsed() < SCHOOLS_CHECK_TTL
        {
            return Some(Ok(results.clone()));
        }
        match self.hub.check_schools().await {
            Ok(results) => {
                let results: Vec<_> = results
                    .into_iter()
                    .map(|(name, r)| (name, r.map_err(|e| e.to_string())))
                    .collect();
                *last = Some((Instant::now(), results.clone()));
                Some(Ok(results))
            }
            Err(e) => Some(Err(e.to_string())),
        }
    }
}

pub fn routes() -> OpenApiRouter<Ops> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve calls: its store answers with a schema this version reads and,
/// when `serve --ready-checks-schools` is set, every school accepts its key (checked at
/// most every 30 s).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"),
        (status = 503, description = "the store does not answer, its schema is newer than this version, or (when checked) a school does not answer")))]
async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let mut body = Map::new();
    let mut reasons: Vec<String> = Vec::new();
    match ops.hub.check_ready().await {
        Ok(()) => {
            body.insert("store".into(), json!("ok"));
        }
        Err(e) => {
            body.insert("store".into(), json!(e.to_string()));
            reasons.push(format!("store: {e}"));
        }
    }
    match ops.schools().await {
        None => {}
        Some(Ok(results)) => {
            let mut schools = Map::new();
            for (name, r) in results {
                if let Err(e) = &r {
                    reasons.push(format!("school `{name}`: {e}"));
                }
                schools.insert(name, json!(r.err().unwrap_or_else(|| "ok".into())));
            }
            body.insert("schools".into(), Value::Object(schools));
        }
        Some(Err(e)) => reasons.push(format!("schools: {e}")),
    }
    let code = if reasons.is_empty() {
        body.insert("status".into(), json!("ready"));
        StatusCode::OK
    } else {
        body.insert("status".into(), json!("unavailable"));
        body.insert("reason".into(), json!(reasons.join("; ")));
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Value::Object(body)))
}

/// Prometheus metrics: tool calls by tool/outcome/surface, latency histogram, upstream 429s.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics (OpenMetrics text format)", content_type = "application/openmetrics-text")))]
async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.hub.metrics().render(),
    )
}
