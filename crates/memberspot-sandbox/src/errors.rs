//! NestJS-style error answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use memberspot_wire::{ErrorBody, OneOrMany};

use crate::school::SchoolError;

/// An error answer: status, NestJS body and optional `Retry-After`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: OneOrMany,
    /// The reason phrase in `"error"`; NestJS leaves it out for some statuses.
    pub error: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, error: Option<&'static str>) -> Self {
        ApiError {
            status,
            message: OneOrMany::One(message.into()),
            error,
            retry_after: None,
        }
    }

    /// A validation failure: `message` is the list of every problem.
    pub fn validation(messages: Vec<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: OneOrMany::Many(messages),
            error: Some("Bad Request"),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, Some("Bad Request"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, Some("Not Found"))
    }

    /// Express/NestJS answer for a path or method without a handler.
    pub fn no_route(method: &str, url: &str) -> Self {
        Self::not_found(format!("Cannot {method} {url}"))
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", None)
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlerException: Too Many Requests",
            None,
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
            None,
        )
    }

    pub fn bad_gateway() -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "Bad Gateway", None)
    }

    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", None)
    }

    pub fn gateway_timeout() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout", None)
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request entity too large",
            Some("Payload Too Large"),
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status_code: self.status.as_u16(),
            message: self.message.clone(),
            error: self.error.map(String::from),
        }
    }
}

impl From<SchoolError> for ApiError {
    fn from(e: SchoolError) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = crate::http::json_response(self.status, &self.body());
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
