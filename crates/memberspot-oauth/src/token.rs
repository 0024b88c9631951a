//! `POST /oauth/token`: authorization code (with PKCE) and refresh token grants, answers
//! and errors as RFC 6749 §5 has them, never cached.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use memberspot_hub::oauth::{IssuedTokens, OAuthError};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::OAuth;
use crate::metadata::SCOPE;

#[derive(Deserialize, Default)]
pub struct TokenRequest {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    /// Client secrets are not offered: a request that sends one is refused.
    #[serde(default)]
    client_secret: Option<String>,
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

fn refused(e: &OAuthError) -> Response {
    match e {
        // RFC 6749 §5.2: invalid_client is 401; a client that registered dynamically
        // takes it as "register again".
        OAuthError::InvalidClient(m) => error(StatusCode::UNAUTHORIZED, e.code(), m),
        OAuthError::Hub(h) => {
            tracing::error!(error = %h, "oauth: token request failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.code(),
                "the token could not be issued; try again",
            )
        }
        other => error(StatusCode::BAD_REQUEST, other.code(), &other.to_string()),
    }
}

fn issued(t: &IssuedTokens) -> Response {
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({
            "access_token": t.access_token.expose_secret(),
            "token_type": "Bearer",
            "expires_in": t.expires_in.as_secs(),
            "refresh_token": t.refresh_token.expose_secret(),
            "scope": SCOPE,
        })),
    )
        .into_response()
}

/// `POST /oauth/token` (form-encoded).
pub async fn token(
    State(o): State<Arc<OAuth>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the token request as application/x-www-form-urlencoded",
        );
    }
    let req: TokenRequest = match serde_urlencoded_form(&body) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request", &m),
    };
    if headers.contains_key(header::AUTHORIZATION) || req.client_secret.is_some() {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication is not offered: clients are public and prove themselves with PKCE",
        );
    }
    let Some(client_id) = req.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is missing",
        );
    };
    match o.hub.oauth_client(client_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refused(&OAuthError::InvalidClient(
                "unknown client_id: register again".into(),
            ));
        }
        Err(e) => return refused(&OAuthError::Hub(e)),
    }
    // The missing parameter's name, if any.
    let required = |v: &Option<String>, name: &'static str| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or(name)
    };
    let missing = |name: &str| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{name} is missing"),
        )
    };
    let result = match req.grant_type.as_deref() {
        Some("authorization_code") => {
            let (code, verifier, redirect_uri) = match (
                required(&req.code, "code"),
                required(&req.code_verifier, "code_verifier"),
                required(&req.redirect_uri, "redirect_uri"),
            ) {
                (Ok(c), Ok(v), Ok(r)) => (c, v, r),
                (Err(name), _, _) | (_, Err(name), _) | (_, _, Err(name)) => return missing(name),
            };
            o.hub
                .exchange_oauth_code(
                    client_id,
                    &code,
                    &verifier,
                    &redirect_uri,
                    req.resource.as_deref(),
                )
                .await
        }
        Some("refresh_token") => {
            let refresh = match required(&req.refresh_token, "refresh_token") {
                Ok(r) => r,
                Err(name) => return missing(name),
            };
            o.hub
                .refresh_oauth(client_id, &refresh, req.resource.as_deref())
                .await
        }
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "grant_type `{}` is not offered (authorization_code, refresh_token)",
                    other.chars().take(60).collect::<String>()
                ),
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
    };
    match result {
        Ok(t) => issued(&t),
        Err(e) => {
            tracing::info!(client_id, error = %e, "oauth: token request refused");
            refused(&e)
        }
    }
}

/// Parses a form body; a parameter given twice is refused (RFC 6749 §3.2).
fn serde_urlencoded_form(body: &[u8]) -> Result<TokenRequest, String> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in url::form_urlencoded::parse(body) {
        if !seen.insert(k.clone()) {
            return Err(format!("parameter `{k}` is given more than once"));
        }
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| format!("the form is not a token request: {e}"))
}
