//! A hosted-assistant-style client goes from the bare `/mcp` URL to calling tools: the
//! official Rust SDK's OAuth client (rmcp, `auth` feature) discovers the authorization
//! server from the `401`, registers, sends the owner to the console's consent page,
//! exchanges the code with PKCE and calls tools; then refresh, refresh-token reuse and
//! persona revocation.

mod common;

use common::*;
use memberspot_hub::store::AuditFilter;
use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationManager, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assistant_signs_in_through_the_consent_page_and_calls_tools() {
    let w = world(Backend::Sqlite).await;

    // 1. The bare URL answers 401 and says where to sign in (RFC 9728).
    let probe = reqwest::Client::new()
        .post(w.mcp())
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .expect("probe");
    assert_eq!(probe.status(), StatusCode::UNAUTHORIZED);
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .expect("WWW-Authenticate")
        .to_owned();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            w.base
        )),
        "{challenge}"
    );

    // 2. The SDK discovers, registers (DCR) and builds the authorization link.
    let manager = AuthorizationManager::new_allowing_private_addresses(w.mcp().as_str())
        .await
        .expect("manager");
    let mut state = OAuthState::Unauthorized(manager);
    state
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("Claude Test")
                .with_challenge(challenge),
        )
        .await
        .expect("discovery and registration");
    let link = state
        .get_authorization_url()
        .await
        .expect("authorization URL");
    assert!(
        link.starts_with(&format!("{}/oauth/authorize?", w.base)),
        "{link}"
    );

    // 3. The owner signs in to the console and allows it, as a new read-only persona.
    let mut browser = Browser::new(&w.base);
    let page = browser.open_authorize(&link, OWNER).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Claude Test"),
        "the page names the client"
    );
    assert!(
        page.body.contains("127.0.0.1"),
        "the page names where it returns to"
    );
    let csp = page
        .headers
        .get(reqwest::header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    let done = browser
        .answer_consent(
            &link,
            &page,
            &[
                ("decision", "allow"),
                ("persona", ""),
                ("new_name", "claude"),
                ("persona_scope", "read"),
            ],
        )
        .await;
    let location = done.location.clone().expect("back to the client");
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(param(&location, "iss").as_deref(), Some(w.base.as_str()));

    // 4. The SDK exchanges the code (PKCE) and calls tools as that persona.
    state
        .handle_callback_url(&location)
        .await
        .expect("code exchange");
    let (client_id, creds) = state.get_credentials().await.expect("credentials");
    let first = creds.expect("tokens are held");
    // The SDK's own refresh: a new access token and a rotated refresh token.
    state
        .refresh_token()
        .await
        .expect("refresh through the SDK");
    let (_, creds) = state.get_credentials().await.expect("credentials");
    let second = creds.expect("tokens after the refresh");
    let (first, second) = (
        serde_json::to_value(&first).expect("json"),
        serde_json::to_value(&second).expect("json"),
    );
    assert!(first["access_token"].is_string() && first["refresh_token"].is_string());
    assert_ne!(first["access_token"], second["access_token"]);
    assert_ne!(
        first["refresh_token"], second["refresh_token"],
        "the refresh token rotates"
    );
    let manager = state.into_authorization_manager().expect("authorized");
    let transport = StreamableHttpClientTransport::with_client(
        AuthClient::new(reqwest013::Client::default(), manager),
        StreamableHttpClientTransportConfig::with_uri(w.mcp()),
    );
    let client = ().serve(transport).await.expect("MCP session");
    let tools = client.list_all_tools().await.expect("tools/list");
    let mut seen: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    seen.sort();
    let persona = w.hub.persona("claude").await.expect("persona created");
    assert_eq!(persona.scopes, vec!["read".to_string()]);
    let mut expected: Vec<String> = w
        .hub
        .tools_for(&memberspot_hub::Principal::Persona(persona))
        .expect("tools")
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "exactly the chosen persona's tools");
    assert!(!seen.iter().any(|t| t == "delete_user"));

    let answer = client
        .call_tool(rmcp::model::CallToolRequestParams::new("list_offers"))
        .await
        .expect("tools/call");
    assert_ne!(answer.is_error, Some(true), "{answer:?}");
    client.cancel().await.expect("close");

    // 5. The call is audited under the persona and names the OAuth client.
    let records = w
        .hub
        .audit(&AuditFilter {
            tool: Some("list_offers".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let last = records.last().expect("a record");
    assert_eq!(last.persona.as_deref(), Some("claude"));
    assert_eq!(
        last.oauth_client.as_deref(),
        Some(format!("Claude Test ({client_id})").as_str())
    );
    assert!(w.hub.verify_audit(None).await.expect("verify").ok);
    let grants = w
        .hub
        .list_oauth_grants(Some("claude"))
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].granted_by, OWNER);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_grant() {
    let w = world(Backend::Sqlite).await;
    let s = sign_in(&w, "Rotating Client", "reader").await;
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::OK);

    let refresh = |rt: String| {
        let base = w.base.clone();
        let client_id = s.client_id.clone();
        let resource = w.mcp();
        async move {
            token(
                &base,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &client_id),
                    ("resource", &resource),
                ],
            )
            .await
        }
    };
    let (status, t2) = refresh(s.refresh.clone()).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let access2 = t2["access_token"].as_str().expect("access").to_owned();
    let refresh2 = t2["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(refresh2, s.refresh, "the refresh token rotates");
    assert_eq!(mcp_status(&w, &access2).await, StatusCode::OK);

    // The old refresh token again: theft assumed, the whole grant ends.
    let (status, e) = refresh(s.refresh.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant");
    assert_eq!(mcp_status(&w, &access2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::UNAUTHORIZED);
    let (status, e) = refresh(refresh2).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let grants = w
        .hub
        .list_oauth_grants(Some("reader"))
        .await
        .expect("grants");
    assert!(grants[0].revoked_at.is_some());
    assert_eq!(
        grants[0].revoked_why.as_deref(),
        Some("refresh token used twice")
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_persona_stops_its_access_token_at_the_next_call() {
    let w = world(Backend::Sqlite).await;
    let s = sign_in(&w, "Assistant", "reader").await;
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::OK);
    assert!(w.hub.revoke_persona("reader").await.expect("revoke"));
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::UNAUTHORIZED);
    // Nor can it refresh its way back.
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &s.refresh),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant", "{e}");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_in_the_console_stops_the_token() {
    let w = world(Backend::Postgres).await;
    let s = sign_in(&w, "Console Revoked", "reader").await;
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::OK);
    let mut b = Browser::new(&w.base);
    let page = b
        .open_authorize(&format!("{}/oauth/authorize?x=1", w.base), OWNER)
        .await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "no client: an error page"
    );
    let apps = b.get("/oauth").await;
    assert_eq!(apps.status, StatusCode::OK);
    assert!(apps.body.contains("Console Revoked"), "{}", apps.body);
    let grant = w
        .hub
        .list_oauth_grants(Some("reader"))
        .await
        .expect("grants")[0]
        .id
        .clone();
    // The list links to a confirmation; asking changes nothing.
    assert!(
        apps.body
            .contains(&format!("href=\"/oauth/grants/{grant}/revoke\""))
    );
    let ask = b.get(&format!("/oauth/grants/{grant}/revoke")).await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body
            .contains("Revoke the sign-in of Console Revoked as reader?"),
        "{}",
        ask.body
    );
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::OK);
    let revoked = b
        .post(
            &format!("/oauth/grants/{grant}/revoke"),
            &[("csrf".into(), ask.csrf())],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(mcp_status(&w, &s.access).await, StatusCode::UNAUTHORIZED);
    let audit = w
        .hub
        .audit(&AuditFilter {
            tool: Some("admin.oauth_revoke_grant".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].end_user.as_deref(), Some("console:anna"));
    // A revoked (or unknown) sign-in has nothing left to confirm.
    let again = b.get(&format!("/oauth/grants/{grant}/revoke")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    w.close().await;
}
