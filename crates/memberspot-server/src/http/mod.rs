//! The REST API (documented by the OpenAPI document at `/openapi.json`), health and
//! metrics, and what other crates' routes share with it: bearer authentication, the JSON
//! body extractor, query times and the error shape.

mod admin;
pub mod auth;
pub mod body;
mod error;
mod openapi;
mod ops;
mod tools;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use memberspot_hub::Hub;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use error::HttpError;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 256 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Memberspot Hub",
        description = "Personas (AI agents and automations) call Memberspot tools; every call is scoped and audited. \
            Tool routes take a persona token, admin routes the admin token, both as `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tools", description = "The tool catalogue, filtered by the persona's scopes"),
        (name = "admin", description = "Personas, connections and the audit log (admin token)"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("persona", bearer());
        components.add_security_scheme("admin", bearer());
    }
}

/// A time in a query string: RFC 3339 or epoch milliseconds; an error names the field.
pub fn query_time(field: &str, v: Option<&str>) -> Result<Option<i64>, HttpError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            HttpError::field(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_query",
                field,
                format!("`{v}` is not an RFC 3339 time or epoch milliseconds"),
            )
        })
}

/// The REST routes and their OpenAPI document, generated from the same handlers.
fn rest(hub: Hub, ready_checks_schools: bool) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tools::routes())
        .merge(admin::routes())
        .split_for_parts();
    let (ops_router, ops_api) = ops::routes().split_for_parts();
    api.merge(ops_api);
    let ops_router = ops_router.with_state(ops::Ops::new(hub.clone(), ready_checks_schools));
    (router.with_state(hub).merge(ops_router), api)
}

/// The REST API with the routes of the plug-ins (e.g. events), each with its OpenAPI
/// document, which is merged into `/openapi.json`; without MCP (the app adds `/mcp`).
pub(crate) fn rest_app(
    hub: Hub,
    request_timeout: Duration,
    ready_checks_schools: bool,
    extra: Vec<(Router, utoipa::openapi::OpenApi)>,
) -> Router {
    let tools_of = hub.clone();
    let (mut router, mut api) = rest(hub, ready_checks_schools);
    for (r, doc) in extra {
        router = router.merge(r);
        api.merge(doc);
    }
    // Written when asked for, not kept: the document is about 280 KB of text that a
    // running hub is rarely asked for.
    let api = std::sync::Arc::new(api);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let (api, hub) = (api.clone(), tools_of.clone());
                async move {
                    let body =
                        serde_json::to_string_pretty(&openapi::complete(&api, hub.catalogue()))
                            .unwrap_or_else(|_| "{}".to_string());
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            HttpError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {}", uri.path()),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(error::json_envelope))
}
