//! The events commands through the real binary: `rules validate`, `events …`, and crash
//! safety: 500 signed Digistore24
//! purchases are delivered while `memberspot serve` is killed with SIGKILL and restarted
//! twice. Senders retry until acknowledged, as providers do. Afterwards every purchase was
//! granted exactly once (counted by the sandbox), none lost. (Several instances on one
//! PostgreSQL database run in process: app.rs.) Which school a source acts on is never
//! assumed once a real school is connected: `serve` refuses to start, `validate` says so.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use serde_json::Value;

const SCHOOL_KEY: &str = "sk_live_crash_school_key_0c9a7e5d3b1f";
const MASTER_KEY: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";
const PASS: &str = "crash-test-passphrase";
const GRANT: &str = "POST /v1/users/grant-user-offer-by-mail";

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
        "DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir)
        .env("MEMBERSPOT_MASTER_KEY", MASTER_KEY)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("MEMBERSPOT_LOG", "warn")
        .kill_on_drop(true);
    if let Some(url) = db {
        c.env("DATABASE_URL", url);
    }
    c
}

async fn sandbox() -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 11,
        size: SeedSize {
            users: 5,
            offers: 2,
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

/// Adds the `school` connection and writes the rules file; returns its path.
async fn setup(dir: &Path, db: Option<&str>, sb: &Sandbox) -> PathBuf {
    let mut c = cmd(dir, db);
    c.args([
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
    let mut child = c.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(SCHOOL_KEY.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    // Two hubs share one database: the second `add` finds it there.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("already exists"),
        "connections add: {stderr}"
    );
    let offer = common::sandbox_state(sb).await["offers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{PASS}\"\nconnection = \"school\"\n\n\
             [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"{offer}\"\n\n\
             [processing]\nlease_secs = 3\nbase_backoff_secs = 0.2\n"
        ),
    )
    .unwrap();
    rules
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_serve(
    dir: &Path,
    db: Option<&str>,
    rules: &Path,
    port: u16,
) -> tokio::process::Child {
    let mut c = cmd(dir, db);
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--rules"])
        .arg(rules)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            return child;
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn purchase(i: usize) -> String {
    common::ipn(PASS, "on_payment", i)
}

/// Posts purchase `i` until the hub answers `OK` (a provider retries unacknowledged
/// deliveries).
async fn deliver(ports: &[u16], i: usize) {
    deliver_body(ports, i, purchase(i)).await
}

async fn deliver_body(ports: &[u16], i: usize, body: String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for attempt in 0.. {
        let port = ports[(i + attempt) % ports.len()];
        let r = http
            .post(format!("http://127.0.0.1:{port}/hooks/ds24"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
            && r.text().await.unwrap_or_default() == "OK"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every one of `n` events is done, reading the store through the CLI.
async fn wait_done(dir: &Path, db: Option<&str>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = cmd(dir, db)
            .args(["events", "list", "--limit", "10000", "--json"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if list.len() == n && list.iter().all(|e| e["status"] == "done") {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "not all done: {} events, statuses {:?}",
            list.len(),
            list.iter()
                .filter(|e| e["status"] != "done")
                .map(|e| e["status"].clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn assert_granted_once(sb: &Sandbox, n: usize) {
    let state = common::sandbox_state(sb).await;
    assert_eq!(
        state["counters"]["succeeded"][GRANT].as_u64(),
        Some(n as u64),
        "each purchase granted exactly once"
    );
    let users = state["users"].as_array().unwrap();
    for i in 0..n {
        let email = format!("buyer{i:04}@example.de");
        let u = users
            .iter()
            .find(|u| u["email"] == email.as_str())
            .unwrap_or_else(|| panic!("{email} missing"));
        let order = format!("ORD-{i:04}");
        assert!(
            u["offers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["orderId"] == order.as_str() && h["active"] == true)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_twice_during_500_deliveries_loses_nothing_and_grants_once() {
    const N: usize = 500;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = setup(dir.path(), None, &sb).await;
    let port = free_port();
    let mut hub = start_serve(dir.path(), None, &rules, port).await;

    let acked = Arc::new(AtomicUsize::new(0));
    let senders = {
        let acked = acked.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(0..N)
                .for_each_concurrent(8, |i| {
                    let acked = acked.clone();
                    async move {
                        deliver(&[port], i).await;
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await;
        })
    };
    for threshold in [150, 330] {
        while acked.load(Ordering::SeqCst) < threshold {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hub.start_kill().unwrap(); // SIGKILL
        hub.wait().await.unwrap();
        hub = start_serve(dir.path(), None, &rules, port).await;
    }
    senders.await.unwrap();
    let events = wait_done(dir.path(), None, N).await;
    assert_eq!(events.len(), N);
    let redelivered = events
        .iter()
        .filter(|e| e["redeliveries"].as_i64() > Some(0))
        .count();
    let retried = events
        .iter()
        .filter(|e| e["attempts"].as_i64() > Some(1))
        .count();
    eprintln!(
        "{redelivered} deliveries were redelivered, {retried} events took more than one attempt"
    );
    assert_granted_once(&sb, N).await;
    hub.start_kill().unwrap();
    let _ = hub.wait().await;

    // `events show` names the rule and its offer (by name, from the school).
    let offer = &common::sandbox_state(&sb).await["offers"][0];
    let id = events[0]["id"].as_str().unwrap().to_owned();
    let out = cmd(dir.path(), None)
        .args(["--rules", rules.to_str().unwrap(), "events", "show", &id])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "rule       1 (line 6): product `1` grants {} ({})",
        offer["name"].as_str().unwrap(),
        offer["id"].as_str().unwrap()
    );
    assert!(
        shown.lines().any(|l| l == expected),
        "{expected}\n{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_validate_names_lines_and_events_commands_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.toml");
    std::fs::write(
        &good,
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret_env = \"MEMBERSPOT_TEST_UNSET_PASS\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"o\"\n",
    )
    .unwrap();
    let out = cmd(d, None)
        .args(["rules", "validate"])
        .arg(&good)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 source(s), 1 rule(s)"), "{stdout}");
    assert!(stdout.contains("/hooks/ds24"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MEMBERSPOT_TEST_UNSET_PASS is not set"),
        "{stderr}"
    );

    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        "[sources.a]\nprovider = \"stripe\"\nsecret = \"x\"\n\n[[rules]]\nsource = \"b\"\nproduct = \"\"\noffer = \"o\"\naccess_days = 0\n",
    )
    .unwrap();
    let out = cmd(d, None)
        .args(["rules", "validate"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:6:10: rule 1: unknown source `b`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:11: rule 1: `product` must not be empty")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:9:15: rule 1: `access_days` must be at least 1"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    let out = cmd(d, None)
        .args(["rules", "validate", "--json"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["line"], 6);

    // A fresh hub: no events; unknown ids are clear errors.
    let out = cmd(d, None)
        .args(["events", "list", "--unmatched", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let out = cmd(d, None)
        .args(["events", "show", "nope"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event with id `nope`"));
    let out = cmd(d, None)
        .args(["events", "list", "--status", "finished"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'finished'") && stderr.contains("--status"),
        "{stderr}"
    );
    let out = cmd(d, None)
        .args(["events", "replay"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

/// Runs `memberspot ARGS` on the data directory `d`: (exit code, stdout, stderr).
async fn run(d: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd(d, None).args(args).output())
        .await
        .expect("the command returns")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_school_is_assumed_once_a_real_school_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{PASS}\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"o\"\n"
    );
    let unnamed = d.join("unnamed.toml");
    std::fs::write(&unnamed, &body).unwrap();
    let unnamed_s = unnamed.display().to_string();
    let flows = d.join("flows-unnamed.toml");
    std::fs::write(
        &flows,
        "[[flows]]\nname = \"offers\"\ntrigger.manual = true\n\n\
         [[flows.steps]]\nname = \"list\"\ntool = \"list_offers\"\n",
    )
    .unwrap();
    let flows_s = flows.display().to_string();

    // No hub database yet: validating decides nothing (and creates none).
    let (code, stdout, stderr) = run(d, &["rules", "validate", &unnamed_s]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("acts on the school decided when `serve` starts"),
        "{stdout}"
    );
    assert!(!d.join("hub.db").exists());

    // The embedded sandbox is the only connection: it is the school, and it says so.
    let (code, _, stderr) = run(d, &["connections", "list"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = run(d, &["rules", "validate", "--offline", &unnamed_s]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("acts on `sandbox` (the embedded sandbox, not a real school"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(d, &["flows", "validate", &flows_s]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("flow `offers` acts on `sandbox` (the embedded sandbox"),
        "{stdout}"
    );

    // A real school: naming none is an error, for `validate` and for `serve`.
    let sb = sandbox().await;
    setup(d, None, &sb).await;
    let (code, _, stderr) = run(d, &["rules", "validate", &unnamed_s]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "source `ds24`: no `connection` is set, and the hub has schools besides the embedded \
         sandbox (connections: sandbox, school); name one with `connection = \"…\"`, or set \
         `default_connection` at the top of the rules file {unnamed_s}"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let (code, stdout, _) = run(d, &["rules", "validate", "--json", &unnamed_s]).await;
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("source `ds24`: no `connection`")),
        "{v}"
    );
    let (code, _, stderr) = run(d, &["flows", "validate", &flows_s]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("flow `offers`: no `connection` is set")
            && stderr.contains(&format!("the flows file {flows_s}")),
        "{stderr}"
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (code, _, stderr) = run(d, &["serve", "--listen", &listen, "--rules", &unnamed_s]).await;
    assert_ne!(code, Some(0), "serve refuses to start: {stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        reqwest::get(format!("http://{listen}/healthz"))
            .await
            .is_err(),
        "nothing listens"
    );

    // The file's default_connection picks the school of every item that names none.
    let rules = d.join("default.toml");
    std::fs::write(&rules, format!("default_connection = \"school\"\n\n{body}")).unwrap();
    let rules_s = rules.display().to_string();
    std::fs::write(
        &flows,
        format!(
            "default_connection = \"school\"\n\n{}",
            std::fs::read_to_string(&flows).unwrap()
        ),
    )
    .unwrap();
    // The rule's offer `o` is not one of the school's: one read finds it, names the rule
    // and lists the school's offers; `--offline` skips the read.
    let (code, _, stderr) = run(d, &["rules", "validate", &rules_s]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let first_offer = common::sandbox_state(&sb).await["offers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stderr.contains("rule 1: offer `o` does not exist (its offers: ")
            && stderr.contains(&first_offer)
            && stderr.contains("on connection `school`"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(d, &["rules", "validate", "--offline", &rules_s]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("offers not checked (--offline)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("acts on `school` (default_connection) as persona `hook-ds24`"),
        "{stdout}"
    );
    let (_, stdout, _) = run(d, &["rules", "validate", "--json", "--offline", &rules_s]).await;
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["schools"]["source `ds24`"],
        serde_json::json!({"connection": "school", "choice": "default"}),
        "{v}"
    );
    let (_, stdout, _) = run(d, &["flows", "validate", "--json", &flows_s]).await;
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schools"]["flow `offers`"]["connection"], "school", "{v}");

    // `serve` starts, and its summary names each item's school.
    let log = d.join("serve.log");
    let mut serve = cmd(d, None);
    serve
        .args([
            "serve", "--listen", &listen, "--rules", &rules_s, "--flows", &flows_s,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut child = serve.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://{listen}/healthz"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "serve did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A forged delivery is refused at the door, and listed as refused.
    let forged = reqwest::Client::new()
        .post(format!("http://{listen}/hooks/ds24"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=on_payment&order_id=F-1&buyer_email=f%40example.com&sha_sign=FORGED")
        .send()
        .await
        .unwrap();
    assert!(forged.status().is_client_error(), "{}", forged.status());
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let (code, stdout, stderr) = run(d, &["events", "list", "--refused", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let refused: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{refused}");
    assert_eq!(refused[0]["source"], "ds24");
    assert!(
        !stdout.contains("F-1"),
        "nothing of the body is kept: {stdout}"
    );
    let (code, stdout, _) = run(d, &["events", "list", "--refused"]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("ds24") && stdout.contains("digistore24"),
        "{stdout}"
    );
    let (code, _, stderr) = run(d, &["events", "list", "--refused", "--kind", "purchase"]).await;
    assert_eq!(
        code,
        Some(2),
        "--refused lists deliveries, not events: {stderr}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    for line in [
        "          source `ds24` acts on `school` (default_connection)",
        "          flow `offers` acts on `school` (default_connection)",
    ] {
        assert!(log.lines().any(|l| l == line), "{line}: {log}");
    }
    // It starts with the missing offer, and says loudly that its purchases will go dead.
    assert!(
        log.lines()
            .any(|l| l.starts_with("  WARNING the rules file, line ")
                && l.contains("rule 1: offer `o` does not exist")
                && l.ends_with("its purchases will go dead")),
        "{log}"
    );
    let _ = sb.shutdown().await;
}
