//! Every shared test vector through the real HTTP receivers, plus the receivers' handling
//! of bad input: unknown sources, oversized and malformed bodies, missing secrets,
//! Memberspot's `auth_test`. PayPal's post-back is in `payments.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use common::Backend;
use memberspot_hub::store::{EventFilter, EventStatus};
use serde_json::Value;

/// One request to make and what must come of it.
struct Case {
    name: String,
    provider: &'static str,
    secret: Option<String>,
    tolerance: u64,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    token: Option<String>,
    now: Option<i64>,
    valid: bool,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
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

fn valid_of(v: &Value) -> bool {
    v["expected"]["valid"].as_bool().unwrap()
}

fn form(params: &Value, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.as_object().unwrap() {
        s.append_pair(k, v.as_str().unwrap());
    }
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for v in common::vectors("stripe.json") {
        out.push(Case {
            name: format!("stripe/{}", v["name"].as_str().unwrap()),
            provider: "stripe",
            secret: v["secret"].as_str().map(str::to_owned),
            tolerance: v["tolerance_seconds"].as_u64().unwrap_or(300),
            headers: headers_of(&v),
            body: v["raw_body"].as_str().unwrap().as_bytes().to_vec(),
            token: None,
            now: v["now"].as_i64(),
            valid: valid_of(&v),
        });
    }
    for v in common::vectors("digistore24.json") {
        let name = format!("digistore24/{}", v["name"].as_str().unwrap());
        let pass = v["passphrase"].as_str().unwrap();
        let secret = (!pass.is_empty()).then(|| pass.to_owned());
        let base = |body: Vec<u8>, valid: bool, suffix: &str| Case {
            name: format!("{name}{suffix}"),
            provider: "digistore24",
            secret: secret.clone(),
            tolerance: 0,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body,
            token: None,
            now: None,
            valid,
        };
        if let Some(body) = v["raw_body"].as_str() {
            out.push(base(body.as_bytes().to_vec(), valid_of(&v), ""));
        } else if let Some(body) = v["raw_body_as_sent"].as_str() {
            // The verdict in the vector is for a receiver that decodes `+` as a space; the
            // body as sent, decoded correctly, verifies.
            out.push(base(body.as_bytes().to_vec(), true, " (as sent)"));
        } else if let Some(sign) = v["expected_sha_sign"].as_str() {
            // A computation vector: its parameters signed with the expected value (also the
            // upper-cased-keys convention, which the receiver accepts too).
            out.push(base(
                form(&v["params"], &[("sha_sign", sign)]),
                true,
                " (computed)",
            ));
        } else if let Some(sign) = v["uppercase_keys_false"]["expected_sha_sign"].as_str() {
            out.push(base(
                form(&v["params"], &[("sha_sign", sign)]),
                true,
                " (computed)",
            ));
        }
    }
    for v in common::vectors("copecart.json") {
        let classic = v["variant"] == "classic_ipn";
        out.push(Case {
            name: format!("copecart/{}", v["name"].as_str().unwrap()),
            provider: if classic { "copecart" } else { "cope" },
            secret: v["secret"].as_str().map(str::to_owned),
            tolerance: v["tolerance_seconds"].as_u64().unwrap_or(300),
            headers: headers_of(&v),
            body: v["raw_body"].as_str().unwrap().as_bytes().to_vec(),
            token: None,
            now: v["now"].as_i64(),
            valid: valid_of(&v),
        });
    }
    for v in common::vectors("thrivecart.json") {
        out.push(Case {
            name: format!("thrivecart/{}", v["name"].as_str().unwrap()),
            provider: "thrivecart",
            secret: v["secret_word"].as_str().map(str::to_owned),
            tolerance: 0,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: v["raw_body"].as_str().unwrap().as_bytes().to_vec(),
            token: None,
            now: None,
            valid: valid_of(&v),
        });
    }
    for v in common::vectors("elopage.json") {
        let path = v["request_path"].as_str().unwrap();
        out.push(Case {
            name: format!("elopage/{}", v["name"].as_str().unwrap()),
            provider: "elopage",
            secret: v["configured_token"].as_str().map(str::to_owned),
            tolerance: 0,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: v["raw_body"].as_str().unwrap().as_bytes().to_vec(),
            token: path
                .strip_prefix("/hooks/elopage/")
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            now: None,
            valid: valid_of(&v),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_through_the_http_receivers() {
    let w = common::world(Backend::Sqlite, 3).await;
    let cases = cases();
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    // The world has a real school besides the sandbox: one default for every source.
    let mut rules = String::from("default_connection = \"school\"\n\n");
    for (i, c) in cases.iter().enumerate() {
        rules.push_str(&format!(
            "[sources.v{i}]\nprovider = \"{}\"\ntolerance_secs = {}\n",
            c.provider, c.tolerance
        ));
        if let Some(s) = &c.secret {
            rules.push_str(&format!("secret = {}\n", toml_str(s)));
        }
    }
    let clock_ms = Arc::new(AtomicI64::new(0));
    let clock = {
        let ms = clock_ms.clone();
        Arc::new(move || {
            let v = ms.load(Ordering::SeqCst);
            if v == 0 {
                Utc::now()
            } else {
                DateTime::from_timestamp_millis(v).unwrap()
            }
        })
    };
    let served = common::serve(&w.hub, &rules, Some(clock), false).await;
    let http = reqwest::Client::new();
    for (i, c) in cases.iter().enumerate() {
        clock_ms.store(c.now.map_or(0, |s| s * 1000), Ordering::SeqCst);
        let url = match &c.token {
            Some(t) => format!("{}/hooks/v{i}/{t}", served.base),
            None => format!("{}/hooks/v{i}", served.base),
        };
        let mut req = http.post(&url).body(c.body.clone());
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if c.valid {
            assert_eq!(status, 200, "{}: {text}", c.name);
            let provider = c.provider.parse().unwrap();
            assert_eq!(
                text,
                memberspot_webhooks::success_response(provider).2,
                "{}",
                c.name
            );
            let stored = served
                .events
                .list(&EventFilter {
                    source: Some(format!("v{i}")),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(stored.len(), 1, "{}: one event stored", c.name);
            let detail = served.events.show(&stored[0].id).await.unwrap();
            let delivery = detail.delivery.unwrap();
            assert_eq!(delivery.verification.as_str(), "verified", "{}", c.name);
            assert_eq!(
                delivery.body.as_deref(),
                Some(&memberspot_webhooks::redact_body(provider, &c.body)[..]),
                "{}: raw body kept byte for byte, but for a secret inside it",
                c.name
            );
            if let Some(secret) = &c.secret {
                let kept = String::from_utf8_lossy(delivery.body.as_deref().unwrap_or_default());
                assert!(!kept.contains(secret.as_str()), "{}: secret kept", c.name);
            }
        } else {
            let expected = if c.secret.is_none() { 503 } else { 401 };
            assert_eq!(status, expected, "{}: {text}", c.name);
            let stored = served
                .events
                .list(&EventFilter {
                    source: Some(format!("v{i}")),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(
                stored.is_empty(),
                "{}: nothing stored for a rejected delivery",
                c.name
            );
        }
    }
    // Every rejected attempt is on record (without its body), at the receiver's clock.
    let rejected = w
        .hub
        .events_store()
        .rejected_deliveries(0, i64::MAX)
        .await
        .unwrap();
    let total: i64 = rejected.iter().map(|(_, n)| n).sum();
    assert_eq!(total as usize, cases.iter().filter(|c| !c.valid).count());
    served.stop().await;
    w.close().await;
}

const MEMBERSPOT_RULES: &str = r#"
[sources.school]
provider = "memberspot"
secret = "url-token-123"
connection = "school"

[sources.shop]
provider = "copecart"
secret = "cc-secret"
connection = "school"
max_body_kb = 1
"#;

fn copecart_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberspot_hooks_and_bad_input() {
    let w = common::world(Backend::Sqlite, 3).await;
    let served = common::serve(&w.hub, MEMBERSPOT_RULES, None, true).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str| {
        http.post(format!("{}{path}", served.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
    };

    // Memberspot checks the URL with auth_test and wants 200/201.
    let r = post("/hooks/school/url-token-123", r#"{"event":"auth_test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The token may also come as a header.
    let r = post(
        "/hooks/school",
        r#"{"event":"user.created","email":"Neu@Example.de","offerId":"o1"}"#,
    )
    .header("x-hook-token", "url-token-123")
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post("/hooks/school/wrong-token", r#"{"event":"auth_test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_signature");
    assert!(
        !body.to_string().contains("url-token-123"),
        "the secret never appears in an answer"
    );

    let list = served
        .events
        .list(&EventFilter {
            source: Some("school".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    let member = list.iter().find(|e| e.name == "user.created").unwrap();
    assert_eq!(member.email.as_deref(), Some("neu@example.de"));
    assert_eq!(member.status, EventStatus::Done);
    let ping = list.iter().find(|e| e.kind == "auth_test").unwrap();
    assert_eq!(ping.status, EventStatus::Ignored);
    let detail = served.events.show(&member.id).await.unwrap();
    let headers = detail.delivery.unwrap().headers;
    assert_eq!(
        headers["x-hook-token"], "<redacted>",
        "credentials are not stored"
    );

    // Unknown source.
    let r = post("/hooks/nope", "{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[sources.nope]")
    );

    // Oversized body: 413 before anything is read into the store.
    let big = format!(r#"{{"event":"payment.made","pad":"{}"}}"#, "x".repeat(4096));
    let r = post("/hooks/shop", &big)
        .header(
            "x-copecart-signature",
            copecart_signature("cc-secret", big.as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Malformed but correctly signed: a clear 400, and the delivery is kept.
    let bad = b"{not json";
    let r = post("/hooks/shop", std::str::from_utf8(bad).unwrap())
        .header("x-copecart-signature", copecart_signature("cc-secret", bad))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_body");

    // Unknown product: stored, acknowledged with OK, visible as unmatched, nothing granted.
    let sale = r#"{"event_type":"payment.made","order_id":"CC-1","product_id":"unknown-prod","buyer_email":"x@example.de","transaction_id":"T1","payment_status":"paid","is_test":false}"#;
    let r = post("/hooks/shop", sale)
        .header(
            "x-copecart-signature",
            copecart_signature("cc-secret", sale.as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");
    served.drain(10).await;
    let unmatched = served
        .events
        .list(&EventFilter {
            statuses: vec![EventStatus::Unmatched],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert_eq!(unmatched[0].order_id.as_deref(), Some("CC-1"));

    served.stop().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_without_secret_fails_closed() {
    let w = common::world(Backend::Sqlite, 3).await;
    let served = common::serve(
        &w.hub,
        "[sources.s]\nprovider = \"stripe\"\nconnection = \"school\"\nsecret_env = \"MEMBERSPOT_TEST_SURELY_UNSET\"\n",
        None,
        false,
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/s", served.base))
        .header("stripe-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "a missing secret refuses (and the provider retries later)"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MEMBERSPOT_TEST_SURELY_UNSET")
    );
    // HEAD probes (ThriveCart) get 2xx.
    let r = reqwest::Client::new()
        .head(format!("{}/hooks/s", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    served.stop().await;
    w.close().await;
}
