//! Two events for the same order at the same time, in one process and across instances:
//! a refund that arrives right behind its purchase must end the access, whichever order
//! the workers take them in; an attempt that outlives its lease is not redone by another
//! instance while it still works. Against a sandbox school that enforces Memberspot's
//! 4 requests per second, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, DS24_PASS, ds24, post};
use memberspot_hub::Hub;
use memberspot_hub::store::{EventFilter, EventStatus};
use serde_json::Value;

const GRANT: &str = "POST /v1/users/grant-user-offer-by-mail";
const ORDER_STATE: &str = "POST /v1/users/set-order-state";
const PAIRS: usize = 40;

fn rules(offer: &str, lease_secs: u64) -> String {
    format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"course\"\noffer = \"{offer}\"\n\
         [processing]\nbase_backoff_secs = 0.2\nmax_backoff_secs = 1\nlease_secs = {lease_secs}\n"
    )
}

/// What a run did, for the figures in docs/reliability.md.
#[derive(Debug)]
struct Tally {
    sent: usize,
    acknowledged: usize,
    applied: usize,
    duplicated: u64,
    lost: usize,
    refunded_with_access: usize,
    grants: u64,
    revocations: u64,
}

/// `PAIRS` purchases, each followed at once by its refund, through `instances` hubs sharing
/// one database, against a school that allows 4 requests per second.
async fn purchase_then_refund(backend: Backend, instances: usize) -> Tally {
    let sandbox = common::sandbox(3, 4.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (db, pg) = common::db_url(backend, dir.path()).await;
    let mut hubs: Vec<Hub> = Vec::new();
    for _ in 0..instances {
        hubs.push(common::open_hub_paced(&db, common::TEST_MASTER_KEY, &sandbox, 4.0).await);
    }
    let state = common::sandbox_get(&sandbox, "/_sandbox/state").await;
    let offer = state["offers"][0]["id"].as_str().unwrap().to_owned();
    let mut served = Vec::new();
    for hub in &hubs {
        served.push(common::serve(hub, &rules(&offer, 60), None, true).await);
    }
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let mut acknowledged = 0;
    for i in 0..PAIRS {
        let (order, email) = (format!("R-{i}"), format!("refunded{i}@example.com"));
        // Deliveries land on every instance in turn, as behind a load balancer.
        let base = &served[i % served.len()].base;
        let buy = ds24("on_payment", &order, "course", &format!("P-{i}"), &email);
        let (s1, _) = post(base, "/hooks/ds24", &buy, &form).await;
        let refund = ds24("on_refund", &order, "course", &format!("F-{i}"), &email);
        let base = &served[(i + 1) % served.len()].base;
        let (s2, _) = post(base, "/hooks/ds24", &refund, &form).await;
        acknowledged += usize::from(s1 == 200) + usize::from(s2 == 200);
    }
    served[0].drain(180).await;

    let state = common::sandbox_get(&sandbox, "/_sandbox/state").await;
    let holding_active = |email: &str| {
        state["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["email"].as_str() == Some(email))
            .flat_map(|u| u["offers"].as_array().cloned().unwrap_or_default())
            .any(|h| h["offerId"].as_str() == Some(&offer) && h["active"] == true)
    };
    let refunded_with_access = (0..PAIRS)
        .filter(|i| holding_active(&format!("refunded{i}@example.com")))
        .count();
    let counted = |route: &str| state["counters"]["succeeded"][route].as_u64().unwrap_or(0);
    let events = served[0]
        .events
        .list(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let applied = events
        .iter()
        .filter(|e| e.status == EventStatus::Done)
        .count();
    let grants = counted(GRANT);
    let tally = Tally {
        sent: 2 * PAIRS,
        acknowledged,
        applied,
        // A grant is sent at most once per order.
        duplicated: grants.saturating_sub(PAIRS as u64),
        lost: 2 * PAIRS - events.len(),
        refunded_with_access,
        grants,
        revocations: counted(ORDER_STATE),
    };
    println!("{backend:?}, {instances} instance(s): {tally:?}");
    for s in served {
        s.stop().await;
    }
    for h in &hubs {
        h.close().await;
    }
    let _ = sandbox.shutdown().await;
    if let Some(name) = pg {
        common::drop_pg(&name).await;
    }
    tally
}

fn assert_refunds_win(t: &Tally) {
    assert_eq!(t.acknowledged, t.sent, "{t:?}");
    assert_eq!(t.lost, 0, "{t:?}");
    assert_eq!(t.applied, t.sent, "every event decided and applied: {t:?}");
    assert_eq!(
        t.refunded_with_access, 0,
        "refunded buyers must not keep access: {t:?}"
    );
    assert_eq!(t.duplicated, 0, "{t:?}");
    // Each grant that happened was revoked again.
    assert_eq!(t.grants, t.revocations, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_right_behind_its_purchase_ends_access_sqlite() {
    assert_refunds_win(&purchase_then_refund(Backend::Sqlite, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_right_behind_its_purchase_ends_access_postgres() {
    assert_refunds_win(&purchase_then_refund(Backend::Postgres, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_right_behind_its_purchase_ends_access_two_instances_sqlite() {
    assert_refunds_win(&purchase_then_refund(Backend::Sqlite, 2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_right_behind_its_purchase_ends_access_two_instances_postgres() {
    assert_refunds_win(&purchase_then_refund(Backend::Postgres, 2).await);
}

/// A purchase whose grant takes longer than the lease (a slow school): its worker keeps
/// the lease alive, so a second instance never takes the event over and sends the grant
/// again while the first is still waiting for the answer.
async fn slow_attempt_keeps_its_lease(backend: Backend) {
    let sandbox = common::sandbox(3, 0.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (db, pg) = common::db_url(backend, dir.path()).await;
    let a = common::open_hub(&db, common::TEST_MASTER_KEY, &sandbox).await;
    let b = common::open_hub(&db, common::TEST_MASTER_KEY, &sandbox).await;
    let state = common::sandbox_get(&sandbox, "/_sandbox/state").await;
    let offer = state["offers"][0]["id"].as_str().unwrap().to_owned();
    // Only `a` works at first, so it is the one that claims the event.
    let first = common::serve(&a, &rules(&offer, 2), None, true).await;
    let second = common::serve(&b, &rules(&offer, 2), None, false).await;
    let admin = reqwest::Client::new();
    admin
        .put(format!("{}/_sandbox/faults", sandbox.root_url()))
        .header("X-API-KEY", common::SCHOOL_KEY)
        .json(&serde_json::json!({"latencyMs": 5000}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let buy = ds24(
        "on_payment",
        "SLOW-1",
        "course",
        "P-SLOW",
        "slow@example.com",
    );
    assert_eq!(post(&first.base, "/hooks/ds24", &buy, &form).await.0, 200);
    // Let `a` claim it, then start `b`'s workers while `a` waits on the school.
    let started = Instant::now();
    loop {
        let e = first.events.list(&EventFilter::default()).await.unwrap();
        if e[0].status == EventStatus::Processing {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handles = second.events.spawn(second.cancel.clone());
    first.drain(60).await;
    second.cancel.cancel();
    for h in handles {
        let _ = h.await;
    }
    let state = common::sandbox_get(&sandbox, "/_sandbox/state").await;
    let received = state["counters"]["succeeded"][GRANT].as_u64().unwrap_or(0);
    let e = first.events.list(&EventFilter::default()).await.unwrap();
    let detail = first.events.show(&e[0].id).await.unwrap();
    assert_eq!(e[0].status, EventStatus::Done, "{detail:?}");
    assert_eq!(received, 1, "the grant was sent once: {:?}", detail.history);
    assert_eq!(e[0].attempts, 1, "{:?}", detail.history);
    let workers: Vec<&str> = detail.history.iter().map(|h| h.worker.as_str()).collect();
    assert_eq!(workers.len(), 1, "{:?}", detail.history);
    let _: Value = state;
    first.stop().await;
    second.stop().await;
    a.close().await;
    b.close().await;
    let _ = sandbox.shutdown().await;
    if let Some(name) = pg {
        common::drop_pg(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_attempt_keeps_its_lease_sqlite() {
    slow_attempt_keeps_its_lease(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_attempt_keeps_its_lease_postgres() {
    slow_attempt_keeps_its_lease(Backend::Postgres).await;
}
