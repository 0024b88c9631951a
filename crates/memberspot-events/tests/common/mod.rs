//! Shared harness: a sandbox school served over real HTTP and a hub on a fresh
//! SQLite file or a fresh PostgreSQL database.

#![allow(dead_code, clippy::unwrap_used)]

use memberspot_api::ApiKey;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use secrecy::SecretString;
use serde_json::Value;

/// A fixed master key (hex), so several hubs can open one database.
pub const TEST_MASTER_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

pub const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: `(url, name)`.
pub async fn fresh_pg() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("ev_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({admin}): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad MEMBERSPOT_TEST_PG"),
    };
    (url, name)
}

pub async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A sandbox school and a hub with a connection `school` to it.
pub struct World {
    pub sandbox: Sandbox,
    pub hub: Hub,
    pub db_url: String,
    pub dir: tempfile::TempDir,
    pub pg: Option<String>,
}

pub async fn sandbox(users: usize, rate_limit: f64) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 7,
        size: SeedSize {
            users,
            offers: 4,
            courses: 3,
        },
        rate_limit,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox")
}

/// Store URL for a backend: a file in `dir`, or a fresh PostgreSQL database.
pub async fn db_url(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("hub.db").display()), None),
        Backend::Postgres => {
            let (url, name) = fresh_pg().await;
            (url, Some(name))
        }
    }
}

/// Opens a hub on `url` with the connection `school` pointing at `sandbox`
/// (created once; later opens reuse it).
pub async fn open_hub(url: &str, key: &str, sandbox: &Sandbox) -> Hub {
    open_hub_paced(url, key, sandbox, 0.0).await
}

/// As [`open_hub`], the connection paced at `rate` requests per second (0: unpaced).
pub async fn open_hub_paced(url: &str, key: &str, sandbox: &Sandbox, rate: f64) -> Hub {
    let key = MasterKey::parse(key).expect("master key");
    let store = Store::open(url).await.expect("store");
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let hub = Hub::open(store, key, Some(embedded)).await.expect("hub");
    let connections = hub.list_connections().await.expect("connections");
    if !connections.iter().any(|c| c.name == "school") {
        hub.add_connection(
            "school",
            &sandbox.base_url(),
            &SecretString::from(SCHOOL_KEY.to_string()),
            rate,
        )
        .await
        .expect("connection");
    }
    hub
}

pub async fn world(backend: Backend, users: usize) -> World {
    let sandbox = sandbox(users, 0.0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (db_url, pg) = db_url(backend, dir.path()).await;
    let key = TEST_MASTER_KEY.to_string();
    let hub = open_hub(&db_url, &key, &sandbox).await;
    World {
        sandbox,
        hub,
        db_url,
        dir,
        pg,
    }
}

impl World {
    pub async fn close(self) {
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
        if let Some(name) = &self.pg {
            drop_pg(name).await;
        }
    }

    /// The sandbox's whole state (`/_sandbox/state`).
    pub async fn state(&self) -> Value {
        sandbox_get(&self.sandbox, "/_sandbox/state").await
    }
}

pub async fn sandbox_get(sandbox: &Sandbox, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .send()
        .await
        .expect("sandbox admin")
        .json()
        .await
        .expect("json")
}

/// The events subsystem of `hub`, configured by `rules` (TOML), served over real HTTP
/// (REST, MCP, receivers) on a loopback port. Workers run only when `workers` is set.
pub struct Served {
    pub events: memberspot_events::Events,
    pub base: String,
    pub cancel: tokio_util::sync::CancellationToken,
    pub handles: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn serve(
    hub: &Hub,
    rules: &str,
    clock: Option<memberspot_events::service::Clock>,
    workers: bool,
) -> Served {
    let config = memberspot_events::EventsConfig::parse(rules, "rules.toml", None)
        .unwrap_or_else(|e| panic!("rules: {e}"));
    let events = match clock {
        Some(c) => memberspot_events::Events::start_with_clock(hub.clone(), config, c).await,
        None => memberspot_events::Events::start(hub.clone(), config).await,
    }
    .expect("events");
    let cancel = tokio_util::sync::CancellationToken::new();
    // The routes as `serve` mounts them; the workers only when asked for.
    let plugin = memberspot_events::EventsPlugin::new(events.clone(), None);
    let app = memberspot_server::App::build(
        hub.clone(),
        memberspot_server::ServerSettings::default(),
        vec![Box::new(plugin)],
    )
    .router(&cancel);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = cancel.clone();
    let mut handles = vec![tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled_owned().await })
            .await;
    })];
    if workers {
        handles.extend(events.spawn(cancel.clone()));
    }
    Served {
        events,
        base: format!("http://{addr}"),
        cancel,
        handles,
    }
}

impl Served {
    pub async fn stop(self) {
        self.cancel.cancel();
        for h in self.handles {
            let _ = h.await;
        }
    }

    /// Waits until no event is pending, retrying or processing (at most `secs`).
    pub async fn drain(&self, secs: u64) {
        use memberspot_hub::store::{EventFilter, EventStatus};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let open = self
                .events
                .list(&EventFilter {
                    statuses: vec![
                        EventStatus::Pending,
                        EventStatus::Processing,
                        EventStatus::Retry,
                    ],
                    limit: Some(1),
                    ..Default::default()
                })
                .await
                .expect("list");
            if open.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events still open after {secs}s: {open:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Directory of the shared test vectors.
pub fn vectors_dir() -> std::path::PathBuf {
    let dir = match std::env::var_os("MEMBERSPOT_VECTORS_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        }
    };
    assert!(
        dir.is_dir(),
        "test vectors not found at {} — put shared/ beside the repository or set MEMBERSPOT_VECTORS_DIR",
        dir.display()
    );
    dir
}

pub fn vectors(file: &str) -> Vec<Value> {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path).expect("vector file");
    let v: Value = serde_json::from_str(&text).expect("vector JSON");
    v["vectors"].as_array().cloned().expect("vectors")
}

// ------------------------------------------------------------------ school and payments

pub const DS24_PASS: &str = "Mbr-IPN-passphrase-2026!";

pub async fn offers(w: &World) -> Vec<String> {
    w.state().await["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn succeeded(w: &World, route: &str) -> u64 {
    w.state().await["counters"]["succeeded"][route]
        .as_u64()
        .unwrap_or(0)
}

/// The member's holding of `offer`, from the sandbox's state.
pub async fn holding(w: &World, email: &str, offer: &str) -> Option<Value> {
    let state = w.state().await;
    let user = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"].as_str() == Some(email))?
        .clone();
    user["offers"]
        .as_array()?
        .iter()
        .find(|h| h["offerId"].as_str() == Some(offer))
        .cloned()
}

pub fn ds24_vector(name: &str) -> String {
    vectors("digistore24.json")
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap()["raw_body"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A Digistore24 IPN signed with the passphrase (19.00 EUR).
pub fn ds24(event: &str, order: &str, product: &str, tx: &str, email: &str) -> String {
    ds24_paid(event, order, product, tx, email, "19.00", "EUR")
}

/// A Digistore24 IPN for `amount` `currency`, signed with the passphrase.
pub fn ds24_paid(
    event: &str,
    order: &str,
    product: &str,
    tx: &str,
    email: &str,
    amount: &str,
    currency: &str,
) -> String {
    let params = vec![
        ("event", event),
        ("order_id", order),
        ("product_id", product),
        ("transaction_id", tx),
        ("buyer_email", email),
        ("buyer_first_name", "Test"),
        ("buyer_last_name", "Käufer"),
        ("amount", amount),
        ("currency", currency),
        ("api_mode", "live"),
    ];
    let sign = memberspot_webhooks::digistore24::compute_sha_sign(params.clone(), DS24_PASS, false);
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    s.append_pair("sha_sign", &sign);
    s.finish()
}

pub async fn post(base: &str, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
