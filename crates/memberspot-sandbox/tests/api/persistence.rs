//! State files: spawn, mutate, shut down, spawn again.

use std::time::Duration;

use memberspot_sandbox::{Sandbox, SandboxConfig, SandboxError};
use serde_json::json;

use crate::common::{config, start_with};

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.json");
    let cfg = SandboxConfig {
        state_file: Some(path.clone()),
        ..config()
    };

    let api = start_with(cfg.clone()).await;
    assert!(path.exists(), "a fresh state file is written at once");
    let offer = api.get("/v1/offers").await.body[0]["id"].clone();
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "bleibt@example.com", "grantOffer": offer, "firstname": "Bleibt"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let uid = r.body["uid"].clone();
    let gone = api.state().await["users"][0]["email"].clone();
    api.delete("/v1/users/delete-users", json!({"emails": [gone]}))
        .await;
    api.post("/_sandbox/clock", json!({"advanceSeconds": 3600}))
        .await;
    let before = api.state().await;
    api.sandbox.shutdown().await.expect("clean shutdown");

    // Different seed in the config: the file wins.
    let api = start_with(SandboxConfig { seed: 99, ..cfg }).await;
    let r = api.get("/v1/users/find-by-mail/bleibt%40example.com").await;
    assert_eq!(
        (r.status, r.body["uid"].clone(), r.body["firstname"].clone()),
        (200, uid, json!("Bleibt"))
    );
    assert_eq!(
        api.get(&format!(
            "/v1/users/find-by-mail/{}",
            gone.as_str().unwrap().replace('@', "%40")
        ))
        .await
        .status,
        404
    );
    let after = api.state().await;
    assert_eq!(before["users"], after["users"]);
    assert_eq!(before["offers"], after["offers"]);
    let offset = api.get("/_sandbox/clock").await.body["offsetSeconds"]
        .as_f64()
        .unwrap();
    assert!(
        (offset - 3600.0).abs() < 1.0,
        "the clock offset is kept: {offset}"
    );
    api.sandbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn background_flush_writes_soon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("school.json");
    let api = start_with(SandboxConfig {
        state_file: Some(path.clone()),
        ..config()
    })
    .await;
    let offer = api.get("/v1/offers").await.body[0]["id"].clone();
    api.post(
        "/v1/users/grant-user-offer-by-mail",
        json!({"email": "flush@example.com", "grantOffer": offer}),
    )
    .await;
    let mut written = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if std::fs::read_to_string(&path)
            .unwrap()
            .contains("flush@example.com")
        {
            written = true;
            break;
        }
    }
    assert!(written, "flushed within two seconds");
    // No temp files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("school.json")]);
}

#[tokio::test]
async fn corrupt_state_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{ this is not json").unwrap();
    let err = Sandbox::start_local(SandboxConfig {
        state_file: Some(path.clone()),
        ..config()
    })
    .await
    .err()
    .expect("fails");
    assert!(matches!(err, SandboxError::BadStateFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    std::fs::write(&path, r#"{"format": "something-else"}"#).unwrap();
    let err = Sandbox::start_local(SandboxConfig {
        state_file: Some(path.clone()),
        ..config()
    })
    .await
    .err()
    .expect("fails");
    assert!(err.to_string().contains("broken.json"), "{err}");
}

#[tokio::test]
async fn shutdown_cuts_hanging_timeouts_short() {
    let faults = memberspot_sandbox::Faults {
        timeout_rate: 1.0,
        timeout_ms: 60_000,
        ..Default::default()
    };
    let api = start_with(SandboxConfig { faults, ..config() }).await;
    let url = api.url("/v1/offers");
    let http = api.http.clone();
    let pending = tokio::spawn(async move {
        http.get(url)
            .header("X-API-KEY", crate::common::KEY)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    api.sandbox.shutdown().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
}
