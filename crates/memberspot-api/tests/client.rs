//! The client against the sandbox, over real HTTP. The sandbox's request
//! log lets us check the raw paths and bodies the client sends against the
//! reference (literal strings here, not the shared wire types).
//!
//! The sandbox speaks the shapes named in `MEMBERSPOT_SANDBOX_SHAPES` (documented when
//! unset); `scripts/test` runs this suite in every mode.

use std::time::Duration;

use futures::TryStreamExt;
use memberspot_api::actions::*;
use memberspot_api::{ApiError, ApiKey, Client, RetryPolicy, users_stream};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize, Shapes};
use memberspot_wire::User;
use serde_json::{Value, json};

const KEY: &str = "sk_test_3f9c2a7e5b1d4c8a9e0f6b2d7c1a5e3f";

async fn sandbox(rate_limit: f64, faults: Faults) -> Sandbox {
    let config = SandboxConfig {
        api_key: KEY.into(),
        seed: 7,
        size: SeedSize {
            users: 30,
            offers: 4,
            courses: 3,
        },
        rate_limit,
        faults,
        state_file: None,
        shapes: shapes(),
    };
    Sandbox::start_local(config).await.expect("sandbox starts")
}

/// The shape mode this run's sandboxes speak.
fn shapes() -> Shapes {
    Shapes::from_env().expect("a known shape mode")
}

/// The member after a write: the answer when it is the member (documented shapes), or
/// looked up when the answer is the new state (the alternate shapes).
async fn member_after(c: &Client, email: &str, update: UserUpdate) -> User {
    match update {
        UserUpdate::User(user) => *user,
        UserUpdate::State(state) => {
            assert_eq!(shapes(), Shapes::Alternate, "a state answer: {state:?}");
            assert_eq!(state.email, email.to_lowercase());
            c.execute(&FindUserByEmail::new(email))
                .await
                .expect("find after the write")
        }
        UserUpdate::Other(v) => panic!("neither a member nor a state: {v}"),
    }
}

fn client(sb: &Sandbox) -> Client {
    Client::builder(sb.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(0.0)
        .retry(RetryPolicy {
            max_retries: 6,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        })
        .build()
        .expect("client builds")
}

async fn admin(sb: &Sandbox, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", sb.root_url()))
        .header("X-API-KEY", KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    assert!(
        resp.status().is_success(),
        "admin {path}: {}",
        resp.status()
    );
    resp.json().await.expect("admin json")
}

async fn state(sb: &Sandbox) -> Value {
    admin(sb, reqwest::Method::GET, "/_sandbox/state", None).await
}

async fn last_request(sb: &Sandbox) -> Value {
    let log = admin(sb, reqwest::Method::GET, "/_sandbox/requests?limit=1", None).await;
    let entries = log
        .as_array()
        .cloned()
        .or_else(|| log["requests"].as_array().cloned())
        .expect("request log list");
    entries.last().cloned().expect("one request logged")
}

/// A member with at least one holding and progress, and an offer they do not hold.
fn pick(state: &Value) -> (String, String, String) {
    let users = state["users"].as_array().expect("users");
    let user = users
        .iter()
        .find(|u| u["offers"].as_array().is_some_and(|o| !o.is_empty()))
        .expect("a member with an offer");
    let email = user["email"].as_str().expect("email").to_string();
    let held = user["offers"][0]["offerId"]
        .as_str()
        .expect("offer")
        .to_string();
    let other = state["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .find(|id| {
            *id != held
                && !user["offers"]
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|h| h["offerId"] == *id))
        })
        .expect("an offer not held")
        .to_string();
    (email, held, other)
}

#[tokio::test]
async fn every_endpoint_succeeds_and_sends_what_the_reference_says() {
    let sb = sandbox(0.0, Faults::default()).await;
    let c = client(&sb);
    let st = state(&sb).await;
    let (email, held, other) = pick(&st);
    let course = st["courses"][0]["id"].as_str().expect("course").to_string();
    let chapter = st["courses"][0]["chapters"][0]["id"]
        .as_str()
        .expect("chapter")
        .to_string();
    let exam = st["exams"][0]["id"].as_str().expect("exam").to_string();
    let prop = st["customProperties"][0]["id"]
        .as_str()
        .expect("property")
        .to_string();

    // List users with every filter.
    let page = c
        .execute(
            &ListUsers::new()
                .page_length(5)
                .active(true)
                .offer(held.clone()),
        )
        .await
        .expect("list");
    assert!(page.users.len() <= 5);
    let r = last_request(&sb).await;
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/v1/users/list");
    let q = r["query"].as_str().expect("query");
    for part in ["pageLength=5", "active=true", &format!("offerId={held}")] {
        assert!(q.contains(part), "{q} lacks {part}");
    }

    let plus = "Max.Mustermann+kurs@Example.com";
    let granted = c
        .execute(
            &GrantUserOfferByEmail::new(plus, other.clone())
                .first_name("Max")
                .last_name("Mustermann")
                .order_id("DS24-1"),
        )
        .await
        .expect("grant");
    let user = granted
        .user()
        .expect("grant answers with the member")
        .clone();
    assert_eq!(
        user.email,
        plus.to_lowercase(),
        "e-mails are stored lower-cased"
    );
    assert_eq!(
        user.name.as_deref(),
        Some("Mustermann"),
        "`name` is the last name"
    );
    let r = last_request(&sb).await;
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str()),
        (Some("POST"), Some("/v1/users/grant-user-offer-by-mail"))
    );
    assert_eq!(
        r["body"],
        json!({"email": plus, "grantOffer": other, "firstname": "Max", "name": "Mustermann", "orderId": "DS24-1"})
    );

    let found = c.execute(&FindUserByEmail::new(plus)).await.expect("find");
    assert_eq!(found.uid, user.uid);
    assert_eq!(
        last_request(&sb).await["path"],
        "/v1/users/find-by-mail/Max.Mustermann%2Bkurs%40Example.com"
    );

    c.execute(&SetUserOfferState::new(plus, other.clone(), Some(false)))
        .await
        .expect("revoke");
    assert_eq!(
        last_request(&sb).await["body"],
        json!({"email": plus, "offerId": other, "active": false})
    );
    c.execute(&SetOrderState::new(plus, "DS24-1", Some(true)))
        .await
        .expect("order");
    let r = last_request(&sb).await;
    assert_eq!(
        (r["path"].as_str(), &r["body"]),
        (
            Some("/v1/users/set-order-state"),
            &json!({"email": plus, "orderId": "DS24-1", "active": true})
        )
    );

    let when = memberspot_wire::Timestamp::parse("2030-01-31T00:00:00Z");
    c.execute(&SetOfferExpiration::new(plus, other.clone(), when))
        .await
        .expect("expires");
    let r = last_request(&sb).await;
    assert_eq!(r["path"], "/v1/users/set-offer-expires");
    assert_eq!(
        r["body"],
        json!({"email": plus, "offerId": other, "expiresAt": "2030-01-31T00:00:00.000Z"})
    );

    let progress = c
        .execute(&ListUserCourseProgress::new(&email))
        .await
        .expect("progress list");
    assert_eq!(
        last_request(&sb).await["path"],
        format!(
            "/v1/users/course-progress/list/{}",
            email.replace('@', "%40")
        )
    );
    let first_course = progress
        .progress
        .first()
        .map(|p| p.course_id.clone())
        .expect("the member has a course");
    let one = c
        .execute(&GetUserCourseProgress::new(first_course.clone(), &email))
        .await
        .expect("progress one");
    assert_eq!(
        one.user.as_ref().map(|u| u.email.as_str()),
        Some(email.as_str())
    );
    assert_eq!(
        last_request(&sb).await["path"],
        format!(
            "/v1/users/course-progress/{first_course}/{}",
            email.replace('@', "%40")
        )
    );

    let token = c
        .execute(&CreateLoginToken::new(user.uid.clone()))
        .await
        .expect("token");
    assert!(token.token.len() >= 20);
    match shapes() {
        Shapes::Documented => assert_eq!(token.login_url, None),
        Shapes::Alternate => assert!(
            token
                .login_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://") && u.ends_with(&token.token)),
            "{token:?}"
        ),
    }
    assert_eq!(
        last_request(&sb).await["path"],
        format!("/v1/users/login-token/{}", user.uid)
    );

    let offers = c.execute(&ListOffers).await.expect("offers");
    assert_eq!(offers.0.len(), 4);
    assert!(
        offers
            .0
            .iter()
            .all(|o| !o.course_ids.is_empty() && o.extra.is_empty()),
        "course ids read in every shape mode: {offers:?}"
    );
    assert_eq!(last_request(&sb).await["path"], "/v1/offers");

    let props = c
        .execute(&ListCustomUserProperties)
        .await
        .expect("properties");
    assert!(!props.0.is_empty());
    assert_eq!(
        last_request(&sb).await["path"],
        "/v1/custom-user-properties/list"
    );

    let set = c
        .execute(&SetCustomUserProperties::new(
            plus,
            [(prop.clone(), "ACME GmbH")],
        ))
        .await
        .expect("set props");
    assert_eq!(
        set.user().and_then(|u| u.custom_properties.get(&prop)),
        Some(&json!("ACME GmbH"))
    );
    let r = last_request(&sb).await;
    assert_eq!(r["path"], "/v1/users/set-custom-user-properties");
    assert_eq!(
        r["body"],
        json!({"email": plus, "properties": [{"id": prop, "value": "ACME GmbH"}]})
    );

    c.execute(&EnableChapterAccess::new(
        plus,
        course.clone(),
        chapter.clone(),
    ))
    .await
    .expect("chapter");
    let r = last_request(&sb).await;
    assert_eq!(r["path"], "/v1/chapters/chapter-access/enable");
    assert_eq!(
        r["body"],
        json!({"email": plus, "courseId": course, "chapterId": chapter})
    );

    let results = c
        .execute(&ListExamResults::new(exam.clone()))
        .await
        .expect("exam results");
    let _ = results.0.len();
    assert_eq!(
        last_request(&sb).await["path"],
        format!("/v1/exams/{exam}/results")
    );

    c.execute(&CheckApiKey).await.expect("key check");
    assert_eq!(last_request(&sb).await["path"], "/api-auth");

    let deleted = c
        .execute(&DeleteUsers::new([plus, "nobody@example.com"]))
        .await
        .expect("delete");
    match shapes() {
        Shapes::Documented => {
            assert_eq!(deleted.deleted.as_deref(), Some(&[plus.to_lowercase()][..]))
        }
        // The text `ok`: a success that names nobody.
        Shapes::Alternate => assert_eq!(
            (deleted.ok, deleted.message.as_deref(), deleted.deleted),
            (Some(true), Some("ok"), None)
        ),
    }
    let r = last_request(&sb).await;
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str()),
        (Some("DELETE"), Some("/v1/users/delete-users"))
    );
    assert_eq!(r["body"], json!({"emails": [plus, "nobody@example.com"]}));

    let again = c
        .execute(&DeleteUsersPost(DeleteUsers::new([email.as_str()])))
        .await
        .expect("delete post");
    match shapes() {
        Shapes::Documented => assert_eq!(again.deleted_count, Some(1)),
        Shapes::Alternate => assert_eq!(again.message.as_deref(), Some("ok")),
    }
    assert_eq!(last_request(&sb).await["method"], "POST");
    assert!(
        state(&sb).await["users"]
            .as_array()
            .is_some_and(|us| !us.iter().any(|u| u["email"] == email.as_str())),
        "deleted in every shape mode"
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn errors_are_typed_and_never_contain_the_key() {
    let sb = sandbox(0.0, Faults::default()).await;
    let bad = Client::builder(sb.base_url())
        .api_key(ApiKey::new("sk_wrong_key_0123456789abcdef"))
        .rate_limit(0.0)
        .build()
        .expect("builds");
    let e = bad.execute(&ListOffers).await.expect_err("401");
    assert!(matches!(e, ApiError::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("sk_wrong_key"));

    let c = client(&sb);
    let e = c
        .execute(&FindUserByEmail::new("nobody@example.com"))
        .await
        .expect_err("404");
    assert!(matches!(e, ApiError::NotFound { .. }), "{e:?}");
    let e = c
        .execute(&GrantUserOfferByEmail::new("not-an-email", "x"))
        .await
        .expect_err("400");
    match &e {
        ApiError::Validation { field, .. } => assert_eq!(field.as_deref(), Some("email"), "{e}"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    let e = c
        .execute(&GrantUserOfferByEmail::new(
            "new@example.com",
            "no-such-offer",
        ))
        .await
        .expect_err("404 offer");
    assert!(matches!(e, ApiError::NotFound { .. }), "{e:?}");
    for text in [format!("{e}"), format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains(KEY), "{text}");
    }
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn throttled_requests_are_retried_after_retry_after() {
    // The sandbox allows 5 requests/s; an unpaced client sends 12 at once.
    let sb = sandbox(5.0, Faults::default()).await;
    let c = client(&sb);
    let calls = (0..12).map(|_| {
        let c = c.clone();
        async move { c.execute(&ListOffers).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        c.stats().rate_limited > 0,
        "the burst must have been throttled: {:?}",
        c.stats()
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn paced_client_is_not_throttled() {
    let sb = sandbox(20.0, Faults::default()).await;
    let c = Client::builder(sb.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(20.0)
        .build()
        .expect("builds");
    let calls = (0..30).map(|_| {
        let c = c.clone();
        async move { c.execute(&ListOffers).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(c.stats().rate_limited, 0, "{:?}", c.stats());
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn server_errors_and_429_bursts_are_retried_for_safe_actions() {
    let faults = Faults {
        error_rate: 0.3,
        rate_limit_rate: 0.1,
        rate_limit_burst: 2,
        seed: Some(3),
        ..Faults::default()
    };
    let sb = sandbox(0.0, faults).await;
    let c = client(&sb);
    for i in 0..20 {
        c.execute(&GrantUserOfferByEmail::new(
            format!("retry{i}@example.com"),
            first_offer(&sb).await,
        ))
        .await
        .expect("retried to success");
    }
    let s = c.stats();
    assert!(s.server_errors > 0 && s.retries > 0, "{s:?}");
    sb.shutdown().await.expect("shutdown");
}

async fn first_offer(sb: &Sandbox) -> String {
    state(sb).await["offers"][0]["id"]
        .as_str()
        .expect("offer")
        .to_string()
}

#[tokio::test]
async fn persistent_failures_surface_as_typed_errors() {
    let sb = sandbox(
        0.0,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let e = client(&sb)
        .execute(&ListOffers)
        .await
        .expect_err("always 5xx");
    assert!(matches!(e, ApiError::Upstream { .. }), "{e:?}");
    assert!(e.is_transient());
    sb.shutdown().await.expect("shutdown");

    let sb = sandbox(
        0.0,
        Faults {
            timeout_rate: 1.0,
            timeout_ms: 5_000,
            ..Faults::default()
        },
    )
    .await;
    let c = Client::builder(sb.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(0.0)
        .timeout(Duration::from_millis(150))
        .retry(RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(5),
        })
        .build()
        .expect("builds");
    let e = c.execute(&ListOffers).await.expect_err("times out");
    assert!(matches!(e, ApiError::Timeout { .. }), "{e:?}");
    assert_eq!(c.stats().timeouts, 2, "one attempt and one retry");
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pagination_streams_every_member_once() {
    let sb = sandbox(0.0, Faults::default()).await;
    let c = client(&sb);
    let all: Vec<_> = users_stream(&c, ListUsers::new().page_length(7), None)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(all.len(), 30);
    let mut uids: Vec<_> = all.iter().map(|u| u.uid.clone()).collect();
    uids.dedup();
    assert_eq!(uids.len(), 30, "no duplicates across pages");
    let capped: Vec<_> = users_stream(&c, ListUsers::new().page_length(7), Some(12))
        .try_collect()
        .await
        .expect("capped");
    assert_eq!(capped.len(), 12);
    assert_eq!(
        c.stats().requests,
        5 + 2,
        "30 members in pages of 7, then 2 pages for 12"
    );
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn holding_semantics() {
    let sb = sandbox(0.0, Faults::default()).await;
    let c = client(&sb);
    let st = state(&sb).await;
    let offer = st["offers"][0].clone();
    let offer_id = offer["id"].as_str().expect("id").to_string();
    let course = offer["courseIds"][0].as_str().expect("course").to_string();
    let post = st["courses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == course.as_str()))
        .map(|c| {
            c["chapters"][0]["posts"][0]["id"]
                .as_str()
                .expect("post")
                .to_string()
        })
        .expect("course in state");
    let email = "semantics@example.com";
    c.execute(&GrantUserOfferByEmail::new(email, offer_id.clone()).order_id("ORD-9"))
        .await
        .expect("grant");
    admin(
        &sb,
        reqwest::Method::POST,
        "/_sandbox/progress",
        Some(json!({"email": email, "courseId": course, "postId": post, "completed": true})),
    )
    .await;

    // Revoke keeps progress.
    let u = c
        .execute(&SetUserOfferState::new(
            email,
            offer_id.clone(),
            Some(false),
        ))
        .await
        .expect("revoke");
    let u = member_after(&c, email, u).await;
    assert_eq!(u.holding(&offer_id).map(|h| h.active), Some(false));
    assert!(
        u.created_at.is_some(),
        "the creation time is read in every mode"
    );
    match shapes() {
        Shapes::Documented => assert_eq!((u.progress.as_ref(), u.active), (None, None)),
        // The member's own flag and the embedded progress, whose posts are counts.
        Shapes::Alternate => {
            assert_eq!(u.active, Some(false), "their only offer is revoked");
            let p = u
                .course_progress()
                .iter()
                .find(|p| p.course_id == course)
                .expect("the course in the embedded progress");
            assert_eq!(p.completed_posts, memberspot_wire::Posts::Count(1));
            assert_eq!(p.active_posts, memberspot_wire::Posts::Count(0));
            assert!(u.extra.is_empty(), "every field read: {:?}", u.extra);
        }
    }
    let p = c
        .execute(&GetUserCourseProgress::new(course.clone(), email))
        .await
        .expect("progress kept");
    assert_eq!(p.completed_posts.count(), 1);

    // Order-based holdings switch together.
    let second = st["offers"][1]["id"].as_str().expect("id").to_string();
    c.execute(&GrantUserOfferByEmail::new(email, second.clone()).order_id("ORD-9"))
        .await
        .expect("grant 2");
    let u = c
        .execute(&SetOrderState::new(email, "ORD-9", Some(true)))
        .await
        .expect("order on");
    let user = &member_after(&c, email, u).await;
    assert!(
        user.holding(&offer_id).is_some_and(|h| h.active)
            && user.holding(&second).is_some_and(|h| h.active)
    );
    let u = c
        .execute(&SetOrderState::new(email, "ORD-9", Some(false)))
        .await
        .expect("order off");
    let user = &member_after(&c, email, u).await;
    assert!(
        !user.holding(&offer_id).is_some_and(|h| h.active)
            && !user.holding(&second).is_some_and(|h| h.active)
    );

    // Expiry: once the date passes the holding is inactive.
    c.execute(&SetUserOfferState::new(email, offer_id.clone(), Some(true)))
        .await
        .expect("restore");
    let soon = memberspot_wire::Timestamp(chrono::Utc::now() + chrono::Duration::hours(1));
    c.execute(&SetOfferExpiration::new(
        email,
        offer_id.clone(),
        Some(soon),
    ))
    .await
    .expect("expire");
    assert!(
        c.execute(&FindUserByEmail::new(email))
            .await
            .expect("find")
            .holding(&offer_id)
            .is_some_and(|h| h.active)
    );
    admin(
        &sb,
        reqwest::Method::POST,
        "/_sandbox/clock",
        Some(json!({"advanceSeconds": 7200})),
    )
    .await;
    assert!(
        !c.execute(&FindUserByEmail::new(email))
            .await
            .expect("find")
            .holding(&offer_id)
            .is_some_and(|h| h.active)
    );

    // Omitted `active` removes the holding and its progress.
    c.execute(&SetUserOfferState::new(email, offer_id.clone(), None))
        .await
        .expect("remove");
    let user = c.execute(&FindUserByEmail::new(email)).await.expect("find");
    assert!(user.holding(&offer_id).is_none());
    let gone = c
        .execute(&GetUserCourseProgress::new(course.clone(), email))
        .await;
    match gone {
        Err(ApiError::NotFound { .. }) => {}
        Ok(p) => assert!(
            p.completed_posts.count() == 0,
            "progress must be deleted: {p:?}"
        ),
        Err(e) => panic!("unexpected {e:?}"),
    }
    sb.shutdown().await.expect("shutdown");
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sb = sandbox(
        3.0,
        Faults {
            error_rate: 0.3,
            seed: Some(1),
            ..Faults::default()
        },
    )
    .await;
    let c = client(&sb);
    let _ = c.execute(&ListOffers).await;
    let _ = c.execute(&FindUserByEmail::new("nobody@example.com")).await;
    let _ = futures::future::join_all((0..6).map(|_| c.execute(&ListOffers))).await;
    let bad = Client::builder(sb.base_url())
        .api_key(ApiKey::new(format!("{KEY}x")))
        .build()
        .expect("builds");
    let _ = bad.execute(&ListOffers).await;
    sb.shutdown().await.expect("shutdown");

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).to_string();
    assert!(
        logs.contains("retrying") || logs.contains("answer"),
        "the capture must have seen client logs"
    );
    assert!(!logs.contains(KEY), "the API key leaked into the logs");
}

/// Ids the matrix needs, read from the sandbox's admin state.
struct Ids {
    email: String,
    uid: String,
    offer: String,
    order: String,
    course: String,
    chapter: String,
    exam: String,
    prop: String,
}

async fn ids(sb: &Sandbox) -> Ids {
    let st = state(sb).await;
    let user = st["users"]
        .as_array()
        .and_then(|us| {
            us.iter().find(|u| {
                u["offers"]
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|h| h["orderId"].is_string()))
            })
        })
        .expect("a member with an order");
    let holding = user["offers"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["orderId"].is_string()))
        .expect("holding");
    let offer = holding["offerId"].as_str().expect("offer").to_string();
    let course = st["offers"]
        .as_array()
        .and_then(|os| os.iter().find(|o| o["id"] == offer.as_str()))
        .and_then(|o| o["courseIds"][0].as_str())
        .expect("course of the offer")
        .to_string();
    let chapter = st["courses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == course.as_str()))
        .and_then(|c| c["chapters"][0]["id"].as_str())
        .expect("chapter")
        .to_string();
    Ids {
        email: user["email"].as_str().expect("email").to_string(),
        uid: user["uid"].as_str().expect("uid").to_string(),
        order: holding["orderId"].as_str().expect("order").to_string(),
        offer,
        course,
        chapter,
        exam: st["exams"][0]["id"].as_str().expect("exam").to_string(),
        prop: st["customProperties"][0]["id"]
            .as_str()
            .expect("prop")
            .to_string(),
    }
}

/// Every action once; deletes last so the others find their member.
async fn every_action(c: &Client, i: &Ids) -> Vec<(&'static str, Result<(), ApiError>)> {
    fn done<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
        r.map(|_| ())
    }
    vec![
        ("list_users", done(c.execute(&ListUsers::new()).await)),
        (
            "find_user_by_email",
            done(c.execute(&FindUserByEmail::new(&i.email)).await),
        ),
        (
            "grant_user_offer_by_email",
            done(
                c.execute(&GrantUserOfferByEmail::new(&i.email, &i.offer))
                    .await,
            ),
        ),
        (
            "set_user_offer_state",
            done(
                c.execute(&SetUserOfferState::new(&i.email, &i.offer, Some(true)))
                    .await,
            ),
        ),
        (
            "set_order_state",
            done(
                c.execute(&SetOrderState::new(&i.email, &i.order, Some(true)))
                    .await,
            ),
        ),
        (
            "set_offer_expiration",
            done(
                c.execute(&SetOfferExpiration::new(&i.email, &i.offer, None))
                    .await,
            ),
        ),
        (
            "list_user_course_progress",
            done(c.execute(&ListUserCourseProgress::new(&i.email)).await),
        ),
        (
            "get_user_course_progress",
            done(
                c.execute(&GetUserCourseProgress::new(&i.course, &i.email))
                    .await,
            ),
        ),
        (
            "create_login_token",
            done(c.execute(&CreateLoginToken::new(&i.uid)).await),
        ),
        ("list_offers", done(c.execute(&ListOffers).await)),
        (
            "list_custom_user_properties",
            done(c.execute(&ListCustomUserProperties).await),
        ),
        (
            "set_custom_user_properties",
            done(
                c.execute(&SetCustomUserProperties::new(
                    &i.email,
                    [(i.prop.as_str(), "v")],
                ))
                .await,
            ),
        ),
        (
            "enable_chapter_access",
            done(
                c.execute(&EnableChapterAccess::new(&i.email, &i.course, &i.chapter))
                    .await,
            ),
        ),
        (
            "list_exam_results",
            done(c.execute(&ListExamResults::new(&i.exam)).await),
        ),
        ("check_api_key", done(c.execute(&CheckApiKey).await)),
        (
            "delete_users_post",
            done(
                c.execute(&DeleteUsersPost(DeleteUsers::new(["nobody@example.com"])))
                    .await,
            ),
        ),
        (
            "delete_users",
            done(c.execute(&DeleteUsers::new([i.email.as_str()])).await),
        ),
    ]
}

#[tokio::test]
async fn every_action_succeeds_is_refused_without_the_key_and_survives_429_and_5xx() {
    // Success, and 401 with a wrong key.
    let sb = sandbox(0.0, Faults::default()).await;
    let i = ids(&sb).await;
    let bad = Client::builder(sb.base_url())
        .api_key(ApiKey::new("sk_wrong"))
        .rate_limit(0.0)
        .build()
        .expect("builds");
    for (name, r) in every_action(&bad, &i).await {
        assert!(
            matches!(r, Err(ApiError::Unauthorized { .. })),
            "{name}: {r:?}"
        );
    }
    let results = every_action(&client(&sb), &i).await;
    assert_eq!(results.len(), 17);
    for (name, r) in results {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    sb.shutdown().await.expect("shutdown");

    // 429 bursts and 5xx on a share of requests: every action is retried to success.
    for faults in [
        Faults {
            rate_limit_rate: 0.4,
            rate_limit_burst: 2,
            seed: Some(21),
            ..Faults::default()
        },
        Faults {
            error_rate: 0.4,
            seed: Some(22),
            ..Faults::default()
        },
    ] {
        let sb = sandbox(0.0, faults.clone()).await;
        let i = ids(&sb).await;
        let c = client(&sb);
        for (name, r) in every_action(&c, &i).await {
            assert!(r.is_ok(), "{name} under {faults:?}: {r:?}");
        }
        let s = c.stats();
        assert!(
            s.retries > 0 && (s.rate_limited > 0 || s.server_errors > 0),
            "{faults:?}: {s:?}"
        );
        sb.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn every_action_with_a_missing_thing_is_404_and_with_bad_input_is_400() {
    let sb = sandbox(0.0, Faults::default()).await;
    let i = ids(&sb).await;
    let c = client(&sb);
    let nobody = "nobody@example.com";
    let not_found: Vec<(&str, Result<(), ApiError>)> = vec![
        (
            "find_user_by_email",
            c.execute(&FindUserByEmail::new(nobody)).await.map(|_| ()),
        ),
        (
            "grant_user_offer_by_email",
            c.execute(&GrantUserOfferByEmail::new(nobody, "no-offer"))
                .await
                .map(|_| ()),
        ),
        (
            "set_user_offer_state",
            c.execute(&SetUserOfferState::new(nobody, &i.offer, Some(false)))
                .await
                .map(|_| ()),
        ),
        (
            "set_order_state",
            c.execute(&SetOrderState::new(&i.email, "no-order", Some(false)))
                .await
                .map(|_| ()),
        ),
        (
            "set_offer_expiration",
            c.execute(&SetOfferExpiration::new(nobody, &i.offer, None))
                .await
                .map(|_| ()),
        ),
        (
            "list_user_course_progress",
            c.execute(&ListUserCourseProgress::new(nobody))
                .await
                .map(|_| ()),
        ),
        (
            "get_user_course_progress",
            c.execute(&GetUserCourseProgress::new("no-course", &i.email))
                .await
                .map(|_| ()),
        ),
        (
            "create_login_token",
            c.execute(&CreateLoginToken::new("no-uid"))
                .await
                .map(|_| ()),
        ),
        (
            "set_custom_user_properties",
            c.execute(&SetCustomUserProperties::new(&i.email, [("no-prop", "v")]))
                .await
                .map(|_| ()),
        ),
        (
            "enable_chapter_access",
            c.execute(&EnableChapterAccess::new(&i.email, &i.course, "no-chapter"))
                .await
                .map(|_| ()),
        ),
        (
            "list_exam_results",
            c.execute(&ListExamResults::new("no-exam"))
                .await
                .map(|_| ()),
        ),
    ];
    for (name, r) in not_found {
        assert!(matches!(r, Err(ApiError::NotFound { .. })), "{name}: {r:?}");
    }
    let bad = "not-an-email";
    let invalid: Vec<(&str, Result<(), ApiError>)> = vec![
        (
            "list_users",
            c.execute(&ListUsers::new().page_length(1000))
                .await
                .map(|_| ()),
        ),
        (
            "find_user_by_email",
            c.execute(&FindUserByEmail::new(bad)).await.map(|_| ()),
        ),
        (
            "grant_user_offer_by_email",
            c.execute(&GrantUserOfferByEmail::new(bad, &i.offer))
                .await
                .map(|_| ()),
        ),
        (
            "set_user_offer_state",
            c.execute(&SetUserOfferState::new(bad, &i.offer, Some(true)))
                .await
                .map(|_| ()),
        ),
        (
            "set_order_state",
            c.execute(&SetOrderState::new(bad, &i.order, Some(true)))
                .await
                .map(|_| ()),
        ),
        (
            "set_offer_expiration",
            c.execute(&SetOfferExpiration::new(bad, &i.offer, None))
                .await
                .map(|_| ()),
        ),
        (
            "set_custom_user_properties",
            c.execute(&SetCustomUserProperties::new(bad, [(i.prop.as_str(), "v")]))
                .await
                .map(|_| ()),
        ),
        (
            "enable_chapter_access",
            c.execute(&EnableChapterAccess::new(bad, &i.course, &i.chapter))
                .await
                .map(|_| ()),
        ),
        (
            "delete_users",
            c.execute(&DeleteUsers::new(Vec::<String>::new()))
                .await
                .map(|_| ()),
        ),
        (
            "delete_users_post",
            c.execute(&DeleteUsersPost(DeleteUsers::new(Vec::<String>::new())))
                .await
                .map(|_| ()),
        ),
        (
            "list_user_course_progress",
            c.execute(&ListUserCourseProgress::new(&i.email).page_length(0))
                .await
                .map(|_| ()),
        ),
    ];
    for (name, r) in invalid {
        match r {
            Err(ApiError::Validation { field, .. }) => {
                assert!(field.is_some(), "{name}: the field must be named")
            }
            other => panic!("{name}: expected a validation error, got {other:?}"),
        }
    }
    sb.shutdown().await.expect("shutdown");
}

/// A plain HTTP server on 127.0.0.1 answering every request with `answer`; each
/// request's head (request line and headers, lower-cased) is sent to the receiver.
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

#[tokio::test]
async fn a_redirect_is_an_error_and_the_key_never_reaches_the_other_host() {
    let (collector, mut collected) =
        raw_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
    ] {
        let (redirector, mut asked) = raw_server(format!(
            "HTTP/1.1 {status}\r\nlocation: http://{collector}/v1/steal?email=a%40b.de\r\ncontent-length: 0\r\n\r\n"
        ))
        .await;
        let c = Client::builder(format!("http://{redirector}/v1"))
            .api_key(ApiKey::new(KEY))
            .rate_limit(0.0)
            .build()
            .expect("client");
        let err = c
            .execute(&CheckApiKey)
            .await
            .expect_err("a 3xx is an error");
        let code: u16 = status[..3].parse().expect("status");
        match &err {
            ApiError::Redirect { status, target } => {
                assert_eq!(*status, code);
                assert_eq!(target, &collector);
            }
            other => panic!("{status}: expected a redirect error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&code.to_string()) && text.contains(&collector),
            "{text}"
        );
        assert!(
            !text.contains("steal") && !text.contains("a%40b") && !text.contains(KEY),
            "only the host is named: {text}"
        );
        assert_eq!(err.code(), "redirect");
        assert!(!err.is_transient(), "a redirect is not retried");
        let head = asked.recv().await.expect("the redirector was asked");
        assert!(
            head.contains("x-api-key:"),
            "the school's host gets the key"
        );
        assert!(asked.try_recv().is_err(), "asked once: no retry");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        collected.try_recv().is_err(),
        "the redirect target received no request (and so no key)"
    );
}

#[tokio::test]
async fn plain_http_is_refused_except_to_loopback() {
    let err = Client::builder("http://api.memberspot.de/v1")
        .api_key(ApiKey::new(KEY))
        .build()
        .expect_err("http to a public host");
    assert!(err.to_string().contains("https://"), "{err}");
    for ok in [
        "http://127.0.0.1:1/v1",
        "http://localhost:1/v1",
        "http://[::1]:1/v1",
    ] {
        Client::builder(ok)
            .api_key(ApiKey::new(KEY))
            .build()
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert!(memberspot_api::check_base_url("http://192.168.1.20/v1").is_err());
    assert!(memberspot_api::check_base_url("https://192.168.1.20/v1").is_ok());
}
