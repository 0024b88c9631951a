//! Rate-limit efficiency and bulk-grant throughput against the sandbox.
//!
//! Run: `cargo bench -p memberspot-cli --bench rate_limit`
//! Prints one line per scenario; figures are recorded in docs/benchmarks.md.

use std::time::{Duration, Instant};

use memberspot_api::actions::ListOffers;
use memberspot_api::{ApiKey, Client, RetryPolicy};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_tools::Catalogue;
use memberspot_tools::bulk::{self, GrantRow, RowStatus};

const KEY: &str = "sk_bench_key_0000000000000000";

async fn sandbox(rps: f64, faults: Faults) -> Result<Sandbox, Box<dyn std::error::Error>> {
    let config = SandboxConfig {
        api_key: KEY.into(),
        seed: 1,
        size: SeedSize {
            users: 50,
            offers: 4,
            courses: 3,
        },
        rate_limit: rps,
        faults,
        state_file: None,
        shapes: Default::default(),
    };
    Ok(Sandbox::start_local(config).await?)
}

fn client(sb: &Sandbox, rps: f64, timeout: Duration) -> Result<Client, Box<dyn std::error::Error>> {
    Ok(Client::builder(sb.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(rps)
        .timeout(timeout)
        .retry(RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        })
        .build()?)
}

/// N calls through one client shared by 8 tasks against a sandbox enforcing L rps.
async fn rate_limit_efficiency(limit: f64, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let sb = sandbox(limit, Faults::default()).await?;
    let c = client(&sb, limit, Duration::from_secs(10))?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut ok = 0usize;
                for _ in (t..n).step_by(8) {
                    if c.execute(&ListOffers).await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = c.stats();
    // n calls paced at L rps take (n - 1) / L seconds at best: the first goes at once.
    let achieved = (n as f64 - 1.0) / elapsed;
    println!(
        "rate-limit L={limit} N={n}: {ok}/{n} succeeded in {elapsed:.2}s, achieved {achieved:.2} rps, achieved/L = {:.3}, 429s = {} ({:.2}% of calls)",
        achieved / limit,
        stats.rate_limited,
        100.0 * stats.rate_limited as f64 / n as f64
    );
    sb.shutdown().await?;
    Ok(())
}

/// 1000 CSV rows granted at L=50 with 10% 5xx and 5% timeouts injected.
async fn bulk_grant_with_faults() -> Result<(), Box<dyn std::error::Error>> {
    let limit = 50.0;
    let rows_n = 1000;
    let faults = Faults {
        error_rate: 0.10,
        timeout_rate: 0.05,
        timeout_ms: 3_000,
        seed: Some(9),
        ..Faults::default()
    };
    let sb = sandbox(limit, faults).await?;
    let c = client(&sb, limit, Duration::from_millis(500))?;
    let offer = c
        .execute(&ListOffers)
        .await?
        .0
        .first()
        .map(|o| o.id.clone())
        .ok_or("no offer")?;
    let rows: Vec<GrantRow> = (0..rows_n)
        .map(|i| GrantRow {
            line: i as u64 + 2,
            email: format!("bench{i}@example.com"),
            first_name: Some(format!("B{i}")),
            last_name: None,
            offer_id: offer.clone(),
            order_id: Some(format!("ORD-{i}")),
        })
        .collect();
    let catalogue = Catalogue::standard();
    let before = c.stats();
    let start = Instant::now();
    let outcomes = bulk::run_grants(
        rows,
        32,
        false,
        |row| {
            let (catalogue, c) = (&catalogue, &c);
            async move {
                catalogue
                    .call(c, "grant_user_offer_by_email", row.to_args())
                    .await
                    .map_err(Into::into)
            }
        },
        |_| {},
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o.status, RowStatus::Granted { .. }))
        .count();
    let stats = c.stats();
    // Count what the school actually holds, not what the client believes.
    let state: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sb.root_url()))
        .header("X-API-KEY", KEY)
        .send()
        .await?
        .json()
        .await?;
    let applied = state["users"]
        .as_array()
        .map(|us| {
            us.iter()
                .filter(|u| u["email"].as_str().is_some_and(|e| e.starts_with("bench")))
                .filter(|u| {
                    u["offers"]
                        .as_array()
                        .is_some_and(|hs| hs.iter().any(|h| h["offerId"] == offer.as_str()))
                })
                .count()
        })
        .unwrap_or(0);
    let ideal = rows_n as f64 / limit;
    println!(
        "bulk CSV grant 1000 rows, 10% 5xx + 5% timeouts, L={limit}: {granted}/{rows_n} reported granted, {applied}/{rows_n} applied in the school, {elapsed:.2}s, ideal {ideal:.1}s, time/ideal = {:.3} ({} requests, {} retries, {} 5xx, {} timeouts, {} 429s)",
        elapsed / ideal,
        stats.requests - before.requests,
        stats.retries - before.retries,
        stats.server_errors - before.server_errors,
        stats.timeouts - before.timeouts,
        stats.rate_limited - before.rate_limited
    );
    sb.shutdown().await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; anything else narrows the run.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if wants("rate-limit-4") {
            rate_limit_efficiency(4.0, 40).await?;
        }
        if wants("rate-limit-50") {
            rate_limit_efficiency(50.0, 1000).await?;
        }
        if wants("bulk") {
            bulk_grant_with_faults().await?;
        }
        Ok(())
    })
}
