//! The console's doors, in process, on SQLite and PostgreSQL: first-run setup (single
//! use), sign-in (same answer for a wrong password and an unknown user, rate limits),
//! CSRF and Origin checks, viewers refused, session expiry, sign-out (everywhere), and
//! changes recorded in the audit log under the console user.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use secrecy::SecretString;

mod common;
use common::{Backend, Client, TestHub};

const PASSWORD: &str = "correct horse battery";

fn console(t: &TestHub, settings: ConsoleSettings) -> ConsolePlugin {
    ConsolePlugin::new(t.hub.clone(), settings).expect("console")
}

async fn add(t: &TestHub, name: &str, role: ConsoleRole) {
    t.hub
        .add_console_user(name, &SecretString::from(PASSWORD), role)
        .await
        .expect("add user");
}

/// Posts the setup form: the page's CSRF token, the link's token, a name and the password
/// twice.
async fn setup(
    c: &mut Client,
    csrf: &str,
    token: &str,
    name: &str,
    password: &str,
    password2: &str,
) -> common::Answer {
    let form = [
        ("csrf", csrf),
        ("token", token),
        ("name", name),
        ("password", password),
        ("password2", password2),
    ];
    c.post("/setup", &form).await
}

async fn setup_link_is_single_use(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = console(&t, ConsoleSettings::default());
    let link = plugin
        .first_run_link("127.0.0.1:8787".parse().expect("addr"))
        .await
        .expect("link")
        .expect("no users yet: a link");
    let path = link.trim_start_matches("http://127.0.0.1:8787");
    assert!(path.starts_with("/setup?token="), "{link}");
    let token = path.trim_start_matches("/setup?token=").to_owned();
    let mut c = Client::new(plugin.router());

    // Not signed in: the overview sends to the sign-in page, which says how to start.
    let home = c.get("/").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.location(), Some("/login"));
    assert!(c.get("/login").await.body.contains("console add-user"));

    // A link past its hour is refused like a used one (links are made valid for one hour).
    assert_eq!(
        memberspot_hub::console::SETUP_LINK_VALIDITY,
        Duration::from_secs(3600)
    );
    let now = chrono::Utc::now().timestamp_millis();
    let expired = "expired-setup-token-0123456789abcdef";
    t.hub
        .store()
        .insert_console_setup_token(
            &memberspot_hub::tokens::hash(expired),
            now - 3_700_000,
            now - 100_000,
        )
        .await
        .expect("an old link");
    let old = c.get(&format!("/setup?token={expired}")).await;
    assert_eq!(old.status, StatusCode::NOT_FOUND, "{}", old.body);
    let login = c.get("/login").await;
    let late = c
        .post(
            "/setup",
            &[
                ("csrf", &login.csrf()),
                ("token", expired),
                ("name", "late"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);
    assert!(t.hub.list_console_users().await.expect("users").is_empty());

    let page = c.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.csrf();
    // Different passwords: asked again, nothing stored.
    let again = setup(&mut c, &csrf, &token, "anna", PASSWORD, "something else").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    let short = setup(&mut c, &csrf, &token, "anna", "short", "short").await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.body.contains("password: use at least 10 characters"),
        "{}",
        short.body
    );
    // The same, asked in German, answers in German; so does a name the console refuses.
    c.cookies.insert("msh_lang".into(), "de".into());
    let kurz = setup(&mut c, &csrf, &token, "anna", "short", "short").await;
    assert!(
        kurz.body.contains("password: mindestens 10 Zeichen"),
        "{}",
        kurz.body
    );
    let bad_name = setup(&mut c, &csrf, &token, "an na", PASSWORD, PASSWORD).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_name
            .body
            .contains("name: `an na` ist kein Name für die Konsole"),
        "{}",
        bad_name.body
    );
    c.cookies.remove("msh_lang");
    let done = c
        .post(
            "/setup",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("name", "anna"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(c.cookies.contains_key("msh_session"));
    let home = c.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("anna"));
    let users = t.hub.list_console_users().await.expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].role, ConsoleRole::Owner);

    // The link is used up: shown as invalid, and a second owner cannot be made with it.
    let mut other = Client::new(plugin.router());
    assert_eq!(other.get(path).await.status, StatusCode::NOT_FOUND);
    let login = other.get("/login").await;
    let csrf = login.csrf();
    let reuse = other
        .post(
            "/setup",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("name", "mallory"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    assert_eq!(reuse.status, StatusCode::GONE, "{}", reuse.body);
    assert_eq!(t.hub.list_console_users().await.expect("users").len(), 1);
    // With a user, no new link is printed.
    assert!(
        plugin
            .first_run_link("127.0.0.1:8787".parse().expect("addr"))
            .await
            .expect("link")
            .is_none()
    );
    t.close().await;
}

async fn login_reveals_nothing_and_is_limited(backend: Backend) {
    let t = TestHub::open(backend).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    let plugin = console(
        &t,
        ConsoleSettings {
            login_per_user_per_minute: 3,
            login_per_address_per_minute: 8,
            ..ConsoleSettings::default()
        },
    );
    let mut c = Client::new(plugin.router());

    let wrong = c.login("anna", "not the password").await;
    let unknown = c.login("nobody", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let notice = |b: &str| b.find("Wrong name or password.").is_some();
    assert!(notice(&wrong.body) && notice(&unknown.body));
    // Apart from the echoed name, the two pages are the same.
    assert_eq!(
        wrong.body.replace("anna", "X"),
        unknown.body.replace("nobody", "X")
    );
    // An unknown user costs a password hash too (a decoy): comparable time. The fastest
    // of three tries each, on an instance of its own (sign-in limits are per instance), so
    // that a busy machine's pauses do not decide.
    let timing = console(
        &t,
        ConsoleSettings {
            login_per_user_per_minute: 100,
            login_per_address_per_minute: 100,
            ..ConsoleSettings::default()
        },
    );
    let mut tc = Client::new(timing.router());
    let (mut wrong_took, mut unknown_took) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        tc.login("anna", "not the password").await;
        wrong_took = wrong_took.min(started.elapsed());
        let started = Instant::now();
        tc.login("nobody", "not the password").await;
        unknown_took = unknown_took.min(started.elapsed());
    }
    assert!(
        unknown_took * 4 > wrong_took && wrong_took * 4 > unknown_took,
        "wrong password {wrong_took:?}, unknown user {unknown_took:?}"
    );

    // Per user: three attempts for anna this minute; the fourth is refused, right password
    // or not.
    assert_eq!(
        c.login("anna", "still wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.login("anna", "wrong again").await.status,
        StatusCode::UNAUTHORIZED
    );
    let limited = c.login("anna", PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
    assert!(!c.cookies.contains_key("msh_session"));
    // The same for a name that does not exist: the limit says nothing about existence.
    for _ in 0..2 {
        c.login("nobody", "x").await;
    }
    assert_eq!(
        c.login("nobody", "x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Per address: 8 attempts in all from here (used up above), whatever the names.
    let fresh_name = c.login("guess", "x").await;
    assert_eq!(fresh_name.status, StatusCode::TOO_MANY_REQUESTS);

    // A fresh console (another instance's limits) signs anna in.
    let plugin = console(&t, ConsoleSettings::default());
    let mut c = Client::new(plugin.router());
    let ok = c.login("anna", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), Some("/"));
    let cookie = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .find(|v| v.starts_with("msh_session="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http without a public URL: {cookie}"
    );
    t.close().await;
}

async fn forms_need_token_origin_and_owner(backend: Backend) {
    let t = TestHub::open(backend).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    add(&t, "vera", ConsoleRole::Viewer).await;
    let plugin = console(&t, ConsoleSettings::default());

    // The sign-in form itself needs its token and the origin.
    let mut c = Client::new(plugin.router());
    c.get("/login").await;
    let no_token = c
        .post("/login", &[("name", "anna"), ("password", PASSWORD)])
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert!(c.login("anna", PASSWORD).await.status == StatusCode::SEE_OTHER);
    let page = c.get("/personas").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action=\"/personas\""));
    let csrf = page.csrf();

    let form = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("name".into(), "bot".into()),
            ("connection".into(), "sandbox".into()),
            ("scope".into(), "read".into()),
        ]
    };
    // Missing and wrong tokens are refused.
    let missing: Vec<(String, String)> =
        form("").into_iter().filter(|(k, _)| k != "csrf").collect();
    assert_eq!(post(&mut c, missing).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        post(&mut c, form(&"0".repeat(64))).await.status,
        StatusCode::FORBIDDEN
    );
    // A foreign origin is refused even with the right token; so is no origin at all.
    c.origin = Some("https://evil.example".into());
    let foreign = post(&mut c, form(&csrf)).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(foreign.body.contains("another site"), "{}", foreign.body);
    c.origin = None;
    assert_eq!(
        post(&mut c, form(&csrf)).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(
        t.hub
            .list_personas()
            .await
            .expect("personas")
            .iter()
            .all(|p| p.name != "bot")
    );
    // Right token, own origin: created, token shown once.
    c.origin = Some(common::ORIGIN.into());
    let made = post(&mut c, form(&csrf)).await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    assert!(made.body.contains("msh_"), "the token is on the page");
    assert!(
        t.hub
            .list_personas()
            .await
            .expect("personas")
            .iter()
            .any(|p| p.name == "bot")
    );

    // Offer ids are checked against the school: an unknown one is refused, nothing stored.
    let mut restricted = form(&csrf);
    restricted[1].1 = "offer-bot".into();
    restricted.push(("offers".into(), "no-such-offer".into()));
    let refused = post(&mut c, restricted).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("no-such-offer"), "{}", refused.body);
    assert!(
        t.hub
            .list_personas()
            .await
            .expect("personas")
            .iter()
            .all(|p| p.name != "offer-bot")
    );

    // The change is recorded under the console user, without the token.
    let records = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].tool, "admin.create_persona");
    assert_eq!(
        records[1].outcome.as_str(),
        "invalid",
        "the refused one is on record too"
    );
    assert_eq!(records[0].end_user.as_deref(), Some("console:anna"));
    let stored = serde_json::to_string(&records[0]).expect("json");
    let token_start = made.body.find("value=\"msh_").expect("token field") + 7;
    let token = &made.body[token_start..token_start + 40];
    assert!(
        !stored.contains(token),
        "the token is not in the audit record"
    );

    // A viewer sees no forms that change anything, and a forged POST is refused.
    let mut v = Client::new(plugin.router());
    assert_eq!(
        v.login("vera", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let page = v.get("/personas").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("action=\"/personas\""));
    assert!(!page.body.contains("/revoke"));
    assert!(!page.body.contains("/rotate"));
    let vcsrf = page.csrf(); // the sign-out form's
    let mut vf = form(&vcsrf);
    vf[1].1 = "viewer-bot".into();
    assert_eq!(post(&mut v, vf).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        v.post("/personas/bot/revoke", &[("csrf", &vcsrf)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        v.get("/personas/bot/revoke").await.status,
        StatusCode::FORBIDDEN
    );
    let personas = t.hub.list_personas().await.expect("personas");
    assert!(personas.iter().all(|p| p.name != "viewer-bot"));
    assert!(
        personas
            .iter()
            .any(|p| p.name == "bot" && p.revoked_at.is_none())
    );
    // The viewer reads the audit log.
    let audit = v.get("/audit?surface=console").await;
    assert_eq!(audit.status, StatusCode::OK);
    assert!(audit.body.contains("console:anna") && audit.body.contains("admin.create_persona"));
    t.close().await;
}

async fn post(c: &mut Client, f: Vec<(String, String)>) -> common::Answer {
    let pairs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    c.post("/personas", &pairs).await
}

async fn sessions_expire_and_end(backend: Backend) {
    let t = TestHub::open(backend).await;
    add(&t, "anna", ConsoleRole::Owner).await;

    // Idle: a session unused for longer than the idle time-out is over.
    let idle = console(
        &t,
        ConsoleSettings {
            idle_timeout: Duration::from_millis(1500),
            ..ConsoleSettings::default()
        },
    );
    let mut c = Client::new(idle.router());
    c.login("anna", PASSWORD).await;
    assert_eq!(c.get("/").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(c.get("/").await.location(), Some("/login"));

    // Absolute: over after its lifetime however busy.
    let short = console(
        &t,
        ConsoleSettings {
            absolute_timeout: Duration::from_millis(1500),
            ..ConsoleSettings::default()
        },
    );
    let mut c = Client::new(short.router());
    c.login("anna", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(c.get("/").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.get("/").await.location(), Some("/login"));

    // Sign-out ends this session; sign-out everywhere ends the others too. Sessions live
    // in the database: a second console (another instance) sees them.
    let one = console(&t, ConsoleSettings::default());
    let two = console(&t, ConsoleSettings::default());
    let mut a = Client::new(one.router());
    let mut b = Client::new(one.router());
    a.login("anna", PASSWORD).await;
    b.login("anna", PASSWORD).await;
    let mut b_elsewhere = Client::new(two.router());
    b_elsewhere.cookies = b.cookies.clone();
    assert_eq!(b_elsewhere.get("/").await.status, StatusCode::OK);
    let home = a.get("/").await;
    let stolen = a.cookies.clone();
    let out = a.post("/logout", &[("csrf", &home.csrf())]).await;
    assert_eq!(out.location(), Some("/login?bye=1"));
    assert!(!a.cookies.contains_key("msh_session"));
    // Ended on the server, not only forgotten by the browser: a copy of the old cookie
    // (a stolen one) no longer signs in, on either instance.
    for router in [one.router(), two.router()] {
        let mut replay = Client::new(router);
        replay.cookies = stolen.clone();
        assert_eq!(replay.get("/").await.location(), Some("/login"));
    }
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    let mut c = Client::new(one.router());
    c.login("anna", PASSWORD).await;
    let home = c.get("/").await;
    c.post("/logout-everywhere", &[("csrf", &home.csrf())])
        .await;
    assert_eq!(b.get("/").await.location(), Some("/login"));
    assert_eq!(b_elsewhere.get("/").await.location(), Some("/login"));

    // Signing in again in the same browser ends the session it had: one browser, one
    // session, and a copy of the old cookie is worth nothing.
    let mut e = Client::new(one.router());
    e.login("anna", PASSWORD).await;
    let first = e.cookies.clone();
    let again = e.login("anna", PASSWORD).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert_ne!(e.cookies.get("msh_session"), first.get("msh_session"));
    assert_eq!(e.get("/").await.status, StatusCode::OK);
    let mut old = Client::new(one.router());
    old.cookies = first;
    assert_eq!(old.get("/").await.location(), Some("/login"));

    // A reset password and a removed user end sessions too.
    let mut d = Client::new(one.router());
    d.login("anna", PASSWORD).await;
    t.hub
        .reset_console_password("anna", &SecretString::from("another good password"))
        .await
        .expect("reset");
    assert_eq!(d.get("/").await.location(), Some("/login"));
    t.close().await;
}

#[tokio::test]
async fn setup_link_is_single_use_sqlite() {
    setup_link_is_single_use(Backend::Sqlite).await;
}

#[tokio::test]
async fn setup_link_is_single_use_postgres() {
    setup_link_is_single_use(Backend::Postgres).await;
}

#[tokio::test]
async fn login_reveals_nothing_and_is_limited_sqlite() {
    login_reveals_nothing_and_is_limited(Backend::Sqlite).await;
}

#[tokio::test]
async fn login_reveals_nothing_and_is_limited_postgres() {
    login_reveals_nothing_and_is_limited(Backend::Postgres).await;
}

#[tokio::test]
async fn forms_need_token_origin_and_owner_sqlite() {
    forms_need_token_origin_and_owner(Backend::Sqlite).await;
}

#[tokio::test]
async fn forms_need_token_origin_and_owner_postgres() {
    forms_need_token_origin_and_owner(Backend::Postgres).await;
}

#[tokio::test]
async fn sessions_expire_and_end_sqlite() {
    sessions_expire_and_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn sessions_expire_and_end_postgres() {
    sessions_expire_and_end(Backend::Postgres).await;
}

async fn audit_pages_by_keyset_and_exports(backend: Backend) {
    let t = TestHub::open(backend).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    let actor = memberspot_hub::admin::Actor {
        surface: memberspot_hub::Surface::Console,
        name: "anna".into(),
    };
    // 120 recorded (failed) admin actions.
    for i in 0..120 {
        let r = t
            .hub
            .acting_as(actor.clone())
            .revoke_persona(&format!("ghost-{i}"))
            .await;
        assert!(r.is_err());
    }
    let plugin = console(&t, ConsoleSettings::default());
    let mut c = Client::new(plugin.router());
    c.login("anna", PASSWORD).await;
    let mut seqs: Vec<i64> = Vec::new();
    let mut path = "/audit?tool=admin.revoke_persona".to_owned();
    for page in 0..3 {
        let a = c.get(&path).await;
        assert_eq!(a.status, StatusCode::OK);
        let rows: Vec<i64> = a
            .body
            .match_indices("<td><a href=\"/audit/")
            .filter_map(|(at, m)| {
                let rest = &a.body[at + m.len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect();
        assert_eq!(rows.len(), if page < 2 { 50 } else { 20 }, "page {page}");
        seqs.extend(rows);
        let older = a.body.find("before=");
        if page < 2 {
            let at = older.expect("an older page");
            let start = a.body[..at].rfind("href=\"").expect("link") + 6;
            let end = start + a.body[start..].find('"').expect("end");
            path = a.body[start..end].replace("&amp;", "&");
        } else {
            assert!(!a.body.contains("Older records"));
        }
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted, seqs, "newest first, no record twice");
    assert_eq!(seqs.len(), 120);

    // A record's detail, and the filtered view exported.
    let detail = c.get(&format!("/audit/{}", seqs[0])).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("ghost-119") && detail.body.contains("console:anna"));
    assert_eq!(c.get("/audit/999999").await.status, StatusCode::NOT_FOUND);
    let csv = c
        .get("/audit/export?format=csv&tool=admin.revoke_persona")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.body.lines().count(), 121, "a header and 120 records");
    let bad = c.get("/audit?outcome=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("outcome: use ok"));
    let bad = c.get("/audit?since=yesterday").await;
    assert!(
        bad.body
            .contains("since: `yesterday` is not a date and time")
    );
    let verify = c.get("/audit/verify").await;
    assert!(verify.body.contains("is intact"), "{}", verify.body);
    // Against an anchor: the head itself holds; a wrong hash for it does not; a malformed
    // anchor is refused naming the field.
    let head = t.hub.audit_head().await.expect("head");
    let good = c
        .get(&format!(
            "/audit/verify?anchor={}%3A{}",
            head.seq, head.hash
        ))
        .await;
    assert!(
        good.body.contains("is intact") && good.body.contains("Also checked against the anchor"),
        "{}",
        good.body
    );
    let wrong = c
        .get(&format!(
            "/audit/verify?anchor={}%3A{}",
            head.seq,
            "0".repeat(64)
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert!(wrong.body.contains("The chain is broken"), "{}", wrong.body);
    let bad = c.get("/audit/verify?anchor=nonsense").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("anchor: `nonsense` is not SEQ:HASH"),
        "{}",
        bad.body
    );
    // A record edited in the database: the page names that record.
    let edited = seqs[60];
    t.tamper(&format!(
        "UPDATE audit_log SET prompt = 'nothing happened' WHERE seq = {edited}"
    ))
    .await;
    let broken = c.get("/audit/verify").await;
    assert!(
        broken
            .body
            .contains(&format!("The chain is broken at record {edited}:")),
        "{}",
        broken.body
    );
    t.close().await;
}

#[tokio::test]
async fn audit_pages_by_keyset_and_exports_sqlite() {
    audit_pages_by_keyset_and_exports(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_pages_by_keyset_and_exports_postgres() {
    audit_pages_by_keyset_and_exports(Backend::Postgres).await;
}

/// The export is the whole filtered view, beyond the store's 10,000 records a query and
/// newest included; each filter (persona, outcome, surface, time) returns exactly its
/// records.
async fn audit_export_and_filters_cover_the_whole_view(backend: Backend) {
    use chrono::TimeZone;
    use memberspot_hub::Surface;
    use memberspot_hub::store::{AuditOutcome, NewAuditRecord};
    const TOTAL: i64 = 10_050;
    let t = TestHub::open(backend).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    // A minute apart from 2026-06-01 00:00 UTC: personas p0..p2, every tenth denied,
    // REST and flows taking turns.
    let base = 1_780_272_000_000_i64;
    let record = |i: i64| NewAuditRecord {
        at: base + i * 60_000,
        request_id: format!("req-{i}"),
        surface: if i % 2 == 0 {
            Surface::Rest
        } else {
            Surface::Flow
        },
        connection: Some("sandbox".into()),
        persona: Some(format!("p{}", i % 3)),
        end_user: None,
        prompt: None,
        tool: "bulk.check".into(),
        arguments: serde_json::json!({ "i": i }),
        outcome: if i % 10 == 0 {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Ok
        },
        response: None,
        error: None,
        upstream_status: None,
        latency_ms: 1,
        oauth_client: None,
    };
    let mut i = 0;
    while i < TOTAL {
        let batch: Vec<NewAuditRecord> = (i..(i + 500).min(TOTAL)).map(record).collect();
        t.hub
            .store()
            .append_audit_batch(&batch)
            .await
            .expect("append");
        i += 500;
    }
    let plugin = console(&t, ConsoleSettings::default());
    let mut c = Client::new(plugin.router());
    c.login("anna", PASSWORD).await;
    let lines = |body: &str| -> Vec<serde_json::Value> {
        body.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };

    let csv = c.get("/audit/export?format=csv&tool=bulk.check").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(
        csv.body.lines().count() as i64,
        TOTAL + 1,
        "a header and every record"
    );
    let all = lines(
        &c.get("/audit/export?format=jsonl&tool=bulk.check")
            .await
            .body,
    );
    assert_eq!(all.len() as i64, TOTAL);
    let seqs: Vec<i64> = all.iter().filter_map(|r| r["seq"].as_i64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no record twice"
    );
    let head = t.hub.audit_head().await.expect("head");
    assert_eq!(
        seqs.last(),
        Some(&head.seq),
        "the newest record is in the export"
    );
    let arg = |r: &serde_json::Value| r["arguments"]["i"].as_i64().expect("i");

    // Each filter, through the export of its view.
    let denied_p1 = lines(
        &c.get("/audit/export?format=jsonl&tool=bulk.check&persona=p1&outcome=denied")
            .await
            .body,
    );
    let expected = (0..TOTAL).filter(|i| i % 3 == 1 && i % 10 == 0).count();
    assert_eq!(denied_p1.len(), expected);
    assert!(
        denied_p1
            .iter()
            .all(|r| { r["persona"] == "p1" && r["outcome"] == "denied" && arg(r) % 30 == 10 })
    );
    let flows = lines(
        &c.get("/audit/export?format=jsonl&tool=bulk.check&surface=flow")
            .await
            .body,
    );
    assert_eq!(flows.len() as i64, TOTAL / 2);
    assert!(
        flows
            .iter()
            .all(|r| r["surface"] == "flow" && arg(r) % 2 == 1)
    );
    // The console's time zone: an hour from 01:00 UTC, written in local time.
    let tz = ConsoleSettings::default().time_zone;
    let local = |ms: i64| {
        tz.timestamp_millis_opt(ms)
            .single()
            .expect("a local time")
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let (since, until) = (local(base + 60 * 60_000), local(base + 120 * 60_000));
    let hour = lines(
        &c.get(&format!(
            "/audit/export?format=jsonl&tool=bulk.check&since={since}&until={until}"
        ))
        .await
        .body,
    );
    let is: Vec<i64> = hour.iter().map(arg).collect();
    assert_eq!(
        is,
        (60..120).collect::<Vec<_>>(),
        "since inclusive, until exclusive"
    );
    // The page shows the same filter: every row is p1's, and no other persona appears.
    let page = c.get("/audit?tool=bulk.check&persona=p1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">p1<"), "{}", page.body);
    assert!(!page.body.contains(">p0<") && !page.body.contains(">p2<"));
    let bad = c.get("/audit/export?format=xml").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("format: `xml`"), "{}", bad.body);
    t.close().await;
}

#[tokio::test]
async fn audit_export_and_filters_cover_the_whole_view_sqlite() {
    audit_export_and_filters_cover_the_whole_view(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_export_and_filters_cover_the_whole_view_postgres() {
    audit_export_and_filters_cover_the_whole_view(Backend::Postgres).await;
}

/// Behind an HTTPS proxy (`--public-url https://…`): cookies are `Secure`, and forms must
/// come from exactly that origin.
#[tokio::test]
async fn public_https_url_makes_cookies_secure_and_fixes_the_origin() {
    let t = TestHub::open(Backend::Sqlite).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    let plugin = console(
        &t,
        ConsoleSettings {
            public_url: Some(url::Url::parse("https://hub.example.com").expect("url")),
            ..ConsoleSettings::default()
        },
    );
    let mut c = Client::new(plugin.router());
    // The request's own host is not enough any more.
    assert_eq!(
        c.login("anna", PASSWORD).await.status,
        StatusCode::FORBIDDEN
    );
    c.origin = Some("https://hub.example.com".into());
    let ok = c.login("anna", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let cookie = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("msh_session="))
        .expect("session cookie")
        .to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");
    let link = plugin
        .first_run_link("127.0.0.1:1".parse().expect("addr"))
        .await
        .expect("link");
    assert!(link.is_none(), "users exist");
    t.close().await;
}

/// One sign-in attempt over a real socket, as a browser behind `forwarded_for` (or a
/// client forging it): the sign-in page for its CSRF cookie and token, then the form.
async fn sign_in_over_tcp(addr: &str, name: &str, forwarded_for: &str) -> StatusCode {
    sign_in_over_tcp_with(addr, name, "wrong", forwarded_for).await
}

/// As [`sign_in_over_tcp`], with a password.
async fn sign_in_over_tcp_with(
    addr: &str,
    name: &str,
    password: &str,
    forwarded_for: &str,
) -> StatusCode {
    // A signed-in answer is a redirect: seen as such, not followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = http
        .get(format!("http://{addr}/login"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("login page");
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("msh_csrf="))
        .and_then(|c| c.split(';').next())
        .expect("a CSRF cookie")
        .to_owned();
    let body = page.text().await.expect("page");
    let at = body.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let csrf = &body[at..at + body[at..].find('"').expect("end")];
    let status = http
        .post(format!("http://{addr}/login"))
        .header("x-forwarded-for", forwarded_for)
        .header("cookie", cookie)
        .header("origin", format!("http://{addr}"))
        .form(&[("csrf", csrf), ("name", name), ("password", password)])
        .send()
        .await
        .expect("login")
        .status();
    StatusCode::from_u16(status.as_u16()).expect("status")
}

/// Serves the console alone in the real app on a free port; its address and the token
/// that stops it.
async fn serve_console(
    t: &TestHub,
    proxies: &[&str],
) -> (String, tokio_util::sync::CancellationToken) {
    let settings = ConsoleSettings {
        login_per_user_per_minute: 100,
        login_per_address_per_minute: 2,
        ..ConsoleSettings::default()
    };
    serve_console_with(t, proxies, settings).await
}

/// As [`serve_console`], with these console settings.
async fn serve_console_with(
    t: &TestHub,
    proxies: &[&str],
    settings: ConsoleSettings,
) -> (String, tokio_util::sync::CancellationToken) {
    let plugin = console(t, settings);
    let settings = memberspot_server::ServerSettings {
        trusted_proxies: memberspot_server::TrustedProxies::parse(proxies, Default::default())
            .expect("ranges"),
        ..Default::default()
    };
    let app = memberspot_server::App::build(t.hub.clone(), settings, vec![Box::new(plugin)]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.serve(listener, cancel.clone()));
    (addr, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_limits_count_forwarded_clients_only_behind_trusted_proxies() {
    let t = TestHub::open(Backend::Sqlite).await;
    add(&t, "anna", ConsoleRole::Owner).await;

    // No trusted proxy: a client that forges a new X-Forwarded-For each time is still
    // one address (two attempts a minute), whatever names it tries.
    let (addr, stop) = serve_console(&t, &[]).await;
    assert_eq!(
        sign_in_over_tcp(&addr, "a1", "203.0.113.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in_over_tcp(&addr, "a2", "203.0.113.2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in_over_tcp(&addr, "a3", "203.0.113.3").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged header does not buy new attempts"
    );
    stop.cancel();

    // Behind a trusted proxy (this peer), each forwarded client has its own limit.
    let (addr, stop) = serve_console(&t, &["127.0.0.1"]).await;
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            sign_in_over_tcp(&addr, &format!("b{i}"), client).await,
            StatusCode::UNAUTHORIZED,
            "{client}"
        );
    }
    assert_eq!(
        sign_in_over_tcp(&addr, "b9", "203.0.113.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in_over_tcp(&addr, "b9", "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client behind the proxy is limited"
    );
    stop.cancel();
    t.close().await;
}

/// A guesser cannot lock a user out from their own network: attempts for a name are
/// counted per network, and only failures count across networks (where many of them are
/// needed). IPv6 clients are counted by their /64, so one host cannot take a fresh
/// address for each try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_a_name_does_not_lock_its_owner_out() {
    let t = TestHub::open(Backend::Sqlite).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    add(&t, "bert", ConsoleRole::Owner).await;
    let settings = ConsoleSettings {
        login_per_user_per_minute: 3,
        login_per_address_per_minute: 4,
        login_failures_per_user_per_minute: 6,
        ..ConsoleSettings::default()
    };
    // Behind a trusted proxy (this peer), so that each test client has its own address.
    let (addr, stop) = serve_console_with(&t, &["127.0.0.1"], settings).await;

    // One network guesses anna's password until it is refused...
    let attacker = "198.51.100.7";
    for _ in 0..3 {
        assert_eq!(
            sign_in_over_tcp(&addr, "anna", attacker).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        sign_in_over_tcp(&addr, "anna", attacker).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and anna, elsewhere, signs in all the same.
    assert_eq!(
        sign_in_over_tcp_with(&addr, "anna", PASSWORD, "192.0.2.10").await,
        StatusCode::SEE_OTHER
    );

    // IPv6: other addresses of the same /64 are the same network (4 attempts a minute).
    for i in 1..=4 {
        let from = format!("2001:db8:aa:bb::{i}");
        assert_eq!(
            sign_in_over_tcp(&addr, &format!("guess{i}"), &from).await,
            StatusCode::UNAUTHORIZED,
            "{from}"
        );
    }
    assert_eq!(
        sign_in_over_tcp(&addr, "guess5", "2001:db8:aa:bb:ffff::5").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a fresh address in the same /64 buys no attempts"
    );
    assert_eq!(
        sign_in_over_tcp(&addr, "guess6", "2001:db8:aa:cc::1").await,
        StatusCode::UNAUTHORIZED,
        "another /64 is another network"
    );

    // Many networks guessing one name: after 6 failures in all, the name rests for the
    // minute, from everywhere (the price of stopping a spread-out guesser; documented).
    for i in 1..=6 {
        assert_eq!(
            sign_in_over_tcp(&addr, "bert", &format!("203.0.113.{i}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        sign_in_over_tcp_with(&addr, "bert", PASSWORD, "192.0.2.20").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Successful sign-ins are not failures: anna is not held back by hers.
    assert_eq!(
        sign_in_over_tcp_with(&addr, "anna", PASSWORD, "192.0.2.11").await,
        StatusCode::SEE_OTHER
    );
    stop.cancel();
    t.close().await;
}

/// A flood of sign-ins with made-up names (each dodges the per-name limits) is checked a
/// few at a time; the rest are turned away at once as busy (503 with `Retry-After`) instead
/// of queueing 19 MiB password checks without end. Nothing is reported as a wrong
/// password that was not checked, and a real user signs in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_is_turned_away_not_queued() {
    let t = TestHub::open(Backend::Sqlite).await;
    add(&t, "anna", ConsoleRole::Owner).await;
    let plugin = console(
        &t,
        ConsoleSettings {
            login_per_user_per_minute: 10_000,
            login_per_address_per_minute: 10_000,
            login_failures_per_user_per_minute: 10_000,
            ..ConsoleSettings::default()
        },
    );
    let mut c = Client::new(plugin.router());
    let csrf = c.get("/login").await.csrf();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..150 {
        let mut c = Client {
            router: plugin.router(),
            cookies: c.cookies.clone(),
            origin: c.origin.clone(),
            accept_language: None,
        };
        let csrf = csrf.clone();
        flood.spawn(async move {
            let name = format!("nobody{i}");
            c.post(
                "/login",
                &[("csrf", &csrf), ("name", &name), ("password", "guess")],
            )
            .await
        });
    }
    let (mut wrong, mut busy) = (0, 0);
    while let Some(answer) = flood.join_next().await {
        let a = answer.expect("joined");
        match a.status {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(a.headers.contains_key("retry-after"));
                assert!(a.body.contains("checking many sign-ins"), "{}", a.body);
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert!(busy > 0, "150 at once fill the line: {wrong} checked");
    assert!(wrong > 0, "the first ones are checked");
    let ok = c.login("anna", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    t.close().await;
}

/// The language switch goes back only to a page of this console: nothing a browser
/// could read as another site, whatever it hides in the path.
#[tokio::test]
async fn the_language_switch_stays_on_this_site() {
    let t = TestHub::open(Backend::Sqlite).await;
    let plugin = console(&t, ConsoleSettings::default());
    let mut c = Client::new(plugin.router());
    for back in [
        "%2F%09%2Fevil.example",
        "/%09/evil.example",
        "/%0d%0a/evil.example",
        "/%0a/evil.example",
        "/%20/evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/%E2%80%A8/evil.example",
    ] {
        let a = c.get(&format!("/lang?to=de&back={back}")).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{back}");
        assert_eq!(a.location(), Some("/"), "{back}");
    }
    let a = c.get("/lang?to=en&back=%2Fmembers%3Fq%3Danna").await;
    assert_eq!(a.location(), Some("/members?q=anna"));
    assert_eq!(c.cookies.get("msh_lang").map(String::as_str), Some("en"));
    t.close().await;
}

/// A database failure is logged, and shown to the user without its details: no table
/// names, SQL or driver text on a page, viewers included.
async fn store_failures_show_no_database_details(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = console(&t, ConsoleSettings::default());
    let mut c = common::signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    // Record numbers at the ends of the range are not found, not an overflow.
    for seq in [i64::MIN, i64::MAX] {
        let a = c.get(&format!("/audit/{seq}")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{seq}");
    }
    t.tamper("ALTER TABLE audit_log RENAME TO audit_log_hidden")
        .await;
    let page = c.get("/audit").await;
    t.tamper("ALTER TABLE audit_log_hidden RENAME TO audit_log")
        .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert!(
        page.body.contains("log says what went wrong"),
        "{}",
        page.body
    );
    for detail in [
        "audit_log",
        "no such table",
        "relation",
        "database error",
        "SELECT",
    ] {
        assert!(!page.body.contains(detail), "{detail}: {}", page.body);
    }
    t.close().await;
}

#[tokio::test]
async fn store_failures_show_no_database_details_sqlite() {
    store_failures_show_no_database_details(Backend::Sqlite).await;
}

#[tokio::test]
async fn store_failures_show_no_database_details_postgres() {
    store_failures_show_no_database_details(Backend::Postgres).await;
}
