//! [`App`] with plug-ins, over real TCP on a loopback port: a plug-in's documented routes
//! join the REST API and `/openapi.json`, its raw routes stay outside the REST error shape,
//! its lines join the startup summary, and `serve` returns only once every background
//! task has stopped — the audit retention's purge included; on SQLite and PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use memberspot_api::ApiKey;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, Store};
use memberspot_hub::{CallContext, EmbeddedSandbox, Hub, Principal, Surface};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::retention::AuditRetention;
use memberspot_server::{App, Plugin, ServerSettings};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod common;
use common::{Backend, database, drop_database};

/// A documented route.
#[utoipa::path(get, path = "/v1/probe", tag = "probe", responses((status = 200, description = "the probe answers")))]
async fn probe_route() -> axum::Json<Value> {
    axum::Json(json!({ "probe": true }))
}

/// A plug-in with a documented route, a raw route, a background task that takes a while to
/// stop after the cancellation, and a summary line.
struct Probe {
    stopped: Arc<AtomicBool>,
}

impl Plugin for Probe {
    fn name(&self) -> &str {
        "probe"
    }

    fn routes(&self) -> Option<(Router, utoipa::openapi::OpenApi)> {
        Some(
            OpenApiRouter::new()
                .routes(routes!(probe_route))
                .split_for_parts(),
        )
    }

    fn raw_routes(&self) -> Option<Router> {
        Some(Router::new().route(
            "/hooks/probe",
            axum::routing::post(|| async { (StatusCode::IM_A_TEAPOT, "raw answer") }),
        ))
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let stopped = self.stopped.clone();
        vec![tokio::spawn(async move {
            cancel.cancelled().await;
            // Winding down takes a moment (a worker finishing its step).
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopped.store(true, Ordering::SeqCst);
        })]
    }

    fn summary(&self, addr: SocketAddr) -> Vec<String> {
        vec![format!("  probe   http://{addr}/v1/probe")]
    }
}

async fn app_story(backend: Backend) {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: "sk_app_school_key".into(),
        seed: 3,
        size: SeedSize {
            users: 3,
            offers: 2,
            courses: 1,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg) = database(backend, dir.path()).await;
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let hub = Hub::open(
        Store::open(&url).await.expect("store"),
        MasterKey::generate(),
        Some(embedded),
    )
    .await
    .expect("hub");

    // Two calls on record before the app starts; a retention of 0 days purges them.
    for _ in 0..2 {
        let outcome = hub
            .call(
                &Principal::Operator {
                    connection: memberspot_hub::SANDBOX_CONNECTION.into(),
                },
                &CallContext::new(Surface::Cli),
                "list_offers",
                json!({}),
            )
            .await;
        outcome.result.expect("call");
    }
    let all = AuditFilter {
        limit: Some(100),
        ..AuditFilter::default()
    };
    assert_eq!(hub.audit(&all).await.expect("audit").len(), 2);

    let stopped = Arc::new(AtomicBool::new(false));
    let app = App::build(
        hub.clone(),
        ServerSettings::default(),
        vec![
            Box::new(AuditRetention::new(hub.clone(), 0)),
            Box::new(Probe {
                stopped: stopped.clone(),
            }),
        ],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let summary = app.summary(addr);
    assert_eq!(
        summary[0],
        format!("memberspot hub listening on http://{addr}")
    );
    assert!(
        summary.contains(&"  audit records are kept 0 days (purged hourly)".to_string()),
        "{summary:?}"
    );
    assert_eq!(
        summary.last(),
        Some(&format!("  probe   http://{addr}/v1/probe"))
    );
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(app.serve(listener, cancel.clone()));

    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let probe: Value = http
        .get(format!("{base}/v1/probe"))
        .send()
        .await
        .expect("probe")
        .json()
        .await
        .expect("json");
    assert_eq!(probe, json!({ "probe": true }));
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in ["/v1/probe", "/v1/tools", "/healthz"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(
        doc["paths"]["/hooks/probe"].is_null(),
        "raw routes are not documented"
    );
    // A raw route answers in its own shape, not the REST API's error envelope.
    let raw = http
        .post(format!("{base}/hooks/probe"))
        .send()
        .await
        .expect("raw");
    assert_eq!(raw.status().as_u16(), 418);
    assert_eq!(raw.text().await.expect("text"), "raw answer");
    let unknown = http
        .get(format!("{base}/v1/nope"))
        .send()
        .await
        .expect("unknown");
    assert_eq!(unknown.status().as_u16(), 404);
    let v: Value = unknown.json().await.expect("the REST error shape");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);

    // `serve` returns once every task has stopped: the probe's, and the retention's,
    // whose first purge has run by then.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("served");
    assert!(
        stopped.load(Ordering::SeqCst),
        "serve returned before the plug-in's task stopped"
    );
    assert!(
        hub.audit(&all).await.expect("audit").is_empty(),
        "the retention purge ran before serve returned"
    );
    assert!(hub.verify_audit(None).await.expect("verify").ok);
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing answers after serve returned"
    );

    hub.close().await;
    if let Some(name) = pg {
        drop_database(&name).await;
    }
    let _ = sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_join_the_app_and_every_task_is_joined_on_shutdown_sqlite() {
    app_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_join_the_app_and_every_task_is_joined_on_shutdown_postgres() {
    app_story(Backend::Postgres).await;
}
