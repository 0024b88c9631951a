//! The whole app in process, as `memberspot serve` assembles it — the gateway, events,
//! flows and chat as plug-ins of the server crate's `App` — on loopback ports 0:
//! webhooks are acknowledged and applied, every route family answers, and `serve`
//! returns with its tasks stopped. Two apps on one PostgreSQL database share the event
//! queue (nothing processed twice, no refunded buyer left with access) and send each
//! scheduled summary once. (Crash safety under SIGKILL needs processes: events_cli.rs.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use memberspot_agent::{AgentState, ModelsConfig};
use memberspot_api::ApiKey;
use memberspot_events::{Events, EventsConfig, EventsPlugin};
use memberspot_flows::{Flows, FlowsConfig, FlowsPlugin};
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, Plugin, ServerSettings};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SCHOOL_KEY: &str = "sk_live_app_school_key_6b2e8d4f0a1c";
const MASTER_KEY: &str = "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f";
const PASS: &str = "in-process-passphrase";
const GRANT: &str = "POST /v1/users/grant-user-offer-by-mail";

async fn sandbox(seed: u64, rate_limit: f64) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed,
        size: SeedSize {
            users: 3,
            offers: 2,
            courses: 2,
        },
        rate_limit,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .unwrap()
}

fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: `(url, name)`.
async fn fresh_pg(prefix: &str) -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({admin}): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    (
        format!("{}/{name}", admin.rsplit_once('/').unwrap().0),
        name,
    )
}

async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A hub on `url` (one per instance; instances on one database share the master key).
async fn hub(url: &str, sb: &Sandbox) -> Hub {
    let embedded = EmbeddedSandbox {
        base_url: sb.base_url(),
        api_key: ApiKey::new(sb.api_key()),
    };
    Hub::open(
        Store::open(url).await.unwrap(),
        MasterKey::parse(MASTER_KEY).unwrap(),
        Some(embedded),
    )
    .await
    .unwrap()
}

/// The `school` connection (paced at `rps`) and an admin token, once per database.
async fn set_up(hub: &Hub, sb: &Sandbox, rps: f64) -> String {
    hub.add_connection(
        "school",
        &sb.base_url(),
        &SecretString::from(SCHOOL_KEY.to_string()),
        rps,
    )
    .await
    .unwrap();
    hub.issue_admin_token()
        .await
        .unwrap()
        .expose_secret()
        .into()
}

/// Digistore24 purchases of product 1 grant the school's first offer.
async fn rules(sb: &Sandbox) -> String {
    let offer = common::sandbox_state(sb).await["offers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{PASS}\"\nconnection = \"school\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"1\"\noffer = \"{offer}\"\n\n\
         [processing]\nlease_secs = 3\nbase_backoff_secs = 0.2\n"
    )
}

/// One running app.
struct Instance {
    base: String,
    summary: Vec<String>,
    worker: String,
    cancel: CancellationToken,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The app `serve` builds: events from `rules`, flows from `flows`, chat; on port 0.
async fn start(hub: &Hub, rules: &str, flows: &str) -> Instance {
    let events = Events::start(
        hub.clone(),
        EventsConfig::parse(rules, "rules.toml", None).unwrap(),
    )
    .await
    .unwrap();
    let worker = events.worker_id().to_owned();
    let flows = Flows::start(
        hub.clone(),
        FlowsConfig::parse(flows, "flows.toml", None).unwrap(),
        ModelsConfig::default(),
    )
    .await
    .unwrap();
    let plugins: Vec<Box<dyn Plugin>> = vec![
        Box::new(EventsPlugin::new(events, Some("rules.toml".into()))),
        Box::new(FlowsPlugin::new(flows, Some("flows.toml".into()))),
        Box::new(AgentState::new(hub.clone(), ModelsConfig::default())),
    ];
    let app = App::build(hub.clone(), ServerSettings::default(), plugins);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    Instance {
        base: format!("http://{addr}"),
        summary: app.summary(addr),
        worker,
        cancel: cancel.clone(),
        serving: tokio::spawn(app.serve(listener, cancel)),
    }
}

impl Instance {
    /// Stops the app as a signal would; returns once its connections and tasks are done.
    async fn stop(&mut self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), &mut self.serving)
            .await
            .expect("serve returns after the cancellation")
            .unwrap()
            .unwrap();
    }

    async fn admin_get(&self, admin: &str, path: &str) -> Value {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }
}

/// Posts `body` to an app's Digistore24 receiver and expects the acknowledgement.
async fn deliver(app: &Instance, body: String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/ds24", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "OK");
}

/// Waits until `n` events are stored and every one is done, through `/v1/events`.
async fn wait_done(app: &Instance, admin: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = app.admin_get(admin, "/v1/events?limit=10000").await["events"].clone();
        let list = list.as_array().unwrap().clone();
        if list.len() == n && list.iter().all(|e| e["status"] == "done") {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "not all done: {} events, open: {:?}",
            list.len(),
            list.iter()
                .filter(|e| e["status"] != "done")
                .map(|e| e["status"].clone())
                .collect::<Vec<_>>()
        );
        // The workers run in this process; the list is read again shortly.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_app_serves_every_surface_in_process_and_stops_cleanly() {
    let sb = sandbox(21, 0.0).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sb,
    )
    .await;
    let admin = set_up(&hub, &sb, 0.0).await;
    let flows = "[[flows]]\nname = \"offers\"\nconnection = \"school\"\ntrigger.manual = true\n\n\
                 [[flows.steps]]\nname = \"list\"\ntool = \"list_offers\"\n";
    let app = start(&hub, &rules(&sb).await, flows).await;

    let addr = app.base.trim_start_matches("http://");
    assert_eq!(
        app.summary[0],
        format!("memberspot hub listening on http://{addr}")
    );
    assert!(
        app.summary
            .iter()
            .any(|l| l.contains("1 source(s), 1 rule(s) from rules.toml")),
        "{:?}",
        app.summary
    );
    assert!(
        app.summary.contains(&format!(
            "          POST http://{addr}/hooks/ds24  (digistore24)"
        )),
        "{:?}",
        app.summary
    );
    assert!(
        app.summary
            .iter()
            .any(|l| l.starts_with("  flows   1 flow(s) from flows.toml")),
        "{:?}",
        app.summary
    );
    // Each item's school is printed with the summary.
    for line in [
        "          source `ds24` acts on `school`",
        "          flow `offers` acts on `school`",
    ] {
        assert!(
            app.summary.iter().any(|l| l == line),
            "{line}: {:?}",
            app.summary
        );
    }

    // One OpenAPI document for the gateway and every plug-in.
    let doc = app.admin_get(&admin, "/openapi.json").await;
    for path in [
        "/v1/tools",
        "/v1/personas",
        "/v1/events",
        "/v1/flows",
        "/v1/personas/{name}/chat",
        "/healthz",
        "/hooks/{source}",
        "/v1/tools/grant_user_offer_by_email/call",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = reqwest::get(format!("{}{path}", app.base))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }

    // A webhook: acknowledged once stored, then applied by the events worker.
    deliver(&app, common::ipn(PASS, "on_payment", 1)).await;
    let events = wait_done(&app, &admin, 1).await;
    assert_eq!(events[0]["kind"], "purchase");
    let state = common::sandbox_state(&sb).await;
    assert_eq!(state["counters"]["succeeded"][GRANT].as_u64(), Some(1));

    // A flow run over REST, as the flow's persona, through the gateway.
    let run: Value = reqwest::Client::new()
        .post(format!("{}/v1/flows/offers/run", app.base))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "ok", "{run}");

    let base = app.base.clone();
    let mut app = app;
    app.stop().await;
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "nothing answers once serve returned"
    );
    hub.close().await;
    let _ = sb.shutdown().await;
}

/// Two apps on one fresh PostgreSQL database, acting on one school (`seed`, `rps`).
struct Pair {
    a1: Instance,
    a2: Instance,
    h1: Hub,
    h2: Hub,
    sb: Sandbox,
    admin: String,
    db: String,
}

/// A [`Pair`] whose apps run the rules of [`rules`] if `events`, and `flows`.
async fn pair(seed: u64, rps: f64, events: bool, flows: &str) -> Pair {
    let (url, db) = fresh_pg("pair").await;
    let sb = sandbox(seed, rps).await;
    let (h1, h2) = (hub(&url, &sb).await, hub(&url, &sb).await);
    let admin = set_up(&h1, &sb, rps).await;
    let rules = if events {
        rules(&sb).await
    } else {
        String::new()
    };
    let a1 = start(&h1, &rules, flows).await;
    let a2 = start(&h2, &rules, flows).await;
    Pair {
        a1,
        a2,
        h1,
        h2,
        sb,
        admin,
        db,
    }
}

impl Pair {
    async fn stop_apps(&mut self) {
        self.a1.stop().await;
        self.a2.stop().await;
    }

    /// After [`Pair::stop_apps`]: closes the hubs, the school and the database.
    async fn close(self) {
        self.h1.close().await;
        self.h2.close().await;
        let _ = self.sb.shutdown().await;
        drop_pg(&self.db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_on_one_postgres_share_the_queue() {
    const N: usize = 200;
    let mut p = pair(11, 0.0, true, "").await;
    let (a1, a2, admin) = (&p.a1, &p.a2, p.admin.as_str());
    {
        use futures::StreamExt;
        // Every delivery goes to both apps: both store it, one processes it.
        futures::stream::iter(0..N)
            .for_each_concurrent(8, |i| async move {
                deliver(a1, common::ipn(PASS, "on_payment", i)).await;
                deliver(a2, common::ipn(PASS, "on_payment", i)).await;
            })
            .await;
    }
    let events = wait_done(a1, admin, N).await;
    assert!(
        events.iter().all(|e| e["redeliveries"] == 1),
        "each stored once, seen twice"
    );
    let state = common::sandbox_state(&p.sb).await;
    assert_eq!(
        state["counters"]["succeeded"][GRANT].as_u64(),
        Some(N as u64),
        "each purchase granted exactly once"
    );
    // Both instances took part.
    let mut workers = std::collections::BTreeSet::new();
    for e in events.iter().take(50) {
        let id = e["id"].as_str().unwrap();
        let detail = a1.admin_get(admin, &format!("/v1/events/{id}")).await;
        for h in detail["history"].as_array().unwrap() {
            // `WORKER_ID#ATTEMPT`: the instance is the part before `#`.
            let worker = h["worker"].as_str().unwrap();
            workers.insert(worker.split('#').next().unwrap().to_owned());
        }
    }
    let expected: std::collections::BTreeSet<String> =
        [a1.worker.clone(), a2.worker.clone()].into();
    assert_eq!(workers, expected, "both apps processed events");
    p.stop_apps().await;
    p.close().await;
}

/// A school at Memberspot's 4 requests per second: 40 purchases, each followed at once by
/// its refund on the other app. No refunded buyer keeps access, whichever app decides
/// which event first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_never_leave_a_refunded_buyer_with_access() {
    const PAIRS: usize = 40;
    let mut p = pair(12, 4.0, true, "").await;
    for i in 0..PAIRS {
        let (buy, refund) = if i % 2 == 0 {
            (&p.a1, &p.a2)
        } else {
            (&p.a2, &p.a1)
        };
        deliver(buy, common::ipn(PASS, "on_payment", i)).await;
        deliver(refund, common::ipn(PASS, "on_refund", i)).await;
    }
    let events = wait_done(&p.a1, &p.admin, 2 * PAIRS).await;
    assert_eq!(events.len(), 2 * PAIRS);
    let state = common::sandbox_state(&p.sb).await;
    let offer = state["offers"][0]["id"].as_str().unwrap();
    let with_access: Vec<String> = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| {
            u["offers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["offerId"] == offer && h["active"] == true)
        })
        .filter_map(|u| u["email"].as_str().map(str::to_owned))
        .filter(|e| e.starts_with("buyer"))
        .collect();
    let grants = state["counters"]["succeeded"][GRANT].as_u64().unwrap_or(0);
    let revokes = state["counters"]["succeeded"]["POST /v1/users/set-order-state"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        with_access.is_empty(),
        "refunded buyers with access: {with_access:?}"
    );
    assert_eq!(grants, revokes, "every grant was revoked again");
    p.stop_apps().await;
    p.close().await;
}

/// Every minute, and a missed fire is caught up on start: both apps start by trying to
/// send this minute's summary; exactly one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_on_one_postgres_send_each_scheduled_summary_once() {
    let (slack, seen) = common::slack_stand_in().await;
    let flows = format!(
        "default_connection = \"school\"\n\n[digest]\ncron = \"* * * * *\"\nmissed = \"catch_up\"\n\n[delivery.slack]\nwebhook_url = \"{slack}\"\n"
    );
    let mut p = pair(13, 0.0, false, &flows).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = p.a1.admin_get(&p.admin, "/v1/flows/runs?flow=digest").await["runs"].clone();
        let runs = runs.as_array().unwrap();
        if !runs.is_empty() && runs.iter().all(|r| r["status"] != "running") {
            break;
        }
        assert!(Instant::now() < deadline, "no finished run: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopping waits for both schedulers, which try the start-up fire before they look at
    // the cancellation: once both returned, both have tried it.
    p.stop_apps().await;
    let runs =
        p.h1.flows_store()
            .list_runs(Some("digest"), 100)
            .await
            .unwrap();
    let runs = serde_json::to_value(runs).unwrap();
    let runs = runs.as_array().unwrap();
    let keys: std::collections::BTreeSet<&str> =
        runs.iter().filter_map(|r| r["fire_key"].as_str()).collect();
    assert_eq!(keys.len(), runs.len(), "each fire recorded once: {runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "ok"), "{runs:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        runs.len(),
        "one Slack message per fire"
    );
    p.close().await;
}
