//! Why something flows do failed, by kind: a caller branches on the variant (or on
//! [`FlowsError::code`]), never on the message.
//!
//! Running a flow has its own [`RunError`](crate::runner::RunError) (busy, already fired)
//! and a call made as a persona its [`CallError`](crate::personas::CallError); templates
//! and schedules have [`TemplateError`](crate::template::TemplateError) and
//! [`ScheduleError`](crate::schedule::ScheduleError).

use memberspot_agent::model::ModelError;
use memberspot_hub::HubError;
use memberspot_hub::store::StoreError;
use memberspot_notify::NotifyError;
use serde_json::{Value, json};

use crate::config::Target;
use crate::personas::CallError;
use crate::template::TemplateError;

/// Why a sync, an export, a model question or a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    /// No sync or export of this name in the flows file (the CLI reports `not_found`).
    #[error("no {kind} named `{name}` in the flows file")]
    NotFound { kind: &'static str, name: String },
    /// The persona cannot act (revoked, missing): nothing it runs can succeed until it is
    /// created again, which the message says how to do.
    #[error("{0}")]
    Persona(String),
    /// A tool call made as the persona failed: refused by its scopes, invalid, or the
    /// school answered an error. `error` keeps the hub's kind (`is_not_found()`,
    /// `is_denied()`, …).
    #[error("{tool}{}: {error}", about.as_ref().map(|a| format!(" {a}")).unwrap_or_default())]
    Tool {
        tool: String,
        /// What the call was about (a member's e-mail), for the message.
        about: Option<String>,
        #[source]
        error: HubError,
    },
    /// Reading a sync's records failed: the file, the URL, or what it answered.
    #[error("{0}")]
    Source(String),
    /// Writing an export failed: its file, or the app it is sent to.
    #[error("{0}")]
    Destination(String),
    /// A flow's `http` step: the request failed or the other app answered an error.
    #[error("{0}")]
    Http(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// No model of this name in the models file.
    #[error("no model named `{name}` in {file}")]
    UnknownModel { name: String, file: String },
    /// The model could not be asked (see [`ModelError::code`]).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model `{0}` answered without text")]
    NoAnswer(String),
    /// The flows file has no settings for this delivery target.
    #[error("{} delivery is not configured ([delivery.{}])", channel(*.0), table(*.0))]
    NotConfigured(Target),
    /// Sending failed; [`NotifyError::is_temporary`] tells whether trying later may work.
    #[error(transparent)]
    Delivery(#[from] NotifyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl FlowsError {
    /// `tool` failed as a persona: a persona that cannot act stays that kind.
    pub fn call(tool: &str, e: CallError) -> FlowsError {
        match e {
            CallError::Persona(m) => FlowsError::Persona(m),
            CallError::Call(error) => FlowsError::Tool {
                tool: tool.to_owned(),
                about: None,
                error,
            },
        }
    }

    /// As [`FlowsError::call`], naming what the call was about.
    pub fn call_about(tool: &str, about: &str, e: CallError) -> FlowsError {
        match FlowsError::call(tool, e) {
            FlowsError::Tool { tool, error, .. } => FlowsError::Tool {
                tool,
                about: Some(about.to_owned()),
                error,
            },
            other => other,
        }
    }

    /// Whether trying the same thing again may succeed: not while the persona cannot act
    /// or its scopes refuse the tool, nor for a template, model name or delivery target
    /// the flows file gets wrong (nothing changes between attempts).
    pub fn is_retryable(&self) -> bool {
        match self {
            FlowsError::Persona(_)
            | FlowsError::Template(_)
            | FlowsError::UnknownModel { .. }
            | FlowsError::NotConfigured(_) => false,
            FlowsError::Tool { error, .. } => !(error.is_denied() || error.is_unauthenticated()),
            _ => true,
        }
    }

    /// The hub's error of a failed tool call.
    pub fn hub_error(&self) -> Option<&HubError> {
        match self {
            FlowsError::Tool { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A name not in the flows file, or a tool call whose subject does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            FlowsError::NotFound { .. } => true,
            FlowsError::Tool { error, .. } => error.is_not_found(),
            _ => false,
        }
    }

    /// Stable machine-readable code (a failed tool call has the hub's).
    pub fn code(&self) -> &'static str {
        match self {
            FlowsError::NotFound { .. } => "not_found",
            FlowsError::Persona(_) => "persona_unavailable",
            FlowsError::Tool { error, .. } => error.code(),
            FlowsError::Source(_) => "source_failed",
            FlowsError::Destination(_) => "destination_failed",
            FlowsError::Http(_) => "http_failed",
            FlowsError::Template(_) => "template",
            FlowsError::UnknownModel { .. } => "unknown_model",
            FlowsError::Model(e) => e.code(),
            FlowsError::NoAnswer(_) => "model_no_answer",
            FlowsError::NotConfigured(_) => "not_configured",
            FlowsError::Delivery(_) => "delivery_failed",
            FlowsError::Store(_) => "store",
        }
    }

    /// `{code, message, …}`, the error shape of every surface (a failed tool call keeps
    /// the hub's fields, such as `status`).
    pub fn to_json(&self) -> Value {
        let mut v = match self {
            FlowsError::Tool { error, .. } => error.to_json(),
            _ => json!({ "code": self.code() }),
        };
        v["message"] = json!(self.to_string());
        v
    }
}

fn channel(t: Target) -> &'static str {
    match t {
        Target::Slack => "Slack",
        Target::Email => "e-mail",
        Target::Stdout => "stdout",
    }
}

fn table(t: Target) -> &'static str {
    match t {
        Target::Slack => "slack",
        Target::Email => "email",
        Target::Stdout => "stdout",
    }
}
