//! `POST /v1/personas/{name}/chat` and `…/chat/confirm` over real HTTP, merged into
//! the hub's REST app as `memberspot serve` would.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use memberspot_agent::{AgentState, ModelsConfig, PersonaChat, ProviderKind};
use memberspot_hub::Hub;
use serde_json::{Value, json};

struct Served {
    base: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn serve(hub: &Hub, state: AgentState) -> Served {
    let app = memberspot_server::App::build(
        hub.clone(),
        memberspot_server::ServerSettings::default(),
        vec![Box::new(state)],
    )
    .router(&tokio_util::sync::CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served {
        base: format!("http://{addr}"),
        handle,
    }
}

/// `scripted` for `admin` and `reader`; no default model.
fn config(server: &ScriptedServer) -> ModelsConfig {
    let mut c = ModelsConfig {
        file: "models.toml".into(),
        ..Default::default()
    };
    c.models
        .insert("scripted".into(), server.config("test-model"));
    for p in ["admin", "reader"] {
        c.personas.insert(
            p.into(),
            PersonaChat {
                model: Some("scripted".into()),
                ..Default::default()
            },
        );
    }
    c
}

async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn chat_and_confirm_end_to_end() {
    let kind = ProviderKind::OpenAiCompatible;
    let w = world().await;
    let admin = w.persona("admin", &["read", "destructive"]).await;
    let reader = w.persona("reader", &["read"]).await;
    let loner_token = w.persona("loner", &["read"]).await;
    let email = w.first_email().await;
    let server = ScriptedServer::start(
        kind,
        vec![
            tools_reply(
                kind,
                &[("d1", "delete_users", json!({ "emails": [email] }))],
            ),
            text_reply(kind, "Deleted."),
        ],
    )
    .await;
    let app = serve(&w.hub, AgentState::new(w.hub.clone(), config(&server))).await;
    let base = app.base.as_str();
    let chat = "/v1/personas/admin/chat";
    let prompt = format!("Delete {email}, please");
    let body = json!({
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": prompt}
        ],
        "conversation_id": "conv-42",
        "end_user": "agent@example.com"
    });

    // Authentication: a token, and the path's persona.
    let (status, err) = post(base, chat, None, body.clone()).await;
    assert_eq!(status, 401, "{err}");
    let (status, err) = post(base, chat, Some(&reader), body.clone()).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], "denied");
    assert!(server.requests().is_empty());

    // The destructive call waits.
    let (status, reply) = post(base, chat, Some(&admin), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["answer"], "");
    assert_eq!(reply["tool_calls"], json!([]));
    assert_eq!(reply["conversation_id"], "conv-42");
    let pending = reply["pending_confirmation"].clone();
    assert_eq!(pending["tool"], "delete_users");
    assert_eq!(pending["arguments"], json!({ "emails": [email] }));
    assert!(pending["expires_at"].as_i64().unwrap() > chrono_now());
    let id = pending["id"].as_str().unwrap().to_string();
    assert!(w.user_exists(&email).await);
    // The earlier messages reached the model.
    let sent = server.requests()[0].messages();
    assert_eq!(sent[1], json!({"role": "user", "content": "Hi"}));
    assert_eq!(
        sent[2],
        json!({"role": "assistant", "content": "Hello! How can I help?"})
    );

    let confirm = "/v1/personas/admin/chat/confirm";
    let (status, err) = post(
        base,
        "/v1/personas/reader/chat/confirm",
        Some(&reader),
        json!({"id": id, "approve": true}),
    )
    .await;
    assert_eq!(status, 404, "another persona cannot answer it: {err}");
    let (status, err) = post(
        base,
        confirm,
        Some(&admin),
        json!({"id": "nope", "approve": true}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("unknown_confirmation"))
    );
    let (status, err) = post(base, confirm, Some(&admin), json!({"id": id})).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("approve")),
        "{err}"
    );

    let (status, reply) = post(
        base,
        confirm,
        Some(&admin),
        json!({"id": id, "approve": true}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["answer"], "Deleted.");
    assert!(reply.get("pending_confirmation").is_none());
    assert_eq!(reply["tool_calls"][0]["tool"], "delete_users");
    assert_eq!(reply["tool_calls"][0]["outcome"], "ok");
    assert!(reply["tool_calls"][0]["audit_seq"].is_i64());
    assert!(!w.user_exists(&email).await, "deleted after approval");
    let (status, _) = post(
        base,
        confirm,
        Some(&admin),
        json!({"id": id, "approve": true}),
    )
    .await;
    assert_eq!(status, 404, "answered once");

    let audit = w.audit_of("admin").await;
    assert_eq!(audit.len(), 1);
    let a = &audit[0];
    assert_eq!(
        (a.tool.as_str(), a.outcome.as_str(), a.surface.as_str()),
        ("delete_users", "ok", "rest")
    );
    assert_eq!(a.prompt.as_deref(), Some(prompt.as_str()));
    assert_eq!(a.end_user.as_deref(), Some("agent@example.com"));
    assert_eq!(a.request_id, "conv-42");

    // A persona without a model.
    let (status, err) = post(
        base,
        "/v1/personas/loner/chat",
        Some(&loner_token),
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("no_model")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[personas.loner]")
    );

    // Bad bodies name the field.
    let (status, err) = post(base, chat, Some(&admin), json!({"messages": []})).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("messages"))
    );
    let (status, err) = post(
        base,
        chat,
        Some(&admin),
        json!({"messages": [{"role": "system", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("messages[0]"),
        "{err}"
    );
    let (status, _) = post(
        base,
        chat,
        Some(&admin),
        json!({"messages": [{"role": "assistant", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);

    // Documented in the hub's OpenAPI document.
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/personas/{name}/chat"]["post"].is_object());
    assert!(doc["paths"]["/v1/personas/{name}/chat/confirm"]["post"].is_object());
    assert!(
        doc["paths"]["/v1/tools"]["get"].is_object(),
        "merged, not replaced"
    );
    w.close().await;
}

#[tokio::test]
async fn out_of_scope_model_errors_and_expired_confirmations_over_rest() {
    let kind = ProviderKind::Anthropic;
    let w = world().await;
    let admin = w.persona("admin", &["read", "destructive"]).await;
    let reader = w.persona("reader", &["read"]).await;
    let email = w.first_email().await;
    let server = ScriptedServer::start(
        kind,
        vec![
            anthropic_tools(
                None,
                &[("t1", "delete_users", json!({ "emails": [email] }))],
            ),
            anthropic_text("I cannot do that: the tool is not available to me."),
            Reply {
                status: 500,
                body: json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
                delay: Duration::ZERO,
            },
            anthropic_tools(
                None,
                &[("t2", "delete_users", json!({ "emails": [email] }))],
            ),
        ],
    )
    .await;
    let state =
        AgentState::new(w.hub.clone(), config(&server)).with_confirmation_ttl(Duration::ZERO);
    let app = serve(&w.hub, state).await;
    let base = app.base.as_str();
    let ask = |text: &str| json!({"messages": [{"role": "user", "content": text}]});

    let (status, reply) = post(
        base,
        "/v1/personas/reader/chat",
        Some(&reader),
        ask("delete them"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["tool_calls"][0]["outcome"], "out_of_scope");
    assert!(
        reply["notices"][0]
            .as_str()
            .unwrap()
            .contains("not available")
    );
    assert!(reply["answer"].as_str().unwrap().contains("not available"));
    let audit = w.audit_of("reader").await;
    assert_eq!(
        (
            audit[0].outcome.as_str(),
            audit[0].surface.as_str(),
            audit[0].prompt.as_deref()
        ),
        ("denied", "rest", Some("delete them"))
    );
    assert_eq!(
        reply["conversation_id"].as_str(),
        Some(audit[0].request_id.as_str())
    );

    let (status, err) = post(
        base,
        "/v1/personas/reader/chat",
        Some(&reader),
        ask("hello"),
    )
    .await;
    assert_eq!(status, 502, "{err}");
    assert_eq!(err["error"]["code"], "model_http_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500: boom")
    );

    // A confirmation that expires is refused and audited as denied.
    let (status, reply) = post(base, "/v1/personas/admin/chat", Some(&admin), ask("delete")).await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["pending_confirmation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = post(
        base,
        "/v1/personas/admin/chat/confirm",
        Some(&admin),
        json!({"id": id, "approve": true}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(w.user_exists(&email).await);
    let mut expired = Vec::new();
    for _ in 0..50 {
        expired = w.audit_of("admin").await;
        if !expired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].outcome.as_str(), "denied");
    assert!(expired[0].error.as_deref().unwrap().contains("expired"));
    assert_eq!(expired[0].prompt.as_deref(), Some("delete"));
    w.close().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
