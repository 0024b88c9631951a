//! The shared offer-name index against a real sandbox school: names resolve to ids, an
//! unknown one lists the candidates, the school is read once per index and once more at
//! most (when something unknown is looked up), and every read is an audited, scoped
//! `list_offers` call of the principal.

use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::offer_names::{OfferNameError, OfferNames, OfferNamesByConnection};
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, Store};
use memberspot_hub::{CallContext, EmbeddedSandbox, Hub, Principal, Surface};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use secrecy::SecretString;
use serde_json::{Value, json};

const KEY: &str = "sk_live_offer_names_3c9e1a7b5d2f4e6a8b0c";

struct World {
    sandbox: Sandbox,
    hub: Hub,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        seed: 7,
        size: SeedSize {
            users: 3,
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
        &SecretString::from(KEY.to_string()),
        0.0,
    )
    .await
    .expect("connection");
    World {
        sandbox,
        hub,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl World {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/_sandbox/{path}", self.sandbox.root_url()),
            )
            .header("X-API-KEY", KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("sandbox admin");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("admin JSON")
    }

    /// `(id, name)` of the school's offers, from the sandbox itself.
    async fn offers(&self) -> Vec<(String, String)> {
        let state = self.admin(reqwest::Method::GET, "state", None).await;
        state["offers"]
            .as_array()
            .expect("offers")
            .iter()
            .map(|o| {
                (
                    o["id"].as_str().expect("id").to_owned(),
                    o["name"].as_str().expect("name").to_owned(),
                )
            })
            .collect()
    }

    /// How often the school was asked for its offers since the log was cleared.
    async fn offer_reads(&self) -> usize {
        let log = self.admin(reqwest::Method::GET, "requests", None).await;
        log.as_array()
            .expect("request log")
            .iter()
            .filter(|r| {
                r["method"] == "GET" && r["path"].as_str().is_some_and(|p| p.ends_with("/offers"))
            })
            .count()
    }

    async fn clear_log(&self) {
        self.admin(reqwest::Method::DELETE, "requests", None).await;
    }

    fn operator(&self) -> OfferNames {
        OfferNames::new(
            &self.hub,
            Principal::Operator {
                connection: "school".into(),
            },
            CallContext::new(Surface::Cli),
        )
    }

    async fn close(self) {
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_with_one_read_and_an_unknown_one_reads_once_more() {
    let w = world().await;
    let offers = w.offers().await;
    let (id, name) = offers[1].clone();
    w.clear_log().await;
    let names = w.operator();

    assert_eq!(names.resolve("--offer", &id).await.expect("id"), id);
    assert_eq!(names.resolve("--offer", &name).await.expect("name"), id);
    assert_eq!(
        names
            .resolve("--offer", &format!(" {} ", name.to_uppercase()))
            .await
            .expect("name in capitals"),
        id
    );
    assert_eq!(names.label(&id).await, format!("{name} ({id})"));
    assert_eq!(w.offer_reads().await, 1, "one read for all of these");

    // Unknown: read once more (an offer created since?), then an error naming every offer.
    let err = names.find("No Such Course").await.expect("read");
    let Err(OfferNameError::Unknown { candidates, .. }) = &err else {
        panic!("unknown: {err:?}");
    };
    assert_eq!(candidates, &offers);
    let as_flag = names
        .resolve("--offer", "No Such Course")
        .await
        .expect_err("unknown")
        .to_string();
    assert!(
        as_flag.contains("--offer") && as_flag.contains(&format!("{id} ({name})")),
        "{as_flag}"
    );
    assert_eq!(
        names.label("gone-offer").await,
        "gone-offer",
        "an unknown id is shown alone"
    );
    assert_eq!(w.offer_reads().await, 2, "the one re-read is spent");

    // Every read was an audited `list_offers` call of the operator.
    let records = w
        .hub
        .audit(&AuditFilter {
            tool: Some("list_offers".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.surface == Surface::Cli
        && r.connection.as_deref() == Some("school")
        && r.persona.is_none()));
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_appears_later_is_found_by_the_re_read() {
    let w = world().await;
    let names = w.operator();
    let before = names.index().await.expect("first read");
    // The school's offers change under the index (another seed: other ids, one more).
    w.admin(
        reqwest::Method::POST,
        "reset",
        Some(json!({"seed": 8, "offers": 5})),
    )
    .await;
    let after = w.offers().await;
    let (new_id, new_name) = after
        .iter()
        .find(|(id, _)| !before.contains(id))
        .cloned()
        .expect("an offer the first read did not see");
    w.clear_log().await;

    assert_eq!(names.label(&new_id).await, format!("{new_name} ({new_id})"));
    assert_eq!(w.offer_reads().await, 1, "one re-read found it");
    // A second unknown id does not read again: the index is one command's.
    assert_eq!(names.label("still-unknown").await, "still-unknown");
    assert_eq!(w.offer_reads().await, 1);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_is_scoped_like_any_call() {
    let w = world().await;
    w.hub
        .create_persona(PersonaSpec {
            name: "finder".into(),
            connection: Some("school".into()),
            scopes: vec!["find_user_by_email".into()],
            ..Default::default()
        })
        .await
        .expect("persona");
    let finder = Principal::Persona(w.hub.find_persona("finder").await.expect("persona"));
    let names = OfferNames::new(&w.hub, finder, CallContext::new(Surface::Rest));
    let (id, _) = w.offers().await[0].clone();
    let err = names
        .resolve("offer_id", &id)
        .await
        .expect_err("no list_offers scope");
    assert!(err.is_denied(), "{err}");
    // A view does not fail for want of names: the id alone.
    assert_eq!(names.label(&id).await, id);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_get_their_offer_names_with_one_read_per_school() {
    let w = world().await;
    let offers = w.offers().await;
    let operator = Principal::Operator {
        connection: "school".into(),
    };
    let ctx = CallContext::new(Surface::Cli);
    for (id, _) in &offers[..3] {
        let args = json!({"email": "kim@example.com", "offer_id": id});
        let out = w
            .hub
            .call(&operator, &ctx, "grant_user_offer_by_email", args)
            .await;
        assert!(out.result.is_ok(), "{:?}", out.result);
    }
    let records = w
        .hub
        .audit(&AuditFilter {
            tool: Some("grant_user_offer_by_email".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(records.len(), 3);
    w.clear_log().await;

    let names = OfferNamesByConnection::new(&w.hub, CallContext::new(Surface::Console));
    let named = names.in_records(&records).await;
    for ((id, name), got) in offers.iter().zip(&named) {
        assert_eq!(got.get(id), Some(name), "{got:?}");
    }
    assert_eq!(w.offer_reads().await, 1, "one read for the whole page");

    // The next view within a minute (the next page, a second click) reuses that read:
    // each read is an audited call under the school's rate limit.
    let next = OfferNamesByConnection::new(&w.hub, CallContext::new(Surface::Console));
    assert_eq!(next.in_records(&records).await, named);
    assert_eq!(w.offer_reads().await, 1, "the next view reads nothing");

    // A removed school is not asked; its records keep their ids alone.
    let mut elsewhere = records[0].clone();
    elsewhere.connection = Some("removed-school".into());
    assert!(names.in_record(&elsewhere).await.is_empty());
    assert_eq!(w.offer_reads().await, 1);
    w.close().await;
}
