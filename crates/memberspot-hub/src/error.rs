use memberspot_store::{AuditOutcome, StoreError};
use memberspot_tools::ToolError;
use serde_json::{Value, json};

use crate::secrets::SecretError;

/// Why a hub operation failed. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("denied: {0}")]
    Denied(String),
    /// The caller's input cannot be used (a bad name, an unknown scope, an empty key).
    #[error("{0}")]
    Invalid(String),
    /// The persona's own calls-per-minute limit: the same call works after the wait.
    #[error("{message}")]
    Limited {
        message: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "the master key does not match the one this database was set up with; set MEMBERSPOT_MASTER_KEY or restore the key file"
    )]
    WrongMasterKey,
    #[error(transparent)]
    Secret(#[from] SecretError),
    // Transparent: with `#[from]` the store error is also the source, and a report that
    // prints the chain would print its message twice.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<memberspot_api::ApiError> for HubError {
    fn from(e: memberspot_api::ApiError) -> Self {
        HubError::Tool(ToolError::Api(e))
    }
}

/// Kinds a caller branches on; match these, never the message text or [`HubError::code`].
impl HubError {
    /// The thing asked for does not exist: a member, a course, an enrolment (the school
    /// answered 404) or a hub object (persona, connection).
    pub fn is_not_found(&self) -> bool {
        match self {
            HubError::NotFound(_) => true,
            HubError::Tool(e) => e.is_not_found(),
            _ => false,
        }
    }

    /// The caller is not who may act: an unknown token or persona, or a revoked persona.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, HubError::Unauthenticated(_))
    }

    /// Refused by the persona's scopes or offer restriction.
    pub fn is_denied(&self) -> bool {
        matches!(self, HubError::Denied(_))
    }

    /// Over the persona's own per-minute limit.
    pub fn is_limited(&self) -> bool {
        matches!(self, HubError::Limited { .. })
    }

    /// A paged list answered a cursor it had already given: it cannot be read completely.
    pub fn is_repeated_cursor(&self) -> bool {
        matches!(
            self,
            HubError::Tool(ToolError::Api(
                memberspot_api::ApiError::RepeatedCursor { .. }
            ))
        )
    }
}

impl HubError {
    /// The audit outcome of a failed call.
    pub fn outcome(&self) -> AuditOutcome {
        match self {
            HubError::Denied(_) | HubError::Unauthenticated(_) | HubError::Limited { .. } => {
                AuditOutcome::Denied
            }
            HubError::Invalid(_) => AuditOutcome::Invalid,
            HubError::Tool(ToolError::InvalidArguments { .. } | ToolError::UnknownTool { .. }) => {
                AuditOutcome::Invalid
            }
            _ => AuditOutcome::ToolError,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::Unauthenticated(_) => "unauthenticated",
            HubError::Denied(_) => "denied",
            HubError::Invalid(_) => "invalid",
            HubError::Limited { .. } => "rate_limited",
            HubError::Tool(e) => e.code(),
            HubError::NotFound(_) => "not_found",
            HubError::Unavailable(_) => "unavailable",
            HubError::WrongMasterKey | HubError::Secret(_) => "secret",
            HubError::Store(StoreError::TooNew { .. }) => "schema_newer_than_binary",
            HubError::Store(_) => "store",
        }
    }

    /// `{code, message, field?, ...}`, the error shape of every surface.
    pub fn to_json(&self) -> Value {
        match self {
            HubError::Tool(e) => e.to_json(),
            HubError::Limited {
                retry_after_secs, ..
            } => json!({
                "code": self.code(),
                "message": self.to_string(),
                "retryable": true,
                "retry_after_secs": retry_after_secs,
            }),
            other => {
                json!({ "code": other.code(), "message": other.to_string(), "retryable": false })
            }
        }
    }
}
