//! The HTTP server's network boundary, over real TCP: Origin checks on `/mcp`, malformed
//! JSON-RPC, MCP session limits (per persona, in total, idle expiry, `initialize` against
//! the persona's limit), header and body read time-outs and the connection cap; the client's
//! address through trusted proxies only, and one request id in answers and audit records.

use std::time::{Duration, Instant};

use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::mcp_guard::SessionLimits;
use memberspot_server::{
    App, ClientAddr, Plugin, ProxyHeader, RequestId, ServerSettings, TrustedProxies,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, database, drop_database};

struct World {
    sandbox: Sandbox,
    hub: Hub,
    addr: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
    pg: Option<String>,
}

/// A route that reads its body like the webhook receivers do.
struct Hooks;

impl Plugin for Hooks {
    fn name(&self) -> &str {
        "hooks"
    }

    fn raw_routes(&self) -> Option<axum::Router> {
        Some(axum::Router::new().route(
            "/hooks/{source}",
            axum::routing::post(|body: axum::body::Bytes| async move { format!("{}", body.len()) }),
        ))
    }
}

/// A route that answers what the server resolved: the client's address and the request id.
struct WhoAmI;

impl Plugin for WhoAmI {
    fn name(&self) -> &str {
        "whoami"
    }

    fn raw_routes(&self) -> Option<axum::Router> {
        Some(axum::Router::new().route(
            "/whoami",
            axum::routing::get(
                |axum::Extension(client): axum::Extension<ClientAddr>,
                 axum::Extension(id): axum::Extension<RequestId>| async move {
                    axum::Json(json!({ "client": client.0.to_string(), "request_id": id.0 }))
                },
            ),
        ))
    }
}

async fn world(backend: Backend, settings: ServerSettings) -> World {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: "sk_net_school_key".into(),
        seed: 5,
        size: SeedSize {
            users: 5,
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
    let store = Store::open(&url).await.expect("store");
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let hub = Hub::open(store, MasterKey::generate(), Some(embedded))
        .await
        .expect("hub");
    let cancel = CancellationToken::new();
    let app = App::build(
        hub.clone(),
        settings,
        vec![Box::new(Hooks), Box::new(WhoAmI)],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(app.serve(listener, cancel.clone()));
    World {
        sandbox,
        hub,
        addr,
        cancel,
        _dir: dir,
        pg,
    }
}

impl World {
    async fn persona(&self, name: &str, per_minute: Option<u32>) -> String {
        let issued = self
            .hub
            .create_persona(PersonaSpec {
                name: name.into(),
                calls_per_minute: per_minute,
                ..Default::default()
            })
            .await
            .expect("persona");
        issued.token.expose_secret().to_string()
    }

    async fn close(self) {
        self.cancel.cancel();
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
        if let Some(name) = &self.pg {
            drop_database(name).await;
        }
    }

    /// POSTs a JSON-RPC body to /mcp: status, headers, body text.
    async fn mcp(
        &self,
        token: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/mcp", self.addr))
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("post");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap_or_default())
    }

    /// Opens an MCP session: status and session id.
    async fn initialize(&self, token: &str) -> (u16, Option<String>, String) {
        let (status, headers, body) = self.mcp(token, &initialize(1), &[]).await;
        let id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, id, body)
    }

    async fn delete(&self, token: &str, session: &str) -> u16 {
        reqwest::Client::new()
            .delete(format!("http://{}/mcp", self.addr))
            .bearer_auth(token)
            .header("mcp-session-id", session)
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16()
    }

    async fn audit_len(&self) -> usize {
        self.hub
            .audit(&Default::default())
            .await
            .expect("audit")
            .len()
    }
}

fn initialize(id: u32) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" }
        }
    })
    .to_string()
}

fn tools_call(id: u32) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "list_offers", "arguments": {} }
    })
    .to_string()
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_before_anything_runs() {
    let w = world(
        Backend::Sqlite,
        ServerSettings {
            allowed_origins: vec!["https://agents.example".into()],
            ..Default::default()
        },
    )
    .await;
    let token = w.persona("browser", None).await;
    let before = w.audit_len().await;
    for evil in [
        "http://evil.example",
        "https://agents.example:8443",
        "http://agents.example",
        "null",
    ] {
        let (status, _, body) = w.mcp(&token, &tools_call(1), &[("origin", evil)]).await;
        assert_eq!(status, 403, "{evil}: {body}");
        assert!(error_of(&body)["message"].as_str().is_some(), "{body}");
        // Refused before authentication too: a page cannot even probe tokens.
        let (status, _, _) = w
            .mcp("msh_wrong", &initialize(1), &[("origin", evil)])
            .await;
        assert_eq!(status, 403, "{evil}");
    }
    assert_eq!(
        w.audit_len().await,
        before,
        "no tool ran for a foreign origin"
    );

    for ok in [
        "http://localhost:5173",
        "http://127.0.0.1:1",
        "https://agents.example",
    ] {
        let (status, _, body) = w.mcp(&token, &initialize(1), &[("origin", ok)]).await;
        assert_eq!(status, 200, "{ok}: {body}");
    }
    // No Origin: a program, not a browser page.
    let (status, id, _) = w.initialize(&token).await;
    assert_eq!(status, 200);
    assert!(id.is_some());
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_rpc_gets_a_json_rpc_error() {
    let w = world(Backend::Sqlite, ServerSettings::default()).await;
    let token = w.persona("parser", None).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: [(&str, String, u16, i64); 6] = [
        ("bad JSON", "{\"jsonrpc\": \"2.0\", ".into(), 400, -32700),
        ("not JSON at all", "hello".into(), 400, -32700),
        ("a batch", format!("[{}, {}]", tools_call(1), tools_call(2)), 400, -32600),
        ("deep nesting", deep, 400, -32700),
        (
            "not JSON-RPC",
            json!({"hello": "world"}).to_string(),
            400,
            -32600,
        ),
        (
            "too large",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {"pad": "x".repeat(300 * 1024)}}}).to_string(),
            413,
            -32600,
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, headers, text) = w.mcp(&token, &body, &[]).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{what}: {headers:?}"
        );
        assert_eq!(error_of(&text)["code"], code, "{what}: {text}");
    }
    w.close().await;
}

async fn sessions_story(backend: Backend) {
    let w = world(
        backend,
        ServerSettings {
            mcp_sessions: SessionLimits {
                max_total: 5,
                max_per_persona: 3,
                idle_timeout: Duration::from_secs(2),
            },
            ..Default::default()
        },
    )
    .await;
    let a = w.persona("agent-a", None).await;
    let b = w.persona("agent-b", None).await;
    let c = w.persona("agent-c", None).await;

    let mut mine = Vec::new();
    for _ in 0..3 {
        let (status, id, body) = w.initialize(&a).await;
        assert_eq!(status, 200, "{body}");
        mine.push(id.expect("a session id"));
    }
    let (status, id, body) = w.initialize(&a).await;
    assert_eq!(status, 429, "a persona's sessions are capped: {body}");
    assert!(id.is_none());
    assert!(
        error_of(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("agent-a"))
    );
    for _ in 0..2 {
        let (status, _, body) = w.initialize(&b).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = w.initialize(&c).await;
    assert_eq!(status, 503, "the total is capped: {body}");

    // DELETE: unknown → 404, someone else's → 404, one's own → ends it and frees a place.
    assert_eq!(w.delete(&a, "no-such-session").await, 404);
    assert_eq!(w.delete(&b, &mine[0]).await, 404, "not b's session");
    let (status, _, _) = w
        .mcp(&b, &tools_call(2), &[("mcp-session-id", &mine[0])])
        .await;
    assert_eq!(status, 404, "nor can b use it");
    let ended = w.delete(&a, &mine[0]).await;
    assert!((200..300).contains(&ended), "{ended}");
    assert_eq!(w.delete(&a, &mine[0]).await, 404, "already ended");
    let (status, _, body) = w.initialize(&c).await;
    assert_eq!(status, 200, "a freed place can be taken: {body}");

    // A session of a dead id is 404 for requests too.
    let (status, _, _) = w
        .mcp(&a, &tools_call(3), &[("mcp-session-id", &mine[0])])
        .await;
    assert_eq!(status, 404);

    // Idle sessions end by themselves, and their places are free again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, _, _) = w
        .mcp(&a, &tools_call(4), &[("mcp-session-id", &mine[1])])
        .await;
    assert_eq!(status, 404, "an idle session expired");
    for t in [&a, &a, &a, &b, &b] {
        let (status, _, body) = w.initialize(t).await;
        assert_eq!(status, 200, "{body}");
    }
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessions_are_capped_deleted_and_expire_sqlite() {
    sessions_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessions_are_capped_deleted_and_expire_postgres() {
    sessions_story(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_counts_against_the_persona_limit() {
    let w = world(Backend::Sqlite, ServerSettings::default()).await;
    let slow = w.persona("slow", Some(2)).await;
    for _ in 0..2 {
        let (status, _, body) = w.initialize(&slow).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = w.mcp(&slow, &initialize(3), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.get("retry-after").is_some());
    assert!(
        error_of(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("calls per minute")),
        "{body}"
    );
    w.close().await;
}

/// Reads until the server closes the connection; the time it took and what it sent.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), tcp.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let w = world(
        Backend::Sqlite,
        ServerSettings {
            header_read_timeout: Duration::from_millis(500),
            body_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let token = w.persona("slow-body", None).await;

    // Nothing at all, and half a header.
    let mut silent = TcpStream::connect(&w.addr).await.expect("connect");
    let mut half_header = TcpStream::connect(&w.addr).await.expect("connect");
    half_header
        .write_all(b"POST /hooks/ds24 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .expect("write");
    let (took, _) = until_closed(&mut half_header, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (took, _) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Half a body, on a receiver, REST and MCP.
    for (path, auth) in [
        ("/hooks/ds24", String::new()),
        (
            "/v1/tools/list_offers/call",
            format!("Authorization: Bearer {token}\r\n"),
        ),
        (
            "/mcp",
            format!(
                "Authorization: Bearer {token}\r\nAccept: application/json, text/event-stream\r\n"
            ),
        ),
    ] {
        let mut tcp = TcpStream::connect(&w.addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\":"
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (took, answer) = until_closed(&mut tcp, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(3), "{path}: {took:?}");
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.1 5"),
            "{path}: {answer}"
        );
    }
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let w = world(
        Backend::Sqlite,
        ServerSettings {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(&w.addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("write");
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fourth is not served while three are open…
    let mut fourth = TcpStream::connect(&w.addr)
        .await
        .expect("the kernel queues it");
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(800), fourth.read(&mut buf)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");
    // …and is served as soon as one closes.
    drop(held.pop());
    let (took, answer) = until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    w.close().await;
}

/// The official SDK's client through the server loop: sessions work, and a pause longer
/// than the header read time-out (which closes idle keep-alive connections) is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_works_through_the_server_loop() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = world(
        Backend::Sqlite,
        ServerSettings {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let token = w.persona("sdk", None).await;
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", w.addr))
                .auth_header(token),
        ))
        .await
        .expect("connects");
    for _ in 0..2 {
        let tools = client.list_all_tools().await.expect("tools");
        assert!(tools.iter().any(|t| t.name == "list_offers"));
        let r = client
            .call_tool(CallToolRequestParams::new("list_offers"))
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true), "{r:?}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let _ = client.cancel().await;
    w.close().await;
}

impl World {
    /// `GET /whoami` with `headers`: the client address and request id the server resolved.
    async fn whoami(&self, headers: &[(&str, &str)]) -> (Value, Option<String>) {
        let mut req = reqwest::Client::new().get(format!("http://{}/whoami", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("get");
        let header = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (resp.json().await.expect("json"), header)
    }
}

fn proxies(ranges: &[&str], header: ProxyHeader) -> ServerSettings {
    ServerSettings {
        trusted_proxies: TrustedProxies::parse(ranges, header).expect("ranges"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarding_header_from_an_untrusted_peer_is_ignored() {
    let forged = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=198.51.100.1"),
    ];
    // No trusted proxies, or ones that do not include this peer (127.0.0.1): the peer.
    for settings in [
        ServerSettings::default(),
        proxies(&["10.0.0.0/8", "::1"], ProxyHeader::XForwardedFor),
        proxies(&["192.0.2.0/24"], ProxyHeader::Forwarded),
    ] {
        let w = world(Backend::Sqlite, settings).await;
        let (seen, _) = w.whoami(&forged).await;
        assert_eq!(seen["client"], "127.0.0.1", "{seen}");
        w.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_in_its_one_header() {
    let w = world(
        Backend::Sqlite,
        proxies(&["127.0.0.0/8"], ProxyHeader::XForwardedFor),
    )
    .await;
    // The client wrote the first entry; the proxy appended the address it saw.
    let (seen, _) = w
        .whoami(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
        ])
        .await;
    assert_eq!(seen["client"], "203.0.113.9", "{seen}");
    // Nothing forwarded: the proxy itself; garbage: the proxy, never the garbage.
    let (seen, _) = w.whoami(&[]).await;
    assert_eq!(seen["client"], "127.0.0.1");
    let (seen, _) = w
        .whoami(&[("x-forwarded-for", "203.0.113.9, <script>")])
        .await;
    assert_eq!(seen["client"], "127.0.0.1");
    w.close().await;

    let w = world(
        Backend::Sqlite,
        proxies(&["127.0.0.1"], ProxyHeader::Forwarded),
    )
    .await;
    let (seen, _) = w
        .whoami(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=\"[2001:db8::5]:443\";proto=https"),
        ])
        .await;
    assert_eq!(seen["client"], "2001:db8::5", "{seen}");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_in_the_answer_its_error_and_its_audit_records() {
    let w = world(Backend::Sqlite, ServerSettings::default()).await;
    // A short, safe id is kept and answered; anything else is replaced by a fresh one.
    let (seen, header) = w.whoami(&[("x-request-id", "support-4711")]).await;
    assert_eq!(seen["request_id"], "support-4711");
    assert_eq!(header.as_deref(), Some("support-4711"));
    for bad in [
        "two words",
        "a\"quote",
        "{\"level\":\"error\"}",
        &"x".repeat(65),
    ] {
        let (seen, header) = w.whoami(&[("x-request-id", bad)]).await;
        let id = seen["request_id"].as_str().expect("id");
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(header.as_deref(), Some(id));
    }

    // REST: the error answer and the audit record of the refused call carry the id.
    let token = w.persona("support", None).await;
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/tools/find_user_by_email/call",
            w.addr
        ))
        .bearer_auth(&token)
        .header("x-request-id", "rest-err-1")
        .json(&json!({ "arguments": {} }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-request-id"], "rest-err-1");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["request_id"], "rest-err-1", "{body}");
    assert_eq!(body["error"]["field"], "email", "{body}");
    let records = audit_of(&w, "rest-err-1").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].tool, "find_user_by_email");

    // A successful REST call answers the same id it was audited under.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/tools/list_offers/call", w.addr))
        .bearer_auth(&token)
        .header("x-request-id", "rest-ok-1")
        .json(&json!({ "arguments": {} }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["request_id"], "rest-ok-1", "{body}");
    assert_eq!(audit_of(&w, "rest-ok-1").await.len(), 1);

    // An error answer outside the tools (no route) carries it too.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/nowhere", w.addr))
        .header("x-request-id", "lost-1")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["request_id"], "lost-1", "{body}");

    // MCP over HTTP: a tool call in a session is audited under the HTTP request's id.
    let (status, session, body) = w.initialize(&token).await;
    assert_eq!(status, 200, "{body}");
    let session = session.expect("session");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let (status, _, body) = w
        .mcp(
            &token,
            &initialized.to_string(),
            &[("mcp-session-id", &session)],
        )
        .await;
    assert!((200..300).contains(&status), "{status}: {body}");
    let (status, _, body) = w
        .mcp(
            &token,
            &tools_call(2),
            &[("mcp-session-id", &session), ("x-request-id", "mcp-call-9")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let records = audit_of(&w, "mcp-call-9").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].tool, "list_offers");

    // A revoked persona's attempt, refused at the door, is recorded under the id as well.
    w.hub.revoke_persona("support").await.expect("revoke");
    let (status, _, body) = w
        .mcp(&token, &tools_call(3), &[("x-request-id", "mcp-revoked-2")])
        .await;
    assert_eq!(status, 401, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["request_id"], "mcp-revoked-2", "{v}");
    assert_eq!(audit_of(&w, "mcp-revoked-2").await.len(), 1);
    w.close().await;
}

/// The audit records of one request id, once the writer has stored them.
async fn audit_of(w: &World, id: &str) -> Vec<memberspot_hub::store::AuditRecord> {
    let filter = memberspot_hub::store::AuditFilter {
        request_id: Some(id.into()),
        ..Default::default()
    };
    for _ in 0..100 {
        let records = w.hub.audit(&filter).await.expect("audit");
        if !records.is_empty() {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}
