use std::time::Duration;

use memberspot_wire::ErrorBody;

/// What went wrong talking to Memberspot, and what to do about it.
///
/// Messages come from the API's error body or from the transport and never
/// contain the API key (it only travels in a request header).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the API key was rejected (401): {message}. Check the key in Memberspot under Settings > Integrations > API Keys"
    )]
    Unauthorized { message: String },
    #[error(
        "access forbidden (403): {message}. The school's plan may lack API access (Enterprise plan or API add-on)"
    )]
    Forbidden { message: String },
    #[error("not found (404): {message}")]
    NotFound { message: String },
    #[error("the API rejected the request ({status}): {}", messages.join("; "))]
    Validation {
        status: u16,
        messages: Vec<String>,
        /// The offending field, when the message names one.
        field: Option<String>,
    },
    #[error("rate limited by Memberspot (429){}; slow down or raise the retry budget", retry_after.map(|d| format!(", retry after {}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error(
        "Memberspot answered {status}: {message}. This is on Memberspot's side; try again later"
    )]
    Upstream { status: u16, message: String },
    #[error("no answer from Memberspot within {}s", after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("could not reach Memberspot: {message}")]
    Transport { message: String },
    #[error("unexpected answer from Memberspot ({status}) at `{path}`: {message}")]
    Decode {
        status: u16,
        path: String,
        message: String,
    },
    #[error("Memberspot answered {status}: {message}")]
    Http { status: u16, message: String },
    /// A 3xx answer. Redirects are never followed: the API key would go with the request.
    #[error(
        "the API answered {status} with a redirect to {target}; redirects are not followed, so the API key is \
         never sent to another host. Check the base URL (the API is https://api.memberspot.de/v1)"
    )]
    Redirect {
        status: u16,
        /// Host (and port) of the `Location`, never its path or query.
        target: String,
    },
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A paged list answered a cursor it had given before: following it would loop, and
    /// stopping there could miss items, so the list cannot be read completely.
    #[error(
        "the list answered the cursor `{cursor}` a second time; it cannot be read completely (stopped instead of looping)"
    )]
    RepeatedCursor { cursor: String },
}

impl ApiError {
    /// HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Forbidden { .. } => Some(403),
            ApiError::NotFound { .. } => Some(404),
            ApiError::RateLimited { .. } => Some(429),
            ApiError::Validation { status, .. }
            | ApiError::Upstream { status, .. }
            | ApiError::Decode { status, .. }
            | ApiError::Http { status, .. }
            | ApiError::Redirect { status, .. } => Some(*status),
            ApiError::Timeout { .. }
            | ApiError::Transport { .. }
            | ApiError::Config(_)
            | ApiError::RepeatedCursor { .. } => None,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Validation { .. } => "validation",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Upstream { .. } => "upstream",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Transport { .. } => "transport",
            ApiError::Decode { .. } => "decode",
            ApiError::Http { .. } => "http",
            ApiError::Redirect { .. } => "redirect",
            ApiError::Config(_) => "config",
            ApiError::RepeatedCursor { .. } => "repeated_cursor",
        }
    }

    /// Whether the same call may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Upstream { .. }
                | ApiError::Timeout { .. }
                | ApiError::Transport { .. }
        )
    }

    /// Builds the error for a non-success answer.
    pub(crate) fn from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let messages: Vec<String> = match &parsed {
            Some(b) => match &b.message {
                memberspot_wire::OneOrMany::One(m) => vec![m.clone()],
                memberspot_wire::OneOrMany::Many(v) => v.clone(),
            },
            None => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                vec![if text.is_empty() {
                    reason(status).to_string()
                } else {
                    truncate(text, 300)
                }]
            }
        };
        let message = messages.join("; ");
        match status {
            401 => ApiError::Unauthorized { message },
            403 => ApiError::Forbidden { message },
            404 => ApiError::NotFound { message },
            400 | 422 => ApiError::Validation {
                status,
                field: messages.first().and_then(|m| field_of(m)),
                messages,
            },
            429 => ApiError::RateLimited { retry_after },
            500..=599 => ApiError::Upstream { status, message },
            _ => ApiError::Http { status, message },
        }
    }
}

/// class-validator messages start with the property path ("email must be an
/// email", "properties.0.value must be a string").
fn field_of(message: &str) -> Option<String> {
    let first = message.split_whitespace().next()?;
    let rest = &message[first.len()..];
    let looks_like_field = first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        && first.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let has_verb = [" must ", " should ", " is ", " has "]
        .iter()
        .any(|v| rest.starts_with(v));
    (looks_like_field && has_verb).then(|| first.to_string())
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unknown status")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let e = ApiError::from_response(
            400,
            None,
            br#"{"statusCode":400,"message":["email must be an email","grantOffer should not be empty"],"error":"Bad Request"}"#,
        );
        match &e {
            ApiError::Validation {
                field, messages, ..
            } => {
                assert_eq!(field.as_deref(), Some("email"));
                assert_eq!(messages.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("grantOffer should not be empty"));
    }

    #[test]
    fn statuses_map_to_kinds() {
        let cases: [(u16, &str); 7] = [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (429, "rate_limited"),
            (503, "upstream"),
            (418, "http"),
            (422, "validation"),
        ];
        for (status, code) in cases {
            assert_eq!(
                ApiError::from_response(status, None, b"").code(),
                code,
                "{status}"
            );
        }
        let e = ApiError::from_response(502, None, b"<html>bad gateway</html>");
        assert!(e.to_string().contains("bad gateway"));
    }

    #[test]
    fn field_detection_is_conservative() {
        assert_eq!(
            field_of("properties.0.value must be a string").as_deref(),
            Some("properties.0.value")
        );
        assert_eq!(field_of("User not found"), None);
        assert_eq!(field_of("Unexpected token in JSON"), None);
    }
}
