//! The personas flows act as, on SQLite and PostgreSQL: revoking one stops the digest, a
//! flow or a sync that runs as it — the run fails saying how to re-create the persona, the
//! failure is in the run history, every refused call is audited as denied under the
//! persona, and nothing runs as the operator instead. The daily summary carries the audit
//! chain head.

#![allow(clippy::unwrap_used)]

mod common;

use memberspot_agent::config::ModelsConfig;
use memberspot_flows::config::Target;
use memberspot_flows::{Flows, FlowsConfig, FlowsError};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::store::{AuditFilter, AuditRecord};
use memberspot_hub::{Hub, HubError};
use serde_json::json;

async fn newest_audit(hub: &Hub) -> AuditRecord {
    hub.audit(&AuditFilter {
        limit: Some(1),
        before_seq: None,
        newest_first: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .remove(0)
}

fn assert_denied_as(r: &AuditRecord, persona: &str, tool: &str) {
    assert_eq!(r.persona.as_deref(), Some(persona), "{r:?}");
    assert_eq!(r.tool, tool, "{r:?}");
    assert_eq!(r.outcome.as_str(), "denied", "{r:?}");
    assert_eq!(r.surface.as_str(), "flow", "{r:?}");
}

async fn revoked_personas_stop_what_runs_as_them(url: &str) {
    let sandbox = common::sandbox().await;
    let hub = common::hub(url, &sandbox).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seats.csv"),
        "email,offer\nanna@firma.de,offer_that_is_checked_first\n",
    )
    .unwrap();
    let toml = r#"
[[flows]]
name = "offer-check"
persona = "checker"
trigger.manual = true

[[flows.steps]]
name = "offers"
tool = "list_offers"
retry = { attempts = 3, backoff_secs = 5 }

[[syncs]]
name = "seats"
persona = "seat-sync"
connection = "sandbox"
source.csv = "seats.csv"

[syncs.map]
email = "{{ row.email }}"
offer = "{{ row.offer }}"
"#;
    let cfg = FlowsConfig::parse(toml, "flows.toml", Some(dir.path())).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();

    // ---- the digest: its own persona, created when missing; the chain head in every form
    let run = flows
        .run_digest(None, &[Target::Stdout], false, None)
        .await
        .unwrap()
        .unwrap();
    let names_call = newest_audit(&hub).await;
    assert_eq!(names_call.persona.as_deref(), Some("digest"));
    assert_eq!(names_call.outcome.as_str(), "ok");
    let head = hub.audit_head().await.unwrap();
    assert_eq!(run.digest.audit_head, head);
    assert_eq!(
        head.seq, names_call.seq,
        "the head includes the digest's own call"
    );
    let line = format!("Audit chain head: #{} {}", head.seq, head.hash);
    assert!(
        run.digest.to_text().contains(&line),
        "{}",
        run.digest.to_text()
    );
    assert!(run.digest.to_html().contains(&line));
    assert!(run.digest.to_slack_blocks().to_string().contains(&line));
    // What the owner keeps parses back as an anchor the chain verifies against.
    let kept: memberspot_hub::store::ChainHead = line
        .trim_start_matches("Audit chain head: ")
        .parse()
        .unwrap();
    assert!(hub.verify_audit(Some(&kept)).await.unwrap().ok);

    hub.revoke_persona("digest").await.unwrap();
    let err = flows
        .run_digest(None, &[Target::Stdout], false, None)
        .await
        .expect_err("a revoked digest persona stops the digest");
    let expected = "persona `digest` is revoked; re-create it with `memberspot --connection \
                    sandbox personas create digest --scopes read --replace-revoked`";
    assert!(
        matches!(&err, HubError::Denied(m) if m == expected),
        "{err}"
    );
    let failed = hub
        .flows_store()
        .list_runs(Some("digest"), 1)
        .await
        .unwrap();
    assert_eq!(failed[0].status.as_str(), "failed");
    assert_eq!(failed[0].error.as_deref(), Some(expected));
    let steps = hub.flows_store().run_steps(&failed[0].id).await.unwrap();
    assert!(
        steps.iter().any(|s| s.error.as_deref() == Some(expected)),
        "{steps:?}"
    );
    assert_denied_as(&newest_audit(&hub).await, "digest", "list_offers");
    // Dry runs too.
    assert!(
        flows
            .run_digest(None, &[Target::Stdout], true, None)
            .await
            .is_err()
    );
    // Re-created as the message says, it works again.
    hub.recreate_persona(PersonaSpec {
        name: "digest".into(),
        connection: Some("sandbox".into()),
        scopes: vec!["read".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        flows
            .run_digest(None, &[Target::Stdout], false, None)
            .await
            .unwrap()
            .is_some()
    );

    // ---- a flow's tool step
    let report = flows
        .run_flow("offer-check", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "ok", "{report:?}");
    hub.revoke_persona("checker").await.unwrap();
    let report = flows
        .run_flow("offer-check", "manual", json!({}), None, false)
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "failed");
    let expected = "persona `checker` is revoked; re-create it with `memberspot --connection \
                    sandbox personas create checker --scopes read --replace-revoked`";
    assert_eq!(
        report.error.as_deref(),
        Some(format!("step `offers`: {expected}").as_str())
    );
    assert_eq!(
        report.steps[0].attempts, 1,
        "a persona that cannot act is not tried again: {report:?}"
    );
    let run = hub
        .flows_store()
        .get_run(&report.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status.as_str(), "failed");
    assert!(run.error.as_deref().is_some_and(|e| e.contains(expected)));
    assert_denied_as(&newest_audit(&hub).await, "checker", "list_offers");

    // ---- a sync
    hub.revoke_persona("seat-sync").await.unwrap();
    let err = flows
        .run_sync("seats", false, &|_, _| {})
        .await
        .expect_err("a revoked sync persona stops the sync");
    assert!(matches!(err, FlowsError::Persona(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "persona `seat-sync` is revoked; re-create it with `memberspot --connection sandbox \
         personas create seat-sync --scopes grant_user_offer_by_email,list_offers,list_users,\
         set_custom_user_properties,set_offer_expiration,set_user_offer_state,\
         confirm:destructive --replace-revoked`"
    );
    assert_denied_as(&newest_audit(&hub).await, "seat-sync", "list_offers");

    // Nothing ran as the operator, at any point.
    let all = hub
        .audit(&AuditFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        all.iter().all(|r| r.persona.is_some()),
        "a call ran without a persona: {:?}",
        all.iter().find(|r| r.persona.is_none())
    );
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_personas_stop_what_runs_as_them_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    revoked_personas_stop_what_runs_as_them(&format!(
        "sqlite://{}",
        dir.path().join("hub.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_personas_stop_what_runs_as_them_postgres() {
    let (url, name) = common::fresh_pg().await;
    revoked_personas_stop_what_runs_as_them(&url).await;
    common::drop_pg(&name).await;
}

/// `flows validate`'s scope check against a real SQLite store: each tool a flow step, sync
/// or export calls is checked against its persona's stored scopes, or, for a persona
/// `serve` has yet to create, the scopes it would be created with; every problem names
/// the item, the step and its line, the tool, the persona and the command that fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_outside_a_persona_s_scopes_are_reported_with_the_fix() {
    use memberspot_flows::personas::check_scopes;
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let offer = hub.offers_of("sandbox").await.unwrap()[0].id.clone();
    for (name, scopes, offers) in [
        ("welcomer", "read", None),
        ("gone", "read", None),
        ("bound", "all", Some(vec![offer.clone()])),
    ] {
        hub.create_persona(PersonaSpec {
            name: name.into(),
            connection: Some("sandbox".into()),
            scopes: vec![scopes.into()],
            offer_ids: offers,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    hub.revoke_persona("gone").await.unwrap();
    let toml = r#"
default_connection = "sandbox"

[[flows]]
name = "welcome"
persona = "welcomer"
trigger.manual = true

[[flows.steps]]
name = "find"
tool = "find_user_by_email"
args = { email = "{{ input.email }}" }

[[flows.steps]]
name = "grant"
tool = "grant_user_offer_by_email"
args = { email = "{{ input.email }}", offer_id = "o1" }

[[flows.steps]]
name = "tag"
tool = "set_custom_user_properties"
args = { email = "{{ input.email }}", properties = [] }

[[flows]]
name = "newcomer"
persona = "fresh"
trigger.manual = true

[[flows.steps]]
name = "tag"
tool = "set_custom_user_properties"
args = { email = "{{ input.email }}", properties = [] }

[[flows]]
name = "old"
persona = "gone"
trigger.manual = true

[[flows.steps]]
name = "list"
tool = "list_offers"

[[flows.steps]]
name = "list-again"
tool = "list_offers"

[[flows]]
name = "orders"
persona = "bound"
trigger.manual = true

[[flows.steps]]
name = "cancel"
tool = "set_order_state"
args = { order_id = "{{ input.order }}", state = "cancelled" }

[[exports]]
name = "crm"
persona = "welcomer"
file = "members.csv"
"#;
    let mut cfg = FlowsConfig::parse(toml, "flows.toml", None).unwrap();
    cfg.resolve_connections(&hub.schools().await.unwrap())
        .unwrap();
    let problems = check_scopes(&cfg, &hub.list_personas().await.unwrap());
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(problems.len(), 5, "{messages:#?}");

    // A stored persona: the step, the tool's class, its scopes and the grant.
    let grant = problems
        .iter()
        .find(|p| p.step.as_deref() == Some("grant"))
        .unwrap();
    assert_eq!(
        (
            grant.item.as_str(),
            grant.persona.as_str(),
            grant.tool.as_deref()
        ),
        (
            "flow `welcome`",
            "welcomer",
            Some("grant_user_offer_by_email")
        )
    );
    assert_eq!(grant.line, Some(14), "the line of its [[flows.steps]]");
    assert_eq!(
        grant.message,
        "flow `welcome` step `grant`: persona `welcomer` may not call \
         `grant_user_offer_by_email` (a write tool; its scopes: read); grant it with \
         `memberspot personas grant-scope welcomer grant_user_offer_by_email`"
    );
    // A persona `serve` will create with read: what that allows, and how to create it so
    // the flow works from its first run.
    assert!(
        messages.contains(
            &"flow `newcomer` step `tag`: persona `fresh` does not exist yet, and \
              `memberspot serve` would create it with scopes read, which do not allow \
              `set_custom_user_properties` (a write tool); create it first with \
              `memberspot --connection sandbox personas create fresh --scopes \
              read,set_custom_user_properties`"
        ),
        "{messages:#?}"
    );
    // A revoked persona: once for its flow, not per step.
    let revoked: Vec<_> = problems.iter().filter(|p| p.persona == "gone").collect();
    assert_eq!(revoked.len(), 1, "{messages:#?}");
    assert!(
        revoked[0]
            .message
            .starts_with("flow `old` step `list`: persona `gone` is revoked; re-create it with"),
        "{}",
        revoked[0].message
    );
    // An offer-restricted persona and a tool not tied to one offer.
    assert!(
        messages.iter().any(
            |m| m.starts_with("flow `orders` step `cancel`: persona `bound`: ")
                && m.contains("not tied to one offer")
                && m.ends_with("run flow `orders` as a persona without an offer restriction")
        ),
        "{messages:#?}"
    );
    // The export reads as `welcomer`: allowed, so nothing is said about it.
    assert!(problems.iter().all(|p| p.item != "export `crm`"));

    // Doing what the messages say clears them.
    hub.set_persona_scopes(
        "welcomer",
        &[
            "grant_user_offer_by_email".into(),
            "set_custom_user_properties".into(),
        ],
        true,
        None,
        None,
    )
    .await
    .unwrap();
    let problems = check_scopes(&cfg, &hub.list_personas().await.unwrap());
    assert!(
        problems.iter().all(|p| p.persona != "welcomer"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 3);
    hub.close().await;
    let _ = sandbox.shutdown().await;
}
