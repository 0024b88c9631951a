//! Opening the gateway: several instances started together on a fresh database agree on
//! one master key, one built-in sandbox connection and one first admin token; on SQLite
//! and on PostgreSQL.

use memberspot_hub::Hub;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn fresh_pg() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("hub_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({admin}): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad MEMBERSPOT_TEST_PG"),
    };
    (url, name)
}

async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// Several instances started together on a fresh database (a deployment rolling out,
/// `serve` and a CLI command at once) all open: they agree on one master-key check and
/// one built-in sandbox connection. A key that differs from the first one stored is
/// refused, even when it races it.
async fn instances_start_together_on_a_fresh_database(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg) = empty_database(backend, dir.path()).await;
    let hex = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";
    let keys = (0..4)
        .map(|_| MasterKey::parse(hex).expect("key"))
        .collect();
    let mut hubs = Vec::new();
    for hub in open_together(&url, keys).await {
        hubs.push(hub.unwrap_or_else(|e| panic!("every instance opens: {e}")));
    }
    let names: Vec<String> = hubs[0]
        .list_connections()
        .await
        .expect("connections")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["sandbox"]);

    // `serve` on first start: one instance mints the admin token, the others see it.
    let firsts = futures::future::join_all(hubs.iter().map(|h| h.issue_first_admin_token())).await;
    let minted: Vec<SecretString> = firsts
        .into_iter()
        .filter_map(|r| r.expect("first admin token"))
        .collect();
    assert_eq!(minted.len(), 1, "exactly one admin token is minted");
    for hub in &hubs {
        assert!(
            hub.check_admin_token(minted[0].expose_secret())
                .await
                .expect("check")
        );
    }

    let other = Hub::open(
        Store::open(&url).await.expect("store"),
        MasterKey::generate(),
        None,
    )
    .await;
    assert!(
        matches!(other, Err(memberspot_hub::HubError::WrongMasterKey)),
        "another key is refused"
    );
    for hub in hubs {
        hub.close().await;
    }
    if let Some(name) = pg {
        drop_pg(&name).await;
    }

    // Two different keys racing on a fresh database: exactly one of them wins.
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg) = empty_database(backend, dir.path()).await;
    let keys = vec![MasterKey::generate(), MasterKey::generate()];
    let mut opened = Vec::new();
    for r in open_together(&url, keys).await {
        match r {
            Ok(hub) => opened.push(hub),
            Err(memberspot_hub::HubError::WrongMasterKey) => {}
            Err(e) => panic!("only a key mismatch may refuse an instance: {e}"),
        }
    }
    assert_eq!(opened.len(), 1, "one key is in force");
    for hub in opened {
        hub.close().await;
    }
    if let Some(name) = pg {
        drop_pg(&name).await;
    }
}

/// An empty database: a file in `dir`, or a fresh PostgreSQL database (named, to drop).
async fn empty_database(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("hub.db").display()), None),
        Backend::Postgres => {
            let (url, name) = fresh_pg().await;
            (url, Some(name))
        }
    }
}

/// Opens one hub per key on `url`, each on its own store, all released at once so
/// that their first-start steps overlap.
async fn open_together(
    url: &str,
    keys: Vec<MasterKey>,
) -> Vec<Result<Hub, memberspot_hub::HubError>> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(keys.len()));
    let mut tasks = Vec::new();
    for key in keys {
        // Migrations take a lock of their own; open the stores before the race.
        let store = Store::open(url).await.expect("store");
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            Hub::open(store, key, None).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_start_together_on_a_fresh_database_sqlite() {
    instances_start_together_on_a_fresh_database(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_start_together_on_a_fresh_database_postgres() {
    instances_start_together_on_a_fresh_database(Backend::Postgres).await;
}
