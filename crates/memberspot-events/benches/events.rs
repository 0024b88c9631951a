//! Events: what acknowledging a webhook costs, and how long a purchase takes to become
//! access in the school.
//!
//! Run: `cargo bench -p memberspot-events --bench events` (all parts), or some parts:
//! `-- ingest-sqlite`, `-- ingest-postgres`, `-- latency` (an argument selects the parts
//! whose name contains it, so `-- ingest` runs both ingest parts). PostgreSQL is
//! postgres://postgres@127.0.0.1:5432/postgres or MEMBERSPOT_TEST_PG; a fresh database is
//! created and dropped afterwards, and the part is skipped when the server is unreachable.
//!
//! - ingest: the hub with its receivers served over real HTTP on loopback, workers not
//!   running, so a delivery's round trip is verifying the Digistore24 signature, storing
//!   the delivery and its event in one transaction, and answering. 20 warm-up deliveries,
//!   then 500 distinct signed IPNs one after the other (time to acknowledge, measured by
//!   the client), then 4500 more from 32 tasks sharing one pooled client (deliveries
//!   acknowledged per second). Afterwards the store must hold exactly one event per
//!   acknowledged delivery.
//! - latency: a sandbox school enforcing Memberspot's 4 req/s, the hub's connection paced
//!   at 4 req/s, workers running. 200 purchases (distinct orders and e-mails) arrive as a
//!   burst from 32 tasks; the clock runs from the first delivery sent until the school's
//!   state shows all 200 grants. The rule has no `access_days`, so each purchase is exactly
//!   one API call (grant_user_offer_by_email). The client paces evenly (no burst), so N
//!   calls need (N-1)/L seconds at best, the interval convention of docs/benchmarks.md.
//!
//! Figures are printed, never asserted; only correctness (counts) fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memberspot_events::{Events, EventsConfig};
use memberspot_hub::Hub;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";
const DS24_PASS: &str = "Mbr-IPN-passphrase-2026!";
const PRODUCT: &str = "598765";
const GRANT: &str = "POST /v1/users/grant-user-offer-by-mail";

/// Ingest: warm-up, sequential and concurrent deliveries (all distinct orders).
const WARMUP: usize = 20;
const INGEST_TOTAL: usize = 5000;
const INGEST_SEQUENTIAL: usize = 500;
const CONCURRENCY: usize = 32;
/// Purchase-to-access: burst size and Memberspot's rate limit.
const PURCHASES: usize = 200;
const RATE: f64 = 4.0;
/// Give up waiting for the grants after this long (4x the ideal).
const GRANT_DEADLINE: Duration = Duration::from_secs(200);

fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: `(url, name)`, or `None` when the server is unreachable.
async fn fresh_pg() -> Option<(String, String)> {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("bench_events_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .ok()?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned())?;
    Some((format!("{base}/{name}"), name))
}

async fn drop_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

async fn sandbox(rate_limit: f64) -> Result<Sandbox, BoxError> {
    Ok(Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 7,
        size: SeedSize {
            users: 5,
            offers: 4,
            courses: 3,
        },
        rate_limit,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await?)
}

/// The sandbox's whole state (`/_sandbox/state`; admin routes are not rate limited).
async fn sandbox_state(http: &reqwest::Client, sandbox: &Sandbox) -> Result<Value, BoxError> {
    Ok(http
        .get(format!("{}/_sandbox/state", sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// A hub on `url` with the connection `school` to `sandbox`, paced at `rate` req/s.
async fn open_hub(url: &str, sandbox: &Sandbox, rate: f64) -> Result<Hub, BoxError> {
    let store = Store::open(url).await?;
    let hub = Hub::open(store, MasterKey::generate(), None).await?;
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &SecretString::from(SCHOOL_KEY.to_owned()),
        rate,
    )
    .await?;
    Ok(hub)
}

/// A Digistore24 source on `school` and one rule granting `offer` (no fixed term).
fn rules(offer: &str) -> String {
    format!(
        r#"
[sources.ds24]
provider = "digistore24"
secret = "{DS24_PASS}"
connection = "school"

[[rules]]
source = "ds24"
product = "{PRODUCT}"
offer = "{offer}"
"#
    )
}

/// A Digistore24 `on_payment` IPN signed with the passphrase.
fn ds24_payment(order: &str, email: &str) -> String {
    let params = [
        ("event", "on_payment"),
        ("order_id", order),
        ("product_id", PRODUCT),
        ("transaction_id", order),
        ("buyer_email", email),
        ("buyer_first_name", "Bench"),
        ("buyer_last_name", "Käufer"),
        ("amount", "19.00"),
        ("currency", "EUR"),
        ("api_mode", "live"),
    ];
    let sign = memberspot_webhooks::digistore24::compute_sha_sign(params, DS24_PASS, false);
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.append_pair("sha_sign", &sign);
    s.finish()
}

/// The events subsystem served over real HTTP on loopback, as `memberspot serve` does.
struct Served {
    events: Events,
    hooks_url: String,
    cancel: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

async fn serve(hub: &Hub, rules: &str, workers: bool) -> Result<Served, BoxError> {
    let config = EventsConfig::parse(rules, "rules.toml", None)?;
    let events = Events::start(hub.clone(), config).await?;
    let cancel = CancellationToken::new();
    let plugin = memberspot_events::EventsPlugin::new(events.clone(), None);
    let app = memberspot_server::App::build(
        hub.clone(),
        memberspot_server::ServerSettings::default(),
        vec![Box::new(plugin)],
    )
    .router(&cancel);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = cancel.clone();
    let mut handles = vec![tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled_owned().await })
            .await;
    })];
    if workers {
        handles.extend(events.spawn(cancel.clone()));
    }
    Ok(Served {
        events,
        hooks_url: format!("http://{addr}/hooks/ds24"),
        cancel,
        handles,
    })
}

impl Served {
    async fn stop(self) {
        self.cancel.cancel();
        for h in self.handles {
            let _ = h.await;
        }
    }

    /// Events in the store, by status.
    async fn counts(&self) -> Result<(i64, String), BoxError> {
        let counts = self
            .events
            .hub()
            .events_store()
            .event_status_counts()
            .await?;
        let mut by: Vec<_> = counts.iter().collect();
        by.sort();
        let text = by
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((counts.values().sum(), text))
    }
}

/// Posts one delivery; `Ok(true)` when acknowledged (Digistore24 expects 200 `OK`).
async fn deliver(http: &reqwest::Client, url: &str, body: &str) -> Result<bool, reqwest::Error> {
    let r = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await?;
    let ok = r.status() == reqwest::StatusCode::OK;
    Ok(ok && r.text().await? == "OK")
}

#[derive(Default)]
struct Sent {
    /// Round trips of the acknowledged deliveries.
    latencies: Vec<Duration>,
    failed: usize,
    first_failure: Option<String>,
    wall: Duration,
}

impl Sent {
    fn acknowledged(&self) -> usize {
        self.latencies.len()
    }

    /// Quantile of the round trips in ms (nearest rank).
    fn ms_at(&self, q: f64) -> f64 {
        let mut lat = self.latencies.clone();
        lat.sort();
        lat.get(((lat.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }

    fn per_sec(&self) -> f64 {
        self.acknowledged() as f64 / self.wall.as_secs_f64()
    }

    fn failures(&self) -> String {
        match &self.first_failure {
            Some(f) => format!("{} failed (first: {f})", self.failed),
            None => format!("{} failed", self.failed),
        }
    }
}

/// Sends every body once, from `concurrency` tasks sharing `http` (and its pool).
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<String>>,
    concurrency: usize,
) -> Result<Sent, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, url, bodies, next) =
            (http.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                match deliver(&http, &url, body).await {
                    Ok(true) => sent.latencies.push(t.elapsed()),
                    Ok(false) => {
                        sent.failed += 1;
                        sent.first_failure
                            .get_or_insert_with(|| "not 200 OK".into());
                    }
                    Err(e) => {
                        sent.failed += 1;
                        sent.first_failure.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            sent
        }));
    }
    let mut all = Sent::default();
    for t in tasks {
        let s = t.await?;
        all.latencies.extend(s.latencies);
        all.failed += s.failed;
        if all.first_failure.is_none() {
            all.first_failure = s.first_failure;
        }
    }
    all.wall = start.elapsed();
    Ok(all)
}

fn pooled_client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn first_offer(http: &reqwest::Client, sandbox: &Sandbox) -> Result<String, BoxError> {
    sandbox_state(http, sandbox).await?["offers"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the sandbox has no offers".into())
}

/// Webhook ingest on one store: acknowledging = verifying + persisting.
async fn ingest(label: &str, store_url: &str) -> Result<(), BoxError> {
    let sandbox = sandbox(0.0).await?;
    let http = pooled_client()?;
    let offer = first_offer(&http, &sandbox).await?;
    let hub = open_hub(store_url, &sandbox, 0.0).await?;
    let served = serve(&hub, &rules(&offer), false).await?;
    let bodies = |prefix: &str, range: std::ops::Range<usize>| -> Arc<Vec<String>> {
        Arc::new(
            range
                .map(|i| {
                    ds24_payment(
                        &format!("{prefix}-{i:05}"),
                        &format!("buyer{i}@{}.example.de", prefix.to_ascii_lowercase()),
                    )
                })
                .collect(),
        )
    };
    let warmup = bodies("WARM", 0..WARMUP);
    let sequential = bodies("INGEST", 0..INGEST_SEQUENTIAL);
    let concurrent = bodies("INGEST", INGEST_SEQUENTIAL..INGEST_TOTAL);

    let w = send_all(&http, &served.hooks_url, warmup, 1).await?;
    let s = send_all(&http, &served.hooks_url, sequential, 1).await?;
    println!(
        "ingest [{label}] c=1: {} deliveries, {} acknowledged, {}; time to acknowledge median {:.2} ms, p99 {:.2} ms ({:.0}/s)",
        INGEST_SEQUENTIAL,
        s.acknowledged(),
        s.failures(),
        s.ms_at(0.5),
        s.ms_at(0.99),
        s.per_sec()
    );
    let c = send_all(&http, &served.hooks_url, concurrent, CONCURRENCY).await?;
    println!(
        "ingest [{label}] c={CONCURRENCY}: {} deliveries, {} acknowledged, {} in {:.2} s: {:.0} deliveries/s acknowledged; round trip median {:.2} ms, p99 {:.2} ms",
        INGEST_TOTAL - INGEST_SEQUENTIAL,
        c.acknowledged(),
        c.failures(),
        c.wall.as_secs_f64(),
        c.per_sec(),
        c.ms_at(0.5),
        c.ms_at(0.99)
    );
    let acknowledged = w.acknowledged() + s.acknowledged() + c.acknowledged();
    let (stored, by_status) = served.counts().await?;
    let ok = stored == acknowledged as i64;
    println!(
        "ingest [{label}]: store holds {stored} events ({by_status}) for {acknowledged} acknowledged deliveries ({WARMUP} of them warm-up): {}",
        if ok { "ok" } else { "MISMATCH" }
    );
    served.stop().await;
    hub.close().await;
    sandbox.shutdown().await?;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "ingest [{label}]: {stored} events stored for {acknowledged} acknowledged deliveries"
        )
        .into())
    }
}

/// Purchase to access under Memberspot's rate limit, SQLite, workers running.
async fn latency() -> Result<(), BoxError> {
    let sandbox = sandbox(RATE).await?;
    let http = pooled_client()?;
    let offer = first_offer(&http, &sandbox).await?;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = open_hub(&url, &sandbox, RATE).await?;
    let served = serve(&hub, &rules(&offer), true).await?;
    let purchases: Vec<(String, String)> = (0..PURCHASES)
        .map(|i| (format!("BUY-{i:04}"), format!("buyer{i}@bench.example.de")))
        .collect();
    let bodies: Arc<Vec<String>> = Arc::new(
        purchases
            .iter()
            .map(|(order, email)| ds24_payment(order, email))
            .collect(),
    );
    let before = sandbox_state(&http, &sandbox).await?;
    let requests_before = before["counters"]["requests"].as_u64().unwrap_or(0);
    println!(
        "latency: {PURCHASES} purchases from {CONCURRENCY} tasks; school and connection at {RATE} req/s; SQLite, workers running (concurrency {})",
        served.events.config().processing.concurrency
    );

    let start = Instant::now();
    let sent = send_all(&http, &served.hooks_url, bodies, CONCURRENCY).await?;
    let all_acknowledged = start.elapsed();
    let (granted_at, state) = loop {
        let state = sandbox_state(&http, &sandbox).await?;
        let granted = state["counters"]["succeeded"][GRANT].as_u64().unwrap_or(0);
        if granted >= PURCHASES as u64 {
            break (start.elapsed(), state);
        }
        if start.elapsed() > GRANT_DEADLINE {
            return Err(format!(
                "latency: only {granted} of {PURCHASES} grants after {} s",
                GRANT_DEADLINE.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Correctness: every buyer holds the offer, active, under their order.
    let users = state["users"].as_array().cloned().unwrap_or_default();
    let holds = |email: &str, order: &str| {
        users
            .iter()
            .filter(|u| u["email"].as_str() == Some(email))
            .flat_map(|u| u["offers"].as_array().cloned().unwrap_or_default())
            .any(|h| {
                h["offerId"].as_str() == Some(offer.as_str())
                    && h["orderId"].as_str() == Some(order)
                    && h["active"].as_bool() == Some(true)
            })
    };
    let holdings = purchases.iter().filter(|(o, e)| holds(e, o)).count();
    let counters = &state["counters"];
    let grants = counters["succeeded"][GRANT].as_u64().unwrap_or(0);
    let requests = counters["requests"].as_u64().unwrap_or(0) - requests_before;
    let school_429 = counters["rateLimited"].as_u64().unwrap_or(0);
    let client = hub.client_for("school").await?.stats();
    // Let the workers record the last outcomes (not timed).
    let mut done = 0;
    for _ in 0..100 {
        let counts = served
            .events
            .hub()
            .events_store()
            .event_status_counts()
            .await?;
        done = counts.get("done").copied().unwrap_or(0);
        if done >= PURCHASES as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, by_status) = served.counts().await?;

    let ideal = (PURCHASES - 1) as f64 / RATE;
    let took = granted_at.as_secs_f64();
    println!(
        "latency: all {} acknowledged after {:.3} s ({}; median {:.1} ms, p99 {:.1} ms)",
        sent.acknowledged(),
        all_acknowledged.as_secs_f64(),
        sent.failures(),
        sent.ms_at(0.5),
        sent.ms_at(0.99)
    );
    println!(
        "latency: all {grants} granted after {took:.2} s from the first delivery sent (state polled every 50 ms)"
    );
    println!(
        "latency: rate-limit ideal {ideal:.2} s = ({PURCHASES} - 1) calls / {RATE} req/s (N/L = {:.2} s); time/ideal = {:.3}",
        PURCHASES as f64 / RATE,
        took / ideal
    );
    println!(
        "latency: school saw {requests} API requests, {school_429} answered 429; hub client sent {} requests ({} retries, {} 429 answers)",
        client.requests, client.retries, client.rate_limited
    );
    println!(
        "latency: {holdings}/{PURCHASES} buyers hold the offer, active, under their order; events: {by_status}"
    );
    served.stop().await;
    hub.close().await;
    sandbox.shutdown().await?;
    if holdings == PURCHASES && grants == PURCHASES as u64 && done == PURCHASES as i64 {
        Ok(())
    } else {
        Err(format!(
            "latency: {holdings} holdings, {grants} grants, {done} events done for {PURCHASES} purchases"
        )
        .into())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wants("ingest-sqlite") {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        ingest("SQLite", &url).await?;
    }
    if wants("ingest-postgres") {
        match fresh_pg().await {
            Some((url, name)) => {
                let result = ingest("PostgreSQL", &url).await;
                drop_pg(&name).await;
                result?;
            }
            None => println!(
                "ingest [PostgreSQL]: skipped, PostgreSQL not reachable (MEMBERSPOT_TEST_PG or postgres://postgres@127.0.0.1:5432/postgres)"
            ),
        }
    }
    if wants("latency") {
        latency().await?;
    }
    Ok(())
}
