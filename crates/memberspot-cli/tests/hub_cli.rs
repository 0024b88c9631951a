//! The hub through the `memberspot` binary: personas, `memberspot mcp`
//! over a real child-process stdio transport, `memberspot serve`, the audit
//! commands, connections with encrypted keys.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use rmcp::ServiceExt;
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CompleteRequestParams, ReadResourceRequestParams,
    Reference, RequestMetaObject, ResourceContents,
};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

mod common;

const SCHOOL_KEY: &str = "sk_live_cli_school_key_71c4e0a9b3d2f58e";

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

type StderrLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Starts `memberspot serve` on a free port; returns it, its base URL, what it printed up
/// to the line saying where it listens, and the rest of its stderr.
async fn start_serve(d: &Path) -> (tokio::process::Child, String, String, StderrLines) {
    start_serve_with(d, &[]).await
}

/// [`start_serve`] with more flags.
async fn start_serve_with(
    d: &Path,
    extra: &[&str],
) -> (tokio::process::Child, String, String, StderrLines) {
    let mut server = cmd(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
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
            return (server, addr, banner, lines);
        }
    }
    panic!("no listening line in:\n{banner}");
}

/// Stops `serve` as an init system would (SIGTERM) and expects a clean exit.
#[cfg(unix)]
async fn stop_gracefully(server: &mut tokio::process::Child) {
    let pid = server.id().expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("stops")
        .expect("status");
    assert!(status.success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_mcp_stdio_and_audit_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let created = json_of(
        &run(
            d,
            &["personas", "create", "helper", "--scopes", "read", "--json"],
        )
        .await,
        "create",
    );
    assert_eq!(created["name"], "helper");
    let token = created["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("msh_"));
    let listed = ok(&run(d, &["personas", "list"]).await, "list");
    assert!(
        listed.contains("helper") && !listed.contains(&token),
        "{listed}"
    );
    let bad = run(d, &["personas", "create", "x", "--scopes", "reed"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reed"));

    // MCP over stdio with the official SDK's client, the binary as a child process.
    let exe = env!("CARGO_BIN_EXE_memberspot");
    // Keep the stderr pipe open for the child's lifetime: a closed stderr would fail its notices.
    let (child, _stderr) =
        TokioChildProcess::builder(tokio::process::Command::new(exe).configure(|c| {
            c.arg("mcp")
                .env("MEMBERSPOT_DATA_DIR", d)
                .env("MEMBERSPOT_TOKEN", &token)
                .env_remove("MEMBERSPOT_API_KEY");
        }))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let client = ().serve(child).await.expect("MCP handshake over stdio");
    let tools = client.list_all_tools().await.expect("tools");
    assert_eq!(tools.len(), 7, "read scope only");
    let mut params = CallToolRequestParams::new("list_offers");
    params.meta = Some(RequestMetaObject::from(
        json!({"prompt": "what can I sell?"})
            .as_object()
            .cloned()
            .expect("object"),
    ));
    let r = client.call_tool(params).await.expect("call");
    assert_ne!(r.is_error, Some(true));
    assert!(
        r.structured_content
            .as_ref()
            .is_some_and(|v| v["offers"].is_array())
    );
    let refused = client
        .call_tool(
            CallToolRequestParams::new("delete_users").with_arguments(
                json!({"emails": ["a@b.de"]})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
        )
        .await
        .expect("result");
    assert_eq!(refused.is_error, Some(true));
    // Resources, prompts and completion over the real binary's stdio.
    let offers = client
        .read_resource(ReadResourceRequestParams::new("memberspot://offers"))
        .await
        .expect("resource");
    let ResourceContents::TextResourceContents { text, .. } = &offers.contents[0] else {
        panic!("a JSON text resource");
    };
    let first_offer = serde_json::from_str::<Value>(text).expect("json")["offers"][0]["name"]
        .as_str()
        .expect("offer name")
        .to_string();
    let prompts = client.list_all_prompts().await.expect("prompts");
    assert!(prompts.iter().any(|p| p.name == "daily_summary"));
    let completed = client
        .peer()
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("grant_access"),
            ArgumentInfo::new("offer", first_offer.chars().take(2).collect::<String>()),
        ))
        .await
        .expect("complete");
    assert!(completed.completion.values.contains(&first_offer));
    let _ = client.cancel().await;

    // CLI calls are audited too, with the reason.
    ok(
        &run(d, &["--reason", "weekly check", "offers", "list"]).await,
        "offers",
    );
    let records = json_of(
        &run(d, &["audit", "search", "--json", "--limit", "100"]).await,
        "audit",
    );
    let all = records.as_array().expect("records");
    // The persona changes made with the CLI are recorded as the operator's, the refused
    // one too; the token is not.
    let admin: Vec<(&str, &str)> = all
        .iter()
        .filter(|r| r["tool"].as_str().is_some_and(|t| t.starts_with("admin.")))
        .map(|r| {
            assert!(
                r["end_user"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("cli:")),
                "{r}"
            );
            (
                r["tool"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        admin,
        vec![
            ("admin.create_persona", "ok"),
            ("admin.create_persona", "invalid")
        ]
    );
    assert!(!records.to_string().contains(&token));
    let records: Vec<&Value> = all
        .iter()
        .filter(|r| !r["tool"].as_str().is_some_and(|t| t.starts_with("admin.")))
        .collect();
    let surfaces: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["surface"].as_str().unwrap_or(""),
                r["tool"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        surfaces,
        vec![
            ("mcp-stdio", "list_offers", "ok"),
            ("mcp-stdio", "delete_users", "denied"),
            // Reading memberspot://offers, and completing an offer name.
            ("mcp-stdio", "list_offers", "ok"),
            ("mcp-stdio", "list_offers", "ok"),
            ("cli", "list_offers", "ok")
        ]
    );
    assert_eq!(records[0]["prompt"], "what can I sell?");
    assert_eq!(records[0]["persona"], "helper");
    assert_eq!(records[4]["prompt"], "weekly check");
    let newest = json_of(
        &run(d, &["audit", "search", "--json", "--limit", "1"]).await,
        "audit --limit 1",
    );
    assert_eq!(newest[0]["seq"], records[4]["seq"], "the newest match");
    let denied = json_of(
        &run(d, &["audit", "search", "--outcome", "denied", "--json"]).await,
        "search",
    );
    assert_eq!(denied.as_array().map(Vec::len), Some(1));
    let export = ok(
        &run(d, &["audit", "export", "--format", "csv"]).await,
        "export",
    );
    assert_eq!(
        export.lines().count(),
        8,
        "header + 2 persona changes + 5 calls"
    );

    // Revoked: the next MCP session is refused.
    ok(&run(d, &["personas", "revoke", "helper"]).await, "revoke");
    let out = cmd(d)
        .args(["mcp", "--token", &token])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    // The chain verifies; an edited row is detected.
    ok(&run(d, &["audit", "verify"]).await, "verify");
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", d.join("hub.db").display()))
                .await
                .expect("db");
        sqlx::query("UPDATE audit_log SET prompt = 'something else' WHERE seq = (SELECT MIN(seq) FROM audit_log)")
            .execute(&mut c)
            .await
            .expect("tamper");
    }
    let out = run(d, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("TAMPERED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_without_a_persona_is_the_local_read_only_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = env!("CARGO_BIN_EXE_memberspot");
    let (child, stderr) =
        TokioChildProcess::builder(tokio::process::Command::new(exe).configure(|c| {
            c.arg("mcp")
                .env("MEMBERSPOT_DATA_DIR", dir.path())
                .env_remove("MEMBERSPOT_TOKEN")
                .env_remove("MEMBERSPOT_PERSONA");
        }))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let client = ().serve(child).await.expect("handshake");
    let tools = client.list_all_tools().await.expect("tools");
    assert!(
        tools
            .iter()
            .all(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true))
    );
    let users = client
        .call_tool(CallToolRequestParams::new("list_users"))
        .await
        .expect("call");
    assert!(
        users
            .structured_content
            .as_ref()
            .is_some_and(|v| v["users"].as_array().is_some_and(|u| !u.is_empty()))
    );
    let _ = client.cancel().await;
    let mut err = String::new();
    if let Some(mut s) = stderr {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut err)).await;
    }
    assert!(err.contains("local read-only default persona"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_keys_encrypted_and_serve_answers_rest() {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 4,
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
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let mut add = cmd(d)
        .args([
            "connections",
            "add",
            "school",
            "--url",
            &sandbox.base_url(),
            "--api-key-stdin",
            "--rps",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = add.stdin.take().expect("stdin");
        stdin.write_all(SCHOOL_KEY.as_bytes()).await.expect("write");
    }
    let out = add.wait_with_output().await.expect("add");
    let mut seen = ok(&out, "connections add");
    seen.push_str(&ok(&run(d, &["connections", "list"]).await, "list"));
    seen.push_str(&ok(
        &run(d, &["connections", "test", "school"]).await,
        "test",
    ));
    let created = json_of(
        &run(
            d,
            &[
                "personas",
                "create",
                "ops",
                "--connection",
                "school",
                "--scopes",
                "read,write",
                "--json",
            ],
        )
        .await,
        "create",
    );
    let token = created["token"].as_str().expect("token").to_string();
    let key_file = std::fs::read_to_string(d.join("master.key")).expect("key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(d.join("master.key"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    // serve: prints where it listens, answers REST with the persona token, stops on SIGTERM.
    let (mut server, addr, mut banner, mut lines) = start_serve(d).await;
    assert!(banner.contains("admin token written to"), "{banner}");
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{addr}/v1/tools/list_users/call"))
        .bearer_auth(&token)
        .json(&json!({"arguments": {"page_length": 3}, "prompt": "who signed up?"}))
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["result"]["users"].as_array().map(Vec::len), Some(3));
    seen.push_str(&body.to_string());
    let health = http
        .get(format!("{addr}/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    #[cfg(unix)]
    stop_gracefully(&mut server).await;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
    {
        banner.push_str(&line);
    }
    seen.push_str(&banner);

    // The key never shows, and the database file has no plaintext copy of it.
    assert!(
        !seen.contains(SCHOOL_KEY),
        "the school's key leaked into CLI output or logs"
    );
    assert!(!seen.contains(key_file.trim()), "the master key leaked");
    let mut raw = std::fs::read(d.join("hub.db")).expect("db");
    if let Ok(wal) = std::fs::read(d.join("hub.db-wal")) {
        raw.extend(wal);
    }
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        !raw.contains(SCHOOL_KEY),
        "plaintext API key in the database file"
    );
    assert!(
        !raw.contains(&token),
        "plaintext persona token in the database file"
    );
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_on_postgresql() {
    use sqlx::Connection;
    let admin = std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cli_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run for this test: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create db");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pg = |args: &[&str]| {
        let mut c = cmd(d);
        c.env("DATABASE_URL", &url).args(args).stdin(Stdio::null());
        c
    };
    let out = pg(&["personas", "create", "pg-bot", "--json"])
        .output()
        .await
        .expect("runs");
    assert!(json_of(&out, "create")["token"].is_string());
    let out = pg(&["--reason", "pg check", "offers", "list"])
        .output()
        .await
        .expect("runs");
    ok(&out, "offers");
    let out = pg(&["audit", "search", "--json"])
        .output()
        .await
        .expect("runs");
    let records = json_of(&out, "audit");
    assert_eq!(records.as_array().map(Vec::len), Some(2), "{records}");
    assert_eq!(records[0]["tool"], "admin.create_persona");
    assert_eq!(records[1]["prompt"], "pg check");
    ok(
        &pg(&["audit", "verify"]).output().await.expect("runs"),
        "verify",
    );
    assert!(
        !d.join("hub.db").exists(),
        "nothing written to SQLite when DATABASE_URL is set"
    );
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_as_a_persona_is_scoped_revocable_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(&run(d, &["personas", "create", "reader"]).await, "create");
    ok(
        &run(
            d,
            &[
                "--persona",
                "reader",
                "--reason",
                "look around",
                "offers",
                "list",
            ],
        )
        .await,
        "allowed",
    );
    let denied = run(
        d,
        &[
            "--persona",
            "reader",
            "users",
            "delete",
            "someone@example.com",
            "--yes",
        ],
    )
    .await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("may not call"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let records = json_of(
        &run(d, &["audit", "search", "--persona", "reader", "--json"]).await,
        "audit",
    );
    let seen: Vec<(&str, &str, &str)> = records
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["surface"].as_str().unwrap_or(""),
                r["tool"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("cli", "list_offers", "ok"),
            ("cli", "delete_users", "denied")
        ]
    );
    assert_eq!(records[0]["prompt"], "look around");
    ok(&run(d, &["personas", "revoke", "reader"]).await, "revoke");
    let refused = run(d, &["--persona", "reader", "offers", "list"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));
}

/// One embedded school per data directory: a CLI command next to a running `serve`
/// changes the school `serve` answers from, and `serve` keeps that change when it saves
/// the school on exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_serve_share_one_embedded_school() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let args = [
        "personas",
        "create",
        "support",
        "--scopes",
        "read,write",
        "--json",
    ];
    let created = json_of(&run(d, &args).await, "create");
    let token = created["token"].as_str().expect("token").to_string();
    let offers = json_of(&run(d, &["offers", "list", "--json"]).await, "offers");
    let offer = offers
        .as_array()
        .and_then(|o| o.first())
        .and_then(|o| o["id"].as_str())
        .unwrap_or_else(|| panic!("an offer in {offers}"))
        .to_string();

    let (mut server, addr, _, mut lines) = start_serve(d).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // Granted by the CLI while serve runs: serve's next call sees the member.
    let email = "zed.cli@example.com";
    ok(
        &run(d, &["users", "grant", email, "--offer", &offer]).await,
        "grant next to serve",
    );
    let resp = reqwest::Client::new()
        .post(format!("{addr}/v1/tools/find_user_by_email/call"))
        .bearer_auth(&token)
        .json(&json!({ "arguments": { "email": email } }))
        .send()
        .await
        .expect("call");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(status, 200, "serve sees the CLI's member: {body}");

    #[cfg(unix)]
    {
        stop_gracefully(&mut server).await;
        // Saved by serve on exit, the CLI's change included.
        let found = json_of(&run(d, &["users", "find", email, "--json"]).await, "find");
        assert!(found.to_string().contains(email), "{found}");
    }
}

/// Bad input is exit code 2 with a message naming the problem, and changes nothing;
/// set-up mistakes (a mistyped database URL, a lost key file) are refused, not papered
/// over with a fresh empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_set_up_mistakes_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let usage = |out: &Output, what: &str, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
        assert!(
            !err.contains("denied:"),
            "{what}: not a permission problem: {err}"
        );
    };
    let bad_scope = run(d, &["personas", "create", "x1", "--scopes", "reed"]).await;
    usage(&bad_scope, "unknown scope", "reed");
    usage(
        &run(d, &["personas", "create", "bad name"]).await,
        "bad name",
        "bad name",
    );
    usage(
        &run(d, &["personas", "create", "x2", "--offers", ""]).await,
        "empty offer id",
        "offer id",
    );
    // Offer ids are checked against the persona's school (here the embedded sandbox).
    usage(
        &run(d, &["personas", "create", "x3", "--offers", "NOSUCH"]).await,
        "unknown offer",
        "NOSUCH",
    );
    usage(
        &run(d, &["--timeout", "0", "users", "list"]).await,
        "zero timeout",
        "--timeout",
    );
    usage(
        &run(d, &["audit", "search", "--since", "yesterday"]).await,
        "bad --since",
        "yesterday",
    );
    usage(
        &run(d, &["audit", "search", "--surface", "bogus"]).await,
        "bad --surface",
        "bogus",
    );
    usage(
        &run(d, &["serve", "--request-timeout", "0"]).await,
        "zero request timeout",
        "request-timeout",
    );
    usage(
        &run(d, &["events", "list", "--status", "bogus"]).await,
        "bad --status",
        "bogus",
    );
    usage(
        &run(d, &["flows", "run", "x", "--input", "notjson"]).await,
        "bad --input",
        "not JSON",
    );
    let listed = json_of(&run(d, &["personas", "list", "--json"]).await, "list");
    assert_eq!(listed, json!([]), "nothing was created");

    let offers = json_of(&run(d, &["offers", "list", "--json"]).await, "offers");
    let offer = offers[0]["id"].as_str().expect("an offer").to_string();
    let restricted = json_of(
        &run(
            d,
            &[
                "personas", "create", "desk", "--scopes", "write", "--offers", &offer, "--json",
            ],
        )
        .await,
        "create with a real offer",
    );
    assert_eq!(restricted["offer_ids"], json!([offer]), "{restricted}");

    // `--json` where it was missing.
    ok(&run(d, &["personas", "create", "p1"]).await, "create");
    let granted = json_of(
        &run(d, &["personas", "grant-scope", "p1", "write", "--json"]).await,
        "grant-scope",
    );
    assert_eq!(granted["name"], "p1", "{granted}");
    let revoked = json_of(
        &run(d, &["personas", "revoke", "p1", "--json"]).await,
        "revoke",
    );
    assert_eq!(revoked["revoked"], true, "{revoked}");

    // A new admin token replaces the one in the file serve wrote.
    let minted = json_of(&run(d, &["admin-token", "--json"]).await, "admin-token");
    let in_file = std::fs::read_to_string(d.join("admin.token")).expect("admin.token");
    assert_eq!(minted["admin_token"].as_str(), Some(in_file.trim()));

    // A mistyped PostgreSQL URL is not taken as a file name.
    let typo = cmd(d)
        .env("DATABASE_URL", "postgress://postgres@127.0.0.1:5432/hub")
        .args(["personas", "list"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && err.contains("postgress"), "{err}");
    let strays: Vec<_> = std::fs::read_dir(".")
        .expect("cwd")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("postgress"))
        .collect();
    assert!(strays.is_empty(), "no database file was created");

    // A lost key file is reported, and no new key takes its place.
    std::fs::remove_file(d.join("master.key")).expect("remove key");
    let lost = run(d, &["personas", "list"]).await;
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success() && err.contains("restore"), "{err}");
    assert!(!d.join("master.key").exists());
}

/// A plain HTTP server on 127.0.0.1 answering every request with `answer`; each
/// request's head (lower-cased) is sent to the receiver.
async fn raw_server(answer: String) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_ascii_lowercase());
            let _ = tcp.write_all(answer.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_leaves_for_another_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // Plain http:// to a host that is not loopback is refused where it is entered.
    let out = run(
        d,
        &[
            "connections",
            "add",
            "plain",
            "--url",
            "http://school.example/v1",
            "--api-key",
            "sk_x",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "refused as bad input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https://") && err.contains("loopback"),
        "{err}"
    );
    let out = cmd(d)
        .args(["users", "list"])
        .env("MEMBERSPOT_API_KEY", "sk_x")
        .env("MEMBERSPOT_BASE_URL", "http://10.1.2.3/v1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        "[memberspot]\nbase_url = \"http://school.example/v1\"\napi_key = \"sk_x\"\n",
    )
    .expect("write");
    let out = run(
        d,
        &["--config", config.to_str().expect("utf-8"), "users", "list"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memberspot.base_url") && err.contains("https://"),
        "{err}"
    );

    // A school URL that redirects elsewhere: `connections add` refuses it and `connections
    // test` fails on a connection moved there later, both naming the status and the host;
    // the other host never sees the key.
    let (collector, mut collected) =
        raw_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
    let (redirector, _) = raw_server(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://{collector}/v1/api-keys/check?token=t\r\ncontent-length: 0\r\n\r\n"
    ))
    .await;
    let moved_url = format!("http://{redirector}/v1");
    let add = [
        "connections",
        "add",
        "moved",
        "--api-key",
        SCHOOL_KEY,
        "--url",
    ];
    let out = run(d, &[&add[..], &[moved_url.as_str()]].concat()).await;
    assert_eq!(out.status.code(), Some(2), "refused where it is entered");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("302") && err.contains(&collector), "{err}");
    assert!(
        !err.contains("token=") && !err.contains(SCHOOL_KEY),
        "{err}"
    );
    let school = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        rate_limit: 0.0,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    ok(
        &run(d, &[&add[..], &[school.base_url().as_str()]].concat()).await,
        "add",
    );
    ok(
        &run(d, &["connections", "update", "moved", "--url", &moved_url]).await,
        "move",
    );
    let out = run(d, &["connections", "test", "moved"]).await;
    assert_eq!(out.status.code(), Some(1), "the test fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("302") && err.contains(&collector), "{err}");
    assert!(
        !err.contains("token=") && !err.contains(SCHOOL_KEY),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        collected.try_recv().is_err(),
        "the other host got no request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_closes_slow_connections_and_checks_origins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = run(d, &["serve", "--allowed-origin", "app.example"]).await;
    assert_eq!(out.status.code(), Some(2), "an origin needs a scheme");
    assert!(String::from_utf8_lossy(&out.stderr).contains("app.example"));

    let (mut server, base, _, _stderr) = start_serve_with(
        d,
        &[
            "--header-read-timeout",
            "1",
            "--body-read-timeout",
            "1",
            "--allowed-origin",
            "https://agents.example",
        ],
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    // Half a header to a webhook receiver: closed after the header read time-out.
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tcp.write_all(b"POST /hooks/ds24 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A browser page from a foreign origin is refused on /mcp; an allowed one is not.
    let mcp = |origin: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .header("origin", origin)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
    };
    assert_eq!(
        mcp("https://evil.example")
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        mcp("https://agents.example")
            .await
            .expect("post")
            .status()
            .as_u16(),
        401,
        "past the Origin check, the token is asked for"
    );
    stop_gracefully(&mut server).await;
}
