//! Discovery documents: where a client that got a `401` from `/mcp` learns how to sign in.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use memberspot_server::public_url;
use serde_json::json;

use crate::OAuth;

/// The one scope: what a token may do is the persona's scopes, chosen on the consent page.
pub const SCOPE: &str = "mcp";

fn no_issuer() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not_found",
            "error_description": "this hub has no public URL (`memberspot serve --public-url https://…`); OAuth is offered on it, or on a loopback address",
        })),
    )
        .into_response()
}

/// RFC 9728 Protected Resource Metadata of `/mcp`.
pub async fn protected_resource(State(o): State<Arc<OAuth>>, headers: HeaderMap) -> Response {
    let Some(base) = o.issuer(&headers) else {
        return no_issuer();
    };
    Json(json!({
        "resource": public_url::mcp_resource(&base),
        "authorization_servers": [base],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "Memberspot Hub",
    }))
    .into_response()
}

/// RFC 8414 Authorization Server Metadata (also answered at the OpenID discovery path,
/// which some clients probe first).
pub async fn authorization_server(State(o): State<Arc<OAuth>>, headers: HeaderMap) -> Response {
    let Some(base) = o.issuer(&headers) else {
        return no_issuer();
    };
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "registration_endpoint": format!("{base}/oauth/register"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": [SCOPE],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "service_documentation": "https://github.com/memberspot-hub/memberspot-hub/blob/main/docs/hub.md",
    }))
    .into_response()
}
