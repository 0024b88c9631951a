//! What is recorded and how far it can be trusted, on SQLite and PostgreSQL: chain anchors
//! against someone who rewrites the audit chain with database access, and the one-time,
//! once-only migration of sealed keys.

#![allow(clippy::unwrap_used)] // tests may panic

use std::future::Future;
use std::path::PathBuf;

use memberspot_store::{
    AuditFilter, AuditRecord, ChainHead, NewAuditRecord, NewConnection, Store, ZERO_HASH,
    audit_hash,
};
use serde_json::json;
use sqlx::{Connection as _, Executor as _};

// ------------------------------------------------------------------ harness

/// The database behind the store's back, as an attacker with write access sees it.
#[derive(Clone)]
enum Raw {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                c.execute(sql).await.unwrap();
                c.close().await.unwrap();
            }
            Raw::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                c.execute(sql).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

fn admin_pg_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs `test(url, raw)` on a fresh SQLite file.
async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(String, Raw) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    test(format!("sqlite://{}", path.display()), Raw::Sqlite(path)).await;
}

/// Runs `test(url, raw)` on a fresh PostgreSQL database, dropped afterwards (also when the
/// test panics).
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(String, Raw) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = admin_pg_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({admin}): {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let outcome = tokio::spawn(test(url.clone(), Raw::Postgres(url))).await;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn record(i: i64) -> NewAuditRecord {
    NewAuditRecord {
        at: i * 1000,
        request_id: format!("req-{i}"),
        surface: memberspot_store::Surface::Rest,
        connection: Some("acme".to_owned()),
        persona: Some("support".to_owned()),
        end_user: Some("kim@agency.example".to_owned()),
        prompt: Some(format!("grant the trial to member {i}")),
        tool: "grant_user_offer_by_email".to_owned(),
        arguments: json!({"email": format!("m{i}@example.test"), "offer_id": "trial"}),
        outcome: memberspot_store::AuditOutcome::Ok,
        response: Some(json!({"granted": true})),
        error: None,
        upstream_status: Some(200),
        latency_ms: 12,
        oauth_client: None,
    }
}

async fn all_audit(store: &Store) -> Vec<AuditRecord> {
    store
        .query_audit(&AuditFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What someone with write access to the database can do that the hash walk cannot see:
/// change record `from` (its prompt) and recompute the hash of it and of every record after
/// it, links included, and move the recorded head to the new last hash.
async fn rewrite_from(store: &Store, raw: &Raw, from: i64) {
    let records = all_audit(store).await;
    let mut prev: Option<String> = None;
    for mut r in records.into_iter().filter(|r| r.seq >= from) {
        if r.seq == from {
            r.prompt = Some("nothing to see here".to_owned());
        }
        if let Some(p) = &prev {
            r.prev_hash.clone_from(p);
        }
        r.hash = audit_hash(&r.prev_hash, &r);
        raw.exec(&format!(
            "UPDATE audit_log SET prompt = {}, prev_hash = {}, hash = {} WHERE seq = {}",
            sql_text(r.prompt.as_deref().unwrap_or_default()),
            sql_text(&r.prev_hash),
            sql_text(&r.hash),
            r.seq
        ))
        .await;
        raw.exec(&format!(
            "UPDATE meta SET value = {} WHERE key = 'store.audit_head'",
            sql_text(&format!("{} {}", r.seq, r.hash))
        ))
        .await;
        prev = Some(r.hash);
    }
}

// ------------------------------------------------------------------ anchors

async fn anchors_catch_a_rewritten_chain(url: String, raw: Raw) {
    let store = Store::open(&url).await.unwrap();

    // An empty log has the start of the chain as its head.
    let empty = store.audit_head().await.unwrap();
    assert_eq!(
        empty,
        ChainHead {
            seq: 0,
            hash: ZERO_HASH.to_owned()
        }
    );
    assert!(store.verify_audit_anchor(&empty).await.unwrap().ok);

    let mut appended = Vec::new();
    for i in 1..=10 {
        appended.push(store.append_audit(&record(i)).await.unwrap());
    }
    // The owner keeps this (the daily summary, `audit anchor`).
    let anchor = store.audit_head().await.unwrap();
    assert_eq!(anchor.seq, appended[9].seq);
    assert_eq!(anchor.hash, appended[9].hash);
    for i in 11..=15 {
        appended.push(store.append_audit(&record(i)).await.unwrap());
    }
    let v = store.verify_audit_anchor(&anchor).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.head, store.audit_head().await.unwrap());
    // The anchor as it travels: printed, then parsed back (also as the summary shows it).
    let printed = anchor.to_string();
    assert_eq!(printed, format!("{}:{}", anchor.seq, anchor.hash));
    assert_eq!(printed.parse::<ChainHead>().unwrap(), anchor);
    assert_eq!(
        format!("#{} {}", anchor.seq, anchor.hash.to_uppercase())
            .parse::<ChainHead>()
            .unwrap(),
        anchor
    );

    // Someone with database access rewrites the chain from a record before the anchor,
    // with valid hashes: the walk finds nothing, the anchor does.
    rewrite_from(&store, &raw, appended[3].seq).await;
    let plain = store.verify_audit().await.unwrap();
    assert!(
        plain.ok,
        "a rewrite with valid hashes passes the walk: {plain:?}"
    );
    let v = store.verify_audit_anchor(&anchor).await.unwrap();
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.first_bad_seq, Some(anchor.seq));
    let problem = v.problem.unwrap();
    assert!(
        problem.contains(&format!("record {}", anchor.seq)) && problem.contains("rewritten"),
        "{problem}"
    );

    // An anchor proves the chain up to its record: a rewrite after it needs a newer anchor.
    let newer = store.audit_head().await.unwrap();
    rewrite_from(&store, &raw, appended[12].seq).await;
    assert!(store.verify_audit().await.unwrap().ok);
    assert!(!store.verify_audit_anchor(&newer).await.unwrap().ok);

    // Records removed from the end, head moved back: the chain no longer reaches the anchor.
    let head = store.audit_head().await.unwrap();
    let last_kept = &all_audit(&store).await[12];
    raw.exec(&format!(
        "DELETE FROM audit_log WHERE seq > {}",
        last_kept.seq
    ))
    .await;
    raw.exec(&format!(
        "UPDATE meta SET value = {} WHERE key = 'store.audit_head'",
        sql_text(&format!("{} {}", last_kept.seq, last_kept.hash))
    ))
    .await;
    assert!(store.verify_audit().await.unwrap().ok);
    let v = store.verify_audit_anchor(&head).await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(head.seq));
    let problem = v.problem.unwrap();
    assert!(
        problem.contains(&format!("the chain ends at record {}", last_kept.seq)),
        "{problem}"
    );

    // A made-up hash for a record that is there.
    let made_up = ChainHead {
        seq: last_kept.seq,
        hash: "ab".repeat(32),
    };
    assert!(!store.verify_audit_anchor(&made_up).await.unwrap().ok);
    let zero_but_not = ChainHead {
        seq: 0,
        hash: "ff".repeat(32),
    };
    assert!(!store.verify_audit_anchor(&zero_but_not).await.unwrap().ok);

    // Purged records cannot be checked, so an anchor among them fails and says why; the
    // last purged record is still known and checks.
    let kept = all_audit(&store).await;
    let current = store.audit_head().await.unwrap();
    let old = ChainHead {
        seq: kept[2].seq,
        hash: kept[2].hash.clone(),
    };
    let at_purge = ChainHead {
        seq: kept[4].seq,
        hash: kept[4].hash.clone(),
    };
    store.purge_audit_before(kept[5].at).await.unwrap();
    assert!(store.verify_audit().await.unwrap().ok);
    let v = store.verify_audit_anchor(&old).await.unwrap();
    assert!(!v.ok);
    assert!(v.problem.unwrap().contains("purged"), "purged anchor");
    assert!(store.verify_audit_anchor(&at_purge).await.unwrap().ok);
    assert!(store.verify_audit_anchor(&current).await.unwrap().ok);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_catch_a_rewritten_chain_sqlite() {
    on_sqlite(anchors_catch_a_rewritten_chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_catch_a_rewritten_chain_postgres() {
    on_postgres(anchors_catch_a_rewritten_chain).await;
}

#[test]
fn anchors_parse_strictly_and_say_why_not() {
    let hash = "0123456789abcdef".repeat(4);
    for good in [
        format!("42:{hash}"),
        format!(" #42 {hash} "),
        format!("42:{}", hash.to_uppercase()),
    ] {
        let a: ChainHead = good.parse().unwrap();
        assert_eq!((a.seq, a.hash.as_str()), (42, hash.as_str()), "{good}");
    }
    for (bad, why) in [
        (hash.clone(), "no `:`"),
        (format!("-1:{hash}"), "sequence number"),
        (format!("x:{hash}"), "sequence number"),
        ("42:abc".to_owned(), "64 hexadecimal"),
        (format!("42:{}", "g".repeat(64)), "64 hexadecimal"),
        (format!("42:{hash}00"), "64 hexadecimal"),
    ] {
        let e = bad.parse::<ChainHead>().unwrap_err();
        assert!(e.contains(why) && e.contains("SEQ:HASH"), "{bad}: {e}");
    }
}

// ------------------------------------------------------------------ sealed keys

fn connection(name: &str, sealed: &str) -> NewConnection {
    NewConnection {
        name: name.to_owned(),
        base_url: format!("https://{name}.example.test/v1"),
        sealed_key: sealed.to_owned(),
        key_hint: "…abcd".to_owned(),
        rate_limit: 4.0,
    }
}

/// Several processes opening at once migrate the keys exactly once, all or nothing.
async fn key_migration_runs_once(url: String, _raw: Raw) {
    let store = Store::open(&url).await.unwrap();
    for name in ["a", "b", "c"] {
        store
            .insert_connection(&connection(name, &format!("v1:{name}")))
            .await
            .unwrap();
    }
    store
        .insert_connection(&connection("d", "v2:d"))
        .await
        .unwrap();

    // A failure changes nothing and leaves the migration to the next start.
    let failed = store
        .migrate_connection_keys("keys_bound", |c| {
            if c.name == "c" {
                Err("does not open".into())
            } else {
                Ok(Some(format!("v2:{}", c.name)))
            }
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(store.get_meta("keys_bound").await.unwrap(), None);
    assert_eq!(
        store.get_connection("a").await.unwrap().unwrap().sealed_key,
        "v1:a"
    );

    let mut stores = vec![store];
    for _ in 0..3 {
        stores.push(Store::open(&url).await.unwrap());
    }
    let mut runs = tokio::task::JoinSet::new();
    for s in &stores {
        let s = s.clone();
        runs.spawn(async move {
            s.migrate_connection_keys("keys_bound", |c| {
                Ok(c.sealed_key
                    .strip_prefix("v1:")
                    .map(|rest| format!("v2:{rest}")))
            })
            .await
            .unwrap()
        });
    }
    let changed: Vec<usize> = runs.join_all().await;
    assert_eq!(
        changed.iter().sum::<usize>(),
        3,
        "one process did the work: {changed:?}"
    );
    assert!(stores[0].get_meta("keys_bound").await.unwrap().is_some());
    for c in stores[0].list_connections().await.unwrap() {
        assert_eq!(c.sealed_key, format!("v2:{}", c.name));
    }
    // Done means done: a later start changes nothing, even rows that look old.
    stores[0]
        .update_connection_key("a", "v1:a", "…abcd")
        .await
        .unwrap();
    let again = stores[0]
        .migrate_connection_keys("keys_bound", |_| Ok(Some("changed".into())))
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(
        stores[0]
            .get_connection("a")
            .await
            .unwrap()
            .unwrap()
            .sealed_key,
        "v1:a"
    );
    for s in stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_migration_runs_once_sqlite() {
    on_sqlite(key_migration_runs_once).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_migration_runs_once_postgres() {
    on_postgres(key_migration_runs_once).await;
}
