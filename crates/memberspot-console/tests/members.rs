//! The Members page beyond grant and revoke, in process on SQLite and PostgreSQL: a name
//! search over the member list (bounded, and saying so), a member's progress per course,
//! setting and clearing an end date (a date that has passed needs the ticked
//! confirmation), a login link shown once and kept in the audit log only as its
//! fingerprint; a viewer sees none of the forms and their forged changes are refused.

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::AuditFilter;
use memberspot_hub::{CallContext, Principal, Surface};
use serde_json::{Value, json};

mod common;
use common::{Backend, Client, TestHub, signed_in};

const SCHOOL_KEY: &str = "sk_console_school";

async fn sandbox(t: &TestHub, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", t.sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("sandbox admin");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

/// The member's holding of `offer` in the sandbox's own state.
async fn holding(t: &TestHub, email: &str, offer: &str) -> Value {
    let state = sandbox(t, reqwest::Method::GET, "/_sandbox/state", None).await;
    state["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"].as_str() == Some(email))
        .and_then(|u| {
            u["offers"]
                .as_array()?
                .iter()
                .find(|h| h["offerId"].as_str() == Some(offer))
                .cloned()
        })
        .expect("the holding")
}

async fn send(c: &mut Client, form: &[(&str, String)]) -> common::Answer {
    c.post_owned("/members/expiration", form).await
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `value` of the input with `id`.
fn field(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no field {id}: {body}"));
    let rest = &body[at..];
    let v = rest.find("value=\"").expect("a value") + "value=\"".len();
    rest[v..v + rest[v..].find('"').expect("end")].to_owned()
}

async fn members_page(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let who = Principal::Operator {
        connection: "sandbox".into(),
    };
    let cli = CallContext::new(Surface::Cli);
    let users = t
        .hub
        .call(&who, &cli, "list_users", json!({}))
        .await
        .result
        .expect("users");
    let member = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["offers"].as_array().is_some_and(|o| !o.is_empty()) && u["name"].is_string())
        .expect("a seeded member with a last name and an offer")
        .clone();
    let email = member["email"].as_str().expect("email").to_owned();
    let last = member["name"].as_str().expect("name").to_owned();
    let offer_id = member["offers"][0]["offerId"]
        .as_str()
        .expect("offer")
        .to_owned();

    // Progress in one course: a lesson completed, another started.
    let state = sandbox(&t, reqwest::Method::GET, "/_sandbox/state", None).await;
    let course = &state["courses"][0];
    let course_id = course["id"].as_str().expect("course id").to_owned();
    let posts: Vec<String> = course["chapters"]
        .as_array()
        .expect("chapters")
        .iter()
        .flat_map(|c| c["posts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    assert!(posts.len() >= 2, "two lessons to work on");
    for (post, completed) in [(&posts[0], true), (&posts[1], false)] {
        sandbox(
            &t,
            reqwest::Method::POST,
            "/_sandbox/progress",
            Some(json!({ "email": email, "courseId": course_id, "postId": post, "completed": completed })),
        )
        .await;
    }

    let mut c = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;
    let start = c.get("/members").await;
    assert!(
        start.body.contains("among the first 1,000 members"),
        "the page says how far a name search reaches: {}",
        start.body
    );

    // By name: a part of the last name, in other case, finds the member.
    let part: String = last.chars().take(4).collect::<String>().to_uppercase();
    let found = c
        .get(&format!("/members?connection=sandbox&q={}", encode(&part)))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(
        found
            .body
            .contains(&format!("email={}", encode(&email).replace('&', "&amp;"))),
        "the member is linked: {}",
        found.body
    );
    assert!(found.body.contains("matches among"), "{}", found.body);
    let none = c.get("/members?connection=sandbox&q=zzzqqq").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(none.body.contains("No member's name or address contains"));
    // An address in the search field opens the member.
    let by_mail = c
        .get(&format!("/members?connection=sandbox&q={}", encode(&email)))
        .await;
    assert_eq!(by_mail.status, StatusCode::OK);
    assert!(by_mail.body.contains("Progress per course"));

    // The member: holdings and progress per course.
    let page = c
        .get(&format!(
            "/members?connection=sandbox&email={}",
            encode(&email)
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&format!("<code>{course_id}</code>")),
        "{}",
        page.body
    );
    // The counts the API gives for that course (the seed has progress of its own).
    let progress = || async {
        t.hub
            .call(
                &who,
                &cli,
                "list_user_course_progress",
                json!({ "email": email }),
            )
            .await
            .result
            .expect("progress")
    };
    let api = progress().await;
    let mine = api["progress"]
        .as_array()
        .expect("progress")
        .iter()
        .find(|p| p["courseId"].as_str() == Some(&course_id))
        .expect("the course")
        .clone();
    let count = |k: &str| mine[k].as_array().map_or(0, Vec::len);
    let (completed, started) = (count("completedPosts"), count("activePosts"));
    assert!(completed >= 1 && started >= 1, "{mine}");
    assert!(
        page.body.contains(&format!(
            "<td class=\"num\">{completed}</td><td class=\"num\">{started}</td>"
        )),
        "{completed} lessons completed, {started} started: {}",
        page.body
    );
    let csrf = page.csrf();

    // An end date in the future: set, shown, then removed.
    let confirm = c
        .get(&format!(
            "/members/expiration?connection=sandbox&email={}&offer_id={}",
            encode(&email),
            encode(&offer_id)
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Europe/Berlin"));
    assert!(
        confirm.body.contains(&format!("({offer_id})")),
        "the end-date page names the offer with its id: {}",
        confirm.body
    );
    let change = |date: &'static str, action: &'static str, tick: bool| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("connection", "sandbox".to_owned()),
            ("email", email.clone()),
            ("offer_id", offer_id.clone()),
            ("expires_on", date.to_owned()),
            ("action", action.to_owned()),
        ];
        if tick {
            form.push(("confirm", "1".to_owned()));
        }
        form
    };
    let set = send(&mut c, &change("2099-12-31", "set", false)).await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{}", set.body);
    let h = holding(&t, &email, &offer_id).await;
    assert!(
        h["expiresAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2099-12-31T22:59:59")),
        "the end of 31 December in Berlin: {h}"
    );
    let shown = c.get(set.location().expect("back")).await;
    assert!(shown.body.contains("The end date is set."));
    assert!(shown.body.contains("31.12.2099") || shown.body.contains("2099-12-31"));

    let bad = send(&mut c, &change("31.12.2099", "set", false)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("expires_on: `31.12.2099` is not a date"));

    // A date that has passed ends access at once: refused without the ticked box.
    let unticked = send(&mut c, &change("2020-01-01", "set", false)).await;
    assert_eq!(unticked.status, StatusCode::BAD_REQUEST);
    assert!(unticked.body.contains("has passed"), "{}", unticked.body);
    assert!(
        holding(&t, &email, &offer_id).await["expiresAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2099")),
        "nothing changed"
    );
    let ticked = send(&mut c, &change("2020-01-01", "set", true)).await;
    assert_eq!(ticked.status, StatusCode::SEE_OTHER, "{}", ticked.body);
    assert!(
        holding(&t, &email, &offer_id).await["expiresAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2020-01-01")),
    );
    let cleared = send(&mut c, &change("", "clear", false)).await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    assert!(
        holding(&t, &email, &offer_id).await["expiresAt"].is_null(),
        "the end date is removed"
    );

    // Revoke, after its confirmation page: access ends, the progress stays; restore gives
    // the same holding back.
    let ask = c
        .get(&format!(
            "/members/revoke?connection=sandbox&email={}&offer_id={}",
            encode(&email),
            encode(&offer_id)
        ))
        .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.body.contains("name=\"state\" value=\"inactive\""));
    let offer_name = t
        .hub
        .offers_of("sandbox")
        .await
        .expect("offers")
        .into_iter()
        .find(|o| o.id == offer_id)
        .expect("the held offer")
        .name;
    assert!(
        ask.body.contains(&format!("{offer_name} ({offer_id})")),
        "the confirmation names the offer: {}",
        ask.body
    );
    assert_eq!(
        holding(&t, &email, &offer_id).await["active"],
        true,
        "asking changes nothing"
    );
    let state = |to: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("connection", "sandbox".to_owned()),
            ("email", email.clone()),
            ("offer_id", offer_id.clone()),
            ("state", to.to_owned()),
        ]
    };
    let revoked = c.post_owned("/members/state", &state("inactive")).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(holding(&t, &email, &offer_id).await["active"], false);
    assert_eq!(progress().await, api, "revoking keeps the progress");
    let restored = c.post_owned("/members/state", &state("active")).await;
    assert_eq!(restored.status, StatusCode::SEE_OTHER, "{}", restored.body);
    assert_eq!(holding(&t, &email, &offer_id).await["active"], true);
    let odd = c.post_owned("/members/state", &state("deleted")).await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);
    assert!(odd.body.contains("state: `deleted`"), "{}", odd.body);

    // A login link: shown once on its page, in the audit log only as its fingerprint.
    let uid = member["uid"].as_str().expect("uid");
    let link = c
        .post(
            "/members/login-link",
            &[
                ("csrf", &csrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("uid", uid),
            ],
        )
        .await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);
    let token = field(&link.body, "login-token");
    assert!(token.len() >= 16, "a token: {token}");
    assert!(
        link.body.contains("data-copy=\"login-token\""),
        "a copy button"
    );
    assert!(
        link.body.contains("readonly"),
        "a selectable field without JavaScript"
    );
    assert_eq!(
        link.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let records = t
        .hub
        .audit(&AuditFilter {
            tool: Some("create_login_token".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].end_user.as_deref(), Some("console:anna"));
    let text = serde_json::to_string(&records[0]).expect("json");
    assert!(!text.contains(&token), "the token is not on record");
    assert!(
        text.contains(&memberspot_tools::redact::fingerprint(&token)),
        "its fingerprint is: {text}"
    );

    // A viewer: no forms, no end-date page, and forged changes are refused.
    let mut v = signed_in(&t, &plugin, "vera", ConsoleRole::Viewer).await;
    let vpage = v
        .get(&format!(
            "/members?connection=sandbox&email={}",
            encode(&email)
        ))
        .await;
    assert_eq!(vpage.status, StatusCode::OK);
    assert!(!vpage.body.contains("action=\"/members/"), "{}", vpage.body);
    assert!(!vpage.body.contains("/members/expiration?"));
    assert!(vpage.body.contains("Progress per course"));
    assert_eq!(
        v.get(&format!(
            "/members/expiration?connection=sandbox&email={}&offer_id={offer_id}",
            encode(&email)
        ))
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let vcsrf = vpage.csrf();
    let forged_date = v
        .post(
            "/members/expiration",
            &[
                ("csrf", &vcsrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("offer_id", &offer_id),
                ("expires_on", "2020-01-01"),
                ("confirm", "1"),
                ("action", "set"),
            ],
        )
        .await;
    assert_eq!(forged_date.status, StatusCode::FORBIDDEN);
    let forged_link = v
        .post(
            "/members/login-link",
            &[
                ("csrf", &vcsrf),
                ("connection", "sandbox"),
                ("email", &email),
                ("uid", uid),
            ],
        )
        .await;
    assert_eq!(forged_link.status, StatusCode::FORBIDDEN);
    assert!(holding(&t, &email, &offer_id).await["expiresAt"].is_null());
    let vera_changes = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.end_user.as_deref() == Some("console:vera"))
        .filter(|r| r.tool == "set_offer_expiration" || r.tool == "create_login_token")
        .count();
    assert_eq!(
        vera_changes, 0,
        "nothing reached the gateway for the viewer"
    );

    // The name search read the member list through the gateway, under the console user.
    let reads = t
        .hub
        .audit(&AuditFilter {
            tool: Some("list_users".into()),
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert!(
        !reads.is_empty()
            && reads
                .iter()
                .all(|r| r.end_user.as_deref() == Some("console:anna"))
    );

    // Auf Deutsch.
    c.cookies.insert("msh_lang".into(), "de".into());
    let de = c.get("/members").await;
    assert!(de.body.contains("E-Mail oder Name"), "{}", de.body);
    t.close().await;
}

#[tokio::test]
async fn members_search_progress_expiration_login_link_sqlite() {
    members_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn members_search_progress_expiration_login_link_postgres() {
    members_page(Backend::Postgres).await;
}
