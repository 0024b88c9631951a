//! The daily summary delivered for real: a local SMTP server (a real SMTP conversation,
//! the message parsed), an HTTP receiver standing in for Slack, and a local
//! OpenAI-compatible server standing in for the model — with the model, and with the model
//! failing (template summary, failure noted). Also: a flow run end to end.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../memberspot-notify/tests/it/smtp_server.rs"]
mod smtp_server;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use memberspot_agent::config::ModelsConfig;
use memberspot_flows::config::Target;
use memberspot_flows::{Flows, FlowsConfig};
use memberspot_hub::store::{EventStatus, NewEvent, RunStatus};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

/// Serves `route` on loopback, recording JSON bodies; answers each with `answer(n)`.
async fn stand_in(route: &'static str, answer: fn(usize) -> (u16, Value)) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        route,
        post({
            let seen = seen.clone();
            move |body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(v);
                        s.len()
                    };
                    let (status, body) = answer(n);
                    let (content_type, text) = match body {
                        Value::String(s) => ("text/plain", s),
                        other => ("application/json", other.to_string()),
                    };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, content_type)],
                        text,
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn chat_answer(_: usize) -> (u16, Value) {
    (
        200,
        json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "summary-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Yesterday: 1 purchase and one dead event that needs a look."}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
        }),
    )
}

fn broken_model(_: usize) -> (u16, Value) {
    (500, json!({"error": {"message": "overloaded"}}))
}

fn slack_ok(_: usize) -> (u16, Value) {
    (200, Value::String("ok".into()))
}

/// A 500 first (Slack retries it), then ok.
fn slack_flaky(n: usize) -> (u16, Value) {
    if n == 1 {
        (500, Value::String("rollup_error".into()))
    } else {
        (200, Value::String("ok".into()))
    }
}

fn flows_toml(smtp_port: u16, slack: &str, model: bool) -> String {
    format!(
        r#"
timezone = "Europe/Berlin"

[digest]
at = "07:00"
{model_line}

[delivery.slack]
webhook_url = "{slack}/services/T000/B000/XXXX"

[delivery.email]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "Memberspot Hub <hub@example.com>"
to = ["owner@example.com", "team@example.com"]
"#,
        model_line = if model { "model = \"summary\"" } else { "" }
    )
}

fn models_toml(base: &str) -> ModelsConfig {
    ModelsConfig::parse(
        &format!("[models.summary]\nprovider = \"openai\"\nbase_url = \"{base}/v1\"\nmodel = \"summary-model\"\ntimeout_secs = 5\n"),
        "models.toml",
    )
    .unwrap()
}

async fn seed_yesterday(flows: &Flows) {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let day = memberspot_flows::service::yesterday(chrono::Utc::now(), tz);
    let (start, _) = memberspot_flows::digest::day_window(day, tz);
    let at = start.timestamp_millis() + 3_600_000;
    let mk = |key: &str, kind: &str, status: EventStatus| NewEvent {
        dedupe_key: key.into(),
        source: "ds24".into(),
        provider: "digistore24".into(),
        kind: kind.into(),
        name: kind.into(),
        order_id: Some(key.into()),
        product_id: Some("p1".into()),
        email: Some("buyer@example.de".into()),
        test: false,
        amount_minor: Some(4700),
        currency: Some("EUR".into()),
        data: json!({}),
        status,
        connection: Some("sandbox".into()),
        verified: true,
    };
    flows
        .hub()
        .events_store()
        .insert_events_at(
            &[
                mk("a", "purchase", EventStatus::Done),
                mk("b", "refund", EventStatus::Dead),
            ],
            at,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_summary_arrives_by_email_and_slack_with_and_without_a_model() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let smtp = smtp_server::SmtpServer::start(smtp_server::Behaviour::default()).await;
    let (slack, slack_seen) = stand_in("/services/T000/B000/XXXX", slack_flaky).await;
    let (model, model_seen) = stand_in("/v1/chat/completions", chat_answer).await;

    let cfg = FlowsConfig::parse(&flows_toml(smtp.port, &slack, true), "flows.toml", None).unwrap();
    assert!(
        cfg.digest.as_ref().unwrap().enabled,
        "on by default once a target is configured"
    );
    let flows = Flows::start(hub.clone(), cfg, models_toml(&model))
        .await
        .unwrap();
    seed_yesterday(&flows).await;

    let run = flows
        .run_digest(None, &[], false, None)
        .await
        .unwrap()
        .unwrap();
    assert!(
        run.deliveries.iter().all(|(_, r)| r.is_ok()),
        "{:?}",
        run.deliveries
    );
    assert_eq!(run.deliveries.len(), 2);
    assert!(
        run.digest
            .summary
            .as_deref()
            .unwrap_or_else(|| panic!("{:?}", run.digest.summary_note))
            .contains("one dead event")
    );

    // The model saw the numbers.
    let asked = model_seen.lock().unwrap()[0].clone();
    assert_eq!(asked["model"], "summary-model");
    assert!(
        asked.to_string().contains("\\\"purchases\\\": 1"),
        "{asked}"
    );

    // E-mail: a real SMTP conversation; both recipients; multipart text + HTML.
    let sessions = smtp.sessions();
    let s = sessions.last().unwrap();
    assert_eq!(s.rcpt_to.len(), 2, "{:?}", s.rcpt_to);
    let raw = s.data.clone().unwrap();
    let mail = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(mail.subject().unwrap(), run.subject);
    assert!(run.subject.contains("1 purchase"), "{}", run.subject);
    let text = mail.body_text(0).unwrap();
    assert!(text.contains("one dead event"), "{text}");
    assert!(text.contains("NEEDS ATTENTION"));
    let html = mail.body_html(0).unwrap();
    assert!(html.contains("<table"), "{html}");

    // Slack: retried after the 500; blocks plus the fallback text.
    let posted = slack_seen.lock().unwrap().clone();
    assert_eq!(posted.len(), 2, "one retry after 500");
    let last = posted.last().unwrap();
    assert!(last["text"].as_str().unwrap().contains("Memberspot"));
    assert!(last["blocks"].as_array().unwrap().len() >= 3);

    // The run is on record with its steps.
    let history = hub
        .flows_store()
        .list_runs(Some("digest"), 10)
        .await
        .unwrap();
    assert_eq!(history[0].status.as_str(), "ok");
    let steps = hub.flows_store().run_steps(&history[0].id).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["collect", "summarise", "slack", "email"]);

    // The model failing: the template summary is sent, and the failure is noted.
    let (broken, _) = stand_in("/v1/chat/completions", broken_model).await;
    let (slack2, slack2_seen) = stand_in("/services/T000/B000/XXXX", slack_ok).await;
    let cfg =
        FlowsConfig::parse(&flows_toml(smtp.port, &slack2, true), "flows.toml", None).unwrap();
    let flows = Flows::new(hub.clone(), cfg, models_toml(&broken)).unwrap();
    let run = flows
        .run_digest(None, &[Target::Slack], false, None)
        .await
        .unwrap()
        .unwrap();
    assert!(run.deliveries[0].1.is_ok());
    assert!(run.digest.summary.is_none());
    assert!(
        run.digest
            .summary_note
            .as_deref()
            .unwrap()
            .contains("template summary shown")
    );
    let posted = slack2_seen.lock().unwrap()[0].clone();
    assert!(
        posted.to_string().contains("1 purchase(s)"),
        "template summary: {posted}"
    );

    // Without a model at all: the template summary, no note.
    let cfg =
        FlowsConfig::parse(&flows_toml(smtp.port, &slack2, false), "flows.toml", None).unwrap();
    let flows = Flows::new(hub.clone(), cfg, ModelsConfig::default()).unwrap();
    let run = flows
        .run_digest(None, &[Target::Email], false, None)
        .await
        .unwrap()
        .unwrap();
    assert!(run.deliveries[0].1.is_ok());
    assert!(run.digest.summary_note.is_none());

    // A scheduled fire happens once, whoever fires it.
    let key = memberspot_flows::schedule::fire_key("digest", chrono::Utc::now());
    assert!(
        flows
            .run_digest(None, &[Target::Email], false, Some(key.clone()))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        flows
            .run_digest(None, &[Target::Email], false, Some(key))
            .await
            .unwrap()
            .is_none()
    );

    hub.close().await;
    let _ = sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_its_steps_and_dry_run_writes_nothing() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let (crm, crm_seen) = stand_in("/api/contacts", |_| (201, json!({"id": "c-1"}))).await;
    let toml = format!(
        r#"
[[flows]]
name = "offers-to-crm"
persona = "crm-sync"
trigger.manual = true

[[flows.steps]]
name = "offers"
tool = "list_offers"

[[flows.steps]]
name = "shape"
transform = '{{{{ steps.offers.output.offers | map(attribute="id") | list | tojson }}}}'

[[flows.steps]]
name = "push"
for_each = "steps.shape.output"
item = "offer"
http = {{ method = "POST", url = "{crm}/api/contacts", headers = {{ Authorization = "Bearer crm-secret-token" }}, json = {{ offer = "{{{{ offer }}}}", source = "memberspot" }} }}

[[flows.steps]]
name = "grant"
tool = "grant_user_offer_by_email"
args = {{ email = "flow@example.de", offer_id = "{{{{ steps.shape.output[0] }}}}" }}
"#
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();

    // Dry run: reads run, writes and posts do not.
    let report = flows
        .run_flow("offers-to-crm", "manual", json!({}), None, true)
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "ok", "{report:?}");
    assert!(
        crm_seen.lock().unwrap().is_empty(),
        "nothing posted in a dry run"
    );
    let grant = report.steps.iter().find(|s| s.name == "grant").unwrap();
    assert_eq!(
        grant.output.as_ref().unwrap()["would_call"],
        "grant_user_offer_by_email"
    );

    // For real: the persona only has `read`, so the grant is refused — and audited.
    let report = flows
        .run_flow("offers-to-crm", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "failed");
    let failed_run = report.run_id.clone();
    assert!(
        report.error.as_deref().unwrap().contains("grant"),
        "{report:?}"
    );
    let posts = crm_seen.lock().unwrap().clone();
    assert_eq!(posts.len(), 3, "one POST per offer");
    assert_eq!(posts[0]["source"], "memberspot");
    let denied = hub
        .audit(&memberspot_hub::store::AuditFilter {
            persona: Some("crm-sync".into()),
            outcome: Some("denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert!(
        denied[0]
            .prompt
            .as_deref()
            .unwrap()
            .contains("flow offers-to-crm step grant")
    );

    // With write scope it completes.
    hub.set_persona_scopes("crm-sync", &["write".to_owned()], true, None, None)
        .await
        .unwrap();
    // The failed run is re-run with its input.
    let report = flows.rerun(&failed_run, false).await.unwrap();
    assert_eq!(report.status.as_str(), "ok", "{report:?}");
    let runs = hub
        .flows_store()
        .list_runs(Some("offers-to-crm"), 10)
        .await
        .unwrap();
    assert_eq!(
        runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["ok", "failed", "ok"]
    );
    assert_eq!(runs[0].trigger, "rerun");
    let steps = hub.flows_store().run_steps(&runs[0].id).await.unwrap();
    let recorded = serde_json::to_string(&steps).unwrap();
    assert!(
        !recorded.contains("crm-secret-token"),
        "credentials stay out of the run history"
    );
    assert!(recorded.contains("<redacted>"));
    assert_eq!(
        steps.iter().filter(|s| s.name.starts_with("push[")).count(),
        3
    );
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

/// A login token minted by a flow goes to the step that sends it, while the run history
/// (and the audit log) keep only its fingerprint, also where a later step copied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_reaches_the_next_step_but_not_the_run_history() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let hub = common::hub(&format!("sqlite://{}", db.display()), &sandbox).await;
    let state: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sandbox.root_url()))
        .header("X-API-KEY", common::SCHOOL_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let email = state["users"][0]["email"].as_str().unwrap().to_string();
    let (mailer, sent) = stand_in("/send", |_| (202, json!({"queued": true}))).await;
    let toml = format!(
        r#"
[[flows]]
name = "welcome-link"
persona = "welcomer"
trigger.manual = true

[[flows.steps]]
name = "member"
tool = "find_user_by_email"
args = {{ email = "{email}" }}

[[flows.steps]]
name = "token"
tool = "create_login_token"
args = {{ uid = "{{{{ steps.member.output.uid }}}}" }}

[[flows.steps]]
name = "send"
http = {{ method = "POST", url = "{mailer}/send", json = {{ to = "{email}", link = "https://school.example/login?token={{{{ steps.token.output.token }}}}" }} }}
"#
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    hub.set_persona_scopes(
        "welcomer",
        &["create_login_token".to_owned()],
        true,
        None,
        None,
    )
    .await
    .unwrap();
    let report = flows
        .run_flow("welcome-link", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "ok", "{report:?}");

    // The mail step got the real token.
    let posted = sent.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let link = posted[0]["link"].as_str().unwrap();
    let token = link.rsplit_once("token=").unwrap().1.to_string();
    assert!(token.len() >= 32, "{link}");

    // The history and the audit log never did.
    let steps = hub.flows_store().run_steps(&report.run_id).await.unwrap();
    let history = serde_json::to_string(&steps).unwrap();
    let reported = serde_json::to_string(&report).unwrap();
    let audit = serde_json::to_string(
        &hub.audit(&memberspot_hub::store::AuditFilter::default())
            .await
            .unwrap(),
    )
    .unwrap();
    for (what, text) in [
        ("history", &history),
        ("report", &reported),
        ("audit", &audit),
    ] {
        assert!(!text.contains(&token), "the login token is in the {what}");
        assert!(
            text.contains(&memberspot_tools::redact::fingerprint(&token)),
            "{what} keeps its fingerprint: {text}"
        );
    }
    hub.close().await;
    let raw = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned()
        + &String::from_utf8_lossy(
            &std::fs::read(format!("{}-wal", db.display())).unwrap_or_default(),
        );
    assert!(
        !raw.contains(&token),
        "the login token is in the database file"
    );
    let _ = sandbox.shutdown().await;
}

/// A flow's http step carries credentials in its headers: when the server answers with a
/// redirect to another origin, the hub does not follow it, so the credential never reaches
/// that origin (reqwest would drop `Authorization` there, but not `X-Api-Key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_step_never_follows_a_redirect_to_another_origin() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let (elsewhere, elsewhere_seen) = stand_in("/steal", |_| (200, json!({"ok": true}))).await;
    let target = format!("{elsewhere}/steal");
    let app = axum::Router::new().route(
        "/api/contacts",
        post(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crm = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let toml = format!(
        r#"
[[flows]]
name = "push"
trigger.manual = true

[[flows.steps]]
name = "post"
http = {{ method = "POST", url = "{crm}/api/contacts", headers = {{ X-Api-Key = "crm-secret" }}, json = {{ a = 1 }} }}
"#
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    let report = flows
        .run_flow("push", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(
        report.status.as_str(),
        "failed",
        "a redirect is not success: {report:?}"
    );
    assert!(
        elsewhere_seen.lock().unwrap().is_empty(),
        "the other origin received nothing"
    );
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

/// A step's retries wait `backoff_secs` and then twice as long each time (the back-off
/// every retrying part of the hub shares), and the run records every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_with_doubling_waits() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let arrivals = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    let app = axum::Router::new().route(
        "/flaky",
        post({
            let arrivals = arrivals.clone();
            move || {
                let arrivals = arrivals.clone();
                async move {
                    let n = {
                        let mut a = arrivals.lock().unwrap();
                        a.push(std::time::Instant::now());
                        a.len()
                    };
                    let status = if n < 4 { 503 } else { 200 };
                    (axum::http::StatusCode::from_u16(status).unwrap(), "{}")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/flaky", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let toml = format!(
        r#"
[[flows]]
name = "flaky"
trigger.manual = true

[[flows.steps]]
name = "post"
http = {{ method = "POST", url = "{url}", json = {{ a = 1 }} }}
retry = {{ attempts = 4, backoff_secs = 0.15 }}
"#
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    let report = flows
        .run_flow("flaky", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Ok, "{report:?}");
    assert_eq!(report.steps[0].attempts, 4, "{report:?}");
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 4);
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    // 0.15 s, 0.3 s, 0.6 s (a step that only added 0.15 s each time would wait 0.45 s last).
    for (gap, want) in gaps.iter().zip([0.15, 0.3, 0.6]) {
        assert!(*gap >= want && *gap < want + 1.0, "waits {gaps:?}");
    }
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_alerted_at_once_one_message_per_burst_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    alerts_story(&format!("sqlite://{}", dir.path().join("hub.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_alerted_at_once_one_message_per_burst_postgres() {
    let (url, name) = common::fresh_pg().await;
    alerts_story(&url).await;
    common::drop_pg(&name).await;
}

/// A dead event, an event no rule matched and refused deliveries are told at the next
/// check, in one message; a second burst in the same quiet period waits for the next
/// period; two instances (two hubs on one database) checking at the same moment send one
/// alert, not two.
async fn alerts_story(url: &str) {
    use chrono::TimeZone;
    use memberspot_flows::alerts;
    use memberspot_hub::store::{NewDelivery, Verification};

    let sandbox = common::sandbox().await;
    let hub = common::hub(url, &sandbox).await;
    let second_hub = common::hub(url, &sandbox).await;
    let (slack, seen) = stand_in("/services/T000/B000/XXXX", slack_ok).await;
    let toml = format!(
        "[delivery.slack]\nwebhook_url = \"{slack}/services/T000/B000/XXXX\"\n\n\
         [alerts]\nquiet_minutes = 10\n"
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    assert!(cfg.alerts.enabled, "on wherever a target is configured");
    let one = Flows::start(hub.clone(), cfg.clone(), ModelsConfig::default())
        .await
        .unwrap();
    let other = Flows::start(second_hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();

    // The start of a quiet period, one period ahead of now.
    let period = 600_000;
    let t0 = (chrono::Utc::now().timestamp_millis() / period + 1) * period;
    let at = |ms: i64| chrono::Utc.timestamp_millis_opt(t0 + ms).unwrap();
    assert_eq!(
        alerts::check(&one, at(0)).await.unwrap(),
        None,
        "first check: a watermark"
    );

    let event = |key: &str, status: EventStatus| NewEvent {
        dedupe_key: key.into(),
        source: "ds24".into(),
        provider: "digistore24".into(),
        kind: "purchase".into(),
        name: "on_payment".into(),
        order_id: Some(format!("ORD-{key}")),
        product_id: Some("P-77".into()),
        email: Some("buyer@example.com".into()),
        test: false,
        amount_minor: Some(4900),
        currency: Some("EUR".into()),
        data: json!({}),
        status,
        connection: Some("sandbox".into()),
        verified: true,
    };
    let events = hub.events_store();
    events
        .insert_events_at(
            &[
                event("dead-1", EventStatus::Dead),
                event("nomatch-1", EventStatus::Unmatched),
            ],
            t0 + 1_000,
        )
        .await
        .unwrap();
    for i in 0..3 {
        events
            .record_delivery(
                &NewDelivery {
                    id: format!("refused-{i}"),
                    source: "ds24".into(),
                    provider: "digistore24".into(),
                    received_at: t0 + 2_000,
                    headers: Vec::new(),
                    body: None,
                    body_bytes: 120,
                    verification: Verification::Rejected,
                    error: Some("signature mismatch".into()),
                },
                &[],
            )
            .await
            .unwrap();
    }

    // Both instances check at the same moment: one message.
    let (a, b) = tokio::join!(
        alerts::check(&one, at(30_000)),
        alerts::check(&other, at(30_000))
    );
    let sent: Vec<String> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(sent.len(), 1, "one alert per burst across instances");
    let posted = seen.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let text = posted[0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.starts_with("Memberspot Hub: 5 problems need attention\nSince "),
        "{text}"
    );
    let body = posted[0].to_string();
    for needle in [
        "ORD-dead-1",
        "NO RULE MATCHED",
        "product P-77",
        "/hooks/ds24: 3",
        "events replay",
    ] {
        assert!(body.contains(needle), "{needle}: {body}");
    }
    assert!(
        !body.contains("buyer@example.com"),
        "no member's e-mail in an alert"
    );

    // A second burst within the quiet period waits; the next period tells it.
    events
        .insert_events_at(&[event("dead-2", EventStatus::Dead)], t0 + 60_000)
        .await
        .unwrap();
    assert_eq!(
        alerts::check(&one, at(90_000)).await.unwrap(),
        None,
        "quiet period"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    let next = alerts::check(&other, at(period + 5_000)).await.unwrap();
    assert!(next.is_some());
    let posted = seen.lock().unwrap().clone();
    assert_eq!(posted.len(), 2);
    let body = posted[1].to_string();
    assert!(
        body.contains("ORD-dead-2") && !body.contains("ORD-dead-1"),
        "{body}"
    );
    // Nothing new: nothing sent.
    assert_eq!(
        alerts::check(&one, at(2 * period + 5_000)).await.unwrap(),
        None
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    hub.close().await;
    second_hub.close().await;
    let _ = sandbox.shutdown().await;
}
