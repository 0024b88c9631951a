//! The Events page, in process on SQLite and PostgreSQL: a dead event is listed, shown and
//! replayed by an owner (recorded as `console:anna`); a viewer sees no replay button and a
//! forged replay from a viewer is refused; a replay without its CSRF token is refused.

use axum::http::StatusCode;
use memberspot_console::{ConsolePlugin, ConsoleSettings};
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::{AuditFilter, EventStatus, NewDelivery, NewEvent, Verification};

mod common;
use common::{Backend, Client, PASSWORD, TestHub, signed_in};

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
    // And an event no rule matched (an unknown product).
    let unmatched = t
        .hub
        .events_store()
        .record_delivery(
            &delivery(
                "d-78",
                Some("event=on_payment&order_id=order-78"),
                Verification::Verified,
            ),
            &[NewEvent {
                dedupe_key: "ds24:order-78:payment".into(),
                source: "ds24".into(),
                provider: "digistore24".into(),
                kind: "purchase".into(),
                name: "on_payment".into(),
                order_id: Some("order-78".into()),
                product_id: Some("9999".into()),
                email: Some("lou@example.com".into()),
                test: false,
                amount_minor: Some(4900),
                currency: Some("EUR".into()),
                data: serde_json::json!({ "order_id": "order-78" }),
                status: EventStatus::Unmatched,
                connection: Some("sandbox".into()),
                verified: true,
            }],
        )
        .await
        .expect("insert")[0]
        .id()
        .to_owned();
    // The overview's "needs attention" links each to where it is dealt with.
    let overview = anna.get("/").await;
    let linked = |href: &str, text: &str| {
        overview
            .body
            .contains(&format!("<a href=\"{href}\">{text}</a>"))
    };
    assert!(
        linked(&format!("/events/{id}"), "Dead event on_payment from ds24"),
        "{}",
        overview.body
    );
    assert!(
        linked(
            &format!("/events/{unmatched}"),
            "Unmatched event on_payment from ds24"
        ),
        "{}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains("<a href=\"/events#refused\">One refused delivery to ds24"),
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

    // Filters by source, order and e-mail, kept on the paging links.
    let by_source = anna.get("/events?source=poll%3Asandbox").await;
    assert!(by_source.body.contains("user-54") && !by_source.body.contains("order-77"));
    assert!(
        by_source
            .body
            .contains("href=\"/events?status=&amp;source=poll%3Asandbox&amp;before="),
        "{}",
        by_source.body
    );
    let by_order = anna.get("/events?order=order-77").await;
    assert!(by_order.body.contains("order-77") && !by_order.body.contains("user-54"));
    assert!(
        by_order.body.contains("value=\"order-77\""),
        "the filter stays filled in"
    );
    let by_email = anna.get("/events?email=LOU%40example.com").await;
    assert!(by_email.body.contains("order-78") && !by_email.body.contains("order-77"));

    // Refused deliveries page by themselves, 20 at a time.
    for i in 0..24 {
        t.hub
            .events_store()
            .record_delivery(
                &delivery(&format!("d-forged-{i}"), None, Verification::Rejected),
                &[],
            )
            .await
            .expect("refused");
    }
    let refused = anna.get("/events").await;
    let rows = |body: &str| {
        let at = body.find("<h2 id=\"refused\">").expect("refused section");
        let section = &body[at..];
        let end = section.find("</table>").unwrap_or(section.len());
        section[..end].matches("signature does not match").count()
    };
    assert_eq!(rows(&refused.body), 20);
    let at = refused
        .body
        .find("href=\"/events?status=&amp;refused_before=")
        .expect("a link to older refused deliveries");
    let rest = &refused.body[at + "href=\"".len()..];
    let older = rest[..rest.find('"').expect("end")].replace("&amp;", "&");
    let second = anna.get(&older).await;
    assert_eq!(rows(&second.body), 5, "24 forged and the first one");

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

const DS24_PASS: &str = "Mbr-IPN-passphrase-2026!";

fn rules(offer: &str) -> String {
    format!(
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret = \"{DS24_PASS}\"\nconnection = \"sandbox\"\n\n\
         [[rules]]\nsource = \"ds24\"\nproduct = \"4711\"\noffer = \"{offer}\"\n"
    )
}

fn purchase(order: &str, product: &str, email: &str) -> NewEvent {
    NewEvent {
        dedupe_key: format!("ds24:{order}:payment"),
        source: "ds24".into(),
        provider: "digistore24".into(),
        kind: "purchase".into(),
        name: "on_payment".into(),
        order_id: Some(order.into()),
        product_id: Some(product.into()),
        email: Some(email.into()),
        test: false,
        amount_minor: Some(1900),
        currency: Some("EUR".into()),
        data: serde_json::json!({ "order_id": order, "product_id": product, "email": email }),
        status: EventStatus::Dead,
        connection: Some("sandbox".into()),
        verified: true,
    }
}

/// A dry run of the rules against stored events: the rule that matches and the calls it
/// would make (or why nothing would happen), decided by the events crate's own checks;
/// nothing is called or written. The sources with their receiver URLs, to copy.
async fn dry_run_and_sources(backend: Backend) {
    let t = TestHub::open(backend).await;
    let offer = t.hub.offers_of("sandbox").await.expect("offers")[0]
        .id
        .clone();
    let config =
        memberspot_events::EventsConfig::parse(&rules(&offer), "rules.toml", None).expect("rules");
    let events = memberspot_events::Events::start(t.hub.clone(), config)
        .await
        .expect("events");
    let store = t.hub.events_store();
    let inserted = store
        .insert_events(&[
            purchase("order-1", "4711", "kim@example.com"),
            purchase("order-2", "9999", "kim@example.com"),
        ])
        .await
        .expect("events");
    let (matched, unmatched) = (inserted[0].id().to_owned(), inserted[1].id().to_owned());

    // Without the events service there is no dry run to offer.
    let bare = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut first = signed_in(&t, &bare, "anna", ConsoleRole::Owner).await;
    let plain = first.get(&format!("/events/{matched}")).await;
    assert!(!plain.body.contains("/dry-run"));
    assert_eq!(
        first
            .get(&format!("/events/{matched}/dry-run"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_events(events);
    let mut anna = Client::new(plugin.router());
    assert_eq!(
        anna.login("anna", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let detail = anna.get(&format!("/events/{matched}")).await;
    assert!(
        detail
            .body
            .contains(&format!("href=\"/events/{matched}/dry-run\"")),
        "{}",
        detail.body
    );
    let dry = anna.get(&format!("/events/{matched}/dry-run")).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert!(
        dry.body
            .contains(&format!("rule 1 (line 6): product 4711 → offer {offer}")),
        "{}",
        dry.body
    );
    assert!(dry.body.contains("<code>grant_user_offer_by_email</code>"));
    assert!(dry.body.contains("kim@example.com"));
    assert!(dry.body.contains("none → active"), "{}", dry.body);
    assert!(dry.body.contains("A dry run changes nothing"));

    let other = anna.get(&format!("/events/{unmatched}/dry-run")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(
        other
            .body
            .contains("no rule for source `ds24` product `9999`"),
        "{}",
        other.body
    );
    assert!(other.body.contains("unmatched"));
    assert!(other.body.contains("No tool would be called."));

    // Nothing was called or written.
    for id in [&matched, &unmatched] {
        let e = store.get_event(id).await.expect("get").expect("event");
        assert_eq!(e.status, EventStatus::Dead);
        assert!(store.event_actions(id).await.expect("actions").is_empty());
    }
    assert!(
        store
            .get_order("ds24", "order-1")
            .await
            .expect("order")
            .is_none()
    );
    let calls = t
        .hub
        .audit(&AuditFilter {
            tool: Some("grant_user_offer_by_email".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert!(calls.is_empty(), "no grant was made");

    // The sources with their receiver URLs in a field to copy.
    let list = anna.get("/events").await;
    assert!(
        list.body
            .contains("<label class=\"sr-only\" for=\"receiver-0\">Receiver URL of ds24</label>"),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains("readonly value=\"http://console.test/hooks/ds24\"")
    );
    assert!(list.body.contains("data-copy=\"receiver-0\""));

    // A viewer may look at a dry run: it changes nothing.
    let mut ben = signed_in(&t, &plugin, "ben", ConsoleRole::Viewer).await;
    let seen = ben.get(&format!("/events/{matched}/dry-run")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains("method=\"post\" action=\"/events"));

    anna.cookies.insert("msh_lang".into(), "de".into());
    let de = anna.get(&format!("/events/{matched}/dry-run")).await;
    assert!(de.body.contains("Probelauf von on_payment"), "{}", de.body);
    assert!(de.body.contains("würde 1 Tool aufrufen") || de.body.contains("Tools aufrufen"));
    t.close().await;
}

#[tokio::test]
async fn dry_run_and_sources_sqlite() {
    dry_run_and_sources(Backend::Sqlite).await;
}

#[tokio::test]
async fn dry_run_and_sources_postgres() {
    dry_run_and_sources(Backend::Postgres).await;
}

/// The Connections page names what in the rules and flows files acts on each connection.
async fn connections_show_their_users(backend: Backend) {
    use memberspot_agent::config::ModelsConfig;
    let t = TestHub::open(backend).await;
    let offer = t.hub.offers_of("sandbox").await.expect("offers")[0]
        .id
        .clone();
    let bare = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default()).expect("console");
    let mut first = signed_in(&t, &bare, "anna", ConsoleRole::Owner).await;
    let quiet = first.get("/connections").await;
    assert!(
        quiet
            .body
            .contains("shown while the hub serves with its rules and flows files"),
        "{}",
        quiet.body
    );

    let config =
        memberspot_events::EventsConfig::parse(&rules(&offer), "rules.toml", None).expect("rules");
    let events = memberspot_events::Events::start(t.hub.clone(), config)
        .await
        .expect("events");
    let flows_file = "default_connection = \"sandbox\"\n\n[digest]\nenabled = true\nat = \"07:00\"\n\n\
        [[flows]]\nname = \"offers-report\"\npersona = \"reporter\"\ntrigger.manual = true\n\n\
        [[flows.steps]]\nname = \"offers\"\ntool = \"list_offers\"\n";
    let flows = memberspot_flows::Flows::start(
        t.hub.clone(),
        memberspot_flows::FlowsConfig::parse(flows_file, "flows.toml", None).expect("flows"),
        ModelsConfig::default(),
    )
    .await
    .expect("flows");
    let plugin = ConsolePlugin::new(t.hub.clone(), ConsoleSettings::default())
        .expect("console")
        .with_events(events)
        .with_flows(flows);
    let mut anna = Client::new(plugin.router());
    assert_eq!(
        anna.login("anna", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let page = anna.get("/connections").await;
    assert_eq!(page.status, StatusCode::OK);
    let row = &page.body[page.body.find("<td>sandbox</td>").expect("the sandbox row")..];
    let row = &row[..row.find("</tr>").expect("end of row")];
    for part in [
        "rules source ds24 (1 rules)",
        "the daily summary",
        "flow offers-report",
        "hook-ds24",
        "reporter",
    ] {
        assert!(row.contains(part), "{part} in {row}");
    }
    anna.cookies.insert("msh_lang".into(), "de".into());
    let de = anna.get("/connections").await;
    assert!(
        de.body.contains("Regelquelle ds24 (1 Regeln)"),
        "{}",
        de.body
    );
    t.close().await;
}

#[tokio::test]
async fn connections_show_their_users_sqlite() {
    connections_show_their_users(Backend::Sqlite).await;
}

#[tokio::test]
async fn connections_show_their_users_postgres() {
    connections_show_their_users(Backend::Postgres).await;
}
