//! `/_sandbox/*`: inspection and control of the sandbox. Requires the API
//! key, but is exempt from the rate limit, faults and the request log.

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use memberspot_wire::{Offer, Timestamp};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Incoming;
use crate::config::{Faults, validate_rps};
use crate::errors::ApiError;
use crate::http::{Query, QueryValue, json_response, parse_body};
use crate::school::School;
use crate::state::{SandboxState, lock};

pub(super) fn handle(state: &SandboxState, incoming: &Incoming, segs: &[&str]) -> Response {
    let name = segs
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let result = match (segs.len(), name.as_str(), &incoming.method) {
        (2, "state", &Method::GET) => Ok(state_json(state)),
        (2, "faults", &Method::GET) => Ok(json!(state.faults())),
        (2, "faults", &Method::PUT) => put_faults(state, incoming),
        (2, "rate-limit", &Method::GET) => Ok(json!({"rps": lock(&state.inner.limiter).rps()})),
        (2, "rate-limit", &Method::PUT) => put_rate_limit(state, incoming),
        (2, "clock", &Method::GET) => Ok(clock_json(state)),
        (2, "clock", &Method::POST) => post_clock(state, incoming),
        (2, "progress", &Method::POST) => post_progress(state, incoming),
        (2, "requests", &Method::GET) => get_requests(state, incoming),
        (2, "requests", &Method::DELETE) => Ok(json!({"cleared": lock(&state.inner.log).clear()})),
        (2, "reset", &Method::POST) => post_reset(state, incoming),
        _ => Err(incoming.no_route()),
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(err) => err.into_response(),
    }
}

/// Parses an admin body strictly: unknown fields and wrong types are named.
fn typed_body<T: DeserializeOwned>(incoming: &Incoming, known: &[&str]) -> Result<T, ApiError> {
    let map = parse_body(incoming.body.as_ref().map_err(Clone::clone)?)?;
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            format!(
                "{k} is not a known field (expected one of: {})",
                known.join(", ")
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::validation(unknown));
    }
    serde_path_to_error::deserialize(Value::Object(map))
        .map_err(|e| ApiError::validation(vec![format!("{}: {}", e.path(), e.inner())]))
}

fn state_json(state: &SandboxState) -> Value {
    let now = state.now();
    let c = &state.inner.counters;
    let counters = json!({
        "requests": c.requests.load(Ordering::Relaxed),
        "rateLimited": c.rate_limited.load(Ordering::Relaxed),
        "faults": c.faults.load(Ordering::Relaxed),
        "succeeded": *lock(&c.succeeded),
    });
    state.read(|s| {
        let offers: Vec<Offer> = s.offers.iter().map(School::offer_to_wire).collect();
        let exams: Vec<Value> = s
            .exams
            .iter()
            .map(|e| json!({"id": e.id, "courseId": e.course_id, "name": e.name}))
            .collect();
        let props: Vec<_> = s.properties.iter().map(School::property_to_wire).collect();
        let users: Vec<Value> = s
            .users
            .values()
            .map(|u| s.user_admin_json(u, now))
            .collect();
        json!({
            "now": Timestamp(now),
            "offers": offers,
            "courses": s.courses,
            "exams": exams,
            "customProperties": props,
            "users": users,
            "counters": counters,
            "shapes": state.shapes(),
        })
    })
}

fn put_faults(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    const KNOWN: &[&str] = &[
        "latencyMs",
        "errorRate",
        "rateLimitRate",
        "rateLimitBurst",
        "timeoutRate",
        "timeoutMs",
        "seed",
        "repeatCursor",
    ];
    let faults: Faults = typed_body(incoming, KNOWN)?;
    faults.validate().map_err(ApiError::validation)?;
    state.set_faults(faults);
    Ok(json!(state.faults()))
}

#[derive(Deserialize)]
struct RpsBody {
    rps: f64,
}

fn put_rate_limit(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    let body: RpsBody = typed_body(incoming, &["rps"])?;
    validate_rps(body.rps).map_err(|m| ApiError::validation(vec![m]))?;
    lock(&state.inner.limiter).set_rps(body.rps);
    Ok(json!({"rps": body.rps}))
}

fn clock_json(state: &SandboxState) -> Value {
    let offset = state.inner.clock_offset_ms.load(Ordering::Relaxed);
    json!({"now": Timestamp(state.now()), "offsetSeconds": offset as f64 / 1000.0})
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClockBody {
    advance_seconds: Option<f64>,
    now: Option<String>,
}

/// `{"advanceSeconds": n}` moves the clock by n seconds (negative goes back);
/// `{"now": iso}` sets it.
fn post_clock(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    let body: ClockBody = typed_body(incoming, &["advanceSeconds", "now"])?;
    // About ±100 years: far enough for any test, small enough for chrono.
    const LIMIT_MS: f64 = crate::persist::MAX_CLOCK_OFFSET_MS as f64;
    let millis = match (body.advance_seconds, body.now) {
        (Some(secs), None) => secs * 1000.0,
        (None, Some(now)) => {
            let target = Timestamp::parse(&now).ok_or_else(|| {
                ApiError::validation(vec!["now must be a valid ISO 8601 date string".into()])
            })?;
            (target.0 - state.now()).num_milliseconds() as f64
        }
        _ => {
            return Err(ApiError::validation(vec![
                "give exactly one of advanceSeconds or now".into(),
            ]));
        }
    };
    let total = state.inner.clock_offset_ms.load(Ordering::Relaxed) as f64 + millis;
    if !millis.is_finite() || total.abs() > LIMIT_MS {
        return Err(ApiError::validation(vec![
            "advanceSeconds must move the clock by less than 100 years".into(),
        ]));
    }
    state.advance_clock(millis.round() as i64);
    Ok(clock_json(state))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProgressBody {
    email: String,
    course_id: String,
    post_id: String,
    #[serde(default)]
    completed: bool,
}

fn post_progress(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    let body: ProgressBody = typed_body(incoming, &["email", "courseId", "postId", "completed"])?;
    let email = crate::school::normalize_email(&body.email);
    let p = state
        .write(|s| s.record_progress(&email, &body.course_id, &body.post_id, body.completed))?;
    Ok(json!({
        "email": email,
        "courseId": body.course_id,
        "activePosts": p.active_posts,
        "completedPosts": p.completed_posts,
    }))
}

fn get_requests(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    let query = Query::parse(incoming.raw_query.as_deref());
    let limit = match query.get("limit") {
        QueryValue::Missing => usize::MAX,
        QueryValue::One(v) => v.trim().parse::<usize>().map_err(|_| {
            ApiError::validation(vec!["limit must be a non-negative integer".into()])
        })?,
        QueryValue::Many => {
            return Err(ApiError::validation(vec![
                "limit must be a non-negative integer".into(),
            ]));
        }
    };
    Ok(json!(lock(&state.inner.log).last(limit)))
}

#[derive(Deserialize)]
struct ResetBody {
    seed: Option<u64>,
    users: Option<usize>,
    offers: Option<usize>,
    courses: Option<usize>,
}

fn post_reset(state: &SandboxState, incoming: &Incoming) -> Result<Value, ApiError> {
    let body: ResetBody = typed_body(incoming, &["seed", "users", "offers", "courses"])?;
    state.reset(body.seed, body.users, body.offers, body.courses);
    let (seed, size) = state.origin();
    Ok(json!({"seed": seed, "size": size}))
}
