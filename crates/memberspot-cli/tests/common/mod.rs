//! Pieces several CLI test files share: signed Digistore24 deliveries and a Slack stand-in.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use memberspot_sandbox::Sandbox;
use serde_json::Value;

/// Variables of the developer's shell that would change what `memberspot` does.
pub const HUB_ENV: &[&str] = &[
    "MEMBERSPOT_API_KEY",
    "MEMBERSPOT_BASE_URL",
    "MEMBERSPOT_CONFIG",
    "MEMBERSPOT_RATE_LIMIT",
    "MEMBERSPOT_CONNECTION",
    "MEMBERSPOT_PERSONA",
    "MEMBERSPOT_TOKEN",
    "MEMBERSPOT_MASTER_KEY",
    "MEMBERSPOT_LISTEN",
    "MEMBERSPOT_PUBLIC_URL",
    "MEMBERSPOT_TRUSTED_PROXIES",
    "MEMBERSPOT_TRUSTED_PROXY_HEADER",
    "MEMBERSPOT_LOG_FORMAT",
    "MEMBERSPOT_RULES",
    "MEMBERSPOT_FLOWS",
    "MEMBERSPOT_MODELS",
    "DATABASE_URL",
    "MEMBERSPOT_LOG",
];

/// A Digistore24 IPN of `event` for order `ORD-i` (its transaction differs per event),
/// signed with `passphrase`.
pub fn ipn(passphrase: &str, event: &str, i: usize) -> String {
    let order = format!("ORD-{i:04}");
    let email = format!("buyer{i:04}@example.de");
    let tx = format!("{}-{event}", 100_000 + i);
    let params = vec![
        ("event", event),
        ("order_id", order.as_str()),
        ("product_id", "1"),
        ("transaction_id", tx.as_str()),
        ("buyer_email", email.as_str()),
        ("buyer_first_name", "Käufer"),
        ("api_mode", "live"),
    ];
    let sign =
        memberspot_webhooks::digistore24::compute_sha_sign(params.clone(), passphrase, false);
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    s.append_pair("sha_sign", &sign);
    s.finish()
}

/// A Slack incoming-webhook stand-in on loopback: its URL, and what it received.
pub async fn slack_stand_in() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/services/T1/B1/secret",
        post({
            let seen = seen.clone();
            move |axum::Json(v): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(v);
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/services/T1/B1/secret"), seen)
}

/// The sandbox school's whole state (members, offers, request counters).
pub async fn sandbox_state(s: &Sandbox) -> Value {
    reqwest::Client::new()
        .get(format!("{}/_sandbox/state", s.root_url()))
        .header("X-API-KEY", s.api_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The command lines of the ```` ```sh ```` blocks of a Markdown text, in order (blank
/// lines and comment lines left out).
pub fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        let line = line.trim();
        if in_block && !line.is_empty() && !line.starts_with('#') {
            commands.push(line.to_owned());
        }
    }
    commands
}

/// The repository's root directory.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A file of the repository, by its path from the root.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A process's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
