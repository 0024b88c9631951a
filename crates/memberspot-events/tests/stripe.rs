//! Stripe Checkout and Payment Links: the session carries no line items, so the seller names
//! the offer in `metadata.memberspot_offer_id`. The rule granting that offer applies; a
//! session that names nothing is unmatched, and says what to add.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, holding, post, serve, world};
use memberspot_hub::store::{EventFilter, EventStatus};

const SECRET: &str = "whsec_checkout_metadata_test";

fn session(evt: &str, email: &str, metadata: &str) -> String {
    format!(
        r#"{{"id": "evt_{evt}", "object": "event", "type": "checkout.session.completed", "livemode": true,
  "created": 1764800000,
  "data": {{"object": {{"id": "cs_live_{evt}", "object": "checkout.session", "payment_status": "paid",
    "payment_intent": "pi_{evt}", "customer_details": {{"email": "{email}", "name": "Meta Käufer"}},
    "amount_total": 4900, "currency": "eur", "metadata": {{{metadata}}}}}}}}}"#
    )
}

fn signed(body: &str) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let sig = memberspot_webhooks::stripe::compute_signature(SECRET, now, body.as_bytes());
    vec![("Stripe-Signature", format!("t={now},v1={sig}"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_metadata_names_the_offer_and_a_session_naming_none_says_what_to_add() {
    let w = world(Backend::Sqlite, 3).await;
    let offers: Vec<String> = w.state().await["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    let rules = format!(
        r#"
[sources.stripe]
provider = "stripe"
secret = "{SECRET}"
connection = "school"

[[rules]]
source = "stripe"
product = "prod_basis"
offer = "{}"

[[rules]]
source = "stripe"
product = "prod_premium"
offer = "{}"
"#,
        offers[0], offers[1]
    );
    let served = serve(&w.hub, &rules, None, true).await;

    // The documented path: the offer id in the session's metadata.
    let body = session(
        "meta1",
        "meta@example.com",
        &format!(r#""memberspot_offer_id": "{}""#, offers[1]),
    );
    let (status, text) = post(&served.base, "/hooks/stripe", &body, &signed(&body)).await;
    assert_eq!(status, 200, "{text}");
    // A session naming nothing a rule grants.
    let body = session("bare1", "bare@example.com", "");
    let (status, text) = post(&served.base, "/hooks/stripe", &body, &signed(&body)).await;
    assert_eq!(status, 200, "{text}");
    served.drain(30).await;

    assert!(
        holding(&w, "meta@example.com", &offers[1]).await.is_some(),
        "the offer the metadata names"
    );
    assert!(holding(&w, "meta@example.com", &offers[0]).await.is_none());
    assert!(holding(&w, "bare@example.com", &offers[0]).await.is_none());

    let unmatched = served
        .events
        .list(&EventFilter {
            statuses: vec![EventStatus::Unmatched],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    let detail = served.events.show(&unmatched[0].id).await.unwrap();
    let why = serde_json::to_string(&detail).unwrap();
    assert!(
        why.contains("metadata.memberspot_offer_id") && why.contains("replay this event"),
        "{why}"
    );
    served.stop().await;
    w.close().await;
}

/// A stand-in for Stripe's API: the line items of Checkout sessions, for one key only.
async fn stripe_api(key: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/v1/checkout/sessions/{id}/line_items",
        axum::routing::get(move |Path(id): Path<String>, headers: HeaderMap| {
            let log = log.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(format!("{id} {auth}"));
                    l.iter().filter(|s| s.starts_with(&id)).count()
                };
                if auth != format!("Bearer {key}") {
                    return (StatusCode::UNAUTHORIZED, r#"{"error": {"type": "invalid_request_error"}}"#.to_owned());
                }
                if id.contains("flaky") && n == 1 {
                    return (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned());
                }
                (
                    StatusCode::OK,
                    r#"{"object": "list", "data": [{"id": "li_1", "object": "item", "quantity": 1,
                        "price": {"id": "price_1", "product": "prod_premium"}}], "has_more": false}"#
                        .to_owned(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// With a Stripe API key on the source, a session that names no product is looked up
/// (its first line item's product), a 503 from Stripe is retried, and the key goes only to
/// the configured API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_line_items_are_read_from_stripe_with_the_sources_key() {
    const KEY: &str = "rk_test_line_items_reader";
    let w = world(Backend::Sqlite, 3).await;
    let offers: Vec<String> = w.state().await["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    let (api, seen) = stripe_api(KEY).await;
    let key_file = w.dir.path().join("stripe.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let rules = format!(
        r#"
[sources.stripe]
provider = "stripe"
secret = "{SECRET}"
connection = "school"
stripe_api_key_file = "{}"
stripe_api_url = "{api}"

[processing]
base_backoff_secs = 0.1

[[rules]]
source = "stripe"
product = "prod_premium"
offer = "{}"
"#,
        key_file.display(),
        offers[1]
    );
    let served = serve(&w.hub, &rules, None, true).await;
    for (evt, email) in [
        ("items1", "items@example.com"),
        ("flaky1", "flaky@example.com"),
    ] {
        let body = session(evt, email, "");
        let (status, text) = post(&served.base, "/hooks/stripe", &body, &signed(&body)).await;
        assert_eq!(status, 200, "{text}");
    }
    served.drain(30).await;
    for email in ["items@example.com", "flaky@example.com"] {
        assert!(
            holding(&w, email, &offers[1]).await.is_some(),
            "{email}: the line item's product matched its rule"
        );
    }
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "one call each, and one retry: {calls:?}");
    assert!(calls.iter().all(|c| c.ends_with(&format!("Bearer {KEY}"))));
    served.stop().await;

    // The key never reaches the store.
    w.hub.close().await;
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path == key_file {
            continue;
        }
        // SQLite's last closing connection may remove its -wal and -shm files between the
        // listing and this read: a file gone holds nothing.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(!text.contains(KEY), "{} holds the key", path.display());
    }
    w.close().await;
}
