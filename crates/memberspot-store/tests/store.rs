//! Integration tests of memberspot-store on both backends.
//!
//! SQLite runs in a temporary directory. PostgreSQL runs against a local server
//! (`postgres://postgres@127.0.0.1:5432/postgres`, or `MEMBERSPOT_TEST_PG`): every test
//! creates its own database `t_<random>` and drops it afterwards, so tests run in parallel
//! and repeatedly. An unreachable PostgreSQL fails the PostgreSQL tests; it never skips them.

#![allow(clippy::unwrap_used)] // tests may panic

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memberspot_store::{
    AuditFilter, AuditOutcome, AuditRecord, Backend, ConnectionUpdate, NewAuditRecord,
    NewConnection, NewPersona, Store, StoreError, Surface, Verification, ZERO_HASH, audit_hash,
};
use serde_json::json;
use sqlx::{Connection as _, Executor as _};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// ------------------------------------------------------------------ harness

/// How a test reaches the database behind the store's back (for tampering).
#[derive(Clone)]
enum Raw {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Raw {
    async fn exec(&self, sql: &str) -> u64 {
        match self {
            Raw::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                let n = c.execute(sql).await.unwrap().rows_affected();
                c.close().await.unwrap();
                n
            }
            Raw::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let n = c.execute(sql).await.unwrap().rows_affected();
                c.close().await.unwrap();
                n
            }
        }
    }
}

fn admin_pg_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// `admin` with its database name replaced by `db`.
fn pg_url_for(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

async fn admin_connection(admin: &str) -> sqlx::PgConnection {
    match sqlx::PgConnection::connect(admin).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {admin}: {e}\n\
             The PostgreSQL tests need a local server with trust auth: start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
             or point MEMBERSPOT_TEST_PG at another server."
        ),
    }
}

/// Runs `test` against a fresh PostgreSQL database (its URL is the argument) and drops the
/// database afterwards, also when the test panics.
async fn with_pg_db<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = admin_pg_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin_connection(&admin).await;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let outcome = tokio::spawn(test(pg_url_for(&admin, &name))).await;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A fresh SQLite file in a temporary directory; the directory lives as long as the guard.
fn sqlite_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    (dir, path)
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

// ------------------------------------------------------------------ fixtures

fn new_connection(name: &str, sealed: &str) -> NewConnection {
    NewConnection {
        name: name.to_owned(),
        base_url: format!("https://{name}.example.test/api"),
        sealed_key: sealed.to_owned(),
        key_hint: "…abcd".to_owned(),
        rate_limit: 5.0,
    }
}

fn new_persona(name: &str, connection: &str, token_hash: &str) -> NewPersona {
    NewPersona {
        name: name.to_owned(),
        description: format!("{name} does things"),
        connection: connection.to_owned(),
        scopes: vec!["users:read".to_owned(), "courses:read".to_owned()],
        offer_ids: None,
        calls_per_minute: None,
        token_hash: token_hash.to_owned(),
        token_prefix: format!("msp_{}", &name[..name.len().min(4)]),
    }
}

fn record(i: i64, persona: &str, tool: &str, outcome: AuditOutcome) -> NewAuditRecord {
    NewAuditRecord {
        at: i * 1000,
        request_id: format!("req-{i}"),
        surface: if i % 2 == 0 {
            Surface::McpHttp
        } else {
            Surface::Rest
        },
        connection: Some("acme".to_owned()),
        persona: Some(persona.to_owned()),
        end_user: (i % 3 == 0).then(|| "user@example.test".to_owned()),
        prompt: Some(format!("please do thing {i} — ünïcödé \"quoted\"")),
        tool: tool.to_owned(),
        arguments: json!({"z": i, "a": {"nested": [1, 2.5, null, "x"]}, "email": "a@b.test"}),
        outcome,
        response: (outcome == AuditOutcome::Ok).then(|| json!({"items": [{"id": i}], "total": 1})),
        error: (outcome != AuditOutcome::Ok).then(|| "upstream said no".to_owned()),
        upstream_status: Some(if outcome == AuditOutcome::Ok {
            200
        } else {
            403
        }),
        latency_ms: 10 + i as u64,
        oauth_client: None,
    }
}

fn assert_chained(records: &[AuditRecord]) {
    for pair in records.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "seq ascending");
        assert_eq!(pair[1].prev_hash, pair[0].hash, "record {}", pair[1].seq);
    }
    for r in records {
        assert_eq!(audit_hash(&r.prev_hash, r), r.hash, "record {}", r.seq);
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

// ------------------------------------------------------------------ the story

/// Everything a hub does with its store, in order, on one backend.
async fn story(url: String, raw: Raw, backend: Backend) {
    // Migrations are idempotent: open, close, open again.
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), backend);
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), backend);
    if let Raw::Sqlite(path) = &raw {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        c.close().await.unwrap();
    }

    // ---- meta
    assert_eq!(store.get_meta("master_key_check").await.unwrap(), None);
    store.set_meta("master_key_check", "v1").await.unwrap();
    store.set_meta("master_key_check", "v2").await.unwrap();
    assert_eq!(
        store.get_meta("master_key_check").await.unwrap().as_deref(),
        Some("v2")
    );
    assert!(matches!(
        store.set_meta("store.audit_head", "1 x").await,
        Err(StoreError::Invalid(_))
    ));

    // ---- connections
    let acme = store
        .insert_connection(&new_connection("acme", "SEALED-acme-1"))
        .await
        .unwrap();
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.created_at, acme.updated_at);
    let beta = store
        .insert_connection(&new_connection("beta", "SEALED-beta-1"))
        .await
        .unwrap();
    match store
        .insert_connection(&new_connection("acme", "SEALED-other"))
        .await
    {
        Err(StoreError::Conflict(m)) => {
            assert!(m.contains("acme"), "{m}");
            assert!(!m.contains("SEALED"), "{m}");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let mut nan = new_connection("gamma", "SEALED-g");
    nan.rate_limit = f64::NAN;
    assert!(matches!(
        store.insert_connection(&nan).await,
        Err(StoreError::Invalid(_))
    ));
    let names: Vec<String> = store
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    assert_eq!(
        store.get_connection("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.get_connection("nope").await.unwrap(), None);
    let dbg = format!("{acme:?}");
    assert!(!dbg.contains("SEALED"), "Debug leaks the sealed key: {dbg}");

    store
        .update_connection_key("acme", "SEALED-acme-2", "…wxyz")
        .await
        .unwrap();
    let acme2 = store.get_connection("acme").await.unwrap().unwrap();
    assert_eq!(acme2.sealed_key, "SEALED-acme-2");
    assert_eq!(acme2.key_hint, "…wxyz");
    assert!(acme2.updated_at >= acme.updated_at);
    assert!(matches!(
        store.update_connection_key("nope", "x", "y").await,
        Err(StoreError::NotFound(m)) if m.contains("nope")
    ));

    // A new base URL or name comes with the key re-sealed for it, in the same statement.
    let c = store
        .update_connection(
            "acme",
            &ConnectionUpdate {
                base_url: Some("https://new.example.test".into()),
                ..Default::default()
            },
            |before, after| Ok(format!("{}@{}", before.sealed_key, after.base_url)),
        )
        .await
        .unwrap();
    assert_eq!(c.base_url, "https://new.example.test");
    assert_eq!(c.rate_limit, 5.0);
    assert_eq!(c.sealed_key, "SEALED-acme-2@https://new.example.test");
    assert_eq!(
        store.get_connection("acme").await.unwrap().as_ref(),
        Some(&c)
    );
    // A rate limit alone leaves the key alone.
    let c = store
        .update_connection(
            "acme",
            &ConnectionUpdate {
                rate_limit: Some(2.5),
                ..Default::default()
            },
            |_, _| panic!("nothing to re-seal"),
        )
        .await
        .unwrap();
    assert_eq!(c.base_url, "https://new.example.test");
    assert_eq!(c.rate_limit, 2.5);
    assert_eq!(c.sealed_key, "SEALED-acme-2@https://new.example.test");
    // A failed re-seal changes nothing.
    let failed = store
        .update_connection(
            "acme",
            &ConnectionUpdate {
                name: Some("acme-2".into()),
                base_url: Some("https://elsewhere.example.test".into()),
                rate_limit: Some(1.0),
            },
            |_, _| Err("does not open".into()),
        )
        .await;
    assert!(
        matches!(&failed, Err(StoreError::Reseal { connection, message }) if connection == "acme" && message == "does not open"),
        "{failed:?}"
    );
    assert_eq!(
        store.get_connection("acme").await.unwrap().as_ref(),
        Some(&c)
    );
    let missing = store
        .update_connection(
            "nope",
            &ConnectionUpdate {
                rate_limit: Some(1.0),
                ..Default::default()
            },
            |_, _| Ok(String::new()),
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "updating a missing connection: {missing:?}"
    );
    assert!(matches!(
        store
            .update_connection(
                "acme",
                &ConnectionUpdate {
                    rate_limit: Some(f64::INFINITY),
                    ..Default::default()
                },
                |_, _| Ok(String::new()),
            )
            .await,
        Err(StoreError::Invalid(_))
    ));

    // ---- personas
    let p1 = store
        .insert_persona(&new_persona("support-bot", "acme", "hash-1"))
        .await
        .unwrap();
    assert_eq!(p1.connection, "acme");
    assert_eq!(p1.revoked_at, None);
    let mut np2 = new_persona("sales-bot", "acme", "hash-2");
    np2.offer_ids = Some(vec!["offer-1".into(), "offer-2".into()]);
    np2.calls_per_minute = Some(30);
    let p2 = store.insert_persona(&np2).await.unwrap();
    assert_eq!(p2.offer_ids.as_deref().map(<[String]>::len), Some(2));
    let p3 = store
        .insert_persona(&new_persona("beta-bot", "beta", "hash-3"))
        .await
        .unwrap();
    match store
        .insert_persona(&new_persona("ghost", "no-such-school", "hash-4"))
        .await
    {
        Err(StoreError::NotFound(m)) => assert!(m.contains("no-such-school"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store
            .insert_persona(&new_persona("support-bot", "beta", "hash-5"))
            .await,
        Err(StoreError::Conflict(m)) if m.contains("support-bot")
    ));
    match store
        .insert_persona(&new_persona("copycat", "beta", "hash-1"))
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(!m.contains("hash-1"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let dbg = format!("{p1:?}");
    assert!(!dbg.contains("hash-1"), "Debug leaks the token hash: {dbg}");

    let listed = store.list_personas().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["beta-bot", "sales-bot", "support-bot"]);
    assert_eq!(
        store.get_persona("sales-bot").await.unwrap(),
        Some(p2.clone())
    );
    assert_eq!(store.get_persona("nope").await.unwrap(), None);
    assert_eq!(
        store.get_persona_by_token_hash("hash-3").await.unwrap(),
        Some(p3.clone())
    );
    assert_eq!(
        store.get_persona_by_token_hash("hash-x").await.unwrap(),
        None
    );

    let updated = store
        .update_persona_scopes("sales-bot", &["offers:read".to_owned()], None, Some(60))
        .await
        .unwrap();
    assert_eq!(updated.scopes, ["offers:read"]);
    assert_eq!(updated.offer_ids, None);
    assert_eq!(updated.calls_per_minute, Some(60));
    assert_eq!(store.get_persona("sales-bot").await.unwrap(), Some(updated));
    let ids = ["offer-9".to_owned()];
    let updated = store
        .update_persona_scopes("sales-bot", &[], Some(&ids), None)
        .await
        .unwrap();
    assert!(updated.scopes.is_empty());
    assert_eq!(updated.offer_ids.as_deref(), Some(&ids[..]));
    assert_eq!(updated.calls_per_minute, None);
    assert!(matches!(
        store.update_persona_scopes("nope", &[], None, None).await,
        Err(StoreError::NotFound(_))
    ));

    // Rotation: the old token stops resolving, the new one resolves.
    store
        .set_persona_token("support-bot", "hash-1b", "msp_new")
        .await
        .unwrap();
    assert_eq!(
        store.get_persona_by_token_hash("hash-1").await.unwrap(),
        None
    );
    let rotated = store
        .get_persona_by_token_hash("hash-1b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.name, "support-bot");
    assert_eq!(rotated.token_prefix, "msp_new");
    assert!(matches!(
        store.set_persona_token("support-bot", "hash-3", "x").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_persona_token("nope", "hash-9", "x").await,
        Err(StoreError::NotFound(_))
    ));

    // ---- delete refused while an active persona uses the connection
    match store.delete_connection("acme").await {
        Err(StoreError::Conflict(m)) => {
            assert!(m.contains("sales-bot") && m.contains("support-bot"), "{m}")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(store.revoke_persona("support-bot").await.unwrap());
    assert!(!store.revoke_persona("support-bot").await.unwrap());
    assert!(matches!(
        store.revoke_persona("nope").await,
        Err(StoreError::NotFound(_))
    ));
    let revoked = store
        .get_persona_by_token_hash("hash-1b")
        .await
        .unwrap()
        .unwrap();
    assert!(
        revoked.revoked_at.is_some(),
        "revoked personas are still found"
    );
    assert!(matches!(
        store.set_persona_token("support-bot", "hash-1c", "x").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_connection("acme").await,
        Err(StoreError::Conflict(m)) if m.contains("sales-bot") && !m.contains("support-bot")
    ));
    assert!(store.revoke_persona("sales-bot").await.unwrap());
    assert!(store.delete_connection("acme").await.unwrap());
    assert!(!store.delete_connection("acme").await.unwrap());
    assert_eq!(store.get_connection("acme").await.unwrap(), None);
    // The revoked personas went with their connection.
    assert_eq!(store.get_persona("support-bot").await.unwrap(), None);
    let names: Vec<String> = store
        .list_personas()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["beta-bot"]);

    // ---- reseal_all: one transaction, all or nothing
    store
        .insert_connection(&new_connection("delta", "SEALED-delta-1"))
        .await
        .unwrap();
    let n = store
        .reseal_all_connections(|c| Ok(format!("{}+rotated", c.sealed_key)))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let keys: Vec<String> = store
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.sealed_key)
        .collect();
    assert_eq!(keys, ["SEALED-beta-1+rotated", "SEALED-delta-1+rotated"]);
    let failed = store
        .reseal_all_connections(|c| {
            if c.sealed_key.starts_with("SEALED-delta") {
                Err("wrong master key".to_owned())
            } else {
                Ok("CHANGED".to_owned())
            }
        })
        .await;
    match failed {
        Err(StoreError::Reseal {
            connection,
            message,
        }) => {
            assert_eq!(connection, "delta");
            assert_eq!(message, "wrong master key");
        }
        other => panic!("expected Reseal error, got {other:?}"),
    }
    assert_eq!(
        store
            .get_connection("beta")
            .await
            .unwrap()
            .unwrap()
            .sealed_key,
        "SEALED-beta-1+rotated",
        "a failed reseal changes nothing"
    );
    assert_eq!(beta.name, "beta");
    // The variant for master-key rotation also moves the check value, atomically.
    let n = store
        .reseal_all_connections_and_set_meta(
            |c| Ok(c.sealed_key.replace("+rotated", "+v3")),
            "master_key_check",
            "v3",
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        store.get_meta("master_key_check").await.unwrap().as_deref(),
        Some("v3")
    );
    assert_eq!(
        store
            .get_connection("beta")
            .await
            .unwrap()
            .unwrap()
            .sealed_key,
        "SEALED-beta-1+v3"
    );
    assert!(
        store
            .reseal_all_connections_and_set_meta(|_| Err("no".into()), "master_key_check", "v4")
            .await
            .is_err()
    );
    assert_eq!(
        store.get_meta("master_key_check").await.unwrap().as_deref(),
        Some("v3"),
        "a failed reseal leaves the check value alone"
    );

    // ---- audit: append, query, verify
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.records == 0, "{v:?}");
    let mut appended = Vec::new();
    for i in 1..=10 {
        let persona = if i <= 6 { "support-bot" } else { "sales-bot" };
        let tool = if i % 2 == 0 {
            "list_users"
        } else {
            "get_course"
        };
        let outcome = if i == 4 || i == 9 {
            AuditOutcome::ToolError
        } else {
            AuditOutcome::Ok
        };
        let rec = store
            .append_audit(&record(i, persona, tool, outcome))
            .await
            .unwrap();
        assert_eq!(rec.at, i * 1000);
        assert_eq!(uuid::Uuid::parse_str(&rec.id).unwrap().get_version_num(), 7);
        appended.push(rec);
    }
    assert_eq!(appended[0].prev_hash, ZERO_HASH);
    assert_chained(&appended);
    let all = all_audit(&store).await;
    assert_eq!(all, appended, "read back exactly what was appended");
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 10);

    let q = |f: AuditFilter| {
        let store = store.clone();
        async move { store.query_audit(&f).await.unwrap() }
    };
    let seqs = |rs: Vec<AuditRecord>| rs.into_iter().map(|r| r.at / 1000).collect::<Vec<_>>();
    let by_persona = q(AuditFilter {
        persona: Some("sales-bot".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(by_persona), [7, 8, 9, 10]);
    let by_tool = q(AuditFilter {
        tool: Some("list_users".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(by_tool), [2, 4, 6, 8, 10]);
    let errors = q(AuditFilter {
        outcome: Some("tool_error".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(errors), [4, 9]);
    let mcp_sales = q(AuditFilter {
        surface: Some("mcp-http".into()),
        persona: Some("sales-bot".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(mcp_sales), [8, 10]);
    let window = q(AuditFilter {
        since_ms: Some(3000),
        until_ms: Some(6000),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(window), [3, 4, 5], "since inclusive, until exclusive");
    let page = q(AuditFilter {
        after_seq: Some(appended[4].seq),
        limit: Some(3),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(page), [6, 7, 8]);
    let newest = q(AuditFilter {
        before_seq: None,
        newest_first: true,
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(newest), [10, 9]);
    let none = q(AuditFilter {
        persona: Some("nobody".into()),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());

    // ---- purge keeps the rest verifiable
    assert_eq!(store.purge_audit_before(0).await.unwrap(), 0);
    assert_eq!(store.purge_audit_before(3500).await.unwrap(), 3);
    let kept = all_audit(&store).await;
    assert_eq!(kept.len(), 7);
    assert_eq!(kept[0].prev_hash, appended[2].hash);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 7);
    let more = store
        .append_audit(&record(11, "beta-bot", "get_course", AuditOutcome::Ok))
        .await
        .unwrap();
    assert_eq!(more.prev_hash, appended[9].hash);
    assert!(store.verify_audit().await.unwrap().ok);
    // seq values after a purge are never reused.
    assert!(more.seq > appended[9].seq);

    // ---- tamper: edit one row's arguments
    let victim = appended[4].seq; // at = 5000
    let original_args = memberspot_store::canonical_json(&appended[4].arguments);
    let n = raw
        .exec(&format!(
            r#"UPDATE audit_log SET arguments = '{{"z":5,"email":"evil@b.test"}}' WHERE seq = {victim}"#
        ))
        .await;
    assert_eq!(n, 1);
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(victim));
    let problem = v.problem.unwrap();
    assert!(
        problem.contains(&format!("record {victim}")) && problem.contains("edited"),
        "{problem}"
    );
    assert_eq!(v.records, 8, "every record is counted");
    raw.exec(&format!(
        "UPDATE audit_log SET arguments = '{original_args}' WHERE seq = {victim}"
    ))
    .await;
    assert!(store.verify_audit().await.unwrap().ok, "restored");

    // ---- tamper: delete the newest row (only the recorded chain head reveals it)
    raw.exec(&format!("DELETE FROM audit_log WHERE seq = {}", more.seq))
        .await;
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(more.seq));
    assert!(v.problem.unwrap().contains("deleted"));
    // The next append still chains onto the deleted record, so the gap stays visible.
    let after_gap = store
        .append_audit(&record(12, "beta-bot", "get_course", AuditOutcome::Ok))
        .await
        .unwrap();
    assert_eq!(after_gap.prev_hash, more.hash);
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.first_bad_seq, Some(after_gap.seq));
    let problem = v.problem.unwrap();
    assert!(
        problem.contains(&format!(
            "record {}: previous hash does not match record {}",
            after_gap.seq, appended[9].seq
        )) && problem.contains("deleted"),
        "{problem}"
    );

    // ---- tamper: delete a middle row -> the first break is reported
    let gone = appended[6].seq; // at = 7000
    raw.exec(&format!("DELETE FROM audit_log WHERE seq = {gone}"))
        .await;
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(appended[7].seq));
    let problem = v.problem.unwrap();
    assert_eq!(
        problem,
        format!(
            "record {}: previous hash does not match record {} (a record was deleted)",
            appended[7].seq, appended[5].seq
        )
    );

    // ---- purging everything leaves an empty, valid chain that continues from the anchor
    let remaining = all_audit(&store).await.len() as u64;
    assert_eq!(store.purge_audit_before(i64::MAX).await.unwrap(), remaining);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.records == 0, "{v:?}");
    let fresh = store
        .append_audit(&record(13, "beta-bot", "get_course", AuditOutcome::Ok))
        .await
        .unwrap();
    assert_eq!(fresh.prev_hash, after_gap.hash);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.records == 1, "{v:?}");

    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_sqlite() {
    let (_dir, path) = sqlite_db();
    story(
        sqlite_url(&path),
        Raw::Sqlite(path.clone()),
        Backend::Sqlite,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_postgres() {
    with_pg_db(|url| async move {
        story(url.clone(), Raw::Postgres(url), Backend::Postgres).await;
    })
    .await;
}

// ------------------------------------------------------------------ concurrency

/// `stores.len() * tasks_per_store` tasks append 50 records each, all at once.
async fn concurrent_appends(stores: Vec<Store>, tasks_per_store: usize) {
    let mut handles = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..tasks_per_store {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..50 {
                    let mut r = record(i, &format!("bot-{s}-{t}"), "list_users", AuditOutcome::Ok);
                    r.request_id = format!("req-{s}-{t}-{i}");
                    store.append_audit(&r).await.unwrap();
                }
            }));
        }
    }
    let all = async {
        for h in handles {
            h.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("concurrent appends did not finish in time");

    let expected = (stores.len() * tasks_per_store * 50) as u64;
    let v = stores[0].verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, expected);
    let records = all_audit(&stores[0]).await;
    assert_eq!(records.len() as u64, expected);
    assert_eq!(records[0].prev_hash, ZERO_HASH);
    assert_chained(&records);
    for s in &stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_sqlite() {
    let (_dir, path) = sqlite_db();
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    concurrent_appends(vec![store], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_postgres() {
    with_pg_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        concurrent_appends(vec![store], 4).await;
    })
    .await;
}

/// Two independent stores (separate pools, as two hub processes would have) on one SQLite
/// file: only the file lock serializes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_one_sqlite_file() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let (a, b) = tokio::join!(Store::open(&url), Store::open(path.to_str().unwrap()));
    let (a, b) = (a.unwrap(), b.unwrap());
    concurrent_appends(vec![a, b], 2).await;
}

/// Two independent stores on one PostgreSQL database, opened at the same moment (the
/// migrations must not collide) and appending concurrently: the chain must not fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_one_postgres_database() {
    with_pg_db(|url| async move {
        let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        concurrent_appends(vec![a, b], 2).await;
    })
    .await;
}

// ------------------------------------------------------------------ odds and ends

/// The store keeps what it is given: a plaintext key the caller sealed never reaches the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_holds_no_plaintext_key() {
    let (dir, path) = sqlite_db();
    let plaintext = "msk_live_Plaintext_Never_Given_7f3a9c";
    // A stand-in for the caller's sealing: hex of the bytes, reversed.
    let sealed: String = format!(
        "v1:{}",
        hex::encode(plaintext.bytes().rev().collect::<Vec<_>>())
    );
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    store
        .insert_connection(&new_connection("acme", &sealed))
        .await
        .unwrap();
    store
        .insert_persona(&new_persona("bot", "acme", "hash-bot"))
        .await
        .unwrap();
    store
        .append_audit(&record(1, "bot", "list_users", AuditOutcome::Ok))
        .await
        .unwrap();
    store.close().await;

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        // SQLite removes its -wal/-shm files on close: skip any that vanished meanwhile.
        match std::fs::read(entry.unwrap().path()) {
            Ok(b) => bytes.extend(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("reading the database directory: {e}"),
        }
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(sealed.as_bytes()),
        "positive control: the sealed key is there"
    );
    assert!(
        !contains(plaintext.as_bytes()),
        "plaintext key found in the SQLite file"
    );
}

#[tokio::test]
async fn sqlite_bare_path_creates_file_and_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested dir").join("hub #1.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.set_meta("k", "v").await.unwrap();
    store.close().await;
    assert!(path.is_file());
    // Reopen through the URL form: same file, same data.
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
    store.close().await;
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = Store::open("postgres://someone:hunter2@127.0.0.1:1/hub")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open(_)), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
}

/// Regression: optional values that are sometimes absent and sometimes present
/// must work on every pooled PostgreSQL connection (the Any driver types a
/// bound NULL differently from a value; cached statements kept that type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_and_present_optionals_alternate_on_postgres() {
    with_pg_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        store
            .insert_connection(&new_connection("alt", "v1:sealed"))
            .await
            .unwrap();
        store
            .insert_persona(&new_persona("p", "alt", "hash-alt"))
            .await
            .unwrap();
        for i in 0..40 {
            let change = if i % 2 == 0 {
                ConnectionUpdate {
                    base_url: Some(format!("https://x{i}.example.test/v1")),
                    ..Default::default()
                }
            } else {
                ConnectionUpdate {
                    rate_limit: Some(3.0),
                    ..Default::default()
                }
            };
            store
                .update_connection("alt", &change, |_, _| Ok("v1:sealed".into()))
                .await
                .unwrap();
            let limit = (i % 3 != 0).then_some(10);
            let offers = (i % 2 == 0).then(|| vec!["o1".to_string()]);
            store
                .update_persona_scopes("p", &["read".into()], offers.as_deref(), limit)
                .await
                .unwrap();
            let mut r = record(i, "p", "list_users", AuditOutcome::Ok);
            if i % 2 == 0 {
                r.upstream_status = None;
                r.prompt = None;
            }
            store.append_audit(&r).await.unwrap();
        }
        assert!(store.verify_audit().await.unwrap().ok);
        store.close().await;
    })
    .await;
}

// ------------------------------------------------------------------ the event queue

fn delivery(i: usize) -> memberspot_store::NewDelivery {
    memberspot_store::NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        source: "src".into(),
        provider: "stripe".into(),
        received_at: i as i64,
        headers: vec![("Stripe-Signature".into(), "t=1,v1=ab".into())],
        body: Some(vec![0xff, b'{', b'}']),
        body_bytes: 3,
        verification: Verification::Verified,
        error: None,
    }
}

fn queued(i: usize) -> memberspot_store::NewEvent {
    memberspot_store::NewEvent {
        dedupe_key: format!("src:evt-{i}"),
        source: "src".into(),
        provider: "stripe".into(),
        kind: "purchase".into(),
        name: "checkout.session.completed".into(),
        order_id: Some(format!("ord-{i}")),
        product_id: Some("p".into()),
        email: Some(format!("b{i}@example.de")),
        test: false,
        amount_minor: Some(4700),
        currency: Some("EUR".into()),
        data: json!({"i": i}),
        status: memberspot_store::EventStatus::Pending,
        connection: Some("school".into()),
        verified: true,
    }
}

/// Several workers on several store handles claim concurrently: every event is claimed by
/// exactly one of them, and redeliveries never queue twice.
async fn queue_story(stores: Vec<Store>) {
    use memberspot_store::{EventFinish, EventStatus, Inserted};
    const N: usize = 300;
    let first = &stores[0];
    for i in 0..N {
        let got = first
            .events()
            .record_delivery(&delivery(i), &[queued(i)])
            .await
            .unwrap();
        assert!(matches!(got[0], Inserted::New(_)));
    }
    // A redelivery is counted, not queued.
    let again = first
        .events()
        .record_delivery(&delivery(0), &[queued(0)])
        .await
        .unwrap();
    let Inserted::Duplicate(id0) = &again[0] else {
        panic!("{again:?}")
    };
    let e0 = first.events().get_event(id0).await.unwrap().unwrap();
    assert_eq!(e0.redeliveries, 1);
    // Non-UTF-8 bodies come back byte for byte.
    let d = first
        .events()
        .get_delivery(e0.delivery_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body.as_deref(), Some(&[0xff, b'{', b'}'][..]));
    assert_eq!(d.headers["stripe-signature"], "t=1,v1=ab");

    let lease = chrono::Utc::now().timestamp_millis() + 60_000;
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().cycle().take(6).enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{n}");
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .events()
                    .claim_events(&worker, 5, lease)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    assert!(store.events().start_attempt(&e.id, &worker).await.unwrap());
                    let finish = EventFinish {
                        status: EventStatus::Done,
                        error: None,
                        next_attempt_at: None,
                        detail: "ok".into(),
                        refusal: None,
                    };
                    assert!(
                        store
                            .events()
                            .finish_event(&e.id, &worker, &finish)
                            .await
                            .unwrap()
                    );
                    mine.push(e.id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), N, "every event claimed once");
    assert_eq!(unique.len(), N);
    let counts = first.events().event_status_counts().await.unwrap();
    assert_eq!(counts.get("done"), Some(&(N as i64)));

    // An expired lease is taken over; the old holder can no longer finish.
    let late = first
        .events()
        .record_delivery(&delivery(N), &[queued(N)])
        .await
        .unwrap();
    let id = late[0].id().to_owned();
    let past = chrono::Utc::now().timestamp_millis() - 1;
    assert_eq!(
        first
            .events()
            .claim_events("dead-worker", 1, past)
            .await
            .unwrap()
            .len(),
        1
    );
    let taken = first
        .events()
        .claim_events("new-worker", 1, lease)
        .await
        .unwrap();
    assert_eq!(taken[0].id, id);
    let finish = EventFinish {
        status: EventStatus::Done,
        error: None,
        next_attempt_at: None,
        detail: "x".into(),
        refusal: None,
    };
    assert!(
        !first
            .events()
            .finish_event(&id, "dead-worker", &finish)
            .await
            .unwrap()
    );
    assert!(
        first
            .events()
            .finish_event(&id, "new-worker", &finish)
            .await
            .unwrap()
    );
    assert_eq!(first.events().event_log(&id).await.unwrap().len(), 1);
    // Replay queues it again.
    let replayed = first.events().replay_event(&id, "test").await.unwrap();
    assert_eq!(replayed.status, EventStatus::Pending);
    assert_eq!(replayed.attempts, 0);

    // The order lock is exclusive until it expires.
    assert!(
        first
            .events()
            .lock_order("src", "o1", "a", lease)
            .await
            .unwrap()
    );
    assert!(
        !stores[stores.len() - 1]
            .events()
            .lock_order("src", "o1", "b", lease)
            .await
            .unwrap()
    );
    first.events().unlock_order("src", "o1", "a").await.unwrap();
    assert!(
        first
            .events()
            .lock_order("src", "o1", "b", lease)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_two_stores_one_sqlite_file() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    queue_story(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_two_stores_one_postgres_database() {
    with_pg_db(|url| async move {
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        queue_story(vec![a, b]).await;
    })
    .await;
}

// ------------------------------------------------------------------ hot path

/// Batches of every shape (one statement, several chunks in a transaction) from one store
/// while a second store appends single records: the head moves under the batches, they
/// re-read it and retry, and the chain never forks.
async fn batches_race_a_second_writer(a: Store, b: Store) {
    let single = tokio::spawn(async move {
        for i in 0..120 {
            let mut r = record(i, "single", "list_offers", AuditOutcome::Ok);
            r.request_id = format!("single-{i}");
            b.append_audit(&r).await.unwrap();
        }
        b
    });
    let mut appended = 0;
    for (round, size) in [37usize, 64, 3, 100, 1, 16, 5].into_iter().enumerate() {
        let batch: Vec<NewAuditRecord> = (0..size)
            .map(|i| {
                let mut r = record(i as i64, "batch", "list_users", AuditOutcome::Ok);
                r.request_id = format!("batch-{round}-{i}");
                r
            })
            .collect();
        let stored = a.append_audit_batch(&batch).await.unwrap();
        assert_eq!(stored.len(), size);
        assert_chained(&stored);
        for (r, s) in batch.iter().zip(&stored) {
            assert_eq!(r.request_id, s.request_id, "returned in the order given");
        }
        appended += size;
    }
    let b = single.await.unwrap();
    let v = a.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, (appended + 120) as u64);
    let records = all_audit(&a).await;
    assert_chained(&records);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_race_a_second_writer_sqlite() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    batches_race_a_second_writer(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_race_a_second_writer_postgres() {
    with_pg_db(|url| async move {
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        batches_race_a_second_writer(a, b).await;
    })
    .await;
}

/// The database itself refuses a record that does not link to the chain head, whoever
/// writes it; the store's own appends go on.
async fn database_refuses_unlinked_records(url: String, raw: Raw) {
    let store = Store::open(&url).await.unwrap();
    let first = store
        .append_audit(&record(1, "bot", "list_users", AuditOutcome::Ok))
        .await
        .unwrap();
    let forged = |prev: &str| {
        format!(
            "INSERT INTO audit_log (id, at, request_id, surface, tool, arguments, outcome, \
             latency_ms, prev_hash, hash) VALUES ('forged', 1, 'r', 'cli', 't', '{{}}', 'ok', 1, \
             '{prev}', 'f00d')"
        )
    };
    for prev in [ZERO_HASH, "nonsense"] {
        let refused = match &raw {
            Raw::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                c.execute(forged(prev).as_str()).await.unwrap_err()
            }
            Raw::Postgres(u) => {
                let mut c = sqlx::PgConnection::connect(u).await.unwrap();
                c.execute(forged(prev).as_str()).await.unwrap_err()
            }
        };
        assert!(
            refused.to_string().contains("audit chain head moved"),
            "{refused}"
        );
    }
    let second = store
        .append_audit(&record(2, "bot", "list_users", AuditOutcome::Ok))
        .await
        .unwrap();
    assert_eq!(second.prev_hash, first.hash);
    assert!(store.verify_audit().await.unwrap().ok);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refuses_unlinked_records_sqlite() {
    let (_dir, path) = sqlite_db();
    database_refuses_unlinked_records(sqlite_url(&path), Raw::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refuses_unlinked_records_postgres() {
    with_pg_db(|url| async move {
        database_refuses_unlinked_records(url.clone(), Raw::Postgres(url)).await;
    })
    .await;
}

/// Every change to a persona or connection, from any writer, moves the directory version
/// another store sees; versioned lookups report the version they read at.
async fn directory_version_moves(url: String, raw: Raw) {
    let reader = Store::open(&url).await.unwrap();
    let writer = Store::open(&url).await.unwrap();
    let mut last = reader.directory_version().await.unwrap();
    fn moved(last: &mut i64, now: i64, what: &str) {
        assert!(now > *last, "{what}: version {now} after {last}");
        *last = now;
    }
    writer
        .insert_connection(&new_connection("acme", "sealed"))
        .await
        .unwrap();
    moved(
        &mut last,
        reader.directory_version().await.unwrap(),
        "connection added",
    );
    writer
        .insert_persona(&new_persona("helper", "acme", "hash-1"))
        .await
        .unwrap();
    let v = reader.directory_version().await.unwrap();
    moved(&mut last, v, "persona added");
    let found = reader
        .persona_by_token_hash_versioned("hash-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.value.name.as_str(), found.version), ("helper", v));
    assert!(
        reader
            .persona_by_token_hash_versioned("hash-2")
            .await
            .unwrap()
            .is_none()
    );
    writer.revoke_persona("helper").await.unwrap();
    moved(
        &mut last,
        reader.directory_version().await.unwrap(),
        "persona revoked",
    );
    let revoked = reader.persona_versioned("helper").await.unwrap().unwrap();
    assert!(revoked.value.revoked_at.is_some());
    assert_eq!(revoked.version, last);
    // A hand-made change counts too.
    raw.exec("UPDATE connections SET rate_limit = 9 WHERE name = 'acme'")
        .await;
    moved(
        &mut last,
        reader.directory_version().await.unwrap(),
        "raw UPDATE",
    );
    let conn = reader.connection_versioned("acme").await.unwrap().unwrap();
    assert_eq!((conn.value.rate_limit, conn.version), (9.0, last));
    // Audit appends do not.
    reader
        .append_audit(&record(1, "helper", "list_users", AuditOutcome::Ok))
        .await
        .unwrap();
    assert_eq!(reader.directory_version().await.unwrap(), last);
    reader.close().await;
    writer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_version_moves_sqlite() {
    let (_dir, path) = sqlite_db();
    directory_version_moves(sqlite_url(&path), Raw::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_version_moves_postgres() {
    with_pg_db(|url| async move {
        directory_version_moves(url.clone(), Raw::Postgres(url)).await;
    })
    .await;
}

// ------------------------------------------------------------------ fences and trust

/// Two workers deciding about one order: the decision commits only under the order's
/// lock, from the state it was read in, while the event's lease holds; a step is sent only
/// while the lease holds; a rejected event gives its idempotency key up.
async fn fence_story(stores: Vec<Store>) {
    use memberspot_store::{
        EventFilter, EventStatus, OrderAccess, OrderFence, StoredEvent, Trusted,
    };
    let (a, b) = (&stores[0], &stores[stores.len() - 1]);
    let lease = chrono::Utc::now().timestamp_millis() + 60_000;
    a.events()
        .record_delivery(&delivery(900), &[queued(900), queued(901)])
        .await
        .unwrap();
    let claimed = a.events().claim_events("w1#a", 2, lease).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (first, second) = (&claimed[0], &claimed[1]);
    let order = |state: &str| OrderAccess {
        source: "src".into(),
        order_id: "shared".into(),
        state: state.into(),
        offer_id: Some("o".into()),
        email: Some("x@example.de".into()),
        reason: None,
        paid_until: None,
        updated_at: 1,
    };
    let plan = json!({"email": "x@example.de"});
    // Two tasks of one claim: each attempt has its own lock owner, so only one holds it.
    assert!(
        a.events()
            .lock_order("src", "shared", "w1#a/first", lease)
            .await
            .unwrap()
    );
    assert!(
        !b.events()
            .lock_order("src", "shared", "w1#a/second", lease)
            .await
            .unwrap()
    );
    let fence = |owner: &'static str, prior: &'static str| OrderFence {
        event_owner: "w1#a",
        order_owner: owner,
        prior_state: prior,
    };
    // Not the lock holder, or a state that has moved on: nothing is written.
    assert!(
        !b.events()
            .commit_decision(
                &order("ended"),
                &fence("w1#a/second", "none"),
                &second.id,
                &[("t", &plan)]
            )
            .await
            .unwrap()
    );
    assert!(
        !a.events()
            .commit_decision(
                &order("active"),
                &fence("w1#a/first", "active"),
                &first.id,
                &[("t", &plan)]
            )
            .await
            .unwrap()
    );
    assert!(
        a.events()
            .event_actions(&first.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.events()
            .commit_decision(
                &order("active"),
                &fence("w1#a/first", "none"),
                &first.id,
                &[("t", &plan)]
            )
            .await
            .unwrap()
    );
    a.events()
        .unlock_order("src", "shared", "w1#a/first")
        .await
        .unwrap();
    // The second now decides from the state the first left.
    assert!(
        b.events()
            .lock_order("src", "shared", "w1#a/second", lease)
            .await
            .unwrap()
    );
    assert!(
        !b.events()
            .commit_decision(
                &order("ended"),
                &fence("w1#a/second", "none"),
                &second.id,
                &[]
            )
            .await
            .unwrap()
    );
    assert!(
        b.events()
            .commit_decision(
                &order("ended"),
                &fence("w1#a/second", "active"),
                &second.id,
                &[]
            )
            .await
            .unwrap()
    );
    assert_eq!(
        a.events()
            .get_order("src", "shared")
            .await
            .unwrap()
            .unwrap()
            .state,
        "ended"
    );

    // A lease renewed by its holder only; a step is started only under the lease.
    assert!(
        a.events()
            .renew_lease(&first.id, "w1#a", None, lease + 1000)
            .await
            .unwrap()
    );
    assert!(
        !b.events()
            .renew_lease(&first.id, "w2#b", None, lease)
            .await
            .unwrap()
    );
    assert!(
        a.events()
            .start_action(&first.id, 0, "req-1", "w1#a")
            .await
            .unwrap()
    );
    assert!(
        !b.events()
            .start_action(&first.id, 0, "req-2", "w2#b")
            .await
            .unwrap()
    );
    assert_eq!(
        a.events().event_actions(&first.id).await.unwrap()[0].request_id,
        "req-1"
    );

    // A rejected event is not verified and releases its key: the same key stores anew.
    let finish = memberspot_store::EventFinish {
        status: EventStatus::Rejected,
        error: None,
        next_attempt_at: None,
        detail: "forged".into(),
        refusal: None,
    };
    assert!(
        a.events()
            .finish_event(&second.id, "w1#a", &finish)
            .await
            .unwrap()
    );
    let again = a
        .events()
        .record_delivery(&delivery(902), &[queued(901)])
        .await
        .unwrap();
    assert!(
        matches!(again[0], memberspot_store::Inserted::New(_)),
        "{again:?}"
    );

    // The trust predicate in SQL agrees with its in-memory form.
    let mut other = queued(903);
    other.connection = Some("other-school".into());
    let mut test = queued(904);
    test.test = true;
    let mut unverified = queued(905);
    unverified.verified = false;
    a.events()
        .record_delivery(&delivery(903), &[other, test, unverified])
        .await
        .unwrap();
    let all: Vec<StoredEvent> = a
        .events()
        .list_events(&EventFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    for trusted in [
        Trusted::live("school"),
        Trusted::live("school").with_test(),
        Trusted::live("other-school"),
    ] {
        let by_sql: Vec<String> = a
            .events()
            .list_events(&EventFilter {
                limit: Some(1000),
                trusted: Some(trusted.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let in_memory: Vec<String> = all
            .iter()
            .filter(|e| trusted.admits(e))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(by_sql, in_memory, "{trusted:?}");
    }
    let school: Vec<StoredEvent> = all
        .iter()
        .filter(|e| Trusted::live("school").admits(e))
        .cloned()
        .collect();
    assert!(
        school
            .iter()
            .all(|e| e.verified && !e.test && e.status != EventStatus::Rejected)
    );
    assert!(
        !school.iter().any(|e| e.id == second.id),
        "the rejected one is out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_and_trust_sqlite() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    fence_story(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_and_trust_postgres() {
    with_pg_db(|url| async move {
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        fence_story(vec![a, b]).await;
    })
    .await;
}

/// Retention: old finished events go with their history, actions and deliveries; queued
/// ones and recent ones stay; refused attempts have their own, shorter, retention.
async fn purge_story(store: Store) {
    use memberspot_store::{EventFilter, EventStatus, NewDelivery};
    let day = 86_400_000_i64;
    let now = chrono::Utc::now().timestamp_millis();
    let at = |d: i64, i: usize, verification: Verification| NewDelivery {
        received_at: now - d * day,
        verification,
        ..delivery(i)
    };
    let mut old_done = queued(1);
    old_done.status = EventStatus::Done;
    let mut old_queued = queued(2);
    old_queued.status = EventStatus::Pending;
    store
        .events()
        .record_delivery(&at(500, 1, Verification::Verified), &[old_done])
        .await
        .unwrap();
    store
        .events()
        .record_delivery(&at(500, 2, Verification::Verified), &[old_queued])
        .await
        .unwrap();
    let mut recent = queued(3);
    recent.status = EventStatus::Done;
    store
        .events()
        .record_delivery(&at(10, 3, Verification::Verified), &[recent])
        .await
        .unwrap();
    store
        .events()
        .record_delivery(&at(40, 4, Verification::Rejected), &[])
        .await
        .unwrap();
    store
        .events()
        .record_delivery(&at(5, 5, Verification::Rejected), &[])
        .await
        .unwrap();
    let purged = store
        .events()
        .purge_events(now - 400 * day, now - 30 * day)
        .await
        .unwrap();
    assert_eq!(
        (purged.events, purged.deliveries, purged.refused_deliveries),
        (1, 1, 1)
    );
    let left = store
        .events()
        .list_events(&EventFilter::default())
        .await
        .unwrap();
    let keys: Vec<&str> = left.iter().map(|e| e.dedupe_key.as_str()).collect();
    assert_eq!(keys, vec!["src:evt-3", "src:evt-2"]);
    assert_eq!(
        store
            .events()
            .refused_deliveries(None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purge_sqlite() {
    let (_dir, path) = sqlite_db();
    purge_story(Store::open(&sqlite_url(&path)).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purge_postgres() {
    with_pg_db(|url| async move { purge_story(Store::open(&url).await.unwrap()).await }).await;
}

// ------------------------------------------------------------------ stored words

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, wanted: &[&str]) {
    match r {
        Err(StoreError::Corrupt(m)) => {
            for w in wanted {
                assert!(m.contains(w), "`{w}` missing from: {m}");
            }
        }
        other => panic!("expected corrupt data naming {wanted:?}, got {other:?}"),
    }
}

/// Columns holding one of a few words are read as types: a word the store does not know
/// (written behind its back) is corrupt data naming the row, never passed on as text.
async fn unknown_words_are_corrupt(url: String, raw: Raw) {
    use memberspot_store::{AuditOutcome as O, EventFilter, NewRun, RunStatus};
    let store = Store::open(&url).await.unwrap();

    let rec = store
        .append_audit(&record(1, "bot", "list_users", O::Ok))
        .await
        .unwrap();
    let read = store.query_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!((read[0].outcome, read[0].surface), (O::Ok, Surface::Rest));
    raw.exec(&format!(
        "UPDATE audit_log SET outcome = 'maybe' WHERE seq = {}",
        rec.seq
    ))
    .await;
    let owner = format!("audit record {}", rec.seq);
    assert_corrupt(
        store.query_audit(&AuditFilter::default()).await,
        &[&owner, "audit outcome", "maybe"],
    );
    assert_corrupt(
        store.flows().audit_counts(0, i64::MAX).await,
        &["audit outcome"],
    );
    // Verification still reads the stored text and names the edited record.
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok && v.first_bad_seq == Some(rec.seq), "{v:?}");
    raw.exec(&format!(
        "UPDATE audit_log SET outcome = 'ok', surface = 'telnet' WHERE seq = {}",
        rec.seq
    ))
    .await;
    assert_corrupt(
        store.query_audit(&AuditFilter::default()).await,
        &[&owner, "surface", "telnet"],
    );

    let d = delivery(1);
    store
        .events()
        .record_delivery(&d, &[queued(1)])
        .await
        .unwrap();
    let back = store.events().get_delivery(&d.id).await.unwrap().unwrap();
    assert_eq!(back.verification, Verification::Verified);
    raw.exec(&format!(
        "UPDATE deliveries SET verification = 'trusted' WHERE id = '{}'",
        d.id
    ))
    .await;
    assert_corrupt(
        store.events().get_delivery(&d.id).await,
        &[&d.id, "delivery verification", "trusted"],
    );
    raw.exec("UPDATE events SET status = 'later'").await;
    assert_corrupt(
        store.events().list_events(&EventFilter::default()).await,
        &["event status", "later"],
    );
    assert_corrupt(
        store
            .flows()
            .event_counts(0, i64::MAX, &memberspot_store::Trusted::live("school"))
            .await,
        &["event status", "later"],
    );

    let run = store
        .flows()
        .insert_run(&NewRun {
            flow: "f".into(),
            trigger: "manual".into(),
            fire_key: None,
            dry_run: false,
            input: json!({}),
            worker: "w".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    store
        .flows()
        .finish_run(&run.id, RunStatus::Ok, None)
        .await
        .unwrap();
    let back = store.flows().get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(back.status, RunStatus::Ok);
    raw.exec(&format!(
        "UPDATE flow_runs SET status = 'paused' WHERE id = '{}'",
        run.id
    ))
    .await;
    assert_corrupt(
        store.flows().get_run(&run.id).await,
        &[&run.id, "flow run status", "paused"],
    );
    assert_corrupt(store.flows().list_runs(None, 10).await, &["paused"]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_words_are_corrupt_sqlite() {
    let (_dir, path) = sqlite_db();
    unknown_words_are_corrupt(sqlite_url(&path), Raw::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_words_are_corrupt_postgres() {
    with_pg_db(|url| async move {
        unknown_words_are_corrupt(url.clone(), Raw::Postgres(url)).await;
    })
    .await;
}

// ------------------------------------------------------------------ upgrades

/// Databases written by the release whose migrations 1–6 were applied by a hand-listed
/// runner (`memberspot` at 44a83e1: personas, a CLI and a flow call, a digest, two
/// Memberspot webhooks and a refused one), dumped with `sqlite3 .dump` and
/// `pg_dump --inserts`. Their `_sqlx_migrations` rows are what every existing database has.
const OLD_SQLITE: &str = include_str!("fixtures/hub-0006.sqlite.sql");
const OLD_POSTGRES: &str = include_str!("fixtures/hub-0006.postgres.sql");

impl Raw {
    /// Runs a dump in a new database (for SQLite: creates the file).
    async fn restore(&self, dump: &str) {
        if let Raw::Sqlite(path) = self {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            c.execute(dump).await.unwrap();
            c.close().await.unwrap();
        } else {
            self.exec(dump).await;
        }
    }

    /// `_sqlx_migrations` as one line per row: version, description, success, checksum,
    /// install time.
    async fn migrations(&self) -> Vec<String> {
        match self {
            Raw::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT version || '|' || description || '|' || success || '|' \
                     || lower(hex(checksum)) || '|' || installed_on \
                     FROM _sqlx_migrations ORDER BY version",
                )
                .fetch_all(&mut c)
                .await
                .unwrap();
                c.close().await.unwrap();
                rows
            }
            Raw::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT version::text || '|' || description || '|' || success::text || '|' \
                     || encode(checksum, 'hex') || '|' || installed_on::text \
                     FROM _sqlx_migrations ORDER BY version",
                )
                .fetch_all(&mut c)
                .await
                .unwrap();
                c.close().await.unwrap();
                rows
            }
        }
    }
}

/// An existing database opens as it is: no migration runs again or is recorded anew (a
/// changed migration file would be refused here as a checksum mismatch), its rows read
/// back, and the audit chain goes on from its head.
async fn opens_a_database_of_the_old_runner(url: String, raw: Raw, dump: &str, records: u64) {
    raw.restore(dump).await;
    let before = raw.migrations().await;
    assert_eq!(before.len(), 6, "{before:?}");

    let store = Store::open(&url).await.unwrap();
    let after = raw.migrations().await;
    assert_eq!(
        after[..before.len().min(after.len())],
        before[..],
        "migrations were re-run or re-recorded"
    );
    // The migrations newer than the dump (0007 on) are applied once, on top.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(after.len(), files, "{after:?}");

    let personas: Vec<String> = store
        .list_personas()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(personas.contains(&"fixture-bot".to_owned()), "{personas:?}");
    assert!(personas.contains(&"hook-school".to_owned()), "{personas:?}");
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.records == records, "{v:?}");
    let events = store
        .events()
        .list_events(&memberspot_store::EventFilter::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(store.flows().list_runs(None, 10).await.unwrap().len(), 1);

    let mut r = record(1, "fixture-bot", "list_offers", AuditOutcome::Ok);
    r.surface = Surface::Cli;
    let appended = store.append_audit(&r).await.unwrap();
    assert_eq!(appended.prev_hash, v.head.hash);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.records == records + 1, "{v:?}");
    store.close().await;

    // And again: opening is idempotent on an upgraded database too.
    let store = Store::open(&url).await.unwrap();
    store.close().await;
    assert_eq!(raw.migrations().await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_a_sqlite_database_of_the_old_runner() {
    let (_dir, path) = sqlite_db();
    opens_a_database_of_the_old_runner(sqlite_url(&path), Raw::Sqlite(path), OLD_SQLITE, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_a_postgres_database_of_the_old_runner() {
    with_pg_db(|url| async move {
        opens_a_database_of_the_old_runner(url.clone(), Raw::Postgres(url), OLD_POSTGRES, 2).await;
    })
    .await;
}

// ------------------------------------------------------------------ schema and upgrades

/// Where a database stands against this binary, without opening it as a store; opening a
/// database that a newer binary migrated is refused with both versions; checks change
/// nothing.
async fn schema_story(url: String, raw: Raw, dump: &str) {
    let binary = memberspot_store::binary_version(match raw {
        Raw::Sqlite(_) => Backend::Sqlite,
        Raw::Postgres(_) => Backend::Postgres,
    });
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(binary, files as i64);

    // Nothing there yet: every migration would run, and checking creates nothing.
    let fresh = Store::schema_status(&url).await.unwrap();
    assert_eq!(fresh.pending.len(), files, "{fresh:?}");
    assert_eq!(fresh.database_version, None);
    assert!(!fresh.is_current());
    if let Raw::Sqlite(path) = &raw {
        assert!(!fresh.exists);
        assert!(!path.exists(), "a check does not create the file");
    }

    // A database of release 0006: the newer migrations are pending, by number and name.
    raw.restore(dump).await;
    let old = Store::schema_status(&url).await.unwrap();
    assert_eq!(old.database_version, Some(6));
    assert_eq!(old.pending.first().map(|m| m.version), Some(7), "{old:?}");
    assert_eq!(old.pending.len(), files - 6);
    assert!(old.unknown.is_empty() && old.modified.is_empty());
    assert_eq!(
        Store::schema_status(&url).await.unwrap(),
        old,
        "checking twice changes nothing"
    );
    // Opened as it is (a backup's copy): readable, nothing migrated.
    let as_is = Store::open_unmigrated(&url).await.unwrap();
    assert_eq!(as_is.schema().await.unwrap(), old);
    assert!(as_is.audit_head().await.unwrap().seq > 0);
    as_is.close().await;
    assert_eq!(
        Store::schema_status(&url).await.unwrap(),
        old,
        "still as it was"
    );
    let before = Store::migrate(&url).await.unwrap();
    assert_eq!(before.pending, old.pending);
    let now = Store::schema_status(&url).await.unwrap();
    assert!(now.is_current(), "{now:?}");
    assert_eq!(now.database_version, Some(binary));

    // A newer binary migrated it: refused on open, with both versions in the message.
    let checksum = match raw {
        Raw::Sqlite(_) => "X'00'",
        Raw::Postgres(_) => "'\\x00'::bytea",
    };
    raw.exec(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer release', TRUE, {checksum}, 1)"
    ))
    .await;
    let newer = Store::schema_status(&url).await.unwrap();
    assert!(newer.is_newer_than_binary(), "{newer:?}");
    assert_eq!(newer.unknown, vec![9999]);
    match Store::open(&url).await {
        Err(e @ StoreError::TooNew { database: 9999, .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("version 9999") && m.contains(&format!("binary's {binary}")),
                "{m}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a database newer than the binary was opened"),
    }
    match Store::migrate(&url).await {
        Err(StoreError::TooNew { .. }) => {}
        other => panic!("migrate on a newer database: {other:?}"),
    }
    assert!(matches!(
        Store::open_unmigrated(&url).await,
        Err(StoreError::TooNew { .. })
    ));
    raw.exec("DELETE FROM _sqlx_migrations WHERE version = 9999")
        .await;

    // An applied migration that differs from this binary's text is reported too.
    raw.exec(&format!(
        "UPDATE _sqlx_migrations SET checksum = {checksum} WHERE version = 1"
    ))
    .await;
    let modified = Store::schema_status(&url).await.unwrap();
    assert_eq!(modified.modified, vec![1]);
    assert!(!modified.is_current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_status_and_refusing_newer_databases_sqlite() {
    let (_dir, path) = sqlite_db();
    schema_story(sqlite_url(&path), Raw::Sqlite(path), OLD_SQLITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_status_and_refusing_newer_databases_postgres() {
    with_pg_db(|url| async move {
        schema_story(url.clone(), Raw::Postgres(url), OLD_POSTGRES).await;
    })
    .await;
}

/// A copy taken while another task appends to the audit chain holds a chain that
/// verifies on its own; PostgreSQL is copied with pg_dump, which the store says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_snapshot_while_writing_is_consistent() {
    let (dir, path) = sqlite_db();
    let store = Store::open(&sqlite_url(&path)).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .append_audit(&record(i, "bot", "list_offers", AuditOutcome::Ok))
                    .await
                    .unwrap();
            }
        })
    };
    let copy = dir.path().join("copy.db");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let head = store.snapshot_into(&copy).await.unwrap();
    assert!(matches!(
        store.snapshot_into(&copy).await,
        Err(StoreError::Conflict(_))
    ));
    writer.await.unwrap();
    let copied = Store::open(copy.to_str().unwrap()).await.unwrap();
    let v = copied.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.head, head, "the head the copy was taken with");
    assert!(v.records < 200 || head.seq == 200, "{v:?}");
    assert!(copied.schema().await.unwrap().is_current());
    copied.close().await;
    store.close().await;
}

// ------------------------------------------------------------------ console setup links

/// Two different unused setup links used at the same moment, from `a` and `b` (one store
/// twice, or two stores as two processes have): exactly one first owner, every round.
async fn setup_links_race(a: Store, b: Store) {
    for round in 0..25 {
        let now = chrono::Utc::now().timestamp_millis();
        let (ta, tb) = (format!("link-a-{round}"), format!("link-b-{round}"));
        for t in [&ta, &tb] {
            a.insert_console_setup_token(t, now, now + 3_600_000)
                .await
                .unwrap();
        }
        let (ra, rb) = tokio::join!(
            a.use_console_setup_token(&ta, "anna", "hash-a", now),
            b.use_console_setup_token(&tb, "bert", "hash-b", now),
        );
        let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        let users = a.list_console_users().await.unwrap();
        assert_eq!(users.len(), 1, "round {round}: {users:?} ({ra:?}, {rb:?})");
        assert_eq!(won, 1, "round {round}");
        let loser = if ra.is_ok() { &rb } else { &ra };
        assert!(
            matches!(loser, Err(StoreError::Invalid(_))),
            "round {round}: {loser:?}"
        );
        a.remove_console_user(&users[0].name).await.unwrap();
    }
}

/// Two owners demote each other, then remove each other, at the same moment from `a` and
/// `b`: each change alone is allowed (another owner is left), both together would leave no
/// owner. Exactly one wins each round.
async fn last_owner_race(a: Store, b: Store) {
    use memberspot_store::ConsoleRole;
    let now = chrono::Utc::now().timestamp_millis();
    for round in 0..20 {
        a.insert_console_user("vera", "hash-v", ConsoleRole::Viewer, now)
            .await
            .unwrap();
        for name in ["anna", "bert"] {
            a.insert_console_user(name, "hash", ConsoleRole::Owner, now)
                .await
                .unwrap();
        }
        let (ra, rb) = tokio::join!(
            a.set_console_role("bert", ConsoleRole::Viewer, now),
            b.set_console_role("anna", ConsoleRole::Viewer, now),
        );
        let owners = |users: Vec<memberspot_store::ConsoleUser>| {
            users
                .into_iter()
                .filter(|u| u.role == ConsoleRole::Owner)
                .count()
        };
        assert_eq!(
            owners(a.list_console_users().await.unwrap()),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        assert_eq!([&ra, &rb].iter().filter(|r| r.is_ok()).count(), 1);
        for name in ["anna", "bert"] {
            a.set_console_role(name, ConsoleRole::Owner, now)
                .await
                .unwrap();
        }
        let (ra, rb) = tokio::join!(a.remove_console_user("anna"), b.remove_console_user("bert"));
        assert_eq!(
            owners(a.list_console_users().await.unwrap()),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        assert!(
            matches!(
                (&ra, &rb),
                (Ok(true), Err(StoreError::Conflict(_))) | (Err(StoreError::Conflict(_)), Ok(true))
            ),
            "round {round}: {ra:?} {rb:?}"
        );
        // The survivor is the last owner: kept while vera is there, removable once alone
        // (back to the first run).
        let survivor = if ra.is_ok() { "bert" } else { "anna" };
        a.set_console_role(survivor, ConsoleRole::Viewer, now)
            .await
            .expect_err("the last owner is not demoted");
        a.remove_console_user(survivor)
            .await
            .expect_err("nor removed while vera is left");
        assert!(a.remove_console_user("vera").await.unwrap());
        assert!(a.remove_console_user(survivor).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_owner_race_two_sqlite_stores() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    last_owner_race(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_owner_race_one_postgres_store() {
    with_pg_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        last_owner_race(store.clone(), store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_owner_race_two_postgres_stores() {
    with_pg_db(|url| async move {
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        last_owner_race(a, b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_links_race_one_sqlite_store() {
    let (_dir, path) = sqlite_db();
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    setup_links_race(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_links_race_two_sqlite_stores() {
    let (_dir, path) = sqlite_db();
    let url = sqlite_url(&path);
    let (a, b) = (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    );
    setup_links_race(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_links_race_one_postgres_store() {
    with_pg_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        setup_links_race(store.clone(), store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_links_race_two_postgres_stores() {
    with_pg_db(|url| async move {
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        setup_links_race(a, b).await;
    })
    .await;
}
