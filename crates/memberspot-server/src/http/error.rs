use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use memberspot_hub::HubError;
use memberspot_tools::ToolError;
use serde_json::{Value, json};

/// The one error shape of the REST API: `{"error": {code, message, field?}}`.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: Value,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            body: json!({ "code": code, "message": message.into() }),
        }
    }

    pub fn field(status: StatusCode, code: &str, field: &str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            body: json!({ "code": code, "message": message.into(), "field": field }),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let retry_after = self.body["retry_after_secs"].as_u64();
        let mut response = (self.status, Json(json!({ "error": self.body }))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<HubError> for HttpError {
    fn from(e: HubError) -> Self {
        use memberspot_api::ApiError as A;
        let status = match &e {
            HubError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            HubError::Denied(_) => StatusCode::FORBIDDEN,
            HubError::Invalid(_) => StatusCode::BAD_REQUEST,
            HubError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::Tool(ToolError::UnknownTool { .. }) => StatusCode::NOT_FOUND,
            HubError::Tool(ToolError::InvalidArguments { .. }) => StatusCode::BAD_REQUEST,
            HubError::Tool(ToolError::Api(api)) => match api {
                A::NotFound { .. } => StatusCode::NOT_FOUND,
                A::Validation { .. } | A::Http { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                A::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                A::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            HubError::Store(memberspot_hub::store::StoreError::Conflict(_)) => StatusCode::CONFLICT,
            HubError::Store(memberspot_hub::store::StoreError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            HubError::Unavailable(_) | HubError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            HubError::WrongMasterKey | HubError::Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        HttpError {
            status,
            body: e.to_json(),
        }
    }
}

/// Gives every error answer the REST error shape, including those made outside the
/// handlers: axum's own rejections (a bad query string, a wrong method, a body that is
/// not JSON), which are plain text or empty, and the request time-out, which is empty.
pub(crate) async fn json_envelope(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, default) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::SERVICE_UNAVAILABLE => (
            "timeout",
            "the request took longer than the server's request timeout (`--request-timeout`)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_body",
            "the body must be JSON (`Content-Type: application/json`)",
        ),
        _ if status.is_client_error() => ("invalid_request", "the request could not be used"),
        _ => ("unavailable", "the server could not answer"),
    };
    let message = if text.is_empty() {
        default.to_string()
    } else {
        text
    };
    let code = match message.strip_prefix("Failed to deserialize query string: ") {
        Some(_) => "invalid_query",
        None => code,
    };
    // axum names the offending query parameter first: "…query string: limit: invalid digit…".
    let field = message
        .strip_prefix("Failed to deserialize query string: ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(field, _)| field.to_string());
    let mut body = json!({ "code": code, "message": message });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    let mut out = (status, Json(json!({ "error": body }))).into_response();
    // Keep headers such as `Allow` and `Retry-After`, but not the old body's type and length.
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
