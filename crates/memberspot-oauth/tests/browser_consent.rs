//! The consent page in a real browser (headless Chromium through chromedriver): an
//! assistant's authorization link, the console's sign-in, the consent page, Allow, and the
//! browser back at the assistant with a code that the assistant exchanges. Chromium
//! enforces the page's `form-action` on the redirect, so this also proves the consent
//! page's policy lets the answer reach the client. Screenshots go to
//! `target/screenshots/oauth-*.png` (the ones in docs/hub.md are copies).
//!
//! Needs `chromium` and `chromium-driver`, as the console's browser tests.

use std::time::Duration;

use fantoccini::{Client, Locator};

mod common;
use common::*;

#[path = "../../memberspot-console/tests/browser_support/mod.rs"]
mod browser_support;
use browser_support::{browser, shot, start_driver};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_allows_an_assistant_in_the_browser() {
    let (_driver, driver_url) = start_driver().await;
    let w = world(Backend::Sqlite).await;

    // The assistant's side: a callback page on loopback, as a desktop client has.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let callback = format!("http://{}/callback", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(|| async {
            axum::response::Html("<h1>Assistant</h1><p>Connected to Memberspot Hub.</p>")
        }),
    );
    let assistant = tokio::spawn(async move { axum::serve(listener, app).await });
    let (status, reg) = register(
        &w.base,
        serde_json::json!({ "client_name": "Claude", "redirect_uris": [callback] }),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{reg}");
    let client_id = reg["client_id"].as_str().expect("client id").to_owned();
    let (verifier, challenge) = pkce();
    let link = authorize_url(
        &w.base,
        &[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", &callback),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
            ("resource", &w.mcp()),
        ],
    );

    let c = browser(&driver_url).await;
    c.goto(&link).await.expect("open the link");
    wait_text(&c, "name=\"password\"").await;
    shot(&c, "oauth-01-sign-in").await;
    c.find(Locator::Css("#name"))
        .await
        .expect("name field")
        .send_keys(OWNER)
        .await
        .expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password field")
        .send_keys(&format!("{PASSWORD}\n"))
        .await
        .expect("type");
    wait_text(&c, "Allow Claude to use this hub?").await;
    shot(&c, "oauth-02-consent").await;
    c.find(Locator::Css("#persona option[value='reader']"))
        .await
        .expect("the persona to act as")
        .click()
        .await
        .expect("pick");
    c.find(Locator::Css("button[value='allow']"))
        .await
        .expect("Allow")
        .click()
        .await
        .expect("click");
    wait_text(&c, "Connected to Memberspot Hub.").await;
    shot(&c, "oauth-03-back-at-the-assistant").await;
    let at = c.current_url().await.expect("url");
    assert_eq!(param(at.as_str(), "state").as_deref(), Some("xyz"));
    let code = param(at.as_str(), "code").expect("a code in the redirect");
    let (status, t) = token(
        &w.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &callback),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
            ("resource", &w.mcp()),
        ],
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{t}");
    assert_eq!(
        mcp_status(&w, t["access_token"].as_str().expect("token")).await,
        reqwest::StatusCode::OK
    );

    c.goto(&format!("{}/oauth", w.base))
        .await
        .expect("apps page");
    wait_text(&c, "Connected apps").await;
    shot(&c, "oauth-04-connected-apps").await;
    let page = c.source().await.expect("source");
    assert!(page.contains("Claude") && page.contains("reader"));
    c.close().await.expect("close");
    assistant.abort();
    w.close().await;
}
