//! `/readyz` over real TCP: the store answers with a schema this version reads and, when
//! `ready_checks_schools` is set, every school accepts its key; on SQLite and PostgreSQL.

use std::time::Duration;

use memberspot_api::ApiKey;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, ServerSettings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, database, drop_database};

async fn school() -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: "sk_ready_school_key".into(),
        seed: 5,
        size: SeedSize {
            users: 2,
            offers: 1,
            courses: 1,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox")
}

/// Serves `hub` on a loopback port; answers the base URL and the token that stops it.
async fn serve(hub: &Hub, check_schools: bool) -> (String, CancellationToken) {
    let app = App::build(
        hub.clone(),
        ServerSettings {
            ready_checks_schools: check_schools,
            ..ServerSettings::default()
        },
        Vec::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    tokio::spawn(app.serve(listener, cancel.clone()));
    (base, cancel)
}

/// Requests the school has answered (its admin state read may count itself).
async fn requests(sb: &Sandbox) -> u64 {
    let state: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sb.root_url()))
        .header("X-API-KEY", sb.api_key())
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    state["counters"]["requests"].as_u64().expect("counter")
}

async fn readyz(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn readiness_story(backend: Backend) {
    let good = school().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg) = database(backend, dir.path()).await;
    let embedded = |sb: &Sandbox, key: &str| EmbeddedSandbox {
        base_url: sb.base_url(),
        api_key: ApiKey::new(key),
    };
    let hub = Hub::open(
        Store::open(&url).await.expect("store"),
        MasterKey::generate(),
        Some(embedded(&good, good.api_key())),
    )
    .await
    .expect("hub");

    // Store only (the default): ready, and the schools are not asked.
    let overhead = requests(&good).await;
    let overhead = requests(&good).await - overhead;
    let before = requests(&good).await;
    let (plain, stop_plain) = serve(&hub, false).await;
    let (code, body) = readyz(&plain).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    assert_eq!(body["store"], "ok");
    assert!(body["schools"].is_null(), "{body}");
    assert_eq!(
        requests(&good).await,
        before + overhead,
        "no school was asked"
    );

    // With the schools: each one's key is checked, once for several probes.
    let before = requests(&good).await;
    let (checked, stop_checked) = serve(&hub, true).await;
    for _ in 0..3 {
        let (code, body) = readyz(&checked).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["schools"]["sandbox"], "ok", "{body}");
    }
    assert_eq!(
        requests(&good).await,
        before + overhead + 1,
        "one check for three probes"
    );

    // A hub whose school refuses its key is not ready, and says which school.
    let other = tempfile::tempdir().expect("tempdir");
    let (url2, pg2) = database(backend, other.path()).await;
    let refused = Hub::open(
        Store::open(&url2).await.expect("store"),
        MasterKey::generate(),
        Some(embedded(&good, "sk_not_the_key")),
    )
    .await
    .expect("hub");
    let (bad, stop_bad) = serve(&refused, true).await;
    let (code, body) = readyz(&bad).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["store"], "ok");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("school `sandbox`"), "{body}");

    // A newer memberspot migrated the database: this one is no longer ready, and says
    // both versions.
    let raw = Store::open(&url).await.expect("store");
    let binary = memberspot_hub::store::binary_version(raw.backend());
    raw.close().await;
    insert_migration(&url, 9_999).await;
    let (code, body) = readyz(&plain).await;
    assert_eq!(code, 503, "{body}");
    let store = body["store"].as_str().unwrap_or_default();
    assert!(
        store.contains("9999") && store.contains(&format!("binary's {binary}")),
        "{body}"
    );

    for stop in [stop_plain, stop_checked, stop_bad] {
        stop.cancel();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.close().await;
    refused.close().await;
    for name in [pg, pg2].into_iter().flatten() {
        drop_database(&name).await;
    }
}

/// Records a migration this binary does not have, as a newer binary would.
async fn insert_migration(url: &str, version: i64) {
    use sqlx::Connection;
    let sql = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({version}, 'from the future', TRUE, X'00', 1)"
    );
    if let Some(path) = url.strip_prefix("sqlite://") {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let mut c = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("sqlite");
        sqlx::query(&sql).execute(&mut c).await.expect("insert");
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
        let sql = sql.replace("X'00'", "'\\x00'::bytea");
        sqlx::query(&sql).execute(&mut c).await.expect("insert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_on_sqlite() {
    readiness_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_on_postgres() {
    readiness_story(Backend::Postgres).await;
}
