//! The Chat page, in process on SQLite and PostgreSQL, against the agent tests' local
//! scripted model server: an owner's message makes the model ask for a destructive call,
//! which waits (nothing runs) until Confirm is posted; then the member is gone from the
//! school and the call is audited under the persona with the console user as end user.
//! A viewer neither sees the page nor may post to it; a post without CSRF is refused.

use axum::http::StatusCode;
use memberspot_agent::{ModelsConfig, PersonaChat, ProviderKind};
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use memberspot_hub::{CallContext, Principal, Surface};
use secrecy::SecretString;
use serde_json::json;

mod common;
use common::{Backend, Client, TestHub};

// The agent tests' local scripted model server, shared rather than copied.
#[path = "../../memberspot-agent/tests/common/mod.rs"]
mod model_server;
use model_server::{ScriptedServer, text_reply, tools_reply};

const PASSWORD: &str = "correct horse battery";

async fn signed_in(t: &TestHub, plugin: &ConsolePlugin, name: &str, role: ConsoleRole) -> Client {
    t.hub
        .add_console_user(name, &SecretString::from(PASSWORD), role)
        .await
        .expect("add user");
    let mut c = Client::new(plugin.router());
    assert_eq!(c.login(name, PASSWORD).await.status, StatusCode::SEE_OTHER);
    c
}

fn models(server: &ScriptedServer) -> ModelsConfig {
    let mut c = ModelsConfig {
        file: "models.toml".into(),
        ..Default::default()
    };
    c.models
        .insert("scripted".into(), server.config("test-model"));
    c.personas.insert(
        "helper".into(),
        PersonaChat {
            model: Some("scripted".into()),
            ..Default::default()
        },
    );
    c
}

async fn member_exists(t: &TestHub, email: &str) -> bool {
    let r = t
        .hub
        .call(
            &Principal::Operator {
                connection: "sandbox".into(),
            },
            &CallContext::new(Surface::Cli),
            "find_user_by_email",
            json!({ "email": email }),
        )
        .await
        .result;
    matches!(r, Ok(v) if v["email"].as_str() == Some(email))
}

async fn first_email(t: &TestHub) -> String {
    let users = t
        .hub
        .call(
            &Principal::Operator {
                connection: "sandbox".into(),
            },
            &CallContext::new(Surface::Cli),
            "list_users",
            json!({ "page_length": 5 }),
        )
        .await
        .result
        .expect("list users");
    users["users"][0]["email"]
        .as_str()
        .expect("an e-mail")
        .to_owned()
}

/// The id of the call waiting on the page.
fn pending_id(body: &str) -> String {
    let at = body.find("name=\"id\" value=\"").expect("the pending id");
    let rest = &body[at + "name=\"id\" value=\"".len()..];
    rest[..rest.find('"').expect("end")].to_owned()
}

async fn chat_confirm(backend: Backend) {
    let kind = ProviderKind::OpenAiCompatible;
    let t = TestHub::open(backend).await;
    t.hub
        .create_persona(PersonaSpec {
            name: "helper".into(),
            description: "chat test".into(),
            connection: None,
            scopes: vec!["read".into(), "destructive".into()],
            offer_ids: None,
            calls_per_minute: None,
        })
        .await
        .expect("persona");
    let email = first_email(&t).await;
    let server = ScriptedServer::start(
        kind,
        vec![
            tools_reply(
                kind,
                &[("d1", "delete_users", json!({ "emails": [email] }))],
            ),
            text_reply(kind, "Deleted the member."),
        ],
    )
    .await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_models(models(&server));
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    let list = c.get("/chat").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("href=\"/chat/helper\""), "{}", list.body);
    let page = c.get("/chat/helper").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let prompt = format!("Please delete {email}");

    // Without the CSRF token: refused, the model never asked.
    let forged = c.post("/chat/helper", &[("message", &prompt)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(server.requests().is_empty());

    let sent = c
        .post("/chat/helper", &[("csrf", &csrf), ("message", &prompt)])
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let page = c.get("/chat/helper").await;
    assert!(
        page.body.contains(&prompt),
        "the transcript shows the message"
    );
    assert!(
        page.body.contains("Waiting for your confirmation"),
        "{}",
        page.body
    );
    assert!(page.body.contains("delete_users"));
    assert!(page.body.contains(&email), "the arguments are shown");
    assert!(
        member_exists(&t, &email).await,
        "nothing ran before Confirm"
    );
    let id = pending_id(&page.body);

    // A viewer sees no Chat entry and no page, and a forged confirm is refused.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let home = v.get("/").await;
    assert!(!home.body.contains("href=\"/chat\""));
    assert_eq!(v.get("/chat").await.status, StatusCode::FORBIDDEN);
    assert_eq!(v.get("/chat/helper").await.status, StatusCode::FORBIDDEN);
    let v_csrf = v.get("/").await.csrf();
    let forged = v
        .post(
            "/chat/helper/confirm",
            &[("csrf", &v_csrf), ("id", &id), ("approve", "yes")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let forged = v
        .post("/chat/helper", &[("csrf", &v_csrf), ("message", "hi")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(member_exists(&t, &email).await);
    // Confirm without CSRF: refused.
    let forged = c
        .post("/chat/helper/confirm", &[("id", &id), ("approve", "yes")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(member_exists(&t, &email).await);
    assert_eq!(server.requests().len(), 1);

    let confirmed = c
        .post(
            "/chat/helper/confirm",
            &[("csrf", &csrf), ("id", &id), ("approve", "yes")],
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    assert!(!member_exists(&t, &email).await, "deleted after Confirm");
    let page = c.get("/chat/helper").await;
    assert!(page.body.contains("Deleted the member."), "{}", page.body);
    assert!(!page.body.contains("Waiting for your confirmation"));
    assert!(page.body.contains("name=\"message\""), "the form is back");

    // A second call denied: nothing runs, the call is shown as declined.
    let second = first_email(&t).await;
    server.push(vec![
        tools_reply(
            kind,
            &[("d2", "delete_users", json!({ "emails": [second] }))],
        ),
        text_reply(kind, "Understood, nothing deleted."),
    ]);
    c.post(
        "/chat/helper",
        &[("csrf", &csrf), ("message", &format!("And {second}"))],
    )
    .await;
    let page = c.get("/chat/helper").await;
    let id = pending_id(&page.body);
    let denied = c
        .post(
            "/chat/helper/confirm",
            &[("csrf", &csrf), ("id", &id), ("approve", "no")],
        )
        .await;
    assert_eq!(denied.status, StatusCode::SEE_OTHER);
    assert!(member_exists(&t, &second).await, "denied: not deleted");
    let page = c.get("/chat/helper").await;
    assert!(page.body.contains("Understood, nothing deleted."));
    assert!(page.body.contains("declined"), "{}", page.body);

    // A browser without this conversation (another owner; another instance without sticky
    // sessions, or after a restart, is the same): its Confirm runs nothing and the page
    // says why; a persona without a chat model is a page too, not a bare 404.
    let mut b = signed_in(&t, &plugin, "bert", ConsoleRole::Owner).await;
    let b_csrf = b.get("/chat").await.csrf();
    let gone = b
        .post(
            "/chat/helper/confirm",
            &[("csrf", &b_csrf), ("id", &id), ("approve", "yes")],
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        gone.body.contains("<h1>This conversation has ended</h1>")
            && gone.body.contains("Nothing ran"),
        "{}",
        gone.body
    );
    assert!(member_exists(&t, &second).await);
    let unknown = b
        .post("/chat/nobody", &[("csrf", &b_csrf), ("message", "hi")])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("Persona nobody has no chat model"));

    let audit = t
        .hub
        .audit(&AuditFilter {
            persona: Some("helper".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("audit");
    let a = audit
        .iter()
        .find(|a| a.outcome.as_str() == "ok")
        .expect("the confirmed call's record");
    assert_eq!(audit.len(), 2, "the confirmed and the declined call");
    assert_eq!(
        (a.tool.as_str(), a.outcome.as_str(), a.surface.as_str()),
        ("delete_users", "ok", "console")
    );
    assert_eq!(a.end_user.as_deref(), Some("anna"));
    assert_eq!(a.prompt.as_deref(), Some(prompt.as_str()));
    assert!(a.request_id.starts_with("console-"), "{}", a.request_id);

    t.close().await;
}

#[tokio::test]
async fn chat_confirm_sqlite() {
    chat_confirm(Backend::Sqlite).await;
}

#[tokio::test]
async fn chat_confirm_postgres() {
    chat_confirm(Backend::Postgres).await;
}
