//! Cross-cutting behaviour: key, routing, bodies, throttling, faults.

use std::time::{Duration, Instant};

use memberspot_sandbox::{Faults, SandboxConfig};
use reqwest::Method;
use serde_json::json;

use crate::common::{KEY, config, start, start_with};

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let api = start().await;
    for key in [None, Some("wrong"), Some("")] {
        for path in [
            "/v1/offers",
            "/api-auth",
            "/v1/users/list",
            "/_sandbox/state",
        ] {
            let r = api.send(Method::GET, path, None, key).await;
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(
                r.body,
                json!({"statusCode": 401, "message": "Unauthorized"})
            );
        }
    }
    let r = api
        .send(
            Method::POST,
            "/v1/users/grant-user-offer-by-mail",
            Some("{"),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "the key is checked before the body");
}

#[tokio::test]
async fn api_auth_answers_empty_object() {
    let api = start().await;
    let r = api.get("/api-auth").await;
    assert_eq!((r.status, r.body), (200, json!({})));
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_nest_404s() {
    let api = start().await;
    let r = api.get("/v1/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "Cannot GET /v1/nope", "error": "Not Found"})
    );
    let r = api.post("/v1/offers", json!({})).await;
    assert_eq!(r.body["message"], "Cannot POST /v1/offers");
    let r = api
        .send(Method::PUT, "/v1/users/delete-users", Some("{}"), Some(KEY))
        .await;
    assert_eq!(
        (r.status, r.body["message"].clone()),
        (404, json!("Cannot PUT /v1/users/delete-users"))
    );
    // Express is lenient about a trailing slash and case.
    assert_eq!(api.get("/v1/offers/").await.status, 200);
    assert_eq!(api.get("/v1/Offers").await.status, 200);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let api = start().await;
    let r = api
        .send(
            Method::POST,
            "/v1/users/set-offer-state",
            Some("{\"email\": "),
            Some(KEY),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["statusCode"], 400);
    assert_eq!(r.body["error"], "Bad Request");
    let msg = r.body["message"].as_str().expect("a string message");
    assert!(
        msg.starts_with("Unexpected token in JSON at line 1 column"),
        "{msg}"
    );
}

#[tokio::test]
async fn empty_post_body_gives_validation_errors() {
    let api = start().await;
    let r = api
        .send(
            Method::POST,
            "/v1/users/grant-user-offer-by-mail",
            None,
            Some(KEY),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"statusCode": 400, "error": "Bad Request", "message": [
            "email must be an email", "grantOffer should not be empty", "grantOffer must be a string"]})
    );
}

#[tokio::test]
async fn body_is_json_whatever_the_content_type_and_get_ignores_it() {
    let api = start().await;
    let r = api
        .http
        .get(api.url("/v1/offers"))
        .header("X-API-KEY", KEY)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let offer = api.get("/v1/offers").await.body[0]["id"].clone();
    let r = api
        .http
        .post(api.url("/v1/users/grant-user-offer-by-mail"))
        .header("X-API-KEY", KEY)
        .header("Content-Type", "text/plain")
        .body(json!({"email": "plain@example.com", "grantOffer": offer}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn throttle_answers_429_with_retry_after() {
    let api = start_with(SandboxConfig {
        rate_limit: 2.0,
        ..config()
    })
    .await;
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..5 {
        let r = api.get("/v1/offers").await;
        statuses.push(r.status);
        if r.status == 429 {
            throttled = Some(r);
        }
    }
    assert_eq!(&statuses[..2], [200, 200], "{statuses:?}");
    let r = throttled.expect("throttled");
    assert_eq!(
        r.body,
        json!({"statusCode": 429, "message": "ThrottlerException: Too Many Requests"})
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Admin is exempt; the limit can be lifted at run time.
    assert_eq!(
        api.get("/_sandbox/rate-limit").await.body,
        json!({"rps": 2.0})
    );
    assert_eq!(
        api.put("/_sandbox/rate-limit", json!({"rps": 0}))
            .await
            .status,
        200
    );
    for _ in 0..10 {
        assert_eq!(api.get("/v1/offers").await.status, 200);
    }
    let state = api.state().await;
    assert!(state["counters"]["rateLimited"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn error_faults_answer_5xx_and_apply_nothing() {
    let faults = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    let api = start_with(SandboxConfig { faults, ..config() }).await;
    let offer = api.get("/_sandbox/state").await.body["offers"][0]["id"].clone();
    for _ in 0..10 {
        let r = api
            .post(
                "/v1/users/grant-user-offer-by-mail",
                json!({"email": "ghost@example.com", "grantOffer": offer}),
            )
            .await;
        assert!([500, 502, 503].contains(&r.status), "{}", r.status);
        assert_eq!(r.body["statusCode"], r.status);
    }
    let state = api.state().await;
    assert!(
        !state["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == "ghost@example.com")
    );
    assert_eq!(state["counters"]["faults"], 10);
    // Switching faults off at run time.
    assert_eq!(api.put("/_sandbox/faults", json!({})).await.status, 200);
    assert_eq!(api.get("/v1/offers").await.status, 200);
}

#[tokio::test]
async fn internal_server_error_body() {
    let faults = Faults {
        error_rate: 1.0,
        seed: Some(3),
        ..Faults::default()
    };
    let api = start_with(SandboxConfig { faults, ..config() }).await;
    let bodies: Vec<_> = twenty_offer_bodies(&api).await;
    assert!(bodies.contains(&json!({"statusCode": 500, "message": "Internal server error"})));
}

async fn twenty_offer_bodies(api: &crate::common::Api) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for _ in 0..20 {
        out.push(api.get("/v1/offers").await.body);
    }
    out
}

#[tokio::test]
async fn timeout_faults_hang_then_504_without_applying() {
    let faults = Faults {
        timeout_rate: 1.0,
        timeout_ms: 300,
        ..Faults::default()
    };
    let api = start_with(SandboxConfig { faults, ..config() }).await;
    let offer = api.state().await["offers"][0]["id"].clone();
    let t0 = Instant::now();
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "late@example.com", "grantOffer": offer}),
        )
        .await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 504);
    assert_eq!(
        r.body,
        json!({"statusCode": 504, "message": "Gateway Timeout"})
    );
    assert!(
        !api.state().await["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == "late@example.com")
    );
}

#[tokio::test]
async fn latency_and_burst_faults() {
    let faults = Faults {
        latency_ms: 150,
        ..Faults::default()
    };
    let api = start_with(SandboxConfig { faults, ..config() }).await;
    let t0 = Instant::now();
    assert_eq!(api.get("/v1/offers").await.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    let t0 = Instant::now();
    api.state().await;
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "admin is exempt from faults"
    );

    let r = api
        .put(
            "/_sandbox/faults",
            json!({"rateLimitRate": 1.0, "rateLimitBurst": 2}),
        )
        .await;
    assert_eq!(r.body["rateLimitBurst"], 2);
    let r = api.get("/v1/offers").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        r.body,
        json!({"statusCode": 429, "message": "ThrottlerException: Too Many Requests"})
    );
}

#[tokio::test]
async fn fault_decisions_are_reproducible() {
    let faults = Faults {
        error_rate: 0.5,
        seed: Some(11),
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let api = start_with(SandboxConfig {
            faults: faults.clone(),
            ..config()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(api.get("/v1/offers").await.status);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].iter().any(|s| *s >= 500));
}

#[tokio::test]
async fn head_and_oversized_bodies() {
    let api = start().await;
    let r = api.send(Method::HEAD, "/v1/offers", None, Some(KEY)).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let big = format!("{{\"emails\": [\"{}\"]}}", "a".repeat(200 * 1024));
    let r = api
        .send(
            Method::POST,
            "/v1/users/delete-users",
            Some(&big),
            Some(KEY),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["statusCode"], 413);
    let log = api.get("/_sandbox/requests").await.body;
    assert_eq!(log[0]["method"], "HEAD");
}
