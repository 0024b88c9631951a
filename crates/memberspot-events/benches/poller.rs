//! Poller cost on a large school: API calls per cycle, cycle time against the rate-limit
//! ideal, peak memory. The sandbox enforces the rate limit itself, so pacing mistakes
//! show up as 429 retries and a worse ratio. It runs in a child process (this binary
//! again), so the memory figures are the hub's and the poller's alone.
//!
//! `cargo bench -p memberspot-events --bench poller`; `POLLER_BENCH_USERS`,
//! `POLLER_BENCH_RATE` and `POLLER_BENCH_SHARE` override 20000 members, 4 req/s and 1.0.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use memberspot_events::poller::{CycleReport, Poller, PollerConfig};
use memberspot_hub::Hub;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use secrecy::SecretString;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` / `VmRSS` of this process in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn print_cycle(label: &str, r: &CycleReport, wall: f64, rate: f64, share: f64) {
    let ideal = r.api_calls as f64 / (rate * share);
    println!("{label}: members            {}", r.members);
    println!("{label}: api calls          {}", r.api_calls);
    println!("{label}: events             {}", r.events);
    println!("{label}: snapshot changes   {}", r.snapshot_changes);
    println!("{label}: cycle time         {wall:.2} s");
    println!("{label}: rate-limit ideal   {ideal:.2} s (calls / ({rate} req/s * {share}))");
    println!("{label}: ratio              {:.3}", wall / ideal);
}

/// Set in the child that serves the sandbox school.
const CHILD: &str = "POLLER_BENCH_SANDBOX_CHILD";

/// The child: serves the school, prints its root URL, stops when stdin closes.
async fn serve_sandbox(users: usize, rate: f64) {
    let sandbox = common::sandbox(users, rate).await;
    println!("{}", sandbox.root_url());
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .unwrap();
    let _ = sandbox.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users: usize = env_or("POLLER_BENCH_USERS", 20_000);
    let rate: f64 = env_or("POLLER_BENCH_RATE", 4.0);
    let share: f64 = env_or("POLLER_BENCH_SHARE", 1.0);
    if std::env::var_os(CHILD).is_some() {
        serve_sandbox(users, rate).await;
        return;
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut root = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut root)
        .unwrap();
    let base_url = format!("{}/v1", root.trim());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = Store::open(&url).await.unwrap();
    let hub = Hub::open(
        store,
        MasterKey::parse(common::TEST_MASTER_KEY).unwrap(),
        None,
    )
    .await
    .unwrap();
    hub.add_connection(
        "school",
        &base_url,
        &SecretString::from(common::SCHOOL_KEY.to_string()),
        rate,
    )
    .await
    .unwrap();
    hub.create_persona(PersonaSpec {
        name: "poller".into(),
        connection: Some("school".into()),
        scopes: vec!["read".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let poller = Poller::new(
        hub.clone(),
        PollerConfig {
            connection: Some("school".into()),
            rate_share: share,
            ..PollerConfig::default()
        },
    );
    println!(
        "poller bench: {users} members, rate limit {rate} req/s (sandbox and connection), share {share}"
    );
    println!("rss before polling  {:.1} MiB", status_mib("VmRSS:"));

    for label in ["baseline", "steady"] {
        let t = Instant::now();
        let r = poller.run_cycle().await.unwrap();
        print_cycle(label, &r, t.elapsed().as_secs_f64(), rate, share);
        println!("{label}: peak rss so far   {:.1} MiB", status_mib("VmHWM:"));
    }
    let stats = hub.client_for("school").await.unwrap().stats();
    println!(
        "http requests       {} (retries {}, 429 answers {})",
        stats.requests, stats.retries, stats.rate_limited
    );
    println!(
        "peak rss (VmHWM)    {:.1} MiB (hub and poller; the school runs in a child process)",
        status_mib("VmHWM:")
    );
    hub.close().await;
    drop(child.stdin.take());
    let _ = child.wait();
}
