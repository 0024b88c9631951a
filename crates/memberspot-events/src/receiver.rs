//! The webhook receivers: `POST /hooks/{source}` (and `/hooks/{source}/{token}` for
//! providers that authenticate with a token in the URL).
//!
//! Order of work, per the providers' own rules: read the body once as bytes (413 above the
//! source's limit) → verify over those bytes (constant time, fail closed) → normalise →
//! store the delivery and its events in one transaction → answer exactly what the
//! provider expects. Tool calls happen later, in the workers.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use memberspot_hub::store::{EventStatus, Inserted, NewDelivery, NewEvent};
use memberspot_webhooks::{Delivery, Event, EventKind, Provider, VerifyError};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::Source;
use crate::service::Events;

/// Headers that carry credentials: never stored.
const REDACTED_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "x-hook-token",
    "proxy-authorization",
];
/// Header alternative to the URL token (Memberspot, elopage).
pub const TOKEN_HEADER: &str = "x-hook-token";

/// The `/hooks` routes. Bodies are limited per source, not by the REST limit.
pub fn router(events: Events) -> Router {
    Router::new()
        .route("/hooks/{source}", post(receive).head(head_ok).get(describe))
        .route(
            "/hooks/{source}/{token}",
            post(receive_with_token).head(head_ok),
        )
        .with_state(events)
}

/// ThriveCart (and uptime checks) probe the URL with HEAD and expect 2xx.
async fn head_ok() -> StatusCode {
    StatusCode::OK
}

/// A GET explains what the URL is for, without revealing configuration.
async fn describe(State(events): State<Events>, Path(source): Path<String>) -> Response {
    match events.config().sources.get(&source) {
        Some(s) => (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(json!({"error": {"code": "method_not_allowed", "message": format!(
                "this is the {} webhook receiver `{}`; providers POST to it", s.provider, s.name)}})),
        )
            .into_response(),
        None => unknown_source(&source),
    }
}

async fn receive(
    State(events): State<Events>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(events, source, None, headers, body).await
}

async fn receive_with_token(
    State(events): State<Events>,
    Path((source, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(events, source, Some(token), headers, body).await
}

async fn handle(
    events: Events,
    source_name: String,
    token: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = events.now();
    let Some(source) = events.config().sources.get(&source_name).cloned() else {
        return unknown_source(&source_name);
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is larger than this receiver's limit of {} bytes",
                source.max_body
            ),
        )
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > source.max_body)
    {
        return too_large();
    }
    let body: Bytes = match axum::body::to_bytes(body, source.max_body).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header_token = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let delivery = Delivery {
        headers: &pairs,
        body: &body,
        path_secret: token.as_deref().or(header_token.as_deref()),
    };
    let stored_headers: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| {
            let redact = REDACTED_HEADERS.iter().any(|r| k.eq_ignore_ascii_case(r));
            (
                k.clone(),
                if redact {
                    "<redacted>".to_owned()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    let mut record = NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        source: source.name.clone(),
        provider: source.provider.as_str().to_owned(),
        received_at: received.timestamp_millis(),
        headers: stored_headers,
        body: None,
        body_bytes: body.len(),
        verification: "verified".into(),
        error: None,
    };

    let secret = source.secret.as_ref().map(|s| s.expose_secret().to_owned());
    match memberspot_webhooks::verify(
        source.provider,
        &delivery,
        secret.as_deref(),
        received,
        source.tolerance,
    ) {
        Ok(()) => {}
        Err(VerifyError::PostbackRequired) => record.verification = "postback".into(),
        Err(e @ (VerifyError::NoSecretConfigured | VerifyError::NoPassphraseConfigured)) => {
            return reject(&events, record, &source, e, StatusCode::SERVICE_UNAVAILABLE).await;
        }
        Err(e) => return reject(&events, record, &source, e, StatusCode::UNAUTHORIZED).await,
    }

    // Verified: from here on the body is kept, whatever happens (without a secret the
    // provider put inside it: it was only needed for the check).
    record.body = Some(memberspot_webhooks::redact_body(source.provider, &body));
    let parsed = memberspot_webhooks::normalize(source.provider, &delivery);
    let new_events = match &parsed {
        Ok(list) => list.iter().map(|e| new_event(&source, e)).collect(),
        Err(e) => {
            record.error = Some(format!("malformed body: {e}"));
            Vec::new()
        }
    };
    let stored = events
        .hub()
        .store()
        .record_delivery(&record, &new_events)
        .await;
    let inserted = match stored {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "could not store a delivery; the provider will retry");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the delivery could not be stored; retry later".into(),
            );
        }
    };
    if let Err(e) = parsed {
        tracing::warn!(source = %source.name, delivery = %record.id, error = %e, "malformed webhook body (stored)");
        return error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!(
                "the body could not be read as a {} webhook: {e}",
                source.provider
            ),
        );
    }
    let fresh = inserted
        .iter()
        .filter(|i| matches!(i, Inserted::New(_)))
        .count();
    tracing::info!(
        source = %source.name,
        delivery = %record.id,
        events = inserted.len(),
        redeliveries = inserted.len() - fresh,
        "webhook accepted"
    );
    if fresh > 0 {
        events.wake();
    }
    let (status, content_type, text) = memberspot_webhooks::success_response(source.provider);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, content_type)],
        text,
    )
        .into_response()
}

/// A failed verification: logged and recorded without its body, nothing acted upon.
async fn reject(
    events: &Events,
    mut record: NewDelivery,
    source: &Source,
    e: VerifyError,
    status: StatusCode,
) -> Response {
    tracing::warn!(source = %source.name, provider = %source.provider, reason = %e, "webhook rejected");
    record.verification = "rejected".into();
    record.error = Some(e.to_string());
    if let Err(err) = events.hub().store().record_delivery(&record, &[]).await {
        tracing::error!(error = %err, "could not record a rejected delivery");
    }
    let (code, message) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            "not_configured",
            format!(
                "receiver `{}` has no secret configured ({}); deliveries are refused until one is set",
                source.name, source.secret_origin
            ),
        )
    } else {
        ("invalid_signature", format!("verification failed: {e}"))
    };
    error(status, code, message)
}

/// The stored form of a normalised event: its queue status follows from its kind.
fn new_event(source: &Source, e: &Event) -> NewEvent {
    let status = match &e.kind {
        EventKind::AuthTest => EventStatus::Ignored,
        EventKind::Unknown => EventStatus::Unmatched,
        // Memberspot's own events record what happened in the school; no rule acts on them.
        EventKind::Member { .. } => EventStatus::Done,
        _ => EventStatus::Pending,
    };
    NewEvent {
        dedupe_key: format!("{}:{}", source.name, e.idempotency_key()),
        source: source.name.clone(),
        provider: source.provider.as_str().to_owned(),
        kind: e.kind.as_str().to_owned(),
        name: e.raw_event_name.clone(),
        order_id: e.order_id.clone(),
        product_id: e.product_id.clone(),
        email: e
            .buyer_email
            .as_deref()
            .map(|m| m.trim().to_ascii_lowercase()),
        test: e.test,
        amount_minor: e.amount_minor(),
        currency: e.currency.as_deref().map(|c| c.trim().to_ascii_uppercase()),
        data: serde_json::to_value(e).unwrap_or_else(|_| json!({})),
        status,
    }
}

fn unknown_source(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_source",
        format!("no webhook source named `{name}`; add [sources.{name}] to the rules file"),
    )
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Providers that put their token in the URL.
pub fn uses_url_token(p: Provider) -> bool {
    matches!(p, Provider::Memberspot | Provider::Elopage)
}
