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
