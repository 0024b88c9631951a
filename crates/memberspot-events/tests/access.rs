//! Access rules end to end: signed webhooks over HTTP → stored → workers → tools as the
//! source's persona → the sandbox school. Effects are counted in the sandbox (successful
//! calls per route), on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::Backend;
use memberspot_hub::store::{AuditFilter, EventFilter, EventStatus};
use serde_json::{Value, json};

use common::{DS24_PASS, ds24, ds24_vector, holding, offers, post, succeeded};

const GRANT: &str = "POST /v1/users/grant-user-offer-by-mail";
const ORDER_STATE: &str = "POST /v1/users/set-order-state";

async fn ds24_story(backend: Backend) {
    let w = common::world(backend, 5).await;
    let offers = offers(&w).await;
    let rules = format!(
        r#"
[sources.ds24]
provider = "digistore24"
secret = "{DS24_PASS}"
connection = "school"

[[rules]]
source = "ds24"
product = "598765"
offer = "{}"

[[rules]]
source = "ds24"
product = "777"
offer = "{}"
subscription = true
"#,
        offers[0], offers[1]
    );
    let served = common::serve(&w.hub, &rules, None, true).await;
    let base = served.base.clone();
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let email = "jorg+kurs@example.de";

    // A signed on_payment grants the mapped offer with the order id.
    let payment = ds24_vector("lifecycle_on_payment");
    assert_eq!(
        post(&base, "/hooks/ds24", &payment, &form).await,
        (200, "OK".into())
    );
    served.drain(20).await;
    let h = holding(&w, email, &offers[0]).await.expect("granted");
    assert_eq!(h["orderId"], "MBR7Q2XZ");
    assert_eq!(h["active"], true);
    assert_eq!(succeeded(&w, GRANT).await, 1);

    // Redelivery changes nothing.
    assert_eq!(post(&base, "/hooks/ds24", &payment, &form).await.0, 200);
    served.drain(20).await;
    assert_eq!(succeeded(&w, GRANT).await, 1);
    let list = served
        .events
        .list(&EventFilter {
            source: Some("ds24".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].redeliveries, 1);
    assert_eq!(list[0].status, EventStatus::Done);

    // The grant is audited as the source's persona and linked from the event.
    let detail = served.events.show(&list[0].id).await.unwrap();
    assert_eq!(detail.actions.len(), 1);
    assert_eq!(detail.actions[0].tool, "grant_user_offer_by_email");
    assert_eq!(detail.audit.len(), 1, "{:?}", detail.audit);
    assert_eq!(detail.audit[0]["persona"], "hook-ds24");
    let audit = w
        .hub
        .audit(&AuditFilter {
            request_id: Some(detail.actions[0].request_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].surface.as_str(), "events");
    assert!(audit[0].prompt.as_deref().unwrap().contains(&list[0].id));
    assert_eq!(audit[0].arguments["order_id"], "MBR7Q2XZ");

    // The refund revokes; its redelivery changes nothing.
    let refund = ds24_vector("lifecycle_on_refund");
    assert_eq!(post(&base, "/hooks/ds24", &refund, &form).await.0, 200);
    assert_eq!(post(&base, "/hooks/ds24", &refund, &form).await.0, 200);
    served.drain(20).await;
    assert_eq!(
        holding(&w, email, &offers[0]).await.unwrap()["active"],
        false
    );
    assert_eq!(succeeded(&w, ORDER_STATE).await, 1);

    // A late payment after the refund does not grant again.
    let rebill = ds24_vector("lifecycle_on_payment_rebill");
    assert_eq!(post(&base, "/hooks/ds24", &rebill, &form).await.0, 200);
    served.drain(20).await;
    assert_eq!(
        holding(&w, email, &offers[0]).await.unwrap()["active"],
        false
    );
    assert_eq!(succeeded(&w, GRANT).await, 1);
    assert_eq!(succeeded(&w, ORDER_STATE).await, 1);

    // Out of order: the refund arrives before the purchase it refunds.
    let late = "late@example.de";
    let r = ds24("on_refund", "ORD-LATE", "598765", "9002", late);
    assert_eq!(post(&base, "/hooks/ds24", &r, &form).await.0, 200);
    served.drain(20).await;
    let p = ds24("on_payment", "ORD-LATE", "598765", "9001", late);
    assert_eq!(post(&base, "/hooks/ds24", &p, &form).await.0, 200);
    served.drain(20).await;
    assert!(
        holding(&w, late, &offers[0]).await.is_none(),
        "never granted"
    );
    assert_eq!(succeeded(&w, GRANT).await, 1);

    // Subscription: a missed payment suspends, a later payment lifts the suspension.
    let sub = "abo@example.de";
    for (event, tx) in [("on_payment", "1"), ("on_payment_missed", "1")] {
        let body = ds24(event, "ORD-SUB", "777", tx, sub);
        assert_eq!(post(&base, "/hooks/ds24", &body, &form).await.0, 200);
        served.drain(20).await;
    }
    assert_eq!(holding(&w, sub, &offers[1]).await.unwrap()["active"], false);
    let body = ds24("on_payment", "ORD-SUB", "777", "2", sub);
    assert_eq!(post(&base, "/hooks/ds24", &body, &form).await.0, 200);
    served.drain(20).await;
    assert_eq!(holding(&w, sub, &offers[1]).await.unwrap()["active"], true);

    // An unmapped product: stored, acknowledged, unmatched, no change.
    let body = ds24("on_payment", "ORD-X", "000", "1", "x@example.de");
    assert_eq!(
        post(&base, "/hooks/ds24", &body, &form).await,
        (200, "OK".into())
    );
    served.drain(20).await;
    let unmatched = served
        .events
        .list(&EventFilter {
            statuses: vec![EventStatus::Unmatched],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unmatched.len(), 1);
    assert!(holding(&w, "x@example.de", &offers[0]).await.is_none());

    // The dry run replays the stored events through the rules without writing anything.
    let before = w.state().await["counters"]["requests"].as_u64().unwrap();
    let lines = served
        .events
        .dry_run(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(lines.iter().any(|l| {
        l.actions
            .iter()
            .any(|a| a.starts_with("grant_user_offer_by_email"))
    }));
    assert!(lines.iter().any(|l| l.note.contains("order has ended")));
    assert_eq!(
        w.state().await["counters"]["requests"].as_u64().unwrap(),
        before,
        "no API call"
    );

    served.stop().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digistore24_story_sqlite() {
    ds24_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digistore24_story_postgres() {
    ds24_story(Backend::Postgres).await;
}

fn vector(file: &str, name: &str) -> Value {
    common::vectors(file)
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap()
}

fn vector_headers(v: &Value) -> Vec<(&'static str, String)> {
    v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, val)| {
            let k: &'static str = Box::leak(k.clone().into_boxed_str());
            (k, val.as_str().unwrap().to_owned())
        })
        .collect()
}

async fn stripe_and_copecart(backend: Backend) {
    let w = common::world(backend, 5).await;
    let offers = offers(&w).await;
    let stripe_secret = vector("stripe.json", "valid_checkout_session_completed")["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let cc_secret = vector("copecart.json", "classic_valid_payment_made_first")["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let rules = format!(
        r#"
[sources.stripe]
provider = "stripe"
secret = "{stripe_secret}"
connection = "school"

[sources.copecart]
provider = "copecart"
secret = "{cc_secret}"
connection = "school"

[[rules]]
source = "stripe"
product = "offer_basic"
offer = "{o0}"

[[rules]]
source = "copecart"
product = "cc-prod-4711"
offer = "{o1}"
access_days = 30
"#,
        o0 = offers[0],
        o1 = offers[1]
    );
    // Stripe signatures are checked against the vectors' clock.
    let now = vector("stripe.json", "valid_checkout_session_completed")["now"]
        .as_i64()
        .unwrap();
    let clock = Arc::new(move || DateTime::<Utc>::from_timestamp(now, 0).unwrap());
    let served = common::serve(&w.hub, &rules, Some(clock), true).await;
    let base = served.base.clone();

    for name in [
        "valid_checkout_session_completed",
        "valid_checkout_session_completed",
    ] {
        let v = vector("stripe.json", name);
        let (status, _) = post(
            &base,
            "/hooks/stripe",
            v["raw_body"].as_str().unwrap(),
            &vector_headers(&v),
        )
        .await;
        assert_eq!(status, 200);
    }
    served.drain(20).await;
    let email = "jorg.muller@example.com";
    let h = holding(&w, email, &offers[0])
        .await
        .expect("stripe purchase granted");
    assert_eq!(h["orderId"], "pi_3MbrTest0001");
    assert_eq!(h["active"], true);
    assert_eq!(succeeded(&w, GRANT).await, 1);
    for _ in 0..2 {
        let v = vector("stripe.json", "valid_charge_refunded");
        let (status, _) = post(
            &base,
            "/hooks/stripe",
            v["raw_body"].as_str().unwrap(),
            &vector_headers(&v),
        )
        .await;
        assert_eq!(status, 200);
    }
    served.drain(20).await;
    assert_eq!(
        holding(&w, email, &offers[0]).await.unwrap()["active"],
        false
    );
    assert_eq!(succeeded(&w, ORDER_STATE).await, 1);

    for name in [
        "classic_valid_payment_made_first",
        "classic_valid_payment_made_first",
    ] {
        let v = vector("copecart.json", name);
        let (status, text) = post(
            &base,
            "/hooks/copecart",
            v["raw_body"].as_str().unwrap(),
            &vector_headers(&v),
        )
        .await;
        assert_eq!((status, text.as_str()), (200, "OK"));
    }
    served.drain(20).await;
    let cc_email = "anna.schmidt@example.de";
    let h = holding(&w, cc_email, &offers[1])
        .await
        .expect("copecart purchase granted");
    assert_eq!(h["orderId"], "CC-ORD-8F3K2LQ");
    assert!(
        h["expiresAt"].is_string(),
        "fixed-term access sets an expiration: {h}"
    );
    assert_eq!(succeeded(&w, GRANT).await, 2);
    let v = vector("copecart.json", "classic_valid_payment_refunded");
    for _ in 0..2 {
        let (status, _) = post(
            &base,
            "/hooks/copecart",
            v["raw_body"].as_str().unwrap(),
            &vector_headers(&v),
        )
        .await;
        assert_eq!(status, 200);
    }
    served.drain(20).await;
    assert_eq!(
        holding(&w, cc_email, &offers[1]).await.unwrap()["active"],
        false
    );
    assert_eq!(succeeded(&w, ORDER_STATE).await, 2);

    // Out of order on Stripe: the refund (which names no product) comes before its
    // purchase. The order is marked ended, and the late purchase grants nothing.
    let sign = |body: &str| {
        let sig =
            memberspot_webhooks::stripe::compute_signature(&stripe_secret, now, body.as_bytes());
        vec![("Stripe-Signature", format!("t={now},v1={sig}"))]
    };
    let early = |name: &str, evt: &str| {
        vector("stripe.json", name)["raw_body"]
            .as_str()
            .unwrap()
            .replace("pi_3MbrTest0001", "pi_early2")
            .replace("jorg.muller@example.com", "early2@example.com")
            .replace("\"id\": \"evt_", &format!("\"id\": \"evt_{evt}_"))
    };
    for (name, evt) in [
        ("valid_charge_refunded", "r"),
        ("valid_checkout_session_completed", "p"),
    ] {
        let body = early(name, evt);
        let (status, text) = post(&base, "/hooks/stripe", &body, &sign(&body)).await;
        assert_eq!(status, 200, "{name}: {text}");
        served.drain(20).await;
    }
    assert_eq!(
        holding(&w, "early2@example.com", &offers[0]).await,
        None,
        "a purchase whose refund came first grants nothing"
    );
    assert_eq!(succeeded(&w, GRANT).await, 2, "no further grant");
    served.stop().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_and_copecart_sqlite() {
    stripe_and_copecart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_and_copecart_postgres() {
    stripe_and_copecart(Backend::Postgres).await;
}

/// Memberspot failing: the event retries with back-off, is dead-lettered after the last
/// attempt, and a replay after the school recovers applies it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_replay() {
    let w = common::world(Backend::Sqlite, 5).await;
    let offers = offers(&w).await;
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"{}\"\n\
         [processing]\nmax_attempts = 3\nbase_backoff_secs = 0.05\n",
        offers[0]
    );
    let served = common::serve(&w.hub, &rules, None, true).await;
    let admin = |path: &str, body: Value| {
        reqwest::Client::new()
            .put(format!("{}{path}", w.sandbox.root_url()))
            .header("X-API-KEY", common::SCHOOL_KEY)
            .json(&body)
            .send()
    };
    admin("/_sandbox/faults", json!({"errorRate": 1.0}))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let body = ds24("on_payment", "ORD-R", "1", "1", "retry@example.de");
    assert_eq!(post(&served.base, "/hooks/ds24", &body, &form).await.0, 200);
    served.drain(60).await;
    let dead = served
        .events
        .list(&EventFilter {
            statuses: vec![EventStatus::Dead],
            ..Default::default()
        })
        .await
        .unwrap();
    let all = served.events.list(&EventFilter::default()).await.unwrap();
    let hist = served.events.show(&all[0].id).await.unwrap().history;
    assert_eq!(dead.len(), 1, "{hist:?}");
    assert_eq!(dead[0].attempts, 3);
    let detail = served.events.show(&dead[0].id).await.unwrap();
    assert_eq!(
        detail
            .history
            .iter()
            .filter(|h| h.outcome == "retry")
            .count(),
        2
    );
    assert!(
        detail
            .history
            .last()
            .unwrap()
            .detail
            .contains("gave up after 3 attempts")
    );

    admin("/_sandbox/faults", json!({"errorRate": 0.0}))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // Over REST with the admin token, as an operator would.
    let token = w.hub.issue_admin_token().await.unwrap();
    use secrecy::ExposeSecret;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events/{}/replay", served.base, dead[0].id))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    served.drain(20).await;
    let e = served.events.list(&EventFilter::default()).await.unwrap();
    assert_eq!(e[0].status, EventStatus::Done);
    assert_eq!(succeeded(&w, GRANT).await, 1);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/events?status=done", served.base))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["events"].as_array().unwrap().len(), 1);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/events?status=nonsense", served.base))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "status");
    served.stop().await;
    w.close().await;
}

/// A missed payment with a grace period: access continues, is suspended when the grace
/// period is over, and a later payment lifts the suspension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_then_suspension_then_payment() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let w = common::world(Backend::Sqlite, 5).await;
    let offers = offers(&w).await;
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"777\"\noffer = \"{}\"\nsubscription = true\ngrace_days = 2\n",
        offers[1]
    );
    let offset_ms = Arc::new(AtomicI64::new(0));
    let clock = {
        let offset = offset_ms.clone();
        Arc::new(move || Utc::now() + chrono::Duration::milliseconds(offset.load(Ordering::SeqCst)))
    };
    let served = common::serve(&w.hub, &rules, Some(clock), true).await;
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let sub = "grace@example.de";
    for (event, tx) in [("on_payment", "1"), ("on_payment_missed", "1")] {
        let body = ds24(event, "ORD-G", "777", tx, sub);
        assert_eq!(post(&served.base, "/hooks/ds24", &body, &form).await.0, 200);
        served.drain(20).await;
    }
    let order = w
        .hub
        .events_store()
        .get_order("ds24", "ORD-G")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.state, "grace");
    assert_eq!(
        holding(&w, sub, &offers[1]).await.unwrap()["active"],
        true,
        "access continues during the grace period"
    );
    assert_eq!(
        memberspot_events::worker::sweep_once(&served.events)
            .await
            .unwrap(),
        0,
        "not yet due"
    );

    offset_ms.store(3 * 86_400_000, Ordering::SeqCst);
    assert_eq!(
        memberspot_events::worker::sweep_once(&served.events)
            .await
            .unwrap(),
        1
    );
    assert_eq!(holding(&w, sub, &offers[1]).await.unwrap()["active"], false);
    assert_eq!(
        w.hub
            .events_store()
            .get_order("ds24", "ORD-G")
            .await
            .unwrap()
            .unwrap()
            .state,
        "suspended"
    );

    let body = ds24("on_payment", "ORD-G", "777", "2", sub);
    assert_eq!(post(&served.base, "/hooks/ds24", &body, &form).await.0, 200);
    served.drain(20).await;
    assert_eq!(
        holding(&w, sub, &offers[1]).await.unwrap()["active"],
        true,
        "a later payment lifts the suspension"
    );
    served.stop().await;
    w.close().await;
}

/// A revoked source persona stops what the source does: the purchase is refused by the
/// gateway (audited as denied under the persona), nothing reaches the school, and the event
/// goes dead saying how to create the persona again. Nothing falls back to the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_source_persona_stops_its_events() {
    let w = common::world(Backend::Sqlite, 3).await;
    let offer = offers(&w).await[0].clone();
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"p1\"\noffer = \"{offer}\"\n"
    );
    let served = common::serve(&w.hub, &rules, None, true).await;
    assert!(w.hub.revoke_persona("hook-ds24").await.unwrap());
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let buy = ds24("on_payment", "RV-1", "p1", "T-RV", "rv@example.com");
    assert_eq!(post(&served.base, "/hooks/ds24", &buy, &form).await.0, 200);
    served.drain(20).await;
    let e = served.events.list(&EventFilter::default()).await.unwrap();
    assert_eq!(e[0].status, EventStatus::Dead, "{e:?}");
    let error = e[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("persona `hook-ds24` is revoked") && error.contains("--replace-revoked"),
        "{error}"
    );
    assert_eq!(succeeded(&w, GRANT).await, 0, "nothing reached the school");
    let records = w
        .hub
        .audit(&AuditFilter {
            persona: Some("hook-ds24".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !records.is_empty() && records.iter().all(|r| r.outcome.as_str() == "denied"),
        "{records:?}"
    );
    served.stop().await;
    w.close().await;
}

/// `Events::preview` decides a stored event as the workers would, without acting: the
/// rule it names and the calls it lists are the ones the workers then make; an event no
/// rule matches is previewed as unmatched; nothing is written before the workers run.
async fn preview_predicts_the_workers(backend: Backend) {
    let w = common::world(backend, 3).await;
    let offers = offers(&w).await;
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"598765\"\noffer = \"{}\"\n",
        offers[0]
    );
    let mut served = common::serve(&w.hub, &rules, None, false).await;
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    for (order, product) in [("P-1", "598765"), ("P-2", "424242")] {
        let body = ds24(
            "on_payment",
            order,
            product,
            &format!("T-{order}"),
            "pre@example.com",
        );
        assert_eq!(post(&served.base, "/hooks/ds24", &body, &form).await.0, 200);
    }
    let list = served.events.list(&EventFilter::default()).await.unwrap();
    let id_of = |order: &str| {
        list.iter()
            .find(|e| e.order_id.as_deref() == Some(order))
            .unwrap()
            .id
            .clone()
    };
    let (granted, unmatched) = (id_of("P-1"), id_of("P-2"));

    let p = served.events.preview(&granted).await.unwrap();
    assert_eq!(p.rule.as_ref().map(|r| r.index), Some(1));
    assert_eq!(p.final_status, None);
    assert_eq!(p.order_state.as_deref(), Some("none"));
    assert_eq!(p.new_state.as_deref(), Some("active"));
    assert!(!p.resumes_plan);
    assert_eq!(p.calls[0].tool, "grant_user_offer_by_email");
    let other = served.events.preview(&unmatched).await.unwrap();
    assert!(other.rule.is_none() && other.calls.is_empty());
    assert_eq!(other.final_status, Some(EventStatus::Unmatched));
    assert!(other.note.contains("product `424242`"), "{}", other.note);
    let store = w.hub.events_store();
    assert!(store.event_actions(&granted).await.unwrap().is_empty());
    assert!(store.get_order("ds24", "P-1").await.unwrap().is_none());
    assert_eq!(succeeded(&w, GRANT).await, 0, "a preview calls nothing");

    // The workers then do exactly what the preview said.
    served
        .handles
        .extend(served.events.spawn(served.cancel.clone()));
    served.drain(20).await;
    let done: Vec<(String, Value)> = store
        .event_actions(&granted)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.tool, a.arguments))
        .collect();
    let predicted: Vec<(String, Value)> = p.calls.into_iter().map(|c| (c.tool, c.args)).collect();
    assert_eq!(done, predicted);
    let e = store.get_event(&unmatched).await.unwrap().unwrap();
    assert_eq!(e.status, EventStatus::Unmatched);
    // Previewed again, the processed event resumes its (finished) plan.
    let again = served.events.preview(&granted).await.unwrap();
    assert!(again.resumes_plan);
    assert_eq!(again.order_state.as_deref(), Some("active"));
    assert!(again.calls.iter().all(|c| c.state.as_deref() == Some("ok")));
    served.stop().await;
    w.close().await;
}

#[tokio::test]
async fn preview_predicts_the_workers_sqlite() {
    preview_predicts_the_workers(Backend::Sqlite).await;
}

#[tokio::test]
async fn preview_predicts_the_workers_postgres() {
    preview_predicts_the_workers(Backend::Postgres).await;
}
