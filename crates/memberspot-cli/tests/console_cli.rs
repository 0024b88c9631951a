//! The console through the `memberspot` binary: `console add-user / list-users /
//! reset-password / remove-user` (passwords on stdin, never as arguments), and the
//! one-time setup link `serve` prints on a first run.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn cmd(dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_memberspot"));
    for var in [
        "MEMBERSPOT_API_KEY",
        "MEMBERSPOT_BASE_URL",
        "MEMBERSPOT_CONFIG",
        "MEMBERSPOT_CONNECTION",
        "MEMBERSPOT_PERSONA",
        "MEMBERSPOT_TOKEN",
        "MEMBERSPOT_MASTER_KEY",
        "MEMBERSPOT_PUBLIC_URL",
        "MEMBERSPOT_TIME_ZONE",
        "DATABASE_URL",
        "MEMBERSPOT_LOG",
    ] {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .kill_on_drop(true);
    c
}

async fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    child.wait_with_output().await.expect("output")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_users_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let none = run(d, &["console", "list-users"], "").await;
    assert!(none.status.success());
    assert!(text(&none).0.contains("no console users yet"));

    let added = run(
        d,
        &[
            "console",
            "add-user",
            "anna",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "a good long password\n",
    )
    .await;
    assert!(added.status.success(), "{:?}", text(&added));
    let viewer = run(
        d,
        &[
            "console",
            "add-user",
            "vera",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "another long password\n",
    )
    .await;
    assert!(viewer.status.success(), "{:?}", text(&viewer));

    // Bad input: a clear error naming the field, exit code 2, nothing stored.
    let short = run(
        d,
        &[
            "console",
            "add-user",
            "bob",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "short\n",
    )
    .await;
    assert_eq!(short.status.code(), Some(2), "{:?}", text(&short));
    assert!(
        text(&short)
            .1
            .contains("password: use at least 10 characters")
    );
    let bad_name = run(
        d,
        &[
            "console",
            "add-user",
            "no spaces",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "a good long password\n",
    )
    .await;
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(text(&bad_name).1.contains("name:"));
    let taken = run(
        d,
        &[
            "console",
            "add-user",
            "anna",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "a good long password\n",
    )
    .await;
    assert_eq!(taken.status.code(), Some(1));
    assert!(text(&taken).1.contains("already exists"));

    let listed = run(d, &["--json", "console", "list-users"], "").await;
    let users: serde_json::Value = serde_json::from_str(&text(&listed).0).expect("JSON");
    assert_eq!(users.as_array().map(Vec::len), Some(2), "{users}");
    assert_eq!(users[0]["name"], "anna");
    assert_eq!(users[0]["role"], "owner");
    assert_eq!(users[1]["role"], "viewer");
    assert!(
        !text(&listed).0.contains("argon2"),
        "no password hashes in listings"
    );

    let reset = run(
        d,
        &["console", "reset-password", "vera", "--password-stdin"],
        "a brand new password\n",
    )
    .await;
    assert!(reset.status.success(), "{:?}", text(&reset));
    // The stored hash now takes the new password and no longer the old one.
    let store =
        memberspot_hub::store::Store::open(&format!("sqlite://{}", d.join("hub.db").display()))
            .await
            .expect("the data directory's store");
    let vera = store
        .console_user("vera")
        .await
        .expect("read")
        .expect("vera");
    store.close().await;
    let hash = argon2::PasswordHash::new(&vera.password_hash).expect("a PHC string");
    let takes = |password: &str| {
        argon2::PasswordVerifier::verify_password(
            &argon2::Argon2::default(),
            password.as_bytes(),
            &hash,
        )
        .is_ok()
    };
    assert!(takes("a brand new password"));
    assert!(!takes("another long password"));
    let removed = run(d, &["console", "remove-user", "vera"], "").await;
    assert!(removed.status.success());
    let again = run(d, &["console", "remove-user", "vera"], "").await;
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("console user 'vera' not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_a_setup_link_on_the_first_run_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut server = cmd(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = tokio::io::BufReader::new(server.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    let mut link = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        seen.push_str(&line);
        seen.push('\n');
        if let Some(at) = line.find("http://")
            && line.contains("/setup?token=")
        {
            link = Some(line[at..].trim().to_owned());
            break;
        }
    }
    let link = link.unwrap_or_else(|| panic!("no setup link in:\n{seen}"));
    assert!(seen.contains("  console http://127.0.0.1:"), "{seen}");
    let page = reqwest::get(&link).await.expect("GET the link");
    assert_eq!(page.status(), 200);
    let body = page.text().await.expect("body");
    assert!(body.contains("<h1>Set up the console</h1>"), "{body}");
    let _ = server.kill().await;

    // With a console user, `serve` prints no link.
    let added = run(
        d,
        &[
            "console",
            "add-user",
            "anna",
            "--role",
            "owner",
            "--password-stdin",
        ],
        "a good long password\n",
    )
    .await;
    assert!(added.status.success());
    let mut server = cmd(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = tokio::io::BufReader::new(server.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("  store") {
            break;
        }
    }
    assert!(seen.contains("  console http://"), "{seen}");
    // The link would come right after the summary; give it a moment.
    if let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
    {
        assert!(!line.contains("setup?token="), "{line}");
    }
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_apps_and_sign_ins_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let bad = run(
        d,
        &[
            "oauth",
            "clients",
            "add",
            "Evil",
            "--redirect-uri",
            "http://evil.example/cb",
        ],
        "",
    )
    .await;
    assert!(!bad.status.success());
    let (_, err) = text(&bad);
    assert!(
        err.contains("redirect_uri `http://evil.example/cb`"),
        "{err}"
    );
    assert!(err.contains("https"), "{err}");

    let added = run(
        d,
        &[
            "--json",
            "oauth",
            "clients",
            "add",
            "Claude",
            "--redirect-uri",
            "https://claude.ai/api/mcp/auth_callback",
            "--redirect-uri",
            "https://claude.com/api/mcp/auth_callback",
        ],
        "",
    )
    .await;
    let (out, err) = text(&added);
    assert!(added.status.success(), "{err}");
    let client: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(client["kind"], "preregistered");
    let id = client["client_id"].as_str().expect("client id").to_owned();

    let listed = run(d, &["--json", "oauth", "clients", "list"], "").await;
    let clients: serde_json::Value = serde_json::from_str(&text(&listed).0).expect("json list");
    assert_eq!(clients[0]["client_id"], id);
    assert_eq!(
        clients[0]["redirect_uris"].as_array().map(Vec::len),
        Some(2)
    );

    let grants = run(d, &["oauth", "grants", "list"], "").await;
    assert_eq!(text(&grants).0.trim(), "no sign-ins yet");
    let unknown = run(d, &["oauth", "grants", "revoke", "nope"], "").await;
    assert!(!unknown.status.success());
    assert!(text(&unknown).1.contains("no OAuth grant `nope`"));

    let removed = run(d, &["oauth", "clients", "remove", &id], "").await;
    assert!(removed.status.success(), "{}", text(&removed).1);
    let audit = run(
        d,
        &[
            "--json",
            "audit",
            "search",
            "--tool",
            "admin.oauth_add_client",
        ],
        "",
    )
    .await;
    assert!(text(&audit).0.contains("Claude"), "{}", text(&audit).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_oauth_on_a_plain_http_public_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "http://hub.example.com",
        ],
        "",
    )
    .await;
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("plain http"), "{err}");
    assert!(err.contains("--public-url https://"), "{err}");
}
