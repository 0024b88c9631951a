//! Runs every vector in `shared/vectors/` (except slack.json) plus
//! normalisation checks on representative vectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use memberspot_webhooks::{
    Delivery, Event, EventKind, Provider, VerifyError, digistore24, normalize, paypal, verify,
};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("MEMBERSPOT_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    };
    assert!(
        dir.is_dir(),
        "test vectors not found at {} — put shared/ beside the repository or set MEMBERSPOT_VECTORS_DIR",
        dir.display()
    );
    dir
}

fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

fn vectors(file: &str) -> Vec<Value> {
    let v = load(file)["vectors"].as_array().cloned().unwrap();
    assert!(!v.is_empty(), "{file} has no vectors");
    v
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn ts(v: &Value, key: &str) -> DateTime<Utc> {
    Utc.timestamp_opt(v[key].as_i64().unwrap(), 0).unwrap()
}

fn tolerance(v: &Value) -> Duration {
    Duration::from_secs(v["tolerance_seconds"].as_u64().unwrap_or(300))
}

/// Compare a verdict with `expected.valid` / `expected.reason`.
fn check(name: &str, expected: &Value, got: Result<(), VerifyError>) {
    let valid = expected["valid"].as_bool().unwrap();
    match (&got, valid) {
        (Ok(()), true) => {}
        (Err(e), false) => {
            if let Some(reason) = expected["reason"].as_str() {
                assert_eq!(e.reason(), reason, "{name}: wrong reason");
            }
        }
        _ => panic!("{name}: expected valid={valid}, got {got:?}"),
    }
}

fn body_of(v: &Value) -> &[u8] {
    v["raw_body"].as_str().unwrap().as_bytes()
}

#[test]
fn stripe_vectors() {
    let vs = vectors("stripe.json");
    assert_eq!(vs.len(), 23);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let headers = headers_of(v);
        let d = Delivery {
            headers: &headers,
            body: body_of(v),
            path_secret: None,
        };
        let got = verify(
            Provider::Stripe,
            &d,
            v["secret"].as_str(),
            ts(v, "now"),
            tolerance(v),
        );
        check(name, &v["expected"], got);
    }
}

#[test]
fn digistore24_vectors() {
    let vs = vectors("digistore24.json");
    assert_eq!(vs.len(), 34);
    let params_of = |p: &Value| -> Vec<(String, String)> {
        p.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    };
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let pass = v["passphrase"].as_str().unwrap();
        match v["mode"].as_str().unwrap() {
            "compute" => {
                let params = params_of(&v["params"]);
                if let Some(expected) = v["expected_sha_sign"].as_str() {
                    let upper = v["uppercase_keys"].as_bool().unwrap_or(false);
                    let got = digistore24::compute_sha_sign(params.clone(), pass, upper);
                    assert_eq!(got, expected, "{name}");
                }
                for (variant, upper) in [
                    ("uppercase_keys_false", false),
                    ("uppercase_keys_true", true),
                ] {
                    if let Some(exp) = v[variant]["expected_sha_sign"].as_str() {
                        let got = digistore24::compute_sha_sign(params.clone(), pass, upper);
                        assert_eq!(got, exp, "{name}/{variant}");
                    }
                }
                if let Some(wrong) = v["wrong_if_zero_skipped"].as_str() {
                    assert_ne!(
                        digistore24::compute_sha_sign(params.clone(), pass, false),
                        wrong
                    );
                }
            }
            "verify" => {
                let got = match v["raw_body"].as_str() {
                    Some(body) => {
                        // The raw body decodes to `params`.
                        let d = Delivery {
                            headers: &[],
                            body: body.as_bytes(),
                            path_secret: None,
                        };
                        let got = verify(
                            Provider::Digistore24,
                            &d,
                            Some(pass),
                            Utc::now(),
                            Duration::ZERO,
                        );
                        assert_eq!(
                            got,
                            digistore24::verify(body.as_bytes(), Some(pass)),
                            "{name}"
                        );
                        got
                    }
                    None => digistore24::verify_params(params_of(&v["params"]), Some(pass)),
                };
                check(name, &v["expected"], got);
            }
            other => panic!("{name}: unknown mode {other}"),
        }
    }
}

#[test]
fn copecart_vectors() {
    let vs = vectors("copecart.json");
    assert_eq!(vs.len(), 24);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let headers = headers_of(v);
        let d = Delivery {
            headers: &headers,
            body: body_of(v),
            path_secret: None,
        };
        let secret = v["secret"].as_str();
        let got = match v["variant"].as_str().unwrap() {
            // Classic IPN has no timestamp; clock and tolerance are irrelevant.
            "classic_ipn" => verify(Provider::CopeCart, &d, secret, Utc::now(), Duration::ZERO),
            "cope_webhook" => verify(Provider::Cope, &d, secret, ts(v, "now"), tolerance(v)),
            other => panic!("{name}: unknown variant {other}"),
        };
        check(name, &v["expected"], got);
    }
}

#[test]
fn thrivecart_vectors() {
    let vs = vectors("thrivecart.json");
    assert_eq!(vs.len(), 9);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let d = Delivery {
            headers: &[],
            body: body_of(v),
            path_secret: None,
        };
        let got = verify(
            Provider::ThriveCart,
            &d,
            v["secret_word"].as_str(),
            Utc::now(),
            Duration::ZERO,
        );
        check(name, &v["expected"], got);
    }
}

/// Token = last path segment after the registered prefix.
fn elopage_token(path: &str) -> Option<&str> {
    path.strip_prefix("/hooks/elopage/")
        .filter(|t| !t.is_empty())
}

#[test]
fn elopage_vectors() {
    let vs = vectors("elopage.json");
    assert_eq!(vs.len(), 3);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        let d = Delivery {
            headers: &[],
            body: body_of(v),
            path_secret: elopage_token(v["request_path"].as_str().unwrap()),
        };
        let got = verify(
            Provider::Elopage,
            &d,
            v["configured_token"].as_str(),
            Utc::now(),
            Duration::ZERO,
        );
        check(name, &v["expected"], got);
        if let Some(pe) = v["parse_expectations"].as_object() {
            let e = one(Provider::Elopage, &d);
            assert_eq!(e.raw_event_name, pe["event"].as_str().unwrap());
            assert_eq!(e.buyer_email.as_deref(), pe["payer[email]"].as_str());
            assert_eq!(e.order_id.as_deref(), pe["order_id"].as_str());
            assert_eq!(e.product_id.as_deref(), pe["product_id"].as_str());
            assert_eq!(e.kind, EventKind::Purchase);
        }
    }
}

#[test]
fn paypal_vectors() {
    let vs = vectors("paypal_ipn.json");
    assert_eq!(vs.len(), 6);
    for v in &vs {
        let name = v["name"].as_str().unwrap();
        if let Some(expected) = v["expected_postback_body"].as_str() {
            assert_eq!(
                paypal::postback_body(body_of(v)),
                expected.as_bytes(),
                "{name}"
            );
            assert_eq!(
                v["expected_postback_content_type"].as_str(),
                Some(paypal::POSTBACK_CONTENT_TYPE)
            );
        }
        if let Some(status) = v["postback_http_status"].as_u64() {
            let got = paypal::interpret_postback_answer(
                u16::try_from(status).unwrap(),
                v["postback_response_body"].as_str().unwrap(),
            );
            check(name, &v["expected"], got);
        }
        if let Some(checks) = v["checks"].as_object() {
            let d = Delivery {
                headers: &[],
                body: body_of(v),
                path_secret: None,
            };
            let e = one(Provider::PaypalIpn, &d);
            assert_eq!(e.amount.as_deref(), checks["mc_gross"].as_str());
            assert_eq!(e.currency.as_deref(), checks["mc_currency"].as_str());
            assert_eq!(
                e.transaction_id.as_deref(),
                checks["txn_id_unseen"].as_str()
            );
        }
    }
    // verify() never pretends PayPal is verified locally.
    let d = Delivery {
        headers: &[],
        body: b"txn_id=1",
        path_secret: None,
    };
    assert_eq!(
        verify(Provider::PaypalIpn, &d, None, Utc::now(), Duration::ZERO),
        Err(VerifyError::PostbackRequired)
    );
}

// ---------- normalisation ----------

fn one(provider: Provider, d: &Delivery<'_>) -> Event {
    let mut events = normalize(provider, d).unwrap();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn by_name<'a>(vs: &'a [Value], name: &str) -> &'a Value {
    vs.iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

fn norm(provider: Provider, v: &Value) -> Event {
    let d = Delivery {
        headers: &[],
        body: body_of(v),
        path_secret: None,
    };
    one(provider, &d)
}

#[test]
fn stripe_normalisation() {
    let vs = vectors("stripe.json");
    let e = norm(
        Provider::Stripe,
        by_name(&vs, "valid_checkout_session_completed"),
    );
    assert_eq!(e.kind, EventKind::Purchase);
    assert_eq!(e.order_id.as_deref(), Some("pi_3MbrTest0001"));
    assert_eq!(e.buyer_email.as_deref(), Some("jorg.muller@example.com"));
    assert_eq!(e.first_name.as_deref(), Some("Jörg"));
    assert_eq!(e.last_name.as_deref(), Some("Müller"));
    assert_eq!(e.product_id.as_deref(), Some("offer_basic"));
    assert_eq!(e.amount.as_deref(), Some("4900"));
    assert!(e.test);
    assert_eq!(e.idempotency_key(), "evt_1MbrTest0000000001");

    let e = norm(
        Provider::Stripe,
        by_name(&vs, "valid_invoice_paid_recurring"),
    );
    assert_eq!(e.kind, EventKind::RecurringPayment);
    assert_eq!(e.order_id.as_deref(), Some("sub_1MbrTest0002"));
    assert_eq!(e.product_id.as_deref(), Some("prod_MbrCourseA"));
    assert_eq!(e.buyer_email.as_deref(), Some("anna@example.com"));

    let e = norm(Provider::Stripe, by_name(&vs, "valid_charge_refunded"));
    assert_eq!(e.kind, EventKind::Refund);
    assert_eq!(e.order_id.as_deref(), Some("pi_3MbrTest0001"));

    let e = norm(
        Provider::Stripe,
        by_name(&vs, "valid_charge_dispute_created"),
    );
    assert_eq!(e.kind, EventKind::Chargeback);
    assert_eq!(e.order_id.as_deref(), Some("pi_3MbrTest0001"));

    let e = norm(
        Provider::Stripe,
        by_name(&vs, "valid_customer_subscription_deleted"),
    );
    assert_eq!(e.kind, EventKind::EndOfTerm);
    assert_eq!(e.order_id.as_deref(), Some("sub_1MbrTest0002"));
}

#[test]
fn digistore24_normalisation() {
    let vs = vectors("digistore24.json");
    let cases = [
        ("lifecycle_on_payment", EventKind::Purchase),
        ("lifecycle_on_payment_rebill", EventKind::RecurringPayment),
        ("lifecycle_on_refund", EventKind::Refund),
        ("lifecycle_on_chargeback", EventKind::Chargeback),
        ("lifecycle_on_payment_missed", EventKind::PaymentMissed),
        ("lifecycle_on_rebill_cancelled", EventKind::Cancellation),
        ("lifecycle_last_paid_day", EventKind::EndOfTerm),
        // "Answer OK, change nothing": stored as a connection test and ignored.
        ("lifecycle_connection_test", EventKind::AuthTest),
    ];
    let mut keys = std::collections::HashSet::new();
    for (name, kind) in cases {
        let e = norm(Provider::Digistore24, by_name(&vs, name));
        assert_eq!(e.kind, kind, "{name}");
        assert!(e.test, "{name}");
        assert!(
            keys.insert(e.idempotency_key()),
            "{name}: duplicate idempotency key"
        );
        if kind != EventKind::AuthTest {
            assert_eq!(e.order_id.as_deref(), Some("MBR7Q2XZ"));
            assert_eq!(e.product_id.as_deref(), Some("598765"));
            assert_eq!(e.buyer_email.as_deref(), Some("jorg+kurs@example.de"));
            assert_eq!(e.first_name.as_deref(), Some("Jörg"));
            assert_eq!(e.last_name.as_deref(), Some("Müller-Straße"));
            assert_eq!(e.currency.as_deref(), Some("EUR"));
        }
    }
    let e = norm(Provider::Digistore24, by_name(&vs, "lifecycle_on_payment"));
    assert_eq!(e.transaction_id.as_deref(), Some("5550001"));
    assert_eq!(e.amount.as_deref(), Some("47.00"));
    assert_eq!(
        e.idempotency_key(),
        "digistore24:MBR7Q2XZ:on_payment:5550001"
    );
}

#[test]
fn copecart_normalisation() {
    let vs = vectors("copecart.json");
    let cases = [
        ("classic_valid_payment_made_first", EventKind::Purchase),
        (
            "classic_valid_payment_made_recurring",
            EventKind::RecurringPayment,
        ),
        ("classic_valid_payment_refunded", EventKind::Refund),
        ("classic_valid_payment_charged_back", EventKind::Chargeback),
        (
            "classic_valid_payment_recurring_cancelled",
            EventKind::Cancellation,
        ),
        ("classic_valid_payment_failed", EventKind::PaymentMissed),
    ];
    for (name, kind) in cases {
        let e = norm(Provider::CopeCart, by_name(&vs, name));
        assert_eq!(e.kind, kind, "{name}");
        assert_eq!(e.order_id.as_deref(), Some("CC-ORD-8F3K2LQ"), "{name}");
        assert_eq!(e.product_id.as_deref(), Some("cc-prod-4711"), "{name}");
        assert_eq!(
            e.buyer_email.as_deref(),
            Some("anna.schmidt@example.de"),
            "{name}"
        );
        assert_eq!(e.last_name.as_deref(), Some("Schmidt-Größer"), "{name}");
        assert!(e.test, "{name}");
    }
    let e = norm(
        Provider::CopeCart,
        by_name(&vs, "classic_valid_payment_made_first"),
    );
    assert_eq!(e.transaction_id.as_deref(), Some("cc-txn-0001"));
    assert_eq!(e.amount.as_deref(), Some("29.0"));
    let e = norm(
        Provider::CopeCart,
        by_name(&vs, "classic_valid_payment_recurring_cancelled"),
    );
    assert_eq!(e.access_until.as_deref(), Some("2026-05-02"));

    let e = norm(Provider::Cope, by_name(&vs, "cope_valid"));
    assert_eq!(e.kind, EventKind::Purchase);
    assert_eq!(e.order_id.as_deref(), Some("ord_8f3k2lq"));
    assert_eq!(e.product_id.as_deref(), Some("prod_4711"));
    assert_eq!(e.buyer_email.as_deref(), Some("anna.schmidt@example.de"));
    assert_eq!(
        e.idempotency_key(),
        "https://api.cope.com/businesses/biz_123#evt_cope_0001"
    );
}

#[test]
fn thrivecart_normalisation() {
    let doc = load("thrivecart.json");
    let vs = vectors("thrivecart.json");
    let cases = [
        ("valid_order_success", EventKind::Purchase),
        ("valid_subscription_payment", EventKind::RecurringPayment),
        ("valid_refund", EventKind::Refund),
        ("valid_rebill_failed", EventKind::PaymentMissed),
        ("valid_subscription_cancelled", EventKind::Cancellation),
    ];
    let mut keys = std::collections::HashSet::new();
    for (name, kind) in cases {
        let e = norm(Provider::ThriveCart, by_name(&vs, name));
        assert_eq!(e.kind, kind, "{name}");
        assert_eq!(e.order_id.as_deref(), Some("4455667"));
        assert_eq!(e.product_id.as_deref(), Some("7"));
        assert_eq!(
            e.buyer_email.as_deref(),
            doc["parse_expectations"]["customer[email]"].as_str()
        );
        assert_eq!(e.first_name.as_deref(), Some("Lena"));
        assert_eq!(e.last_name.as_deref(), Some("Koch"));
        assert!(e.test);
        assert!(keys.insert(e.idempotency_key()));
    }
}

#[test]
fn paypal_normalisation() {
    let vs = vectors("paypal_ipn.json");
    let e = norm(
        Provider::PaypalIpn,
        by_name(&vs, "postback_body_construction"),
    );
    assert_eq!(e.kind, EventKind::Purchase);
    // windows-1252 decoded via the `charset` field.
    assert_eq!(e.first_name.as_deref(), Some("Jörg"));
    assert_eq!(e.last_name.as_deref(), Some("Müller"));
    assert_eq!(e.buyer_email.as_deref(), Some("jorg+pp@example.com"));
    assert_eq!(e.order_id.as_deref(), Some("61E67681CH3238416"));
    assert_eq!(e.product_id.as_deref(), Some("offer_basic"));
    assert!(e.test);
}

#[test]
fn memberspot_normalisation() {
    let d = Delivery {
        headers: &[],
        body: br#"{"event":"auth_test"}"#,
        path_secret: None,
    };
    assert_eq!(one(Provider::Memberspot, &d).kind, EventKind::AuthTest);
    let body = br#"{"event":"user.enrolled","data":{"email":"a@b.de","offerId":"off1"}}"#;
    let d = Delivery {
        headers: &[],
        body,
        path_secret: None,
    };
    let e = one(Provider::Memberspot, &d);
    assert_eq!(
        e.kind,
        EventKind::Member {
            name: "user.enrolled".into()
        }
    );
    assert_eq!(e.buyer_email.as_deref(), Some("a@b.de"));
    assert_eq!(e.product_id.as_deref(), Some("off1"));
    let d = Delivery {
        headers: &[],
        body: b"not json",
        path_secret: None,
    };
    assert!(normalize(Provider::Memberspot, &d).is_err());
}
