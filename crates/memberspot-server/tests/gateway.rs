//! The gateway as a trust boundary, end to end against the sandbox over REST and MCP, on
//! SQLite and PostgreSQL: offer restrictions that fail closed, secrets kept out of
//! records, limits and caps that keep callers from flooding the audit log, and a
//! `/metrics` page that callers cannot write into.

use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, ServerSettings};
use memberspot_tools::Catalogue;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::{RoleClient, transport::StreamableHttpClientTransport};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, drop_database, fresh_postgres};

const SCHOOL_KEY: &str = "sk_live_gateway_school_key_0c8e2a6f4b19d735";

struct World {
    sandbox: Sandbox,
    hub: Hub,
    base: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
    db_file: Option<std::path::PathBuf>,
    pg: Option<(String, String)>,
    admin: String,
}

async fn world(backend: Backend) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Six courses over four offers (each offer unlocks one to three of them): every
    // offer leaves out courses that another offer sells.
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 11,
        size: SeedSize {
            users: 8,
            offers: 4,
            courses: 6,
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
        admin: admin.expose_secret().to_string(),
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

    async fn persona(&self, spec: PersonaSpec) -> String {
        let issued = self
            .hub
            .create_persona(PersonaSpec {
                connection: Some("school".into()),
                ..spec
            })
            .await
            .expect("persona");
        issued.token.expose_secret().to_string()
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

    async fn call(&self, token: &str, tool: &str, args: &Value, prompt: &str) -> (u16, Value) {
        let (s, v, _) = self
            .rest(
                reqwest::Method::POST,
                &format!("/v1/tools/{tool}/call"),
                token,
                Some(json!({ "arguments": args, "prompt": prompt })),
            )
            .await;
        (s, v)
    }

    /// Every audit record, through the admin API.
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

    async fn sandbox_get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.sandbox.root_url()))
            .header("X-API-KEY", SCHOOL_KEY)
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json")
    }

    /// The sandbox's members, by e-mail.
    async fn member(&self, email: &str) -> Value {
        let state = self.sandbox_get("/_sandbox/state").await;
        state["users"]
            .as_array()
            .and_then(|us| us.iter().find(|u| u["email"] == email).cloned())
            .unwrap_or(Value::Null)
    }

    /// Calls a tool on the school directly, as set-up (no persona, no record).
    async fn school(&self, tool: &str, args: Value) -> Value {
        let client = self.hub.client_for("school").await.expect("client");
        Catalogue::standard()
            .call(&client, tool, args)
            .await
            .unwrap_or_else(|e| panic!("set-up {tool}: {e}"))
    }

    async fn mcp(&self, token: &str) -> RunningService<RoleClient, ()> {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        ().serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", self.base))
                .auth_header(token.to_string()),
        ))
        .await
        .expect("MCP client connects")
    }
}

/// A tool call over MCP: `(succeeded, structured content)`.
async fn mcp_call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    args: &Value,
    prompt: &str,
) -> (bool, Value) {
    let mut params = CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().cloned().expect("object"));
    params.meta = Some(RequestMetaObject::from(
        json!({ "prompt": prompt })
            .as_object()
            .cloned()
            .expect("object"),
    ));
    let r = client
        .call_tool(params)
        .await
        .expect("a refusal is a result");
    (
        r.is_error != Some(true),
        r.structured_content.unwrap_or(Value::Null),
    )
}

/// Offers, courses and members for an offer-restricted persona: the free `trial` offer
/// it may act within, and a `premium` offer that sells a course the trial does not.
struct Offers {
    trial: String,
    premium: String,
    trial_course: String,
    trial_chapter: String,
    premium_course: String,
    premium_chapter: String,
    property: String,
    trial_member: String,
    trial_uid: String,
    premium_member: String,
    premium_uid: String,
    expired_uid: String,
}

async fn offers_and_members(w: &World) -> Offers {
    let state = w.sandbox_get("/_sandbox/state").await;
    let courses_of = |o: &Value| -> Vec<String> {
        o["courseIds"]
            .as_array()
            .expect("courseIds")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect()
    };
    let offers = state["offers"].as_array().expect("offers");
    let trial = &offers[0];
    let trial_courses = courses_of(trial);
    let (premium, premium_course) = offers[1..]
        .iter()
        .find_map(|o| {
            courses_of(o)
                .into_iter()
                .find(|c| !trial_courses.contains(c))
                .map(|c| (o, c))
        })
        .expect("an offer selling a course the trial does not");
    let chapter_of = |course: &str| -> String {
        state["courses"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == course))
            .and_then(|c| c["chapters"][0]["id"].as_str())
            .expect("chapter")
            .to_string()
    };
    let trial_id = trial["id"].as_str().expect("id").to_string();
    let premium_id = premium["id"].as_str().expect("id").to_string();
    let grant = |email: &str, offer: &str| json!({"email": email, "offer_id": offer, "first_name": "Set", "last_name": "Up", "order_id": format!("O-{email}")});
    let uid = |v: &Value| v["user"]["uid"].as_str().expect("uid").to_string();
    let trial_member = "trial.member@example.com".to_string();
    let premium_member = "premium.member@example.com".to_string();
    let trial_uid = uid(&w
        .school("grant_user_offer_by_email", grant(&trial_member, &trial_id))
        .await);
    let premium_uid = uid(&w
        .school(
            "grant_user_offer_by_email",
            grant(&premium_member, &premium_id),
        )
        .await);
    // Held once, ended since: not a current holder.
    let expired_uid = uid(&w
        .school(
            "grant_user_offer_by_email",
            grant("expired.member@example.com", &trial_id),
        )
        .await);
    w.school(
        "set_offer_expiration",
        json!({"email": "expired.member@example.com", "offer_id": trial_id, "expires_at": "2020-01-01"}),
    )
    .await;
    Offers {
        trial_chapter: chapter_of(&trial_courses[0]),
        trial_course: trial_courses[0].clone(),
        premium_chapter: chapter_of(&premium_course),
        premium_course,
        trial: trial_id,
        premium: premium_id,
        property: state["customProperties"][0]["id"]
            .as_str()
            .expect("property")
            .to_string(),
        trial_member,
        trial_uid,
        premium_member,
        premium_uid,
        expired_uid,
    }
}

/// What an offer-restricted persona may do, and what it is refused, with a word of
/// the reason. `new_member` differs per surface.
fn offer_cases(o: &Offers, new_member: &str) -> Vec<(&'static str, Value, Option<&'static str>)> {
    let props = |email: &str| json!({"email": email, "properties": [{"id": o.property, "value": "Desk GmbH"}]});
    vec![
        // Allowed: provably within the trial offer.
        (
            "grant_user_offer_by_email",
            json!({"email": new_member, "offer_id": o.trial}),
            None,
        ),
        (
            "set_offer_expiration",
            json!({"email": o.trial_member, "offer_id": o.trial, "expires_at": "2031-01-01"}),
            None,
        ),
        (
            "set_user_offer_state",
            json!({"email": new_member, "offer_id": o.trial, "state": "inactive"}),
            None,
        ),
        (
            "enable_chapter_access",
            json!({"email": o.trial_member, "course_id": o.trial_course, "chapter_id": o.trial_chapter}),
            None,
        ),
        ("create_login_token", json!({"uid": o.trial_uid}), None),
        ("set_custom_user_properties", props(&o.trial_member), None),
        ("list_users", json!({"page_length": 3}), None),
        // Refused: not provably within it.
        (
            "delete_users",
            json!({"emails": [o.trial_member]}),
            Some("not allowed"),
        ),
        (
            "delete_users_post",
            json!({"emails": [o.premium_member]}),
            Some("not allowed"),
        ),
        (
            "enable_chapter_access",
            json!({"email": o.trial_member, "course_id": o.premium_course, "chapter_id": o.premium_chapter}),
            Some("not a course of those offers"),
        ),
        (
            "create_login_token",
            json!({"uid": o.premium_uid}),
            Some("not shown to hold one"),
        ),
        (
            "create_login_token",
            json!({"uid": "no-such-member-uid"}),
            Some("not shown to hold one"),
        ),
        (
            "create_login_token",
            json!({"uid": o.expired_uid}),
            Some("not shown to hold one"),
        ),
        (
            "set_custom_user_properties",
            props(&o.premium_member),
            Some("not shown to hold one"),
        ),
        (
            "set_custom_user_properties",
            props("nobody.here@example.com"),
            Some("not shown to hold one"),
        ),
        (
            "set_order_state",
            json!({"email": o.trial_member, "order_id": format!("O-{}", o.trial_member), "state": "inactive"}),
            Some("not allowed"),
        ),
        (
            "grant_user_offer_by_email",
            json!({"email": new_member, "offer_id": o.premium}),
            Some("not `"),
        ),
        (
            "set_user_offer_state",
            json!({"email": o.premium_member, "offer_id": o.premium, "state": "remove"}),
            Some("not `"),
        ),
    ]
}

/// A refusal must not tell the caller anything about members outside the offers.
fn assert_no_leak(o: &Offers, what: &str, text: &str) {
    for (secret, name) in [
        (o.premium.as_str(), "the premium offer"),
        (o.premium_uid.as_str(), "the premium member's uid"),
        (o.premium_member.as_str(), "the premium member's e-mail"),
        ("Set", "a member's name"),
    ] {
        // The caller's own argument may be echoed; nothing else about the member.
        if what.contains(secret) {
            continue;
        }
        assert!(!text.contains(secret), "{what}: {name} leaked: {text}");
    }
}

async fn offer_restriction_story(backend: Backend) {
    let w = world(backend).await;
    let o = offers_and_members(&w).await;
    let token = w
        .persona(PersonaSpec {
            name: "trial-desk".into(),
            // The MCP client below cannot confirm destructive calls (no elicitation).
            scopes: vec!["all".into(), "confirm:none".into()],
            offer_ids: Some(vec![o.trial.clone()]),
            ..Default::default()
        })
        .await;
    let premium_before = w.member(&o.premium_member).await;
    let trial_before = w.member(&o.trial_member).await;

    // REST
    let cases = offer_cases(&o, "new.rest@example.com");
    for (tool, args, refusal) in &cases {
        let (status, v) = w.call(&token, tool, args, "offer case").await;
        match refusal {
            None => assert_eq!(status, 200, "{tool} {args}: {v}"),
            Some(why) => {
                assert_eq!(status, 403, "{tool} {args} must be refused: {v}");
                assert_eq!(v["error"]["code"], "denied", "{v}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(msg.contains(why), "{tool}: {why:?} not in {msg}");
                assert_no_leak(&o, &args.to_string(), msg);
            }
        }
    }
    // A member who does not exist and one who holds only other offers get the same answer.
    let message = |v: &(u16, Value)| {
        v.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let premium = w
        .call(
            &token,
            "create_login_token",
            &json!({"uid": o.premium_uid}),
            "x",
        )
        .await;
    let nobody = w
        .call(&token, "create_login_token", &json!({"uid": "zz"}), "x")
        .await;
    assert_eq!(
        message(&premium).replace(&o.premium_uid, "UID"),
        message(&nobody).replace("zz", "UID")
    );

    // MCP over streamable HTTP: the same rules.
    let client = w.mcp(&token).await;
    let listed = client.list_all_tools().await.expect("tools");
    assert_eq!(
        listed.len(),
        17,
        "scopes decide what is listed; offers decide calls"
    );
    for (tool, args, refusal) in offer_cases(&o, "new.mcp@example.com") {
        let (ok, v) = mcp_call(&client, tool, &args, "offer case").await;
        match refusal {
            None => assert!(ok, "{tool} {args}: {v}"),
            Some(why) => {
                assert!(!ok, "{tool} {args} must be refused: {v}");
                assert_eq!(v["error"]["code"], "denied", "{v}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(msg.contains(why), "{tool}: {why:?} not in {msg}");
                assert_no_leak(&o, &args.to_string(), msg);
            }
        }
    }
    let _ = client.cancel().await;

    // Nothing outside the trial offer changed in the school.
    let premium_after = w.member(&o.premium_member).await;
    assert_eq!(
        premium_after, premium_before,
        "the premium member is untouched"
    );
    let trial_after = w.member(&o.trial_member).await;
    assert!(!trial_after.is_null(), "the trial member was not deleted");
    assert!(
        !trial_after["unlockedChapters"]
            .to_string()
            .contains(&o.premium_chapter),
        "{trial_after}"
    );
    assert_eq!(
        trial_after["offers"][0]["active"], trial_before["offers"][0]["active"],
        "the order was not switched"
    );
    // The refused calls never reached the school; the look-ups did, on the same key.
    let requests = w.sandbox_get("/_sandbox/requests").await;
    let sent: Vec<String> = requests
        .as_array()
        .expect("log")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    for never in [
        format!("GET /v1/users/login-token/{}", o.premium_uid),
        "DELETE /v1/users/delete-users".to_string(),
        "POST /v1/users/delete-users".to_string(),
        "POST /v1/users/set-order-state".to_string(),
    ] {
        assert!(!sent.contains(&never), "`{never}` reached the school");
    }
    let chapter_bodies: Vec<&Value> = requests
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains("chapter-access"))
        })
        .map(|r| &r["body"])
        .collect();
    assert_eq!(
        chapter_bodies.len(),
        2,
        "one allowed unlock per surface: {chapter_bodies:?}"
    );
    assert!(!format!("{chapter_bodies:?}").contains(&o.premium_course));
    assert!(
        sent.iter()
            .any(|s| s.starts_with("GET /v1/users/find-by-mail/")),
        "members are looked up by e-mail: {sent:?}"
    );

    // One record per call (look-ups are part of the call), refusals `denied` with the
    // reason and no response.
    let records: Vec<Value> = w
        .audit()
        .await
        .into_iter()
        .filter(|r| r["persona"] == "trial-desk")
        .collect();
    assert_eq!(records.len(), 2 * cases.len() + 2, "{records:#?}");
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "denied")
        .collect();
    let refused_cases = cases.iter().filter(|c| c.2.is_some()).count();
    assert_eq!(denied.len(), 2 * refused_cases + 2);
    for r in &denied {
        assert!(r["response"].is_null(), "{r}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("denied: this persona may"), "{r}");
        assert_no_leak(&o, &r["arguments"].to_string(), error);
    }
    assert!(
        records
            .iter()
            .filter(|r| r["outcome"] != "denied")
            .all(|r| r["outcome"] == "ok"),
        "{records:#?}"
    );
    assert!(w.hub.verify_audit(None).await.expect("verify").ok);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_restricted_persona_is_allowed_only_what_provably_stays_within_its_offers_sqlite()
{
    offer_restriction_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_restricted_persona_is_allowed_only_what_provably_stays_within_its_offers_postgres()
 {
    offer_restriction_story(Backend::Postgres).await;
}

/// `--offers` names offers of the persona's school: a typo would otherwise restrict the
/// persona to nothing, or to another school's offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_restrictions_must_name_offers_of_the_connection() {
    let w = world(Backend::Sqlite).await;
    let state = w.sandbox_get("/_sandbox/state").await;
    let real = state["offers"][0]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas",
            &w.admin,
            Some(json!({"name": "typo", "connection": "school", "scopes": ["write"], "offer_ids": [real, "NOSUCH"]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("NOSUCH") && msg.contains("school"), "{msg}");
    assert!(!msg.contains(&real), "only the unknown one is named: {msg}");
    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas",
            &w.admin,
            Some(json!({"name": "empty", "connection": "school", "offer_ids": [" "]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Nothing was created.
    assert!(w.hub.list_personas().await.expect("list").is_empty());

    let (s, v, _) = w
        .rest(
            reqwest::Method::POST,
            "/v1/personas",
            &w.admin,
            Some(json!({"name": "ok", "connection": "school", "scopes": ["write"], "offer_ids": [format!(" {real}"), real]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let stored = w.hub.persona_any("ok").await.expect("persona");
    assert_eq!(stored.offer_ids, Some(vec![real.clone()]), "trimmed, once");
    let (s, v, _) = w
        .rest(
            reqwest::Method::PUT,
            "/v1/personas/ok/scopes",
            &w.admin,
            Some(json!({"scopes": ["write"], "offer_ids": ["NOSUCH"]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let stored = w.hub.persona_any("ok").await.expect("persona");
    assert_eq!(stored.offer_ids, Some(vec![real]), "unchanged");
    w.close().await;
}

/// Scopes stored by an older version (a tool since renamed) or edited by hand are refused
/// loudly, never read as "no permissions" (or worse, as something else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_scopes_that_no_longer_parse_are_refused_loudly() {
    let w = world(Backend::Sqlite).await;
    let token = w
        .persona(PersonaSpec {
            name: "old".into(),
            ..Default::default()
        })
        .await;
    w.hub
        .store()
        .update_persona_scopes("old", &["read".into(), "retired_tool".into()], None, None)
        .await
        .expect("an old row");
    let (s, v) = w.call(&token, "list_offers", &json!({}), "still?").await;
    assert_eq!(s, 403, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("retired_tool") && msg.contains("no longer parse"),
        "{msg}"
    );
    let (s, v, _) = w
        .rest(reqwest::Method::GET, "/v1/tools", &token, None)
        .await;
    assert_eq!(s, 403, "not an empty list: {v}");
    assert!(v.to_string().contains("retired_tool"), "{v}");
    let (s, _, _) = w
        .rest(reqwest::Method::GET, "/v1/tools/list_offers", &token, None)
        .await;
    assert_eq!(s, 403);
    let client = w.mcp(&token).await;
    let listed = client.list_all_tools().await;
    assert!(
        listed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("retired_tool")),
        "{listed:?}"
    );
    let _ = client.cancel().await;
    let records = w.audit().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["outcome"], "denied");
    assert!(
        records[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("retired_tool")),
        "{}",
        records[0]
    );
    w.close().await;
}

/// Everything stored of the audit log as text: rows through SQL, the raw SQLite file.
async fn stored_text(w: &World) -> String {
    let mut text = String::new();
    match (&w.db_file, &w.pg) {
        (Some(f), _) => {
            w.hub.close().await;
            let mut bytes = std::fs::read(f).expect("db file");
            for ext in ["-wal", "-shm"] {
                if let Ok(more) = std::fs::read(format!("{}{ext}", f.display())) {
                    bytes.extend(more);
                }
            }
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        (_, Some((url, _))) => {
            use sqlx::{Connection, Row};
            let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
            for table in ["audit_log", "flow_steps", "flow_runs"] {
                let rows = sqlx::query(&format!("SELECT t::text AS row FROM {table} t"))
                    .fetch_all(&mut c)
                    .await
                    .expect("rows");
                for row in rows {
                    text.push_str(&row.get::<String, _>("row"));
                }
            }
        }
        _ => unreachable!("a world has one database"),
    }
    text
}

async fn secrets_story(backend: Backend) {
    use memberspot_hub::{CallContext, Principal, Surface};
    let w = world(backend).await;
    let member = w
        .school(
            "grant_user_offer_by_email",
            json!({"email": "login.link@example.com", "offer_id": w.sandbox_get("/_sandbox/state").await["offers"][0]["id"]}),
        )
        .await;
    let uid = member["user"]["uid"].as_str().expect("uid").to_string();
    let token = w
        .persona(PersonaSpec {
            name: "linker".into(),
            scopes: vec!["read".into(), "create_login_token".into()],
            ..Default::default()
        })
        .await;

    // The callers get the token: REST, MCP, the CLI's operator path.
    let mut minted = Vec::new();
    let (s, v) = w
        .call(&token, "create_login_token", &json!({"uid": uid}), "link")
        .await;
    assert_eq!(s, 200, "{v}");
    minted.push(v["result"]["token"].as_str().expect("token").to_string());
    let client = w.mcp(&token).await;
    let (ok, v) = mcp_call(&client, "create_login_token", &json!({"uid": uid}), "link").await;
    assert!(ok, "{v}");
    minted.push(v["token"].as_str().expect("token").to_string());
    let _ = client.cancel().await;
    let out = w
        .hub
        .call(
            &Principal::Operator {
                connection: "school".into(),
            },
            &CallContext::new(Surface::Cli),
            "create_login_token",
            json!({"uid": uid}),
        )
        .await;
    minted.push(
        out.result.expect("minted")["token"]
            .as_str()
            .expect("token")
            .to_string(),
    );
    assert!(minted.iter().all(|t| t.len() >= 32), "{minted:?}");

    // The records keep a fingerprint: in the API, both exports and the database.
    let records: Vec<Value> = w
        .audit()
        .await
        .into_iter()
        .filter(|r| r["tool"] == "create_login_token")
        .collect();
    assert_eq!(records.len(), 3);
    for (r, t) in records.iter().zip(&minted) {
        assert_eq!(
            r["response"]["token"],
            memberspot_tools::redact::fingerprint(t),
            "{r}"
        );
        assert_eq!(r["response"]["expires_in_seconds"], 3600);
    }
    let mut recorded = serde_json::to_string(&records).expect("json");
    for format in ["jsonl", "csv"] {
        let (s, _, text) = w
            .rest(
                reqwest::Method::GET,
                &format!("/v1/audit/export?format={format}"),
                &w.admin,
                None,
            )
            .await;
        assert_eq!(s, 200);
        recorded.push_str(&text);
    }
    assert!(w.hub.verify_audit(None).await.expect("verify").ok);
    recorded.push_str(&stored_text(&w).await);
    for t in &minted {
        assert!(!recorded.contains(t.as_str()), "a login token was recorded");
    }
    assert!(recorded.contains("(redacted, sha256:"));
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_reach_the_caller_and_only_their_fingerprint_is_recorded_sqlite() {
    secrets_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_reach_the_caller_and_only_their_fingerprint_is_recorded_postgres() {
    secrets_story(Backend::Postgres).await;
}

/// What one caller can write into the audit log and `/metrics`.
async fn flooding_story(backend: Backend) {
    let w = world(backend).await;
    let cap = memberspot_hub::AUDIT_TEXT_CAP;
    // Within the 256 KiB body limit together with the arguments.
    let huge = "p".repeat(100 * 1024);

    // The per-persona limit comes first: refused and unknown calls count against it.
    let limited = w
        .persona(PersonaSpec {
            name: "limited".into(),
            calls_per_minute: Some(1),
            ..Default::default()
        })
        .await;
    let requests_before = w.sandbox_get("/_sandbox/requests").await;
    let mut statuses = Vec::new();
    for (tool, args) in [
        ("no_such_tool", json!({"blob": "a".repeat(40 * 1024)})),
        ("no_such_tool", json!({"blob": "a".repeat(40 * 1024)})),
        ("delete_users", json!({"emails": ["a@example.com"]})),
        ("list_offers", json!({})),
    ] {
        let (s, v, _) = w
            .rest(
                reqwest::Method::POST,
                &format!("/v1/tools/{tool}/call"),
                &limited,
                Some(json!({"arguments": args, "prompt": huge, "end_user": huge})),
            )
            .await;
        statuses.push((s, v["error"]["code"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(
        statuses,
        [
            (404, "unknown_tool".to_string()),
            (429, "rate_limited".to_string()),
            (429, "rate_limited".to_string()),
            (429, "rate_limited".to_string()),
        ]
    );
    let requests_after = w.sandbox_get("/_sandbox/requests").await;
    assert_eq!(
        requests_after, requests_before,
        "nothing reached the school"
    );
    let records: Vec<Value> = w
        .audit()
        .await
        .into_iter()
        .filter(|r| r["persona"] == "limited")
        .collect();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["invalid", "denied", "denied", "denied"]);
    for r in &records {
        for field in ["prompt", "end_user"] {
            let text = r[field].as_str().expect(field);
            assert!(text.len() <= cap + 64, "{field}: {} bytes", text.len());
            assert!(
                text.ends_with(&format!("[cut: {} bytes in all]", huge.len())),
                "{field} ends with a marker"
            );
        }
        assert!(
            r["arguments"].to_string().len() <= 16 * 1024,
            "arguments of a call that never ran are kept as a preview"
        );
    }
    assert_eq!(records[0]["arguments"]["truncated"], true, "{}", records[0]);
    assert!(
        records[1..].iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("limit of 1 calls per minute"))),
        "{records:#?}"
    );

    // MCP `_meta` is capped the same way.
    let open = w
        .persona(PersonaSpec {
            name: "open".into(),
            ..Default::default()
        })
        .await;
    let client = w.mcp(&open).await;
    let mut params = CallToolRequestParams::new("list_offers");
    params.meta = Some(RequestMetaObject::from(
        json!({"prompt": huge, "end_user": huge})
            .as_object()
            .cloned()
            .expect("object"),
    ));
    client.call_tool(params).await.expect("call");
    let _ = client.cancel().await;
    let mcp_record = w
        .audit()
        .await
        .into_iter()
        .find(|r| r["persona"] == "open")
        .expect("record");
    assert!(
        mcp_record["prompt"]
            .as_str()
            .is_some_and(|p| p.len() <= cap + 64)
    );
    assert!(
        mcp_record["end_user"]
            .as_str()
            .is_some_and(|p| p.len() <= cap + 64)
    );

    // A JSON-RPC batch of tool calls with a revoked token: one record for the request.
    w.hub.revoke_persona("open").await.expect("revoke");
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "list_offers", "arguments": {}, "_meta": {"prompt": "batched"}}}))
        .collect();
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .post(format!("{}/mcp", w.base))
            .bearer_auth(&open)
            .header("accept", "application/json, text/event-stream")
            .json(&batch)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 401);
    }
    let batched: Vec<Value> = w
        .audit()
        .await
        .into_iter()
        .filter(|r| r["prompt"] == "batched")
        .collect();
    assert_eq!(batched.len(), 2, "one record per request: {batched:#?}");
    for r in &batched {
        assert_eq!(r["outcome"], "denied");
        assert_eq!(r["persona"], "open");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked") && e.contains("49 more tool call")),
            "{r}"
        );
    }

    // `/metrics` answers without a token: callers' tool names do not reach it.
    let caller = w
        .persona(PersonaSpec {
            name: "namer".into(),
            ..Default::default()
        })
        .await;
    let injected = "x\"} 1\nmemberspot_hub_admin_logins_total 99\n#";
    let encoded: String = injected.bytes().map(|b| format!("%{b:02X}")).collect();
    let (s, _, _) = w
        .rest(
            reqwest::Method::POST,
            &format!("/v1/tools/{encoded}/call"),
            &caller,
            Some(json!({"arguments": {}})),
        )
        .await;
    assert_eq!(s, 404);
    for i in 0..300 {
        let (s, _) = w
            .call(
                &caller,
                &format!("random_{i}_{}", "n".repeat(40)),
                &json!({}),
                "",
            )
            .await;
        assert_eq!(s, 404);
    }
    let metrics = reqwest::get(format!("{}/metrics", w.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("memberspot_hub_admin_logins_total")),
        "a metric line was injected:\n{metrics}"
    );
    assert!(!metrics.contains("random_"), "{metrics}");
    assert!(
        metrics.contains("memberspot_hub_tool_calls_total{tool=\"unknown\",outcome=\"invalid\",surface=\"rest\"} 302"),
        "{metrics}"
    );
    assert!(metrics.len() < 32 * 1024, "{} bytes", metrics.len());
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_flood_the_audit_log_or_write_into_metrics_sqlite() {
    flooding_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_flood_the_audit_log_or_write_into_metrics_postgres() {
    flooding_story(Backend::Postgres).await;
}
