//! The Flows page, in process on SQLite and PostgreSQL: the flows with their trigger, a dry
//! run from the page shows its steps (and records no change), a run appears in the history
//! with its steps, the daily summary's preview; a viewer sees no run buttons and a forged
//! run from a viewer is refused, as is a run posted without its CSRF token. "Send now"
//! delivers the summary to a Slack webhook on loopback, a real rerun makes a new run, and
//! scheduled flows show their next run.

use axum::http::StatusCode;
use memberspot_agent::config::ModelsConfig;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_flows::{Flows, FlowsConfig};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use secrecy::SecretString;

mod common;
use common::{Backend, Client, PASSWORD, TestHub, signed_in};

const FLOWS: &str = r#"
default_connection = "sandbox"

[digest]
at = "07:00"

[[flows]]
name = "offers-report"
persona = "reporter"
trigger.manual = true

[[flows.steps]]
name = "offers"
tool = "list_offers"

[[flows.steps]]
name = "note"
transform = "{{ input.note | default('none') }}"
"#;

async fn flows_page(backend: Backend) {
    let t = TestHub::open(backend).await;
    let bare = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut first = signed_in(&t, &bare, "anna", ConsoleRole::Owner).await;
    let quiet = first.get("/flows").await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert!(quiet.body.contains("No flows configured"), "{}", quiet.body);
    assert!(quiet.body.contains("No runs yet"));

    let cfg = FlowsConfig::parse(FLOWS, "flows.toml", None).expect("flows file");
    let flows = Flows::start(t.hub.clone(), cfg, ModelsConfig::default())
        .await
        .expect("flows");
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_flows(flows);
    let mut anna = Client::new(plugin.router());
    assert_eq!(
        anna.login("anna", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let page = anna.get("/flows").await;
    assert!(page.body.contains("offers-report") && page.body.contains("manual"));
    assert!(page.body.contains("Dry run") && page.body.contains("Run now"));
    let csrf = page.csrf();

    // Without the token nothing runs.
    let no_token = anna
        .post("/flows/offers-report/run", &[("dry_run", "1")])
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);

    let dry = anna
        .post(
            "/flows/offers-report/run",
            &[("csrf", &csrf), ("dry_run", "1")],
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert!(
        dry.body.contains("Dry run of offers-report"),
        "{}",
        dry.body
    );
    assert!(dry.body.contains("<td>offers</td>"), "{}", dry.body);

    // A real run asks first (with the dry run offered), then runs.
    let ask = anna
        .post("/flows/offers-report/run", &[("csrf", &csrf)])
        .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body.contains("Run offers-report now?")
            && ask.body.contains("Yes, run it now")
            && ask.body.contains("name=\"confirm\" value=\"1\""),
        "{}",
        ask.body
    );
    let runs = t
        .hub
        .flows_store()
        .list_runs(None, 100)
        .await
        .expect("runs");
    assert!(
        runs.iter().all(|r| r.dry_run),
        "asking ran nothing: {runs:?}"
    );
    let real = anna
        .post(
            "/flows/run",
            &[
                ("csrf", &csrf),
                ("name", "offers-report"),
                ("input", "{}"),
                ("confirm", "1"),
            ],
        )
        .await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    let started = t.hub.flows_store().list_runs(None, 1).await.expect("runs");
    assert_eq!(
        started[0].trigger, "console:anna",
        "the run names who started it"
    );
    let history = anna.get("/flows").await;
    let at = history
        .body
        .find("href=\"/flows/runs/")
        .expect("a run link");
    let rest = &history.body[at + "href=\"".len()..];
    let link = &rest[..rest.find('"').expect("end")];
    let run = anna.get(link).await;
    assert_eq!(run.status, StatusCode::OK);
    assert!(run.body.contains("Run of offers-report") && run.body.contains("offers"));

    // With input, from the form that names the flow; then the run again as a dry run.
    let with_input = anna
        .post(
            "/flows/run",
            &[
                ("csrf", &csrf),
                ("name", "offers-report"),
                ("input", "{\"note\": \"from the console\"}"),
                ("dry_run", "1"),
            ],
        )
        .await;
    assert_eq!(with_input.status, StatusCode::OK, "{}", with_input.body);
    assert!(with_input.body.contains("Dry run of offers-report"));
    assert!(
        with_input.body.contains("from the console"),
        "the input reached the steps: {}",
        with_input.body
    );
    let bad_input = anna
        .post(
            "/flows/run",
            &[
                ("csrf", &csrf),
                ("name", "offers-report"),
                ("input", "{oops"),
            ],
        )
        .await;
    assert_eq!(bad_input.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_input.body.contains("input must be JSON")
            && bad_input.body.contains(">{oops</textarea>")
            && bad_input
                .body
                .contains("<option value=\"offers-report\" selected>"),
        "refused on the flows page with what was typed: {}",
        bad_input.body
    );
    let unknown = anna
        .post(
            "/flows/no-such-flow/run",
            &[("csrf", &csrf), ("dry_run", "1")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(run.body.contains("Dry run again"));
    let run_id = link.trim_start_matches("/flows/runs/");
    let again = anna
        .post(
            &format!("/flows/runs/{run_id}/rerun"),
            &[("csrf", &csrf), ("dry_run", "1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.body.contains("Dry run of offers-report"));

    let preview = anna
        .post(
            "/flows/digest",
            &[
                ("csrf", &csrf),
                ("date", "2026-03-29"),
                ("action", "preview"),
            ],
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview.body.contains("nothing was sent"),
        "{}",
        preview.body
    );
    let bad_date = anna
        .post(
            "/flows/digest",
            &[("csrf", &csrf), ("date", "29.03.2026"), ("action", "send")],
        )
        .await;
    assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_date
            .body
            .contains("date: `29.03.2026` is not YYYY-MM-DD")
            && bad_date.body.contains("value=\"29.03.2026\""),
        "{}",
        bad_date.body
    );

    let runs: Vec<_> = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.tool == "admin.run_flow")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "the real run is recorded, the dry run is not"
    );
    assert_eq!(runs[0].end_user.as_deref(), Some("console:anna"));

    // A viewer sees the flows but no buttons; a forged run is refused.
    t.hub
        .add_console_user("ben", &SecretString::from(PASSWORD), ConsoleRole::Viewer)
        .await
        .expect("add viewer");
    let mut ben = Client::new(plugin.router());
    assert_eq!(
        ben.login("ben", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let seen = ben.get("/flows").await;
    assert!(seen.body.contains("offers-report"));
    assert!(!seen.body.contains("/run\"") && !seen.body.contains("/flows/digest"));
    let seen_run = ben.get(link).await;
    assert!(!seen_run.body.contains("/rerun"));
    let ben_csrf = seen.csrf();
    let forged = ben
        .post(
            "/flows/offers-report/run",
            &[("csrf", &ben_csrf), ("dry_run", "1")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    ben.cookies.insert("msh_lang".into(), "de".into());
    assert!(ben.get("/flows").await.body.contains("<h1>Abläufe</h1>"));
    t.close().await;
}

#[tokio::test]
async fn flows_page_sqlite() {
    flows_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn flows_page_postgres() {
    flows_page(Backend::Postgres).await;
}

/// A Slack incoming webhook on loopback that keeps what it is sent.
async fn slack_catcher() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// "Send now" delivers the summary to the configured target and is recorded; a real
/// rerun makes a new run and is recorded; a scheduled flow and the summary show their
/// next run, a manual flow none.
async fn flows_send_rerun_and_next_runs(backend: Backend) {
    let t = TestHub::open(backend).await;
    let (slack, seen) = slack_catcher().await;
    let file = format!(
        "{FLOWS}
[[flows]]
name = \"weekly-report\"
persona = \"reporter\"
trigger.cron = \"0 8 * * 1\"

[[flows.steps]]
name = \"offers\"
tool = \"list_offers\"

[delivery.slack]
webhook_url = \"{slack}/services/T000/B000/XXXX\"
"
    );
    let cfg = FlowsConfig::parse(&file, "flows.toml", None).expect("flows file");
    let flows = Flows::start(t.hub.clone(), cfg, ModelsConfig::default())
        .await
        .expect("flows");
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_flows(flows);
    let mut anna = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let page = anna.get("/flows").await;
    assert_eq!(page.status, StatusCode::OK);
    let row = |name: &str| -> String {
        let at = page
            .body
            .find(&format!(">{name}<"))
            .expect("the flow's row");
        let end = at + page.body[at..].find("</tr>").expect("row end");
        page.body[at..end].to_owned()
    };
    // Mondays 08:00 and every day 07:00 in the school's time zone; manual: no next run.
    assert!(
        row("weekly-report").contains(" 08:00:00"),
        "{}",
        row("weekly-report")
    );
    assert!(
        row("offers-report").contains("—"),
        "{}",
        row("offers-report")
    );
    assert!(
        page.body.contains(" 07:00:00"),
        "the summary's next run: {}",
        page.body
    );
    let csrf = page.csrf();

    // Sending asks first; the confirmation posts the same date again.
    let ask = anna
        .post(
            "/flows/digest",
            &[("csrf", &csrf), ("date", "2026-03-29"), ("action", "send")],
        )
        .await;
    assert!(
        ask.body.contains("Send the daily summary now?"),
        "{}",
        ask.body
    );
    assert!(ask.body.contains("name=\"date\" value=\"2026-03-29\""));
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing sent on asking"
    );
    let sent = anna
        .post(
            "/flows/digest",
            &[
                ("csrf", &csrf),
                ("date", "2026-03-29"),
                ("action", "send"),
                ("confirm", "1"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert!(!sent.body.contains("nothing was sent"), "{}", sent.body);
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "one message to Slack: {got:?}");
    assert!(got[0].contains("2026"), "{}", got[0]);

    let real = anna
        .post(
            "/flows/run",
            &[("csrf", &csrf), ("name", "offers-report"), ("confirm", "1")],
        )
        .await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    let count_runs = || async {
        t.hub
            .flows_store()
            .list_runs(None, 100)
            .await
            .expect("runs")
            .len()
    };
    let runs_before = count_runs().await;
    let history = anna.get("/flows").await;
    let at = history.body.find("href=\"/flows/runs/").expect("a run");
    let rest = &history.body[at + "href=\"/flows/runs/".len()..];
    let run_id = &rest[..rest.find('"').expect("end")];
    let ask = anna
        .post(&format!("/flows/runs/{run_id}/rerun"), &[("csrf", &csrf)])
        .await;
    assert!(ask.body.contains("Run this again now?"), "{}", ask.body);
    assert_eq!(count_runs().await, runs_before, "asking runs nothing");
    let again = anna
        .post(
            &format!("/flows/runs/{run_id}/rerun"),
            &[("csrf", &csrf), ("confirm", "1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(count_runs().await, runs_before + 1, "a rerun is a new run");

    let recorded = |tool: &'static str| {
        let hub = t.hub.clone();
        async move {
            hub.audit(&AuditFilter {
                tool: Some(tool.into()),
                ..AuditFilter::default()
            })
            .await
            .expect("audit")
        }
    };
    for tool in ["admin.send_digest", "admin.rerun_flow"] {
        let records = recorded(tool).await;
        assert_eq!(records.len(), 1, "{tool}");
        assert_eq!(
            records[0].end_user.as_deref(),
            Some("console:anna"),
            "{tool}"
        );
    }
    t.close().await;
}

#[tokio::test]
async fn flows_send_rerun_and_next_runs_sqlite() {
    flows_send_rerun_and_next_runs(Backend::Sqlite).await;
}

#[tokio::test]
async fn flows_send_rerun_and_next_runs_postgres() {
    flows_send_rerun_and_next_runs(Backend::Postgres).await;
}
