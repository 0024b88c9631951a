//! Language models: any OpenAI-compatible chat-completions endpoint (OpenAI, Azure
//! OpenAI's v1 API, Mistral, OpenRouter, Ollama, vLLM, LM Studio, …) and Anthropic's
//! Messages API, behind one small request/response shape of our own.
//!
//! Both protocols are a single JSON POST with tools, which [`crate::protocol`] writes
//! and reads; the HTTP client is the one the rest of the hub uses (reqwest, rustls
//! with ring), so a model adds no second HTTP or TLS stack to the binary. The request
//! goes exactly to `{base_url}/chat/completions` or `{base_url}/v1/messages`, with
//! exactly our authentication headers. Redirects are not followed: the key travels in
//! a header (`x-api-key`, `api-key`) that a redirect to another address would carry
//! along. Errors name the provider, host and HTTP status but never the key.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

use crate::protocol;

/// The Anthropic API version we speak (the Messages API with tools).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Default base URLs when a config leaves `base_url` out.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Longest provider error text we repeat in a message.
const DETAIL_CAP: usize = 300;

/// Which wire protocol a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions`, `Authorization: Bearer <key>`.
    #[serde(
        rename = "openai",
        alias = "openai-compatible",
        alias = "openai_compatible"
    )]
    OpenAiCompatible,
    /// `POST {base_url}/v1/messages`, `x-api-key` and `anthropic-version`.
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl ProviderKind {
    /// The names a config file may use.
    pub const NAMES: &'static str = "openai (any OpenAI-compatible endpoint) or anthropic";

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" | "openai-compatible" | "openai_compatible" => {
                Some(ProviderKind::OpenAiCompatible)
            }
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAiCompatible => OPENAI_BASE_URL,
            ProviderKind::Anthropic => ANTHROPIC_BASE_URL,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::OpenAiCompatible => "OpenAI-compatible model",
            ProviderKind::Anthropic => "Anthropic model",
        })
    }
}

/// One model: where it is, which one, and how to call it.
///
/// Deserialises from a TOML table (see [`ModelToml`]); the key is never written in
/// the file, only the name of the environment variable holding it (`api_key_env`).
#[derive(Clone, Deserialize)]
#[serde(try_from = "ModelToml")]
pub struct ModelConfig {
    pub provider: ProviderKind,
    /// e.g. `https://api.openai.com/v1`, `http://localhost:11434/v1`,
    /// `https://api.anthropic.com`. A query string (Azure's `api-version`) is kept.
    pub base_url: String,
    /// The provider's model name, e.g. `gpt-4.1-mini`, `claude-sonnet-4-5`, `llama3.1`.
    pub model: String,
    /// `None` for local servers that need none (Ollama, vLLM, LM Studio).
    pub api_key: Option<SecretString>,
    /// Where the key was to come from, for messages when it is missing.
    pub api_key_env: Option<String>,
    /// OpenAI-compatible only: send the key in this header instead of
    /// `Authorization: Bearer` (Azure OpenAI uses `api-key`).
    pub api_key_header: Option<String>,
    /// Extra headers on every request (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: BTreeMap<String, String>,
    /// How long one model call may take.
    pub timeout: Duration,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

impl ModelConfig {
    /// A config with the defaults for `provider` (base URL, 60 s, 1024 tokens).
    pub fn new(provider: ProviderKind, model: impl Into<String>) -> Self {
        ModelConfig {
            provider,
            base_url: provider.default_base_url().to_string(),
            model: model.into(),
            api_key: None,
            api_key_env: None,
            api_key_header: None,
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
        }
    }

    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `host[:port]` of the base URL, for messages.
    pub fn host(&self) -> String {
        match url::Url::parse(&self.base_url) {
            Ok(u) => match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => self.base_url.clone(),
            },
            Err(_) => self.base_url.clone(),
        }
    }

    /// The URL requests are posted to.
    pub fn endpoint_url(&self) -> Result<String, ModelError> {
        let mut url = url::Url::parse(self.base_url.trim()).map_err(|e| {
            ModelError::Config(format!("base_url `{}` is not a URL: {e}", self.base_url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ModelError::Config(format!(
                "base_url `{}` must be an http(s) URL",
                self.base_url
            )));
        }
        let path = url.path().trim_end_matches('/').to_string();
        let suffix = match self.provider {
            ProviderKind::OpenAiCompatible => "/chat/completions",
            // Both `https://api.anthropic.com` and `…/v1` are accepted.
            ProviderKind::Anthropic if path.ends_with("/v1") => "/messages",
            ProviderKind::Anthropic => "/v1/messages",
        };
        url.set_path(&format!("{path}{suffix}"));
        Ok(url.to_string())
    }
}

/// Never prints the key.
impl fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("api_key_header", &self.api_key_header)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .finish()
    }
}

/// A model table as written in TOML:
///
/// ```toml
/// provider = "openai"                      # or "anthropic"
/// base_url = "https://api.openai.com/v1"   # optional: the provider's default
/// model = "gpt-4.1-mini"
/// api_key_env = "OPENAI_API_KEY"           # optional: local servers need no key
/// api_key_header = "api-key"               # optional, OpenAI-compatible only (Azure)
/// timeout_secs = 60
/// max_tokens = 1024
/// temperature = 0.2
/// headers = { "HTTP-Referer" = "https://example.com" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelToml {
    pub provider: Spanned<String>,
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    pub model: Spanned<String>,
    #[serde(default)]
    pub api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    pub api_key_header: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout_secs: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_tokens: Option<Spanned<u32>>,
    #[serde(default)]
    pub temperature: Option<Spanned<f32>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A problem with a model table: where (a byte range of the TOML text) and what.
pub(crate) type SpannedProblem = (std::ops::Range<usize>, String);

impl ModelToml {
    /// Validates the table and reads the key from the environment. A missing variable
    /// is not an error here (a file may name models that are never used); it is
    /// reported in `warnings` and again when the model is used.
    pub(crate) fn resolve(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<ModelConfig, Vec<SpannedProblem>> {
        let mut problems = Vec::new();
        let provider = ProviderKind::parse(self.provider.get_ref());
        if provider.is_none() {
            problems.push((
                self.provider.span(),
                format!(
                    "unknown provider `{}`; use {}",
                    self.provider.get_ref(),
                    ProviderKind::NAMES
                ),
            ));
        }
        let model = self.model.get_ref().trim().to_string();
        if model.is_empty() {
            problems.push((self.model.span(), "`model` must not be empty".into()));
        }
        let base_url = self
            .base_url
            .as_ref()
            .map(|u| u.get_ref().trim().to_string());
        if let (Some(u), Some(span)) = (&base_url, self.base_url.as_ref().map(Spanned::span))
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            problems.push((span, format!("`base_url` `{u}` must be an http(s) URL")));
        }
        let timeout = match &self.timeout_secs {
            Some(t) if !(*t.get_ref() > 0.0 && t.get_ref().is_finite()) => {
                problems.push((t.span(), "`timeout_secs` must be more than 0".into()));
                DEFAULT_TIMEOUT
            }
            Some(t) => Duration::from_secs_f64(*t.get_ref()),
            None => DEFAULT_TIMEOUT,
        };
        if let Some(m) = &self.max_tokens
            && *m.get_ref() == 0
        {
            problems.push((m.span(), "`max_tokens` must be at least 1".into()));
        }
        if let Some(t) = &self.temperature
            && !(0.0..=2.0).contains(t.get_ref())
        {
            problems.push((t.span(), "`temperature` must be between 0 and 2".into()));
        }
        if let (Some(h), Some(ProviderKind::Anthropic)) = (&self.api_key_header, provider) {
            problems.push((
                h.span(),
                "`api_key_header` applies to OpenAI-compatible models only (Anthropic uses x-api-key)"
                    .into(),
            ));
        }
        let api_key_env = self
            .api_key_env
            .as_ref()
            .map(|e| e.get_ref().trim().to_string());
        if let (Some(name), Some(span)) =
            (&api_key_env, self.api_key_env.as_ref().map(Spanned::span))
            && name.is_empty()
        {
            problems.push((
                span,
                "`api_key_env` must name an environment variable".into(),
            ));
        }
        // A key (or extra headers, which often carry one) never travels unencrypted: plain
        // http:// only to this machine (a local Ollama, a proxy on loopback).
        if let (Some(u), Some(span)) = (&base_url, self.base_url.as_ref().map(Spanned::span))
            && let Ok(parsed) = url::Url::parse(u)
            && parsed.scheme() == "http"
            && !memberspot_api::is_loopback(&parsed)
            && (api_key_env.is_some() || !self.headers.is_empty())
        {
            problems.push((
                span,
                format!(
                    "`base_url` `{u}` uses http:// to another machine, which would send the API key unencrypted; use https:// (http:// is accepted for localhost, 127.0.0.0/8 and ::1)"
                ),
            ));
        }
        let api_key = api_key_env
            .as_deref()
            .filter(|n| !n.is_empty())
            .and_then(|name| match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_string())),
                _ => {
                    warnings.push(format!(
                        "model `{model}`: environment variable {name} (api_key_env) is not set"
                    ));
                    None
                }
            });
        let Some(provider) = provider else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ModelConfig {
            provider,
            base_url: base_url.unwrap_or_else(|| provider.default_base_url().to_string()),
            model,
            api_key,
            api_key_env,
            api_key_header: self.api_key_header.as_ref().map(|h| h.get_ref().clone()),
            headers: self.headers.clone(),
            timeout,
            max_tokens: self
                .max_tokens
                .as_ref()
                .map_or(DEFAULT_MAX_TOKENS, |m| *m.get_ref()),
            temperature: self.temperature.as_ref().map(|t| *t.get_ref()),
        })
    }
}

impl TryFrom<ModelToml> for ModelConfig {
    type Error = String;

    fn try_from(raw: ModelToml) -> Result<Self, Self::Error> {
        raw.resolve(&mut Vec::new()).map_err(|problems| {
            problems
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (the catalogue's portable subset).
    pub input_schema: Value,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id; the result must carry it back.
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    User {
        content: String,
    },
    Assistant {
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of a tool call: JSON (a string value is sent as plain text).
    Tool {
        call_id: String,
        content: Value,
    },
}

impl ChatMessage {
    pub fn user(text: impl Into<String>) -> Self {
        ChatMessage::User {
            content: text.into(),
        }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        ChatMessage::Assistant {
            content: Some(text.into()),
            tool_calls: Vec::new(),
        }
    }
}

/// What is sent to a model.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

/// What a model answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatResponse {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// (input tokens, output tokens), when the provider reports them.
    pub usage: Option<(u32, u32)>,
}

/// Why a model call failed. Messages name the provider, the host and the HTTP
/// status; they never contain the key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("{provider} `{model}` at {host} did not answer within {}s", after.as_secs_f64())]
    Timeout {
        provider: ProviderKind,
        host: String,
        model: String,
        after: Duration,
    },
    #[error("{provider} `{model}` at {host} answered HTTP {status}: {detail}")]
    Http {
        provider: ProviderKind,
        host: String,
        model: String,
        status: u16,
        detail: String,
    },
    #[error("{provider} `{model}` at {host} could not be reached: {detail}")]
    Unreachable {
        provider: ProviderKind,
        host: String,
        model: String,
        detail: String,
    },
    #[error("{provider} `{model}` at {host} sent an answer that could not be read: {detail}")]
    Protocol {
        provider: ProviderKind,
        host: String,
        model: String,
        detail: String,
    },
    #[error("model configuration: {0}")]
    Config(String),
}

impl ModelError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Timeout { .. } => "model_timeout",
            ModelError::Http { .. } => "model_http_error",
            ModelError::Unreachable { .. } => "model_unreachable",
            ModelError::Protocol { .. } => "model_protocol_error",
            ModelError::Config(_) => "model_config",
        }
    }
}

/// A configured model, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Model {
    config: Arc<ModelConfig>,
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Model {
    pub fn new(config: ModelConfig) -> Result<Model, ModelError> {
        if config.model.trim().is_empty() {
            return Err(ModelError::Config("the model name is empty".into()));
        }
        if config.api_key.is_none()
            && let Some(env) = &config.api_key_env
        {
            return Err(ModelError::Config(format!(
                "model `{}`: the API key variable {env} is not set",
                config.model
            )));
        }
        let url = config.endpoint_url()?;
        let headers = request_headers(&config)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ModelError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Model {
            config: Arc::new(config),
            http,
            url,
            headers,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// One completion, within the configured time-out.
    pub async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.complete_within(req, self.config.timeout).await
    }

    /// One completion within `limit` (at most the configured time-out): the chat loop
    /// passes what is left of the turn.
    pub async fn complete_within(
        &self,
        req: &ChatRequest,
        limit: Duration,
    ) -> Result<ChatResponse, ModelError> {
        let limit = limit.min(self.config.timeout);
        let body = protocol::request_body(&self.config, req);
        match tokio::time::timeout(limit, self.post(&body, limit)).await {
            Err(_) => Err(self.timeout_error(limit)),
            Ok(result) => result,
        }
    }

    async fn post(&self, body: &Value, limit: Duration) -> Result<ChatResponse, ModelError> {
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e, limit))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(e, limit))?;
        if (300..400).contains(&status) {
            return Err(self.http_error(
                status,
                "the endpoint redirects elsewhere; redirects are not followed (the key would go along): set base_url to the final address".into(),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(self.http_error(status, self.redact(&provider_message(&text))));
        }
        let answer: Value = serde_json::from_str(&text).map_err(|e| {
            let detail = if content_type.contains("json") || content_type.is_empty() {
                self.redact(&cap(&format!("invalid JSON: {e}")))
            } else {
                format!("the answer is `{content_type}`, not JSON")
            };
            self.protocol_error(detail)
        })?;
        protocol::parse_answer(self.config.provider, &answer)
            .map_err(|detail| self.protocol_error(self.redact(&cap(&detail))))
    }

    fn timeout_error(&self, after: Duration) -> ModelError {
        ModelError::Timeout {
            provider: self.config.provider,
            host: self.config.host(),
            model: self.config.model.clone(),
            after,
        }
    }

    fn http_error(&self, status: u16, detail: String) -> ModelError {
        ModelError::Http {
            provider: self.config.provider,
            host: self.config.host(),
            model: self.config.model.clone(),
            status,
            detail,
        }
    }

    fn protocol_error(&self, detail: String) -> ModelError {
        ModelError::Protocol {
            provider: self.config.provider,
            host: self.config.host(),
            model: self.config.model.clone(),
            detail,
        }
    }

    fn transport_error(&self, e: reqwest::Error, limit: Duration) -> ModelError {
        if e.is_timeout() {
            return self.timeout_error(limit);
        }
        let unreachable = e.is_connect() || e.is_request();
        let detail = self.redact(&cap(&error_chain(&e.without_url())));
        if unreachable {
            ModelError::Unreachable {
                provider: self.config.provider,
                host: self.config.host(),
                model: self.config.model.clone(),
                detail,
            }
        } else {
            self.protocol_error(detail)
        }
    }

    /// Removes the key from provider text (some providers echo part of it).
    fn redact(&self, s: &str) -> String {
        match &self.config.api_key {
            Some(k) if !k.expose_secret().is_empty() => s.replace(k.expose_secret(), "<redacted>"),
            _ => s.to_string(),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn cap(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= DETAIL_CAP {
        return s.to_string();
    }
    let head: String = s.chars().take(DETAIL_CAP).collect();
    format!("{head}…")
}

/// The provider's own error message (`{"error": {"message"}}` for both protocols),
/// else the start of the body.
fn provider_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    cap(&msg.unwrap_or_else(|| {
        if body.trim().is_empty() {
            "(empty body)".to_string()
        } else {
            body.to_string()
        }
    }))
}

/// Authentication per protocol, then the configured extra headers.
fn request_headers(c: &ModelConfig) -> Result<HeaderMap, ModelError> {
    let key = c.api_key.as_ref().map(|k| k.expose_secret().to_string());
    let mut pairs: Vec<(String, String)> = Vec::new();
    match c.provider {
        ProviderKind::OpenAiCompatible => {
            if let Some(key) = key {
                match c.api_key_header.as_deref() {
                    None => pairs.push(("authorization".into(), format!("Bearer {key}"))),
                    Some(h) if h.eq_ignore_ascii_case("authorization") => {
                        pairs.push((h.to_string(), format!("Bearer {key}")))
                    }
                    Some(h) => pairs.push((h.to_string(), key)),
                }
            }
        }
        ProviderKind::Anthropic => {
            if let Some(key) = key {
                pairs.push(("x-api-key".into(), key));
            }
            pairs.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
        }
    }
    pairs.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ModelError::Config(format!("header name `{name}` is not valid")))?;
        // The value may be the key: never repeat it.
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| ModelError::Config(format!("header `{name}` has an invalid value")))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_provider() {
        let openai = ModelConfig::new(ProviderKind::OpenAiCompatible, "m");
        assert_eq!(
            openai.endpoint_url().ok().as_deref(),
            Some("https://api.openai.com/v1/chat/completions")
        );
        let azure = ModelConfig::new(ProviderKind::OpenAiCompatible, "m")
            .base_url("https://x.openai.azure.com/openai/v1/?api-version=preview");
        assert_eq!(
            azure.endpoint_url().ok().as_deref(),
            Some("https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview")
        );
        let anthropic = ModelConfig::new(ProviderKind::Anthropic, "m");
        assert_eq!(
            anthropic.endpoint_url().ok().as_deref(),
            Some("https://api.anthropic.com/v1/messages")
        );
        let anthropic_v1 = anthropic.clone().base_url("http://127.0.0.1:9/v1/");
        assert_eq!(
            anthropic_v1.endpoint_url().ok().as_deref(),
            Some("http://127.0.0.1:9/v1/messages")
        );
        assert_eq!(anthropic_v1.host(), "127.0.0.1:9");
        assert!(anthropic.base_url("ftp://x").endpoint_url().is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = ModelConfig::new(ProviderKind::Anthropic, "m").api_key("sk-ant-secret-123");
        let text = format!("{c:?}");
        assert!(!text.contains("sk-ant-secret-123"), "{text}");
        assert!(text.contains("<redacted>"));
        let model = Model::new(c).expect("model");
        assert!(!format!("{model:?}").contains("sk-ant-secret-123"));
    }

    #[test]
    fn deserialises_from_toml() {
        let c: ModelConfig = toml::from_str(
            "provider = \"anthropic\"\nmodel = \"claude-x\"\ntimeout_secs = 5\ntemperature = 0.5\n",
        )
        .expect("valid");
        assert_eq!(c.provider, ProviderKind::Anthropic);
        assert_eq!(c.base_url, ANTHROPIC_BASE_URL);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.temperature, Some(0.5));
        let err = toml::from_str::<ModelConfig>("provider = \"gemini\"\nmodel = \"x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown provider `gemini`"), "{err}");
    }

    #[test]
    fn provider_error_text_is_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(provider_message(""), "(empty body)");
        assert!(provider_message(&"x".repeat(1000)).chars().count() <= DETAIL_CAP + 1);
    }
}
