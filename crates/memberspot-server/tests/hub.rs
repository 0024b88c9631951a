//! The hub end to end over real transports (HTTP REST, MCP streamable HTTP
//! with the official SDK's client, MCP over an in-process stdio pipe),
//! against the sandbox, on SQLite and on PostgreSQL.

use std::time::Duration;

use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, Store};
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, ServerSettings};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, drop_database, fresh_postgres};

const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";

struct World {
    sandbox: Sandbox,
    hub: Hub,
    base: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
    db_file: Option<std::path::PathBuf>,
    pg: Option<(String, String)>,
    reader: String,
    support: String,
    admin: String,
    trial_offer: String,
    other_offer: String,
    email: String,
}

/// rmcp's HTTP client uses reqwest 0.13, which (built together with the rest of the
/// workspace) takes its TLS crypto from rustls with an explicitly installed provider.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn world(backend: Backend) -> World {
    install_tls_provider();
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 3,
        size: SeedSize {
            users: 20,
            offers: 4,
            courses: 3,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, db_file, pg) = match backend {
        Backend::Sqlite => {
            let f = dir.path().join("hub.db");
            (format!("sqlite://{}", f.display()), Some(f), None)
        }
        Backend::Postgres => {
            let (url, name) = fresh_postgres().await;
            (url.clone(), None, Some((url, name)))
        }
    };
    let store = Store::open(&url).await.expect("store");
    let embedded = EmbeddedSandbox {
        base_url: sandbox.base_url(),
        api_key: ApiKey::new(sandbox.api_key()),
    };
    let hub = Hub::open(store, MasterKey::generate(), Some(embedded))
        .await
        .expect("hub");
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &SecretString::from(SCHOOL_KEY.to_string()),
        0.0,
    )
    .await
    .expect("connection");

    let state: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let trial_offer = state["offers"][0]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let other_offer = state["offers"][1]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let email = state["users"][0]["email"]
        .as_str()
        .expect("email")
        .to_string();

    let reader = hub
        .create_persona(PersonaSpec {
            name: "reader".into(),
            connection: Some("school".into()),
            ..Default::default()
        })
        .await
        .expect("reader");
    let support = hub
        .create_persona(PersonaSpec {
            name: "support".into(),
            connection: Some("school".into()),
            scopes: vec!["read".into(), "write".into()],
            offer_ids: Some(vec![trial_offer.clone()]),
            ..Default::default()
        })
        .await
        .expect("support");
    let admin = hub.issue_admin_token().await.expect("admin token");

    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = App::build(hub.clone(), ServerSettings::default(), Vec::new());
    tokio::spawn(app.serve(listener, cancel.clone()));
    World {
        sandbox,
        hub,
        base: format!("http://{addr}"),
        cancel,
        _dir: dir,
        db_file,
        pg,
        reader: reader.token.expose_secret().to_string(),
        support: support.token.expose_secret().to_string(),
        admin: admin.expose_secret().to_string(),
        trial_offer,
        other_offer,
        email,
    }
}

impl World {
    async fn close(self) {
        self.cancel.cancel();
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
        if let Some((_, name)) = &self.pg {
            drop_database(name).await;
        }
    }

    async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    async fn call(
        &self,
        token: &str,
        tool: &str,
        args: Value,
        prompt: &str,
    ) -> (u16, Value, String) {
        self.rest(
            reqwest::Method::POST,
            &format!("/v1/tools/{tool}/call"),
            token,
            Some(json!({ "arguments": args, "prompt": prompt, "end_user": "kim@agency.example" })),
        )
        .await
    }

    async fn audit(&self) -> Vec<Value> {
        let (status, v, _) = self
            .rest(
                reqwest::Method::GET,
                "/v1/audit?limit=10000",
                &self.admin,
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v.as_array().cloned().expect("records")
    }
}

async fn rest_story(backend: Backend) {
    let w = world(backend).await;
    let mut transcript = String::new();

    // Scope filtering.
    let (s, tools, t) = w
        .rest(reqwest::Method::GET, "/v1/tools", &w.reader, None)
        .await;
    transcript.push_str(&t);
    assert_eq!(s, 200);
    let names: Vec<&str> = tools
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 7, "read tools only: {names:?}");
    assert!(!names.contains(&"delete_users"));
    let (s, _, _) = w
        .rest(
            reqwest::Method::GET,
            "/v1/tools/delete_users",
            &w.reader,
            None,
        )
        .await;
    assert_eq!(s, 403);

    // Allowed, denied, invalid, out-of-offer.
    let (s, v, t) = w
        .call(&w.reader, "list_offers", json!({}), "which offers exist?")
        .await;
    transcript.push_str(&t);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["offers"].as_array().map(Vec::len), Some(4));
    let (s, v, t) = w
        .call(
            &w.reader,
            "grant_user_offer_by_email",
            json!({"email": "x@example.com", "offer_id": w.trial_offer}),
            "grant",
        )
        .await;
    transcript.push_str(&t);
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("may not call")),
        "{v}"
    );
    let (s, v, _) = w
        .call(
            &w.reader,
            "find_user_by_email",
            json!({"email": "not-an-email"}),
            "typo",
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["field"], "email");
    let (s, v, t) = w
        .call(
            &w.support,
            "grant_user_offer_by_email",
            json!({"email": "trial@example.com", "offer_id": w.trial_offer}),
            "start a trial",
        )
        .await;
    transcript.push_str(&t);
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = w
        .call(
            &w.support,
            "grant_user_offer_by_email",
            json!({"email": "trial@example.com", "offer_id": w.other_offer}),
            "upsell",
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v, _) = w
        .call(
            &w.support,
            "find_user_by_email",
            json!({"email": "nobody@example.com"}),
            "lookup",
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");

    // Bad bodies and tokens.
    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/tools/list_offers/call",
            &w.reader,
            Some(json!({"args": {}})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = w
        .rest(
            reqwest::Method::GET,
            "/v1/tools",
            "msh_not_a_real_token_000000000000000000000000",
            None,
        )
        .await;
    assert_eq!(s, 401);

    // One audit record per call, with persona, prompt and outcome.
    let records = w.audit().await;
    let outcomes: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["persona"].as_str().unwrap_or(""),
                r["tool"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("reader", "list_offers", "ok"),
            ("reader", "grant_user_offer_by_email", "denied"),
            ("reader", "find_user_by_email", "invalid"),
            ("support", "grant_user_offer_by_email", "ok"),
            ("support", "grant_user_offer_by_email", "denied"),
            ("support", "find_user_by_email", "tool_error"),
        ]
    );
    assert_eq!(records[0]["prompt"], "which offers exist?");
    assert_eq!(records[0]["end_user"], "kim@agency.example");
    assert_eq!(records[0]["surface"], "rest");
    assert_eq!(records[0]["connection"], "school");

    // Revocation applies to the next call; others keep working.
    let (s, _, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas/reader/revoke",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = w
        .call(&w.reader, "list_offers", json!({}), "after revoke")
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = w
        .call(&w.support, "list_offers", json!({}), "still fine")
        .await;
    assert_eq!(s, 200);
    // The refused attempt is on record, under the revoked persona.
    let audit = w.audit().await;
    let attempt = audit
        .iter()
        .find(|r| r["prompt"] == "after revoke")
        .expect("the revoked persona's attempt is audited");
    assert_eq!(attempt["persona"], "reader");
    assert_eq!(attempt["outcome"], "denied");

    // The chain verifies; editing a row breaks it.
    let (_, v, _) = w
        .rest(reqwest::Method::GET, "/v1/audit/verify", &w.admin, None)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    tamper(&w).await;
    let (_, v, _) = w
        .rest(reqwest::Method::GET, "/v1/audit/verify", &w.admin, None)
        .await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_seq"], records[1]["seq"]);

    // Secrets: never in responses or audit rows; never in plaintext in the database file.
    let (_, export, text) = w
        .rest(
            reqwest::Method::GET,
            "/v1/audit/export?format=jsonl",
            &w.admin,
            None,
        )
        .await;
    let _ = export;
    transcript.push_str(&text);
    let (_, _, conns) = w
        .rest(reqwest::Method::GET, "/v1/connections", &w.admin, None)
        .await;
    transcript.push_str(&conns);
    for secret in [
        SCHOOL_KEY,
        w.reader.as_str(),
        w.support.as_str(),
        w.admin.as_str(),
    ] {
        assert!(
            !transcript.contains(secret),
            "a secret leaked into an HTTP response or the audit log"
        );
    }
    if let Some(f) = &w.db_file {
        w.hub.close().await;
        let mut bytes = std::fs::read(f).expect("db file");
        for ext in ["-wal", "-shm"] {
            if let Ok(more) = std::fs::read(format!("{}{ext}", f.display())) {
                bytes.extend(more);
            }
        }
        let raw = String::from_utf8_lossy(&bytes);
        for secret in [
            SCHOOL_KEY,
            w.reader.as_str(),
            w.support.as_str(),
            w.admin.as_str(),
        ] {
            assert!(
                !raw.contains(secret),
                "a secret is stored in plaintext in the database file"
            );
        }
    }
    w.close().await;
}

async fn tamper(w: &World) {
    match (&w.db_file, &w.pg) {
        (Some(f), _) => {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.display()))
                .await
                .expect("sqlite");
            sqlx::query("UPDATE audit_log SET arguments = '{\"email\":\"someone-else@example.com\"}' WHERE seq = (SELECT MIN(seq) + 1 FROM audit_log)")
                .execute(&mut c)
                .await
                .expect("tamper");
        }
        (_, Some((url, _))) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
            sqlx::query("UPDATE audit_log SET arguments = '{\"email\":\"someone-else@example.com\"}' WHERE seq = (SELECT MIN(seq) + 1 FROM audit_log)")
                .execute(&mut c)
                .await
                .expect("tamper");
        }
        _ => unreachable!("a world has one database"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scopes_revocation_audit_and_secrets_sqlite() {
    rest_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scopes_revocation_audit_and_secrets_postgres() {
    rest_story(Backend::Postgres).await;
}

async fn mcp_http_story(backend: Backend) {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let w = world(backend).await;
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", w.base))
                .auth_header(w.reader.clone()),
        ))
        .await
        .expect("MCP client connects");
    let tools = client.list_all_tools().await.expect("tools");
    assert_eq!(tools.len(), 7, "read tools only");
    let list_users = tools
        .iter()
        .find(|t| t.name == "list_users")
        .expect("list_users");
    assert_eq!(
        list_users
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint),
        Some(true)
    );
    assert!(list_users.output_schema.is_some());

    let mut params = CallToolRequestParams::new("find_user_by_email").with_arguments(
        json!({"email": w.email})
            .as_object()
            .cloned()
            .expect("object"),
    );
    params.meta = Some(RequestMetaObject::from(
        json!({"prompt": "Is this member active?", "end_user": "support@school.example"})
            .as_object()
            .cloned()
            .expect("object"),
    ));
    let r = client.call_tool(params).await.expect("call");
    assert_ne!(r.is_error, Some(true));
    assert_eq!(
        r.structured_content
            .as_ref()
            .and_then(|v| v["email"].as_str()),
        Some(w.email.as_str())
    );

    let denied = client
        .call_tool(
            CallToolRequestParams::new("delete_users").with_arguments(
                json!({"emails": [w.email]})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
        )
        .await
        .expect("a refusal is a result, not a broken session");
    assert_eq!(denied.is_error, Some(true));
    let invalid = client
        .call_tool(
            CallToolRequestParams::new("find_user_by_email")
                .with_arguments(json!({"email": 5}).as_object().cloned().expect("object")),
        )
        .await
        .expect("invalid arguments are a result");
    assert_eq!(invalid.is_error, Some(true));
    let _ = client.cancel().await;

    // No token: 401.
    let resp = reqwest::Client::new()
        .post(format!("{}/mcp", w.base))
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 401);

    let records = w.audit().await;
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["surface"] == "mcp-http")
        .collect();
    assert_eq!(mine.len(), 3, "one record per call: {records:#?}");
    assert_eq!(mine[0]["prompt"], "Is this member active?");
    assert_eq!(mine[0]["end_user"], "support@school.example");
    assert_eq!(mine[0]["persona"], "reader");
    assert_eq!(mine[1]["outcome"], "denied");
    assert_eq!(mine[2]["outcome"], "invalid");

    // Revocation applies to the next MCP call.
    w.hub.revoke_persona("reader").await.expect("revoke");
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", w.base))
                .auth_header(w.reader.clone()),
        ))
        .await;
    assert!(client.is_err(), "a revoked token cannot open a session");
    // A tool call with the revoked token is refused at the door, and on record.
    let resp = reqwest::Client::new()
        .post(format!("{}/mcp", w.base))
        .bearer_auth(&w.reader)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": { "name": "list_offers", "arguments": {}, "_meta": { "prompt": "still allowed?" } }
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let audit = w.audit().await;
    let attempt = audit
        .iter()
        .find(|r| r["prompt"] == "still allowed?")
        .expect("the revoked persona's attempt is audited");
    assert_eq!(attempt["persona"], "reader");
    assert_eq!(attempt["surface"], "mcp-http");
    assert_eq!(attempt["outcome"], "denied");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_scopes_meta_and_audit_sqlite() {
    mcp_http_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_scopes_meta_and_audit_postgres() {
    mcp_http_story(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_stdio_persona_is_reread_on_every_call() {
    use memberspot_server::mcp::{McpServer, StdioIdentity};
    let w = world(Backend::Sqlite).await;
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = McpServer::stdio(w.hub.clone(), StdioIdentity::Persona("support".into()));
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await.expect("client");
    let tools = client.list_all_tools().await.expect("tools");
    assert_eq!(tools.len(), 7 + 6, "read and write tools");
    let ok = client
        .call_tool(CallToolRequestParams::new("list_offers"))
        .await
        .expect("call");
    assert_ne!(ok.is_error, Some(true));
    w.hub.revoke_persona("support").await.expect("revoke");
    let refused = client
        .call_tool(CallToolRequestParams::new("list_offers"))
        .await
        .expect("result");
    assert_eq!(refused.is_error, Some(true), "revoked on the next call");
    let records = w.audit().await;
    let stdio: Vec<&Value> = records
        .iter()
        .filter(|r| r["surface"] == "mcp-stdio")
        .collect();
    let outcomes: Vec<(&Value, &Value)> = stdio
        .iter()
        .map(|r| (&r["persona"], &r["outcome"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&json!("support"), &json!("ok")),
            (&json!("support"), &json!("denied"))
        ],
        "the refused call is on record under the revoked persona"
    );
    let _ = client.cancel().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_exactly_the_routes_that_answer() {
    let w = world(Backend::Sqlite).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", w.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    // One operation per tool, its arguments as the request body, answered by the
    // generic call route.
    let (per_tool, documented): (Vec<_>, Vec<_>) = documented.into_iter().partition(|(_, p)| {
        p.starts_with("/v1/tools/") && p.ends_with("/call") && !p.contains('{')
    });
    let mut tools: Vec<String> = memberspot_tools::Catalogue::standard()
        .iter()
        .map(|t| format!("/v1/tools/{}/call", t.descriptor.name))
        .collect();
    tools.sort();
    assert_eq!(
        per_tool.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        tools
    );
    let list_offers = &doc["paths"]["/v1/tools/list_offers/call"]["post"];
    assert_eq!(list_offers["operationId"], "list_offers");
    let (s, body, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/tools/list_offers/call",
            &w.support,
            Some(json!({"arguments": {}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    // Error answers carry the error shape.
    assert_eq!(
        doc["paths"]["/v1/tools/{name}/call"]["post"]["responses"]["403"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    assert!(doc["components"]["schemas"]["Error"]["properties"]["error"].is_object());
    // Every documented route answers (anything but 404/405 from the router).
    for (method, path) in &documented {
        let concrete = if path.starts_with("/v1/tools") {
            path.replace("{name}", "list_offers")
        } else {
            path.replace("{name}", "reader")
        };
        let token = if path.starts_with("/v1/tools") {
            w.support.as_str()
        } else {
            w.admin.as_str()
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = reqwest::Client::new()
            .request(m, format!("{}{concrete}", w.base))
            .bearer_auth(token);
        if method == "POST" || method == "PUT" {
            req = req.json(&json!({}));
        }
        let status = req.send().await.expect("send").status().as_u16();
        assert!(
            status != 405,
            "{method} {path} is documented but not routed"
        );
        let body_404_is_routing = status == 404 && !path.contains("{name}");
        assert!(
            !body_404_is_routing,
            "{method} {path} is documented but answers 404"
        );
    }
    // Every route the server answers is documented (the REST routes; /mcp and /openapi.json are not REST operations).
    let expected = [
        ("DELETE", "/v1/connections/{name}"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/export"),
        ("GET", "/v1/audit/verify"),
        ("GET", "/v1/connections"),
        ("GET", "/v1/personas"),
        ("GET", "/v1/personas/{name}"),
        ("GET", "/v1/tools"),
        ("GET", "/v1/tools/{name}"),
        ("PATCH", "/v1/connections/{name}"),
        ("POST", "/v1/connections"),
        ("POST", "/v1/connections/{name}/test"),
        ("POST", "/v1/personas"),
        ("POST", "/v1/personas/{name}/revoke"),
        ("POST", "/v1/personas/{name}/rotate-token"),
        ("POST", "/v1/tools/{name}/call"),
        ("PUT", "/v1/personas/{name}/scopes"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    let (s, _, _) = w
        .rest(reqwest::Method::GET, "/v1/nope", &w.admin, None)
        .await;
    assert_eq!(s, 404);
    let (s, _, _) = w
        .call(&w.support, "list_offers", json!({}), "metrics")
        .await;
    assert_eq!(s, 200);
    let metrics = reqwest::get(format!("{}/metrics", w.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "memberspot_hub_tool_calls_total{tool=\"list_offers\",outcome=\"ok\",surface=\"rest\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("memberspot_hub_tool_call_duration_seconds_bucket"),
        "{metrics}"
    );
    w.close().await;
}

async fn concurrent_calls_story(backend: Backend) {
    use memberspot_hub::{CallContext, Principal, Surface};
    let w = world(backend).await;
    let persona = w.hub.authenticate(&w.support).await.expect("persona");
    let calls = (0..64).map(|i| {
        let hub = w.hub.clone();
        let who = Principal::Persona(persona.clone());
        async move {
            let mut cx = CallContext::new(Surface::Rest);
            cx.prompt = Some(format!("call {i}"));
            hub.call(&who, &cx, "list_offers", json!({})).await
        }
    });
    let outcomes = futures::future::join_all(calls).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.is_ok() && o.audit.is_some())
    );
    let mut seqs: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| o.audit.as_ref().map(|a| a.seq))
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 64, "one distinct record per call");
    let v = w.hub.verify_audit(None).await.expect("verify");
    assert!(v.ok && v.records == 64, "{v:?}");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_commits_and_keep_the_chain_sqlite() {
    concurrent_calls_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_commits_and_keep_the_chain_postgres() {
    concurrent_calls_story(Backend::Postgres).await;
}

/// Arguments for every tool against the world's sandbox school; deletes last.
async fn every_tool_call(w: &World, email: &str) -> Vec<(&'static str, Value)> {
    let state: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", w.sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let course = state["courses"][0]["id"]
        .as_str()
        .expect("course")
        .to_string();
    let chapter = state["courses"][0]["chapters"][0]["id"]
        .as_str()
        .expect("chapter")
        .to_string();
    let exam = state["exams"][0]["id"].as_str().expect("exam").to_string();
    let prop = state["customProperties"][0]["id"]
        .as_str()
        .expect("prop")
        .to_string();
    let offer = w.trial_offer.clone();
    vec![
        (
            "grant_user_offer_by_email",
            json!({"email": email, "offer_id": offer, "order_id": format!("O-{email}")}),
        ),
        ("list_users", json!({"page_length": 5})),
        (
            "grant_offer_bulk",
            json!({"emails": [format!("bulk.{email}")], "offer_id": offer}),
        ),
        ("find_user_by_email", json!({"email": email})),
        ("list_offers", json!({})),
        ("list_custom_user_properties", json!({})),
        (
            "set_custom_user_properties",
            json!({"email": email, "properties": [{"id": prop, "value": "v"}]}),
        ),
        (
            "enable_chapter_access",
            json!({"email": email, "course_id": course, "chapter_id": chapter}),
        ),
        ("list_user_course_progress", json!({"email": email})),
        (
            "get_user_course_progress",
            json!({"email": email, "course_id": course}),
        ),
        ("list_exam_results", json!({"exam_id": exam})),
        (
            "set_offer_expiration",
            json!({"email": email, "offer_id": offer, "expires_at": "2031-01-01"}),
        ),
        (
            "set_user_offer_state",
            json!({"email": email, "offer_id": offer, "state": "inactive"}),
        ),
        (
            "set_order_state",
            json!({"email": email, "order_id": format!("O-{email}"), "state": "active"}),
        ),
        (
            "delete_users_post",
            json!({"emails": ["nobody@example.com"]}),
        ),
        ("create_login_token", json!({"uid": "placeholder"})),
        ("delete_users", json!({"emails": [email]})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_with_every_scope_can_call_every_tool_over_rest_and_mcp() {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let w = world(Backend::Sqlite).await;
    let all = w
        .hub
        .create_persona(PersonaSpec {
            name: "all".into(),
            connection: Some("school".into()),
            // This client cannot confirm destructive calls (no elicitation): the
            // persona opts out of confirmations, as such callers must.
            scopes: vec!["all".into(), "confirm:none".into()],
            ..Default::default()
        })
        .await
        .expect("persona");
    let token = all.token.expose_secret().to_string();

    // REST
    let mut uid = String::new();
    for (tool, mut args) in every_tool_call(&w, "rest.every@example.com").await {
        if tool == "create_login_token" {
            args = json!({"uid": uid});
        }
        let (s, v, _) = w.call(&token, tool, args, "every tool").await;
        assert_eq!(s, 200, "{tool}: {v}");
        if tool == "grant_user_offer_by_email" {
            uid = v["result"]["user"]["uid"]
                .as_str()
                .expect("uid")
                .to_string();
        }
    }

    // MCP over streamable HTTP
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", w.base))
                .auth_header(token.clone()),
        ))
        .await
        .expect("connect");
    assert_eq!(client.list_all_tools().await.expect("tools").len(), 17);
    let mut uid = String::new();
    for (tool, mut args) in every_tool_call(&w, "mcp.every@example.com").await {
        if tool == "create_login_token" {
            args = json!({"uid": uid});
        }
        let r = client
            .call_tool(
                CallToolRequestParams::new(tool)
                    .with_arguments(args.as_object().cloned().expect("object")),
            )
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true), "{tool}: {:?}", r.content);
        if tool == "grant_user_offer_by_email" {
            uid = r
                .structured_content
                .as_ref()
                .and_then(|v| v["user"]["uid"].as_str())
                .expect("uid")
                .to_string();
        }
    }
    let _ = client.cancel().await;
    let records = w.audit().await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["persona"] == "all" && r["outcome"] == "ok")
            .count(),
        34
    );
    w.close().await;
}

/// The hub keeps personas and connections in memory; a change made by another process
/// (the CLI next to `serve`, another instance) through its own store must still apply
/// to the very next call, without a restart.
async fn changes_from_another_process_apply_to_the_next_call(backend: Backend) {
    let w = world(backend).await;
    let url = match (&w.db_file, &w.pg) {
        (Some(f), _) => format!("sqlite://{}", f.display()),
        (None, Some((url, _))) => url.clone(),
        (None, None) => unreachable!("a world has a database"),
    };
    let elsewhere = Store::open(&url).await.expect("second store");
    let grant_other = json!({"email": "other@example.com", "offer_id": w.other_offer});

    // Warm the hub's cache for both personas.
    let (s, _, _) = w.call(&w.reader, "list_offers", json!({}), "warm").await;
    assert_eq!(s, 200);
    let (s, v, _) = w
        .call(
            &w.support,
            "grant_user_offer_by_email",
            grant_other.clone(),
            "outside",
        )
        .await;
    assert_eq!(
        s, 403,
        "the support persona may grant only the trial offer: {v}"
    );

    // Widened elsewhere: the next call may grant any offer.
    elsewhere
        .update_persona_scopes("support", &["read".into(), "write".into()], None, None)
        .await
        .expect("widen");
    let (s, v, _) = w
        .call(
            &w.support,
            "grant_user_offer_by_email",
            grant_other,
            "now allowed",
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Revoked elsewhere: the next call is refused; the other persona keeps working.
    assert!(elsewhere.revoke_persona("reader").await.expect("revoke"));
    let (s, v, _) = w.call(&w.reader, "list_offers", json!({}), "revoked").await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{v}"
    );
    let (s, _, _) = w
        .call(&w.support, "list_offers", json!({}), "still fine")
        .await;
    assert_eq!(s, 200);

    // The calls are all audited, the refused one included, and the chain holds.
    let outcomes: Vec<String> = w
        .audit()
        .await
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["persona"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "reader:ok",
            "support:denied",
            "support:ok",
            "reader:denied",
            "support:ok"
        ],
        "the revoked persona's attempt is on record, refused"
    );
    assert!(elsewhere.verify_audit().await.expect("verify").ok);
    elsewhere.close().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_process_apply_to_the_next_call_sqlite() {
    changes_from_another_process_apply_to_the_next_call(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_process_apply_to_the_next_call_postgres() {
    changes_from_another_process_apply_to_the_next_call(Backend::Postgres).await;
}

/// A call whose caller goes away while it is in flight (a Rust future dropped, an HTTP
/// client that disconnects) is still on record, once, as `cancelled`: it may have
/// reached the school.
async fn cancelled_calls_story(backend: Backend) {
    use memberspot_hub::{CallContext, Principal, Surface};
    let w = world(backend).await;
    let status = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", w.sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .json(&json!({ "latencyMs": 700 }))
        .send()
        .await
        .expect("faults")
        .status();
    assert!(status.is_success(), "{status}");

    let persona = w.hub.authenticate(&w.reader).await.expect("persona");
    let mut cx = CallContext::new(Surface::Rest);
    cx.prompt = Some("dropped future".into());
    let dropped = tokio::time::timeout(
        Duration::from_millis(150),
        w.hub
            .call(&Principal::Persona(persona), &cx, "list_offers", json!({})),
    )
    .await;
    assert!(dropped.is_err(), "the call outlived its caller");

    let gone = reqwest::Client::new()
        .post(format!("{}/v1/tools/list_offers/call", w.base))
        .bearer_auth(&w.reader)
        .timeout(Duration::from_millis(150))
        .json(&json!({ "arguments": {}, "prompt": "client went away" }))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");

    // Past the sandbox's latency: a call that had gone on would have finished by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = w.audit().await;
    for prompt in ["dropped future", "client went away"] {
        let mine: Vec<&Value> = records.iter().filter(|r| r["prompt"] == prompt).collect();
        assert_eq!(mine.len(), 1, "{prompt}: {mine:?}");
        assert_eq!(mine[0]["outcome"], "cancelled", "{prompt}: {}", mine[0]);
        assert_eq!(mine[0]["persona"], "reader");
        assert!(
            mine[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("may or may not have reached the school")),
            "{}",
            mine[0]
        );
    }
    let (status, filtered, _) = w
        .rest(
            reqwest::Method::GET,
            "/v1/audit?outcome=cancelled",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{filtered}");
    assert_eq!(filtered.as_array().map(Vec::len), Some(2), "{filtered}");
    let v = w.hub.verify_audit(None).await.expect("verify");
    assert!(v.ok, "{v:?}");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_are_recorded_sqlite() {
    cancelled_calls_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_are_recorded_postgres() {
    cancelled_calls_story(Backend::Postgres).await;
}

/// A persona's own calls-per-minute limit: the call over it is refused with 429, a
/// `Retry-After` and a retryable error an agent can wait on; it is audited as denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_over_its_per_minute_limit_is_told_when_to_retry() {
    let w = world(Backend::Sqlite).await;
    let limited = w
        .hub
        .create_persona(PersonaSpec {
            name: "limited".into(),
            connection: Some("school".into()),
            calls_per_minute: Some(2),
            ..Default::default()
        })
        .await
        .expect("persona");
    let token = limited.token.expose_secret().to_string();
    for i in 0..2 {
        let (s, v, _) = w.call(&token, "list_offers", json!({}), "within").await;
        assert_eq!(s, 200, "call {i}: {v}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/tools/list_offers/call", w.base))
        .bearer_auth(&token)
        .json(&json!({ "arguments": {} }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["retryable"], true, "{body}");
    assert_eq!(body["error"]["retry_after_secs"], retry_after, "{body}");

    let outcomes: Vec<String> = w
        .audit()
        .await
        .iter()
        .filter(|r| r["persona"] == "limited")
        .map(|r| r["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "denied"]);
    w.close().await;
}

/// Errors made outside the handlers (axum's rejections, the request time-out) have the
/// same JSON shape as the handlers' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_error_has_the_json_error_shape() {
    let w = world(Backend::Sqlite).await;
    let http = reqwest::Client::new();

    let (s, v, text) = w
        .rest(reqwest::Method::GET, "/v1/audit?limit=abc", &w.admin, None)
        .await;
    assert_eq!(s, 400, "{text}");
    assert_eq!(v["error"]["code"], "invalid_query", "{text}");
    assert_eq!(v["error"]["field"], "limit", "{text}");

    let resp = http
        .put(format!("{}/v1/tools", w.base))
        .bearer_auth(&w.reader)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().get("allow").is_some(), "Allow is kept");
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");

    // A request the server gives up on: the sandbox holds every answer for 700 ms.
    let faults = http
        .put(format!("{}/_sandbox/faults", w.sandbox.root_url()))
        .header("X-API-KEY", SCHOOL_KEY)
        .json(&json!({ "latencyMs": 700 }))
        .send()
        .await
        .expect("faults");
    assert!(faults.status().is_success());
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let settings = ServerSettings {
        request_timeout: Duration::from_millis(200),
        ..ServerSettings::default()
    };
    let app = App::build(w.hub.clone(), settings, Vec::new());
    tokio::spawn(app.serve(listener, cancel.clone()));
    let resp = http
        .post(format!("{base}/v1/tools/list_offers/call"))
        .bearer_auth(&w.reader)
        .json(&json!({ "arguments": {} }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 503);
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    cancel.cancel();
    w.close().await;
}

/// Admin changes over REST land in the audit log like the console's, under `rest:admin`,
/// failures included, and never with the token they issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_over_rest_are_audited() {
    let w = world(Backend::Sqlite).await;
    let (s, created, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas",
            &w.admin,
            Some(json!({"name": "helper", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let token = created["token"].as_str().expect("a token").to_owned();
    let (s, v, _) = w
        .rest(
            reqwest::Method::PUT,
            "/v1/personas/helper/scopes",
            &w.admin,
            Some(json!({"scopes": ["write"], "add": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas/nobody/revoke",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas/helper/revoke",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let records = w
        .hub
        .audit(&AuditFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("audit");
    let admin: Vec<_> = records
        .iter()
        .filter(|r| r.tool.starts_with("admin."))
        .collect();
    let mut seen: Vec<(&str, &str)> = admin
        .iter()
        .map(|r| (r.tool.as_str(), r.outcome.as_str()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("admin.create_persona", "ok"),
            ("admin.revoke_persona", "ok"),
            ("admin.revoke_persona", "tool_error"),
            ("admin.set_persona_scopes", "ok"),
        ],
        "{admin:?}"
    );
    for r in &admin {
        assert_eq!(r.end_user.as_deref(), Some("rest:admin"), "{r:?}");
        assert_eq!(r.surface.as_str(), "rest");
    }
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains(&token), "the issued token is not recorded");
    assert!(w.hub.verify_audit(None).await.expect("verify").ok);
    w.close().await;
}
