//! The doctor and the base-URL probe over real HTTP: against the sandbox in every shape
//! mode (reads only, a report without values), against a server answering shapes no
//! one has reported, and against URLs that are not the API.

use std::time::Duration;

use memberspot_api::doctor::{self, Verdict};
use memberspot_api::{ApiError, ApiKey, BaseUrlError, Client, resolve_base_url};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize, Shapes};
use serde_json::Value;

const KEY: &str = "sk_test_doctor_5e1b9c7d3a2f4e6b8c0d";

async fn sandbox(shapes: Shapes) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        seed: 5,
        size: SeedSize {
            users: 12,
            offers: 3,
            courses: 3,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes,
    })
    .await
    .expect("sandbox starts")
}

fn client(base: &str) -> Client {
    Client::builder(base)
        .api_key(ApiKey::new(KEY))
        .rate_limit(0.0)
        .build()
        .expect("client")
}

async fn admin(sb: &Sandbox, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", sb.root_url()))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json")
}

/// Every text value of the seeded school (e-mails, names, ids, property values, order
/// ids) of three characters or more.
fn school_values(state: &Value, out: &mut Vec<String>) {
    match state {
        Value::String(s) if s.chars().count() >= 3 => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| school_values(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                // Data keys (property ids, course ids) count as values too.
                if !memberspot_wire::shape::looks_like_field_name(k) {
                    out.push(k.clone());
                }
                school_values(v, out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_doctor_reads_every_endpoint_once_writes_nothing_and_reports_no_values() {
    for shapes in Shapes::ALL {
        let sb = sandbox(shapes).await;
        let report = doctor::run(&client(&sb.base_url())).await;
        let names: Vec<(&str, Verdict)> =
            report.checks.iter().map(|c| (c.name, c.verdict)).collect();
        assert_eq!(
            names,
            [
                ("check_api_key", Verdict::Ok),
                ("list_offers", Verdict::Ok),
                ("list_users", Verdict::Ok),
                ("find_user_by_email", Verdict::Ok),
                ("list_user_course_progress", Verdict::Ok),
                ("get_user_course_progress", Verdict::Ok),
                ("list_custom_user_properties", Verdict::Ok),
            ],
            "{shapes}: {report:#?}"
        );
        assert!(report.all_read());
        assert_eq!(report.api_host, "other");
        let other_names: Vec<String> = report
            .checks
            .iter()
            .filter_map(|c| c.findings.as_ref())
            .flat_map(|f| f.other_names.iter().cloned())
            .collect();
        match shapes {
            Shapes::Documented => assert!(other_names.is_empty(), "{other_names:?}"),
            Shapes::Alternate => {
                for name in [
                    "data (read as users)",
                    "data[].created (read as createdAt)",
                    "data[].customUserProperties (read as customProperties)",
                    "[].hasCourseIds (read as courseIds)",
                ] {
                    assert!(
                        other_names.iter().any(|n| n == name),
                        "{name}: {other_names:?}"
                    );
                }
            }
        }

        // Reads only: every request a GET, none minting a login token.
        let log = admin(&sb, "/_sandbox/requests").await;
        let requests = log.as_array().expect("log");
        assert_eq!(requests.len(), 7, "one call per endpoint: {log:#}");
        for r in requests {
            let path = r["path"].as_str().expect("path");
            assert_eq!(r["method"], "GET", "{r}");
            assert!(!path.contains("login-token"), "{r}");
        }

        // The report holds no value of the school.
        let text = serde_json::to_string(&report).expect("encodes");
        let mut values = Vec::new();
        let state = admin(&sb, "/_sandbox/state").await;
        for part in ["offers", "courses", "exams", "customProperties", "users"] {
            school_values(&state[part], &mut values);
        }
        assert!(values.len() > 100, "the scan has something to look for");
        for v in &values {
            assert!(
                !text.contains(v.as_str()),
                "{shapes}: `{v}` is in the report"
            );
        }
        assert!(!text.contains('@'), "no e-mail in the report");
        let users = report.checks[2].shape.as_ref().expect("a shape");
        let list = if shapes == Shapes::Alternate {
            "data"
        } else {
            "users"
        };
        assert!(
            users.fields[list]
                .items
                .as_ref()
                .is_some_and(|u| u.fields.contains_key("email")),
            "field names are kept: {text}"
        );
        sb.shutdown().await.expect("shutdown");
    }
}

/// A server answering fixed bodies by path prefix.
async fn fixed_server(routes: Vec<(&'static str, u16, &'static str)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = routes
                .iter()
                .find(|(prefix, _, _)| path.starts_with(prefix))
                .map_or(
                    (404, r#"{"statusCode":404,"message":"Cannot GET"}"#),
                    |(_, s, b)| (*s, *b),
                );
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn unknown_fields_other_types_and_unreadable_answers_are_named() {
    let addr = fixed_server(vec![
        ("/api-auth", 200, "{}"),
        (
            "/v1/offers",
            200,
            r#"[{"id":"Qe4TnW8yUi2OpA6sDf0G","name":"Kurs","priority":"high","bundleIds":["x"]}]"#,
        ),
        (
            "/v1/users/list",
            200,
            r#"{"items":[{"uid":"h3K9xQ2mLp7RtV1wZc8B","email":"anna.private@example.com","offers":[{"offerId":"o","active":"yes"}],"tags":{"Lk3JhG5fDs7AzX9cVb1N":1}}],"next_page":null}"#,
        ),
        (
            "/v1/users/find-by-mail/",
            200,
            r#"{"email":"anna.private@example.com"}"#,
        ),
        ("/v1/users/course-progress/list/", 200, "not json at all"),
        ("/v1/custom-user-properties/list", 200, r#"{"properties":[]}"#),
    ])
    .await;
    let report = doctor::run(&client(&format!("http://{addr}/v1"))).await;
    let by_name = |n: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{n}: {report:#?}"))
    };
    let offers = by_name("list_offers");
    assert_eq!(offers.verdict, Verdict::Differs, "{offers:#?}");
    let f = offers.findings.as_ref().expect("findings");
    assert!(f.unknown_fields.contains("[].bundleIds"), "{f:?}");
    assert!(
        f.type_mismatches
            .iter()
            .any(|m| m.path == "[].priority" && m.found == "string"),
        "{f:?}"
    );
    let users = by_name("list_users");
    assert_eq!(users.verdict, Verdict::Differs);
    let f = users.findings.as_ref().expect("findings");
    assert!(f.unknown_fields.contains("items[].tags"), "{f:?}");
    assert!(f.other_names.contains("items (read as users)"), "{f:?}");
    assert!(
        f.other_names.contains("next_page (read as nextPage)"),
        "{f:?}"
    );
    assert!(
        f.type_mismatches
            .iter()
            .any(|m| m.path == "items[].offers[].active" && m.found == "string"),
        "{f:?}"
    );
    let find = by_name("find_user_by_email");
    assert_eq!(find.verdict, Verdict::Undecodable);
    assert_eq!(find.reason.as_deref(), Some("missing field `uid`"));
    assert!(
        find.findings
            .as_ref()
            .is_some_and(|f| f.missing_fields.contains("uid"))
    );
    let progress = by_name("list_user_course_progress");
    assert_eq!(progress.verdict, Verdict::Undecodable);
    assert_eq!(
        progress.reason.as_deref(),
        Some("the answer is not JSON (15 bytes)")
    );
    assert_eq!(
        by_name("get_user_course_progress").verdict,
        Verdict::Skipped
    );
    assert_eq!(by_name("list_custom_user_properties").verdict, Verdict::Ok);
    assert!(!report.all_read());
    let text = serde_json::to_string(&report).expect("encodes");
    for value in ["Qe4T", "h3K9", "anna.private", "Lk3J", "Kurs", "high"] {
        assert!(!text.contains(value), "{value} in {text}");
    }
}

#[tokio::test]
async fn a_refused_key_skips_the_rest() {
    let sb = sandbox(Shapes::Documented).await;
    let c = Client::builder(sb.base_url())
        .api_key(ApiKey::new("sk_wrong"))
        .rate_limit(0.0)
        .build()
        .expect("client");
    let report = doctor::run(&c).await;
    assert_eq!(report.checks[0].verdict, Verdict::Failed);
    assert_eq!(report.checks[0].status, Some(401));
    assert!(
        report.checks[1..]
            .iter()
            .all(|c| c.verdict == Verdict::Skipped)
    );
    assert_eq!(report.checks.len(), 7);
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_base_url_without_v1_is_completed_and_one_that_answers_neither_is_refused() {
    let sb = sandbox(Shapes::Documented).await;
    let key = ApiKey::new(KEY);
    let t = Duration::from_secs(5);
    let root = sb.root_url();
    for given in [
        root.clone(),
        format!("{root}/"),
        sb.base_url(),
        format!("{}/", sb.base_url()),
    ] {
        let r = resolve_base_url(&given, &key, t).await.expect("found");
        assert_eq!(r.base_url, sb.base_url(), "{given}");
        assert_eq!(
            r.added_v1,
            !given.trim_end_matches('/').ends_with("/v1"),
            "{given}"
        );
    }
    // A wrong path answers 404 at both places.
    let e = resolve_base_url(&format!("{root}/api"), &key, t)
        .await
        .expect_err("not the API");
    match &e {
        BaseUrlError::NotTheApi { tried, .. } => {
            assert_eq!(tried.len(), 2, "{e}");
            assert!(
                tried[0].0.ends_with("/api/v1") && tried[1].0.ends_with("/api"),
                "{e}"
            );
        }
        other => panic!("expected NotTheApi, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("404") && text.contains("https://api.memberspot.de/v1"),
        "{text}"
    );
    // The right place with the wrong key: the key is what is wrong.
    let e = resolve_base_url(&root, &ApiKey::new("sk_wrong"), t)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, BaseUrlError::Api(ApiError::Unauthorized { .. })),
        "{e:?}"
    );
    assert!(!e.to_string().contains("sk_wrong"));
    // Something that answers 200 with a page, not the API.
    let addr = fixed_server(vec![("/", 200, "<html>welcome</html>")]).await;
    let e = resolve_base_url(&format!("http://{addr}"), &key, t)
        .await
        .expect_err("a web page");
    assert!(
        matches!(&e, BaseUrlError::NotTheApi { tried, .. } if tried.iter().all(|(_, why)| why.contains("not a list of offers"))),
        "{e}"
    );
    // Nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let e = resolve_base_url(&format!("http://{closed}"), &key, t)
        .await
        .expect_err("unreachable");
    assert!(
        matches!(e, BaseUrlError::Api(ApiError::Transport { .. })),
        "{e:?}"
    );
    sb.shutdown().await.expect("shutdown");
}
