//! A real browser (Debian's headless Chromium through its chromedriver, driven with
//! fantoccini) through the console served by the whole app on a TCP port: first-run
//! setup → sign-out → sign-in with the keyboard → create a persona → its token shown once
//! → the persona listed → revoke it → the audit page shows both actions under the console
//! user → a dead event replayed from the Events page → the Flows page → the German pages
//! → the read-only pages on a phone-sized screen; a viewer who finds no state-changing form
//! anywhere and whose forged post is refused; an owner's post without its CSRF token
//! refused; signing out (and out everywhere) ending the session on the server.
//! Screenshots go to `target/screenshots/`; every page is checked for one `h1` and a label
//! for every form field.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them): without them this
//! test fails and says so.

use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_server::{App, Plugin, ServerSettings};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, TestHub};

mod browser_support;
use browser_support::{Driver, browser, check_page, shot, start_driver};

const PASSWORD: &str = "a long enough password";

/// One browser at a time: the journeys share a small machine, and their waits are timed.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The page's `h1`, read again while a navigation is still under way (an element of the
/// page before is stale).
async fn h1(c: &Client) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css("h1")).await
            && let Ok(t) = e.text().await
        {
            return t;
        }
        last = "no h1 yet".into();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{last}");
}

/// Waits until the page's `h1` is `expected` (after a click that navigates).
async fn wait_h1(c: &Client, expected: &str) {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = h1(c).await;
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected the page `{expected}`, still on `{seen}`");
}

/// The text of the element `at` finds.
async fn text_of(c: &Client, at: Locator<'_>) -> String {
    let what = format!("{at:?}");
    c.find(at)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn path(c: &Client) -> String {
    c.current_url().await.expect("url").path().to_owned()
}

#[tokio::test]
async fn first_run_to_revoked_persona_in_a_browser() {
    let _one = ONE_BROWSER.lock().await;
    let (_driver, driver_url) = start_driver().await;
    let t = TestHub::open(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let link = console
        .first_run_link(addr)
        .await
        .expect("link")
        .expect("a setup link");
    let plugins: Vec<Box<dyn Plugin>> = vec![Box::new(console)];
    let app = App::build(t.hub.clone(), ServerSettings::default(), plugins);
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(app.serve(listener, cancel.clone()));
    let base = format!("http://{addr}");

    let c = browser(&driver_url).await;

    // First run: the setup link, the owner's name and password.
    c.goto(&link).await.expect("setup page");
    wait_h1(&c, "Set up the console").await;
    check_page(&c, "setup").await;
    shot(&c, "01-setup").await;
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("anna")
        .await
        .expect("type");
    c.find(Locator::Id("password"))
        .await
        .expect("pw")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    c.find(Locator::Id("password2"))
        .await
        .expect("pw2")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    c.find(Locator::Css("form.card button[type=submit]"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Overview").await;
    assert_eq!(path(&c).await, "/");
    check_page(&c, "overview").await;
    shot(&c, "02-overview").await;

    // Sign out, then sign in again with the keyboard alone.
    c.find(Locator::Css("form[action=\"/logout\"] button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Sign in").await;
    assert_eq!(path(&c).await, "/login");
    check_page(&c, "login").await;
    // The name field has the focus; Tab to the password, Enter sends the form.
    let name = c.active_element().await.expect("focus");
    assert_eq!(name.attr("id").await.expect("id").as_deref(), Some("name"));
    name.send_keys(&format!(
        "anna{}{PASSWORD}{}",
        char::from(Key::Tab),
        char::from(Key::Enter)
    ))
    .await
    .expect("keyboard sign-in");
    wait_h1(&c, "Overview").await;
    assert_eq!(path(&c).await, "/");
    shot(&c, "03-signed-in").await;

    // Personas: empty, then create one with a limit and the write class.
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(&c, "Personas").await;
    check_page(&c, "personas").await;
    shot(&c, "04-personas-empty").await;
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("support-bot")
        .await
        .expect("type");
    c.find(Locator::Id("scope-write"))
        .await
        .expect("write")
        .click()
        .await
        .expect("check");
    c.find(Locator::Id("per_minute"))
        .await
        .expect("limit")
        .send_keys("30")
        .await
        .expect("type");
    c.find(Locator::Css("form.card button[type=submit]"))
        .await
        .expect("create")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Token of support-bot").await;
    check_page(&c, "token").await;
    let token = c
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    assert!(token.starts_with("msh_"), "{token}");
    // The copy button: shown by the script, it selects the whole token and says so.
    click(&c, "button[data-copy=\"token\"]").await;
    let mut copied = String::new();
    for _ in 0..50 {
        copied = text_of(&c, Locator::Css("button[data-copy=\"token\"]")).await;
        if copied == "Copied" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(copied, "Copied");
    let selected = c
        .execute(
            "const f = document.getElementById('token'); \
             return f.value.substring(f.selectionStart, f.selectionEnd);",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        selected.as_str(),
        Some(token.as_str()),
        "the whole token is selected"
    );
    shot(&c, "05-token-shown-once").await;
    let persona = t.hub.authenticate(&token).await.expect("the token works");
    assert_eq!(
        persona.scopes,
        ["read", "write", "confirm:destructive"],
        "as ticked, with the form's default: ask before destructive calls in chat"
    );
    assert_eq!(persona.calls_per_minute, Some(30));
    // The token calls a tool over REST on the same listener.
    let http = reqwest::Client::new();
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{base}/v1/tools/list_offers/call");
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "arguments": {}, "prompt": "which offers exist?" }))
                .send()
                .await
                .expect("REST call")
                .status()
        }
    };
    assert_eq!(call(token.clone()).await, 200);

    // The persona form with the keyboard alone: Tab to the name field, type, Enter.
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(&c, "Personas").await;
    let mut reached = false;
    for _ in 0..60 {
        let focused = c.active_element().await.expect("focus");
        if focused.attr("id").await.expect("id").as_deref() == Some("name") {
            reached = true;
            break;
        }
        focused
            .send_keys(&char::from(Key::Tab).to_string())
            .await
            .expect("Tab");
    }
    assert!(
        reached,
        "the persona form's name field is reachable with Tab"
    );
    c.active_element()
        .await
        .expect("focus")
        .send_keys(&format!("keyboard-bot{}", char::from(Key::Enter)))
        .await
        .expect("type and send");
    wait_h1(&c, "Token of keyboard-bot").await;

    // Changed from its row: ask before writes in chat, a lower limit; the token stays.
    c.goto(&format!("{base}/personas")).await.expect("personas");
    click(&c, "a[href=\"/personas/support-bot/edit\"]").await;
    wait_h1(&c, "Change support-bot").await;
    check_page(&c, "persona change").await;
    click(&c, "#confirm-write").await;
    let limit = c.find(Locator::Id("per_minute")).await.expect("limit");
    limit.clear().await.expect("clear");
    limit.send_keys("10").await.expect("type");
    shot(&c, "06b-persona-change").await;
    click(&c, "form.card button[type=submit]").await;
    wait_h1(&c, "support-bot").await;
    let changed = t
        .hub
        .authenticate(&token)
        .await
        .expect("the same token works");
    assert_eq!(changed.calls_per_minute, Some(10));
    assert_eq!(
        changed.scopes,
        ["read", "write", "confirm:write", "confirm:destructive"]
    );

    // Listed, then revoked after the confirmation page.
    c.goto(&format!("{base}/personas")).await.expect("personas");
    let row = c
        .find(Locator::XPath("//tr[td/a[text()='support-bot']]"))
        .await
        .expect("listed");
    assert!(row.text().await.expect("row").contains("active"));
    shot(&c, "06-personas-listed").await;
    row.find(Locator::Css("a.danger"))
        .await
        .expect("revoke link")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Revoke support-bot?").await;
    check_page(&c, "revoke").await;
    c.find(Locator::Css("main form button.danger"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Personas").await;
    assert_eq!(path(&c).await, "/personas");
    let row = c
        .find(Locator::XPath("//tr[td/a[text()='support-bot']]"))
        .await
        .expect("listed");
    assert!(row.text().await.expect("row").contains("revoked"));
    // Its page: settings and recent calls (the REST call).
    row.find(Locator::Css("td a"))
        .await
        .expect("name link")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "support-bot").await;
    check_page(&c, "persona").await;
    let calls = text_of(&c, Locator::Css("table")).await;
    assert!(calls.contains("list_offers"), "{calls}");
    c.back().await.expect("back");
    shot(&c, "07-persona-revoked").await;
    assert!(
        t.hub.authenticate(&token).await.is_err(),
        "the token is refused after revoking"
    );
    assert_eq!(call(token.clone()).await, 401, "the next call is refused");

    // The audit log shows both actions under the console user.
    c.goto(&format!("{base}/audit")).await.expect("audit");
    wait_h1(&c, "Audit log").await;
    check_page(&c, "audit").await;
    let table = text_of(&c, Locator::Css("table")).await;
    assert!(
        table.contains("admin.create_persona") && table.contains("admin.revoke_persona"),
        "{table}"
    );
    assert!(table.contains("console:anna"), "{table}");
    // The persona's REST call, and its refused call after the revocation.
    assert!(
        table.contains("support-bot") && table.contains("list_offers"),
        "{table}"
    );
    assert!(table.contains("denied"), "{table}");
    assert!(!table.contains(&token));
    shot(&c, "08-audit").await;
    let first = c
        .find(Locator::Css("tbody tr:first-child td a"))
        .await
        .expect("record link");
    let seq = first.text().await.expect("seq");
    first.click().await.expect("click");
    wait_h1(&c, &format!("Record {seq}")).await;
    check_page(&c, "record").await;
    shot(&c, "09-audit-record").await;
    c.goto(&format!("{base}/audit/verify"))
        .await
        .expect("verify");
    let verdict = text_of(&c, Locator::Css(".notice")).await;
    assert!(verdict.contains("intact"), "{verdict}");
    check_page(&c, "verify").await;

    // Members: find one by e-mail and see what they hold.
    let users = t
        .hub
        .call(
            &memberspot_hub::Principal::Operator {
                connection: "sandbox".into(),
            },
            &memberspot_hub::CallContext::new(memberspot_hub::Surface::Cli),
            "list_users",
            serde_json::json!({}),
        )
        .await
        .result
        .expect("users");
    let email = users["users"][0]["email"]
        .as_str()
        .expect("email")
        .to_owned();
    c.goto(&format!("{base}/members")).await.expect("members");
    wait_h1(&c, "Members").await;
    check_page(&c, "members").await;
    c.find(Locator::Id("m-q"))
        .await
        .expect("email field")
        .send_keys(&email)
        .await
        .expect("type");
    c.find(Locator::Css("form.filters button"))
        .await
        .expect("find")
        .click()
        .await
        .expect("click");
    let mut found = false;
    for _ in 0..50 {
        if c.find(Locator::Css("main h2")).await.is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the member's page");
    check_page(&c, "member").await;
    shot(&c, "10-member").await;

    // The overview after all this: the day's tool calls.
    c.goto(&format!("{base}/")).await.expect("overview");
    wait_h1(&c, "Overview").await;
    shot(&c, "10b-overview-later").await;

    // Connections and settings: labelled forms, one h1.
    c.goto(&format!("{base}/connections"))
        .await
        .expect("connections");
    wait_h1(&c, "Connections").await;
    check_page(&c, "connections").await;
    shot(&c, "11-connections").await;
    c.goto(&format!("{base}/connections/sandbox"))
        .await
        .expect("connection");
    wait_h1(&c, "Change sandbox").await;
    check_page(&c, "connection").await;
    c.goto(&format!("{base}/settings")).await.expect("settings");
    wait_h1(&c, "Settings").await;
    check_page(&c, "settings").await;
    shot(&c, "12-settings").await;
    c.goto(&format!("{base}/oauth"))
        .await
        .expect("connected apps");
    wait_h1(&c, "Connected apps").await;
    check_page(&c, "connected apps").await;

    // Events: a dead purchase event, linked from the overview, replayed by the owner.
    let dead = t
        .hub
        .events_store()
        .insert_events(&[memberspot_hub::store::NewEvent {
            dedupe_key: "ds24:order-88:payment".into(),
            source: "ds24".into(),
            provider: "digistore24".into(),
            kind: "purchase".into(),
            name: "on_payment".into(),
            order_id: Some("order-88".into()),
            product_id: Some("4711".into()),
            email: Some(email.clone()),
            test: false,
            amount_minor: Some(4900),
            currency: Some("EUR".into()),
            data: serde_json::json!({ "order_id": "order-88", "product_id": "4711" }),
            status: memberspot_hub::store::EventStatus::Dead,
            connection: Some("sandbox".into()),
            verified: true,
        }])
        .await
        .expect("a dead event");
    let dead_id = dead[0].id().to_owned();
    c.goto(&format!("{base}/")).await.expect("overview");
    wait_h1(&c, "Overview").await;
    c.find(Locator::Css(&format!("a[href=\"/events/{dead_id}\"]")))
        .await
        .expect("the dead event under needs attention")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Event on_payment").await;
    check_page(&c, "event").await;
    shot(&c, "10c-event-dead").await;
    c.find(Locator::Css("main a.button"))
        .await
        .expect("replay link")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Replay on_payment?").await;
    check_page(&c, "replay").await;
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Events").await;
    check_page(&c, "events").await;
    let done = text_of(&c, Locator::Css(".notice")).await;
    assert!(done.contains("queued again"), "{done}");
    shot(&c, "10d-events-replayed").await;
    let replayed = t
        .hub
        .events_store()
        .get_event(&dead_id)
        .await
        .expect("event")
        .expect("stored");
    assert_ne!(replayed.status, memberspot_hub::store::EventStatus::Dead);
    c.goto(&format!("{base}/flows")).await.expect("flows");
    wait_h1(&c, "Flows").await;
    check_page(&c, "flows").await;
    shot(&c, "10e-flows").await;

    // Auf Deutsch: the switch keeps the page.
    c.goto(&format!("{base}/audit")).await.expect("audit");
    c.find(Locator::Css("a.lang"))
        .await
        .expect("switch")
        .click()
        .await
        .expect("click");
    wait_h1(&c, "Protokoll").await;
    assert_eq!(path(&c).await, "/audit");
    check_page(&c, "audit (German)").await;
    let table = text_of(&c, Locator::Css("table")).await;
    assert!(
        table.contains("abgelehnt") && !table.contains("denied"),
        "{table}"
    );
    shot(&c, "13-audit-de").await;
    c.goto(&format!("{base}/")).await.expect("overview");
    wait_h1(&c, "Übersicht").await;
    check_page(&c, "overview (German)").await;
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(&c, "Personas").await;
    check_page(&c, "personas (German)").await;

    // A phone-sized screen: the read-only pages still fit, and the header leaves most of
    // the screen to the page.
    c.set_window_size(390, 844).await.expect("resize");
    for (page, name) in [
        ("/audit", "14-audit-phone"),
        ("/events", "15-events-phone"),
        ("/", "16-overview-phone"),
        ("/members", "17-members-phone"),
        ("/personas", "17b-personas-phone"),
        ("/connections", "17c-connections-phone"),
        ("/flows", "17d-flows-phone"),
        ("/settings", "17e-settings-phone"),
    ] {
        c.goto(&format!("{base}{page}")).await.expect("page");
        h1(&c).await;
        // Wide tables scroll inside their own box; the page itself never sideways.
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{page} is wider than a phone"
        );
        let header = c
            .execute(
                "return document.querySelector('header.top').getBoundingClientRect().height \
                 / window.innerHeight;",
                vec![],
            )
            .await
            .expect("script");
        let share = header.as_f64().expect("a number");
        // The current page's entry is in view in the sideways navigation.
        let visible = c
            .execute(
                "const a = document.querySelector('header.top nav a[aria-current=page]'); \
                 if (!a) return true; const r = a.getBoundingClientRect(); \
                 return r.left >= 0 && r.right <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(
            visible,
            serde_json::json!(true),
            "{page}: the current entry is off screen"
        );
        assert!(
            share < 0.18,
            "the header takes {share:.2} of the screen on {page}"
        );
        shot(&c, name).await;
    }

    c.close().await.expect("close the browser");
    cancel.cancel();
    let _ = serving.await;
    t.close().await;
}

/// The whole app on a TCP port with the console (and whatever else `plugins` adds), and
/// a browser signed in as the owner `anna`.
struct Served {
    base: String,
    cancel: CancellationToken,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    browser: Client,
    _driver: Driver,
}

async fn serve_signed_in(
    t: &TestHub,
    console: ConsolePlugin,
    mut plugins: Vec<Box<dyn Plugin>>,
) -> Served {
    let (driver, driver_url) = start_driver().await;
    t.hub
        .add_console_user(
            "anna",
            &secrecy::SecretString::from(PASSWORD),
            memberspot_hub::console::ConsoleRole::Owner,
        )
        .await
        .expect("owner");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    plugins.push(Box::new(console));
    let app = App::build(t.hub.clone(), ServerSettings::default(), plugins);
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(app.serve(listener, cancel.clone()));
    let c = browser(&driver_url).await;
    c.goto(&format!("{base}/login")).await.expect("login page");
    wait_h1(&c, "Sign in").await;
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys(&format!(
            "anna{}{PASSWORD}{}",
            char::from(Key::Tab),
            char::from(Key::Enter)
        ))
        .await
        .expect("sign in");
    wait_h1(&c, "Overview").await;
    Served {
        base,
        cancel,
        serving,
        browser: c,
        _driver: driver,
    }
}

impl Served {
    async fn stop(self) {
        self.browser.close().await.expect("close the browser");
        self.cancel.cancel();
        let _ = self.serving.await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

const DS24_PASS: &str = "Mbr-IPN-passphrase-2026!";

/// A Digistore24 IPN signed with the passphrase, as the events tests build them.
fn ds24_purchase(order: &str, email: &str) -> String {
    let params = vec![
        ("event", "on_payment"),
        ("order_id", order),
        ("product_id", "4711"),
        ("transaction_id", "T-1"),
        ("buyer_email", email),
        ("buyer_first_name", "Lena"),
        ("buyer_last_name", "Käufer"),
        ("amount", "49.00"),
        ("currency", "EUR"),
        ("api_mode", "live"),
    ];
    let sign = memberspot_webhooks::digistore24::compute_sha_sign(params.clone(), DS24_PASS, false);
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    s.append_pair("sha_sign", &sign);
    s.finish()
}

async fn sandbox_faults(t: &TestHub, error_rate: f64) {
    let r = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", t.sandbox.root_url()))
        .header("X-API-KEY", t.sandbox.api_key())
        .json(&serde_json::json!({ "errorRate": error_rate }))
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success(), "faults: {}", r.status());
}

/// Waits until the event of `order` has `status` (the workers run in the app).
async fn event_of(
    t: &TestHub,
    order: &str,
    status: memberspot_hub::store::EventStatus,
) -> memberspot_hub::store::StoredEvent {
    let filter = memberspot_hub::store::EventFilter {
        order_id: Some(order.into()),
        ..Default::default()
    };
    let mut last = None;
    for _ in 0..200 {
        let list = t
            .hub
            .events_store()
            .list_events(&filter)
            .await
            .expect("events");
        if let Some(e) = list.into_iter().next() {
            if e.status == status {
                return e;
            }
            last = Some(e.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the event of order {order} did not become {status:?} (last {last:?})");
}

/// A signed Digistore24 purchase over HTTP → the workers grant it → the Overview counts
/// it; while the school fails, a second purchase goes dead → it shows under *needs
/// attention* → its dry run names the rule and the grant → replayed from the Events page
/// once the school is back → done, and the member holds the offer.
#[tokio::test]
async fn signed_purchase_to_replayed_dead_event_in_a_browser() {
    use memberspot_hub::store::EventStatus;
    let _one = ONE_BROWSER.lock().await;
    let t = TestHub::open(Backend::Sqlite).await;
    let offer = t.hub.offers_of("sandbox").await.expect("offers")[0].clone();
    let rules = format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"sandbox\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"4711\"\noffer = \"{}\"\n\n\
         [processing]\nmax_attempts = 1\n",
        offer.id
    );
    let config = memberspot_events::EventsConfig::parse(&rules, "rules.toml", None).expect("rules");
    let events = memberspot_events::Events::start(t.hub.clone(), config)
        .await
        .expect("events");
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_events(events.clone());
    let plugins: Vec<Box<dyn Plugin>> =
        vec![Box::new(memberspot_events::EventsPlugin::new(events, None))];
    let app = serve_signed_in(&t, console, plugins).await;
    let (c, base) = (&app.browser, app.base.clone());
    let http = reqwest::Client::new();
    let deliver = |order: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/hooks/ds24"));
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(ds24_purchase(order, "lena@example.com"))
                .send()
                .await
                .expect("delivery")
                .status()
        }
    };

    // The purchase is granted and counted on the overview.
    assert_eq!(deliver("DS-1001").await, 200);
    event_of(&t, "DS-1001", EventStatus::Done).await;
    c.goto(&format!("{base}/")).await.expect("overview");
    wait_h1(c, "Overview").await;
    let purchases = text_of(c, Locator::XPath("//table//tr[th[text()='Purchases']]")).await;
    assert!(purchases.starts_with("Purchases 1"), "{purchases}");
    check_page(c, "overview").await;
    shot(c, "20-overview-purchase").await;

    // The school fails while the next purchase arrives: one attempt, then dead.
    sandbox_faults(&t, 1.0).await;
    assert_eq!(deliver("DS-1002").await, 200);
    let dead = event_of(&t, "DS-1002", EventStatus::Dead).await;
    sandbox_faults(&t, 0.0).await;

    c.goto(&format!("{base}/")).await.expect("overview");
    wait_h1(c, "Overview").await;
    shot(c, "21-overview-dead-event").await;
    click(c, &format!("a[href=\"/events/{}\"]", dead.id)).await;
    wait_h1(c, "Event on_payment").await;
    check_page(c, "event").await;

    // The dry run: which rule, which call; nothing changes.
    click(c, &format!("a[href=\"/events/{}/dry-run\"]", dead.id)).await;
    wait_h1(c, "Dry run of on_payment").await;
    check_page(c, "dry run").await;
    let plan = text_of(c, Locator::Css("main")).await;
    assert!(
        plan.contains(&format!(
            "rule 1 (line 6): product 4711 → offer {}",
            offer.id
        )) && plan.contains("grant_user_offer_by_email")
            && plan.contains("DS-1002"),
        "{plan}"
    );
    shot(c, "22-event-dry-run").await;
    c.back().await.expect("back");
    wait_h1(c, "Event on_payment").await;

    // Replayed from the Events page, after its confirmation.
    click(c, &format!("a[href=\"/events/{}/replay\"]", dead.id)).await;
    wait_h1(c, "Replay on_payment?").await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Events").await;
    let done = text_of(c, Locator::Css(".notice")).await;
    assert!(done.contains("queued again"), "{done}");
    event_of(&t, "DS-1002", EventStatus::Done).await;
    c.refresh().await.expect("reload");
    wait_h1(c, "Events").await;
    // The receiver URL with its copy button, shown by the console's script.
    let copy = c
        .find(Locator::Css("button[data-copy=\"receiver-0\"]"))
        .await
        .expect("a copy button");
    assert!(copy.is_displayed().await.expect("shown"), "the script ran");
    let url = c
        .find(Locator::Id("receiver-0"))
        .await
        .expect("receiver URL")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(url.as_deref(), Some(format!("{base}/hooks/ds24").as_str()));
    check_page(c, "events").await;
    shot(c, "23-events-replayed").await;
    let history = t
        .hub
        .events_store()
        .event_log(&dead.id)
        .await
        .expect("history");
    assert!(history.iter().any(|h| h.worker == "console:anna"));
    // The event's page says what was decided: the worker's note of the grant.
    let decided = history
        .iter()
        .rev()
        .find(|h| h.outcome == "done")
        .expect("a done entry");
    c.goto(&format!("{base}/events/{}", dead.id))
        .await
        .expect("event page");
    wait_h1(c, "Event on_payment").await;
    let record = text_of(c, Locator::Css("dl.record")).await;
    assert!(
        record.contains("Decision") && record.contains(&decided.detail),
        "{record}"
    );
    let members = t
        .hub
        .call(
            &memberspot_hub::Principal::Operator {
                connection: "sandbox".into(),
            },
            &memberspot_hub::CallContext::new(memberspot_hub::Surface::Cli),
            "find_user_by_email",
            serde_json::json!({ "email": "lena@example.com" }),
        )
        .await
        .result
        .expect("the buyer is a member");
    let orders: Vec<&str> = members["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .filter_map(|h| h["orderId"].as_str())
        .collect();
    assert_eq!(
        orders,
        ["DS-1002"],
        "the replayed order holds the offer: {members}"
    );

    // The member's page: holdings, progress, and the owner's actions.
    c.goto(&format!("{base}/members?connection=sandbox&q=Lena"))
        .await
        .expect("members");
    wait_h1(c, "Members").await;
    click(c, "main table a").await;
    let mut on_member = false;
    for _ in 0..50 {
        if c.find(Locator::Css("form[action=\"/members/login-link\"]"))
            .await
            .is_ok()
        {
            on_member = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_member, "the member's page");
    check_page(c, "member").await;
    shot(c, "24-member-actions").await;
    click(c, "form[action=\"/members/login-link\"] button").await;
    wait_h1(c, "Login link for lena@example.com").await;
    check_page(c, "login link").await;
    let token = c
        .find(Locator::Id("login-token"))
        .await
        .expect("the token")
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    assert!(token.len() >= 16, "{token}");
    shot(c, "24b-login-link-once").await;

    // What uses the school: the rules source and the personas.
    c.goto(&format!("{base}/connections"))
        .await
        .expect("connections");
    wait_h1(c, "Connections").await;
    let row = text_of(c, Locator::XPath("//tr[td[text()='sandbox']]")).await;
    assert!(
        row.contains("rules source ds24 (1 rules)") && row.contains("hook-ds24"),
        "{row}"
    );
    shot(c, "27-connections-used-by").await;
    app.stop().await;
    t.close().await;
}

/// The Flows page: a dry run of a manual flow shows each step and its output; nothing is
/// recorded as a run of the owner.
#[tokio::test]
async fn flow_dry_run_in_a_browser() {
    let _one = ONE_BROWSER.lock().await;
    let t = TestHub::open(Backend::Sqlite).await;
    let file = "default_connection = \"sandbox\"\n\n\
        [[flows]]\nname = \"offers-report\"\npersona = \"reporter\"\ntrigger.manual = true\n\n\
        [[flows.steps]]\nname = \"offers\"\ntool = \"list_offers\"\n";
    let flows = memberspot_flows::Flows::start(
        t.hub.clone(),
        memberspot_flows::FlowsConfig::parse(file, "flows.toml", None).expect("flows"),
        memberspot_agent::config::ModelsConfig::default(),
    )
    .await
    .expect("flows");
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_flows(flows);
    let app = serve_signed_in(&t, console, Vec::new()).await;
    let (c, base) = (&app.browser, app.base.clone());
    c.goto(&format!("{base}/flows")).await.expect("flows");
    wait_h1(c, "Flows").await;
    check_page(c, "flows").await;
    shot(c, "25-flows").await;
    click(
        c,
        "form[action=\"/flows/offers-report/run\"] input[name=dry_run] ~ button",
    )
    .await;
    wait_h1(c, "Dry run of offers-report").await;
    check_page(c, "flow dry run").await;
    let steps = text_of(c, Locator::Css("main table")).await;
    let offer = &t.hub.offers_of("sandbox").await.expect("offers")[0];
    assert!(
        steps.contains("offers") && steps.contains("tool") && steps.contains(&offer.name),
        "{steps}"
    );
    shot(c, "26-flow-dry-run").await;
    let runs = t
        .hub
        .audit(&memberspot_hub::store::AuditFilter {
            tool: Some("admin.run_flow".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(runs.is_empty(), "a dry run is not a run");
    app.stop().await;
    t.close().await;
}

/// Signs in through the login form (the name field has the focus).
async fn sign_in(c: &Client, base: &str, name: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    wait_h1(c, "Sign in").await;
    let field = c.active_element().await.expect("focus");
    field
        .send_keys(&format!(
            "{name}{}{PASSWORD}{}",
            char::from(Key::Tab),
            char::from(Key::Enter)
        ))
        .await
        .expect("sign in");
    wait_h1(c, "Overview").await;
}

/// Posts a persona-creation form from the page itself (same origin, the session's cookie),
/// as a script planted in the page would: a form built in the page and submitted, with the
/// page's CSRF token when `with_csrf`. Answers the `h1` of the page that comes back.
async fn post_from_page(c: &Client, with_csrf: bool) -> String {
    let script = r#"
        const withCsrf = arguments[0];
        const field = document.querySelector('input[name=csrf]');
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/personas';
        const values = { csrf: withCsrf && field ? field.value : '', name: 'forged',
                         connection: 'sandbox', scope: 'all' };
        for (const [name, value] of Object.entries(values)) {
            const input = document.createElement('input');
            input.type = 'hidden';
            input.name = name;
            input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
    "#;
    let before = h1(c).await;
    c.execute(script, vec![serde_json::json!(with_csrf)])
        .await
        .expect("script");
    for _ in 0..100 {
        let now = h1(c).await;
        if now != before && now != "no h1 yet" {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no page came back after the post");
}

/// A viewer in a real browser: no page offers a form that changes something in the hub
/// (the posts are signing out and their own password), and a change posted from the viewer's own session, with the page's
/// valid CSRF token, is refused and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_forged_posts_are_refused_in_a_browser() {
    use memberspot_hub::console::ConsoleRole;
    use secrecy::SecretString;
    let _one = ONE_BROWSER.lock().await;
    let (_driver, driver_url) = start_driver().await;
    let t = TestHub::open(Backend::Sqlite).await;
    for (name, role) in [("vera", ConsoleRole::Viewer), ("anna", ConsoleRole::Owner)] {
        t.hub
            .add_console_user(name, &SecretString::from(PASSWORD), role)
            .await
            .expect("console user");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let plugins: Vec<Box<dyn Plugin>> = vec![Box::new(console)];
    let app = App::build(t.hub.clone(), ServerSettings::default(), plugins);
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(app.serve(listener, cancel.clone()));
    let base = format!("http://{addr}");

    // Something on every page, so that the forms an owner would see next to it (a
    // persona's change and revoke, a dead event's replay, a member's grant and revoke)
    // are there to be missing.
    t.hub
        .create_persona(memberspot_hub::admin::PersonaSpec {
            name: "helper".into(),
            scopes: vec!["read".into()],
            ..Default::default()
        })
        .await
        .expect("persona");
    let dead = t
        .hub
        .events_store()
        .insert_events(&[memberspot_hub::store::NewEvent {
            dedupe_key: "viewer:dead".into(),
            source: "ds24".into(),
            provider: "digistore24".into(),
            kind: "purchase".into(),
            name: "on_payment".into(),
            order_id: Some("DS-9".into()),
            product_id: Some("1".into()),
            email: Some("kim@example.com".into()),
            test: false,
            amount_minor: Some(1_000),
            currency: Some("EUR".into()),
            data: serde_json::json!({}),
            status: memberspot_hub::store::EventStatus::Dead,
            connection: Some("sandbox".into()),
            verified: true,
        }])
        .await
        .expect("event")[0]
        .id()
        .to_owned();
    let member = t
        .hub
        .call(
            &memberspot_hub::Principal::Operator {
                connection: "sandbox".into(),
            },
            &memberspot_hub::CallContext::new(memberspot_hub::Surface::Cli),
            "list_users",
            serde_json::json!({ "page_length": 1 }),
        )
        .await
        .result
        .expect("members")["users"][0]["email"]
        .as_str()
        .expect("an e-mail")
        .to_owned();
    let pages = [
        "/".to_owned(),
        "/members".to_owned(),
        format!("/members?connection=sandbox&email={member}"),
        "/personas".to_owned(),
        "/personas/helper".to_owned(),
        "/connections".to_owned(),
        "/audit".to_owned(),
        "/events".to_owned(),
        format!("/events/{dead}"),
        "/flows".to_owned(),
        "/chat".to_owned(),
        "/oauth".to_owned(),
        "/settings".to_owned(),
        "/settings/password".to_owned(),
    ];

    let c = browser(&driver_url).await;
    sign_in(&c, &base, "vera").await;
    for page in &pages {
        c.goto(&format!("{base}{page}")).await.expect("page");
        h1(&c).await;
        let forms = c
            .find_all(Locator::Css("form[method=post]"))
            .await
            .expect("forms");
        for f in forms {
            let action = f.attr("action").await.expect("action");
            // Signing out, and their own password: the one thing of theirs a viewer changes.
            assert!(
                matches!(
                    action.as_deref(),
                    Some("/logout" | "/logout-everywhere" | "/settings/password")
                ),
                "a viewer sees a form posting to {action:?} on {page}"
            );
        }
    }
    // The pages above had their content, not an empty state or an error.
    for (page, expected) in [
        (&pages[2], member.as_str()),
        (&pages[8], "DS-9"),
        (&pages[4], "helper"),
    ] {
        c.goto(&format!("{base}{page}")).await.expect("page");
        let main = text_of(&c, Locator::Css("main")).await;
        assert!(main.contains(expected), "{page}: {main}");
    }
    c.goto(&format!("{base}/personas")).await.expect("personas");
    shot(&c, "30-viewer-personas").await;
    assert_eq!(
        post_from_page(&c, true).await,
        "Refused",
        "a viewer's change is refused"
    );
    assert!(
        text_of(&c, Locator::Css("main"))
            .await
            .contains("Viewers cannot change anything"),
        "the page says why"
    );

    c.close().await.expect("close the browser");
    cancel.cancel();
    let _ = serving.await;
    t.close().await;
}

/// An owner's change posted from the page without its CSRF token is refused and creates
/// nothing; the same post with the token is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_token_is_refused_in_a_browser() {
    let _one = ONE_BROWSER.lock().await;
    let t = TestHub::open(Backend::Sqlite).await;
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let app = serve_signed_in(&t, console, Vec::new()).await;
    let (c, base) = (&app.browser, app.base.clone());
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(c, "Personas").await;
    assert_eq!(post_from_page(c, false).await, "Refused", "no CSRF token");
    assert!(
        text_of(c, Locator::Css("main"))
            .await
            .contains("without a valid security token"),
        "the page says why"
    );
    check_page(c, "refused").await;
    shot(c, "31-refused-without-token").await;
    assert!(
        t.hub.persona_any("forged").await.is_err(),
        "nothing created"
    );
    c.goto(&format!("{base}/personas")).await.expect("personas");
    let answer = post_from_page(c, true).await;
    assert_ne!(
        answer, "Refused",
        "the same post with the owner's token is accepted"
    );
    assert!(
        t.hub.persona_any("forged").await.is_ok(),
        "and creates the persona"
    );
    app.stop().await;
    t.close().await;
}

/// Signing out ends the session on the server: the old cookie, put back, signs nobody
/// in. Signing out everywhere ends the user's other sessions too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_in_a_browser() {
    let _one = ONE_BROWSER.lock().await;
    let t = TestHub::open(Backend::Sqlite).await;
    let console = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let app = serve_signed_in(&t, console, Vec::new()).await;
    let (c, base) = (&app.browser, app.base.clone());
    let session = c
        .get_named_cookie("msh_session")
        .await
        .expect("the session cookie");
    click(c, "form[action=\"/logout\"] button").await;
    wait_h1(c, "Sign in").await;
    assert!(
        text_of(c, Locator::Css("main"))
            .await
            .contains("You are signed out."),
        "the page says so"
    );
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(c, "Sign in").await;
    c.add_cookie(session).await.expect("the old cookie back");
    c.goto(&format!("{base}/personas")).await.expect("personas");
    wait_h1(c, "Sign in").await;
    assert_eq!(path(c).await, "/login", "the old cookie signs nobody in");

    // A second session (another device), then "sign out everywhere" in the browser.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = http
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("login page");
    let pre = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ");
    let page = login.text().await.expect("page");
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("csrf") + marker.len();
    let csrf = &page[at..at + page[at..].find('"').expect("end")];
    let signed = http
        .post(format!("{base}/login"))
        .header(reqwest::header::ORIGIN, &base)
        .header(reqwest::header::COOKIE, pre)
        .form(&[("csrf", csrf), ("name", "anna"), ("password", PASSWORD)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), reqwest::StatusCode::SEE_OTHER);
    let other = signed
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("msh_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session")
        .to_owned();
    let home = |cookie: String| {
        let http = http.clone();
        let url = format!("{base}/");
        async move {
            http.get(url)
                .header(reqwest::header::COOKIE, cookie)
                .send()
                .await
                .expect("overview")
                .status()
        }
    };
    assert_eq!(home(other.clone()).await, reqwest::StatusCode::OK);
    sign_in(c, &base, "anna").await;
    click(c, "form[action=\"/logout-everywhere\"] button").await;
    wait_h1(c, "Sign in").await;
    assert_eq!(
        home(other).await,
        reqwest::StatusCode::SEE_OTHER,
        "the other device is signed out too"
    );
    app.stop().await;
    t.close().await;
}
