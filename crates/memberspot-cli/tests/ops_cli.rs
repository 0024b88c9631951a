//! Operations through the real binary: a backup taken while `memberspot serve` receives
//! webhooks and tool calls restores into a new directory where the audit chain verifies,
//! the events and personas are there and the connections' keys open; damaged, foreign and
//! misdirected restores write nothing; `migrate --check` and `status` on SQLite and
//! PostgreSQL, and every command refusing a database newer than the binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use serde_json::{Value, json};

const SCHOOL_KEY: &str = "sk_live_ops_school_key_5e1d7c9b2a40";
const PASS: &str = "ops-test-ipn-passphrase";
const BACKUP_PASS: &str = "a backup passphrase, long enough";

fn cmd(dir: &Path, db: Option<&str>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_memberspot"));
    for var in [
        "MEMBERSPOT_API_KEY",
        "MEMBERSPOT_BASE_URL",
        "MEMBERSPOT_CONFIG",
        "MEMBERSPOT_CONNECTION",
        "MEMBERSPOT_PERSONA",
        "MEMBERSPOT_RULES",
        "MEMBERSPOT_FLOWS",
        "MEMBERSPOT_MODELS",
        "MEMBERSPOT_MASTER_KEY",
        "DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("MEMBERSPOT_LOG", "warn")
        .env("BACKUP_PASS", BACKUP_PASS)
        .env("WRONG_PASS", "not the passphrase of it")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = db {
        c.env("DATABASE_URL", url);
    }
    c
}

async fn run(dir: &Path, db: Option<&str>, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(120), cmd(dir, db).args(args).output())
        .await
        .expect("the command returns")
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_ok(o: &Output, what: &str) -> Value {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): {}{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

async fn school() -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 21,
        size: SeedSize {
            users: 5,
            offers: 2,
            courses: 1,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .unwrap()
}

/// The `school` connection, a persona on it and the rules file; answers the token.
async fn set_up(dir: &Path, sb: &Sandbox) -> String {
    let mut add = cmd(dir, None);
    add.args([
        "connections",
        "add",
        "school",
        "--url",
        &sb.base_url(),
        "--rps",
        "0",
        "--api-key-stdin",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(SCHOOL_KEY.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "connections add: {}", stderr(&out));
    let offer = common::sandbox_state(sb).await["offers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{PASS}\"\nconnection = \"school\"\n\n\
             [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"{offer}\"\n"
        ),
    )
    .unwrap();
    let created = json_ok(
        &run(
            dir,
            None,
            &[
                "personas",
                "create",
                "agent",
                "--connection",
                "school",
                "--scopes",
                "read",
                "--json",
            ],
        )
        .await,
        "personas create",
    );
    created["token"].as_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_serve(dir: &Path, port: u16) -> tokio::process::Child {
    let child = cmd(dir, None)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Posts purchase `i` until the hub acknowledges it.
async fn deliver(http: &reqwest::Client, port: u16, i: usize) {
    let body = common::ipn(PASS, "on_payment", i);
    loop {
        let r = http
            .post(format!("http://127.0.0.1:{port}/hooks/ds24"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(unix)]
async fn stop(server: &mut tokio::process::Child) {
    let pid = server.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), server.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_restores_a_working_hub() {
    let sb = school().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("hub");
    std::fs::create_dir(&d).unwrap();
    let token = set_up(&d, &sb).await;
    let port = free_port();
    let mut server = start_serve(&d, port).await;

    // Webhooks and tool calls flow while the backup is taken.
    let delivered = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let hooks = {
        let (http, delivered) = (http.clone(), delivered.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                deliver(&http, port, i).await;
                delivered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let tools = {
        let (http, calls, token) = (http.clone(), calls.clone(), token.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                let r = http
                    .post(format!("http://127.0.0.1:{port}/v1/tools/list_offers/call"))
                    .bearer_auth(&token)
                    .json(&json!({"arguments": {}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
                calls.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while delivered.load(Ordering::SeqCst) < 10 || calls.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Acknowledged or answered before the backup starts: in it.
    let (hooks_at_backup, calls_at_backup) = (
        delivered.load(Ordering::SeqCst),
        calls.load(Ordering::SeqCst),
    );
    let file = tmp.path().join("hub.backup");
    let file_s = file.to_str().unwrap();
    let made = json_ok(
        &run(
            &d,
            None,
            &[
                "backup",
                file_s,
                "--passphrase-env",
                "BACKUP_PASS",
                "--json",
            ],
        )
        .await,
        "backup while serving",
    );
    hooks.await.unwrap();
    tools.await.unwrap();
    #[cfg(unix)]
    stop(&mut server).await;
    let names: Vec<&str> = made["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for wanted in ["hub.db", "master.key", "rules.toml", "admin.token"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }

    // Restored into a new directory: a working hub.
    let new = tmp.path().join("restored");
    let restored = json_ok(
        &run(
            &d,
            None,
            &[
                "restore",
                file_s,
                "--into",
                new.to_str().unwrap(),
                "--passphrase-env",
                "BACKUP_PASS",
                "--json",
            ],
        )
        .await,
        "restore",
    );
    let db = &restored["database"];
    assert_eq!(db["audit"]["ok"], true, "{restored}");
    // The chain restored ends where the copy was taken.
    let head = format!(
        "{}:{}",
        db["audit"]["head"]["seq"],
        db["audit"]["head"]["hash"].as_str().unwrap()
    );
    assert_eq!(made["manifest"]["audit_head"], head.as_str(), "{made}");
    assert_eq!(db["connections_opening"], db["connections"], "{restored}");
    let verified = json_ok(
        &run(&new, None, &["audit", "verify", "--json"]).await,
        "verify",
    );
    assert_eq!(verified["ok"], true);
    assert!(
        verified["records"].as_u64().unwrap() >= calls_at_backup as u64,
        "every call answered before the backup is on record: {verified}"
    );
    let events = json_ok(
        &run(&new, None, &["events", "list", "--limit", "1000", "--json"]).await,
        "events",
    );
    let n = events.as_array().unwrap().len();
    assert!(
        n >= hooks_at_backup && n <= 40,
        "{n} events, {hooks_at_backup} acknowledged when the backup started"
    );
    let personas = json_ok(
        &run(&new, None, &["personas", "list", "--json"]).await,
        "personas",
    );
    assert!(
        personas
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "agent"),
        "{personas}"
    );
    let test = run(&new, None, &["connections", "test", "school"]).await;
    assert!(test.status.success(), "the key opens: {}", stderr(&test));
    let status = json_ok(&run(&new, None, &["status", "--json"]).await, "status");
    assert_eq!(status["master_key"], "matches", "{status}");
    assert!(status["audit_head"].is_string(), "{status}");
    assert_eq!(
        status["events"]["total"].as_u64(),
        Some(n as u64),
        "{status}"
    );

    // Status names what needs attention: a dead letter, a failed summary, a failing poller.
    {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(new.join("hub.db"));
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        for sql in [
            "UPDATE events SET status = 'dead' WHERE seq = (SELECT MIN(seq) FROM events)",
            "INSERT INTO flow_runs (id, flow, trigger, dry_run, status, input, started_at, \
             finished_at, error, worker) VALUES ('r1', 'digest', 'schedule', 0, 'failed', '{}', \
             1764828000000, 1764828001000, 'SMTP refused', 'w')",
            "INSERT INTO meta (key, value) VALUES ('poll.school.last_cycle', '{\"started_at\": 1}'), \
             ('poll.school.last_error', '{\"at\": 2, \"error\": \"429 from the school\"}')",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    let out = run(&new, None, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "needs attention");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["events"]["dead"], 1, "{s}");
    assert_eq!(s["last_digest"]["error"], "SMTP refused", "{s}");
    assert_eq!(s["polls"][0]["connection"], "school", "{s}");
    assert_eq!(s["polls"][0]["last_error"], "429 from the school", "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 3, "{s}");
    let human = stdout(&run(&new, None, &["status"]).await);
    for seen in [
        "1 dead letters",
        "SMTP refused",
        "school: 1970-01-01",
        "429 from the school",
        "needs attention",
    ] {
        assert!(human.contains(seen), "{seen}: {human}");
    }

    // The same backup, misused: nothing is written.
    let again = run(
        &d,
        None,
        &[
            "restore",
            file_s,
            "--into",
            new.to_str().unwrap(),
            "--passphrase-env",
            "BACKUP_PASS",
        ],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("is not empty"),
        "{}",
        stderr(&again)
    );
    let other = tmp.path().join("other");
    let o = other.to_str().unwrap();
    let wrong = run(
        &d,
        None,
        &[
            "restore",
            file_s,
            "--into",
            o,
            "--passphrase-env",
            "WRONG_PASS",
        ],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("passphrase does not open"),
        "{}",
        stderr(&wrong)
    );
    let asked = run(&d, None, &["restore", file_s, "--into", o]).await;
    assert_eq!(asked.status.code(), Some(2), "no terminal to ask on");
    assert!(
        stderr(&asked).contains("not a terminal"),
        "{}",
        stderr(&asked)
    );
    let bytes = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 3;
    flipped[mid] ^= 1;
    let changed = tmp.path().join("changed.backup");
    std::fs::write(&changed, &flipped).unwrap();
    for bad in [&cut, &changed] {
        let out = run(
            &d,
            None,
            &[
                "restore",
                bad.to_str().unwrap(),
                "--into",
                o,
                "--passphrase-env",
                "BACKUP_PASS",
                "--json",
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
        assert_eq!(err["error"]["code"], "damaged", "{err}");
    }
    assert!(!other.exists(), "nothing was written");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A backup over an existing file is refused; a short passphrase too.
    let exists = run(
        &d,
        None,
        &["backup", file_s, "--passphrase-env", "BACKUP_PASS"],
    )
    .await;
    assert_eq!(exists.status.code(), Some(1));
    assert!(
        stderr(&exists).contains("already exists"),
        "{}",
        stderr(&exists)
    );
    let weak = cmd(&d, None)
        .args([
            "backup",
            tmp.path().join("weak").to_str().unwrap(),
            "--passphrase-env",
            "P",
        ])
        .env("P", "short")
        .output()
        .await
        .unwrap();
    assert!(stderr(&weak).contains("too short"), "{}", stderr(&weak));
}

/// Adds a migration this binary does not know, as a newer release would have.
async fn add_future_migration(dir: &Path, db: Option<&str>) {
    use sqlx::Connection;
    match db {
        None => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("hub.db"));
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'future', TRUE, X'00', 1)",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'future', TRUE, '\\x00'::bytea, 1)",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

async fn upgrade_story(dir: &Path, db: Option<&str>) {
    // Nothing yet: every migration would run (exit 3).
    let check = run(dir, db, &["migrate", "--check"]).await;
    assert_eq!(check.status.code(), Some(3), "{}", stdout(&check));
    assert!(stdout(&check).contains("would apply"), "{}", stdout(&check));
    let check = run(dir, db, &["migrate", "--check", "--json"]).await;
    let v: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(v["result"], "pending");
    let binary = v["binary_version"].as_i64().unwrap();
    assert_eq!(v["pending"].as_array().unwrap().len() as i64, binary);
    if db.is_none() {
        assert!(!dir.join("hub.db").exists(), "checking creates nothing");
    }

    let applied = run(dir, db, &["migrate"]).await;
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("applied 0001"),
        "{}",
        stdout(&applied)
    );
    let check = run(dir, db, &["migrate", "--check"]).await;
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(stdout(&check).contains("nothing would run"));

    // Status on a healthy hub: exit 0, every figure there.
    let ok = run(dir, db, &["personas", "create", "bot", "--scopes", "read"]).await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let status = run(dir, db, &["status", "--json"]).await;
    let s: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status.status.code(), Some(0), "{s}");
    assert_eq!(s["store"]["schema"]["database_version"], binary);
    assert_eq!(s["events"]["dead"], 0);
    assert_eq!(s["master_key"], "matches");
    assert!(s["audit_head"].as_str().unwrap().contains(':'), "{s}");
    let human = run(dir, db, &["status"]).await;
    for line in [
        "store",
        "master key",
        "events",
        "last digest",
        "last poll",
        "audit head",
        "all well",
    ] {
        assert!(stdout(&human).contains(line), "{line}: {}", stdout(&human));
    }

    // A newer release migrated the database: this binary says so and opens nothing.
    add_future_migration(dir, db).await;
    let check = run(dir, db, &["migrate", "--check"]).await;
    assert_eq!(check.status.code(), Some(4), "{}", stdout(&check));
    for args in [
        &["personas", "list"][..],
        &["migrate"][..],
        &["audit", "verify"][..],
    ] {
        let out = run(dir, db, args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains("version 9999") && e.contains(&format!("binary's {binary}")),
            "{args:?}: {e}"
        );
    }
    let status = run(dir, db, &["status"]).await;
    assert_eq!(status.status.code(), Some(1));
    assert!(
        stdout(&status).contains("newer than this binary"),
        "{}",
        stdout(&status)
    );
    let port = free_port();
    let serve = cmd(dir, db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), serve)
        .await
        .expect("serve refuses at once")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("version 9999"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_status_and_newer_databases_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    upgrade_story(tmp.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_status_and_newer_databases_on_postgres() {
    use sqlx::Connection;
    let admin = std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("ops_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let tmp = tempfile::tempdir().unwrap();
    let outcome = tokio::spawn({
        let (dir, url) = (tmp.path().to_path_buf(), url.clone());
        async move { upgrade_story(&dir, Some(&url)).await }
    })
    .await;
    let files_only = async {
        if outcome.is_err() {
            return;
        }
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 9999")
            .execute(&mut sqlx::PgConnection::connect(&url).await.unwrap())
            .await
            .unwrap();
        // A PostgreSQL store: the backup says the database goes with pg_dump, and backs up
        // the hub's own files only when asked to.
        let d = tmp.path();
        let file = d.join("files.backup");
        let f = file.to_str().unwrap();
        let refused = run(
            d,
            Some(&url),
            &["backup", f, "--passphrase-env", "BACKUP_PASS"],
        )
        .await;
        assert_eq!(refused.status.code(), Some(1));
        assert!(stderr(&refused).contains("pg_dump"), "{}", stderr(&refused));
        assert!(!file.exists());
        let made = json_ok(
            &run(
                d,
                Some(&url),
                &[
                    "backup",
                    f,
                    "--files-only",
                    "--passphrase-env",
                    "BACKUP_PASS",
                    "--json",
                ],
            )
            .await,
            "files-only backup",
        );
        assert_eq!(made["manifest"]["database_included"], false);
        assert_eq!(made["manifest"]["master_key_included"], true);
        let human = run(
            d,
            Some(&url),
            &[
                "restore",
                f,
                "--into",
                d.join("r").to_str().unwrap(),
                "--passphrase-env",
                "BACKUP_PASS",
            ],
        )
        .await;
        assert!(human.status.success(), "{}", stderr(&human));
        assert!(stdout(&human).contains("pg_restore"), "{}", stdout(&human));
        assert!(d.join("r/master.key").exists());
        // The database half, as docs/operations.md has it: PostgreSQL's own pg_dump.
        let dump = d.join("hub.pgdump");
        let pg = tokio::process::Command::new("pg_dump")
            .arg("--format=custom")
            .arg(format!("--file={}", dump.display()))
            .arg(&url)
            .output()
            .await
            .expect("pg_dump runs (PostgreSQL's client tools)");
        assert!(
            pg.status.success(),
            "{}",
            String::from_utf8_lossy(&pg.stderr)
        );
        assert!(
            std::fs::metadata(&dump)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        );
    };
    files_only.await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
