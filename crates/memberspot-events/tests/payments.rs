//! The money path's trust boundary: only verified notifications, meant for this shop, at
//! the price the rules ask, change a member's access. Each test plays an attacker against
//! the real receivers, workers and a sandbox school over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Backend, DS24_PASS, ds24_paid, holding, offers, post};
use memberspot_hub::store::{EventFilter, EventStatus, NewDelivery, NewEvent};
use serde_json::Value;

/// A stand-in for PayPal's post-back endpoint: the first answers come from `outages`,
/// then a message is INVALID when it carries `verify_sign=FORGED`, VERIFIED otherwise.
struct FakePaypal {
    url: String,
    bodies: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl FakePaypal {
    async fn start(outages: Vec<(u16, &'static str)>) -> FakePaypal {
        use axum::routing::post;
        let bodies = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/cgi-bin/webscr",
            post({
                let bodies = bodies.clone();
                move |body: axum::body::Bytes| {
                    let bodies = bodies.clone();
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    let outages = outages.clone();
                    async move {
                        bodies.lock().unwrap().push(body.to_vec());
                        if let Some((status, text)) = outages.get(n) {
                            return (axum::http::StatusCode::from_u16(*status).unwrap(), *text);
                        }
                        let forged = String::from_utf8_lossy(&body).contains("verify_sign=FORGED");
                        (
                            axum::http::StatusCode::OK,
                            if forged { "INVALID" } else { "VERIFIED" },
                        )
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePaypal {
            url: format!("http://{addr}/cgi-bin/webscr"),
            bodies,
        }
    }

    fn calls(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

/// An IPN body (form-encoded, UTF-8) from pairs.
fn ipn(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn paypal_rules(url: &str, offer: &str) -> String {
    format!(
        "[sources.pp]\nprovider = \"paypal\"\npostback_url = \"{url}\"\nconnection = \"school\"\n\
         receiver_email = [\"seller@example.com\", \"sales@example.com\"]\n\
         [[rules]]\nsource = \"pp\"\nproduct = \"*\"\noffer = \"{offer}\"\nsubscription = true\n\
         [processing]\nbase_backoff_secs = 0.05\n"
    )
}

async fn events_of(
    served: &common::Served,
    source: &str,
) -> Vec<memberspot_hub::store::StoredEvent> {
    served
        .events
        .list(&EventFilter {
            source: Some(source.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Refused attempts as stored: reason, size, source, time; never headers or body.
async fn refused(w: &common::World, source: &str) -> Vec<memberspot_hub::store::Delivery> {
    let list = w
        .hub
        .events_store()
        .refused_deliveries(Some(source), 1000)
        .await
        .unwrap();
    for d in &list {
        assert_eq!(d.headers, serde_json::json!({}), "no headers kept: {d:?}");
        assert!(d.body.is_none(), "no body kept");
    }
    list
}

/// The vector's genuine IPN: post-back bytes are the body as received, a post-back that
/// cannot be made is answered 503 with nothing stored (PayPal sends it again), and only
/// a VERIFIED notification is stored and acknowledged with PayPal's empty 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paypal_is_verified_before_anything_is_stored() {
    let vs = common::vectors("paypal_ipn.json");
    let by = |n: &str| vs.iter().find(|v| v["name"] == n).unwrap().clone();
    let vector = by("postback_body_construction");
    let raw = vector["raw_body"].as_str().unwrap().to_owned();
    let paypal = FakePaypal::start(vec![(503, ""), (200, "<html>maintenance</html>")]).await;
    let w = common::world(Backend::Sqlite, 3).await;
    let offer = offers(&w).await[0].clone();
    let served = common::serve(&w.hub, &paypal_rules(&paypal.url, &offer), None, true).await;
    let send = || post(&served.base, "/hooks/pp", &raw, &[]);

    for _ in 0..2 {
        let (status, body) = send().await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("postback_unavailable"), "{body}");
        assert!(
            events_of(&served, "pp").await.is_empty(),
            "nothing stored yet"
        );
    }
    let (status, body) = send().await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "PayPal wants an empty 200"
    );
    assert_eq!(paypal.calls(), 3);
    assert_eq!(
        paypal.bodies.lock().unwrap()[2],
        vector["expected_postback_body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        "posted back byte for byte (windows-1252 kept)"
    );
    served.drain(20).await;
    let list = events_of(&served, "pp").await;
    assert_eq!(list.len(), 1);
    assert!(list[0].verified);
    assert_eq!(list[0].connection.as_deref(), Some("school"));
    // The vector is a test IPN (test_ipn=1) to seller@example.com for jorg+pp@example.com.
    assert_eq!(list[0].status, EventStatus::Done, "{list:?}");
    assert!(holding(&w, "jorg+pp@example.com", &offer).await.is_some());
    served.stop().await;
    w.close().await;
}

/// PayPal says VERIFIED to any genuine message, also one about a payment to another
/// account whose buyer put our URL in `notify_url`: such a payment is refused (403), never
/// posted back, never stored, never granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paypal_payment_to_another_account_grants_nothing() {
    let paypal = FakePaypal::start(vec![]).await;
    let w = common::world(Backend::Sqlite, 3).await;
    let offer = offers(&w).await[0].clone();
    let served = common::serve(&w.hub, &paypal_rules(&paypal.url, &offer), None, true).await;
    let attack = |receiver: &str, business: &str, id: &str| {
        ipn(&[
            ("txn_type", "web_accept"),
            ("payment_status", "Completed"),
            ("mc_gross", "0.01"),
            ("mc_currency", "USD"),
            ("txn_id", id),
            ("payer_email", "mallory@example.net"),
            ("receiver_email", receiver),
            ("business", business),
            ("item_number", "anything"),
        ])
    };
    for (receiver, business, id) in [
        ("mallory@example.net", "mallory@example.net", "T-1"),
        ("", "", "T-2"),
        // Look-alikes are not ours either.
        ("seller@example.com.evil.net", "SELLER@example.co", "T-3"),
    ] {
        let (status, body) = post(
            &served.base,
            "/hooks/pp",
            &attack(receiver, business, id),
            &[],
        )
        .await;
        assert_eq!(status, 403, "{receiver}: {body}");
        assert!(body.contains("wrong_receiver"), "{body}");
    }
    assert_eq!(paypal.calls(), 0, "refused before any post-back");
    // Our own address in `business` (a secondary address), case aside, is accepted.
    let (status, _) = post(
        &served.base,
        "/hooks/pp",
        &attack("", "Sales@Example.com", "T-4")
            .replace("mallory%40example.net", "buyer%40example.com"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    served.drain(20).await;
    let list = events_of(&served, "pp").await;
    assert_eq!(list.len(), 1, "only the payment to us is stored: {list:?}");
    assert!(holding(&w, "mallory@example.net", &offer).await.is_none());
    assert_eq!(refused(&w, "pp").await.len(), 3);
    served.stop().await;
    w.close().await;
}

/// A forged end-of-term for someone's subscription must not take the genuine one's
/// idempotency key: when PayPal later sends the genuine `subscr_eot`, access ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_never_blocks_the_genuine_one() {
    let paypal = FakePaypal::start(vec![]).await;
    let w = common::world(Backend::Sqlite, 3).await;
    let offer = offers(&w).await[0].clone();
    let served = common::serve(&w.hub, &paypal_rules(&paypal.url, &offer), None, true).await;
    let base = [
        ("subscr_id", "I-SUB1"),
        ("payer_email", "abo@example.com"),
        ("receiver_email", "seller@example.com"),
        ("mc_currency", "EUR"),
        ("item_number", "abo"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs: Vec<(&str, &str)> = base.to_vec();
        pairs.extend_from_slice(extra);
        ipn(&pairs)
    };
    let payment = with(&[
        ("txn_type", "subscr_payment"),
        ("payment_status", "Completed"),
        ("txn_id", "P-1"),
        ("mc_gross", "29.00"),
        ("verify_sign", "GENUINE"),
    ]);
    assert_eq!(post(&served.base, "/hooks/pp", &payment, &[]).await.0, 200);
    served.drain(20).await;
    assert_eq!(
        holding(&w, "abo@example.com", &offer).await.unwrap()["active"],
        true
    );

    let eot = |sign: &'static str| {
        with(&[
            ("txn_type", "subscr_eot"),
            ("subscr_date", "10:00:00 Feb 01, 2026 PST"),
            ("verify_sign", sign),
        ])
    };
    let (status, body) = post(&served.base, "/hooks/pp", &eot("FORGED"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        events_of(&served, "pp").await.len(),
        1,
        "the forgery is not stored"
    );
    let (status, _) = post(&served.base, "/hooks/pp", &eot("GENUINE"), &[]).await;
    assert_eq!(status, 200);
    served.drain(20).await;
    let list = events_of(&served, "pp").await;
    let end = list.iter().find(|e| e.kind == "end_of_term").unwrap();
    assert_eq!(
        end.redeliveries, 0,
        "not taken for a redelivery of the forgery"
    );
    assert_eq!(end.status, EventStatus::Done, "{list:?}");
    assert_eq!(
        holding(&w, "abo@example.com", &offer).await.unwrap()["active"],
        false,
        "access ended"
    );
    let refusals = refused(&w, "pp").await;
    assert_eq!(refusals.len(), 1);
    assert!(
        refusals[0].error.as_deref().unwrap().contains("INVALID"),
        "{refusals:?}"
    );
    served.stop().await;
    w.close().await;
}

/// Events stored by an older version before their post-back: a rejected one releases its
/// idempotency key, so the genuine delivery with the same key is processed, not counted as
/// a redelivery of the forgery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_unverified_event_that_fails_gives_its_key_up() {
    let paypal = FakePaypal::start(vec![]).await;
    let w = common::world(Backend::Postgres, 3).await;
    let offer = offers(&w).await[0].clone();
    let rules = paypal_rules(&paypal.url, &offer);
    let forged = ipn(&[
        ("txn_type", "web_accept"),
        ("payment_status", "Completed"),
        ("txn_id", "T-LEGACY"),
        ("mc_gross", "49.00"),
        ("mc_currency", "EUR"),
        ("payer_email", "legacy@example.com"),
        ("receiver_email", "seller@example.com"),
        ("verify_sign", "FORGED"),
    ]);
    // As the previous version stored it: verification `postback`, event not yet verified.
    let event = memberspot_webhooks::paypal::normalize(forged.as_bytes());
    let key = format!("pp:{}", event.idempotency_key());
    let delivery = NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        source: "pp".into(),
        provider: "paypal".into(),
        received_at: chrono::Utc::now().timestamp_millis(),
        headers: vec![],
        body: Some(forged.clone().into_bytes()),
        body_bytes: forged.len(),
        verification: memberspot_hub::store::Verification::Postback,
        error: None,
    };
    let stored = NewEvent {
        dedupe_key: key.clone(),
        source: "pp".into(),
        provider: "paypal".into(),
        kind: "purchase".into(),
        name: "web_accept".into(),
        order_id: event.order_id.clone(),
        product_id: None,
        email: Some("legacy@example.com".into()),
        test: false,
        amount_minor: Some(4900),
        currency: Some("EUR".into()),
        data: serde_json::to_value(&event).unwrap(),
        status: EventStatus::Pending,
        connection: Some("school".into()),
        verified: false,
    };
    w.hub
        .events_store()
        .record_delivery(&delivery, &[stored])
        .await
        .unwrap();
    let served = common::serve(&w.hub, &rules, None, true).await;
    served.drain(20).await;
    let list = events_of(&served, "pp").await;
    assert_eq!(list[0].status, EventStatus::Rejected, "{list:?}");
    assert!(!list[0].verified);
    assert!(holding(&w, "legacy@example.com", &offer).await.is_none());

    let genuine = forged.replace("FORGED", "GENUINE");
    assert_eq!(post(&served.base, "/hooks/pp", &genuine, &[]).await.0, 200);
    served.drain(20).await;
    let list = events_of(&served, "pp").await;
    assert_eq!(
        list.len(),
        2,
        "the genuine one is an event of its own: {list:?}"
    );
    assert_eq!(list[0].status, EventStatus::Done);
    assert_eq!(list[0].dedupe_key, key);
    assert!(holding(&w, "legacy@example.com", &offer).await.is_some());
    served.stop().await;
    w.close().await;
}

/// Per-rule currency and minimum amount, for every provider: a payment below the minimum
/// or in another currency is stored, marked `refused_amount` with the reason, and grants
/// nothing; one that meets the rule grants. A rule without a minimum accepts any amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_below_the_price_or_in_another_currency_grant_nothing() {
    let paypal = FakePaypal::start(vec![]).await;
    let w = common::world(Backend::Sqlite, 3).await;
    let offers = offers(&w).await;
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [sources.pp]\nprovider = \"paypal\"\npostback_url = \"{}\"\nconnection = \"school\"\n\
         receiver_id = \"SHOP123\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"premium\"\noffer = \"{}\"\ncurrency = \"eur\"\nmin_amount = \"49.00\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"any-price\"\noffer = \"{}\"\n\
         [[rules]]\nsource = \"pp\"\nproduct = \"*\"\noffer = \"{}\"\ncurrency = \"EUR\"\nmin_amount = 49\n",
        paypal.url, offers[0], offers[1], offers[0]
    );
    let served = common::serve(&w.hub, &rules, None, true).await;
    let sale = |order: &str, product: &str, email: &str, amount: &str, currency: &str| {
        ds24_paid(
            "on_payment",
            order,
            product,
            &format!("TX-{order}"),
            email,
            amount,
            currency,
        )
    };
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    for (order, product, email, amount, currency) in [
        ("O1", "premium", "cent@example.com", "0.01", "EUR"),
        ("O2", "premium", "dollar@example.com", "49.00", "USD"),
        ("O3", "premium", "almost@example.com", "48,99", "EUR"),
        ("O4", "premium", "paid@example.com", "49,00", "EUR"),
        ("O5", "any-price", "free@example.com", "0.00", "EUR"),
    ] {
        let (status, body) = post(
            &served.base,
            "/hooks/ds24",
            &sale(order, product, email, amount, currency),
            &form,
        )
        .await;
        assert_eq!(status, 200, "{order}: {body}");
    }
    let pp = |id: &str, email: &str, gross: &str| {
        ipn(&[
            ("txn_type", "web_accept"),
            ("payment_status", "Completed"),
            ("txn_id", id),
            ("mc_gross", gross),
            ("mc_currency", "EUR"),
            ("payer_email", email),
            ("receiver_id", "SHOP123"),
        ])
    };
    assert_eq!(
        post(
            &served.base,
            "/hooks/pp",
            &pp("P1", "ppcent@example.com", "0.01"),
            &[]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post(
            &served.base,
            "/hooks/pp",
            &pp("P2", "ppfull@example.com", "49.00"),
            &[]
        )
        .await
        .0,
        200
    );
    served.drain(30).await;

    let all = served.events.list(&EventFilter::default()).await.unwrap();
    let by_email = |m: &str| all.iter().find(|e| e.email.as_deref() == Some(m)).unwrap();
    for (email, offer) in [
        ("cent@example.com", &offers[0]),
        ("dollar@example.com", &offers[0]),
        ("almost@example.com", &offers[0]),
        ("ppcent@example.com", &offers[0]),
    ] {
        let e = by_email(email);
        assert_eq!(e.status, EventStatus::RefusedAmount, "{email}: {e:?}");
        let why = e.refusal.as_deref().unwrap();
        assert!(why.contains("nothing granted"), "{why}");
        assert!(
            holding(&w, email, offer).await.is_none(),
            "{email} got nothing"
        );
    }
    assert!(
        by_email("dollar@example.com")
            .refusal
            .as_deref()
            .unwrap()
            .contains("USD")
    );
    assert!(
        by_email("almost@example.com")
            .refusal
            .as_deref()
            .unwrap()
            .contains("48.99")
    );
    for (email, offer) in [
        ("paid@example.com", &offers[0]),
        ("free@example.com", &offers[1]),
        ("ppfull@example.com", &offers[0]),
    ] {
        assert_eq!(by_email(email).status, EventStatus::Done, "{email}");
        assert!(
            holding(&w, email, offer).await.is_some(),
            "{email} has access"
        );
    }
    // The refusal is visible to the owner (events list, REST).
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/v1/events?status=refused_amount", served.base))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(
            &w.hub.issue_admin_token().await.unwrap(),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["events"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    served.stop().await;
    w.close().await;
}

/// A rules file that lets PayPal pay anyone, or states a price without a currency, is
/// refused with the line and a reason.
#[test]
fn rules_refuse_a_paypal_source_without_its_receiver_and_bad_prices() {
    use memberspot_events::EventsConfig;
    let e = EventsConfig::parse("[sources.pp]\nprovider = \"paypal\"\n", "rules.toml", None)
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("rules.toml:1:"), "{text}");
    assert!(text.contains("receiver_email"), "{text}");
    let e = EventsConfig::parse(
        "[sources.pp]\nprovider = \"paypal\"\nreceiver_email = \"not-an-address\"\n\
         [sources.d]\nprovider = \"digistore24\"\nsecret = \"x\"\n\
         [[rules]]\nsource = \"d\"\nproduct = \"a\"\noffer = \"o\"\nmin_amount = \"49.00\"\n\
         [[rules]]\nsource = \"d\"\nproduct = \"b\"\noffer = \"o\"\ncurrency = \"EURO\"\nmin_amount = 49.5\n\
         [[rules]]\nsource = \"d\"\nproduct = \"c\"\noffer = \"o\"\ncurrency = \"EUR\"\nmin_amount = \"-1\"\n",
        "r.toml",
        None,
    )
    .unwrap_err();
    let text = e.to_string();
    for expected in [
        "`receiver_email` `not-an-address` is not an e-mail address",
        "rule 1: `min_amount` needs `currency`",
        "rule 2: `currency` must be a three-letter ISO 4217 code",
        "rule 2: `min_amount` must be written as a string, e.g. \"49.50\"",
        "rule 3: `min_amount` must be above 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let ok = EventsConfig::parse(
        "[sources.pp]\nprovider = \"paypal\"\nreceiver_id = \"ABC\"\n\
         [[rules]]\nsource = \"pp\"\nproduct = \"*\"\noffer = \"o\"\ncurrency = \"eur\"\nmin_amount = \"49\"\n",
        "r.toml",
        None,
    )
    .unwrap();
    assert_eq!(ok.rules[0].currency.as_deref(), Some("EUR"));
    assert_eq!(ok.rules[0].min_amount.unwrap().to_string(), "49.00");
}

/// A flood of refused requests (bad signatures, huge headers) costs the database a few
/// bytes each, and only up to a rate per source: beyond it they are answered 429 and not
/// recorded. Genuine deliveries are never held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_recorded_small_and_rate_limited() {
    use memberspot_events::receiver::{MAX_HEADER_BYTES, REFUSALS_PER_MINUTE};
    let w = common::world(Backend::Sqlite, 3).await;
    let offer = offers(&w).await[0].clone();
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"school\"\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"course\"\noffer = \"{offer}\"\n"
    );
    let served = common::serve(&w.hub, &rules, None, false).await;
    let form = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let forged = common::ds24("on_payment", "F-1", "course", "T-F", "f@example.com")
        .replace("sha_sign=", "sha_sign=00");
    let huge = "x".repeat(MAX_HEADER_BYTES + 1);
    let (status, body) = post(
        &served.base,
        "/hooks/ds24",
        &forged,
        &[form.clone(), ("x-padding", huge.clone())],
    )
    .await;
    assert_eq!(status, 431, "{body}");
    // A body sent in chunks, without a length, is cut off at the limit all the same.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = served.base.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let chunk = "y".repeat(64 * 1024);
        let mut req = format!(
            "POST /hooks/ds24 HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for _ in 0..6 {
            req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        req.push_str("0\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    let mut answers = Vec::new();
    for _ in 0..REFUSALS_PER_MINUTE + 10 {
        answers.push(
            post(
                &served.base,
                "/hooks/ds24",
                &forged,
                std::slice::from_ref(&form),
            )
            .await
            .0,
        );
    }
    let unauthorized = answers.iter().filter(|s| **s == 401).count();
    let throttled = answers.iter().filter(|s| **s == 429).count();
    assert_eq!(unauthorized as u32, REFUSALS_PER_MINUTE - 2, "{answers:?}");
    assert_eq!(throttled, 12, "{answers:?}");
    // A genuine delivery still goes through.
    let genuine = common::ds24("on_payment", "G-1", "course", "T-G", "g@example.com");
    assert_eq!(
        post(&served.base, "/hooks/ds24", &genuine, &[form]).await.0,
        200
    );

    let stored = refused(&w, "ds24").await;
    assert_eq!(stored.len() as u32, REFUSALS_PER_MINUTE);
    assert!(
        stored
            .iter()
            .any(|d| d.error.as_deref().unwrap().contains("headers"))
    );
    let text = serde_json::to_string(&stored).unwrap();
    assert!(
        !text.contains(&huge[..100]) && !text.contains("F-1"),
        "nothing of the requests is kept"
    );
    // The owner lists them (`events list --refused` and REST): reason, size, source, time.
    let listed: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/events/refused?source=ds24&limit=5",
            served.base
        ))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(
            &w.hub.issue_admin_token().await.unwrap(),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = listed["refused"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{listed}");
    assert!(
        rows.iter().all(|r| r["source"] == "ds24"
            && r["reason"].as_str().is_some_and(|s| !s.is_empty())
            && r["bytes"].is_i64()),
        "{listed}"
    );
    let text = listed.to_string();
    assert!(
        !text.contains(&huge[..100]) && !text.contains("F-1"),
        "{text}"
    );
    served.stop().await;
    w.hub.close().await;
    // The database files: no passphrase, nothing of the refused requests.
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        // SQLite removes the -wal and -shm files when its last connection closes, which may
        // happen between listing and reading: a file gone holds nothing.
        let bytes = match std::fs::read(entry.unwrap().path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("reading a database file: {e}"),
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(DS24_PASS), "the passphrase is never stored");
        assert!(
            !text.contains(&huge[..64]),
            "refused headers are never stored"
        );
        assert!(!text.contains("T-F"), "refused bodies are never stored");
    }
    w.close().await;
}
