//! Flows through the real binary: a fresh install pointed at the sandbox with only the
//! delivery settings configured sends the daily summary by e-mail (a real SMTP
//! conversation) and to Slack (a local stand-in); `flows validate` names lines; two
//! `memberspot serve` processes on one PostgreSQL database send each scheduled summary once.

#![allow(clippy::unwrap_used)]

#[path = "../../memberspot-notify/tests/it/smtp_server.rs"]
mod smtp_server;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cmd(dir: &Path) -> tokio::process::Command {
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
        "DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env(
            "MEMBERSPOT_MASTER_KEY",
            "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
        )
        .kill_on_drop(true);
    c
}

async fn slack_stand_in() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/services/T1/B1/secret",
        post({
            let seen = seen.clone();
            move |axum::Json(v): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(v);
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/services/T1/B1/secret"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_install_sends_the_daily_summary_by_email_and_slack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let smtp = smtp_server::SmtpServer::start(smtp_server::Behaviour::default()).await;
    let (slack, seen) = slack_stand_in().await;
    // Only the delivery settings.
    std::fs::write(
        d.join("flows.toml"),
        format!(
            "[delivery.email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"hub@example.com\"\nto = [\"owner@example.com\"]\n\n\
             [delivery.slack]\nwebhook_url_env = \"TEST_SLACK_URL\"\n",
            smtp.port
        ),
    )
    .unwrap();
    let out = cmd(d)
        .env("TEST_SLACK_URL", &slack)
        .args(["digest"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sent to Slack"), "{stderr}");
    assert!(stderr.contains("sent to Email"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the webhook URL never appears: {stderr}"
    );
    let mail = smtp.sessions().last().unwrap().data.clone().unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&mail).unwrap();
    assert!(parsed.subject().unwrap().starts_with("Memberspot – "));
    assert!(parsed.body_text(0).unwrap().contains("NEEDS ATTENTION"));
    assert!(parsed.body_html(0).is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The run is in the history.
    let out = cmd(d)
        .args(["flows", "history", "digest", "--json"])
        .output()
        .await
        .unwrap();
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "ok");

    // A dry run prints and sends nothing.
    let out = cmd(d)
        .env("TEST_SLACK_URL", &slack)
        .args(["digest", "--dry-run", "--date", "2026-03-29"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Memberspot – 29 Mar 2026"));
    assert_eq!(seen.lock().unwrap().len(), 1, "dry run: nothing sent");

    // Validation names lines.
    std::fs::write(
        d.join("bad.toml"),
        "[digest]\nat = \"7 Uhr\"\n\n[[flows]]\nname = \"x\"\ntrigger.cron = \"0 7 * *\"\n\n\
         [[flows]]\nname = \"y\"\ntrigger.manual = true\n\n[[flows.steps]]\nname = \"s\"\ntool = \"no_such_tool\"\n",
    )
    .unwrap();
    let out = cmd(d)
        .args(["flows", "validate"])
        .arg(d.join("bad.toml"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:1:1: digest.at: `7 Uhr` is not a time like 07:00"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:6:16: flow `x`: cron expression `0 7 * *` has 4 fields"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flow `y` step `s`: unknown tool `no_such_tool`"),
        "{stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres_send_each_scheduled_summary_once() {
    use sqlx::Connection;
    let admin = std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("sched_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);

    let (slack, seen) = slack_stand_in().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut hubs = Vec::new();
    for dir in &dirs {
        // Every minute, and a missed fire is caught up on start: both hubs start by trying
        // to send this minute's summary.
        std::fs::write(
            dir.path().join("flows.toml"),
            format!("[digest]\ncron = \"* * * * *\"\nmissed = \"catch_up\"\n\n[delivery.slack]\nwebhook_url = \"{slack}\"\n"),
        )
        .unwrap();
        let mut c = cmd(dir.path());
        // Kept for the failure message: a hub that did not fire says why in its log.
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        c.env("DATABASE_URL", &url)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        hubs.push(c.spawn().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let runs = loop {
        let out = cmd(dirs[0].path())
            .env("DATABASE_URL", &url)
            .args(["flows", "history", "digest", "--json"])
            .output()
            .await
            .unwrap();
        let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !runs.is_empty() && runs.iter().all(|r| r["status"] != "running") {
            break runs;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = dirs
                .iter()
                .map(|d| std::fs::read_to_string(d.path().join("serve.log")).unwrap_or_default())
                .collect();
            panic!(
                "no finished digest run within 90 s\nruns: {runs:?}\nhistory stderr: {}\nhub logs:\n{}",
                String::from_utf8_lossy(&out.stderr),
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Give the slower hub time to try the same fire.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for h in &mut hubs {
        h.start_kill().unwrap();
        let _ = h.wait().await;
    }
    let out = cmd(dirs[0].path())
        .env("DATABASE_URL", &url)
        .args(["flows", "history", "digest", "--json"])
        .output()
        .await
        .unwrap();
    let runs_after: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let keys: std::collections::BTreeSet<String> = runs_after
        .iter()
        .map(|r| r["fire_key"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        keys.len(),
        runs_after.len(),
        "each fire recorded once: {runs_after:?}"
    );
    assert!(runs_after.len() >= runs.len());
    assert_eq!(
        seen.lock().unwrap().len(),
        runs_after.len(),
        "one Slack message per fire"
    );
    let workers: std::collections::BTreeSet<&str> = runs_after
        .iter()
        .filter_map(|r| r["worker"].as_str())
        .collect();
    assert!(!workers.is_empty());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
