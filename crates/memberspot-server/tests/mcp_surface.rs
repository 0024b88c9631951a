//! The MCP surface beyond tools — resources, prompts, completion, logging, progress,
//! confirmations (elicitation) and the connector tools — driven by the official SDK's
//! client over streamable HTTP (the real app on port 0) and over an in-process stdio
//! pipe, against the sandbox.

// MCP logging is deprecated in its newest revision; this suite tests it all the same.
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::mcp::{McpServer, StdioIdentity};
use memberspot_server::{App, ServerSettings};
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, ClientCapabilities, ClientConfig, CompleteRequestParams,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
    GetPromptRequestParams, LoggingLevel, LoggingMessageNotificationParam, NumberOrString,
    ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, Reference,
    RequestMetaObject, ResourceContents, SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData as McpError, RoleClient, ServiceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";

struct World {
    sandbox: Sandbox,
    hub: Hub,
    base: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
    tokens: std::collections::HashMap<String, String>,
    offers: Vec<(String, String)>,
    emails: Vec<String>,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 5,
        size: SeedSize {
            users: 12,
            offers: 3,
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
    let store = Store::open(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .expect("store");
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
    let offers: Vec<(String, String)> = state["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| {
            (
                o["id"].as_str().expect("id").to_string(),
                o["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    let emails = state["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["email"].as_str().expect("email").to_string())
        .collect();
    let mut tokens = std::collections::HashMap::new();
    for (name, scopes, offer_ids) in [
        ("reader", vec!["read"], None),
        ("granter", vec!["grant_user_offer_by_email"], None),
        (
            "support",
            vec!["read", "write"],
            Some(vec![offers[0].0.clone()]),
        ),
        ("cleaner", vec!["read", "destructive"], None),
        ("connector", vec!["read", "connector"], None),
    ] {
        let p = hub
            .create_persona(PersonaSpec {
                name: name.into(),
                connection: Some("school".into()),
                scopes: scopes.into_iter().map(String::from).collect(),
                offer_ids,
                ..Default::default()
            })
            .await
            .expect("persona");
        tokens.insert(name.to_string(), p.token.expose_secret().to_string());
    }
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
        tokens,
        offers,
        emails,
    }
}

impl World {
    async fn close(self) {
        self.cancel.cancel();
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
    }

    async fn audit(&self, persona: &str) -> Vec<memberspot_hub::store::AuditRecord> {
        let filter = memberspot_hub::store::AuditFilter {
            persona: Some(persona.to_string()),
            limit: Some(10_000),
            ..Default::default()
        };
        self.hub.audit(&filter).await.expect("audit")
    }

    async fn connect(&self, transport: Transport, persona: &str, probe: Probe) -> Client {
        match transport {
            Transport::Http => probe
                .serve(StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", self.base))
                        .auth_header(self.tokens[persona].clone()),
                ))
                .await
                .expect("connect over HTTP"),
            Transport::Stdio => {
                let (server_io, client_io) = tokio::io::duplex(256 * 1024);
                let server =
                    McpServer::stdio(self.hub.clone(), StdioIdentity::Persona(persona.into()));
                tokio::spawn(async move {
                    if let Ok(running) = server.serve(server_io).await {
                        let _ = running.waiting().await;
                    }
                });
                probe.serve(client_io).await.expect("connect over stdio")
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    Stdio,
}

const BOTH: [Transport; 2] = [Transport::Http, Transport::Stdio];

type Client = RunningService<RoleClient, Probe>;

/// A client that records what the server sends it and answers confirmations as told.
#[derive(Clone, Default)]
struct Probe {
    /// `None`: the client does not declare elicitation.
    answer: Option<ElicitationAction>,
    asked: Arc<Mutex<Vec<String>>>,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    logs: Arc<Mutex<Vec<LoggingMessageNotificationParam>>>,
    /// Woken on every notification.
    arrived: Arc<tokio::sync::Notify>,
}

impl Probe {
    /// Waits (at most 10 s) until `done` holds: a client may handle notifications after
    /// the answer they preceded.
    async fn until(&self, done: impl Fn(&Probe) -> bool) {
        let wait = async {
            loop {
                let next = self.arrived.notified();
                if done(self) {
                    return;
                }
                next.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("notifications arrive");
    }

    fn answering(a: ElicitationAction) -> Self {
        Probe {
            answer: Some(a),
            ..Default::default()
        }
    }
}

impl ClientHandler for Probe {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::default();
        if self.answer.is_some() {
            c.capabilities = ClientCapabilities::builder()
                .enable_elicitation_with(ElicitationCapability::default())
                .build();
        }
        c
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _ctx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = &request {
            self.asked.lock().expect("lock").push(message.clone());
        }
        Ok(ElicitResult::new(
            self.answer.clone().unwrap_or(ElicitationAction::Decline),
        ))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().expect("lock").push(params);
        self.arrived.notify_waiters();
    }

    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        self.logs.lock().expect("lock").push(params);
        self.arrived.notify_waiters();
    }
}

async fn tool_names(c: &Client) -> Vec<String> {
    let tools = c.list_all_tools().await.expect("tools");
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

async fn prompt_names(c: &Client) -> Vec<String> {
    let prompts = c.list_all_prompts().await.expect("prompts");
    prompts.into_iter().map(|p| p.name).collect()
}

/// The school's operator, for looking at (and setting up) the school behind the tests.
fn operator() -> memberspot_hub::Principal {
    memberspot_hub::Principal::Operator {
        connection: "school".into(),
    }
}

fn cli() -> memberspot_hub::CallContext {
    memberspot_hub::CallContext::new(memberspot_hub::Surface::Cli)
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn text_of(r: &rmcp::model::ReadResourceResult) -> Value {
    match &r.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => {
            serde_json::from_str(text).expect("json")
        }
        other => panic!("not text: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_scoped_audited_reads_over_both_transports() {
    let w = world().await;
    let email = w.emails[0].clone();
    for t in BOTH {
        let c = w.connect(t, "reader", Probe::default()).await;
        let listed: Vec<String> = c
            .list_all_resources()
            .await
            .expect("resources")
            .into_iter()
            .map(|r| r.uri.clone())
            .collect();
        assert_eq!(
            listed,
            ["memberspot://school", "memberspot://offers"],
            "{t:?}"
        );
        let templates = c.list_all_resource_templates().await.expect("templates");
        assert_eq!(templates[0].uri_template, "memberspot://members/{email}");

        let school = text_of(
            &c.read_resource(ReadResourceRequestParams::new("memberspot://school"))
                .await
                .expect("school"),
        );
        assert_eq!(school["members"], 12, "{t:?}: {school}");
        assert_eq!(school["offers"].as_array().expect("offers").len(), 3);
        assert!(school["today"]["new_members"].is_number());

        let offers = text_of(
            &c.read_resource(ReadResourceRequestParams::new("memberspot://offers"))
                .await
                .expect("offers"),
        );
        assert_eq!(offers["offers"][0]["id"], w.offers[0].0);

        // The @ percent-encoded, as a client filling the template may send it.
        let uri = format!("memberspot://members/{}", email.replace('@', "%40"));
        let member = text_of(
            &c.read_resource(ReadResourceRequestParams::new(uri))
                .await
                .expect("member"),
        );
        assert_eq!(member["email"], email.as_str());
        for h in member["offers"].as_array().expect("holdings") {
            let id = h["offer_id"].as_str().expect("id");
            let name = &w.offers.iter().find(|(i, _)| i == id).expect("known").1;
            assert_eq!(h["offer_name"], name.as_str(), "{t:?}");
        }
        assert!(member["progress"].is_array());

        // Odd input: clear errors, nothing read.
        for bad in [
            "memberspot://members/../school".to_string(),
            "memberspot://members/..%2F..%2Fetc%2Fpasswd".to_string(),
            "memberspot://members/a%00b@example.com".to_string(),
            "memberspot://members/not-an-address".to_string(),
            "memberspot://nothing".to_string(),
            format!("memberspot://members/{}@example.com", "a".repeat(100_000)),
        ] {
            let e = c
                .read_resource(ReadResourceRequestParams::new(bad.clone()))
                .await
                .expect_err("refused");
            let msg = e.to_string();
            assert!(
                msg.contains("not a member URI")
                    || msg.contains("control character")
                    || msg.contains("path separator")
                    || msg.contains("not an e-mail")
                    || msg.contains("no resource")
                    || msg.contains("too long"),
                "{t:?} {}: {msg}",
                &bad[..bad.len().min(60)]
            );
        }
        let _ = c.cancel().await;
    }
    let records = w.audit("reader").await;
    let surfaces: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.surface.as_str()).collect();
    assert!(
        surfaces.contains("mcp-http") && surfaces.contains("mcp-stdio"),
        "{surfaces:?}"
    );
    assert!(records.iter().any(|r| r.tool == "find_user_by_email"));

    // A persona that may not read members cannot read one as a resource.
    for t in BOTH {
        let c = w.connect(t, "granter", Probe::default()).await;
        let e = c
            .read_resource(ReadResourceRequestParams::new(format!(
                "memberspot://members/{email}"
            )))
            .await
            .expect_err("no read scope");
        assert!(e.to_string().contains("may not call"), "{t:?}: {e}");
        let _ = c.cancel().await;
    }
    assert!(
        w.audit("granter")
            .await
            .iter()
            .all(|r| r.outcome.as_str() == "denied")
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_completion_follow_the_personas_scopes() {
    let w = world().await;
    let (offer_id, offer_name) = w.offers[1].clone();
    for t in BOTH {
        // A reader is offered the prompts it can follow, not the one that grants.
        let c = w.connect(t, "reader", Probe::default()).await;
        let names: Vec<String> = prompt_names(&c).await;
        assert_eq!(names, ["daily_summary", "investigate_access"], "{t:?}");
        let p = c
            .get_prompt(
                GetPromptRequestParams::new("investigate_access")
                    .with_arguments(args(json!({"email": w.emails[0]}))),
            )
            .await
            .expect("prompt");
        let text = serde_json::to_string(&p.messages).expect("json");
        assert!(text.contains("find_user_by_email") && text.contains(&w.emails[0]));
        let e = c
            .get_prompt(
                GetPromptRequestParams::new("investigate_access")
                    .with_arguments(args(json!({"email": "not an address"}))),
            )
            .await
            .expect_err("bad e-mail");
        assert!(e.to_string().contains("email"), "{e}");

        // Completion: offer names from the index, e-mails by prefix.
        let prefix: String = offer_name.chars().take(3).collect();
        let done = c
            .peer()
            .complete(CompleteRequestParams::new(
                Reference::for_prompt("grant_access"),
                ArgumentInfo::new("offer", prefix.to_lowercase()),
            ))
            .await
            .expect("complete");
        assert!(
            done.completion.values.contains(&offer_name),
            "{t:?} {:?}",
            done.completion
        );
        let first: String = w.emails[0].chars().take(2).collect();
        let done = c
            .peer()
            .complete(CompleteRequestParams::new(
                Reference::for_resource("memberspot://members/{email}"),
                ArgumentInfo::new("email", first.clone()),
            ))
            .await
            .expect("complete");
        assert!(done.completion.values.contains(&w.emails[0]), "{t:?}");
        assert!(done.completion.values.iter().all(|e| e.starts_with(&first)));
        let huge = c
            .peer()
            .complete(CompleteRequestParams::new(
                Reference::for_resource("memberspot://members/{email}"),
                ArgumentInfo::new("email", "a".repeat(5000)),
            ))
            .await
            .expect("complete");
        assert!(huge.completion.values.is_empty());
        let _ = c.cancel().await;

        // grant_access resolves the offer name to its id.
        let c = w.connect(t, "cleaner", Probe::default()).await;
        assert!(c.list_all_prompts().await.expect("prompts").len() == 2);
        let _ = c.cancel().await;
        let support = w.connect(t, "support", Probe::default()).await;
        let e = support
            .get_prompt(
                GetPromptRequestParams::new("grant_access").with_arguments(args(
                    json!({"email": "new@example.com", "offer": offer_name}),
                )),
            )
            .await
            .expect("prompt");
        assert!(
            serde_json::to_string(&e.messages)
                .expect("json")
                .contains(&offer_id)
        );

        // An offer-restricted persona is offered only its offers' members.
        let done = support
            .peer()
            .complete(CompleteRequestParams::new(
                Reference::for_prompt("investigate_access"),
                ArgumentInfo::new("email", ""),
            ))
            .await
            .expect("complete");
        let holders: Vec<String> = w
            .hub
            .users_stream(
                &operator(),
                &cli(),
                memberspot_tools::tools::ListUsersInput {
                    offer_id: Some(
                        memberspot_tools::inputs::Id::parse(&w.offers[0].0).expect("id"),
                    ),
                    ..Default::default()
                },
                Default::default(),
            )
            .map_ok(|u| u.email)
            .try_collect()
            .await
            .expect("holders");
        assert!(!done.completion.values.is_empty(), "{t:?}");
        for e in &done.completion.values {
            assert!(
                holders.contains(e),
                "{t:?}: {e} is outside the persona's offer"
            );
        }
        let _ = support.cancel().await;

        // Without read scope, no e-mails.
        let c = w.connect(t, "granter", Probe::default()).await;
        let e = c
            .peer()
            .complete(CompleteRequestParams::new(
                Reference::for_prompt("investigate_access"),
                ArgumentInfo::new("email", ""),
            ))
            .await
            .expect_err("no read scope");
        assert!(e.to_string().contains("may not call"), "{t:?}: {e}");
        let _ = c.cancel().await;
    }
    w.close().await;
}

use futures::TryStreamExt;

#[allow(deprecated)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_grant_reports_progress_and_logs_per_item() {
    let w = world().await;
    let offer = w.offers[0].0.clone();
    for (i, t) in BOTH.into_iter().enumerate() {
        let probe = Probe::default();
        let c = w.connect(t, "support", probe.clone()).await;
        c.peer()
            .set_level(SetLevelRequestParams::new(LoggingLevel::Info))
            .await
            .expect("set level");
        let a = format!("bulk{i}.a@example.com");
        let b = format!("bulk{i}.b@example.com");
        let mut params = CallToolRequestParams::new("grant_offer_bulk").with_arguments(args(
            json!({"emails": [a, b, a.to_uppercase()], "offer_id": offer}),
        ));
        params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
            NumberOrString::Number(7),
        )));
        let r = c.call_tool(params).await.expect("bulk");
        assert_ne!(r.is_error, Some(true), "{t:?}: {:?}", r.content);
        let out = r.structured_content.expect("structured");
        assert_eq!(out["granted"], 2, "{out}");
        assert_eq!(out["items"][2]["status"], "duplicate");
        probe
            .until(|p| {
                p.progress.lock().expect("lock").len() >= 3
                    && p.logs
                        .lock()
                        .expect("lock")
                        .iter()
                        .any(|l| l.data["tool"] == "grant_offer_bulk")
            })
            .await;
        let progress = probe.progress.lock().expect("lock").clone();
        // The client may handle notifications concurrently; the server sends them in
        // order (see the unit test of `mcp::logging`).
        let mut steps: Vec<f64> = progress.iter().map(|p| p.progress).collect();
        steps.sort_by(f64::total_cmp);
        assert_eq!(steps, [1.0, 2.0, 3.0], "{t:?}");
        assert!(progress.iter().all(|p| p.total == Some(3.0)));
        let logs = probe.logs.lock().expect("lock").clone();
        assert!(
            logs.iter()
                .any(|l| l.data["tool"] == "grant_offer_bulk" && l.data["outcome"] == "ok"),
            "{t:?}: {logs:?}"
        );

        // Oversized: refused as invalid, nothing granted.
        let many: Vec<String> = (0..51).map(|n| format!("many{n}@example.com")).collect();
        let r = c
            .call_tool(
                CallToolRequestParams::new("grant_offer_bulk")
                    .with_arguments(args(json!({"emails": many, "offer_id": offer}))),
            )
            .await
            .expect("result");
        assert_eq!(r.is_error, Some(true));
        assert!(format!("{:?}", r.content).contains("at most 50"));
        // Outside the persona's offer: refused.
        let r = c
            .call_tool(
                CallToolRequestParams::new("grant_offer_bulk").with_arguments(args(
                    json!({"emails": ["x@example.com"], "offer_id": w.offers[1].0}),
                )),
            )
            .await
            .expect("result");
        assert_eq!(r.is_error, Some(true));
        let _ = c.cancel().await;
    }
    w.close().await;
}

async fn holds_active(w: &World, email: &str, offer: &str) -> bool {
    let user = w
        .hub
        .run::<memberspot_tools::tools::FindUserByEmailTool>(
            &operator(),
            &cli(),
            memberspot_tools::tools::EmailInput {
                email: memberspot_tools::inputs::Email::parse(email).expect("email"),
            },
        )
        .await
        .expect("member");
    user.holding(offer).is_some_and(|h| h.active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_calls_wait_for_the_users_confirmation() {
    let w = world().await;
    let offer = w.offers[0].0.clone();
    let persona = w.hub.persona("cleaner").await.expect("cleaner");
    assert!(
        persona.scopes.contains(&"confirm:destructive".to_string()),
        "{:?}",
        persona.scopes
    );
    for (i, t) in BOTH.into_iter().enumerate() {
        let email = format!("confirm{i}@example.com");
        w.hub
            .run::<memberspot_tools::tools::GrantUserOfferByEmailTool>(
                &operator(),
                &cli(),
                memberspot_tools::tools::GrantInput {
                    email: memberspot_tools::inputs::Email::parse(&email).expect("email"),
                    offer_id: memberspot_tools::inputs::Id::parse(&offer).expect("id"),
                    first_name: None,
                    last_name: None,
                    order_id: None,
                },
            )
            .await
            .expect("grant");
        let revoke = || {
            CallToolRequestParams::new("set_user_offer_state").with_arguments(args(
                json!({"email": email, "offer_id": offer, "state": "inactive"}),
            ))
        };

        // Declined: nothing happens, the audit says so.
        let probe = Probe::answering(ElicitationAction::Decline);
        let c = w.connect(t, "cleaner", probe.clone()).await;
        let r = c.call_tool(revoke()).await.expect("result");
        assert_eq!(r.is_error, Some(true), "{t:?}");
        assert!(format!("{:?}", r.content).contains("declined"));
        assert_eq!(probe.asked.lock().expect("lock").len(), 1);
        assert!(probe.asked.lock().expect("lock")[0].contains("set_user_offer_state"));
        assert!(
            holds_active(&w, &email, &offer).await,
            "{t:?}: declined but changed"
        );
        let _ = c.cancel().await;

        // A client that cannot ask: a clear refusal naming the way out.
        let c = w.connect(t, "cleaner", Probe::default()).await;
        let r = c.call_tool(revoke()).await.expect("result");
        assert_eq!(r.is_error, Some(true));
        let text = format!("{:?}", r.content);
        assert!(
            text.contains("elicitation") && text.contains("confirm:none"),
            "{text}"
        );
        assert!(holds_active(&w, &email, &offer).await);
        // Reads are not asked about.
        let r = c
            .call_tool(CallToolRequestParams::new("list_offers"))
            .await
            .expect("read");
        assert_ne!(r.is_error, Some(true));
        let _ = c.cancel().await;

        // Accepted: the call runs, and its record says it was confirmed.
        let probe = Probe::answering(ElicitationAction::Accept);
        let c = w.connect(t, "cleaner", probe.clone()).await;
        let r = c.call_tool(revoke()).await.expect("result");
        assert_ne!(r.is_error, Some(true), "{t:?}: {:?}", r.content);
        assert!(!holds_active(&w, &email, &offer).await);
        let _ = c.cancel().await;
    }
    let records = w.audit("cleaner").await;
    let revokes: Vec<_> = records
        .iter()
        .filter(|r| r.tool == "set_user_offer_state")
        .collect();
    assert_eq!(
        revokes.len(),
        6,
        "declined, refused and confirmed on each transport"
    );
    assert_eq!(
        revokes
            .iter()
            .filter(|r| r.outcome.as_str() == "denied"
                && r.error.as_deref().is_some_and(|e| e.contains("declined")))
            .count(),
        2
    );
    assert_eq!(
        revokes
            .iter()
            .filter(|r| r.outcome.as_str() == "ok"
                && r.prompt
                    .as_deref()
                    .is_some_and(|p| p.contains("confirmed by the user")))
            .count(),
        2
    );

    // `confirm:none` turns it off for this persona.
    w.hub
        .set_persona_scopes("cleaner", &["confirm:none".to_string()], true, None, None)
        .await
        .expect("scopes");
    let probe = Probe::answering(ElicitationAction::Decline);
    let c = w.connect(Transport::Stdio, "cleaner", probe.clone()).await;
    let r = c
        .call_tool(
            CallToolRequestParams::new("set_user_offer_state").with_arguments(args(
                json!({"email": "confirm0@example.com", "offer_id": offer, "state": "active"}),
            )),
        )
        .await
        .expect("result");
    assert_ne!(r.is_error, Some(true), "{:?}", r.content);
    assert!(probe.asked.lock().expect("lock").is_empty());
    let _ = c.cancel().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_fetch_are_offered_to_connector_personas_only() {
    let w = world().await;
    let (offer_id, offer_name) = w.offers[0].clone();
    for t in BOTH {
        let c = w.connect(t, "connector", Probe::default()).await;
        let names: Vec<String> = tool_names(&c).await;
        assert!(names.contains(&"search".to_string()) && names.contains(&"fetch".to_string()));
        let r = c
            .call_tool(
                CallToolRequestParams::new("search")
                    .with_arguments(args(json!({"query": offer_name}))),
            )
            .await
            .expect("search");
        let out = r.structured_content.expect("structured");
        let hit = &out["results"][0];
        assert_eq!(hit["id"], format!("offer:{offer_id}"), "{t:?}: {out}");
        assert!(hit["title"].is_string() && hit["url"].is_string());
        let r = c
            .call_tool(
                CallToolRequestParams::new("search")
                    .with_arguments(args(json!({"query": w.emails[1]}))),
            )
            .await
            .expect("search");
        let id = r.structured_content.expect("structured")["results"][0]["id"].clone();
        let r = c
            .call_tool(CallToolRequestParams::new("fetch").with_arguments(args(json!({"id": id}))))
            .await
            .expect("fetch");
        let doc = r.structured_content.expect("structured");
        for key in ["id", "title", "text", "url", "metadata"] {
            assert!(!doc[key].is_null(), "{t:?}: {key} in {doc}");
        }
        let r = c
            .call_tool(
                CallToolRequestParams::new("fetch").with_arguments(args(json!({"id": "../etc"}))),
            )
            .await
            .expect("fetch");
        assert_eq!(r.is_error, Some(true));
        let _ = c.cancel().await;

        let c = w.connect(t, "reader", Probe::default()).await;
        let names: Vec<String> = tool_names(&c).await;
        assert!(!names.contains(&"search".to_string()));
        let r = c
            .call_tool(
                CallToolRequestParams::new("search").with_arguments(args(json!({"query": "a"}))),
            )
            .await
            .expect("result");
        assert_eq!(r.is_error, Some(true));
        let _ = c.cancel().await;
    }
    let refused = w.audit("reader").await;
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.tool == "search" && r.outcome.as_str() == "denied")
            .count(),
        2,
        "refused on each transport, and recorded"
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_the_schools_rate_limit_says_so() {
    let w = world().await;
    w.hub
        .add_connection(
            "slow",
            &w.sandbox.base_url(),
            &SecretString::from(SCHOOL_KEY.to_string()),
            1.5,
        )
        .await
        .expect("connection");
    w.hub
        .create_persona(PersonaSpec {
            name: "slow".into(),
            connection: Some("slow".into()),
            scopes: vec!["write".into()],
            ..Default::default()
        })
        .await
        .expect("persona");
    let probe = Probe::default();
    let c = w.connect(Transport::Stdio, "slow", probe.clone()).await;
    let mut params = CallToolRequestParams::new("grant_offer_bulk").with_arguments(args(json!({
        "emails": ["slow.a@example.com", "slow.b@example.com"],
        "offer_id": w.offers[0].0,
    })));
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::String("slow".into()),
    )));
    let r = c.call_tool(params).await.expect("bulk");
    assert_ne!(r.is_error, Some(true), "{:?}", r.content);
    probe
        .until(|p| p.progress.lock().expect("lock").len() >= 3)
        .await;
    let messages: Vec<String> = probe
        .progress
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|p| p.message.clone())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("for the school's rate limit")),
        "{messages:?}"
    );
    let _ = c.cancel().await;
    w.close().await;
}
