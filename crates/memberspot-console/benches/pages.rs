//! Console pages at scale: server time of the audit, events and members pages with
//! 1,000,000 audit records and 200,000 events, on SQLite and PostgreSQL.
//!
//! Run: `cargo bench -p memberspot-console --bench pages` (both stores), or one of them:
//! `-- sqlite`, `-- postgres`. `MEMBERSPOT_BENCH_AUDIT` and `MEMBERSPOT_BENCH_EVENTS` change
//! the sizes (for a quick look). PostgreSQL is postgres://postgres@127.0.0.1:5432/postgres
//! or MEMBERSPOT_TEST_PG; a fresh database is created and dropped afterwards, and the part
//! is skipped when the server is unreachable.
//!
//! The records are written through the store's own batch append (the hash chain is real),
//! then a signed-in owner asks each page 200 times through the console's router in
//! process: the time measured is the server's (routing, session, queries, rendering), not
//! the network's. Pages: the first page and a deep page (by keyset, `before=`) of the
//! audit log and of the events, the audit log filtered by persona and by tool, the events
//! filtered by status, by order id and by e-mail, and the members page: one member looked
//! up by e-mail, and a name search (the first 1,000 members of the sandbox school read
//! and matched).
//!
//! Figures are printed, never asserted; a page that does not answer 200 fails the run.

use std::time::{Duration, Instant};

use memberspot_api::ApiKey;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditOutcome, EventStatus, NewAuditRecord, NewEvent, Store, Surface};
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use secrecy::SecretString;
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Client, pg_admin_url};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PASSWORD: &str = "correct horse battery";
const REQUESTS: usize = 200;
const WARMUP: usize = 10;
const PERSONAS: usize = 20;
const TOOLS: [&str; 6] = [
    "list_users",
    "find_user_by_email",
    "grant_user_offer_by_email",
    "set_user_offer_state",
    "list_offers",
    "create_login_token",
];
/// Records per append: what the store writes in one go when calls queue up.
const AUDIT_BATCH: usize = 2_000;
const EVENT_BATCH: usize = 1_000;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| part.contains(o.as_str()));
    let audit = size("MEMBERSPOT_BENCH_AUDIT", 1_000_000);
    let events = size("MEMBERSPOT_BENCH_EVENTS", 200_000);
    println!("console pages: {audit} audit records, {events} events, {REQUESTS} requests a page");
    if wanted("sqlite") {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        run("SQLite", &url, audit, events).await?;
    }
    if wanted("postgres") {
        match fresh_postgres().await {
            Some((url, name)) => {
                let result = run("PostgreSQL", &url, audit, events).await;
                drop_postgres(&name).await;
                result?;
            }
            None => println!("PostgreSQL: skipped (not reachable at {})", pg_admin_url()),
        }
    }
    Ok(())
}

async fn run(label: &str, url: &str, audit: usize, events: usize) -> Result<(), BoxError> {
    let store = Store::open(url).await?;
    let started = Instant::now();
    seed_audit(&store, audit).await?;
    let audit_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    seed_events(&store, events).await?;
    println!(
        "\n{label}: seeded {audit} audit records in {audit_secs:.0} s, {events} events in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: "sk_bench_school".into(),
        seed: 5,
        size: SeedSize {
            users: 1_000,
            offers: 8,
            courses: 12,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await?;
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let (member, last_name) = first_member(&sandbox).await?;
    let hub = Hub::open(store, MasterKey::generate(), Some(embedded)).await?;
    hub.add_console_user("anna", &SecretString::from(PASSWORD), ConsoleRole::Owner)
        .await?;
    // The hub keeps a real school's 4 calls a second on the connection; the emulator has no
    // limit. Lifted, so that the members row (two or three calls to the school a view)
    // measures the page, not 200 views in a row waiting for the limit.
    hub.update_connection(
        "sandbox",
        memberspot_hub::store::ConnectionUpdate {
            rate_limit: Some(0.0),
            ..Default::default()
        },
    )
    .await?;
    let plugin = ConsolePlugin::new(hub.clone(), ConsoleSettings::default())?;
    let mut client = Client::new(plugin.router());
    let login = client.login("anna", PASSWORD).await;
    if login.status != 303 {
        return Err(format!("login answered {}", login.status).into());
    }

    let deep_audit = (audit / 2).max(1);
    let deep_event = (events / 2).max(1);
    let pages = [
        ("audit, first page", "/audit".to_owned()),
        (
            "audit, deep page (keyset)",
            format!("/audit?before={deep_audit}"),
        ),
        ("audit, one persona", "/audit?persona=persona-7".to_owned()),
        (
            "audit, one tool",
            "/audit?tool=create_login_token".to_owned(),
        ),
        ("events, first page", "/events".to_owned()),
        (
            "events, deep page (keyset)",
            format!("/events?before={deep_event}"),
        ),
        ("events, dead ones", "/events?status=dead".to_owned()),
        (
            "events, one order",
            format!("/events?order=order-{:08}", events / 3),
        ),
        (
            "events, one e-mail",
            "/events?email=member42%40example.de".to_owned(),
        ),
        ("members, one member", format!("/members?email={member}")),
        (
            "members, name search",
            format!(
                "/members?q={}",
                url::form_urlencoded::byte_serialize(last_name.as_bytes()).collect::<String>()
            ),
        ),
    ];
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "page", "median ms", "p99 ms", "KiB"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for i in 0..WARMUP + REQUESTS {
            let t = Instant::now();
            let page = client.get(&path).await;
            let took = t.elapsed();
            if page.status != 200 {
                return Err(format!("{path} answered {}", page.status).into());
            }
            bytes = page.body.len();
            if i >= WARMUP {
                times.push(took);
            }
        }
        times.sort();
        println!(
            "{:<28} {:>10.2} {:>10.2} {:>10}",
            name,
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100]),
            bytes / 1024
        );
    }
    hub.close().await;
    let _ = sandbox.shutdown().await;
    Ok(())
}

/// The e-mail and last name of the school's first member, for the members page to look up
/// and to search.
async fn first_member(sandbox: &Sandbox) -> Result<(String, String), BoxError> {
    let client = memberspot_api::Client::builder(sandbox.base_url())
        .api_key(ApiKey::new(sandbox.api_key()))
        .rate_limit(0.0)
        .build()?;
    let page = client
        .execute(&memberspot_api::actions::ListUsers::new().page_length(1))
        .await?;
    let user = page
        .users
        .first()
        .ok_or("the sandbox school has no members")?;
    let name = user.name.clone().unwrap_or_else(|| "a".to_owned());
    Ok((user.email.clone(), name))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Ninety days of calls, oldest first: twenty personas, six tools, mostly answered, some
/// refused or failed, from REST, MCP and flows.
async fn seed_audit(store: &Store, total: usize) -> Result<(), BoxError> {
    let span_ms: i64 = 90 * 86_400_000;
    let start = chrono::Utc::now().timestamp_millis() - span_ms;
    let step = (span_ms / total.max(1) as i64).max(1);
    let mut written = 0;
    while written < total {
        let n = AUDIT_BATCH.min(total - written);
        let batch: Vec<NewAuditRecord> = (written..written + n)
            .map(|i| audit_record(i, start + i as i64 * step))
            .collect();
        store.append_audit_batch(&batch).await?;
        written += n;
    }
    Ok(())
}

fn audit_record(i: usize, at: i64) -> NewAuditRecord {
    let tool = TOOLS[i % TOOLS.len()];
    let outcome = match i % 50 {
        0 => AuditOutcome::Denied,
        1 | 2 => AuditOutcome::ToolError,
        _ => AuditOutcome::Ok,
    };
    let surface = match i % 3 {
        0 => Surface::Rest,
        1 => Surface::McpHttp,
        _ => Surface::Flow,
    };
    let email = format!("member{}@example.de", i % 5_000);
    NewAuditRecord {
        at,
        request_id: format!("req-{i:08}"),
        surface,
        connection: Some("sandbox".into()),
        persona: Some(format!("persona-{}", i % PERSONAS)),
        end_user: None,
        prompt: Some(format!("look after {email}")),
        tool: tool.into(),
        arguments: json!({"email": email, "offer_id": format!("offer-{}", i % 8)}),
        outcome,
        response: (outcome == AuditOutcome::Ok)
            .then(|| json!({"ok": true, "uid": format!("u{i}")})),
        error: (outcome != AuditOutcome::Ok).then(|| "the school answered 404".to_owned()),
        upstream_status: Some(if outcome == AuditOutcome::Ok {
            200
        } else {
            404
        }),
        latency_ms: 40 + (i % 200) as u64,
        oauth_client: None,
    }
}

/// Purchases and refunds from Digistore24, most of them applied, some dead or unmatched.
async fn seed_events(store: &Store, total: usize) -> Result<(), BoxError> {
    let events = store.events();
    let mut written = 0;
    while written < total {
        let n = EVENT_BATCH.min(total - written);
        let batch: Vec<NewEvent> = (written..written + n).map(event).collect();
        events.insert_events(&batch).await?;
        written += n;
    }
    Ok(())
}

fn event(i: usize) -> NewEvent {
    let status = match i % 100 {
        0 => EventStatus::Dead,
        1..=3 => EventStatus::Ignored,
        _ => EventStatus::Done,
    };
    let refund = i.is_multiple_of(20);
    NewEvent {
        dedupe_key: format!(
            "ds24:order-{i:08}:{}",
            if refund { "refund" } else { "payment" }
        ),
        source: "ds24".into(),
        provider: "digistore24".into(),
        kind: if refund { "refund" } else { "purchase" }.into(),
        name: if refund { "on_refund" } else { "on_payment" }.into(),
        order_id: Some(format!("order-{i:08}")),
        product_id: Some(format!("{}", 598_000 + i % 8)),
        email: Some(format!("member{}@example.de", i % 5_000)),
        test: false,
        amount_minor: Some(4_900),
        currency: Some("EUR".into()),
        data: json!({"order_id": format!("order-{i:08}"), "amount": "49.00"}),
        status,
        connection: Some("sandbox".into()),
        verified: true,
    }
}

async fn fresh_postgres() -> Option<(String, String)> {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("bench_pages_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let (base, _) = admin.rsplit_once('/')?;
    Some((format!("{base}/{name}"), name))
}

async fn drop_postgres(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}
