use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use memberspot_tools::ToolError;
use serde_json::{Value, json};

use crate::HubError;

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
        (self.status, Json(json!({ "error": self.body }))).into_response()
    }
}

impl From<HubError> for HttpError {
    fn from(e: HubError) -> Self {
        use memberspot_api::ApiError as A;
        let status = match &e {
            HubError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            HubError::Denied(_) => StatusCode::FORBIDDEN,
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
            HubError::Store(memberspot_store::StoreError::Conflict(_)) => StatusCode::CONFLICT,
            HubError::Store(memberspot_store::StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
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
