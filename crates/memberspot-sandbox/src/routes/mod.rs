//! Routing and the request pipeline.
//!
//! One fallback handler does the routing itself, because Express semantics
//! differ from axum's: wrong methods are 404 "Cannot METHOD /path", paths
//! match case-insensitively and with a trailing slash, and guards (key,
//! throttler) run only on matched routes. The pipeline order for /v1 is:
//! route match -> API key -> rate limit -> faults -> body parse -> handler.

mod admin;
mod auth;
mod chapters;
mod exams;
mod offers;
mod progress;
mod properties;
mod users;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Shapes;
use crate::errors::ApiError;
use crate::faults::Outcome;
use crate::http::{Query, decode_path_param, json_response, parse_body, text_response};
use crate::request_log::{LoggedRequest, body_value};
use crate::state::{Counters, SandboxState, lock};

/// Express' body-parser refuses more than this by default.
const BODY_LIMIT: usize = 100 * 1024;

/// The router serving the whole sandbox; usable with `tower::ServiceExt::oneshot`.
pub fn router(state: SandboxState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Everything a handler may look at.
pub(crate) struct Ctx<'a> {
    pub state: &'a SandboxState,
    /// Percent-decoded path parameters, in pattern order.
    pub params: Vec<String>,
    pub query: Query,
    pub body: Map<String, Value>,
    pub now: DateTime<Utc>,
    /// 201 for POST, 200 otherwise, as NestJS does.
    pub success: StatusCode,
    /// The answer shapes to speak.
    pub shapes: Shapes,
}

impl Ctx<'_> {
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    pub fn ok<T: Serialize + ?Sized>(&self, body: &T) -> Result<Response, ApiError> {
        Ok(json_response(self.success, body))
    }

    /// A text answer, as NestJS sends a handler's string (`ok`).
    pub fn ok_text(&self, text: &'static str) -> Result<Response, ApiError> {
        Ok(text_response(self.success, text))
    }
}

pub(crate) type Handler = fn(&Ctx<'_>) -> Result<Response, ApiError>;

/// A route: accepted methods, path pattern (`:` = parameter), handler.
struct Route {
    methods: &'static [Method],
    pattern: &'static [&'static str],
    handler: Handler,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];

/// Order matters where patterns overlap, as in Express: the first match wins.
const API_ROUTES: &[Route] = &[
    Route {
        methods: GET,
        pattern: &["api-auth"],
        handler: auth::check,
    },
    Route {
        methods: GET,
        pattern: &["v1", "users", "list"],
        handler: users::list,
    },
    Route {
        methods: GET,
        pattern: &["v1", "users", "find-by-mail", ":"],
        handler: users::find_by_mail,
    },
    Route {
        methods: POST,
        pattern: &["v1", "users", "grant-user-offer-by-mail"],
        handler: users::grant,
    },
    Route {
        methods: POST,
        pattern: &["v1", "users", "set-offer-state"],
        handler: users::set_offer_state,
    },
    Route {
        methods: POST,
        pattern: &["v1", "users", "set-order-state"],
        handler: users::set_order_state,
    },
    Route {
        methods: POST,
        pattern: &["v1", "users", "set-offer-expires"],
        handler: users::set_offer_expires,
    },
    Route {
        methods: &[Method::DELETE, Method::POST],
        pattern: &["v1", "users", "delete-users"],
        handler: users::delete_users,
    },
    Route {
        methods: GET,
        pattern: &["v1", "users", "course-progress", "list", ":"],
        handler: progress::list,
    },
    Route {
        methods: GET,
        pattern: &["v1", "users", "course-progress", ":", ":"],
        handler: progress::one,
    },
    Route {
        methods: GET,
        pattern: &["v1", "users", "login-token", ":"],
        handler: users::login_token,
    },
    Route {
        methods: POST,
        pattern: &["v1", "users", "set-custom-user-properties"],
        handler: properties::set,
    },
    Route {
        methods: GET,
        pattern: &["v1", "offers"],
        handler: offers::list,
    },
    Route {
        methods: GET,
        pattern: &["v1", "custom-user-properties", "list"],
        handler: properties::list,
    },
    Route {
        methods: POST,
        pattern: &["v1", "chapters", "chapter-access", "enable"],
        handler: chapters::enable,
    },
    Route {
        methods: GET,
        pattern: &["v1", "exams", ":", "results"],
        handler: exams::results,
    },
];

/// Path segments, without the leading slash and one trailing slash.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').collect()
}

/// Finds the route for `method` and `segs`; answers the raw parameters.
fn find<'r, 's>(
    routes: &'r [Route],
    method: &Method,
    segs: &[&'s str],
) -> Option<(&'r Route, Vec<&'s str>)> {
    routes.iter().find_map(|route| {
        if !route.methods.contains(method) || route.pattern.len() != segs.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pat, seg) in route.pattern.iter().zip(segs) {
            if *pat == ":" {
                if seg.is_empty() {
                    return None;
                }
                params.push(*seg);
            } else if !pat.eq_ignore_ascii_case(seg) {
                return None;
            }
        }
        Some((route, params))
    })
}

/// Which part of the server a path belongs to.
#[derive(PartialEq)]
enum Area {
    Api,
    Admin,
    Other,
}

fn area(segs: &[&str]) -> Area {
    match segs.first() {
        Some(s) if s.eq_ignore_ascii_case("v1") || s.eq_ignore_ascii_case("api-auth") => Area::Api,
        Some(s) if s.eq_ignore_ascii_case("_sandbox") => Area::Admin,
        _ => Area::Other,
    }
}

/// Constant-time comparison of the presented key with the configured one.
fn key_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(given) = headers.get("x-api-key") else {
        return false;
    };
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The parsed request, shared by the API and admin pipelines.
pub(crate) struct Incoming {
    /// HEAD is served as GET; see `original_method` for the log.
    pub method: Method,
    pub original_method: Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub headers: HeaderMap,
    pub body: Result<axum::body::Bytes, ApiError>,
}

impl Incoming {
    /// NestJS names the original URL, query included, in its 404 message.
    pub fn no_route(&self) -> ApiError {
        let url = match &self.raw_query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        ApiError::no_route(self.method.as_str(), &url)
    }
}

async fn dispatch(State(state): State<SandboxState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let incoming = Incoming {
        // Express serves HEAD with the GET handler; hyper drops the body.
        method: if parts.method == Method::HEAD {
            Method::GET
        } else {
            parts.method.clone()
        },
        original_method: parts.method,
        path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body: axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|_| ApiError::payload_too_large()),
    };
    let segs = segments(&incoming.path);
    let response = match area(&segs) {
        Area::Admin => {
            if key_matches(&incoming.headers, state.api_key()) {
                admin::handle(&state, &incoming, &segs)
            } else {
                ApiError::unauthorized().into_response()
            }
        }
        Area::Api => {
            let response = api(&state, &incoming, &segs).await;
            log(&state, &incoming, response.status());
            response
        }
        Area::Other => incoming.no_route().into_response(),
    };
    tracing::debug!(
        method = %incoming.original_method,
        path = %incoming.path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "sandbox request"
    );
    response
}

fn log(state: &SandboxState, incoming: &Incoming, status: StatusCode) {
    let body = match &incoming.body {
        Ok(bytes) => body_value(bytes),
        Err(_) => Value::Null,
    };
    let entry = LoggedRequest {
        method: incoming.original_method.to_string(),
        path: incoming.path.clone(),
        query: incoming.raw_query.clone(),
        body,
        status: status.as_u16(),
    };
    lock(&state.inner.log).push(entry, state.api_key());
}

async fn api(state: &SandboxState, incoming: &Incoming, segs: &[&str]) -> Response {
    let counters = &state.inner.counters;
    Counters::bump(&counters.requests);
    let Some((route, raw_params)) = find(API_ROUTES, &incoming.method, segs) else {
        return incoming.no_route().into_response();
    };
    if !key_matches(&incoming.headers, state.api_key()) {
        return ApiError::unauthorized().into_response();
    }
    let limited = lock(&state.inner.limiter).check(state.api_key(), Instant::now());
    if let Err(retry_after) = limited {
        Counters::bump(&counters.rate_limited);
        return ApiError::too_many_requests(retry_after).into_response();
    }

    let decision = lock(&state.inner.faults).decide();
    if !decision.latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(decision.latency) => {}
            _ = state.shutting_down() => {}
        }
    }
    match decision.outcome {
        Outcome::Pass => {}
        Outcome::Timeout(hang) => {
            Counters::bump(&counters.faults);
            tokio::select! {
                _ = tokio::time::sleep(hang) => {}
                // A shutdown must not wait out a 30 s fault.
                _ = state.shutting_down() => {}
            }
            return ApiError::gateway_timeout().into_response();
        }
        Outcome::Fail(err) => {
            Counters::bump(&counters.faults);
            return err.into_response();
        }
    }

    match run(state, incoming, route, &raw_params) {
        Ok(response) => {
            // Successful calls per route, for tests and benchmarks that count effects
            // (e.g. "every purchase granted exactly once").
            let key = format!("{} /{}", incoming.method, route.pattern.join("/"));
            *lock(&counters.succeeded).entry(key).or_insert(0) += 1;
            response
        }
        Err(err) => err.into_response(),
    }
}

fn run(
    state: &SandboxState,
    incoming: &Incoming,
    route: &Route,
    raw_params: &[&str],
) -> Result<Response, ApiError> {
    let params = raw_params
        .iter()
        .map(|p| decode_path_param(p))
        .collect::<Result<Vec<_>, _>>()?;
    // GET bodies are ignored, as Express does for a GET without a body parser match.
    let body = if incoming.method == Method::GET {
        Map::new()
    } else {
        parse_body(incoming.body.as_ref().map_err(Clone::clone)?)?
    };
    let ctx = Ctx {
        state,
        params,
        query: Query::parse(incoming.raw_query.as_deref()),
        body,
        now: state.now(),
        success: if incoming.method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        shapes: state.shapes(),
    };
    (route.handler)(&ctx)
}

/// The cursor a page was asked with, when the `repeatCursor` fault is on: a list that
/// has a next page then answers it as `nextPage` again.
fn repeat_cursor(ctx: &Ctx<'_>, asked: Option<&str>) -> Option<String> {
    asked
        .filter(|_| ctx.state.faults().repeat_cursor)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_matching_is_express_like() {
        fn hit(m: Method, p: &str) -> Option<Vec<&str>> {
            find(API_ROUTES, &m, &segments(p)).map(|(_, params)| params)
        }
        assert_eq!(hit(Method::GET, "/v1/users/list"), Some(vec![]));
        assert_eq!(hit(Method::GET, "/v1/Users/List/"), Some(vec![]));
        assert_eq!(
            hit(Method::GET, "/v1/users/find-by-mail/a%40b.de"),
            Some(vec!["a%40b.de"])
        );
        assert_eq!(hit(Method::GET, "/v1/users/find-by-mail/"), None);
        assert_eq!(hit(Method::POST, "/v1/users/list"), None);
        assert_eq!(
            hit(Method::GET, "/v1/users/course-progress/list/x"),
            Some(vec!["x"])
        );
        assert_eq!(
            hit(Method::GET, "/v1/users/course-progress/c/x"),
            Some(vec!["c", "x"])
        );
        assert_eq!(hit(Method::DELETE, "/v1/users/delete-users"), Some(vec![]));
        assert_eq!(hit(Method::GET, "/api-auth"), Some(vec![]));
    }

    #[test]
    fn key_comparison() {
        let mut h = HeaderMap::new();
        assert!(!key_matches(&h, "k"));
        h.insert("x-api-key", axum::http::HeaderValue::from_static("k"));
        assert!(key_matches(&h, "k"));
        assert!(!key_matches(&h, "kk"));
        assert!(!key_matches(&h, ""));
    }
}
