//! Flows through the real binary: a fresh install pointed at the sandbox with only the
//! delivery settings configured sends the daily summary by e-mail (a real SMTP
//! conversation) and to Slack (a local stand-in); `flows validate` names lines. (Two
//! instances on one PostgreSQL database sending each scheduled summary once: app.rs.)

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../../memberspot-notify/tests/it/smtp_server.rs"]
mod smtp_server;

use std::path::Path;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_install_sends_the_daily_summary_by_email_and_slack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let smtp = smtp_server::SmtpServer::start(smtp_server::Behaviour::default()).await;
    let (slack, seen) = common::slack_stand_in().await;
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

/// A flow, sync or export the flows file does not have is `not_found`, whichever command
/// names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("flows.toml"), "").unwrap();
    for (args, message) in [
        (
            &["sync", "run", "nope"][..],
            "no sync named `nope` in the flows file",
        ),
        (
            &["sync", "export", "nope"][..],
            "no export named `nope` in the flows file",
        ),
        (
            &["flows", "run", "nope"][..],
            "no flow named `nope` in the flows file",
        ),
        (&["flows", "show", "nope"][..], "no run with id `nope`"),
    ] {
        let out = cmd(d).args(args).arg("--json").output().await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err: Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(err["error"]["code"], "not_found", "{args:?}: {err}");
        assert_eq!(err["error"]["message"], message, "{args:?}: {err}");
    }
}

/// `flows validate` checks each tool step against its flow persona's scopes when the hub
/// has a database (and says it did not when it has none); the commands its problems name
/// are the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_validate_checks_tools_against_the_persona_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("flows.toml");
    std::fs::write(
        &file,
        "[[flows]]\nname = \"welcome\"\npersona = \"welcomer\"\ntrigger.manual = true\n\n\
         [[flows.steps]]\nname = \"find\"\ntool = \"find_user_by_email\"\nargs = { email = \"{{ input.email }}\" }\n\n\
         [[flows.steps]]\nname = \"grant\"\ntool = \"grant_user_offer_by_email\"\n\
         args = { email = \"{{ input.email }}\", offer_id = \"o1\" }\n\n\
         [[flows]]\nname = \"newcomer\"\npersona = \"fresh\"\ntrigger.manual = true\n\n\
         [[flows.steps]]\nname = \"tag\"\ntool = \"set_custom_user_properties\"\n\
         args = { email = \"{{ input.email }}\", properties = [] }\n",
    )
    .unwrap();
    let file_s = file.display().to_string();
    let run = |args: Vec<String>| {
        let mut c = cmd(d);
        c.args(args);
        async move {
            let out = c.output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let validate = || run(vec!["flows".into(), "validate".into(), file_s.clone()]);

    // No hub database: nothing to check the scopes against, and it says so.
    let (code, stdout, stderr) = validate().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("persona scopes not checked (no hub database yet)"),
        "{stdout}"
    );

    // `welcomer` exists with read; `fresh` does not (serve would create it with read).
    let (code, _, stderr) = run(["personas", "create", "welcomer"]
        .map(String::from)
        .to_vec())
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = validate().await;
    assert_eq!(code, Some(1), "{stderr}");
    let grant = "memberspot personas grant-scope welcomer grant_user_offer_by_email";
    assert!(
        stderr.contains(&format!(
            "{file_s}:11: flow `welcome` step `grant`: persona `welcomer` may not call \
             `grant_user_offer_by_email` (a write tool; its scopes: read); grant it with `{grant}`"
        )),
        "{stderr}"
    );
    let create = "memberspot --connection sandbox personas create fresh --scopes \
                  read,set_custom_user_properties";
    assert!(
        stderr.contains("flow `newcomer` step `tag`: persona `fresh` does not exist yet")
            && stderr.contains(&format!("create it first with `{create}`")),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        !stderr.contains("step `find`"),
        "a read tool is allowed: {stderr}"
    );
    let (code, stdout, _) = run(vec![
        "flows".into(),
        "validate".into(),
        "--json".into(),
        file_s.clone(),
    ])
    .await;
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        (
            &v["problems"][0]["persona"],
            &v["problems"][0]["tool"],
            &v["problems"][0]["step"],
            &v["problems"][0]["line"]
        ),
        (
            &Value::from("welcomer"),
            &Value::from("grant_user_offer_by_email"),
            &Value::from("grant"),
            &Value::from(11)
        ),
        "{v}"
    );

    // The commands the problems name, as written, fix them.
    for command in [grant, create] {
        let args: Vec<String> = command.split(' ').skip(1).map(String::from).collect();
        let (code, _, stderr) = run(args).await;
        assert_eq!(code, Some(0), "{command}: {stderr}");
    }
    let (code, stdout, stderr) = validate().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("not checked"), "{stdout}");
}
