//! Shared harness: a sandbox school and a hub on a fresh SQLite file (as in
//! memberspot-events' tests), and local scripted model servers speaking the OpenAI
//! chat-completions and Anthropic Messages protocols. They stand in for paid services
//! that cannot run here: they answer from a script and record every request, which the
//! tests then check (model, tools offered, tool results passed back, headers).

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use memberspot_agent::{Model, ModelConfig, ProviderKind};
use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, AuditRecord, Store};
use memberspot_hub::{CallContext, EmbeddedSandbox, Hub, Principal, Surface};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const TEST_MASTER_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";
pub const MODEL_KEY: &str = "sk-test-model-key-0123456789abcdef";

/// A sandbox school and a hub with a connection `school` to it.
pub struct World {
    pub sandbox: Sandbox,
    pub hub: Hub,
    pub dir: tempfile::TempDir,
}

pub async fn world() -> World {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 7,
        size: SeedSize {
            users: 12,
            offers: 4,
            courses: 3,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = Store::open(&url).await.expect("store");
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let key = MasterKey::parse(TEST_MASTER_KEY).expect("master key");
    let hub = Hub::open(store, key, Some(embedded)).await.expect("hub");
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &SecretString::from(SCHOOL_KEY.to_string()),
        0.0,
    )
    .await
    .expect("connection");
    World { sandbox, hub, dir }
}

impl World {
    /// Creates a persona on `school` and returns its token.
    pub async fn persona(&self, name: &str, scopes: &[&str]) -> String {
        use secrecy::ExposeSecret;
        let issued = self
            .hub
            .create_persona(PersonaSpec {
                name: name.into(),
                description: format!("test persona {name}"),
                connection: Some("school".into()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                offer_ids: None,
                calls_per_minute: None,
            })
            .await
            .expect("persona");
        issued.token.expose_secret().to_string()
    }

    /// The names of the tools `persona` may call, as the hub sees them.
    pub async fn scope_names(&self, persona: &str) -> Vec<String> {
        let p = self.hub.persona(persona).await.expect("persona");
        let mut names: Vec<String> = self
            .hub
            .tools_for(&Principal::Persona(p))
            .expect("scopes")
            .into_iter()
            .map(|d| d.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Calls a tool as the operator (to look at the school, unaudited-by-intent).
    pub async fn operator_call(&self, tool: &str, args: Value) -> Value {
        self.hub
            .call(
                &Principal::Operator {
                    connection: "school".into(),
                },
                &CallContext::new(Surface::Cli),
                tool,
                args,
            )
            .await
            .result
            .expect("operator call")
    }

    pub async fn first_email(&self) -> String {
        let users = self
            .operator_call("list_users", json!({"page_length": 5}))
            .await;
        users["users"][0]["email"]
            .as_str()
            .expect("an e-mail")
            .to_string()
    }

    pub async fn user_exists(&self, email: &str) -> bool {
        match self
            .hub
            .call(
                &Principal::Operator {
                    connection: "school".into(),
                },
                &CallContext::new(Surface::Cli),
                "find_user_by_email",
                json!({ "email": email }),
            )
            .await
            .result
        {
            Ok(v) => v["email"].as_str() == Some(email),
            Err(_) => false,
        }
    }

    /// Audit records of a persona, oldest first.
    pub async fn audit_of(&self, persona: &str) -> Vec<AuditRecord> {
        self.hub
            .audit(&AuditFilter {
                persona: Some(persona.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .expect("audit")
    }

    pub async fn close(self) {
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
    }
}

/// One scripted answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }
}

/// A request the scripted server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Recorded {
    /// Names of the tools offered (either protocol), sorted.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.body["tools"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| {
                        t.pointer("/function/name")
                            .or_else(|| t.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn messages(&self) -> Vec<Value> {
        self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<Vec<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A local model server that answers from a script, in order.
pub struct ScriptedServer {
    pub kind: ProviderKind,
    /// What to put in `ModelConfig::base_url`.
    pub base_url: String,
    script: Script,
    handle: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    pub async fn start(kind: ProviderKind, replies: Vec<Reply>) -> Self {
        let script = Script {
            replies: Arc::new(Mutex::new(replies)),
            requests: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = match kind {
            ProviderKind::OpenAiCompatible => format!("http://{addr}/v1"),
            ProviderKind::Anthropic => format!("http://{addr}"),
        };
        ScriptedServer {
            kind,
            base_url,
            script,
            handle,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.requests.lock().unwrap().clone()
    }

    /// Adds answers at the end of the script.
    pub fn push(&self, replies: Vec<Reply>) {
        self.script.replies.lock().unwrap().extend(replies);
    }

    pub fn config(&self, model: &str) -> ModelConfig {
        ModelConfig::new(self.kind, model)
            .base_url(self.base_url.clone())
            .api_key(MODEL_KEY)
            .timeout(Duration::from_secs(10))
    }

    pub fn model(&self, model: &str) -> Model {
        Model::new(self.config(model)).expect("model")
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn answer(
    State(script): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body,
    });
    let next = {
        let mut replies = script.replies.lock().unwrap();
        (!replies.is_empty()).then(|| replies.remove(0))
    };
    let Some(reply) = next else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "script exhausted"}})),
        )
            .into_response();
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        axum::Json(reply.body),
    )
        .into_response()
}

/// OpenAI: an assistant message asking for tool calls `(id, name, arguments)`.
pub fn openai_tools(calls: &[(&str, &str, Value)]) -> Reply {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    Reply::ok(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    }))
}

/// OpenAI: a plain answer.
pub fn openai_text(text: &str) -> Reply {
    Reply::ok(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140}
    }))
}

/// Anthropic: an assistant message with optional text and `tool_use` blocks.
pub fn anthropic_tools(text: Option<&str>, calls: &[(&str, &str, Value)]) -> Reply {
    let mut content: Vec<Value> = text
        .map(|t| json!({"type": "text", "text": t}))
        .into_iter()
        .collect();
    content.extend(calls.iter().map(
        |(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input}),
    ));
    Reply::ok(json!({
        "id": "msg_test", "type": "message", "role": "assistant", "model": "scripted",
        "content": content, "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 100, "output_tokens": 10}
    }))
}

/// Anthropic: a plain answer.
pub fn anthropic_text(text: &str) -> Reply {
    Reply::ok(json!({
        "id": "msg_test", "type": "message", "role": "assistant", "model": "scripted",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 120, "output_tokens": 20}
    }))
}

/// Answers from the script in either protocol.
pub fn tools_reply(kind: ProviderKind, calls: &[(&str, &str, Value)]) -> Reply {
    match kind {
        ProviderKind::OpenAiCompatible => openai_tools(calls),
        ProviderKind::Anthropic => anthropic_tools(None, calls),
    }
}

pub fn text_reply(kind: ProviderKind, text: &str) -> Reply {
    match kind {
        ProviderKind::OpenAiCompatible => openai_text(text),
        ProviderKind::Anthropic => anthropic_text(text),
    }
}

/// The tool results of a recorded request, as `(call id, content text)`, in either
/// protocol.
pub fn tool_results(r: &Recorded) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in r.messages() {
        if m["role"] == "tool" {
            out.push((
                m["tool_call_id"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if let Some(blocks) = m["content"].as_array() {
            for b in blocks {
                if b["type"] == "tool_result" {
                    let content = match &b["content"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push((
                        b["tool_use_id"].as_str().unwrap_or_default().to_string(),
                        content,
                    ));
                }
            }
        }
    }
    out
}
