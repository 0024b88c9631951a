//! `POST /v1/personas/{name}/chat` and `…/chat/confirm`: persona chat over REST,
//! authenticated with that persona's token. Merged into the hub's `/openapi.json`
//! like the events routes.
//!
//! The caller sends the conversation so far (`messages`, user and assistant text) and
//! gets the answer and the turn's tool calls. A call of a class the persona confirms
//! (writes and destructive calls by default) is not run: the answer carries `pending_confirmation`, and the caller approves or
//! declines it with `…/chat/confirm`, which continues the turn. Pending turns are kept
//! in memory, per hub instance, for [`DEFAULT_CONFIRMATION_TTL`]; behind a load
//! balancer the confirmation must reach the same instance (sticky sessions), or it
//! answers 404 and the caller asks again. An expired confirmation is audited as
//! denied. Streaming is not offered: an answer comes whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use memberspot_hub::store::Persona;
use memberspot_hub::{Hub, Surface};
use memberspot_server::http::HttpError;
use memberspot_server::http::auth::PersonaAuth;
use memberspot_server::http::body::ApiJson;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::chat::{ChatError, ChatSession, ExecutedCall, Turn, Usage};
use crate::config::ModelsConfig;
use crate::model::{ChatMessage, Model, ModelConfig, ModelError};

/// How long a pending confirmation is kept.
pub const DEFAULT_CONFIRMATION_TTL: Duration = Duration::from_secs(15 * 60);
/// Pending turns kept at most per instance; the oldest are dropped (and audited) beyond.
const MAX_PENDING: usize = 1000;

#[derive(OpenApi)]
#[openapi(tags((name = "chat", description = "Chat with a persona: a language model calls the persona's tools (persona token)")))]
struct ChatDoc;

/// What the chat routes need: the hub, the models file and the pending turns.
#[derive(Clone)]
pub struct AgentState {
    hub: Hub,
    config: Arc<ModelsConfig>,
    pending: Arc<Mutex<HashMap<String, Parked>>>,
    /// Built models by name, so requests share their HTTP connections.
    models: Arc<Mutex<HashMap<String, Model>>>,
    ttl: Duration,
}

/// A turn waiting for a confirmation.
struct Parked {
    persona: String,
    conversation_id: String,
    session: ChatSession,
    expires: Instant,
}

impl AgentState {
    pub fn new(hub: Hub, config: ModelsConfig) -> Self {
        AgentState {
            hub,
            config: Arc::new(config),
            pending: Arc::new(Mutex::new(HashMap::new())),
            models: Arc::new(Mutex::new(HashMap::new())),
            ttl: DEFAULT_CONFIRMATION_TTL,
        }
    }

    pub fn with_confirmation_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The model `name` of the models file, built once.
    fn model(&self, name: &str, config: ModelConfig) -> Result<Model, ModelError> {
        if let Ok(cache) = self.models.lock()
            && let Some(m) = cache.get(name)
        {
            return Ok(m.clone());
        }
        let model = Model::new(config)?;
        if let Ok(mut cache) = self.models.lock() {
            cache.insert(name.to_string(), model.clone());
        }
        Ok(model)
    }

    fn park(&self, id: String, parked: Parked) {
        let mut evicted = Vec::new();
        if let Ok(mut map) = self.pending.lock() {
            map.insert(id, parked);
            while map.len() > MAX_PENDING {
                let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, p)| p.expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                evicted.extend(map.remove(&oldest));
            }
        }
        self.audit_abandoned(
            evicted,
            "not run: too many pending confirmations; this one was dropped",
        );
    }

    /// Takes the parked turn `id` of `persona`, dropping expired ones on the way.
    fn take(&self, id: &str, persona: &str) -> Option<Parked> {
        let now = Instant::now();
        let (found, expired) = match self.pending.lock() {
            Ok(mut map) => {
                let expired_ids: Vec<String> = map
                    .iter()
                    .filter(|(_, p)| p.expires <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let expired: Vec<Parked> =
                    expired_ids.iter().filter_map(|k| map.remove(k)).collect();
                let found = match map.get(id) {
                    Some(p) if p.persona == persona => map.remove(id),
                    _ => None,
                };
                (found, expired)
            }
            Err(_) => (None, Vec::new()),
        };
        self.audit_abandoned(expired, "not run: the confirmation expired");
        found
    }

    fn audit_abandoned(&self, parked: Vec<Parked>, reason: &'static str) {
        if parked.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for mut p in parked {
                p.session.abandon(reason).await;
            }
        });
    }
}

impl FromRef<AgentState> for Hub {
    fn from_ref(state: &AgentState) -> Hub {
        state.hub.clone()
    }
}

/// Persona chat as a plug-in of the server: its routes, no background task.
impl memberspot_server::Plugin for AgentState {
    fn name(&self) -> &str {
        "chat"
    }

    fn routes(&self) -> Option<(axum::Router, utoipa::openapi::OpenApi)> {
        Some(routes(self.clone()))
    }
}

/// The routes and their OpenAPI document.
pub fn routes(state: AgentState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ChatDoc::openapi())
        .routes(routes!(chat))
        .routes(routes!(confirm))
        .split_for_parts();
    (router.with_state(state), api)
}

/// A request authenticated as the persona named in the path.
fn same_persona(path: &str, p: &Persona) -> Result<(), HttpError> {
    if path == p.name {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!(
                "this token belongs to persona `{}`, not `{path}`: chat with a persona using its own token",
                p.name
            ),
        ))
    }
}

/// A JSON body whose errors use the hub's shape and name the field.
/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation so far.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InMessage {
    pub role: Role,
    pub content: String,
}

/// A chat turn: the conversation so far, ending with the user's new message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    pub messages: Vec<InMessage>,
    /// Groups the audit records of a conversation (their request id); generated when absent.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The human on whose behalf the persona acts; recorded in the audit log.
    #[serde(default)]
    pub end_user: Option<String>,
}

/// The answer to a pending confirmation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// `pending_confirmation.id` from the previous answer.
    pub id: String,
    /// true runs the call; false does not (the model is told the user declined).
    pub approve: bool,
}

/// A destructive call waiting for approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingView {
    /// Send it to `POST /v1/personas/{name}/chat/confirm`.
    pub id: String,
    pub tool: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    pub reason: String,
    /// Epoch milliseconds after which the confirmation is no longer accepted.
    pub expires_at: i64,
}

/// The turn's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatReply {
    /// The model's text (may be empty while a confirmation is pending).
    pub answer: String,
    /// Every tool call of the turn so far, in order, with its outcome and audit record.
    pub tool_calls: Vec<ExecutedCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_confirmation: Option<PendingView>,
    /// Refused tools, limits reached: things to show the user.
    pub notices: Vec<String>,
    pub conversation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn reply(turn: Turn, conversation_id: String, ttl: Duration) -> ChatReply {
    let expires_at = chrono::Utc::now().timestamp_millis()
        + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    ChatReply {
        answer: turn.answer,
        tool_calls: turn.tool_calls,
        pending_confirmation: turn.pending.map(|p| PendingView {
            id: p.id,
            tool: p.tool,
            arguments: p.args,
            reason: p.reason,
            expires_at,
        }),
        notices: turn.notices,
        conversation_id,
        usage: turn.usage,
    }
}

fn chat_error(e: ChatError) -> HttpError {
    match e {
        ChatError::Hub(h) => HttpError::from(h),
        ChatError::Model(m) => {
            let status = match &m {
                ModelError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                ModelError::Config(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            tracing::warn!(error = %m, "chat: the model call failed");
            HttpError::new(status, m.code(), m.to_string())
        }
        ChatError::TurnTimeout(_) => {
            HttpError::new(StatusCode::GATEWAY_TIMEOUT, "turn_timeout", e.to_string())
        }
        ChatError::AwaitingConfirmation { .. } => {
            HttpError::new(StatusCode::CONFLICT, "awaiting_confirmation", e.to_string())
        }
        ChatError::UnknownConfirmation(_) => {
            HttpError::new(StatusCode::NOT_FOUND, "unknown_confirmation", e.to_string())
        }
        ChatError::EmptyMessage => HttpError::field(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "messages",
            "the last message is empty",
        ),
    }
}

/// Runs one chat turn as this persona. Every tool call is audited with the last user
/// message as its prompt; destructive calls wait for `…/chat/confirm`.
#[utoipa::path(post, path = "/v1/personas/{name}/chat", tag = "chat", security(("persona" = [])),
    params(("name" = String, Path, description = "persona name; must be the token's persona")),
    request_body = ChatBody,
    responses(
        (status = 200, body = ChatReply),
        (status = 400, description = "invalid body; `field` names the problem"),
        (status = 401, description = "missing, unknown or revoked token"),
        (status = 403, description = "the token belongs to another persona"),
        (status = 409, description = "no chat model is configured for this persona"),
        (status = 502, description = "the model failed"),
        (status = 504, description = "the model or the turn timed out"),
    ))]
async fn chat(
    State(state): State<AgentState>,
    PersonaAuth(persona): PersonaAuth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Json<ChatReply>, HttpError> {
    same_persona(&name, &persona)?;
    let Some((last, earlier)) = body.messages.split_last() else {
        return Err(HttpError::field(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "messages",
            "send at least one message",
        ));
    };
    if last.role != Role::User {
        return Err(HttpError::field(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "messages",
            "the last message must be the user's",
        ));
    }
    let (model_name, model_config, settings) = state
        .config
        .for_persona_named(&persona.name, None)
        .map_err(|m| HttpError::new(StatusCode::CONFLICT, "no_model", m))?;
    let model = state
        .model(&model_name, model_config)
        .map_err(|e| chat_error(e.into()))?;
    let conversation_id = body
        .conversation_id
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let history = earlier
        .iter()
        .map(|m| match m.role {
            Role::User => ChatMessage::user(m.content.clone()),
            Role::Assistant => ChatMessage::assistant(m.content.clone()),
        })
        .collect();
    let mut session = ChatSession::new(
        state.hub.clone(),
        persona.name.clone(),
        model,
        settings.limits,
    )
    .surface(Surface::Rest)
    .end_user(body.end_user)
    .conversation_id(Some(conversation_id.clone()))
    .system_prompt(settings.system_prompt)
    .with_history(history);
    let turn = session.send(&last.content).await.map_err(chat_error)?;
    Ok(Json(finish(
        &state,
        persona.name,
        conversation_id,
        session,
        turn,
    )))
}

/// Approves or declines a pending destructive call and continues the turn.
#[utoipa::path(post, path = "/v1/personas/{name}/chat/confirm", tag = "chat", security(("persona" = [])),
    params(("name" = String, Path, description = "persona name; must be the token's persona")),
    request_body = ConfirmBody,
    responses(
        (status = 200, body = ChatReply),
        (status = 401, description = "missing, unknown or revoked token"),
        (status = 403, description = "the token belongs to another persona"),
        (status = 404, description = "no such pending confirmation (answered, expired, or on another instance)"),
        (status = 502, description = "the model failed"),
        (status = 504, description = "the model or the turn timed out"),
    ))]
async fn confirm(
    State(state): State<AgentState>,
    PersonaAuth(persona): PersonaAuth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<Json<ChatReply>, HttpError> {
    same_persona(&name, &persona)?;
    let Some(mut parked) = state.take(&body.id, &persona.name) else {
        return Err(chat_error(ChatError::UnknownConfirmation(body.id)));
    };
    let turn = parked
        .session
        .confirm(&body.id, body.approve)
        .await
        .map_err(chat_error)?;
    Ok(Json(finish(
        &state,
        parked.persona,
        parked.conversation_id,
        parked.session,
        turn,
    )))
}

/// Parks the session when the turn waits for a confirmation, and shapes the reply.
fn finish(
    state: &AgentState,
    persona: String,
    conversation_id: String,
    session: ChatSession,
    turn: Turn,
) -> ChatReply {
    if let Some(p) = &turn.pending {
        state.park(
            p.id.clone(),
            Parked {
                persona,
                conversation_id: conversation_id.clone(),
                session,
                expires: Instant::now() + state.ttl,
            },
        );
    }
    reply(turn, conversation_id, state.ttl)
}
