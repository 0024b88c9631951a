//! Event-triggered flows act only on events the hub trusts, once the queue has decided
//! them: never on a forgery, a payment its rule refused, another school's event or one
//! whose fate is still open.

#![allow(clippy::unwrap_used)]

mod common;

use memberspot_agent::config::ModelsConfig;
use memberspot_flows::service::trigger_once;
use memberspot_flows::{Flows, FlowsConfig};
use memberspot_hub::store::{EventFinish, EventStatus, NewEvent};
use serde_json::json;

fn purchase(
    key: &str,
    email: &str,
    status: EventStatus,
    connection: &str,
    verified: bool,
) -> NewEvent {
    NewEvent {
        dedupe_key: key.into(),
        source: "ds24".into(),
        provider: "digistore24".into(),
        kind: "purchase".into(),
        name: "on_payment".into(),
        order_id: Some(key.into()),
        product_id: Some("p".into()),
        email: Some(email.into()),
        test: false,
        amount_minor: Some(4900),
        currency: Some("EUR".into()),
        data: json!({}),
        status,
        connection: Some(connection.into()),
        verified,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_triggered_flows_fire_only_on_trusted_decided_events() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let toml = r#"
[[flows]]
name = "welcome"
trigger.event = "purchase"

[[flows.steps]]
name = "who"
transform = '{{ input.event.email }}'
"#;
    let cfg = FlowsConfig::parse(toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    // The first pass only sets the checkpoint: history is not replayed.
    assert_eq!(
        trigger_once(&flows, "welcome", "purchase", None)
            .await
            .unwrap(),
        0
    );

    hub.events_store()
        .insert_events(&[
            purchase("e1", "paid@example.de", EventStatus::Done, "sandbox", true),
            purchase(
                "e2",
                "forged@example.de",
                EventStatus::Rejected,
                "sandbox",
                false,
            ),
            purchase(
                "e3",
                "cent@example.de",
                EventStatus::RefusedAmount,
                "sandbox",
                true,
            ),
            purchase(
                "e4",
                "elsewhere@example.de",
                EventStatus::Done,
                "other-school",
                true,
            ),
            purchase(
                "e5",
                "waiting@example.de",
                EventStatus::Pending,
                "sandbox",
                true,
            ),
            purchase("e6", "later@example.de", EventStatus::Done, "sandbox", true),
        ])
        .await
        .unwrap();
    let fired = |runs: Vec<memberspot_hub::store::FlowRun>| -> Vec<String> {
        let mut v: Vec<String> = runs
            .into_iter()
            .map(|r| r.input["event"]["email"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        trigger_once(&flows, "welcome", "purchase", None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        fired(
            hub.flows_store()
                .list_runs(Some("welcome"), 100)
                .await
                .unwrap()
        ),
        vec!["later@example.de", "paid@example.de"]
    );

    // The worker decides the waiting one: it fires now, and nothing fires twice.
    let lease = chrono::Utc::now().timestamp_millis() + 60_000;
    let claimed = hub
        .events_store()
        .claim_events("w#1", 10, lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let done = EventFinish {
        status: EventStatus::Done,
        error: None,
        next_attempt_at: None,
        detail: "granted".into(),
        refusal: None,
    };
    assert!(
        hub.events_store()
            .finish_event(&claimed[0].id, "w#1", &done)
            .await
            .unwrap()
    );
    assert_eq!(
        trigger_once(&flows, "welcome", "purchase", None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        trigger_once(&flows, "welcome", "purchase", None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        fired(
            hub.flows_store()
                .list_runs(Some("welcome"), 100)
                .await
                .unwrap()
        ),
        vec!["later@example.de", "paid@example.de", "waiting@example.de"]
    );
    hub.close().await;
    let _ = sandbox.shutdown().await;
}
