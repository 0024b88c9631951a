//! The owner's tasks that once needed the terminal, in process on SQLite and PostgreSQL:
//! changing what a persona may do, managing console users (a role, another user's
//! password, your own password; the last owner stays), and removing a connection after a
//! page that says what uses it. Each change is recorded as `console:NAME`; bad input is
//! shown again as typed and changes nothing.

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use secrecy::SecretString;

mod common;
use common::{Backend, Client, PASSWORD, TestHub, signed_in};

/// The console's audit records, oldest first, as (tool, outcome, who: `console:NAME`).
async fn console_records(t: &TestHub) -> Vec<(String, String, String)> {
    t.hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|r| {
            (
                r.tool,
                r.outcome.as_str().to_owned(),
                r.end_user.unwrap_or_default(),
            )
        })
        .collect()
}

async fn persona_changes(backend: Backend) {
    let t = TestHub::open(backend).await;
    t.hub
        .create_persona(PersonaSpec {
            name: "helper".into(),
            scopes: vec!["read".into()],
            ..PersonaSpec::default()
        })
        .await
        .expect("persona");
    let offers = t.hub.offers_of("sandbox").await.expect("offers");
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    let page = c.get("/personas/helper/edit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(
            "<input id=\"scope-read\" type=\"checkbox\" name=\"scope\" value=\"read\" checked>"
        ),
        "the form shows what the persona may do now: {}",
        page.body
    );
    assert!(
        page.body.contains(
            "<input id=\"scope-write\" type=\"checkbox\" name=\"scope\" value=\"write\">"
        ),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let token_before = t
        .hub
        .persona_any("helper")
        .await
        .expect("helper")
        .token_prefix;

    // Bad input: shown again as typed, nothing changes.
    let none = c
        .post(
            "/personas/helper/edit",
            &[("csrf", &csrf), ("confirm_set", "1"), ("per_minute", "12")],
        )
        .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(
        none.body
            .contains("scope: tick at least one tool class or tool"),
        "{}",
        none.body
    );
    assert!(
        none.body
            .contains("<input id=\"scope-read\" type=\"checkbox\" name=\"scope\" value=\"read\">"),
        "unticked stays unticked: {}",
        none.body
    );
    assert!(none.body.contains("value=\"12\""), "the limit as typed");
    let bad_limit = c
        .post(
            "/personas/helper/edit",
            &[("csrf", &csrf), ("scope", "write"), ("per_minute", "lots")],
        )
        .await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert!(bad_limit.body.contains("per_minute: `lots`"));
    assert!(bad_limit.body.contains("value=\"lots\""));
    let unchanged = t.hub.persona_any("helper").await.expect("helper");
    assert_eq!(unchanged.scopes, ["read"]);
    assert_eq!(unchanged.calls_per_minute, None);

    // All of it at once: classes, a single tool, chat confirmations, offers, a limit.
    let offer = format!("sandbox/{}", offers[0].id);
    let saved = c
        .post(
            "/personas/helper/edit",
            &[
                ("csrf", &csrf),
                ("scope", "read"),
                ("scope", "write"),
                ("scope", "set_user_offer_state"),
                ("confirm_set", "1"),
                ("confirm", "write"),
                ("offer", &offer),
                ("per_minute", "7"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location(), Some("/personas/helper?changed=1"));
    let p = t.hub.persona_any("helper").await.expect("helper");
    assert_eq!(
        p.scopes,
        ["read", "write", "set_user_offer_state", "confirm:write"],
        "{p:?}"
    );
    assert_eq!(p.offer_ids.as_deref(), Some(&[offers[0].id.clone()][..]));
    assert_eq!(p.calls_per_minute, Some(7));
    assert_eq!(p.token_prefix, token_before, "the token stays");
    let shown = c.get("/personas/helper?changed=1").await;
    assert!(shown.body.contains("Saved."), "{}", shown.body);

    // Taking limits away again: no offer picked is every offer, an empty limit is none,
    // no confirmation ticked is none.
    let again = c.get("/personas/helper/edit").await;
    assert!(again.body.contains(&format!("value=\"{offer}\" selected")));
    assert!(
        again
            .body
            .contains("name=\"confirm\" value=\"write\" checked")
    );
    let cleared = c
        .post(
            "/personas/helper/edit",
            &[
                ("csrf", &csrf),
                ("scope", "read"),
                ("confirm_set", "1"),
                ("per_minute", ""),
            ],
        )
        .await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    let p = t.hub.persona_any("helper").await.expect("helper");
    assert_eq!(p.scopes, ["read", "confirm:none"]);
    assert_eq!(p.offer_ids, None);
    assert_eq!(p.calls_per_minute, None);

    // An offer this school does not have is refused by the hub and changes nothing.
    let unknown = c
        .post(
            "/personas/helper/edit",
            &[
                ("csrf", &csrf),
                ("scope", "write"),
                ("offers", "no-such-offer"),
            ],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert!(unknown.body.contains("no-such-offer"));
    assert_eq!(
        t.hub.persona_any("helper").await.expect("helper").scopes,
        ["read", "confirm:none"]
    );

    // A viewer cannot; a revoked persona cannot be changed, only created again.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    assert_eq!(
        v.get("/personas/helper/edit").await.status,
        StatusCode::FORBIDDEN
    );
    let vcsrf = v.get("/personas").await.csrf();
    let forged = v
        .post(
            "/personas/helper/edit",
            &[("csrf", &vcsrf), ("scope", "all")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    t.hub.revoke_persona("helper").await.expect("revoke");
    assert_eq!(
        c.get("/personas/helper/edit").await.status,
        StatusCode::CONFLICT
    );
    let late = c
        .post(
            "/personas/helper/edit",
            &[("csrf", &csrf), ("scope", "all")],
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body.contains("revoked"));
    assert_eq!(
        c.get("/personas/nobody/edit").await.status,
        StatusCode::NOT_FOUND
    );

    let records = console_records(&t).await;
    let edits: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.0 == "admin.edit_persona")
        .map(|r| (r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        edits,
        [
            ("ok", "console:anna"),
            ("ok", "console:anna"),
            ("invalid", "console:anna"),
            ("tool_error", "console:anna"),
        ],
        "{records:?}"
    );
    t.close().await;
}

#[tokio::test]
async fn persona_changes_sqlite() {
    persona_changes(Backend::Sqlite).await;
}

#[tokio::test]
async fn persona_changes_postgres() {
    persona_changes(Backend::Postgres).await;
}

async fn console_users(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut anna = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let mut bert = signed_in(&t, &plugin, "bert", ConsoleRole::Viewer).await;
    let csrf = anna.get("/settings").await.csrf();

    // A role: bert becomes owner and may change things at once, in his open session.
    let promoted = anna
        .post(
            "/settings/users/bert/role",
            &[("csrf", &csrf), ("role", "owner")],
        )
        .await;
    assert_eq!(promoted.location(), Some("/settings?changed=bert"));
    let bpage = bert.get("/settings").await;
    assert!(
        bpage.body.contains("action=\"/settings/users\""),
        "bert sees the owner's forms"
    );
    let bad = anna
        .post(
            "/settings/users/bert/role",
            &[("csrf", &csrf), ("role", "admin")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("role: `admin`"), "{}", bad.body);
    let own = anna
        .post(
            "/settings/users/anna/role",
            &[("csrf", &csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);

    // The last owner stays: bert demotes anna, then nobody can demote or remove bert.
    let bcsrf = bpage.csrf();
    let demoted = bert
        .post(
            "/settings/users/anna/role",
            &[("csrf", &bcsrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(demoted.status, StatusCode::SEE_OTHER, "{}", demoted.body);
    assert_eq!(
        anna.post(
            "/settings/users/bert/role",
            &[("csrf", &csrf), ("role", "viewer")],
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "anna is a viewer now"
    );
    let last = t.hub.set_console_role("bert", ConsoleRole::Viewer).await;
    assert!(last.is_err(), "the last owner cannot be demoted: {last:?}");
    assert!(
        t.hub.remove_console_user("bert").await.is_err(),
        "nor removed while others remain"
    );
    assert_eq!(
        bert.post(
            "/settings/users/anna/role",
            &[("csrf", &bcsrf), ("role", "owner")],
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );

    // Another user's password, set by an owner: their sessions end, the new one works.
    let weak = anna
        .post(
            "/settings/users/bert/password",
            &[
                ("csrf", &csrf),
                ("password", "short"),
                ("password2", "short"),
            ],
        )
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("password: use at least 10 characters"));
    let reset = anna
        .post(
            "/settings/users/bert/password",
            &[
                ("csrf", &csrf),
                ("password", "bert's new password"),
                ("password2", "bert's new password"),
            ],
        )
        .await;
    assert_eq!(
        reset.location(),
        Some("/settings?reset=bert"),
        "{}",
        reset.body
    );
    assert_eq!(bert.get("/settings").await.location(), Some("/login"));
    let mut bert = Client::new(plugin.router());
    assert_eq!(
        bert.login("bert", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bert.login("bert", "bert's new password").await.status,
        StatusCode::SEE_OTHER
    );

    // Your own password, viewers included: the current one must be right; other
    // sessions end, this one goes on.
    let mut vera = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let mut vera_elsewhere = Client::new(plugin.router());
    assert_eq!(
        vera_elsewhere.login("vera", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let form = vera.get("/settings/password").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("autocomplete=\"current-password\""));
    let vcsrf = form.csrf();
    let wrong = vera
        .post(
            "/settings/password",
            &[
                ("csrf", &vcsrf),
                ("current", "not my password"),
                ("password", "vera's new password"),
                ("password2", "vera's new password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .body
            .contains("current: that is not your current password")
    );
    let mismatch = vera
        .post(
            "/settings/password",
            &[
                ("csrf", &vcsrf),
                ("current", PASSWORD),
                ("password", "vera's new password"),
                ("password2", "vera's other password"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let changed = vera
        .post(
            "/settings/password",
            &[
                ("csrf", &vcsrf),
                ("current", PASSWORD),
                ("password", "vera's new password"),
                ("password2", "vera's new password"),
            ],
        )
        .await;
    assert_eq!(
        changed.location(),
        Some("/settings?password=1"),
        "{}",
        changed.body
    );
    let after = vera.get("/settings?password=1").await;
    assert_eq!(after.status, StatusCode::OK, "this browser stays signed in");
    assert!(after.body.contains("Your password is changed"));
    assert_eq!(
        vera_elsewhere.get("/settings").await.location(),
        Some("/login"),
        "the other browser is signed out"
    );
    // Without the page's token the change is refused, for viewers as for owners.
    let forged = vera
        .post(
            "/settings/password",
            &[
                ("csrf", "forged"),
                ("current", "vera's new password"),
                ("password", "mallory's password"),
                ("password2", "mallory's password"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let records = console_records(&t).await;
    let tools: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        tools,
        [
            ("admin.set_console_role", "ok", "console:anna"),
            ("admin.set_console_role", "ok", "console:bert"),
            ("admin.set_console_role", "ok", "console:bert"),
            ("admin.reset_console_password", "ok", "console:anna"),
            ("admin.change_console_password", "denied", "console:vera"),
            ("admin.change_console_password", "ok", "console:vera"),
        ],
        "{records:?}"
    );
    let all = format!("{records:?}");
    assert!(!all.contains("new password") && !all.contains(PASSWORD));
    t.close().await;
}

#[tokio::test]
async fn console_users_sqlite() {
    console_users(Backend::Sqlite).await;
}

#[tokio::test]
async fn console_users_postgres() {
    console_users(Backend::Postgres).await;
}

async fn connection_removal(backend: Backend) {
    let t = TestHub::open(backend).await;
    t.hub
        .add_connection(
            "school",
            &t.sandbox.base_url(),
            &SecretString::from("sk_console_school".to_string()),
            0.0,
        )
        .await
        .expect("connection");
    t.hub
        .create_persona(PersonaSpec {
            name: "school-bot".into(),
            connection: Some("school".into()),
            scopes: vec!["read".into()],
            ..PersonaSpec::default()
        })
        .await
        .expect("persona");
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let edit = c.get("/connections/school").await;
    assert!(edit.body.contains("href=\"/connections/school/remove\""));
    let csrf = edit.csrf();

    // While a persona acts on it: the page names it and offers no button; a post anyway
    // is refused and the connection stays.
    let page = c.get("/connections/school/remove").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("href=\"/personas/school-bot\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("action=\"/connections/school/remove\""));
    let refused = c
        .post("/connections/school/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(t.hub.connection("school").await.is_ok());

    t.hub.revoke_persona("school-bot").await.expect("revoke");
    let page = c.get("/connections/school/remove").await;
    assert!(page.body.contains("action=\"/connections/school/remove\""));
    let removed = c
        .post("/connections/school/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(removed.location(), Some("/connections?removed=school"));
    assert!(t.hub.connection("school").await.is_err());
    let list = c.get("/connections?removed=school").await;
    assert!(list.body.contains("Connection school removed"));
    assert_eq!(
        c.get("/connections/school/remove").await.status,
        StatusCode::NOT_FOUND
    );

    // A viewer may not, and a bad rate limit is shown again as typed.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    assert_eq!(
        v.get("/connections/sandbox/remove").await.status,
        StatusCode::FORBIDDEN
    );
    let rate = c
        .post(
            "/connections/sandbox/rate",
            &[("csrf", &csrf), ("rate_limit", "fast")],
        )
        .await;
    assert_eq!(rate.status, StatusCode::BAD_REQUEST);
    assert!(rate.body.contains("value=\"fast\""), "{}", rate.body);

    let records = console_records(&t).await;
    let removals: Vec<&str> = records
        .iter()
        .filter(|r| r.0 == "admin.remove_connection")
        .map(|r| r.1.as_str())
        .collect();
    assert_eq!(removals, ["tool_error", "ok"], "{records:?}");
    t.close().await;
}

#[tokio::test]
async fn connection_removal_sqlite() {
    connection_removal(Backend::Sqlite).await;
}

#[tokio::test]
async fn connection_removal_postgres() {
    connection_removal(Backend::Postgres).await;
}
