//! RFC 7591 Dynamic Client Registration, for public clients (hosted assistants hold no
//! secret): redirect URIs checked (`https`, or `http` on loopback), nothing else granted.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use memberspot_hub::oauth::OAuthError;
use memberspot_hub::store::OAuthClientKind;
use serde::Deserialize;
use serde_json::json;

use crate::OAuth;

/// Largest registration body read.
const MAX_BODY: usize = 16 * 1024;

/// Registrations per minute, for the whole hub: anyone may register, so a flood must not
/// fill the database (unused registrations are forgotten after a day).
pub struct RegistrationLimit(DefaultDirectRateLimiter);

impl Default for RegistrationLimit {
    fn default() -> Self {
        RegistrationLimit(RateLimiter::direct(Quota::per_minute(
            NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
        )))
    }
}

#[derive(Deserialize)]
struct Registration {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
}

fn refusal(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /oauth/register`.
pub async fn register(State(o): State<Arc<OAuth>>, body: Bytes) -> Response {
    if o.registrations.0.check().is_err() {
        return refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many client registrations; try again in a minute",
        );
    }
    if body.len() > MAX_BODY {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_client_metadata",
            "the registration is larger than 16 KiB",
        );
    }
    let r: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not a client registration: {e}"),
            );
        }
    };
    if let Some(m) = r.token_endpoint_auth_method.as_deref()
        && m != "none"
    {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &format!(
                "token_endpoint_auth_method `{m}` is not offered: clients are public (`none`) and prove themselves with PKCE"
            ),
        );
    }
    let grant_types = r
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &format!("grant_types: `{g}` is not offered (authorization_code, refresh_token)"),
        );
    }
    let response_types = r.response_types.unwrap_or_else(|| vec!["code".into()]);
    if let Some(t) = response_types.iter().find(|t| t.as_str() != "code") {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &format!("response_types: `{t}` is not offered (code)"),
        );
    }
    let client = match o
        .hub
        .register_oauth_client(
            r.client_name.as_deref(),
            &r.redirect_uris,
            OAuthClientKind::Dynamic,
        )
        .await
    {
        Ok(c) => c,
        Err(e @ (OAuthError::InvalidRedirectUri(_) | OAuthError::InvalidClientMetadata(_))) => {
            return refusal(StatusCode::BAD_REQUEST, e.code(), &e.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "oauth: storing a client registration failed");
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the registration could not be stored",
            );
        }
    };
    tracing::info!(client_id = %client.client_id, name = %client.name, "oauth: client registered");
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "client_id": client.client_id,
            "client_name": client.name,
            "client_id_issued_at": client.created_at / 1000,
            "redirect_uris": client.redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": grant_types,
            "response_types": response_types,
        })),
    )
        .into_response()
}
