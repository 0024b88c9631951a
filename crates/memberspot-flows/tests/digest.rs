//! The daily summary's numbers for a day of known events, on the day summer time starts
//! in Berlin (23 hours), on SQLite and PostgreSQL; rendering limits; a 100k-event day.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, NaiveDate, Utc};
use memberspot_flows::digest::{self, Names};
use memberspot_hub::store::{EventStatus, NewAuditRecord, NewEvent, Store};
use serde_json::json;

fn at(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

#[allow(clippy::too_many_arguments)]
fn ev(
    n: &mut usize,
    provider: &str,
    kind: &str,
    product: Option<&str>,
    amount: Option<(i64, &str)>,
    test: bool,
    status: EventStatus,
) -> NewEvent {
    *n += 1;
    NewEvent {
        dedupe_key: format!("k{n}"),
        source: if provider == "poller" {
            "poll:school".into()
        } else {
            provider.into()
        },
        provider: provider.into(),
        kind: kind.into(),
        name: kind.into(),
        order_id: Some(format!("o{n}")),
        product_id: product.map(str::to_owned),
        email: Some(format!("b{n}@example.de")),
        test,
        amount_minor: amount.map(|a| a.0),
        currency: amount.map(|a| a.1.to_owned()),
        data: json!({}),
        status,
        connection: Some("school".into()),
        verified: true,
    }
}

/// 2026-03-29 in Europe/Berlin runs from 2026-03-28T23:00Z to 2026-03-29T22:00Z.
async fn seed(store: &Store) {
    let mut n = 0;
    let done = EventStatus::Done;
    // Inside the day, at both edges of the shortened day.
    let inside = [
        (
            "2026-03-28T23:00:00Z",
            vec![
                ev(
                    &mut n,
                    "digistore24",
                    "purchase",
                    Some("p1"),
                    Some((4700, "EUR")),
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "digistore24",
                    "purchase",
                    Some("p1"),
                    Some((4700, "EUR")),
                    false,
                    done,
                ),
            ],
        ),
        (
            "2026-03-29T12:00:00Z",
            vec![
                ev(
                    &mut n,
                    "digistore24",
                    "purchase",
                    Some("p1"),
                    Some((1900, "EUR")),
                    true,
                    done,
                ),
                ev(
                    &mut n,
                    "stripe",
                    "refund",
                    None,
                    Some((4900, "USD")),
                    false,
                    done,
                ),
                ev(&mut n, "stripe", "chargeback", None, None, false, done),
                ev(
                    &mut n,
                    "digistore24",
                    "recurring_payment",
                    Some("p1"),
                    Some((4700, "EUR")),
                    false,
                    EventStatus::Dead,
                ),
                ev(
                    &mut n,
                    "copecart",
                    "purchase",
                    Some("zz"),
                    None,
                    false,
                    EventStatus::Unmatched,
                ),
                ev(&mut n, "poller", "member_created", None, None, false, done),
                ev(&mut n, "poller", "member_created", None, None, false, done),
                ev(
                    &mut n,
                    "poller",
                    "offer_granted",
                    Some("offer_a"),
                    None,
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "poller",
                    "offer_revoked",
                    Some("offer_a"),
                    None,
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "poller",
                    "offer_expired",
                    Some("offer_b"),
                    None,
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "poller",
                    "course_completed",
                    Some("course_1"),
                    None,
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "poller",
                    "progress_changed",
                    Some("course_1"),
                    None,
                    false,
                    done,
                ),
            ],
        ),
        (
            "2026-03-29T21:59:59Z",
            vec![ev(
                &mut n,
                "stripe",
                "purchase",
                Some("prod_x"),
                Some((4900, "EUR")),
                false,
                done,
            )],
        ),
    ];
    // The day before (for the comparison) and the day after (must not count).
    let outside = [
        (
            "2026-03-28T22:59:59Z",
            vec![ev(
                &mut n,
                "digistore24",
                "purchase",
                Some("p1"),
                Some((4700, "EUR")),
                false,
                done,
            )],
        ),
        (
            "2026-03-29T22:00:00Z",
            vec![
                ev(
                    &mut n,
                    "digistore24",
                    "purchase",
                    Some("p1"),
                    Some((4700, "EUR")),
                    false,
                    done,
                ),
                ev(
                    &mut n,
                    "stripe",
                    "refund",
                    None,
                    Some((100, "USD")),
                    false,
                    done,
                ),
            ],
        ),
    ];
    for (t, events) in inside.iter().chain(outside.iter()) {
        store
            .events()
            .insert_events_at(events, at(t))
            .await
            .unwrap();
    }
    let call = |t: &str, persona: Option<&str>, tool: &str, outcome: &str| NewAuditRecord {
        at: at(t),
        request_id: uuid::Uuid::new_v4().to_string(),
        surface: memberspot_hub::Surface::McpHttp,
        connection: Some("school".into()),
        persona: persona.map(str::to_owned),
        end_user: None,
        prompt: None,
        tool: tool.into(),
        arguments: json!({}),
        outcome: memberspot_hub::store::AuditOutcome::parse(outcome).unwrap(),
        response: None,
        error: (outcome != "ok").then(|| "x".to_owned()),
        upstream_status: None,
        latency_ms: 5,
        oauth_client: None,
    };
    for r in [
        call(
            "2026-03-29T08:00:00Z",
            Some("support"),
            "find_user_by_email",
            "ok",
        ),
        call(
            "2026-03-29T08:01:00Z",
            Some("support"),
            "grant_user_offer_by_email",
            "tool_error",
        ),
        call(
            "2026-03-29T08:02:00Z",
            Some("support"),
            "delete_users",
            "denied",
        ),
        call("2026-03-29T09:00:00Z", None, "list_offers", "ok"),
        call("2026-03-29T22:30:00Z", Some("support"), "list_offers", "ok"),
    ] {
        store.append_audit(&r).await.unwrap();
    }
}

async fn numbers_are_right(store: &Store) {
    seed(store).await;
    let names = Names {
        offers: [("offer_a".to_owned(), "Kurs <Fokus> & Flow".to_owned())].into(),
        courses: [("course_1".to_owned(), "Grundlagen".to_owned())].into(),
    };
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
    let d = digest::build(store.flows(), "school", date, tz, &names, Utc::now())
        .await
        .unwrap();
    assert_eq!((d.end - d.start).num_hours(), 23);
    let n = &d.numbers;
    // 2 Digistore24 + 1 Stripe + 1 unmatched CopeCart live purchase; the test one is not.
    assert_eq!(n.purchases, 4, "{n:?}");
    assert_eq!(n.renewals, 1);
    assert_eq!(n.refunds, 1);
    assert_eq!(n.chargebacks, 1);
    assert_eq!(n.new_members, 2);
    assert_eq!(
        (n.grants, n.revocations, n.expirations, n.completions),
        (1, 1, 1, 1)
    );
    assert_eq!(n.tool_calls, 4);
    // 1 dead event + 1 failed tool call.
    assert_eq!(n.problems, 2);
    assert_eq!(d.previous.purchases, 1, "the day before");
    assert_eq!(d.problems.dead, 1);
    assert_eq!(d.problems.unmatched, 1);
    assert_eq!(
        d.problems.failed_calls.get("grant_user_offer_by_email"),
        Some(&1)
    );
    let ds24 = d
        .payments
        .iter()
        .find(|p| p.provider == "digistore24" && p.kind == "purchase")
        .unwrap();
    assert_eq!((ds24.count, ds24.test), (3, 1));
    assert_eq!(
        ds24.amounts.get("EUR"),
        Some(&9400),
        "test traffic is not summed"
    );
    let refund = d.payments.iter().find(|p| p.kind == "refund").unwrap();
    assert_eq!(refund.amounts.get("USD"), Some(&4900));
    let support = d.personas.iter().find(|p| p.persona == "support").unwrap();
    assert_eq!((support.calls, support.errors, support.denied), (3, 1, 1));
    assert_eq!(
        d.offers
            .iter()
            .find(|o| o.offer_id == "offer_a")
            .unwrap()
            .name,
        "Kurs <Fokus> & Flow"
    );
    assert_eq!(
        d.completions.get("course_1"),
        Some(&("Grundlagen".to_owned(), 1))
    );
    assert!(d.has_test_traffic);

    // Every rendering says the same, escaped for its medium.
    let subject = d.subject();
    assert_eq!(
        subject,
        "Memberspot – 29 Mar 2026: 4 purchases, 1 renewal, 1 refund, 1 chargeback, 2 new members, 1 completion, 2 problems"
    );
    let text = d.to_text();
    assert!(text.contains("1 event(s) gave up after retrying"), "{text}");
    assert!(text.contains("94.00 EUR"), "{text}");
    assert!(text.contains("49.00 USD"), "{text}");
    for line in text
        .lines()
        .filter(|l| l.starts_with("  ") || l.starts_with("Purchases"))
    {
        assert!(line.chars().count() <= 78, "too wide: {line:?}");
    }
    let html = d.to_html();
    assert!(html.contains("Kurs &lt;Fokus&gt; &amp; Flow"));
    assert!(!html.contains("<Fokus>"));
    let blocks = d.to_slack_blocks();
    assert!(blocks.as_array().unwrap().len() <= 50);
    assert!(blocks.to_string().contains("Needs attention"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_numbers_across_a_dst_change_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .unwrap();
    numbers_are_right(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_numbers_across_a_dst_change_postgres() {
    let (url, name) = common::fresh_pg().await;
    let store = Store::open(&url).await.unwrap();
    numbers_are_right(&store).await;
    store.close().await;
    common::drop_pg(&name).await;
}

/// The fall-back day (25 hours) counts its extra hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_day_counts_its_extra_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .unwrap();
    let mut n = 0;
    // 2026-10-25 Berlin: 2026-10-24T22:00Z .. 2026-10-25T23:00Z.
    for t in [
        "2026-10-24T22:00:00Z",
        "2026-10-25T22:30:00Z",
        "2026-10-25T23:00:00Z",
    ] {
        let e = ev(
            &mut n,
            "stripe",
            "purchase",
            Some("p"),
            Some((100, "EUR")),
            false,
            EventStatus::Done,
        );
        store.events().insert_events_at(&[e], at(t)).await.unwrap();
    }
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let d = digest::build(
        store.flows(),
        "school",
        NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
        tz,
        &Names::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!((d.end - d.start).num_hours(), 25);
    assert_eq!(d.numbers.purchases, 2);
}

/// The summary reports facts only from events the hub trusts: a forgery PayPal rejected,
/// a payment its rule refused, an event of another school and an unverified one are no
/// purchases; the refusals are problems, so the day is not "nothing needs attention".
async fn only_trusted_events_count(store: &Store) {
    let mut n = 0;
    let t = at("2026-06-10T10:00:00Z");
    let live = ev(
        &mut n,
        "digistore24",
        "purchase",
        Some("p"),
        Some((4900, "EUR")),
        false,
        EventStatus::Done,
    );
    let variant = |n: &mut usize, status: EventStatus, connection: &str, verified: bool| NewEvent {
        status,
        connection: Some(connection.into()),
        verified,
        ..ev(
            n,
            "digistore24",
            "purchase",
            Some("p"),
            Some((1, "EUR")),
            false,
            EventStatus::Done,
        )
    };
    let forged = variant(&mut n, EventStatus::Rejected, "school", false);
    let cheap = variant(&mut n, EventStatus::RefusedAmount, "school", true);
    let elsewhere = variant(&mut n, EventStatus::Done, "other-school", true);
    let unverified = variant(&mut n, EventStatus::Pending, "school", false);
    store
        .events()
        .insert_events_at(&[live, forged, cheap, elsewhere, unverified], t)
        .await
        .unwrap();
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let d = digest::build(
        store.flows(),
        "school",
        NaiveDate::from_ymd_opt(2026, 6, 10).unwrap(),
        tz,
        &Names::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(d.numbers.purchases, 1, "{:?}", d.numbers);
    assert_eq!(
        d.payments[0].amounts.get("EUR"),
        Some(&4900),
        "{:?}",
        d.payments
    );
    assert_eq!(d.problems.refused_payments.get("digistore24"), Some(&1));
    assert_eq!(
        d.problems.rejected.get("digistore24"),
        Some(&1),
        "{:?}",
        d.problems
    );
    assert!(!d.problems.is_empty());
    let text = d.to_text();
    assert!(text.contains("refused by their rule"), "{text}");
    assert_eq!(d.numbers.problems, 2, "{:?}", d.numbers);

    // No poller ran: the grant the hub made for the one trusted purchase is counted, and
    // what only the poller sees is "not observed", never 0.
    assert!(!d.numbers.observed);
    assert_eq!((d.numbers.grants, d.numbers.revocations), (1, 0));
    let row = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        row("Offers granted (webhooks)").ends_with("1 0 +1"),
        "{text}"
    );
    assert!(row("New members").ends_with("— —"), "{text}");
    assert!(text.contains("not observed: enable the poller"), "{text}");
    assert!(
        d.plain_summary()
            .contains("1 offer(s) granted for payments")
    );
    let html = d.to_html();
    assert!(html.contains("Offers granted (webhooks)") && html.contains("—"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_events_count_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .unwrap();
    only_trusted_events_count(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_events_count_postgres() {
    let (url, name) = common::fresh_pg().await;
    let store = Store::open(&url).await.unwrap();
    only_trusted_events_count(&store).await;
    store.close().await;
    common::drop_pg(&name).await;
}
