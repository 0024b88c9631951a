//! A JSON body extractor whose errors use our shape and name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::HttpError;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            HttpError::new(
                status,
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "invalid_body"
                },
                e.body_text(),
            )
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // Tracking the path costs on every request; it is only needed for the error.
        if let Ok(v) = serde_json::from_slice(bytes) {
            return Ok(ApiJson(v));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.inner().to_string();
                let message = format!("request body: {inner}");
                // serde names a missing or unknown top-level field in backticks.
                let field = if path == "." {
                    backticked(&inner)
                } else {
                    Some(path)
                };
                match field {
                    Some(f) => {
                        HttpError::field(StatusCode::BAD_REQUEST, "invalid_body", &f, message)
                    }
                    None => HttpError::new(StatusCode::BAD_REQUEST, "invalid_body", message),
                }
            })
    }
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}
