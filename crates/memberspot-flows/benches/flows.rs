//! Flows benchmarks (figures, not assertions; recorded in docs/benchmarks.md):
//!
//! - `digest`: build time of the daily summary for a day with 100,000 events (SQLite),
//!   excluding any model call. Target: under 1 s.
//! - `sync`: 10,000 CSV rows into a sandbox school that allows 50 requests/s; time as a ratio
//!   to the rate-limit ideal (target within 1.1x) and peak memory (target under 100 MB).
//!
//! `cargo bench -p memberspot-flows --bench flows [-- digest|sync]`

use std::time::Instant;

use chrono::{NaiveDate, Utc};
use memberspot_agent::config::ModelsConfig;
use memberspot_flows::digest::{self, Names};
use memberspot_flows::{Flows, FlowsConfig};
use memberspot_hub::Hub;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{EventStatus, NewEvent, Store};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use serde_json::json;

const KEY: &str = "sk_bench_flows_key_0f3c";

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn bench_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .expect("store");
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");
    let date = NaiveDate::from_ymd_opt(2026, 11, 28).expect("date");
    let (start, end) = digest::day_window(date, tz);
    let span = (end - start).num_milliseconds();
    let kinds = [
        ("digistore24", "purchase"),
        ("stripe", "purchase"),
        ("digistore24", "recurring_payment"),
        ("stripe", "refund"),
        ("poller", "member_created"),
        ("poller", "offer_granted"),
        ("poller", "progress_changed"),
        ("poller", "course_completed"),
    ];
    const N: usize = 100_000;
    const BATCH: usize = 1000;
    let t = Instant::now();
    for b in 0..N / BATCH {
        let events: Vec<NewEvent> = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                let (provider, kind) = kinds[n % kinds.len()];
                NewEvent {
                    dedupe_key: format!("bench:{n}"),
                    source: if provider == "poller" {
                        "poll:school".into()
                    } else {
                        provider.into()
                    },
                    provider: provider.into(),
                    kind: kind.into(),
                    name: kind.into(),
                    order_id: Some(format!("o{n}")),
                    product_id: Some(format!("offer{}", n % 20)),
                    email: Some(format!("m{n}@example.de")),
                    test: n.is_multiple_of(50),
                    amount_minor: (provider != "poller").then_some(4700),
                    currency: (provider != "poller").then(|| "EUR".to_owned()),
                    data: json!({"n": n}),
                    status: if n.is_multiple_of(997) {
                        EventStatus::Dead
                    } else {
                        EventStatus::Done
                    },
                    connection: Some("school".into()),
                    verified: true,
                }
            })
            .collect();
        let at = start.timestamp_millis() + span * (b as i64) / ((N / BATCH) as i64);
        store
            .events()
            .insert_events_at(&events, at)
            .await
            .expect("insert");
    }
    println!(
        "digest: seeded {N} events in the day in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut purchases = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let d = digest::build(
            store.flows(),
            "school",
            date,
            tz,
            &Names::default(),
            Utc::now(),
        )
        .await
        .expect("digest");
        let _ = (d.to_text(), d.to_html(), d.to_slack_blocks());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        purchases = d.numbers.purchases;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "digest: build + render for {N} events: median {:.1} ms, max {:.1} ms over 5 runs (target < 1000 ms); {purchases} live purchases counted",
        times[2], times[4]
    );
    store.close().await;
}

async fn bench_sync() {
    // Overridable for quick looks (`MEMBERSPOT_BENCH_ROWS=500`); the recorded figure uses 10,000.
    let rows: usize = std::env::var("MEMBERSPOT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    const L: f64 = 50.0;
    // The school runs in a child process (this binary again), so the peak memory measured
    // here is the hub's and the sync's alone.
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let mut root = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut root,
    )
    .expect("root url");
    let root = root.trim().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .expect("store");
    let hub = Hub::open(store, MasterKey::generate(), None)
        .await
        .expect("hub");
    hub.add_connection(
        "school",
        &format!("{root}/v1"),
        &secrecy::SecretString::from(KEY.to_owned()),
        L,
    )
    .await
    .expect("connection");
    let state: serde_json::Value = reqwest::Client::new()
        .get(format!("{root}/_sandbox/state"))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let offer = state["offers"][0]["id"].as_str().expect("offer").to_owned();
    let mut csv = String::from("email,offer,first\n");
    for i in 0..rows {
        csv.push_str(&format!("seat{i}@firma.example,{offer},Seat{i}\n"));
    }
    std::fs::write(dir.path().join("seats.csv"), csv).expect("csv");
    let toml = "[[syncs]]\nname = \"seats\"\npersona = \"seat-sync\"\nconnection = \"school\"\nconcurrency = 32\nsource.csv = \"seats.csv\"\n\
                [syncs.map]\nemail = \"{{ row.email }}\"\noffer = \"{{ row.offer }}\"\nfirst_name = \"{{ row.first }}\"\n";
    let cfg = FlowsConfig::parse(toml, "flows.toml", Some(dir.path())).expect("flows");
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .expect("flows");
    let rss_before = peak_rss_mb();
    let t = Instant::now();
    let report = flows
        .run_sync("seats", false, &|_, _| {})
        .await
        .expect("sync");
    let secs = t.elapsed().as_secs_f64();
    let ideal = (report.api_calls as f64 - 1.0) / L;
    let counters: serde_json::Value = reqwest::Client::new()
        .get(format!("{root}/_sandbox/state"))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    println!(
        "sync: {rows} rows at L={L}: {} created, {} failed, {} API calls in {secs:.1}s; ideal {ideal:.1}s; time/ideal = {:.3} (target <= 1.1); 429s from the school: {}",
        report.created,
        report.failed,
        report.api_calls,
        secs / ideal,
        counters["counters"]["rateLimited"]
    );
    println!(
        "sync: peak RSS {:.1} MB (before the sync {rss_before:.1} MB; hub and sync; the school runs in a child process) (target < 100 MB)",
        peak_rss_mb()
    );
    let t = Instant::now();
    let again = flows
        .run_sync("seats", false, &|_, _| {})
        .await
        .expect("sync again");
    println!(
        "sync: second run: {} unchanged, {} created, {} API calls in {:.1}s",
        again.unchanged,
        again.created,
        again.api_calls,
        t.elapsed().as_secs_f64()
    );
    hub.close().await;
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Set in the child process that serves the school.
const CHILD: &str = "FLOWS_BENCH_SANDBOX_CHILD";

/// The child: serves a school allowing 50 requests/s, prints its root URL, stops when
/// stdin closes.
async fn serve_school() {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        seed: 9,
        size: SeedSize {
            users: 50,
            offers: 4,
            courses: 3,
        },
        rate_limit: 50.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox");
    println!("{}", sandbox.root_url());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
    let _ = sandbox.shutdown().await;
}

#[tokio::main]
async fn main() {
    if std::env::var_os(CHILD).is_some() {
        serve_school().await;
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    if want("digest") {
        bench_digest().await;
    }
    if want("sync") {
        bench_sync().await;
    }
}
