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
use memberspot_hub::store::{EventStatus, Inserted, NewDelivery, NewEvent, Verification};
use memberspot_webhooks::{Delivery, Event, EventKind, Provider, VerifyError};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::Source;
use crate::postback::Postback;
use crate::service::Events;

/// Headers that carry credentials: never stored.
const REDACTED_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "x-hook-token",
    "proxy-authorization",
];
/// Requests with more header bytes than this are refused before anything else is read:
/// providers send a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Refused requests recorded per source and minute; further ones are answered 429.
pub const REFUSALS_PER_MINUTE: u32 = 30;
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

/// A provider's webhook delivery, read as sent and verified by the source's signature,
/// token or post-back before anything is stored. Outside the REST API: the answer is what
/// the provider expects, and the body limit is the source's.
#[utoipa::path(post, path = "/hooks/{source}", tag = "webhooks",
    params(("source" = String, Path, description = "the source's name in the rules file")),
    request_body(content = String, content_type = "application/octet-stream",
        description = "the provider's body as sent (form-encoded or JSON)"),
    responses(
        (status = 200, description = "stored (or a redelivery of a stored one); the provider's success answer"),
        (status = 401, description = "signature or token missing or wrong"),
        (status = 403, description = "not meant for this shop (e.g. another PayPal receiver)"),
        (status = 404, description = "no such source"),
        (status = 408, description = "the body was not sent in time"),
        (status = 413, description = "body above the source's limit"),
        (status = 429, description = "too many refused deliveries for this source"),
        (status = 503, description = "the store is unavailable; the provider retries"),
    ))]
pub(crate) async fn receive(
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
    let refused =
        |reason: Refusal, body_bytes: usize| refuse(&events, &source, received, reason, body_bytes);
    // Nothing is verified yet: the request's own size is the first thing bounded.
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return refused(Refusal::HeadersTooLarge(header_bytes), 0).await;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > source.max_body) {
        return refused(Refusal::TooLarge(source.max_body), n).await;
    }
    let body: Bytes = match axum::body::to_bytes(body, source.max_body).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return refused(Refusal::TooLarge(source.max_body), source.max_body + 1).await;
        }
        // The client stopped sending (the server's body read time-out) or went away.
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_incomplete",
                "the body did not arrive in time; send it again".into(),
            );
        }
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

    let secret = source.secret.as_ref().map(|s| s.expose_secret().to_owned());
    match memberspot_webhooks::verify(
        source.provider,
        &delivery,
        secret.as_deref(),
        received,
        source.tolerance,
    ) {
        Ok(()) => {}
        Err(VerifyError::PostbackRequired) => {
            if let Err(reason) = verify_paypal(&events, &source, &body).await {
                return match reason {
                    PaypalCheck::Refused(r) => refused(r, body.len()).await,
                    PaypalCheck::Unavailable(why) => {
                        tracing::warn!(source = %source.name, reason = %why, "PayPal post-back not possible; PayPal will send the notification again");
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "postback_unavailable",
                            "the notification could not be verified with PayPal yet; send it again later".into(),
                        )
                    }
                };
            }
        }
        Err(e @ (VerifyError::NoSecretConfigured | VerifyError::NoPassphraseConfigured)) => {
            return refused(Refusal::NotConfigured(e), body.len()).await;
        }
        Err(e) => return refused(Refusal::Signature(e), body.len()).await,
    }

    // Verified: from here on the request is kept, whatever happens (without credential
    // headers, and without a secret the provider put inside the body: it was only needed
    // for the check).
    let mut record = NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        source: source.name.clone(),
        provider: source.provider.as_str().to_owned(),
        received_at: received.timestamp_millis(),
        headers: stored_headers(&pairs),
        body: Some(memberspot_webhooks::redact_body(source.provider, &body)),
        body_bytes: body.len(),
        verification: Verification::Verified,
        error: None,
    };
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
        .events_store()
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

/// Whether reading a body failed because it is larger than the limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Header pairs as stored for a verified delivery: credentials replaced.
fn stored_headers(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
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
        .collect()
}

enum PaypalCheck {
    Refused(Refusal),
    Unavailable(String),
}

/// A PayPal notification is genuine (post-back) and about a payment to this shop.
async fn verify_paypal(events: &Events, source: &Source, body: &[u8]) -> Result<(), PaypalCheck> {
    // The receiver first: a payment to someone else needs no call to PayPal to be refused.
    let r = memberspot_webhooks::paypal::receiver(body);
    if !source
        .paypal_receiver
        .accepts(r.email.as_deref(), r.business.as_deref(), r.id.as_deref())
    {
        return Err(PaypalCheck::Refused(Refusal::WrongReceiver));
    }
    match crate::postback::verify(events, source, body).await {
        Postback::Verified => Ok(()),
        Postback::Invalid => Err(PaypalCheck::Refused(Refusal::PaypalInvalid)),
        Postback::Unavailable(why) => Err(PaypalCheck::Unavailable(why)),
    }
}

/// Why a request to a receiver was refused.
#[derive(Debug)]
enum Refusal {
    NotConfigured(VerifyError),
    Signature(VerifyError),
    /// PayPal answered INVALID to the post-back.
    PaypalInvalid,
    /// A genuine PayPal notification about a payment to another account.
    WrongReceiver,
    TooLarge(usize),
    HeadersTooLarge(usize),
}

impl Refusal {
    fn answer(&self, source: &Source) -> (StatusCode, &'static str, String) {
        match self {
            Refusal::NotConfigured(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                format!(
                    "receiver `{}` has no secret configured ({}); deliveries are refused until one is set",
                    source.name, source.secret_origin
                ),
            ),
            Refusal::Signature(e) => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                format!("verification failed: {e}"),
            ),
            Refusal::PaypalInvalid => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "PayPal answered INVALID to the post-back: not a genuine notification".into(),
            ),
            Refusal::WrongReceiver => (
                StatusCode::FORBIDDEN,
                "wrong_receiver",
                "the notification is about a payment to another PayPal account than this shop's (receiver_email, business, receiver_id)".into(),
            ),
            Refusal::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than this receiver's limit of {limit} bytes"),
            ),
            Refusal::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("the request's headers are larger than {MAX_HEADER_BYTES} bytes"),
            ),
        }
    }

    /// The reason kept in the store (no part of the request).
    fn reason(&self) -> String {
        match self {
            Refusal::NotConfigured(e) | Refusal::Signature(e) => e.to_string(),
            Refusal::PaypalInvalid => "PayPal answered INVALID to the post-back".into(),
            Refusal::WrongReceiver => "payment to another PayPal account".into(),
            Refusal::TooLarge(limit) => format!("body above the limit of {limit} bytes"),
            Refusal::HeadersTooLarge(n) => {
                format!("{n} bytes of headers, above the limit of {MAX_HEADER_BYTES}")
            }
        }
    }
}

/// A refused request: recorded as its reason, size, source and time (never its headers or
/// body), at most [`REFUSALS_PER_MINUTE`] per source; beyond that it is only counted in the
/// log and answered 429, so a flood of bad requests cannot fill the database.
async fn refuse(
    events: &Events,
    source: &Source,
    received: chrono::DateTime<chrono::Utc>,
    reason: Refusal,
    body_bytes: usize,
) -> Response {
    let (status, code, message) = reason.answer(source);
    if !events.admit_refusal(&source.name) {
        tracing::debug!(source = %source.name, reason = %reason.reason(), "refusal not recorded (too many)");
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_refusals",
            format!(
                "too many refused requests to `{}`; try again in a minute",
                source.name
            ),
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return answer;
    }
    tracing::warn!(source = %source.name, provider = %source.provider, reason = %reason.reason(), "webhook refused");
    let record = NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        source: source.name.clone(),
        provider: source.provider.as_str().to_owned(),
        received_at: received.timestamp_millis(),
        headers: Vec::new(),
        body: None,
        body_bytes,
        verification: Verification::Rejected,
        error: Some(reason.reason()),
    };
    if let Err(err) = events
        .hub()
        .events_store()
        .record_delivery(&record, &[])
        .await
    {
        tracing::error!(error = %err, "could not record a refused delivery");
    }
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
        connection: Some(source.connection().to_owned()),
        verified: true,
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
