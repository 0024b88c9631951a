//! The Chat page in a real browser (headless Chromium through chromedriver, driven with
//! fantoccini), served by the whole app on a TCP port: an owner signs in, writes to a
//! persona, the local scripted model asks for a destructive call, the page shows it with
//! Confirm and Deny, the test clicks Confirm, and the member is gone from the sandbox
//! school. Screenshots go to `target/screenshots/chat-*.png`.
//!
//! Needs `chromium` and `chromium-driver`, as `tests/browser.rs`.

use std::time::Duration;

use fantoccini::{Client, Locator};
use memberspot_agent::{ModelsConfig, PersonaChat, ProviderKind};
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::{CallContext, Principal, Surface};
use memberspot_server::{App, Plugin, ServerSettings};
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, TestHub};

mod browser_support;
use browser_support::{browser, check_page, shot, start_driver};

// The agent tests' local scripted model server, shared rather than copied.
#[path = "../../memberspot-agent/tests/common/mod.rs"]
mod model_server;
use model_server::{ScriptedServer, text_reply, tools_reply};

const PASSWORD: &str = "a long enough password";

/// Waits until the page shows `text` (after a click that navigates).
async fn wait_text(c: &Client, text: &str) {
    for _ in 0..100 {
        if let Ok(src) = c.source().await
            && src.contains(text)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed `{text}`");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
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

#[tokio::test]
async fn chat_turn_with_a_destructive_call_confirmed_by_clicking() {
    let kind = ProviderKind::OpenAiCompatible;
    let (_driver, driver_url) = start_driver().await;
    let t = TestHub::open(Backend::Sqlite).await;
    t.hub
        .create_persona(PersonaSpec {
            name: "helper".into(),
            description: "chat in the browser".into(),
            connection: None,
            scopes: vec!["read".into(), "destructive".into()],
            offer_ids: None,
            calls_per_minute: None,
        })
        .await
        .expect("persona");
    t.hub
        .add_console_user("anna", &SecretString::from(PASSWORD), ConsoleRole::Owner)
        .await
        .expect("owner");
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
    let email = users["users"][0]["email"]
        .as_str()
        .expect("an e-mail")
        .to_owned();
    let server = ScriptedServer::start(
        kind,
        vec![
            tools_reply(
                kind,
                &[("d1", "delete_users", json!({ "emails": [email] }))],
            ),
            text_reply(kind, "Done: the member is deleted."),
        ],
    )
    .await;
    let mut models = ModelsConfig {
        file: "models.toml".into(),
        ..Default::default()
    };
    models
        .models
        .insert("scripted".into(), server.config("test-model"));
    models.personas.insert(
        "helper".into(),
        PersonaChat {
            model: Some("scripted".into()),
            ..Default::default()
        },
    );
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_models(models);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    let plugins: Vec<Box<dyn Plugin>> = vec![Box::new(console)];
    let app = App::build(t.hub.clone(), ServerSettings::default(), plugins);
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(app.serve(listener, cancel.clone()));
    let base = format!("http://{addr}");

    let c = browser(&driver_url).await;
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("anna")
        .await
        .expect("type");
    c.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    click(&c, "form.card button[type=submit]").await;
    wait_text(&c, "Overview").await;

    click(&c, "nav a[href=\"/chat\"]").await;
    wait_text(&c, "href=\"/chat/helper\"").await;
    check_page(&c, "chat personas").await;
    shot(&c, "chat-01-personas").await;
    click(&c, "a[href=\"/chat/helper\"]").await;
    wait_text(&c, "Chat with helper").await;
    c.find(Locator::Id("message"))
        .await
        .expect("message field")
        .send_keys(&format!("Please delete {email}"))
        .await
        .expect("type");
    click(&c, "form.card button[type=submit]").await;
    wait_text(&c, "Waiting for your confirmation").await;
    check_page(&c, "chat pending").await;
    shot(&c, "chat-02-pending").await;
    assert!(
        member_exists(&t, &email).await,
        "nothing ran before Confirm"
    );

    click(&c, "button[name=approve][value=yes]").await;
    wait_text(&c, "Done: the member is deleted.").await;
    check_page(&c, "chat confirmed").await;
    shot(&c, "chat-03-confirmed").await;
    let page = c.source().await.expect("page");
    assert!(page.contains("delete_users"), "the call is shown inline");
    assert!(!page.contains("Waiting for your confirmation"));
    assert!(
        !member_exists(&t, &email).await,
        "the school shows the deletion"
    );

    c.close().await.expect("close the browser");
    cancel.cancel();
    let _ = serving.await;
    t.close().await;
}
