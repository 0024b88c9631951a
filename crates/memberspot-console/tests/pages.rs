//! The connections and settings pages, in process on SQLite and PostgreSQL: a school added
//! with its key entered once (never shown again, never in the audit log), tested, re-paced
//! and given a new key; console users added and removed by an owner; viewers see no forms
//! and their forged changes are refused; every change recorded as `console:anna`.

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use secrecy::SecretString;

mod common;
use common::{Backend, Client, TestHub, signed_in};

const SCHOOL_KEY: &str = "sk_console_school";

async fn connections_page(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let page = c.get("/connections").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let url = t.sandbox.base_url();

    let bad = c
        .post(
            "/connections",
            &[
                ("csrf", &csrf),
                ("name", "school"),
                ("base_url", &url),
                ("api_key", SCHOOL_KEY),
                ("rate_limit", "fast"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("rate_limit: `fast`"), "{}", bad.body);
    assert!(!bad.body.contains(SCHOOL_KEY), "the key is not echoed");
    // A wrong address or no key, in German: named by field, what was typed kept.
    c.accept_language = Some("de".into());
    for (base_url, key, expected) in [
        (
            "api.memberspot.de/v1",
            SCHOOL_KEY,
            "base_url: `api.memberspot.de/v1` ist keine Webadresse",
        ),
        (
            "ftp://example.com",
            SCHOOL_KEY,
            "base_url: `ftp://example.com`",
        ),
        (
            url.as_str(),
            "  ",
            "api_key: Gib den API-Schlüssel der Schule ein",
        ),
    ] {
        let refused = c
            .post(
                "/connections",
                &[
                    ("csrf", &csrf),
                    ("name", "school"),
                    ("base_url", base_url),
                    ("api_key", key),
                    ("rate_limit", "2"),
                ],
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused.body.contains(expected),
            "{expected}: {}",
            refused.body
        );
        assert!(refused.body.contains(&format!("value=\"{base_url}\"")));
    }
    c.accept_language = None;
    assert!(t.hub.connection("school").await.is_err(), "nothing added");

    let added = c
        .post(
            "/connections",
            &[
                ("csrf", &csrf),
                ("name", "school"),
                ("base_url", &url),
                ("api_key", SCHOOL_KEY),
                ("rate_limit", "2,5"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let list = c.get(added.location().expect("back to the list")).await;
    assert!(list.body.contains("school") && list.body.contains("2.5"));
    assert!(!list.body.contains(SCHOOL_KEY), "the key is never shown");

    let tested = c.post("/connections/school/test", &[("csrf", &csrf)]).await;
    assert_eq!(tested.status, StatusCode::OK);
    assert!(
        tested.body.contains("Memberspot accepts the key"),
        "{}",
        tested.body
    );

    let edit = c.get("/connections/school").await;
    assert_eq!(edit.status, StatusCode::OK);
    let rated = c
        .post(
            "/connections/school/rate",
            &[("csrf", &csrf), ("rate_limit", "1")],
        )
        .await;
    assert_eq!(rated.status, StatusCode::SEE_OTHER);
    assert_eq!(
        t.hub.connection("school").await.expect("conn").rate_limit,
        1.0
    );
    let keyed = c
        .post(
            "/connections/school/key",
            &[("csrf", &csrf), ("api_key", "sk_wrong_key")],
        )
        .await;
    assert_eq!(keyed.status, StatusCode::SEE_OTHER);
    let failed = c.post("/connections/school/test", &[("csrf", &csrf)]).await;
    assert!(failed.body.contains("the test failed"), "{}", failed.body);

    let records = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let tools: Vec<&str> = records.iter().map(|r| r.tool.as_str()).collect();
    assert_eq!(
        tools,
        [
            "admin.add_connection",
            "admin.test_connection",
            "admin.update_connection",
            "admin.rotate_connection_key",
            "admin.test_connection"
        ],
    );
    assert!(
        records
            .iter()
            .all(|r| r.end_user.as_deref() == Some("console:anna"))
    );
    let all = serde_json::to_string(&records).expect("json");
    assert!(
        !all.contains(SCHOOL_KEY) && !all.contains("sk_wrong_key"),
        "no key in the audit log"
    );

    // A viewer sees the list without forms, and a forged test or change is refused.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let page = v.get("/connections").await;
    assert!(page.body.contains("school"));
    assert!(!page.body.contains("action=\"/connections"));
    let vcsrf = page.csrf();
    assert_eq!(
        v.post("/connections/school/test", &[("csrf", &vcsrf)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        v.post(
            "/connections/school/rate",
            &[("csrf", &vcsrf), ("rate_limit", "9")]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        v.get("/connections/school").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.hub.connection("school").await.expect("conn").rate_limit,
        1.0
    );
    t.close().await;
}

async fn settings_page(backend: Backend) {
    let t = TestHub::open(backend).await;
    let settings = ConsoleSettings {
        data_dir: Some("/var/lib/memberspot".into()),
        ..ConsoleSettings::default()
    };
    let plugin = ConsolePlugin::new(t.hub.clone(), settings).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let page = c.get("/settings").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Europe/Berlin") && page.body.contains(env!("CARGO_PKG_VERSION")));
    assert!(
        page.body.contains("Data directory") && page.body.contains("/var/lib/memberspot"),
        "{}",
        page.body
    );
    let csrf = page.csrf();

    let short = c
        .post(
            "/settings/users",
            &[
                ("csrf", &csrf),
                ("name", "vera"),
                ("role", "viewer"),
                ("password", "short"),
                ("password2", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("password: use at least 10 characters"));
    let added = c
        .post(
            "/settings/users",
            &[
                ("csrf", &csrf),
                ("name", "vera"),
                ("role", "viewer"),
                ("password", "viewer password"),
                ("password2", "viewer password"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let mut v = Client::new(plugin.router());
    assert_eq!(
        v.login("vera", "viewer password").await.status,
        StatusCode::SEE_OTHER
    );

    // The viewer's settings: no users, no forms; a forged add is refused.
    let vpage = v.get("/settings").await;
    assert_eq!(vpage.status, StatusCode::OK);
    assert!(!vpage.body.contains("action=\"/settings"));
    let vcsrf = vpage.csrf();
    let forged = v
        .post(
            "/settings/users",
            &[
                ("csrf", &vcsrf),
                ("name", "mallory"),
                ("role", "owner"),
                ("password", "mallory password"),
                ("password2", "mallory password"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // An owner cannot remove themselves here; removing vera signs her out.
    assert_eq!(
        c.get("/settings/users/anna/remove").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.post("/settings/users/anna/remove", &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/settings/users/vera/remove").await.status,
        StatusCode::OK
    );
    let removed = c
        .post("/settings/users/vera/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert_eq!(v.get("/settings").await.location(), Some("/login"));
    let names: Vec<String> = t
        .hub
        .list_console_users()
        .await
        .expect("users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["anna"]);

    let records = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let tools: Vec<&str> = records.iter().map(|r| r.tool.as_str()).collect();
    assert_eq!(
        tools,
        [
            "admin.add_console_user",
            "admin.add_console_user",
            "admin.remove_console_user"
        ]
    );
    assert_eq!(
        records[0].outcome.as_str(),
        "invalid",
        "the refused short password is on record"
    );
    let all = serde_json::to_string(&records).expect("json");
    assert!(
        !all.contains("viewer password") && !all.contains("short\""),
        "no password in the audit log"
    );
    t.close().await;
}

async fn members_page(backend: Backend) {
    use memberspot_hub::{CallContext, Principal, Surface};
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    // A seeded member and an offer they do not hold yet.
    let who = Principal::Operator {
        connection: "sandbox".into(),
    };
    let cli = CallContext::new(Surface::Cli);
    let users = t
        .hub
        .call(&who, &cli, "list_users", serde_json::json!({}))
        .await
        .result
        .expect("users");
    let member = &users["users"][0];
    let email = member["email"].as_str().expect("email").to_owned();
    let offers = t
        .hub
        .call(&who, &cli, "list_offers", serde_json::json!({}))
        .await
        .result
        .expect("offers");
    let held: Vec<String> = member["offers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["offerId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let offer = offers["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .find(|o| !held.contains(&o["id"].as_str().unwrap_or("").to_owned()))
        .expect("an offer the member does not hold");
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let offer_name = offer["name"].as_str().expect("name").to_owned();

    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    assert!(
        c.get("/members")
            .await
            .body
            .contains("Find a member by e-mail")
    );
    let missing = c
        .get("/members?connection=sandbox&email=nobody%40example.com")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing
            .body
            .contains("No member has the address nobody@example.com")
    );

    let q = format!(
        "/members?connection=sandbox&email={}",
        email.replace('@', "%40")
    );
    let page = c.get(&q).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(&email));
    let csrf = page.csrf();
    let granted = c
        .post(
            "/members/grant",
            &[
                ("csrf", &csrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("offer_id", &offer_id),
            ],
        )
        .await;
    assert_eq!(granted.status, StatusCode::SEE_OTHER, "{}", granted.body);
    let page = c.get(granted.location().expect("back")).await;
    assert!(page.body.contains("The offer is granted."));
    assert!(page.body.contains(&offer_name), "offer names, not only ids");

    let confirm = c
        .get(&format!(
            "/members/revoke?connection=sandbox&email={}&offer_id={offer_id}",
            email.replace('@', "%40")
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains("Their progress is kept"),
        "{}",
        confirm.body
    );
    let revoked = c
        .post(
            "/members/state",
            &[
                ("csrf", &csrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("offer_id", &offer_id),
                ("state", "inactive"),
            ],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let page = c.get(revoked.location().expect("back")).await;
    assert!(
        page.body.contains("Access revoked") && page.body.contains("Restore"),
        "{}",
        page.body
    );
    let removal = c
        .post(
            "/members/state",
            &[
                ("csrf", &csrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("offer_id", &offer_id),
                ("state", "remove"),
            ],
        )
        .await;
    assert_eq!(
        removal.status,
        StatusCode::BAD_REQUEST,
        "removing is not offered here"
    );

    // A viewer reads, and cannot change.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let vpage = v.get(&q).await;
    assert_eq!(vpage.status, StatusCode::OK);
    assert!(!vpage.body.contains("action=\"/members/"));
    let vcsrf = vpage.csrf();
    let forged = v
        .post(
            "/members/state",
            &[
                ("csrf", &vcsrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("offer_id", &offer_id),
                ("state", "active"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        v.get(&format!("/members/revoke?email=x&offer_id={offer_id}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Every look-up and change went through the gateway, under the console user.
    let records = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let changes: Vec<(&str, Option<&str>)> = records
        .iter()
        .filter(|r| {
            !matches!(
                r.tool.as_str(),
                "find_user_by_email" | "list_offers" | "list_user_course_progress"
            )
        })
        .map(|r| (r.tool.as_str(), r.end_user.as_deref()))
        .collect();
    assert_eq!(
        changes,
        [
            ("grant_user_offer_by_email", Some("console:anna")),
            ("set_user_offer_state", Some("console:anna")),
        ]
    );
    assert!(
        records.iter().any(
            |r| r.tool == "find_user_by_email" && r.end_user.as_deref() == Some("console:vera")
        )
    );
    t.close().await;
}

#[tokio::test]
async fn members_page_sqlite() {
    members_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn members_page_postgres() {
    members_page(Backend::Postgres).await;
}

#[tokio::test]
async fn connections_page_sqlite() {
    connections_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn connections_page_postgres() {
    connections_page(Backend::Postgres).await;
}

#[tokio::test]
async fn settings_page_sqlite() {
    settings_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn settings_page_postgres() {
    settings_page(Backend::Postgres).await;
}

async fn overview_page(backend: Backend) {
    use memberspot_hub::store::{NewRun, RunStatus};
    use memberspot_hub::{CallContext, Principal, Surface};
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    // A fresh hub: empty states that say what to do.
    let quiet = c.get("/").await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert!(
        quiet.body.contains("Nothing happened today or yesterday"),
        "{}",
        quiet.body
    );
    assert!(quiet.body.contains("Nothing needs attention"));

    // A tool call and a failed flow run.
    let who = Principal::Operator {
        connection: "sandbox".into(),
    };
    let r = t
        .hub
        .call(
            &who,
            &CallContext::new(Surface::Cli),
            "list_offers",
            serde_json::json!({}),
        )
        .await;
    assert!(r.result.is_ok());
    let run = t
        .hub
        .flows_store()
        .insert_run(&NewRun {
            flow: "welcome-mail".into(),
            trigger: "manual".into(),
            fire_key: None,
            dry_run: false,
            input: serde_json::json!({}),
            worker: "test".into(),
        })
        .await
        .expect("run")
        .expect("inserted");
    t.hub
        .flows_store()
        .finish_run(&run.id, RunStatus::Failed, Some("smtp refused"))
        .await
        .expect("finish");

    // Two live purchases and a provider test, in euros: counted, summed, written in the
    // language's format; the test payment is counted but not summed.
    let purchase = |key: &str, minor: i64, test: bool| memberspot_hub::store::NewEvent {
        dedupe_key: key.into(),
        source: "digistore24".into(),
        provider: "digistore24".into(),
        kind: "purchase".into(),
        name: "on_payment".into(),
        order_id: Some(key.into()),
        product_id: Some("p1".into()),
        email: Some(format!("{key}@example.de")),
        test,
        amount_minor: Some(minor),
        currency: Some("EUR".into()),
        data: serde_json::json!({}),
        status: memberspot_hub::store::EventStatus::Done,
        connection: Some("sandbox".into()),
        verified: true,
    };
    t.hub
        .events_store()
        .insert_events(&[
            purchase("o1", 123_450, false),
            purchase("o2", 100_000, false),
            purchase("o3", 4_700, true),
        ])
        .await
        .expect("events");

    let busy = c.get("/").await;
    assert!(busy.body.contains("School: sandbox"));
    assert!(
        busy.body.contains("<h2>Payments today</h2>"),
        "{}",
        busy.body
    );
    assert!(busy.body.contains("€2,234.50"), "{}", busy.body);
    assert!(busy.body.contains("(of which one test, not in the amount)"));
    assert!(
        busy.body.contains("<th scope=\"row\">Tool calls</th>"),
        "{}",
        busy.body
    );
    assert!(
        busy.body.contains(&format!(
            "<a href=\"/flows/runs/{}\">Flow run of welcome-mail failed</a>",
            run.id
        )),
        "the failed run, linked to its page: {}",
        busy.body
    );
    // The browser's language decides until the switch is used; the switch then wins.
    c.accept_language = Some("de-DE,de;q=0.9,en;q=0.5".into());
    let by_browser = c.get("/").await;
    assert!(
        by_browser.body.contains("<html lang=\"de\">"),
        "{}",
        by_browser.body
    );
    assert!(by_browser.body.contains("<h1>Übersicht</h1>"));
    // The switch comes back to the page as it was asked for, query included.
    let filtered = c.get("/?connection=sandbox").await;
    assert!(
        filtered
            .body
            .contains("href=\"/lang?to=en&amp;back=%2F%3Fconnection%3Dsandbox\""),
        "{}",
        filtered.body
    );
    let switched = c.get("/lang?to=en&back=/").await;
    assert_eq!(switched.location(), Some("/"));
    assert_eq!(c.cookies.get("msh_lang").map(String::as_str), Some("en"));
    assert!(c.get("/").await.body.contains("<h1>Overview</h1>"));
    let de = {
        c.cookies.insert("msh_lang".into(), "de".into());
        c.get("/").await
    };
    assert!(
        de.body.contains("<h1>Übersicht</h1>")
            && de.body.contains("Lauf von welcome-mail fehlgeschlagen")
    );
    assert!(
        de.body.contains("2.234,50 €") && de.body.contains("<h2>Zahlungen heute</h2>"),
        "{}",
        de.body
    );
    t.close().await;
}

/// The overview's days end at midnight in the school's time zone (Berlin, not UTC), and
/// *needs attention* shows every kind: a dozen dead events neither push the unmatched
/// ones nor a failed run off the page (each kind ends in a link to the rest), and a failed
/// run older than the last 50 runs is still there.
#[tokio::test]
async fn overview_days_and_attention() {
    use chrono::{Days, TimeZone, Utc};
    use memberspot_hub::store::{EventStatus, NewEvent, NewRun, RunStatus};
    let t = TestHub::open(Backend::Sqlite).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    let berlin = chrono_tz::Europe::Berlin;
    let today = Utc::now().with_timezone(&berlin).date_naive();
    let at = |day: chrono::NaiveDate, h: u32, m: u32| {
        berlin
            .from_local_datetime(&day.and_hms_opt(h, m, 0).expect("time"))
            .earliest()
            .expect("a local time")
            .timestamp_millis()
    };
    let yesterday = today.checked_sub_days(Days::new(1)).expect("yesterday");
    let event = |key: &str, status: EventStatus| NewEvent {
        dedupe_key: key.into(),
        source: "digistore24".into(),
        provider: "digistore24".into(),
        kind: "purchase".into(),
        name: "on_payment".into(),
        order_id: Some(key.into()),
        product_id: Some("p1".into()),
        email: Some(format!("{key}@example.de")),
        test: false,
        amount_minor: Some(1_000),
        currency: Some("EUR".into()),
        data: serde_json::json!({}),
        status,
        connection: Some("sandbox".into()),
        verified: true,
    };
    let events = t.hub.events_store();
    // 23:30 yesterday and 00:30 today in Berlin: one hour apart, on two days. (In UTC
    // both can fall on one day.)
    events
        .insert_events_at(&[event("late", EventStatus::Done)], at(yesterday, 23, 30))
        .await
        .expect("late");
    events
        .insert_events_at(&[event("early", EventStatus::Done)], at(today, 0, 30))
        .await
        .expect("early");
    events
        .insert_events_at(
            &[event("two-days-ago", EventStatus::Done)],
            at(yesterday, 0, 0) - 60_000,
        )
        .await
        .expect("older");

    // A failed run, then 60 good ones after it.
    let flows = t.hub.flows_store();
    let mut runs = Vec::new();
    for i in 0..61 {
        let run = flows
            .insert_run(&NewRun {
                flow: if i == 0 {
                    "welcome-mail".into()
                } else {
                    "nightly".into()
                },
                trigger: "manual".into(),
                fire_key: None,
                dry_run: false,
                input: serde_json::json!({}),
                worker: "test".into(),
            })
            .await
            .expect("run")
            .expect("inserted");
        let status = if i == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Ok
        };
        flows
            .finish_run(&run.id, status, None)
            .await
            .expect("finish");
        runs.push(run);
    }
    let dead: Vec<NewEvent> = (0..12)
        .map(|i| event(&format!("dead-{i}"), EventStatus::Dead))
        .collect();
    events.insert_events(&dead).await.expect("dead");
    events
        .insert_events(&[event("stray", EventStatus::Unmatched)])
        .await
        .expect("unmatched");

    let page = c.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(
            "<th scope=\"row\">Offers granted</th><td class=\"num\">1</td><td class=\"num\">1</td>"
        ),
        "one purchase done today, one yesterday (the older one on neither): {}",
        page.body
    );
    assert!(
        page.body.contains(&format!(
            "<a href=\"/flows/runs/{}\">Flow run of welcome-mail failed</a>",
            runs[0].id
        )),
        "the failed run, older than the last 50 runs: {}",
        page.body
    );
    assert!(
        page.body
            .contains("Unmatched event on_payment from digistore24")
    );
    assert_eq!(
        page.body.matches("Dead event on_payment").count(),
        10,
        "ten of twelve dead events"
    );
    assert!(
        page.body
            .contains("<a href=\"/events?status=dead\">More dead events"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("More unmatched events"));
    t.close().await;
}

#[tokio::test]
async fn overview_page_sqlite() {
    overview_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn overview_page_postgres() {
    overview_page(Backend::Postgres).await;
}

/// The audit log in German: an outcome, a surface and a latency are German words (the
/// filter's values and links keep the stored words), and a wrong filter is explained in
/// German, naming the field first. English keeps the stored word.
#[tokio::test]
async fn audit_page_in_german() {
    use memberspot_hub::Surface;
    use memberspot_hub::store::{AuditOutcome, NewAuditRecord};
    let t = TestHub::open(Backend::Sqlite).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let record = NewAuditRecord {
        at: 1_780_272_000_000,
        request_id: "req-german".into(),
        surface: Surface::McpHttp,
        connection: Some("sandbox".into()),
        persona: Some("support-bot".into()),
        end_user: None,
        prompt: None,
        tool: "list_offers".into(),
        arguments: serde_json::json!({}),
        outcome: AuditOutcome::Denied,
        response: None,
        error: Some("revoked".into()),
        upstream_status: None,
        latency_ms: 7,
        oauth_client: None,
    };
    t.hub
        .store()
        .append_audit_batch(&[record])
        .await
        .expect("append");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    let en = c.get("/audit?persona=support-bot").await;
    assert!(
        en.body
            .contains("<span class=\"badge warning\">denied</span>"),
        "{}",
        en.body
    );

    c.cookies.insert("msh_lang".into(), "de".into());
    let de = c.get("/audit?persona=support-bot").await;
    assert_eq!(de.status, StatusCode::OK);
    assert!(de.body.contains("<h1>Protokoll</h1>"), "{}", de.body);
    assert!(
        de.body
            .contains("<span class=\"badge warning\">abgelehnt</span>"),
        "{}",
        de.body
    );
    assert!(!de.body.contains(">denied<"), "{}", de.body);
    assert!(de.body.contains("<td>MCP (HTTP)</td>"), "{}", de.body);
    assert!(de.body.contains("7 ms"));
    // The filter offers German words for the stored values.
    assert!(
        de.body
            .contains("<option value=\"denied\">abgelehnt</option>"),
        "{}",
        de.body
    );
    assert!(
        de.body
            .contains("<option value=\"mcp-http\">MCP (HTTP)</option>")
    );

    let seq = t.hub.audit_head().await.expect("head").seq;
    let detail = c.get(&format!("/audit/{seq}")).await;
    assert!(detail.body.contains(">abgelehnt<") && !detail.body.contains(">denied<"));

    let bad = c.get("/audit?outcome=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body
            .contains("outcome: Erlaubt sind ok, tool_error, denied"),
        "{}",
        bad.body
    );
    let bad = c.get("/audit?since=gestern").await;
    assert!(
        bad.body
            .contains("since: `gestern` ist kein Datum mit Uhrzeit"),
        "{}",
        bad.body
    );
    let bad = c.get("/audit/export?format=xml").await;
    assert!(
        bad.body
            .contains("format: `xml`: Erlaubt sind csv oder jsonl"),
        "{}",
        bad.body
    );
    t.close().await;
}

/// The audit log shows the offer's name next to an offer id in a record's arguments, on the
/// list and on a record's page: one read of the school's offers (an audited `list_offers`
/// under the console user) for the page, never one per row, reused by the next views for a
/// minute.
#[tokio::test]
async fn audit_page_names_the_offers() {
    use memberspot_hub::{CallContext, Principal, Surface};
    let t = TestHub::open(Backend::Sqlite).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let who = Principal::Operator {
        connection: "sandbox".into(),
    };
    let cli = CallContext::new(Surface::Cli);
    let offers = t
        .hub
        .call(&who, &cli, "list_offers", serde_json::json!({}))
        .await
        .result
        .expect("offers");
    let offers: Vec<(String, String)> = offers["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| {
            (
                o["id"].as_str().expect("id").to_owned(),
                o["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    assert_eq!(offers.len(), 2);
    for (i, (id, _)) in offers.iter().enumerate() {
        let args = serde_json::json!({"email": format!("named{i}@example.com"), "offer_id": id});
        let r = t
            .hub
            .call(&who, &cli, "grant_user_offer_by_email", args)
            .await;
        assert!(r.result.is_ok(), "{:?}", r.result);
    }
    let http = reqwest::Client::new();
    let log = format!("{}/_sandbox/requests", t.sandbox.root_url());
    let offer_reads = || async {
        let entries: serde_json::Value = http
            .get(&log)
            .header("X-API-KEY", SCHOOL_KEY)
            .send()
            .await
            .expect("request log")
            .json()
            .await
            .expect("JSON");
        entries
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/offers")))
            .count()
    };
    let before = offer_reads().await;

    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let page = c.get("/audit?tool=grant_user_offer_by_email").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<th scope=\"col\">Offer</th>"));
    for (id, name) in &offers {
        assert!(
            page.body.contains(&format!("{name} ({id})")),
            "{name} ({id}) on {}",
            page.body
        );
    }
    assert_eq!(offer_reads().await, before + 1, "one read for the page");

    let grants = t
        .hub
        .audit(&AuditFilter {
            tool: Some("grant_user_offer_by_email".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let detail = c.get(&format!("/audit/{}", grants[0].seq)).await;
    assert_eq!(detail.status, StatusCode::OK);
    let (id, name) = &offers[0];
    assert!(
        detail.body.contains(&format!("<dd>{name} ({id})</dd>")),
        "{}",
        detail.body
    );
    assert_eq!(
        offer_reads().await,
        before + 1,
        "the record's page reuses the list's read"
    );
    // The arguments are still shown as recorded.
    assert!(
        detail
            .body
            .contains(&format!("&quot;offer_id&quot;: &quot;{id}&quot;")),
        "{}",
        detail.body
    );
    // The reads were the console user's, recorded like any call.
    let reads = t
        .hub
        .audit(&AuditFilter {
            tool: Some("list_offers".into()),
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        reads.len(),
        1,
        "one for the list, reused by the record's page"
    );
    assert!(
        reads
            .iter()
            .all(|r| r.end_user.as_deref() == Some("console:anna"))
    );
    t.close().await;
}

/// The offer restriction picked by name: the school's offers listed by name per
/// connection (stored as ids), an offer of another connection refused with the field
/// named, the token shown once with a copy button; a viewer gets no form.
async fn personas_offer_restriction(backend: Backend) {
    let t = TestHub::open(backend).await;
    // A second school (the same sandbox under another name), to pick a wrong offer from.
    t.hub
        .add_connection(
            "school",
            &t.sandbox.base_url(),
            &SecretString::from(SCHOOL_KEY.to_string()),
            0.0,
        )
        .await
        .expect("connection");
    let offers = t.hub.offers_of("sandbox").await.expect("offers");
    let offer = &offers[0];
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let page = c.get("/personas").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<select id=\"offer\" name=\"offer\" multiple"),
        "{}",
        page.body
    );
    let option = format!(
        "value=\"sandbox/{}\">{} ({})",
        offer.id, offer.name, offer.id
    );
    assert!(page.body.contains(&option), "{option} in {}", page.body);
    assert!(page.body.contains("<optgroup label=\"school\">"));
    let csrf = page.csrf();

    let wrong = c
        .post(
            "/personas",
            &[
                ("csrf", &csrf),
                ("name", "shop-bot"),
                ("connection", "sandbox"),
                ("scope", "write"),
                ("offer", &format!("school/{}", offer.id)),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(
        wrong.body.contains("offer: `")
            && wrong.body.contains("is an offer of connection `school`"),
        "{}",
        wrong.body
    );
    assert!(t.hub.persona_any("shop-bot").await.is_err(), "not created");

    let created = c
        .post(
            "/personas",
            &[
                ("csrf", &csrf),
                ("name", "shop-bot"),
                ("connection", "sandbox"),
                ("scope", "write"),
                ("offer", &format!("sandbox/{}", offer.id)),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.body.contains("<input class=\"token\" id=\"token\""));
    assert!(created.body.contains("readonly"));
    assert!(
        created
            .body
            .contains("data-copy=\"token\" data-copied=\"Copied\" hidden"),
        "a copy button, hidden until the script shows it: {}",
        created.body
    );
    assert!(
        created
            .body
            .contains("<script src=\"/assets/console.js\" defer>")
    );
    let persona = t.hub.persona_any("shop-bot").await.expect("created");
    assert_eq!(persona.offer_ids, Some(vec![offer.id.clone()]));
    let list = c.get("/personas").await;
    assert!(
        list.body
            .contains(&format!("{} ({})", offer.name, offer.id)),
        "the restriction by name: {}",
        list.body
    );
    let shown = c.get("/personas/shop-bot").await;
    assert!(
        shown
            .body
            .contains(&format!("{} ({})", offer.name, offer.id))
    );

    // A new token is asked for first; then the old one is refused and the new one works.
    let token_of = |body: &str| -> String {
        let at = body.find("id=\"token\"").expect("the token field");
        let rest = &body[at..];
        let start = rest.find("value=\"").expect("its value") + 7;
        rest[start..start + rest[start..].find('"').expect("end")].to_owned()
    };
    let old_token = token_of(&created.body);
    assert!(t.hub.authenticate(&old_token).await.is_ok());
    assert!(list.body.contains("href=\"/personas/shop-bot/rotate\""));
    let ask = c.get("/personas/shop-bot/rotate").await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body.contains("A new token for shop-bot?"),
        "{}",
        ask.body
    );
    assert!(
        t.hub.authenticate(&old_token).await.is_ok(),
        "asking changes nothing"
    );
    let rotated = c
        .post("/personas/shop-bot/rotate", &[("csrf", &ask.csrf())])
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new_token = token_of(&rotated.body);
    assert_ne!(new_token, old_token);
    assert!(
        t.hub.authenticate(&old_token).await.is_err(),
        "the old token ends"
    );
    assert_eq!(
        t.hub
            .authenticate(&new_token)
            .await
            .expect("new token")
            .name,
        "shop-bot"
    );
    let unknown = c.get("/personas/nobody/rotate").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Scopes by class and by single tool: the form offers a box per tool, and a persona
    // made with the read class plus one write tool has exactly those.
    assert!(
        list.body
            .contains("type=\"checkbox\" name=\"scope\" value=\"grant_user_offer_by_email\""),
        "a box per tool: {}",
        list.body
    );
    let made = c
        .post(
            "/personas",
            &[
                ("csrf", &csrf),
                ("name", "lookup-bot"),
                ("connection", "sandbox"),
                ("scope", "read"),
                ("scope", "grant_user_offer_by_email"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let lookup = t.hub.persona_any("lookup-bot").await.expect("created");
    assert_eq!(
        lookup.scopes,
        vec!["read".to_owned(), "grant_user_offer_by_email".to_owned()]
    );
    // A taken name and a malformed one, refused naming the field, in the page's language.
    let again = |name: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_owned()),
            ("connection", "sandbox".to_owned()),
            ("scope", "read".to_owned()),
        ]
    };
    let taken = c.post_owned("/personas", &again("lookup-bot")).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert!(
        taken.body.contains("name: `lookup-bot` is taken already"),
        "{}",
        taken.body
    );
    c.cookies.insert("msh_lang".into(), "de".into());
    let vergeben = c.post_owned("/personas", &again("lookup-bot")).await;
    assert!(
        vergeben
            .body
            .contains("name: `lookup-bot` ist schon vergeben"),
        "{}",
        vergeben.body
    );
    let falsch = c.post_owned("/personas", &again("no spaces")).await;
    assert_eq!(falsch.status, StatusCode::BAD_REQUEST);
    assert!(
        falsch
            .body
            .contains("name: `no spaces` muss aus 1–64 Buchstaben"),
        "{}",
        falsch.body
    );
    c.cookies.remove("msh_lang");

    // The script is served with its type, and the policy allows only the console's own.
    let js = c.get("/assets/console.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.contains("data-copy") || js.body.contains("dataset.copy"));
    let csp = js
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));

    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let vpage = v.get("/personas").await;
    assert!(!vpage.body.contains("name=\"offer\""));
    let vcsrf = vpage.csrf();
    let forged = v
        .post(
            "/personas",
            &[
                ("csrf", &vcsrf),
                ("name", "vera-bot"),
                ("connection", "sandbox"),
                ("offer", &format!("sandbox/{}", offer.id)),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(t.hub.persona_any("vera-bot").await.is_err());
    t.close().await;
}

#[tokio::test]
async fn personas_offer_restriction_sqlite() {
    personas_offer_restriction(Backend::Sqlite).await;
}

#[tokio::test]
async fn personas_offer_restriction_postgres() {
    personas_offer_restriction(Backend::Postgres).await;
}

/// The screenshots in the docs are ones the browser journeys take (`shot(…, "NAME")`), so
/// `scripts/console-screenshots` can refresh every one of them after a run.
#[test]
fn docs_screenshots_are_taken_by_the_journeys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut taken = String::new();
    for dir in [
        "crates/memberspot-console/tests",
        "crates/memberspot-oauth/tests",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("tests").flatten() {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                taken.push_str(&std::fs::read_to_string(entry.path()).expect("read"));
            }
        }
    }
    let mut shown = Vec::new();
    for entry in std::fs::read_dir(root.join("docs"))
        .expect("docs")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for (at, _) in text.match_indices("img/console/") {
            let rest = &text[at + "img/console/".len()..];
            if let Some(name) = rest.split(".png").next() {
                shown.push(name.to_owned());
            }
        }
    }
    assert!(shown.len() > 10, "{shown:?}");
    for name in shown {
        assert!(
            taken.contains(&format!("\"{name}\"")),
            "docs show img/console/{name}.png, which no journey takes"
        );
        assert!(
            root.join(format!("docs/img/console/{name}.png")).is_file(),
            "docs/img/console/{name}.png is missing"
        );
    }
}
