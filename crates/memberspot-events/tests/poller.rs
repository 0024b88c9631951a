//! The polling trigger against a sandbox school over real HTTP, on SQLite and PostgreSQL:
//! baseline, every event kind exactly once, silence when nothing changed, restarts,
//! newly watched courses, and failed reads that must apply nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Backend, World};
use memberspot_events::poller::{PollError, Poller, PollerConfig};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::store::{EventFilter, EventStatus, StoredEvent};
use memberspot_hub::{CallContext, Hub, Principal, Surface};
use serde_json::{Value, json};

const NEW_EMAIL: &str = "neu.mitglied@example.com";

fn config(courses: &[&str]) -> PollerConfig {
    PollerConfig {
        connection: Some("school".into()),
        persona: "poller".into(),
        interval: Duration::from_secs(300),
        rate_share: 1.0,
        courses: courses.iter().map(|c| c.to_string()).collect(),
    }
}

async fn create_persona(hub: &Hub, name: &str, connection: &str, calls_per_minute: Option<u32>) {
    hub.create_persona(PersonaSpec {
        name: name.into(),
        connection: Some(connection.into()),
        scopes: vec!["read".into()],
        calls_per_minute,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// A tool call as the operator (the changes the poller must notice).
async fn op(hub: &Hub, tool: &str, args: Value) -> Value {
    let who = Principal::Operator {
        connection: "school".into(),
    };
    let out = hub
        .call(&who, &CallContext::new(Surface::Cli), tool, args.clone())
        .await;
    out.result.unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
}

/// Simulated member activity (`/_sandbox/progress`).
async fn complete_post(w: &World, email: &str, course: &str, post: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sandbox/progress", w.sandbox.root_url()))
        .header("X-API-KEY", common::SCHOOL_KEY)
        .json(&json!({"email": email, "courseId": course, "postId": post, "completed": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Every poller event of the school, oldest first.
async fn poll_events(hub: &Hub) -> Vec<StoredEvent> {
    hub.events_store()
        .list_events(&EventFilter {
            source: Some("poll:school".into()),
            oldest_first: true,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// `(kind, email, product_id)` of events, sorted, for exact comparisons.
fn summary(events: &[StoredEvent]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.email.clone().unwrap_or_default(),
                e.product_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expect(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = items
        .iter()
        .map(|(k, e, p)| (k.to_string(), e.to_string(), p.to_string()))
        .collect();
    v.sort();
    v
}

/// The seeded school as the tests need it.
struct School {
    /// Course id → its post ids.
    courses: BTreeMap<String, Vec<String>>,
    /// Course id → offers containing it.
    course_offers: BTreeMap<String, BTreeSet<String>>,
    users: Vec<Value>,
}

impl School {
    async fn read(w: &World) -> School {
        let state = w.state().await;
        let courses = state["courses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let posts = c["chapters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|ch| ch["posts"].as_array().unwrap().iter())
                    .map(|p| p["id"].as_str().unwrap().to_string())
                    .collect();
                (c["id"].as_str().unwrap().to_string(), posts)
            })
            .collect();
        let mut course_offers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in state["offers"].as_array().unwrap() {
            for c in o["courseIds"].as_array().unwrap() {
                course_offers
                    .entry(c.as_str().unwrap().to_string())
                    .or_default()
                    .insert(o["id"].as_str().unwrap().to_string());
            }
        }
        let mut users = state["users"].as_array().unwrap().clone();
        users.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
        School {
            courses,
            course_offers,
            users,
        }
    }

    /// A course that is in some offer.
    fn course(&self, i: usize) -> String {
        self.course_offers.keys().nth(i).unwrap().clone()
    }

    /// Members with an active holding without end date of an offer containing `course`.
    fn with_access(&self, course: &str) -> Vec<&Value> {
        let offers = &self.course_offers[course];
        self.users
            .iter()
            .filter(|u| {
                u["offers"].as_array().unwrap().iter().any(|h| {
                    h["active"] == true
                        && h.get("expiresAt").is_none_or(Value::is_null)
                        && offers.contains(h["offerId"].as_str().unwrap())
                })
            })
            .collect()
    }

    /// An active holding without end date: `(email, offer id)`.
    fn active_holding(u: &Value) -> Option<(String, String)> {
        u["offers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["active"] == true && h.get("expiresAt").is_none_or(Value::is_null))
            .map(|h| (email(u), h["offerId"].as_str().unwrap().to_string()))
    }

    fn completed(u: &Value, course: &str) -> Vec<String> {
        u["progress"][course]["completedPosts"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

fn email(u: &Value) -> String {
    u["email"].as_str().unwrap().to_string()
}

async fn story(backend: Backend) {
    let mut w = common::world(backend, 40).await;
    create_persona(&w.hub, "poller", "school", None).await;
    let school = School::read(&w).await;
    let course = school.course(0);
    let course2 = school.course(1);

    // --- first cycle: a baseline, nothing emitted.
    let poller = Poller::new(w.hub.clone(), config(&[&course]));
    let r = poller.run_cycle().await.unwrap();
    assert!(r.baseline, "{r:?}");
    assert_eq!(r.members, 40);
    assert_eq!(r.events, 0);
    assert!(
        r.api_calls >= 2,
        "one page of members and the offers: {r:?}"
    );
    assert!(r.progress_reads > 0, "{r:?}");
    assert!(poll_events(&w.hub).await.is_empty());
    let meta = |k: &str| format!("poll.school.{k}");
    assert!(
        w.hub
            .events_store()
            .get_meta(&meta("baseline_at"))
            .await
            .unwrap()
            .is_some()
    );
    let courses: Vec<String> = serde_json::from_str(
        &w.hub
            .events_store()
            .get_meta(&meta("courses"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(courses, vec![course.clone()]);

    // --- nothing changed: nothing to report.
    let r = poller.run_cycle().await.unwrap();
    assert!(!r.baseline);
    assert_eq!((r.events, r.snapshot_changes), (0, 0), "{r:?}");

    // --- one change of every kind.
    // Progress: `finisher` completes the course, `learner` one more post.
    let access = school.with_access(&course);
    assert!(
        access.len() >= 2,
        "the seeded school needs two members in {course}"
    );
    let finisher = access[0];
    let learner = access[1];
    let posts = &school.courses[&course];
    for post in posts {
        complete_post(&w, &email(finisher), &course, post).await;
    }
    let learner_done = School::completed(learner, &course);
    let next = posts.iter().find(|p| !learner_done.contains(p)).unwrap();
    assert!(learner_done.len() + 1 < posts.len());
    complete_post(&w, &email(learner), &course, next).await;
    // Access: one revoked, one expired, one member deleted, all distinct from the above.
    let mut others = school
        .users
        .iter()
        .filter(|u| u["uid"] != finisher["uid"] && u["uid"] != learner["uid"])
        .filter_map(School::active_holding);
    let (revoked_email, revoked_offer) = others.next().unwrap();
    let (expired_email, expired_offer) = others.next().unwrap();
    let (deleted_email, _) = others.next().unwrap();
    op(
        &w.hub,
        "set_user_offer_state",
        json!({"email": revoked_email, "offer_id": revoked_offer, "state": "inactive"}),
    )
    .await;
    op(
        &w.hub,
        "set_offer_expiration",
        json!({"email": expired_email, "offer_id": expired_offer, "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    op(&w.hub, "delete_users", json!({"emails": [deleted_email]})).await;
    // A new member through a grant.
    let new_offer = school.course_offers[&course].first().unwrap().clone();
    op(
        &w.hub,
        "grant_user_offer_by_email",
        json!({"email": NEW_EMAIL, "offer_id": new_offer}),
    )
    .await;

    let r = poller.run_cycle().await.unwrap();
    assert!(!r.baseline);
    assert_eq!(r.members, 40, "one deleted, one created: {r:?}");
    let events = poll_events(&w.hub).await;
    assert_eq!(
        summary(&events),
        expect(&[
            ("member_created", NEW_EMAIL, ""),
            ("offer_granted", NEW_EMAIL, &new_offer),
            ("offer_revoked", &revoked_email, &revoked_offer),
            ("offer_expired", &expired_email, &expired_offer),
            ("member_deleted", &deleted_email, ""),
            ("progress_changed", &email(finisher), &course),
            ("course_completed", &email(finisher), &course),
            ("progress_changed", &email(learner), &course),
        ])
    );
    assert_eq!(r.events, 8);
    assert_eq!(r.by_kind["progress_changed"], 2);
    let completed = events
        .iter()
        .find(|e| e.kind == "course_completed")
        .unwrap();
    assert_eq!(completed.data["after"]["percent"], 100);
    assert_eq!(completed.data["after"]["completed"], posts.len());
    assert_eq!(completed.data["uid"], finisher["uid"]);
    let learned = events
        .iter()
        .find(|e| e.kind == "progress_changed" && e.email.as_deref() == Some(&email(learner)))
        .unwrap();
    assert_eq!(
        learned.data["after"]["completed"],
        learned.data["before"]["completed"].as_u64().unwrap() + 1
    );
    assert!(learned.data["after"]["percent"].as_u64().unwrap() < 100);
    let expired = events.iter().find(|e| e.kind == "offer_expired").unwrap();
    assert_eq!(
        expired.data["after"]["expires_at"],
        "2020-01-01T00:00:00.000Z"
    );
    for e in &events {
        assert_eq!(e.kind, e.name);
        assert_eq!(e.provider, "poller");
        assert_eq!(e.status, EventStatus::Done);
        assert!(e.dedupe_key.starts_with("poll:school:"), "{}", e.dedupe_key);
        assert!(e.data["detected_at"].is_string() && e.data["uid"].is_string());
    }

    // --- reported exactly once.
    let r = poller.run_cycle().await.unwrap();
    assert_eq!(r.events, 0, "{r:?}");

    // --- restart: a new hub on the same database, a new poller.
    drop(poller);
    w.hub.close().await;
    w.hub = common::open_hub(&w.db_url, common::TEST_MASTER_KEY, &w.sandbox).await;
    let poller = Poller::new(w.hub.clone(), config(&[&course]));
    let r = poller.run_cycle().await.unwrap();
    assert!(!r.baseline);
    assert_eq!(r.events, 0, "{r:?}");
    assert_eq!(poll_events(&w.hub).await.len(), 8);

    // --- a change after the restart is reported once.
    op(
        &w.hub,
        "set_user_offer_state",
        json!({"email": revoked_email, "offer_id": revoked_offer, "state": "active"}),
    )
    .await;
    let r = poller.run_cycle().await.unwrap();
    assert_eq!(r.events, 1, "{r:?}");
    let r = poller.run_cycle().await.unwrap();
    assert_eq!(r.events, 0, "{r:?}");
    let events = poll_events(&w.hub).await;
    assert_eq!(events.len(), 9);
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.email.as_deref(),
            last.product_id.as_deref()
        ),
        (
            "offer_granted",
            Some(revoked_email.as_str()),
            Some(revoked_offer.as_str())
        )
    );

    // --- a course added to the configuration is baselined silently…
    drop(poller);
    let poller = Poller::new(w.hub.clone(), config(&[&course, &course2]));
    let r = poller.run_cycle().await.unwrap();
    assert!(!r.baseline);
    assert_eq!(r.courses_baselined, vec![course2.clone()]);
    assert_eq!(r.events, 0, "{r:?}");
    // …and reported from then on.
    let student = school
        .with_access(&course2)
        .into_iter()
        .find(|u| {
            let e = email(u);
            e != revoked_email && e != expired_email && e != deleted_email
        })
        .unwrap();
    let done = School::completed(student, &course2);
    let post = school.courses[&course2]
        .iter()
        .find(|p| !done.contains(p))
        .unwrap();
    complete_post(&w, &email(student), &course2, post).await;
    let r = poller.run_cycle().await.unwrap();
    assert_eq!(r.courses_baselined, Vec::<String>::new());
    let events = poll_events(&w.hub).await;
    assert_eq!(events.len(), 10, "{r:?}");
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.email.as_deref(),
            last.product_id.as_deref()
        ),
        (
            "progress_changed",
            Some(email(student).as_str()),
            Some(course2.as_str())
        )
    );

    // Dedupe keys are unique; the last cycle is recorded for status pages.
    let keys: BTreeSet<_> = events.iter().map(|e| e.dedupe_key.clone()).collect();
    assert_eq!(keys.len(), events.len());
    let last_cycle: Value = serde_json::from_str(
        &w.hub
            .events_store()
            .get_meta(&meta("last_cycle"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last_cycle["events"], 1);
    assert_eq!(last_cycle["connection"], "school");
    drop(poller);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_story_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_story_postgres() {
    story(Backend::Postgres).await;
}

/// A read that fails midway applies nothing; bad personas and settings are named.
async fn failures(backend: Backend) {
    // Two pages of members, so a failure can come after the first.
    let w = common::world(backend, 150).await;
    create_persona(&w.hub, "poller", "school", None).await;
    let poller = Poller::new(w.hub.clone(), config(&[]));
    let r = poller.run_cycle().await.unwrap();
    assert!(r.baseline);
    assert_eq!((r.members, r.api_calls), (150, 2));

    let school = School::read(&w).await;
    let gone = email(&school.users[0]);
    op(&w.hub, "delete_users", json!({"emails": [gone]})).await;

    // One call a minute: the first page is read, the second denied.
    create_persona(&w.hub, "poller-slow", "school", Some(1)).await;
    let slow = Poller::new(
        w.hub.clone(),
        PollerConfig {
            persona: "poller-slow".into(),
            ..config(&[])
        },
    );
    let before = w.hub.events_store().load_snapshot("school").await.unwrap();
    let err = slow.run_cycle().await.unwrap_err();
    assert!(
        matches!(
            err,
            PollError::Call {
                tool: "list_users",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("poller-slow") && msg.contains("school"),
        "{msg}"
    );
    assert!(
        poll_events(&w.hub).await.is_empty(),
        "nobody reported deleted"
    );
    assert_eq!(
        w.hub.events_store().load_snapshot("school").await.unwrap(),
        before
    );
    assert!(
        w.hub
            .events_store()
            .get_meta("poll.school.last_error")
            .await
            .unwrap()
            .unwrap()
            .contains("poller-slow")
    );

    // The next complete reading reports the deletion, once.
    let r = poller.run_cycle().await.unwrap();
    assert_eq!(r.events, 1);
    assert_eq!(
        summary(&poll_events(&w.hub).await),
        expect(&[("member_deleted", &gone, "")])
    );

    // Missing, revoked and misplaced personas, bad settings.
    let missing = Poller::new(
        w.hub.clone(),
        PollerConfig {
            persona: "nobody".into(),
            ..config(&[])
        },
    );
    let err = missing.run_cycle().await.unwrap_err();
    assert!(matches!(err, PollError::Persona { .. }), "{err}");
    assert!(err.to_string().contains("nobody"), "{err}");

    create_persona(&w.hub, "elsewhere", "sandbox", None).await;
    let elsewhere = Poller::new(
        w.hub.clone(),
        PollerConfig {
            persona: "elsewhere".into(),
            ..config(&[])
        },
    );
    let err = elsewhere.run_cycle().await.unwrap_err();
    assert!(matches!(err, PollError::PersonaConnection { .. }), "{err}");

    let greedy = Poller::new(
        w.hub.clone(),
        PollerConfig {
            rate_share: 1.5,
            ..config(&[])
        },
    );
    assert!(matches!(
        greedy.run_cycle().await,
        Err(PollError::Config { .. })
    ));

    assert!(w.hub.revoke_persona("poller").await.unwrap());
    let err = poller.run_cycle().await.unwrap_err();
    assert!(matches!(err, PollError::Persona { .. }), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(poll_events(&w.hub).await.len(), 1);
    drop((poller, slow, missing, elsewhere, greedy));
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_sqlite() {
    failures(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_postgres() {
    failures(Backend::Postgres).await;
}

/// `run` cycles on its own and stops when cancelled.
/// A school whose member list repeats a cursor cannot be read completely: the cycle
/// fails with an error that says so (never loops), and applies nothing (nobody is
/// reported deleted for being on the pages it could not read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cursor_fails_the_cycle_and_applies_nothing() {
    let w = common::world(Backend::Sqlite, 250).await;
    create_persona(&w.hub, "poller", "school", None).await;
    let poller = Poller::new(w.hub.clone(), config(&[]));
    let r = poller.run_cycle().await.unwrap();
    assert_eq!((r.members, r.api_calls), (250, 3));
    let before = w.hub.events_store().load_snapshot("school").await.unwrap();

    let resp = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", w.sandbox.root_url()))
        .header("X-API-KEY", common::SCHOOL_KEY)
        .json(&json!({ "repeatCursor": true }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let err = tokio::time::timeout(Duration::from_secs(30), poller.run_cycle())
        .await
        .expect("stops instead of looping")
        .unwrap_err();
    assert!(
        matches!(
            err,
            PollError::Answer {
                tool: "list_users",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("a second time"), "{err}");
    assert!(poll_events(&w.hub).await.is_empty());
    assert_eq!(
        w.hub.events_store().load_snapshot("school").await.unwrap(),
        before
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loop_cycles_until_cancelled() {
    let w = common::world(Backend::Sqlite, 20).await;
    create_persona(&w.hub, "poller", "school", None).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let poller = Poller::new(
        w.hub.clone(),
        PollerConfig {
            interval: Duration::from_secs(1),
            ..config(&[])
        },
    );
    let task = tokio::spawn(poller.run(cancel.clone()));
    let store = w.hub.events_store();
    let mut baselined = false;
    for _ in 0..50 {
        if store
            .get_meta("poll.school.baseline_at")
            .await
            .unwrap()
            .is_some()
        {
            baselined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(baselined, "the first cycle ran");
    op(
        &w.hub,
        "grant_user_offer_by_email",
        json!({"email": NEW_EMAIL, "offer_id": School::read(&w).await.course_offers.values().next().unwrap().first().unwrap()}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = poll_events(&w.hub).await;
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 2, "member_created and offer_granted");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops when cancelled")
        .unwrap();
    w.close().await;
}
