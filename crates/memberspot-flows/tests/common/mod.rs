//! Shared test harness: fresh PostgreSQL databases, a sandbox school and a hub.

#![allow(dead_code, clippy::unwrap_used)]

use memberspot_api::ApiKey;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};

pub const SCHOOL_KEY: &str = "sk_live_flows_school_key_3e1d9c7b5a";

pub fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: `(url, name)`.
pub async fn fresh_pg() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("fl_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({admin}): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    (url, name)
}

pub async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

pub async fn sandbox() -> Sandbox {
    sandbox_of(10).await
}

/// A sandbox school of `users` members.
pub async fn sandbox_of(users: usize) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 5,
        size: SeedSize {
            users,
            offers: 3,
            courses: 2,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .unwrap()
}

/// A hub on `url` whose built-in `sandbox` connection is `sandbox`.
pub async fn hub(url: &str, sandbox: &Sandbox) -> Hub {
    let store = Store::open(url).await.unwrap();
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    // One key for every test hub: two hubs on one database (two instances) open it.
    let key = MasterKey::parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        .unwrap();
    Hub::open(store, key, Some(embedded)).await.unwrap()
}

/// Sets the sandbox's faults (`/_sandbox/faults`), e.g. `{"repeatCursor": true}`.
pub async fn set_faults(sandbox: &Sandbox, faults: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}
