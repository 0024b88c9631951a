//! `send_slack` and `fit` against a local stand-in for hooks.slack.com that checks every
//! posted payload and answers from a script (the rows of `slack.json`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use memberspot_notify::slack::{self, fit};
use memberspot_notify::{Message, NotifyError, SlackTarget, send_slack};
use serde_json::{Value, json};

use crate::vectors;

const SECRET: &str = "s3cr3tWebhookT0ken";
const HOOK_PATH: &str = "/services/T0001/B0001/s3cr3tWebhookT0ken";

#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    body: String,
    retry_after: Option<String>,
}

impl Reply {
    fn ok() -> Self {
        Self::new(200, "ok")
    }

    fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            retry_after: None,
        }
    }

    fn from_row(row: &Value) -> Self {
        Self {
            status: u16::try_from(row["status"].as_u64().unwrap()).unwrap(),
            body: row["body"].as_str().unwrap().to_owned(),
            retry_after: row["headers"]["Retry-After"].as_str().map(str::to_owned),
        }
    }
}

struct Seen {
    body: Value,
    at: Instant,
    problems: Vec<String>,
}

#[derive(Default)]
struct Fake {
    script: VecDeque<Reply>,
    seen: Vec<Seen>,
}

struct FakeSlack {
    url: String,
    state: Arc<Mutex<Fake>>,
}

impl FakeSlack {
    /// Answers the scripted replies in order, then `200 ok`; a payload breaking Slack's
    /// limits is answered `400 invalid_payload`, as Slack would.
    async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(Mutex::new(Fake {
            script: script.into(),
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route(HOOK_PATH, post(hook))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no_service") })
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}{HOOK_PATH}"),
            state,
        }
    }

    fn target(&self) -> SlackTarget {
        SlackTarget {
            max_wait: Duration::from_millis(50),
            ..SlackTarget::new(self.url.clone())
        }
    }

    fn seen(&self) -> Vec<(Value, Instant)> {
        let state = self.state.lock().unwrap();
        for (i, seen) in state.seen.iter().enumerate() {
            assert!(seen.problems.is_empty(), "request {i}: {:?}", seen.problems);
        }
        state.seen.iter().map(|s| (s.body.clone(), s.at)).collect()
    }
}

async fn hook(State(state): State<Arc<Mutex<Fake>>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let mut problems = Vec::new();
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/json")
    {
        problems.push(format!(
            "content-type {:?}",
            headers.get(header::CONTENT_TYPE)
        ));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        problems.push(format!("not JSON: {e}"));
        Value::Null
    });
    problems.extend(limit_problems(&body));
    let reply = {
        let mut state = state.lock().unwrap();
        let reply = if problems.is_empty() {
            state.script.pop_front().unwrap_or_else(Reply::ok)
        } else {
            Reply::new(400, "invalid_payload")
        };
        state.seen.push(Seen { body, at, problems });
        reply
    };
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(retry_after) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.parse().unwrap());
    }
    response
}

/// Slack's limits (webhooks.md §7), checked independently of `fit`.
fn limit_problems(payload: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    match payload["text"].as_str() {
        Some(text) if !text.trim().is_empty() => {
            if text.chars().count() > 40_000 {
                problems.push("text over 40,000".into());
            }
        }
        _ => problems.push("no text".into()),
    }
    let Some(blocks) = payload.get("blocks") else {
        return problems;
    };
    let Some(blocks) = blocks.as_array() else {
        problems.push("blocks is not an array".into());
        return problems;
    };
    if blocks.is_empty() || blocks.len() > 50 {
        problems.push(format!("{} blocks", blocks.len()));
    }
    let size = Value::Array(blocks.clone()).to_string().chars().count();
    if size > 12_000 {
        problems.push(format!("blocks JSON is {size} chars"));
    }
    for (i, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("header") if chars(&block["text"]["text"]) > 150 => {
                problems.push(format!("block {i}: header over 150"));
            }
            Some("section") => {
                if chars(&block["text"]["text"]) > 3000 {
                    problems.push(format!("block {i}: section text over 3000"));
                }
                let fields = block["fields"].as_array().cloned().unwrap_or_default();
                if fields.len() > 10 {
                    problems.push(format!("block {i}: {} fields", fields.len()));
                }
                if fields.iter().any(|f| chars(&f["text"]) > 2000) {
                    problems.push(format!("block {i}: a field over 2000"));
                }
            }
            Some("context") if block["elements"].as_array().map_or(0, Vec::len) > 10 => {
                problems.push(format!("block {i}: over 10 context elements"));
            }
            Some(_) => {}
            None => problems.push(format!("block {i}: no type")),
        }
    }
    problems
}

fn example() -> Value {
    vectors::load("slack.json")["example_digest_payload"].clone()
}

fn digest_message(example: &Value) -> Message {
    Message {
        subject: "Memberspot bridge – daily digest".into(),
        text: example["text"].as_str().unwrap().to_owned(),
        html: None,
        slack_blocks: Some(example["blocks"].clone()),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[test]
fn the_example_digest_is_within_limits_and_fit_leaves_it_alone() {
    let vector = vectors::load("slack.json");
    let example = &vector["example_digest_payload"];
    assert_eq!(limit_problems(example), Vec::<String>::new());

    let blocks = example["blocks"].as_array().unwrap().clone();
    let text = example["text"].as_str().unwrap().to_owned();
    let (fitted, fitted_text) = fit(blocks.clone(), text.clone());
    assert_eq!(fitted, blocks);
    assert_eq!(fitted_text, text);

    let limits = &vector["limits_checked_by_example"];
    assert_eq!(limits["blocks"], json!(blocks.len()));
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(limits["header_text_len"], json!(header.chars().count()));
    assert_eq!(
        limits["section_fields"],
        json!(blocks[1]["fields"].as_array().unwrap().len())
    );
    assert_eq!(limits["max_blocks"], json!(slack::MAX_BLOCKS));
    assert_eq!(limits["max_header_text"], json!(slack::MAX_HEADER_TEXT));
    assert_eq!(limits["max_section_fields"], json!(slack::MAX_FIELDS));
}

#[test]
fn an_oversized_digest_is_cut_to_the_limits() {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("Digest {}", "H".repeat(293))}}),
        json!({"type": "section", "fields": (0..14)
            .map(|i| json!({"type": "mrkdwn", "text": format!("*F{i}*\n{}", "f".repeat(500))}))
            .collect::<Vec<_>>()}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": "Tom &amp; Jerry ".repeat(400)}}),
        json!({"type": "context", "elements": (0..12)
            .map(|i| json!({"type": "mrkdwn", "text": format!("e{i}")}))
            .collect::<Vec<_>>()}),
    ];
    for i in 0..80 {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("• order {i} {}", "x".repeat(400))}}));
    }
    let text = (0..2000)
        .map(|i| format!("{i:>5}  2026-03-02 06:00  digistore24  purchase  MBR{i:05}  ok"))
        .collect::<Vec<_>>()
        .join("\n");

    let (fitted, fitted_text) = fit(blocks, text);
    let payload = json!({"text": fitted_text, "blocks": fitted});
    assert_eq!(limit_problems(&payload), Vec::<String>::new());

    let header = fitted[0]["text"]["text"].as_str().unwrap();
    assert_eq!(header.chars().count(), 150);
    assert!(header.ends_with('…'));
    let fields = fitted[1]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 10);
    assert_eq!(fields[9]["text"], "… 5 more");
    assert!(
        fields[..9]
            .iter()
            .all(|f| !f["text"].as_str().unwrap().ends_with('…'))
    );
    let section = fitted[2]["text"]["text"].as_str().unwrap();
    assert!(section.chars().count() <= 3000 && section.ends_with('…'));
    let kept = section.trim_end_matches('…');
    assert_eq!(
        kept.matches('&').count(),
        kept.matches("&amp;").count(),
        "no half entity: {}",
        &kept[kept.len() - 20..]
    );
    let context = fitted[3]["elements"].as_array().unwrap();
    assert_eq!(context.len(), 10);
    assert_eq!(context[9]["text"], "… 3 more");
    let last = fitted.last().unwrap();
    assert_eq!(last["type"], "context");
    let note = last["elements"][0]["text"].as_str().unwrap();
    let omitted: usize = note
        .strip_prefix("… ")
        .and_then(|n| n.strip_suffix(" more not shown"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        fitted.len() - 1 + omitted,
        84,
        "every block is shown or counted"
    );

    assert!(fitted_text.chars().count() <= slack::MAX_TEXT);
    let (kept, note) = fitted_text.rsplit_once('\n').unwrap();
    let more: usize = note
        .strip_prefix("… ")
        .and_then(|n| n.strip_suffix(" more lines"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(kept.lines().count() + more, 2000);

    // Fitting again changes nothing.
    let again = fit(fitted.clone(), fitted_text.clone());
    assert_eq!(again, (fitted, fitted_text));

    // Long fields are cut one by one…
    let long_fields = json!({"type": "section", "fields": (0..3)
        .map(|_| json!({"type": "plain_text", "text": "g".repeat(2500)}))
        .collect::<Vec<_>>()});
    let (fitted, _) = fit(vec![long_fields], "t".into());
    for field in fitted[0]["fields"].as_array().unwrap() {
        let text = field["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), slack::MAX_FIELD_TEXT);
        assert!(text.ends_with('…'));
    }
    // …and many small blocks stop at 50, the last one counting the rest.
    let (fitted, _) = fit(vec![json!({"type": "divider"}); 70], "t".into());
    assert_eq!(fitted.len(), slack::MAX_BLOCKS);
    assert_eq!(fitted[49]["elements"][0]["text"], "… 21 more not shown");
}

#[tokio::test]
async fn every_response_row_of_the_vector_gets_its_action() {
    let vector = vectors::load("slack.json");
    let example = &vector["example_digest_payload"];
    let msg = digest_message(example);
    let rows = vector["response_handling_vectors"].as_array().unwrap();
    let mut statuses = BTreeSet::new();

    for row in rows {
        let reply = Reply::from_row(row);
        let action = row["action"].as_str().unwrap();
        let case = format!("{} {:?} → {action}", reply.status, reply.body);
        statuses.insert(reply.status);

        if action == "done" {
            let fake = FakeSlack::start(vec![reply.clone()]).await;
            let delivered = send_slack(&http(), &fake.target(), &msg)
                .await
                .expect(&case);
            assert_eq!(delivered.attempts, 1, "{case}");
            let seen = fake.seen();
            assert_eq!(seen.len(), 1, "{case}");
            assert_eq!(
                &seen[0].0, example,
                "{case}: the vector's payload goes out as is"
            );
        } else if action.starts_with("do not retry") && action.contains("text-only") {
            // One text-only attempt, then success…
            let fake = FakeSlack::start(vec![reply.clone(), Reply::ok()]).await;
            let delivered = send_slack(&http(), &fake.target(), &msg)
                .await
                .expect(&case);
            assert_eq!(delivered.attempts, 2, "{case}");
            assert!(
                delivered.detail.contains("text only"),
                "{case}: {}",
                delivered.detail
            );
            let seen = fake.seen();
            assert_eq!(seen.len(), 2, "{case}");
            assert!(seen[0].0.get("blocks").is_some(), "{case}");
            assert_eq!(seen[1].0, json!({"text": example["text"]}), "{case}");
            // …or a final rejection, without a third try.
            let fake = FakeSlack::start(vec![reply.clone(), reply.clone()]).await;
            let err = send_slack(&http(), &fake.target(), &msg).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::SlackRejected { status, error, attempts: 2 }
                    if *status == reply.status && *error == reply.body),
                "{case}: {err:?}"
            );
            assert_eq!(fake.seen().len(), 2, "{case}");
        } else if action.starts_with("do not retry") {
            let fake = FakeSlack::start(vec![reply.clone(), Reply::ok()]).await;
            let err = send_slack(&http(), &fake.target(), &msg).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::SlackRejected { status, error, attempts: 1 }
                    if *status == reply.status && *error == reply.body),
                "{case}: {err:?}"
            );
            assert!(!err.is_temporary(), "{case}");
            let shown = err.to_string();
            assert!(shown.starts_with("slack: HTTP "), "{case}: {shown}");
            assert!(shown.contains(&reply.body), "{case}: {shown}");
            assert_eq!(fake.seen().len(), 1, "{case}: not retried");
        } else if action.contains("retry") {
            // Retried after a pause, then delivered…
            let fake = FakeSlack::start(vec![reply.clone()]).await;
            let delivered = send_slack(&http(), &fake.target(), &msg)
                .await
                .expect(&case);
            assert_eq!(delivered.attempts, 2, "{case}");
            let seen = fake.seen();
            assert_eq!(seen.len(), 2, "{case}");
            assert_eq!(seen[0].0, seen[1].0, "{case}: same payload again");
            let pause = seen[1].1 - seen[0].1;
            assert!(
                pause >= Duration::from_millis(50),
                "{case}: paused {pause:?}"
            );
            assert!(
                pause < Duration::from_secs(5),
                "{case}: paused {pause:?}, cap ignored"
            );
            // …or given up after max_attempts.
            let fake = FakeSlack::start(vec![reply.clone(); 10]).await;
            let err = send_slack(&http(), &fake.target(), &msg).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::SlackGaveUp { attempts: 4, last }
                    if last.starts_with(&format!("HTTP {}", reply.status))),
                "{case}: {err:?}"
            );
            assert!(err.is_temporary(), "{case}");
            assert_eq!(fake.seen().len(), 4, "{case}");
        } else {
            panic!("unknown action in slack.json: {case}");
        }
    }
    assert_eq!(
        statuses,
        BTreeSet::from([200, 400, 403, 404, 410, 429, 500]),
        "the vector's rows changed; review this test"
    );
}

#[tokio::test]
async fn retry_after_below_the_cap_is_waited_for() {
    let rate_limited = Reply {
        retry_after: Some("1".into()),
        ..Reply::new(429, "")
    };
    let fake = FakeSlack::start(vec![rate_limited]).await;
    let target = SlackTarget {
        max_wait: Duration::from_secs(10),
        ..fake.target()
    };
    let delivered = send_slack(&http(), &target, &digest_message(&example()))
        .await
        .unwrap();
    assert_eq!(delivered.attempts, 2);
    assert!(
        delivered.detail.contains("after waiting 1s"),
        "{}",
        delivered.detail
    );
    let seen = fake.seen();
    let pause = seen[1].1 - seen[0].1;
    assert!(
        pause >= Duration::from_secs(1) && pause < Duration::from_secs(3),
        "{pause:?}"
    );
}

/// `Retry-After` may also be an HTTP date (RFC 9110); it is read like the API client
/// reads it, not replaced by the one-second back-off.
#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_for() {
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    let rate_limited = Reply {
        retry_after: Some(httpdate::fmt_http_date(at)),
        ..Reply::new(429, "")
    };
    let fake = FakeSlack::start(vec![rate_limited]).await;
    let target = SlackTarget {
        max_wait: Duration::from_secs(10),
        ..fake.target()
    };
    let delivered = send_slack(&http(), &target, &digest_message(&example()))
        .await
        .unwrap();
    assert_eq!(delivered.attempts, 2);
    let seen = fake.seen();
    let pause = seen[1].1 - seen[0].1;
    // The date has whole seconds: the pause is 2 to 3 s, never the 1 s back-off.
    assert!(
        pause >= Duration::from_millis(1900) && pause < Duration::from_secs(4),
        "{pause:?}"
    );
}

#[tokio::test]
async fn an_oversized_digest_is_posted_within_limits() {
    let blocks: Vec<Value> = (0..120)
        .map(|i| json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("• {i} {}", "y".repeat(3500))}}))
        .collect();
    let msg = Message {
        slack_blocks: Some(Value::Array(blocks)),
        ..Message::new("Digest", "z".repeat(45_000))
    };
    let fake = FakeSlack::start(vec![]).await;
    let delivered = send_slack(&http(), &fake.target(), &msg).await.unwrap();
    assert_eq!(delivered.attempts, 1);
    let seen = fake.seen(); // asserts the fake found nothing over the limits
    assert_eq!(seen.len(), 1);
    let note =
        seen[0].0["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["text"].clone();
    assert!(
        note.as_str().unwrap().ends_with(" more not shown"),
        "{note}"
    );
}

#[tokio::test]
async fn plain_text_is_escaped_and_sent_without_blocks() {
    let fake = FakeSlack::start(vec![]).await;
    let msg = Message::new("Refund", "Refund for Tom & Jerry <tom@example.com>");
    send_slack(&http(), &fake.target(), &msg).await.unwrap();
    assert_eq!(
        fake.seen()[0].0,
        json!({"text": "Refund for Tom &amp; Jerry &lt;tom@example.com&gt;"})
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_posted() {
    let fake = FakeSlack::start(vec![]).await;
    let cases = [
        (
            SlackTarget {
                max_attempts: 0,
                ..fake.target()
            },
            Message::new("s", "t"),
            "slack: max_attempts: must be at least 1",
        ),
        (
            fake.target(),
            Message {
                slack_blocks: Some(json!({"type": "divider"})),
                ..Message::new("s", "t")
            },
            "slack: slack_blocks: must be a JSON array of Block Kit blocks",
        ),
        (
            fake.target(),
            Message::new(" ", ""),
            "slack: text: nothing to say: text and subject are empty",
        ),
        (
            SlackTarget::new(format!("http://hooks.slack.com{HOOK_PATH}")),
            Message::new("s", "t"),
            "slack: webhook_url: must use https:// (plain http is only accepted for localhost test servers)",
        ),
    ];
    for (target, msg, want) in cases {
        let err = send_slack(&http(), &target, &msg).await.unwrap_err();
        assert_eq!(err.to_string(), want);
        assert!(!format!("{err:?}").contains(SECRET));
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn the_webhook_url_never_shows() {
    let msg = digest_message(&example());

    // Slack (or a proxy) echoing the path in its answer.
    let fake = FakeSlack::start(vec![Reply::new(
        404,
        &format!("channel_not_found for {HOOK_PATH}"),
    )])
    .await;
    let target = fake.target();
    assert!(!format!("{target:?}").contains(SECRET));
    let err = send_slack(&http(), &target, &msg).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(shown.contains("channel_not_found"), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }

    // Nobody listening: connection errors normally carry the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = SlackTarget {
        max_attempts: 2,
        max_wait: Duration::from_millis(10),
        ..SlackTarget::new(format!("http://127.0.0.1:{port}{HOOK_PATH}"))
    };
    let err = send_slack(&http(), &target, &msg).await.unwrap_err();
    assert!(
        matches!(err, NotifyError::SlackGaveUp { attempts: 2, .. }),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            shown.starts_with("slack: gave up after 2") || shown.starts_with("SlackGaveUp"),
            "{shown}"
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("/services/"), "{shown}");
    }
}
