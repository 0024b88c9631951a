//! The `memberspot` binary end to end: spawned as a process, pointed at a
//! sandbox over real HTTP (or at its own embedded sandbox). Both speak the shapes named
//! in `MEMBERSPOT_SANDBOX_SHAPES` (documented when unset); `scripts/test` runs this suite
//! in every mode.

use std::path::Path;
use std::process::Output;

use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize, Shapes};
use serde_json::{Value, json};

const KEY: &str = "sk_cli_test_8d1f0c3b9a7e4d2c6b5a";

async fn sandbox(rate_limit: f64, faults: Faults) -> Sandbox {
    sandbox_with(rate_limit, faults, shapes()).await
}

/// A sandbox speaking `shapes`, whatever this run's mode.
async fn sandbox_with(rate_limit: f64, faults: Faults, shapes: Shapes) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        seed: 11,
        size: SeedSize {
            users: 25,
            offers: 4,
            courses: 3,
        },
        rate_limit,
        faults,
        state_file: None,
        shapes,
    })
    .await
    .expect("sandbox starts")
}

/// The shape mode this run's sandboxes speak (the spawned binary's embedded school reads
/// the same variable).
fn shapes() -> Shapes {
    Shapes::from_env().expect("a known shape mode")
}

fn cmd(data_dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_memberspot"));
    for var in [
        "MEMBERSPOT_API_KEY",
        "MEMBERSPOT_BASE_URL",
        "MEMBERSPOT_CONFIG",
        "MEMBERSPOT_RATE_LIMIT",
        "MEMBERSPOT_TIMEOUT",
        "MEMBERSPOT_LOG",
    ] {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", data_dir)
        .env("XDG_CONFIG_HOME", data_dir.join("config"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(sb: Option<&Sandbox>, data_dir: &Path, args: &[&str]) -> Output {
    let mut c = cmd(data_dir);
    if let Some(sb) = sb {
        c.env("MEMBERSPOT_BASE_URL", sb.base_url())
            .env("MEMBERSPOT_API_KEY", KEY)
            .env("MEMBERSPOT_RATE_LIMIT", "0");
    }
    c.args(args).output().await.expect("binary runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn state(sb: &Sandbox) -> Value {
    reqwest_get(&format!("{}/_sandbox/state", sb.root_url())).await
}

async fn reqwest_get(url: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(url)
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("admin request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("admin json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_json_has_all_seventeen_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(None, dir.path(), &["tools", "list", "--json"]).await;
    assert_ok(&out, "tools list");
    let tools = stdout_json(&out);
    let tools = tools.as_array().expect("array");
    assert_eq!(tools.len(), 17);
    for t in tools {
        for key in ["name", "description", "input_schema", "annotations"] {
            assert!(t.get(key).is_some(), "{key} missing in {t}");
        }
    }
    let out = run(
        None,
        dir.path(),
        &["tools", "describe", "set_user_offer_state"],
    )
    .await;
    assert_ok(&out, "describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("destructive") && text.contains("state"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_can_be_called_through_the_cli() {
    let sb = sandbox(0.0, Faults::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let st = state(&sb).await;
    let offer = st["offers"][0]["id"].as_str().expect("offer").to_string();
    let course = st["courses"][0]["id"].as_str().expect("course").to_string();
    let chapter = st["courses"][0]["chapters"][0]["id"]
        .as_str()
        .expect("chapter")
        .to_string();
    let exam = st["exams"][0]["id"].as_str().expect("exam").to_string();
    let prop = st["customProperties"][0]["id"]
        .as_str()
        .expect("prop")
        .to_string();
    let email = "cli.tester@example.com";

    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "tools",
            "call",
            "grant_user_offer_by_email",
            "--arg",
            &format!("email={email}"),
            "--arg",
            &format!("offer_id={offer}"),
            "--arg",
            "order_id=ORD-CLI",
        ],
    )
    .await;
    assert_ok(&out, "grant");
    let uid = stdout_json(&out)["user"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();

    let calls: Vec<(&str, Value, &str)> = vec![
        ("list_users", json!({"page_length": 5}), "users"),
        ("find_user_by_email", json!({"email": email}), "uid"),
        ("list_offers", json!({}), "offers"),
        ("list_custom_user_properties", json!({}), "properties"),
        (
            "set_custom_user_properties",
            json!({"email": email, "properties": [{"id": prop, "value": "x"}]}),
            "user",
        ),
        (
            "enable_chapter_access",
            json!({"email": email, "course_id": course, "chapter_id": chapter}),
            "enabled",
        ),
        (
            "list_user_course_progress",
            json!({"email": email}),
            "progress",
        ),
        (
            "get_user_course_progress",
            json!({"email": email, "course_id": course}),
            "courseId",
        ),
        ("create_login_token", json!({"uid": uid}), "token"),
        ("list_exam_results", json!({"exam_id": exam}), "results"),
        (
            "set_offer_expiration",
            json!({"email": email, "offer_id": offer, "expires_at": "2031-01-01"}),
            "user",
        ),
        (
            "set_user_offer_state",
            json!({"email": email, "offer_id": offer, "state": "inactive"}),
            "user",
        ),
        (
            "set_order_state",
            json!({"email": email, "order_id": "ORD-CLI", "state": "active"}),
            "user",
        ),
        (
            "delete_users_post",
            json!({"emails": ["nobody@example.com"]}),
            "result",
        ),
        ("delete_users", json!({"emails": [email]}), "result"),
    ];
    for (tool, args, key) in calls {
        let args = args.to_string();
        let out = run(
            Some(&sb),
            dir.path(),
            &["tools", "call", tool, "--json", &args, "--yes"],
        )
        .await;
        assert_ok(&out, tool);
        let v = stdout_json(&out);
        assert!(v.get(key).is_some(), "{tool}: `{key}` missing in {v}");
    }
    let after = state(&sb).await;
    assert!(
        !after["users"]
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u["email"] == email),
        "deleted through the CLI"
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_destructive_needs_yes() {
    let sb = sandbox(0.0, Faults::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        Some(&sb),
        dir.path(),
        &["tools", "call", "find_user_by_email", "--arg", "email=nope"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("email") && err.contains("not a valid e-mail"),
        "{err}"
    );

    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "--json",
            "tools",
            "call",
            "list_users",
            "--arg",
            "page_length=500",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error on stderr");
    assert_eq!(err["error"]["field"], "page_length");
    assert_eq!(err["error"]["code"], "invalid_arguments");

    let victim = state(&sb).await["users"][0]["email"]
        .as_str()
        .expect("email")
        .to_string();
    let out = run(Some(&sb), dir.path(), &["users", "delete", &victim]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refusal for want of --yes is usage"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(
        state(&sb).await["users"]
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u["email"] == victim.as_str()),
        "nothing deleted"
    );

    let out = run(
        Some(&sb),
        dir.path(),
        &["users", "find", "nobody@example.com"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    sb.shutdown().await.expect("shutdown");
}

/// `memberspot completions zsh | head -1`: the reader leaves before the command writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["completions", "zsh"][..],
        &["tools", "list"],
        &["--json", "tools", "list"],
    ] {
        let mut child = cmd(dir.path())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary runs");
        drop(child.stdout.take());
        let out = child.wait_with_output().await.expect("binary ends");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sandbox_works_offline_and_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(None, dir.path(), &["users", "list"]).await;
    assert_ok(&out, "users list");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sandbox"),
        "the sandbox must be labelled"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@example."));

    let offers = run(None, dir.path(), &["offers", "list", "--json"]).await;
    assert_ok(&offers, "offers");
    let offer = stdout_json(&offers)[0]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let out = run(
        None,
        dir.path(),
        &[
            "users",
            "grant",
            "new.member@example.com",
            "--offer",
            &offer,
            "--first",
            "Neu",
        ],
    )
    .await;
    assert_ok(&out, "grant");
    let out = run(
        None,
        dir.path(),
        &["users", "find", "new.member@example.com", "--json"],
    )
    .await;
    assert_ok(&out, "find after restart");
    assert_eq!(
        stdout_json(&out)[0]["firstname"],
        "Neu",
        "the grant survived between invocations"
    );
    let out = run(None, dir.path(), &["users", "list", "--all", "--json"]).await;
    assert_ok(&out, "list all");
    let all = stdout_json(&out);
    assert_eq!(all["users"].as_array().map(Vec::len), Some(51));
    assert!(all["next_cursor"].is_null());
    // One page says where the next one starts; following it gives the rest.
    let out = run(
        None,
        dir.path(),
        &["users", "list", "--page-length", "50", "--json"],
    )
    .await;
    let page = stdout_json(&out);
    assert_eq!(page["users"].as_array().map(Vec::len), Some(50));
    let next = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let out = run(
        None,
        dir.path(),
        &[
            "users",
            "list",
            "--page-length",
            "50",
            "--cursor",
            &next,
            "--json",
        ],
    )
    .await;
    assert_eq!(stdout_json(&out)["users"].as_array().map(Vec::len), Some(1));
}

/// `--offer` takes a name as well as an id, and an offer the school does not have is an
/// error naming the candidates, for one member and for every row of a CSV file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_named_or_refused_with_the_candidates() {
    let sb = sandbox(0.0, Faults::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let offers = state(&sb).await["offers"].clone();
    let (id, name) = (
        offers[0]["id"].as_str().expect("id").to_owned(),
        offers[0]["name"].as_str().expect("name").to_owned(),
    );

    let out = run(
        Some(&sb),
        dir.path(),
        &["users", "list", "--offer", "No Such Course"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "an error, not an empty table");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--offer") && err.contains(&format!("{id} ({name})")),
        "{err}"
    );

    let lower = name.to_lowercase();
    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "--json",
            "users",
            "grant",
            "named@example.com",
            "--offer",
            &lower,
        ],
    )
    .await;
    assert_ok(&out, "grant by name");
    let holder = state(&sb).await["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "named@example.com")
        .cloned()
        .expect("granted");
    assert!(holder.to_string().contains(&id), "{holder}");
    // Tables show the offer's name next to its id.
    let out = run(
        Some(&sb),
        dir.path(),
        &["users", "find", "named@example.com"],
    )
    .await;
    assert_ok(&out, "find");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("{name} ({id}) active")), "{table}");

    let csv = format!("email,offer\r\na@example.com,{name}\r\nb@example.com,Nope\r\n");
    let path = dir.path().join("named.csv");
    std::fs::write(&path, csv).expect("write csv");
    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "--json",
            "users",
            "grant",
            "--csv",
            &path.to_string_lossy(),
            "--dry-run",
        ],
    )
    .await;
    let report = stdout_json(&out);
    assert_eq!(report["summary"]["would_grant"], 1, "{report}");
    assert_eq!(report["summary"]["invalid"], 1, "{report}");
    let refused = &report["rows"][1];
    assert_eq!(
        (refused["line"].as_u64(), refused["field"].as_str()),
        (Some(3), Some("offer_id"))
    );
    assert_eq!(report["rows"][0]["offer_id"], id.as_str());
    // A dry run checks, and grants nothing.
    let users = state(&sb).await["users"].clone();
    assert!(
        !users
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u["email"] == "a@example.com" || u["email"] == "b@example.com"),
        "nothing granted"
    );
    sb.shutdown().await.expect("shutdown");
}

/// The audit views show an offer's name next to the id in a record's arguments (the JSON
/// adds `offer_names` and removes nothing), from one read of the school's offers per
/// command, not one per record; `progress` shows the offers that unlock each course.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_progress_name_the_offers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let offers = run(None, d, &["offers", "list", "--json"]).await;
    assert_ok(&offers, "offers");
    let offers = stdout_json(&offers);
    let pick = |i: usize| {
        (
            offers[i]["id"].as_str().expect("id").to_owned(),
            offers[i]["name"].as_str().expect("name").to_owned(),
        )
    };
    let ((id0, name0), (id1, name1)) = (pick(0), pick(1));
    let email = "audit.names@example.com";
    for offer in [&name0, &id1] {
        let out = run(None, d, &["users", "grant", email, "--offer", offer]).await;
        assert_ok(&out, "grant");
    }
    let offer_reads = || async {
        let out = run(
            None,
            d,
            &[
                "--json",
                "audit",
                "search",
                "--tool",
                "list_offers",
                "--limit",
                "1000",
            ],
        )
        .await;
        assert_ok(&out, "audit search list_offers");
        stdout_json(&out).as_array().map(Vec::len).expect("records")
    };
    let before = offer_reads().await;

    let out = run(
        None,
        d,
        &["audit", "search", "--tool", "grant_user_offer_by_email"],
    )
    .await;
    assert_ok(&out, "audit search");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{name0} ({id0})")) && table.contains(&format!("{name1} ({id1})")),
        "{table}"
    );
    let out = run(None, d, &["--json", "audit", "tail", "--lines", "50"]).await;
    assert_ok(&out, "audit tail");
    let records = stdout_json(&out);
    let grants: Vec<&Value> = records
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["tool"] == "grant_user_offer_by_email")
        .collect();
    assert_eq!(grants.len(), 2);
    assert_eq!(
        grants[0]["arguments"]["offer_id"],
        id0.as_str(),
        "the id stays"
    );
    assert_eq!(grants[0]["offer_names"][&id0], name0.as_str());
    assert_eq!(grants[1]["offer_names"][&id1], name1.as_str());
    assert!(
        records
            .as_array()
            .expect("records")
            .iter()
            .filter(|r| r["tool"] == "list_offers")
            .all(|r| r.get("offer_names").is_none()),
        "only records that name offers get names"
    );
    assert_eq!(
        offer_reads().await,
        before + 2,
        "one read of the offers per audit command, not one per record"
    );

    let out = run(None, d, &["progress", email]).await;
    assert_ok(&out, "progress");
    let table = String::from_utf8_lossy(&out.stdout);
    let course = offers[0]["courseIds"][0].as_str().expect("a course");
    assert!(
        table.contains("offers")
            && table.contains(course)
            && table.contains(&format!("{name0} ({id0})")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_bulk_grant_with_faults_loses_no_row() {
    let faults = Faults {
        error_rate: 0.1,
        timeout_rate: 0.05,
        timeout_ms: 2_000,
        seed: Some(5),
        ..Faults::default()
    };
    let sb = sandbox(0.0, faults).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let offer = state(&sb).await["offers"][1]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let mut csv = String::from("email;first_name;last_name;offer_id;order_id\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "bulk{i}@example.com;Vor{i};Nach{i};{offer};ORD-{i}\n"
        ));
    }
    csv.push_str("broken-address;X;Y;;\n");
    csv.push_str("bulk3@example.com;Dup;Licate;;\n");
    let path = dir.path().join("grants.csv");
    std::fs::write(&path, csv).expect("write csv");
    let path_s = path.to_string_lossy().to_string();

    let dry = run(
        Some(&sb),
        dir.path(),
        &["--json", "users", "grant", "--csv", &path_s, "--dry-run"],
    )
    .await;
    let report = stdout_json(&dry);
    assert_eq!(report["summary"]["would_grant"], 60);
    assert!(
        !state(&sb).await["users"]
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u["email"] == "bulk0@example.com"),
        "dry run wrote nothing"
    );

    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "--json",
            "--timeout",
            "0.5",
            "users",
            "grant",
            "--csv",
            &path_s,
            "--offer",
            &offer,
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad rows make the run fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert_eq!(report["summary"]["granted"], 60, "{}", report["summary"]);
    assert_eq!(report["summary"]["invalid"], 1);
    assert_eq!(report["summary"]["duplicate"], 1);
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 62, "every row is reported");
    let bad = rows
        .iter()
        .find(|r| r["status"] == "invalid")
        .expect("invalid row");
    assert_eq!(bad["line"], 62);

    let st = state(&sb).await;
    for i in 0..60 {
        let email = format!("bulk{i}@example.com");
        let user = st["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == email.as_str());
        let holds = user.and_then(|u| u["offers"].as_array()).is_some_and(|hs| {
            hs.iter().any(|h| {
                h["offerId"] == offer.as_str() && h["orderId"] == format!("ORD-{i}").as_str()
            })
        });
        assert!(holds, "{email} was not granted");
    }
    let retry = std::fs::read_to_string(dir.path().join("grants.failed.csv")).expect("retry file");
    assert!(
        retry.contains("broken-address") && retry.contains("duplicate of line"),
        "{retry}"
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_in_output() {
    let sb = sandbox(
        0.0,
        Faults {
            error_rate: 0.2,
            seed: Some(2),
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = Vec::new();
    for args in [
        vec!["-vv", "users", "list"],
        vec![
            "-vv",
            "--json",
            "tools",
            "call",
            "find_user_by_email",
            "--arg",
            "email=nobody@example.com",
        ],
        vec!["-vv", "check"],
        vec!["-vv", "doctor"],
        vec!["-vv", "offers", "list", "--json"],
    ] {
        let out = run(Some(&sb), dir.path(), &args).await;
        all.extend(out.stdout);
        all.extend(out.stderr);
    }
    let mut bad = cmd(dir.path());
    let out = bad
        .env("MEMBERSPOT_BASE_URL", sb.base_url())
        .env("MEMBERSPOT_API_KEY", format!("{KEY}-wrong"))
        .args(["-vv", "check"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    all.extend(out.stdout);
    all.extend(out.stderr);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("DEBUG") || text.contains("INFO"),
        "verbose logs were captured"
    );
    assert!(!text.contains(KEY), "the API key leaked into CLI output");
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_link_prints_the_link_when_there_is_one_and_records_only_fingerprints() {
    for mode in Shapes::ALL {
        let sb = sandbox_with(0.0, Faults::default(), mode).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let email = state(&sb).await["users"][0]["email"]
            .as_str()
            .expect("email")
            .to_string();
        let out = run(Some(&sb), dir.path(), &["login-link", &email]).await;
        assert_ok(&out, "login-link");
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = run(Some(&sb), dir.path(), &["login-link", &email, "--json"]).await;
        assert_ok(&out, "login-link --json");
        let v = stdout_json(&out);
        let token = v["token"].as_str().expect("token").to_string();
        match mode {
            Shapes::Documented => {
                assert!(!printed.contains("://"), "{mode}: the token: {printed}");
                assert!(v.get("login_url").is_none(), "{v}");
            }
            Shapes::Alternate => {
                assert!(
                    printed.starts_with("https://") && printed.contains("token="),
                    "{mode}: the link: {printed}"
                );
                let link = v["login_url"].as_str().expect("login_url");
                assert!(link.ends_with(&token), "{v}");
            }
        }
        // The audit record keeps fingerprints of the token and the link, never either.
        let out = run(None, dir.path(), &["audit", "export"]).await;
        assert_ok(&out, "audit export");
        let records = String::from_utf8_lossy(&out.stdout);
        assert!(records.contains("create_login_token"), "{records}");
        assert!(records.contains("(redacted, sha256:"), "{records}");
        assert!(
            !records.contains(&token),
            "{mode}: the token is in a record"
        );
        assert!(
            !records.contains(&printed),
            "{mode}: the printed secret is in a record"
        );
        let recorded: Vec<Value> = records
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["tool"] == "create_login_token")
            .collect();
        assert_eq!(recorded.len(), 2, "{records}");
        let fingerprinted = |v: &Value| {
            v.as_str()
                .is_some_and(|t| t.contains("… (redacted, sha256:"))
        };
        for r in &recorded {
            assert!(fingerprinted(&r["response"]["token"]), "{r}");
            match mode {
                Shapes::Documented => assert!(r["response"].get("login_url").is_none(), "{r}"),
                // The whole link is a secret, not only the token inside it.
                Shapes::Alternate => assert!(
                    fingerprinted(&r["response"]["login_url"])
                        && !r.to_string().contains("memberspot.example"),
                    "{r}"
                ),
            }
        }
        sb.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reads_only_and_writes_a_report_without_values() {
    for mode in Shapes::ALL {
        let sb = sandbox_with(0.0, Faults::default(), mode).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("shapes.json");
        let out = run(
            Some(&sb),
            dir.path(),
            &["doctor", "--report", file.to_str().expect("utf-8")],
        )
        .await;
        assert_ok(&out, "doctor");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("every answer was read"), "{text}");
        assert!(text.contains("GET /v1/users/list"), "{text}");
        let report = std::fs::read_to_string(&file).expect("the report file");
        let parsed: Value = serde_json::from_str(&report).expect("JSON");
        let checks = parsed["checks"].as_array().expect("checks");
        assert_eq!(checks.len(), 7);
        assert!(
            checks.iter().all(|c| c["verdict"] == "ok"),
            "{mode}: {report}"
        );
        // (The doctor's own tests scan for every value of the school; here the members'.)
        let st = state(&sb).await;
        for user in st["users"].as_array().expect("users") {
            for key in ["uid", "email", "firstname", "name"] {
                if let Some(v) = user[key].as_str() {
                    assert!(!report.contains(v), "{mode}: `{v}` is in the report");
                }
            }
        }
        assert!(!report.contains('@') && !report.contains(KEY));
        let log = reqwest_get(&format!("{}/_sandbox/requests", sb.root_url())).await;
        let requests = log.as_array().expect("log");
        assert!(
            requests.iter().all(|r| r["method"] == "GET"),
            "{mode}: the doctor only reads: {log}"
        );
        assert!(
            !requests.iter().any(|r| r["path"]
                .as_str()
                .is_some_and(|p| p.contains("login-token"))),
            "{log}"
        );
        // A refused key: the doctor fails and says so.
        let out = cmd(dir.path())
            .env("MEMBERSPOT_BASE_URL", sb.base_url())
            .env("MEMBERSPOT_API_KEY", "sk_wrong_key_for_doctor")
            .args(["doctor", "--json"])
            .output()
            .await
            .expect("runs");
        assert_eq!(out.status.code(), Some(1));
        let v = stdout_json(&out);
        assert_eq!(v["checks"][0]["verdict"], "failed");
        assert_eq!(v["checks"][1]["verdict"], "skipped");
        sb.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_add_completes_a_url_without_v1_and_refuses_one_that_answers_neither() {
    let sb = sandbox(0.0, Faults::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = sb.root_url();
    let out = run(
        Some(&sb),
        dir.path(),
        &["connections", "add", "school", "--url", &root, "--json"],
    )
    .await;
    assert_ok(&out, "add without /v1");
    assert_eq!(stdout_json(&out)["base_url"], sb.base_url());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/v1"),
        "the change is said"
    );
    // No key in the environment: the stored connection (and its URL) is used.
    let out = cmd(dir.path())
        .args(["--connection", "school", "--json", "offers", "list"])
        .output()
        .await
        .expect("runs");
    assert_ok(&out, "a call on the stored connection");
    assert_eq!(stdout_json(&out).as_array().map(Vec::len), Some(4));

    let out = run(
        Some(&sb),
        dir.path(),
        &[
            "connections",
            "add",
            "wrong",
            "--url",
            &format!("{root}/api"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "bad input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not answer like the Memberspot API") && err.contains("404"),
        "{err}"
    );
    let out = cmd(dir.path())
        .env("MEMBERSPOT_API_KEY", "sk_wrong_key_for_add")
        .args(["connections", "add", "refused", "--url", &root])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && !err.contains("sk_wrong_key_for_add"),
        "{err}"
    );
    let out = cmd(dir.path())
        .args(["connections", "list", "--json"])
        .output()
        .await
        .expect("runs");
    let names: Vec<String> = stdout_json(&out)
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&"school".to_string())
            && !names.iter().any(|n| n == "wrong" || n == "refused"),
        "{names:?}"
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_serve_speaks_the_shapes_asked_for() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for (mode, list_key) in [("documented", "users"), ("alternate", "data")] {
        let mut child = cmd(dir.path())
            .args([
                "sandbox", "serve", "--port", "0", "--json", "--shapes", mode,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut first = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            first.push_str(&line);
            if serde_json::from_str::<Value>(&first).is_ok() {
                break;
            }
        }
        let info: Value = serde_json::from_str(&first).expect("the listening line");
        assert_eq!(info["shapes"], mode);
        let base = info["base_url"].as_str().expect("base_url");
        let resp = reqwest::Client::new()
            .get(format!("{base}/users/list?pageLength=1"))
            .header("X-API-KEY", info["api_key"].as_str().expect("key"))
            .send()
            .await
            .expect("request");
        let page: Value = resp.json().await.expect("json");
        assert!(page.get(list_key).is_some(), "{mode}: {page}");
        child.kill().await.expect("stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_delete_says_what_memberspot_answered() {
    for (mode, said) in [
        (Shapes::Documented, "deleted: 1"),
        (Shapes::Alternate, "deleted (Memberspot answered: ok)"),
    ] {
        let sb = sandbox_with(0.0, Faults::default(), mode).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = state(&sb).await["users"][0]["email"]
            .as_str()
            .expect("email")
            .to_string();
        let out = run(
            Some(&sb),
            dir.path(),
            &["users", "delete", &victim, "--yes"],
        )
        .await;
        assert_ok(&out, "users delete");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), said, "{mode}");
        assert!(
            !state(&sb).await["users"]
                .as_array()
                .expect("users")
                .iter()
                .any(|u| u["email"] == victim.as_str()),
            "{mode}: deleted"
        );
        sb.shutdown().await.expect("shutdown");
    }
}

/// `users list --all` pages through the gateway's member stream: every member once in
/// pages of 10, and a school that answers a cursor a second time stops the command with
/// an error that says so (never a loop, never a silently short list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_all_reads_every_member_once_and_stops_on_a_repeated_cursor() {
    let sb = sandbox(0.0, Faults::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        Some(&sb),
        dir.path(),
        &["users", "list", "--all", "--page-length", "10", "--json"],
    )
    .await;
    assert_ok(&out, "list all");
    let all = stdout_json(&out);
    let mut uids: Vec<&str> = all["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["uid"].as_str())
        .collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 25, "every member once");
    sb.shutdown().await.expect("shutdown");

    let looping = sandbox(
        0.0,
        Faults {
            repeat_cursor: true,
            ..Faults::default()
        },
    )
    .await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run(
            Some(&looping),
            dir.path(),
            &["users", "list", "--all", "--page-length", "10", "--json"],
        ),
    )
    .await
    .expect("stops instead of looping");
    assert!(!out.status.success(), "a repeated cursor is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a second time"), "{stderr}");
    looping.shutdown().await.expect("shutdown");
}
