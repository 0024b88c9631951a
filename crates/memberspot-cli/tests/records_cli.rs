//! What is recorded and how far it can be trusted, through the `memberspot` binary: the
//! CSV export (CLI and REST) against formula injection, chain anchors (`audit anchor`,
//! `audit verify --anchor`, the daily summary's head line) against a rewritten chain,
//! connection changes that re-seal keys, master-key rotation, and re-creating a revoked
//! persona.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

mod common;

const SCHOOL_KEY: &str = "sk_live_cli_records_key_5e8a1c3f7b90";

fn cmd(dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_memberspot"));
    for var in common::HUB_ENV {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .kill_on_drop(true);
    c
}

async fn run(dir: &Path, args: &[&str]) -> Output {
    cmd(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs")
}

async fn run_with_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    child.wait_with_output().await.expect("runs")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output, what: &str) -> Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `memberspot serve` on a free port, and its base URL.
async fn start_serve(d: &Path) -> (tokio::process::Child, String) {
    let mut server = cmd(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = tokio::io::BufReader::new(server.stderr.take().expect("stderr")).lines();
    let mut banner = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.strip_prefix("memberspot hub listening on ") {
            let addr = rest.trim().to_string();
            // Keep reading so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (server, addr);
        }
    }
    panic!("no listening line in:\n{banner}");
}

async fn school() -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 6,
        size: SeedSize {
            users: 10,
            offers: 3,
            courses: 2,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox")
}

/// How many API requests a sandbox school has answered (its request log).
async fn api_requests(s: &Sandbox) -> usize {
    let log: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/requests", s.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .send()
        .await
        .expect("request log")
        .json()
        .await
        .expect("json");
    log.as_array()
        .expect("entries")
        .iter()
        .filter(|r| {
            !r["path"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/_sandbox")
        })
        .count()
}

fn formula_start(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Caller-controlled text from real tool calls, exported by the CLI and by REST and read
/// back with a CSV parser: no cell starts like a formula, the JSON lines keep the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_neutralise_formulas_on_the_cli_and_over_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let created = json_of(
        &run(d, &["personas", "create", "helper", "--json"]).await,
        "create",
    );
    let token = created["token"].as_str().expect("token").to_string();
    let (mut server, addr) = start_serve(d).await;
    let admin = std::fs::read_to_string(d.join("admin.token")).expect("admin token");
    let http = reqwest::Client::new();
    let inputs = [
        ("=HYPERLINK(\"http://evil\",\"x\")", "@SUM(1)"),
        ("+1", "-1"),
    ];
    for (prompt, end_user) in inputs {
        let resp = http
            .post(format!("{addr}/v1/tools/list_offers/call"))
            .bearer_auth(&token)
            .json(&json!({"arguments": {}, "prompt": prompt, "end_user": end_user}))
            .send()
            .await
            .expect("call");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let over_rest = http
        .get(format!("{addr}/v1/audit/export?format=csv"))
        .bearer_auth(admin.trim())
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let on_cli = ok(
        &run(d, &["audit", "export", "--format", "csv"]).await,
        "export",
    );
    assert_eq!(on_cli, over_rest, "one export, two surfaces");
    let mut reader = csv::Reader::from_reader(on_cli.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    // The persona's creation is recorded first (an admin change); then the two calls.
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][col("tool")], "admin.create_persona");
    let rows = &rows[1..];
    for (row, (prompt, end_user)) in rows.iter().zip(inputs) {
        assert_eq!(&row[col("prompt")], format!("'{prompt}"));
        assert_eq!(&row[col("end_user")], format!("'{end_user}"));
        assert!(row.iter().all(|c| !formula_start(c)), "{row:?}");
    }
    for name in ["response", "prev_hash"] {
        assert!(header.iter().any(|h| h == name), "{name} in {header:?}");
    }
    let jsonl = ok(
        &run(d, &["audit", "export", "--format", "jsonl"]).await,
        "jsonl",
    );
    let first: Value = serde_json::from_str(jsonl.lines().nth(1).expect("line")).expect("json");
    assert_eq!(
        first["prompt"], inputs[0].0,
        "JSON lines keep the exact text"
    );
    let _ = server.kill().await;
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `audit anchor` prints the head; the daily summary shows it too. Someone rewrites the
/// chain in the database from an earlier record on, recomputing every hash: `audit verify`
/// passes, `audit verify --anchor` fails (exit 1) and says which record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_against_an_anchor_catches_a_rewritten_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for reason in ["first", "second", "third"] {
        ok(
            &run(d, &["--reason", reason, "offers", "list"]).await,
            "offers",
        );
    }
    let anchor = ok(&run(d, &["audit", "anchor"]).await, "anchor")
        .trim()
        .to_string();
    let (seq, hash) = anchor.split_once(':').expect("SEQ:HASH");
    assert_eq!(hash.len(), 64, "{anchor}");
    let as_json = json_of(&run(d, &["audit", "anchor", "--json"]).await, "anchor");
    assert_eq!(as_json["anchor"], anchor);
    assert_eq!(as_json["seq"].to_string(), seq);

    // The daily summary carries the head as it was when it was made.
    let summary = ok(&run(d, &["digest", "--dry-run"]).await, "digest");
    let line = summary
        .lines()
        .find(|l| l.starts_with("Audit chain head: #"))
        .unwrap_or_else(|| panic!("no head line in:\n{summary}"))
        .to_string();
    let from_summary = line.trim_start_matches("Audit chain head: ").to_string();
    ok(
        &run(d, &["audit", "verify", "--anchor", &from_summary]).await,
        "verify against the summary's line",
    );
    ok(
        &run(d, &["--reason", "fourth", "offers", "list"]).await,
        "offers",
    );
    let out = ok(
        &run(d, &["audit", "verify", "--anchor", &anchor]).await,
        "verify --anchor",
    );
    assert!(
        out.contains(&format!("record {seq} has the anchored hash")),
        "{out}"
    );

    // The rewrite: the second record says something else, every later hash recomputed.
    let records = json_of(
        &run(d, &["audit", "search", "--json", "--limit", "100"]).await,
        "search",
    );
    let records: Vec<memberspot_hub::store::AuditRecord> =
        serde_json::from_value(records).expect("records");
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", d.join("hub.db").display()))
                .await
                .expect("db");
        let mut prev: Option<String> = None;
        for mut r in records.into_iter().skip(1) {
            if prev.is_none() {
                r.prompt = Some("nothing to see".into());
            }
            if let Some(p) = &prev {
                r.prev_hash.clone_from(p);
            }
            r.hash = memberspot_hub::store::audit_hash(&r.prev_hash, &r);
            for sql in [
                format!(
                    "UPDATE audit_log SET prompt = {}, prev_hash = {}, hash = {} WHERE seq = {}",
                    sql_text(r.prompt.as_deref().unwrap_or_default()),
                    sql_text(&r.prev_hash),
                    sql_text(&r.hash),
                    r.seq
                ),
                format!(
                    "UPDATE meta SET value = {} WHERE key = 'store.audit_head'",
                    sql_text(&format!("{} {}", r.seq, r.hash))
                ),
            ] {
                sqlx::query(&sql).execute(&mut c).await.expect("rewrite");
            }
            prev = Some(r.hash);
        }
    }
    ok(&run(d, &["audit", "verify"]).await, "the walk alone passes");
    let out = run(d, &["audit", "verify", "--anchor", &anchor]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("TAMPERED") && said.contains(&format!("record {seq}")),
        "{said}"
    );
    let out = run(d, &["audit", "verify", "--anchor", &from_summary]).await;
    assert_eq!(out.status.code(), Some(1));
    let out = json_of_status(&run(d, &["audit", "verify", "--anchor", &anchor, "--json"]).await);
    assert_eq!(out["ok"], false);
    assert_eq!(out["first_bad_seq"].to_string(), seq);

    // A malformed anchor is a usage error naming the flag.
    let out = run(d, &["audit", "verify", "--anchor", "12-abc"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--anchor"), "{}", stderr(&out));
}

fn json_of_status(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `connections update` moves or renames a connection and re-seals its key; a URL changed
/// in the database instead is refused, naming the connection; `master-key rotate` keeps
/// every key working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_changes_reseal_and_rotation_keeps_keys_working() {
    let first = school().await;
    let second = school().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(
        &run_with_stdin(
            d,
            &[
                "connections",
                "add",
                "school",
                "--url",
                &first.base_url(),
                "--api-key-stdin",
                "--rps",
                "0",
            ],
            SCHOOL_KEY,
        )
        .await,
        "add",
    );
    ok(&run(d, &["connections", "test", "school"]).await, "test");

    let moved = json_of(
        &run(
            d,
            &[
                "connections",
                "update",
                "school",
                "--url",
                &second.base_url(),
                "--rename",
                "main",
                "--json",
            ],
        )
        .await,
        "update",
    );
    assert_eq!(moved["name"], "main");
    assert_eq!(moved["base_url"], second.base_url());
    ok(
        &run(d, &["connections", "test", "main"]).await,
        "test after the move",
    );
    let before = api_requests(&second).await;
    ok(
        &run(d, &["--connection", "main", "offers", "list"]).await,
        "offers",
    );
    assert!(
        api_requests(&second).await > before,
        "the moved connection reaches its new school"
    );
    let out = run(d, &["connections", "update", "main"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );

    // Changed in the database: refused, naming the connection; the other school gets nothing.
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", d.join("hub.db").display()))
                .await
                .expect("db");
        sqlx::query(&format!(
            "UPDATE connections SET base_url = {} WHERE name = 'main'",
            sql_text(&first.base_url())
        ))
        .execute(&mut c)
        .await
        .expect("tamper");
    }
    let before = api_requests(&first).await;
    let out = run(d, &["connections", "test", "main"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection `main`") && !stderr(&out).contains(SCHOOL_KEY),
        "{}",
        stderr(&out)
    );
    assert_eq!(api_requests(&first).await, before, "nothing was sent");
    // Put back through the proper operation, it works again.
    ok(
        &run(
            d,
            &["connections", "update", "main", "--url", &second.base_url()],
        )
        .await,
        "restore",
    );

    // Rotation re-seals every key under a new master key; the keys still open.
    let old_key = std::fs::read_to_string(d.join("master.key")).expect("key");
    ok(&run(d, &["master-key", "rotate", "--yes"]).await, "rotate");
    let new_key = std::fs::read_to_string(d.join("master.key")).expect("key");
    assert_ne!(old_key, new_key);
    ok(
        &run(d, &["connections", "test", "main"]).await,
        "test after rotation",
    );
    let _ = first.shutdown().await;
    let _ = second.shutdown().await;
}

/// A revoked persona (a built-in one above all) can be created again by name; an active
/// one is never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_persona_can_be_created_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(&run(d, &["personas", "create", "digest"]).await, "create");
    let out = run(d, &["personas", "create", "digest", "--replace-revoked"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not revoked"), "{}", stderr(&out));
    ok(&run(d, &["personas", "revoke", "digest"]).await, "revoke");
    let out = run(d, &["personas", "create", "digest"]).await;
    assert!(
        !out.status.success(),
        "a revoked name is not reused silently"
    );
    let again = json_of(
        &run(
            d,
            &[
                "personas",
                "create",
                "digest",
                "--scopes",
                "read",
                "--replace-revoked",
                "--json",
            ],
        )
        .await,
        "re-create",
    );
    assert!(again["revoked_at"].is_null(), "{again}");
    assert!(
        again["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("msh_"))
    );
}

/// `audit export` writes every matching record, page by page, past the store's 10,000
/// records per query; `--limit` stops it where asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_every_record() {
    use memberspot_hub::store::{NewAuditRecord, Store};
    const N: usize = 10_050;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(d, &["audit", "anchor"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&format!("sqlite://{}", d.join("hub.db").display()))
        .await
        .unwrap();
    let records: Vec<NewAuditRecord> = (0..N)
        .map(|i| NewAuditRecord {
            at: 1_700_000_000_000 + i as i64,
            request_id: format!("req-{i}"),
            surface: memberspot_hub::Surface::Rest,
            connection: Some("sandbox".into()),
            persona: Some("bot".into()),
            end_user: None,
            prompt: Some(format!("=call {i}")),
            tool: "list_offers".into(),
            arguments: json!({}),
            outcome: memberspot_hub::store::AuditOutcome::Ok,
            response: None,
            error: None,
            upstream_status: Some(200),
            latency_ms: 1,
            oauth_client: None,
        })
        .collect();
    for chunk in records.chunks(500) {
        store.append_audit_batch(chunk).await.unwrap();
    }
    store.close().await;

    let out = run(d, &["audit", "export"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), N);
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["request_id"], format!("req-{}", N - 1));

    let out = run(d, &["audit", "export", "--format", "csv"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        N + 1,
        "one header, one row per record"
    );
    assert_eq!(text.matches("seq,id,at").count(), 1);
    assert!(text.lines().nth(1).unwrap().contains("'=call 0"));
    // Times in CSV are what they are in JSON: epoch milliseconds.
    let csv_last_at: i64 = text
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Some(csv_last_at), last["at"].as_i64(), "{}", last["at"]);

    let out = run(d, &["audit", "export", "--limit", "10020"]).await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        10_020
    );
    let out = run(d, &["audit", "export", "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "a limit of 0 is a usage error");
}
