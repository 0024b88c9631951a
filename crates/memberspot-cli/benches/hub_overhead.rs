//! What the hub adds to a tool call, and what `memberspot serve` costs idle.
//!
//! Run: `cargo bench -p memberspot-cli --bench hub_overhead [-- PART [PATHS]]`
//! (PART: sqlite, postgres, remote or rss; PATHS: e.g. `relay,REST`.)
//! (PostgreSQL on localhost is used when reachable; MEMBERSPOT_TEST_PG overrides.)
//!
//! Every figure compares paths measured in the same run, at concurrency 1 and
//! 32: a direct client call to the sandbox (the reference); a bare relay (an
//! HTTP endpoint making the same client call, nothing else: the floor of any
//! gateway); the same tool through the hub's REST API, through MCP over
//! streamable HTTP with the official SDK's client, and through MCP from a plain
//! HTTP client (the hub's MCP endpoint without the client library's cost). The
//! hub audits every call. Paths are measured in interleaved rounds and the
//! median round is reported.
//!
//! The `remote` part repeats the throughput comparison against a sandbox that
//! answers after 20 ms, about what a school's API takes over the internet, at
//! concurrency 32 and 256 (SQLite store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use memberspot_api::actions::ListOffers;
use memberspot_api::{ApiKey, Client};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

// The same allocator as the `memberspot` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// One measured path: makes one tool call.
type CallFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
const KEY: &str = "sk_bench_hub_key_000000000000";

#[derive(Clone, Copy)]
struct Stats {
    median_ms: f64,
    p99_ms: f64,
    per_sec: f64,
    /// CPU time of this process (load, hub and sandbox; not PostgreSQL's) per call.
    cpu_us: f64,
}

/// User plus system CPU time of this process so far, from `/proc/self/stat`
/// (clock ticks of 10 ms; a phase takes long enough for that to be fine).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Rounds of measurements per concurrency level.
const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stats(mut lat: Vec<Duration>, wall: Duration, cpu: Duration) -> Stats {
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    Stats {
        median_ms: at(0.5),
        p99_ms: at(0.99),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / lat.len() as f64,
    }
}

/// Runs `total` calls of `f` with `concurrency` workers; returns latency stats.
async fn measure(total: usize, concurrency: usize, f: CallFn) -> Result<Stats, BoxError> {
    // Warm-up: connections, caches, prepared statements.
    for _ in 0..20 {
        f().await?;
    }
    let start = Instant::now();
    let cpu_start = process_cpu();
    let per = total / concurrency;
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                f().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for h in handles {
        all.extend(h.await??);
    }
    let cpu = match (cpu_start, process_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    Ok(stats(all, start.elapsed(), cpu))
}

async fn pg_url() -> Option<(String, String)> {
    use sqlx::Connection;
    let admin = std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string())?;
    Some((format!("{base}/{name}"), name))
}

/// Concurrency levels with the number of calls measured at each.
const LOCAL_PLAN: &[(usize, usize)] = &[(1, 1000), (32, 3200)];
/// Against a 20 ms upstream: enough calls for each level to run about a second.
const REMOTE_PLAN: &[(usize, usize)] = &[(32, 1600), (256, 9600)];
/// The added latency of the `remote` part's sandbox.
const REMOTE_LATENCY_MS: u64 = 20;

async fn overhead(
    label: &str,
    store_url: &str,
    sandbox: &Sandbox,
    only: Option<&str>,
    plan: &[(usize, usize)],
) -> Result<(), BoxError> {
    let store = Store::open(store_url).await?;
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let hub = Hub::open(store, MasterKey::generate(), Some(embedded)).await?;
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &SecretString::from(KEY.to_string()),
        0.0,
    )
    .await?;
    let persona = hub
        .create_persona(PersonaSpec {
            name: "bench".into(),
            connection: Some("school".into()),
            ..Default::default()
        })
        .await?;
    let token = persona.token.expose_secret().to_string();
    let cancel = CancellationToken::new();
    let app = memberspot_server::App::build(
        hub.clone(),
        memberspot_server::ServerSettings::default(),
        Vec::new(),
    )
    .router(&cancel);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(low_latency(listener), app)
            .with_graceful_shutdown(async move { stop.cancelled_owned().await })
            .await;
    });

    let direct = Client::builder(sandbox.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(0.0)
        .build()?;
    let http = reqwest::Client::new();
    let relay = start_relay(direct.clone(), cancel.clone()).await?;
    let mcp = Arc::new(
        ().serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
                .auth_header(token.clone()),
        ))
        .await?,
    );

    let raw_mcp = Arc::new(RawMcp::connect(&http, &base, &token).await?);

    // Paths, in the order each round measures them; the first is the reference.
    let mut paths: Vec<(&str, CallFn)> = Vec::new();
    let c = direct.clone();
    paths.push((
        "direct",
        Arc::new(move || {
            let c = c.clone();
            Box::pin(async move {
                c.execute(&ListOffers).await?;
                Ok(())
            })
        }),
    ));
    let (h, u) = (http.clone(), relay.clone());
    paths.push((
        "relay",
        Arc::new(move || {
            let (h, u) = (h.clone(), u.clone());
            Box::pin(async move {
                let resp = h.post(&u).json(&serde_json::json!({})).send().await?;
                if !resp.status().is_success() {
                    return Err(format!("relay status {}", resp.status()).into());
                }
                resp.bytes().await?;
                Ok(())
            })
        }),
    ));
    let (h, b, t) = (http.clone(), base.clone(), token.clone());
    paths.push((
        "REST",
        Arc::new(move || {
            let (h, b, t) = (h.clone(), b.clone(), t.clone());
            Box::pin(async move {
                let resp = h
                    .post(format!("{b}/v1/tools/list_offers/call"))
                    .bearer_auth(&t)
                    .json(&serde_json::json!({"arguments": {}}))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    return Err(format!("REST status {}", resp.status()).into());
                }
                resp.bytes().await?;
                Ok(())
            })
        }),
    ));
    let m = mcp.clone();
    paths.push((
        "MCP",
        Arc::new(move || {
            let m = m.clone();
            Box::pin(async move {
                let res = m
                    .call_tool(CallToolRequestParams::new("list_offers"))
                    .await?;
                if res.is_error == Some(true) {
                    return Err("MCP tool error".into());
                }
                Ok(())
            })
        }),
    ));
    let raw = raw_mcp.clone();
    paths.push((
        "MCP-plain",
        Arc::new(move || {
            let raw = raw.clone();
            Box::pin(async move { raw.call_list_offers().await })
        }),
    ));
    // The reference is always measured; the others as selected.
    paths.retain(|(name, _)| {
        *name == "direct" || only.is_none_or(|o| o.split(',').any(|p| p.eq_ignore_ascii_case(name)))
    });

    for &(concurrency, total) in plan {
        // Every round measures every path once, so a slow phase of the machine hits all
        // of them; differences and ratios are taken within a round, and the median round
        // is reported.
        let mut rounds: Vec<Vec<Stats>> = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let mut round = Vec::with_capacity(paths.len());
            for (_, call) in &paths {
                round.push(measure(total, concurrency, call.clone()).await?);
            }
            rounds.push(round);
        }
        for (i, (path, _)) in paths.iter().enumerate() {
            let of = |f: &dyn Fn(&[Stats]) -> f64| median(rounds.iter().map(|r| f(r)).collect());
            println!(
                "hub overhead [{label}] c={concurrency} {path:<9}: median {:.3} ms (+{:.3}) p99 {:.3} ms (+{:.3}) {:.0}/s ratio {:.2} cpu {:.0} µs/call",
                of(&|r| r[i].median_ms),
                of(&|r| r[i].median_ms - r[0].median_ms),
                of(&|r| r[i].p99_ms),
                of(&|r| r[i].p99_ms - r[0].p99_ms),
                of(&|r| r[i].per_sec),
                of(&|r| r[i].per_sec / r[0].per_sec),
                of(&|r| r[i].cpu_us),
            );
        }
    }
    let commit = commit_latency(store_url).await?;
    println!(
        "hub overhead [{label}]: one durable single-row commit on this store: median {commit:.3} ms"
    );
    let audited = hub.verify_audit(None).await?;
    println!(
        "hub overhead [{label}]: {} audit records written, chain ok = {}",
        audited.records, audited.ok
    );
    if let Ok(m) = Arc::try_unwrap(mcp) {
        let _ = m.cancel().await;
    }
    cancel.cancel();
    hub.close().await;
    Ok(())
}

/// Median time of an autocommit single-row INSERT on the store's database, made
/// directly with sqlx (SQLite under `synchronous = NORMAL` as the hub runs it): the
/// floor of what a call waits for its audit record, which must be durable first.
async fn commit_latency(store_url: &str) -> Result<f64, BoxError> {
    use sqlx::{Connection, Executor};
    let mut conn = if store_url.starts_with("postgres") {
        sqlx::AnyConnection::connect(store_url).await?
    } else {
        let mut c = sqlx::AnyConnection::connect(store_url).await?;
        c.execute("PRAGMA synchronous = NORMAL").await?;
        c
    };
    conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x BIGINT)")
        .await?;
    let mut times = Vec::with_capacity(200);
    for i in 0..220i64 {
        let t = Instant::now();
        sqlx::query("INSERT INTO bench_commit_probe (x) VALUES ($1)")
            .bind(i)
            .execute(&mut conn)
            .await?;
        if i >= 20 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    conn.execute("DROP TABLE bench_commit_probe").await?;
    Ok(median(times))
}

/// `listener` with Nagle's algorithm off on every accepted connection, as `serve`'s own
/// server loop does.
fn low_latency(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn no_delay(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream))
}

/// A bare relay: an HTTP endpoint that makes the same client call to the
/// sandbox and returns its JSON, with no authentication, scopes or audit. Any
/// gateway pays at least this (a second HTTP exchange per call); the hub's
/// figures are best read against it.
async fn start_relay(client: Client, cancel: CancellationToken) -> Result<String, BoxError> {
    let app = axum::Router::new().route(
        "/relay",
        axum::routing::post(move || {
            let client = client.clone();
            async move {
                match client.execute(&ListOffers).await {
                    Ok(offers) => Ok(axum::Json(offers)),
                    Err(e) => Err((axum::http::StatusCode::BAD_GATEWAY, e.to_string())),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/relay", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(low_latency(listener), app)
            .with_graceful_shutdown(async move { cancel.cancelled_owned().await })
            .await;
    });
    Ok(url)
}

/// MCP over streamable HTTP from a plain HTTP client: one session, then each
/// `tools/call` is a POST whose answer is read whole. It separates what the
/// hub's MCP endpoint costs from what an MCP client library adds.
struct RawMcp {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
    next_id: std::sync::atomic::AtomicU64,
}

impl RawMcp {
    async fn connect(http: &reqwest::Client, base: &str, token: &str) -> Result<Self, BoxError> {
        let url = format!("{base}/mcp");
        let init = http
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&serde_json::json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "hub-overhead-bench", "version": "1"}
                }
            }))
            .send()
            .await?;
        if !init.status().is_success() {
            return Err(format!("MCP initialize: status {}", init.status()).into());
        }
        let session = init
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        init.bytes().await?;
        let raw = RawMcp {
            http: http.clone(),
            url,
            token: token.to_string(),
            session,
            next_id: 1.into(),
        };
        let initialized = raw
            .post(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await?;
        if !initialized.status().is_success() {
            return Err(format!("MCP initialized: status {}", initialized.status()).into());
        }
        Ok(raw)
    }

    fn post(&self, body: serde_json::Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req
    }

    async fn call_list_offers(&self) -> Result<(), BoxError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .post(serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "list_offers", "arguments": {}}
            }))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("MCP tools/call: status {}", resp.status()).into());
        }
        let body = resp.text().await?;
        if !body.contains("\"structuredContent\"") || body.contains("\"isError\":true") {
            return Err(format!("MCP tools/call did not succeed: {body:.200}").into());
        }
        Ok(())
    }
}

/// Resident memory of an idle `memberspot serve`, read from /proc.
async fn idle_rss() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_memberspot"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MEMBERSPOT_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let mut addr = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        if let Some(a) = line.strip_prefix("memberspot hub listening on ") {
            addr = Some(a.trim().to_string());
            break;
        }
    }
    let addr = addr.ok_or("serve did not start")?;
    // Warm the server, the console included (its login page), then let it settle.
    reqwest::get(format!("{addr}/healthz")).await?;
    let login = reqwest::get(format!("{addr}/login")).await?;
    if !login.status().is_success() {
        return Err(format!("the console's login page answered {}", login.status()).into());
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id().ok_or("no pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    // The kernel's "kB" are KiB.
    let kib = |field: &str| -> Result<f64, BoxError> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
    };
    let (rss, anon, file) = (kib("VmRSS:")?, kib("RssAnon:")?, kib("RssFile:")?);
    println!(
        "idle RSS of `memberspot serve` (SQLite, embedded sandbox running, console served): \
         {:.1} MiB = {:.1} MB (heap and stacks {:.1} MiB, the binary's pages and libraries {:.1} MiB)",
        rss / 1024.0,
        rss * 1024.0 / 1e6,
        anon / 1024.0,
        file / 1024.0
    );
    child.kill().await?;
    Ok(())
}

/// The sandbox every part calls: a small school, no rate limit, `faults` applied.
async fn bench_sandbox(faults: Faults) -> Result<Sandbox, BoxError> {
    Ok(Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        seed: 1,
        size: SeedSize {
            users: 50,
            offers: 4,
            courses: 3,
        },
        rate_limit: 0.0,
        faults,
        ..SandboxConfig::default()
    })
    .await?)
}

fn main() -> Result<(), BoxError> {
    // rmcp's HTTP client (reqwest 0.13) takes its TLS crypto from an installed provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `-- [PART] [PATHS]`: PART is sqlite, postgres, remote or rss; PATHS a comma-separated
    // list such as relay,REST (direct, the reference, is always measured).
    let mut words = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let filter: Option<String> = words.next();
    let only: Option<String> = words.next();
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sandbox = bench_sandbox(Faults::default()).await?;
        if wants("sqlite") {
            let dir = tempfile::tempdir()?;
            overhead(
                "SQLite",
                &format!("sqlite://{}", dir.path().join("hub.db").display()),
                &sandbox,
                only.as_deref(),
                LOCAL_PLAN,
            )
            .await?;
        }
        if wants("postgres") {
            match pg_url().await {
                Some((url, name)) => {
                    overhead("PostgreSQL", &url, &sandbox, only.as_deref(), LOCAL_PLAN).await?;
                    if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(
                        &std::env::var("MEMBERSPOT_TEST_PG").unwrap_or_else(|_| {
                            "postgres://postgres@127.0.0.1:5432/postgres".into()
                        }),
                    )
                    .await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                }
                None => println!("hub overhead [PostgreSQL]: skipped, PostgreSQL not reachable"),
            }
        }
        if wants("remote") {
            let remote = bench_sandbox(Faults {
                latency_ms: REMOTE_LATENCY_MS,
                ..Faults::default()
            })
            .await?;
            let dir = tempfile::tempdir()?;
            overhead(
                &format!("SQLite, upstream {REMOTE_LATENCY_MS} ms"),
                &format!("sqlite://{}", dir.path().join("hub.db").display()),
                &remote,
                Some(only.as_deref().unwrap_or("REST,MCP")),
                REMOTE_PLAN,
            )
            .await?;
            remote.shutdown().await?;
        }
        if wants("rss") {
            idle_rss().await?;
        }
        sandbox.shutdown().await?;
        Ok(())
    })
}
