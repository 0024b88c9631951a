//! The Events page, in process on SQLite and PostgreSQL: a dead event is listed, shown and
//! replayed by an owner (recorded as `console:anna`); a viewer sees no replay button and a
//! forged replay from a viewer is refused; a replay without its CSRF token is refused.

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::{AuditFilter, EventStatus, NewDelivery, NewEvent, Verification};
use secrecy::SecretString;

mod common;
use common::{Backend, Client, TestHub};

const PASSWORD: &str = "correct horse battery";

async fn signed_in(t: &TestHub, plugin: &ConsolePlugin, name: &str, role: ConsoleRole) -> Client {
    t.hub
        .add_console_user(name, &SecretString::from(PASSWORD), role)
        .await
        .expect("add user");
    let mut c = Client::new(plugin.router());
    assert_eq!(c.login(name, PASSWORD).await.status, StatusCode::SEE_OTHER);
    c
}

fn delivery(id: &str, body: Option<&str>, verification: Verification) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        source: "ds24".into(),
        provider: "digistore24".into(),
        received_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default(),
        headers: vec![],
        body: body.map(|b| b.as_bytes().to_vec()),
        body_bytes: body.map(str::len).unwrap_or(321),
        verification,
        error: (verification == Verification::Rejected)
            .then(|| "signature does not match".to_owned()),
    }
}

async fn dead_event(t: &TestHub) -> String {
    let store = t.hub.events_store();
    store
        .record_delivery(&delivery("d-refused", None, Verification::Rejected), &[])
        .await
        .expect("refused delivery");
    let inserted = store
        .record_delivery(
            &delivery(
                "d-77",
                Some("event=on_payment&order_id=order-77"),
                Verification::Verified,
            ),
            &[NewEvent {
                dedupe_key: "ds24:order-77:payment".into(),
                source: "ds24".into(),
                provider: "digistore24".into(),
                kind: "purchase".into(),
                name: "on_payment".into(),
                order_id: Some("order-77".into()),
                product_id: Some("4711".into()),
                email: Some("kim@example.com".into()),
                test: false,
                amount_minor: Some(4900),
                currency: Some("EUR".into()),
                data: serde_json::json!({ "order_id": "order-77", "product_id": "4711" }),
                status: EventStatus::Dead,
                connection: Some("sandbox".into()),
                verified: true,
            }],
        )
        .await
        .expect("insert");
    inserted[0].id().to_owned()
}

async fn events_page(backend: Backend) {
    let t = TestHub::open(backend).await;
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut anna = signed_in(&t, &plugin, "anna", ConsoleRole::Owner).await;

    // Nothing yet: empty states that say what to do next.
    let quiet = anna.get("/events").await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert!(quiet.body.contains("No events match"), "{}", quiet.body);
    assert!(quiet.body.contains("No delivery was refused"));
    assert!(quiet.body.contains("No sources configured"));

    let id = dead_event(&t).await;
    let overview = anna.get("/").await;
    assert!(
        overview.body.contains(&format!("href=\"/events/{id}\"")),
        "{}",
        overview.body
    );
    let list = anna.get("/events?status=dead").await;
    assert!(list.body.contains("on_payment") && list.body.contains("order-77"));
    assert!(
        list.body.contains("signature does not match"),
        "the refused delivery with its reason: {}",
        list.body
    );
    let none = anna.get("/events?status=done").await;
    assert!(none.body.contains("No events match"));

    let detail = anna.get(&format!("/events/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("Replay this event"), "{}", detail.body);
    assert!(detail.body.contains("order-77"));
    assert!(
        detail
            .body
            .contains("event=on_payment&amp;order_id=order-77"),
        "the delivery as received: {}",
        detail.body
    );

    // A viewer sees the event but no replay; a forged replay is refused.
    let mut ben = signed_in(&t, &plugin, "ben", ConsoleRole::Viewer).await;
    let seen = ben.get(&format!("/events/{id}")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains("Replay this event"));
    assert!(!seen.body.contains("/replay"));
    assert_eq!(
        ben.get(&format!("/events/{id}/replay")).await.status,
        StatusCode::FORBIDDEN
    );
    let ben_csrf = seen.csrf();
    let forged = ben
        .post(&format!("/events/{id}/replay"), &[("csrf", &ben_csrf)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Without its token the replay is refused.
    let confirm = anna.get(&format!("/events/{id}/replay")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Yes, replay it"));
    let csrf = confirm.csrf();
    let no_token = anna.post(&format!("/events/{id}/replay"), &[]).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let still = t.hub.events_store().get_event(&id).await.expect("get");
    assert_eq!(still.expect("event").status, EventStatus::Dead);

    let replayed = anna
        .post(&format!("/events/{id}/replay"), &[("csrf", &csrf)])
        .await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.body);
    let back = anna
        .get(replayed.location().expect("back to the list"))
        .await;
    assert!(back.body.contains("is queued again"), "{}", back.body);
    let event = t
        .hub
        .events_store()
        .get_event(&id)
        .await
        .expect("get")
        .expect("event");
    assert_eq!(event.status, EventStatus::Pending);
    let history = t.hub.events_store().event_log(&id).await.expect("log");
    assert!(history.iter().any(|h| h.worker == "console:anna"));

    let records = t
        .hub
        .audit(&AuditFilter {
            surface: Some("console".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let replays: Vec<_> = records
        .iter()
        .filter(|r| r.tool == "admin.replay_event")
        .collect();
    assert_eq!(replays.len(), 1, "only the owner's replay is recorded");
    assert_eq!(replays[0].end_user.as_deref(), Some("console:anna"));

    // Keyset paging: 50 a page, older ones behind a link that names the last seq.
    let many: Vec<NewEvent> = (0..55)
        .map(|i| NewEvent {
            dedupe_key: format!("poll:{i}"),
            source: "poll:sandbox".into(),
            provider: "poller".into(),
            kind: "user_created".into(),
            name: format!("user-{i:02}"),
            order_id: None,
            product_id: None,
            email: None,
            test: false,
            amount_minor: None,
            currency: None,
            data: serde_json::json!({}),
            status: EventStatus::Ignored,
            connection: Some("sandbox".into()),
            verified: true,
        })
        .collect();
    t.hub
        .events_store()
        .insert_events(&many)
        .await
        .expect("insert many");
    let first = anna.get("/events?status=ignored").await;
    assert!(first.body.contains("user-54") && !first.body.contains("user-04"));
    let at = first
        .body
        .find("href=\"/events?status=ignored&amp;before=")
        .expect("a link to older events");
    let rest = &first.body[at + "href=\"".len()..];
    let older = rest[..rest.find('"').expect("end")].replace("&amp;", "&");
    let second = anna.get(&older).await;
    assert!(second.body.contains("user-04") && second.body.contains("user-00"));
    assert!(!second.body.contains("user-54"), "{}", second.body);
    assert!(second.body.contains("Newest events"));

    // German.
    anna.cookies.insert("msh_lang".into(), "de".into());
    let de = anna.get("/events").await;
    assert!(de.body.contains("<h1>Ereignisse</h1>"), "{}", de.body);
    t.close().await;
}

#[tokio::test]
async fn events_page_sqlite() {
    events_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn events_page_postgres() {
    events_page(Backend::Postgres).await;
}
