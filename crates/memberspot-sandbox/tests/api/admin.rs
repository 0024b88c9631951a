//! `/_sandbox/*` and determinism of the seed.

use memberspot_sandbox::{SandboxConfig, SeedSize};
use serde_json::{Value, json};

use crate::common::{KEY, config, start, start_with};

/// The state without the parts that legitimately differ between runs.
fn stable(mut state: Value) -> String {
    let obj = state.as_object_mut().unwrap();
    obj.remove("now");
    obj.remove("counters");
    serde_json::to_string(&state).unwrap()
}

#[tokio::test]
async fn same_seed_same_school() {
    let a = start().await;
    let b = start().await;
    let c = start_with(SandboxConfig {
        seed: 7,
        ..config()
    })
    .await;
    let state = a.state().await;
    assert_eq!(stable(state.clone()), stable(b.state().await));
    assert_ne!(stable(state.clone()), stable(c.state().await));
    for key in [
        "now",
        "offers",
        "courses",
        "exams",
        "customProperties",
        "users",
        "counters",
    ] {
        assert!(state.get(key).is_some(), "{key}");
    }
    assert_eq!(state["users"].as_array().unwrap().len(), 50);
    assert_eq!(state["courses"].as_array().unwrap().len(), 3);
    let chapter = &state["courses"][0]["chapters"][0];
    assert!(chapter["posts"][0]["id"].is_string() && chapter["name"].is_string());

    let small = start_with(SandboxConfig {
        size: SeedSize {
            users: 5,
            offers: 2,
            courses: 1,
        },
        ..config()
    })
    .await;
    let s = small.state().await;
    assert_eq!(
        (
            s["users"].as_array().unwrap().len(),
            s["offers"].as_array().unwrap().len()
        ),
        (5, 2)
    );
}

#[tokio::test]
async fn request_log_records_raw_requests_without_the_key() {
    let api = start().await;
    api.get("/v1/users/find-by-mail/a%2Bb%40example.com").await;
    api.get("/v1/users/list?pageLength=2&active=true").await;
    api.post(
        "/v1/users/set-offer-state",
        json!({"email": "x@example.com", "offerId": "o"}),
    )
    .await;
    api.send(
        reqwest::Method::POST,
        "/v1/users/set-offer-state",
        Some("not json"),
        Some(KEY),
    )
    .await;
    api.send(reqwest::Method::GET, "/v1/offers", None, Some("wrong-key"))
        .await;

    let r = api.get("/_sandbox/requests").await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(KEY));
    let log = r.body.as_array().unwrap();
    assert_eq!(log.len(), 5, "admin calls are not logged: {log:?}");
    assert_eq!(
        log[0],
        json!({"method": "GET", "path": "/v1/users/find-by-mail/a%2Bb%40example.com", "query": null, "body": null, "status": 404})
    );
    assert_eq!(log[1]["query"], "pageLength=2&active=true");
    assert_eq!(
        log[2]["body"],
        json!({"email": "x@example.com", "offerId": "o"})
    );
    assert_eq!(
        (log[3]["body"].clone(), log[3]["status"].clone()),
        (json!("not json"), json!(400))
    );
    assert_eq!(log[4]["status"], 401);

    let r = api.get("/_sandbox/requests?limit=2").await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert_eq!(r.body[1]["status"], 401);
    assert_eq!(api.get("/_sandbox/requests?limit=x").await.status, 400);
    assert_eq!(
        api.delete("/_sandbox/requests", json!(null)).await.body,
        json!({"cleared": 5})
    );
    assert_eq!(api.get("/_sandbox/requests").await.body, json!([]));
}

#[tokio::test]
async fn reset_reseeds() {
    let api = start().await;
    let original = stable(api.state().await);
    api.post(
        "/v1/users/delete-users",
        json!({"emails": [api.state().await["users"][0]["email"]]}),
    )
    .await;
    let r = api.post("/_sandbox/reset", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stable(api.state().await), original);
    let r = api
        .post("/_sandbox/reset", json!({"seed": 9, "users": 12}))
        .await;
    assert_eq!(r.body["seed"], 9);
    assert_eq!(api.state().await["users"].as_array().unwrap().len(), 12);
    let r = api.post("/_sandbox/reset", json!({"users": "many"})).await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("users"), "{}", r.text);
}

#[tokio::test]
async fn admin_bodies_are_checked() {
    let api = start().await;
    let r = api
        .put("/_sandbox/faults", json!({"errorRate": "high"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"][0]
            .as_str()
            .unwrap()
            .starts_with("errorRate"),
        "{}",
        r.text
    );
    let r = api.put("/_sandbox/faults", json!({"errorRat": 0.5})).await;
    assert!(
        r.body["message"][0]
            .as_str()
            .unwrap()
            .starts_with("errorRat is not a known field"),
        "{}",
        r.text
    );
    let r = api.put("/_sandbox/faults", json!({"timeoutRate": 2})).await;
    assert_eq!(
        r.body["message"],
        json!(["timeoutRate must be a number between 0 and 1"])
    );
    let r = api.put("/_sandbox/rate-limit", json!({"rps": -1})).await;
    assert_eq!(r.status, 400);
    let r = api.put("/_sandbox/rate-limit", json!({})).await;
    assert!(r.text.contains("rps"), "{}", r.text);
    let r = api
        .send(
            reqwest::Method::POST,
            "/_sandbox/clock",
            Some("{bad"),
            Some(KEY),
        )
        .await;
    assert_eq!(r.status, 400);

    let faults = json!({"latencyMs": 0, "errorRate": 0.25, "rateLimitRate": 0.0, "rateLimitBurst": 0,
                        "timeoutRate": 0.0, "timeoutMs": 0, "seed": 5});
    assert_eq!(
        api.put("/_sandbox/faults", faults.clone()).await.body,
        faults
    );
    assert_eq!(api.get("/_sandbox/faults").await.body, faults);
    assert_eq!(api.get("/_sandbox/nope").await.status, 404);
}

#[tokio::test]
async fn clock_moves() {
    let api = start().await;
    let t0 = memberspot_wire::Timestamp::parse(
        api.get("/_sandbox/clock").await.body["now"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let r = api
        .post("/_sandbox/clock", json!({"advanceSeconds": 86400}))
        .await;
    let t1 = memberspot_wire::Timestamp::parse(r.body["now"].as_str().unwrap()).unwrap();
    assert!((t1.0 - t0.0).num_seconds() >= 86400);
    let r = api
        .post("/_sandbox/clock", json!({"now": "2030-01-01T00:00:00Z"}))
        .await;
    let target = memberspot_wire::Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
    let set = memberspot_wire::Timestamp::parse(r.body["now"].as_str().unwrap()).unwrap();
    assert!(
        (set.0 - target.0).num_milliseconds().abs() < 2000,
        "{}",
        r.text
    );
    let seen =
        memberspot_wire::Timestamp::parse(api.state().await["now"].as_str().unwrap()).unwrap();
    assert!((seen.0 - target.0).num_seconds().abs() < 5);
}
