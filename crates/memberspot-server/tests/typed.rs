//! The typed gateway call and the gateway's member and progress streams: the same
//! authentication, scope, limit and audit path as the JSON call, and a list that repeats
//! its cursor stops with an error instead of looping.

use futures::TryStreamExt;
use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, AuditRecord, Store};
use memberspot_hub::{CallContext, EmbeddedSandbox, Hub, ListOptions, Principal, Surface};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_tools::inputs::{Email, PageLength};
use memberspot_tools::tools::{
    GrantInput, GrantUserOfferByEmailTool, ListProgressInput, ListUsersInput, ListUsersTool,
};
use secrecy::SecretString;
use serde_json::{Value, json};

const SCHOOL_KEY: &str = "sk_live_school_key_5f2b9e1c7a3d4e6f8091";
const MEMBERS: usize = 23;

struct World {
    sandbox: Sandbox,
    hub: Hub,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed: 5,
        size: SeedSize {
            users: MEMBERS,
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
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
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
    World {
        sandbox,
        hub,
        _dir: dir,
    }
}

impl World {
    async fn persona(&self, name: &str, scopes: &[&str], per_minute: Option<u32>) -> Principal {
        self.hub
            .create_persona(PersonaSpec {
                name: name.into(),
                connection: Some("school".into()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                calls_per_minute: per_minute,
                ..Default::default()
            })
            .await
            .expect("persona");
        Principal::Persona(self.hub.find_persona(name).await.expect("find"))
    }

    async fn records(&self, persona: &str) -> Vec<AuditRecord> {
        self.hub
            .audit(&AuditFilter {
                persona: Some(persona.into()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await
            .expect("audit")
    }

    async fn faults(&self, faults: Value) {
        let resp = reqwest::Client::new()
            .put(format!("{}/_sandbox/faults", self.sandbox.root_url()))
            .header("X-API-KEY", SCHOOL_KEY)
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }

    async fn close(self) {
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
    }
}

fn ctx(prompt: &str) -> CallContext {
    let mut ctx = CallContext::new(Surface::Cli);
    ctx.prompt = Some(prompt.into());
    ctx.end_user = Some("kim@agency.example".into());
    ctx
}

/// What a record says about a call, without its ids, times and chain.
fn shape(r: &AuditRecord) -> Value {
    json!({
        "surface": r.surface.as_str(),
        "connection": r.connection,
        "persona": r.persona,
        "end_user": r.end_user,
        "prompt": r.prompt,
        "tool": r.tool,
        "arguments": r.arguments,
        "outcome": r.outcome.as_str(),
        "response": r.response,
        "error": r.error,
        "upstream_status": r.upstream_status,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_call_is_audited_exactly_like_the_json_one() {
    let w = world().await;
    let reader = w.persona("reader", &["read"], None).await;
    let json_call = w
        .hub
        .call(
            &reader,
            &ctx("same"),
            "list_users",
            json!({ "page_length": 5 }),
        )
        .await;
    let json_page = json_call.result.expect("json call");
    let typed = w
        .hub
        .run::<ListUsersTool>(
            &reader,
            &ctx("same"),
            ListUsersInput {
                page_length: PageLength::new(5),
                ..Default::default()
            },
        )
        .await
        .expect("typed call");
    assert_eq!(serde_json::to_value(&typed).expect("encode"), json_page);
    let records = w.records("reader").await;
    assert_eq!(records.len(), 2, "one record per call");
    assert_eq!(shape(&records[0]), shape(&records[1]));
    assert_eq!(records[1].arguments, json!({ "page_length": 5 }));
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_call_is_refused_for_a_revoked_or_out_of_scope_persona_and_recorded() {
    let w = world().await;
    let reader = w.persona("reader", &["read"], None).await;
    let grant = GrantInput {
        email: Email::parse("new@example.com").expect("email"),
        offer_id: serde_json::from_value(json!("any-offer")).expect("id"),
        first_name: None,
        last_name: None,
        order_id: None,
    };
    let e = w
        .hub
        .run::<GrantUserOfferByEmailTool>(&reader, &ctx("write"), grant)
        .await
        .expect_err("out of scope");
    assert!(e.is_denied(), "{e:?}");

    w.hub.revoke_persona("reader").await.expect("revoke");
    let revoked = Principal::Persona(w.hub.find_persona("reader").await.expect("find"));
    let e = w
        .hub
        .run::<ListUsersTool>(&revoked, &ctx("read"), ListUsersInput::default())
        .await
        .expect_err("revoked");
    assert!(e.is_unauthenticated(), "{e:?}");
    // The stream is refused the same way, on its first page.
    let e = w
        .hub
        .users_stream(
            &revoked,
            &ctx("all"),
            ListUsersInput::default(),
            ListOptions::default(),
        )
        .try_collect::<Vec<_>>()
        .await
        .expect_err("revoked stream");
    assert!(e.is_unauthenticated(), "{e:?}");

    let outcomes: Vec<(String, &str)> = w
        .records("reader")
        .await
        .iter()
        .map(|r| (r.tool.clone(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("grant_user_offer_by_email".to_string(), "denied"),
            ("list_users".to_string(), "denied"),
            ("list_users".to_string(), "denied"),
        ]
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_and_stream_pages_count_against_the_per_minute_limit() {
    let w = world().await;
    let limited = w.persona("limited", &["read"], Some(3)).await;
    // One JSON call and one typed call share the budget...
    w.hub
        .call(&limited, &ctx("json"), "list_offers", json!({}))
        .await
        .result
        .expect("json call");
    w.hub
        .run::<ListUsersTool>(&limited, &ctx("typed"), ListUsersInput::default())
        .await
        .expect("typed call");
    // ...and every page of a stream is a call: 23 members in pages of 10 need three.
    let e = w
        .hub
        .users_stream(
            &limited,
            &ctx("stream"),
            ListUsersInput {
                page_length: PageLength::new(10),
                ..Default::default()
            },
            ListOptions::default(),
        )
        .try_collect::<Vec<_>>()
        .await
        .expect_err("over the limit");
    assert!(e.is_limited(), "{e:?}");
    let outcomes: Vec<&str> = w
        .records("limited")
        .await
        .iter()
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "ok", "denied"]);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_stream_returns_every_member_once_and_stops_on_a_repeated_cursor() {
    let w = world().await;
    let reader = w.persona("reader", &["read"], None).await;
    let filter = ListUsersInput {
        page_length: PageLength::new(7),
        ..Default::default()
    };
    let users = w
        .hub
        .users_stream(&reader, &ctx("all"), filter.clone(), ListOptions::default())
        .try_collect::<Vec<_>>()
        .await
        .expect("members");
    let mut uids: Vec<&str> = users.iter().map(|u| u.uid.as_str()).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), MEMBERS, "every member once");
    let pages = w.records("reader").await;
    assert_eq!(pages.len(), 4, "23 members in pages of 7");
    assert!(pages.iter().all(|r| r.prompt.as_deref() == Some("all")));

    let capped = w
        .hub
        .users_stream(
            &reader,
            &ctx("capped"),
            filter.clone(),
            ListOptions {
                max_items: Some(9),
                ..Default::default()
            },
        )
        .try_collect::<Vec<_>>()
        .await
        .expect("capped");
    assert_eq!(capped.len(), 9);

    w.faults(json!({ "repeatCursor": true })).await;
    let e = w
        .hub
        .users_stream(&reader, &ctx("loop"), filter, ListOptions::default())
        .try_collect::<Vec<_>>()
        .await
        .expect_err("a repeated cursor");
    assert!(e.is_repeated_cursor(), "{e:?}");
    assert!(e.to_string().contains("a second time"), "{e}");
    let looped = w
        .records("reader")
        .await
        .into_iter()
        .filter(|r| r.prompt.as_deref() == Some("loop"))
        .count();
    assert_eq!(
        looped, 2,
        "the first page, then the one that repeats its cursor"
    );

    // The progress stream follows the same rules.
    let email = users[0].email.clone();
    let e = w
        .hub
        .progress_stream(
            &reader,
            &ctx("progress"),
            ListProgressInput {
                email: Email::parse(&email).expect("email"),
                page_length: PageLength::new(1),
                cursor: None,
            },
            ListOptions::default(),
        )
        .try_collect::<Vec<_>>()
        .await;
    match e {
        // A member in fewer than two courses has a single page: nothing to repeat.
        Ok(courses) => assert!(courses.len() <= 1, "{courses:?}"),
        Err(e) => assert!(e.is_repeated_cursor(), "{e:?}"),
    }
    w.close().await;
}
