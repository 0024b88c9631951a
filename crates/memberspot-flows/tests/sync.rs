//! Sync from another app into the sandbox school: a CSV with bad rows imports the good
//! ones, reports the bad ones with line numbers, and a second run changes nothing; a
//! paginated JSON API source; dry run plans without writing.

#![allow(clippy::unwrap_used)]

mod common;

use memberspot_agent::config::ModelsConfig;
use memberspot_flows::sync::RowOutcome;
use memberspot_flows::{Flows, FlowsConfig, FlowsError};
use serde_json::{Value, json};

async fn offers(sandbox: &memberspot_sandbox::Sandbox) -> Vec<String> {
    let state: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sandbox.root_url()))
        .header("X-API-KEY", common::SCHOOL_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_sync_reports_bad_rows_and_is_idempotent() {
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let o = offers(&sandbox).await;
    let csv = format!(
        "E-Mail,Zugang,Vorname,Bis\n\
         anna@firma.de,{o0},Anna,2027-06-30\n\
         ,{o0},NoMail,\n\
         bernd@firma.de,offer_does_not_exist,Bernd,\n\
         anna@firma.de,{o0},Anna again,\n\
         carla@firma.de,{o1},Carla,\n\
         not-an-email,{o1},X,\n",
        o0 = o[0],
        o1 = o[1]
    );
    std::fs::write(dir.path().join("seats.csv"), csv).unwrap();
    let toml = r#"
[[syncs]]
name = "b2b-seats"
persona = "seat-sync"
connection = "school"
source.csv = "seats.csv"

[syncs.map]
email = "{{ row['E-Mail'] }}"
offer = "{{ row.Zugang }}"
first_name = "{{ row.Vorname }}"
expires_at = "{{ row.Bis }}"
"#;
    let cfg = FlowsConfig::parse(
        toml,
        &dir.path().join("flows.toml").display().to_string(),
        Some(dir.path()),
    )
    .unwrap();
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &secrecy::SecretString::from(common::SCHOOL_KEY.to_owned()),
        0.0,
    )
    .await
    .unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    let persona = hub.persona_any("seat-sync").await.unwrap();
    assert_eq!(
        persona.connection, "school",
        "the sync's persona acts on the sync's school"
    );

    // A dry run plans, writes nothing.
    let plan = flows.run_sync("b2b-seats", true, &|_, _| {}).await.unwrap();
    assert_eq!((plan.created, plan.failed), (2, 4), "{plan:#?}");
    assert!(
        hub.audit(&Default::default())
            .await
            .unwrap()
            .iter()
            .all(|r| r.tool.starts_with("list_"))
    );

    let progress = std::sync::Mutex::new(Vec::new());
    let report = flows
        .run_sync("b2b-seats", false, &|done, total| {
            progress.lock().unwrap().push((done, total))
        })
        .await
        .unwrap();
    assert_eq!(
        (
            report.created,
            report.updated,
            report.unchanged,
            report.failed
        ),
        (2, 0, 0, 4),
        "{report:#?}"
    );
    let by_line = |l: usize| report.rows.iter().find(|r| r.line == l).unwrap();
    assert_eq!(by_line(2).outcome, RowOutcome::Created);
    assert_eq!(by_line(3).reason.as_deref(), Some("email: missing"));
    assert!(
        by_line(4)
            .reason
            .as_deref()
            .unwrap()
            .contains("offer `offer_does_not_exist` does not exist")
    );
    assert_eq!(
        by_line(5).reason.as_deref(),
        Some("duplicate of line 2 (same e-mail and offer)")
    );
    assert_eq!(by_line(6).outcome, RowOutcome::Created);
    assert!(
        by_line(7)
            .reason
            .as_deref()
            .unwrap()
            .contains("not an e-mail address")
    );
    assert_eq!(progress.lock().unwrap().last(), Some(&(2, 2)));
    // Anna got the offer with its expiration.
    assert!(
        by_line(2)
            .changes
            .iter()
            .any(|c| c.starts_with("set_offer_expiration"))
    );

    // The same file again: nothing to do.
    let again = flows
        .run_sync("b2b-seats", false, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (again.created, again.updated, again.unchanged, again.failed),
        (0, 0, 2, 4),
        "{again:#?}"
    );
    let writes = hub
        .audit(&memberspot_hub::store::AuditFilter {
            persona: Some("seat-sync".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| !r.tool.starts_with("list_"))
        .count();
    assert_eq!(writes, 3, "2 grants + 1 expiration, all in the first run");
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

/// A sync's `offer` may be an offer's name: exact first, then regardless of case; a name
/// the school has twice, or not at all, fails its row with the offers it could mean. The
/// school is a real sandbox whose second and third offers share a name but for its case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_mapped_by_id_or_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("school.json");
    let config = || memberspot_sandbox::SandboxConfig {
        api_key: common::SCHOOL_KEY.into(),
        seed: 5,
        size: memberspot_sandbox::SeedSize {
            users: 10,
            offers: 3,
            courses: 2,
        },
        rate_limit: 0.0,
        state_file: Some(state_file.clone()),
        ..Default::default()
    };
    // Seed the school, then give offer 3 the name of offer 2 in small letters.
    memberspot_sandbox::Sandbox::start_local(config())
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let school = &mut state["school"]["offers"];
    let premium = school[1]["name"].as_str().unwrap().to_owned();
    school[2]["name"] = json!(premium.to_lowercase());
    let (basis, ids) = (
        school[0]["name"].as_str().unwrap().to_owned(),
        (0..3)
            .map(|i| school[i]["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
    );
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let sandbox = memberspot_sandbox::Sandbox::start_local(config())
        .await
        .unwrap();
    assert_eq!(offers(&sandbox).await, ids, "the edited school is served");
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;

    let csv = format!(
        "email,offer\n\
         anna@firma.de,{basis_lower}\n\
         bernd@firma.de,{premium}\n\
         carla@firma.de,{premium_upper}\n\
         dora@firma.de,Platin-Paket\n\
         anna@firma.de,{o0}\n",
        basis_lower = basis.to_lowercase(),
        premium_upper = premium.to_uppercase(),
        o0 = ids[0],
    );
    std::fs::write(dir.path().join("seats.csv"), csv).unwrap();
    let toml = "[[syncs]]\nname = \"seats\"\nsource.csv = \"seats.csv\"\n\
                map = { email = \"{{ row.email }}\", offer = \"{{ row.offer }}\" }\n";
    let cfg = FlowsConfig::parse(toml, "flows.toml", Some(dir.path())).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    let report = flows.run_sync("seats", false, &|_, _| {}).await.unwrap();
    let by_line = |l: usize| report.rows.iter().find(|r| r.line == l).unwrap();

    // A name regardless of case, and an exact name over one that differs in case.
    assert_eq!(by_line(2).outcome, RowOutcome::Created, "{report:#?}");
    assert_eq!(by_line(2).offer.as_deref(), Some(ids[0].as_str()));
    assert!(
        by_line(2).changes[0].contains(&format!("\"offer_id\":\"{}\"", ids[0])),
        "granted by id: {:?}",
        by_line(2).changes
    );
    assert_eq!(by_line(3).outcome, RowOutcome::Created, "{report:#?}");
    assert_eq!(by_line(3).offer.as_deref(), Some(ids[1].as_str()));
    // Two offers under the name regardless of case: both named, nothing sent.
    assert_eq!(by_line(4).outcome, RowOutcome::Failed);
    assert_eq!(
        by_line(4).reason.as_deref().unwrap(),
        format!(
            "offer `{}` is the name of 2 offers: {} ({premium}), {} ({}); give the id",
            premium.to_uppercase(),
            ids[1],
            ids[2],
            premium.to_lowercase()
        )
    );
    // No such offer: every offer of the school is named.
    let unknown = by_line(5).reason.as_deref().unwrap();
    assert!(
        unknown.starts_with("offer `Platin-Paket` does not exist in the school")
            && ids.iter().all(|id| unknown.contains(id.as_str())),
        "{unknown}"
    );
    // The same offer by id and by name is the same offer.
    assert_eq!(
        by_line(6).reason.as_deref(),
        Some("duplicate of line 2 (same e-mail and offer)")
    );
    assert_eq!((report.created, report.failed), (2, 3), "{report:#?}");

    // What was granted is what the names stand for: a second run changes nothing.
    let again = flows.run_sync("seats", false, &|_, _| {}).await.unwrap();
    assert_eq!((again.unchanged, again.failed), (2, 3), "{again:#?}");
    hub.close().await;
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_with_pagination() {
    use axum::extract::Query;
    use axum::routing::get;
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let o = offers(&sandbox).await;
    let offer = o[2].clone();
    let app = axum::Router::new().route(
        "/crm/contacts",
        get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
            let offer = offer.clone();
            async move {
                let page: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let items: Vec<Value> = (0..3)
                    .map(|i| json!({"contact": {"mail": format!("crm{}@example.de", page * 3 + i)}, "plan": offer, "seat_active": if page * 3 + i == 4 { "no" } else { "yes" }}))
                    .collect();
                let next = if page < 1 { json!((page + 1).to_string()) } else { Value::Null };
                axum::Json(json!({"data": {"contacts": items}, "paging": {"next_cursor": next}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let toml = format!(
        r#"
[[syncs]]
name = "crm"
source = {{ url = "http://{addr}/crm/contacts", items = "data.contacts", cursor = "paging.next_cursor", cursor_param = "cursor" }}
map = {{ email = "{{{{ row.contact.mail }}}}", offer = "{{{{ row.plan }}}}", active = "{{{{ row.seat_active }}}}" }}
"#
    );
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    let report = flows.run_sync("crm", false, &|_, _| {}).await.unwrap();
    // 6 contacts over 2 pages; contact 4 is inactive and was never granted: unchanged.
    assert_eq!(report.rows.len(), 6, "{report:#?}");
    assert_eq!((report.created, report.unchanged), (5, 1));
    let again = flows.run_sync("crm", false, &|_, _| {}).await.unwrap();
    assert_eq!(again.unchanged, 6);

    // A name not in the flows file: not found, by kind, for syncs and exports alike.
    let unknown = flows.run_sync("crn", true, &|_, _| {}).await.unwrap_err();
    assert!(
        matches!(&unknown, FlowsError::NotFound { kind: "sync", name } if name == "crn"),
        "{unknown:?}"
    );
    assert!(unknown.is_not_found());
    assert_eq!(unknown.code(), "not_found");
    assert_eq!(unknown.to_string(), "no sync named `crn` in the flows file");
    let unknown = flows.run_export("crm").await.unwrap_err();
    assert!(
        matches!(&unknown, FlowsError::NotFound { kind: "export", .. }),
        "{unknown:?}"
    );
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_full_first_then_incremental_from_the_event_store() {
    use memberspot_hub::store::{EventStatus, NewEvent};
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let toml = "[[exports]]\nname = \"crm\"\nfile = \"members.csv\"\n";
    let cfg = FlowsConfig::parse(toml, "flows.toml", Some(dir.path())).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();

    let first = flows.run_export("crm").await.unwrap();
    assert_eq!(first.mode, "full");
    assert_eq!(first.members, 10, "every member of the sandbox school");
    let text = std::fs::read_to_string(dir.path().join("members.csv")).unwrap();
    assert!(
        text.starts_with("email,first_name,last_name,deleted,offer_id,active,expires_at,progress")
    );

    // Nothing changed: an empty incremental export.
    let none = flows.run_export("crm").await.unwrap();
    assert_eq!((none.mode.as_str(), none.members), ("incremental", 0));

    // A member changes (as the poller or a webhook would record it): only they are exported.
    let o = offers(&sandbox).await;
    let who = memberspot_hub::Principal::Operator {
        connection: "sandbox".into(),
    };
    let ctx = memberspot_hub::CallContext::new(memberspot_hub::Surface::Cli);
    hub.call(
        &who,
        &ctx,
        "grant_user_offer_by_email",
        json!({"email": "neu@example.de", "offer_id": o[0]}),
    )
    .await
    .result
    .unwrap();
    let event = NewEvent {
        dedupe_key: "poll:sandbox:x:member_created".into(),
        source: "poll:sandbox".into(),
        provider: "poller".into(),
        kind: "member_created".into(),
        name: "member_created".into(),
        order_id: None,
        product_id: None,
        email: Some("neu@example.de".into()),
        test: false,
        amount_minor: None,
        currency: None,
        data: json!({}),
        status: EventStatus::Done,
        connection: Some("sandbox".into()),
        verified: true,
    };
    hub.events_store()
        .insert_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    let inc = flows.run_export("crm").await.unwrap();
    assert_eq!((inc.mode.as_str(), inc.members), ("incremental", 1));
    let text = std::fs::read_to_string(dir.path().join("members.csv")).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains(&format!("neu@example.de,,,,{},true", o[0])),
        "{text}"
    );

    // Only trusted events of this school drive the export, and only the school itself
    // deleting a member makes the export say "deleted".
    let mk =
        |key: &str, kind: &str, email: &str, status: EventStatus, conn: &str, verified: bool| {
            NewEvent {
                dedupe_key: key.into(),
                kind: kind.into(),
                name: kind.into(),
                email: Some(email.into()),
                status,
                connection: Some(conn.into()),
                verified,
                ..event.clone()
            }
        };
    hub.events_store()
        .insert_events(&[
            // A forged PayPal notification (rejected) about someone who is no member.
            mk(
                "f1",
                "purchase",
                "ghost@example.de",
                EventStatus::Rejected,
                "sandbox",
                false,
            ),
            // A member deleted in another school.
            mk(
                "f2",
                "member_deleted",
                "other@example.de",
                EventStatus::Done,
                "other-school",
                true,
            ),
            // A genuine purchase that matched no rule: the buyer is no member (yet).
            mk(
                "f3",
                "purchase",
                "buyer@example.de",
                EventStatus::Unmatched,
                "sandbox",
                true,
            ),
            // The school deleted a member: that is news for the other app.
            mk(
                "f4",
                "member_deleted",
                "gone@example.de",
                EventStatus::Done,
                "sandbox",
                true,
            ),
        ])
        .await
        .unwrap();
    let inc = flows.run_export("crm").await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("members.csv")).unwrap();
    assert_eq!(
        (inc.mode.as_str(), inc.members),
        ("incremental", 1),
        "{text}"
    );
    assert!(text.contains("gone@example.de,,,yes"), "{text}");
    for absent in ["ghost@", "other@", "buyer@"] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

/// A remote source never sends its headers to another origin: a `next` link or a redirect
/// elsewhere stops the sync with a clear error, and an answer over `source.max_bytes`
/// (streamed, without Content-Length) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_sources_stay_on_their_origin_and_are_size_capped() {
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    let sandbox = common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let offer = offers(&sandbox).await[0].clone();

    // The other origin (another port): records every request it gets, with its headers.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let other = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push(format!("{} {:?}", req.uri(), req.headers()));
            axum::Json(json!({"data": [], "next": null}))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, other).await });

    let item = json!({"mail": "remote@example.de", "plan": offer});
    let crm = axum::Router::new()
        .route(
            "/same/1",
            get({
                let item = item.clone();
                move || async move { axum::Json(json!({"data": [item], "next": "/same/2?page=2"})) }
            }),
        )
        .route(
            "/same/2",
            get(|| async { axum::Json(json!({"data": [], "next": ""})) }),
        )
        .route(
            "/elsewhere",
            get({
                let item = item.clone();
                move || async move {
                    axum::Json(json!({"data": [item], "next": format!("http://{other_addr}/steal?page=2")}))
                }
            }),
        )
        .route(
            "/moved",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", format!("http://{other_addr}/steal"))],
                )
            }),
        )
        .route(
            "/big",
            get(|| async {
                // 64 chunks of 32 KiB: 2 MiB, streamed without a Content-Length.
                let chunks = futures::stream::iter(
                    (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 32 * 1024])),
                );
                axum::body::Body::from_stream(chunks)
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, crm).await });

    let sync = |name: &str, path: &str, extra: &str| {
        format!(
            r#"
[[syncs]]
name = "{name}"
source = {{ url = "http://{addr}{path}", items = "data", next = "next", headers = {{ X-Api-Key = "crm-secret-key" }}{extra} }}
map = {{ email = "{{{{ row.mail }}}}", offer = "{{{{ row.plan }}}}" }}
"#
        )
    };
    let toml = [
        sync("same", "/same/1", ""),
        sync("elsewhere", "/elsewhere", ""),
        sync("moved", "/moved", ""),
        sync("big", "/big", ", max_bytes = 1000000"),
    ]
    .concat();
    let cfg = FlowsConfig::parse(&toml, "flows.toml", None).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();

    let report = flows.run_sync("same", true, &|_, _| {}).await.unwrap();
    assert_eq!(
        report.rows.len(),
        1,
        "a relative next link on the same origin is followed"
    );

    let err = flows
        .run_sync("elsewhere", true, &|_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, FlowsError::Source(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("another origin"), "{err}");
    assert!(err.contains(&other_addr.to_string()), "{err}");
    assert!(
        !err.contains("steal") && !err.contains("crm-secret-key"),
        "{err}"
    );

    let err = flows
        .run_sync("moved", true, &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("302") && err.contains("redirect"), "{err}");
    assert!(!err.contains("crm-secret-key"), "{err}");

    let err = flows
        .run_sync("big", true, &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("larger than 1000000 bytes") && err.contains("max_bytes"),
        "{err}"
    );

    assert!(
        seen.lock().unwrap().is_empty(),
        "the other origin got no request: {:?}",
        seen.lock().unwrap()
    );

    // A zero cap is refused when the file is read.
    let bad = FlowsConfig::parse(&sync("zero", "/big", ", max_bytes = 0"), "flows.toml", None)
        .unwrap_err();
    assert!(bad.to_string().contains("source.max_bytes"), "{bad}");
    hub.close().await;
    let _ = sandbox.shutdown().await;
}

/// A school whose member list repeats a cursor: a sync and a full export each stop with
/// an error that says so (never loop), and the sync writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cursor_stops_sync_and_export_with_an_error() {
    // Three pages of 100: the second is full, so the cursor it repeats is followed.
    let sandbox = common::sandbox_of(250).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &sandbox,
    )
    .await;
    let o = offers(&sandbox).await;
    std::fs::write(
        dir.path().join("seats.csv"),
        format!("email,offer\nanna@firma.de,{}\n", o[0]),
    )
    .unwrap();
    let toml = r#"
[[syncs]]
name = "seats"
persona = "seat-sync"
source.csv = "seats.csv"

[syncs.map]
email = "{{ row.email }}"
offer = "{{ row.offer }}"

[[exports]]
name = "crm"
file = "members.csv"
incremental = false
"#;
    let cfg = FlowsConfig::parse(toml, "flows.toml", Some(dir.path())).unwrap();
    let flows = Flows::start(hub.clone(), cfg, ModelsConfig::default())
        .await
        .unwrap();
    // Normal paging first: every member once.
    let full = flows.run_export("crm").await.unwrap();
    assert_eq!((full.members, full.api_calls), (250, 3));
    std::fs::remove_file(dir.path().join("members.csv")).unwrap();

    common::set_faults(&sandbox, json!({ "repeatCursor": true })).await;
    let limit = std::time::Duration::from_secs(30);
    let err = tokio::time::timeout(limit, flows.run_sync("seats", false, &|_, _| {}))
        .await
        .expect("the sync stops instead of looping")
        .unwrap_err();
    assert!(err.to_string().contains("a second time"), "{err}");
    let err = tokio::time::timeout(limit, flows.run_export("crm"))
        .await
        .expect("the export stops instead of looping")
        .unwrap_err();
    assert!(err.to_string().contains("a second time"), "{err}");
    assert!(!dir.path().join("members.csv").exists(), "nothing written");
    assert!(
        hub.audit(&Default::default())
            .await
            .unwrap()
            .iter()
            .all(|r| r.tool.starts_with("list_")),
        "the sync changed nothing"
    );
    sandbox.shutdown().await.unwrap();
}
