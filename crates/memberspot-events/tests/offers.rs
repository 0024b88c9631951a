//! Rules name offers by id or by name; an offer the school does not have is reported
//! when the events subsystem starts, naming the rule and the school's offers.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, DS24_PASS, ds24, holding, post, serve, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_take_offer_names_and_a_missing_offer_is_reported_at_start() {
    let w = world(Backend::Sqlite, 3).await;
    let state = w.state().await;
    let id = state["offers"][1]["id"].as_str().unwrap().to_owned();
    let name = state["offers"][1]["name"].as_str().unwrap().to_owned();
    let rules = format!(
        r#"
[sources.ds24]
provider = "digistore24"
secret = "{DS24_PASS}"
connection = "school"

[[rules]]
source = "ds24"
product = "1"
offer = "{}"

[[rules]]
source = "ds24"
product = "2"
offer = "no-such-offer"
"#,
        name.to_uppercase()
    );
    let served = serve(&w.hub, &rules, None, true).await;

    // The name became the id the school gives the offer.
    assert_eq!(served.events.config().rules[0].offer, id);
    let warnings = served.events.offer_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("rule 2: offer `no-such-offer` does not exist")
            && warnings[0].contains(&format!("{id} ({name})"))
            && warnings[0].contains("on connection `school`"),
        "{warnings:?}"
    );

    // A purchase under the named rule grants the offer.
    let body = ds24(
        "on_payment",
        "ORD-NAMED-1",
        "1",
        "TX-NAMED-1",
        "named@example.com",
    );
    let (status, answer) = post(&served.base, "/hooks/ds24", &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    served.drain(30).await;
    assert!(
        holding(&w, "named@example.com", &id).await.is_some(),
        "granted by id"
    );
    served.stop().await;
    w.close().await;
}
