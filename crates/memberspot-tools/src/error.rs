use memberspot_api::ApiError;
use serde_json::{Value, json};

/// Why a tool call did not produce a result.
///
/// Bad arguments and upstream 4xx are the caller's to fix (a model can act on
/// the message); configuration and transport problems are the operator's.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool `{name}`; run `memberspot tools list` to see the available tools")]
    UnknownTool { name: String },
    #[error("invalid arguments{}: {message}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    InvalidArguments {
        field: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ToolError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError::InvalidArguments {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ToolError::UnknownTool { .. } => "unknown_tool",
            ToolError::InvalidArguments { .. } => "invalid_arguments",
            ToolError::Api(e) => e.code(),
        }
    }

    /// The school answered that what was asked for does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ToolError::Api(ApiError::NotFound { .. }))
    }

    /// The offending argument, where one is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ToolError::InvalidArguments { field, .. } => field.as_deref(),
            ToolError::Api(ApiError::Validation { field, .. }) => field.as_deref(),
            _ => None,
        }
    }

    /// Whether calling again unchanged may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, ToolError::Api(e) if e.is_transient())
    }

    /// `{code, message, field?, status?, retryable}`: the one error shape of every surface.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "code": self.code(), "message": self.to_string(), "retryable": self.retryable() });
        if let Some(f) = self.field() {
            v["field"] = json!(f);
        }
        if let ToolError::Api(e) = self
            && let Some(s) = e.status()
        {
            v["status"] = json!(s);
        }
        v
    }
}
