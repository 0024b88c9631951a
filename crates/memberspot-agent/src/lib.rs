//! Language models and persona chat for Memberspot Hub.
//!
//! - [`model`]: one request/response shape over any OpenAI-compatible
//!   chat-completions endpoint and Anthropic's Messages API; `protocol` holds the two
//!   wire formats.
//! - [`config`]: `models.toml`, which model each persona chats with, and its limits.
//! - [`chat`]: the tool-calling loop: the persona's model, only the tools in its
//!   scopes, every call through [`memberspot_hub::Hub::call`] (audited with the
//!   human's prompt), destructive calls confirmed first, bounded per turn.
//! - [`rest`]: `POST /v1/personas/{name}/chat` and `…/chat/confirm`.

pub mod chat;
pub mod config;
pub mod model;
mod protocol;
pub mod rest;

pub use chat::{
    CallStatus, ChatError, ChatEvent, ChatLimits, ChatSession, ConfirmClasses, DestructivePolicy,
    ExecutedCall, PendingCall, Turn, Usage,
};
pub use config::{ConfigError, ModelsConfig, PersonaChat};
pub use model::{
    ChatMessage, ChatRequest, ChatResponse, Model, ModelConfig, ModelError, ProviderKind, ToolCall,
    ToolSpec,
};
pub use rest::{AgentState, routes};
