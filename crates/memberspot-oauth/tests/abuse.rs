//! Everything a client, a link or a page can send to the sign-in is tried the wrong way:
//! wrong verifiers, resources and redirect URIs, forged consent, replayed and raced codes
//! and refresh tokens, hostile client metadata.

mod common;

use common::*;
use memberspot_hub::HubError;
use reqwest::StatusCode;
use serde_json::json;

/// A registered client and an authorization link for it, with its PKCE verifier.
struct Started {
    client_id: String,
    verifier: String,
    url: String,
}

fn start(w: &World, client_id: &str, overrides: &[(&str, &str)]) -> Started {
    let (verifier, challenge) = pkce();
    let mcp = w.mcp();
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "st4te"),
        ("resource", &mcp),
    ];
    for (k, v) in overrides {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    Started {
        client_id: client_id.to_owned(),
        url: authorize_url(&w.base, &params),
        verifier,
    }
}

/// Signs in as the owner, allows as `reader`, returns the code.
async fn allowed_code(w: &World, s: &Started) -> String {
    let mut b = Browser::new(&w.base);
    let page = b.open_authorize(&s.url, OWNER).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    code_of(
        &b.answer_consent(
            &s.url,
            &page,
            &[("decision", "allow"), ("persona", "reader")],
        )
        .await,
    )
}

async fn exchange(
    w: &World,
    s: &Started,
    code: &str,
    verifier: &str,
) -> (StatusCode, serde_json::Value) {
    token(
        &w.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", &s.client_id),
            ("code_verifier", verifier),
            ("resource", &w.mcp()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_verifier_burns_the_code_and_a_replay_revokes_the_grant() {
    let w = world(Backend::Sqlite).await;
    let client = register_client(&w.base, "Verifier").await;
    let s = start(&w, &client, &[]);
    let code = allowed_code(&w, &s).await;
    let (other, _) = pkce();
    let (status, e) = exchange(&w, &s, &code, &other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant", "{e}");
    // The right verifier comes too late: the code was used by the first attempt.
    let (status, e) = exchange(&w, &s, &code, &s.verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant");
    let grants = w
        .hub
        .list_oauth_grants(Some("reader"))
        .await
        .expect("grants");
    assert!(
        grants[0].revoked_at.is_some(),
        "a replayed code ends the grant"
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_this_hubs_mcp_url() {
    let w = world(Backend::Sqlite).await;
    let client = register_client(&w.base, "Resource").await;
    // Asked for another resource: back to the client with invalid_target, no consent page.
    let s = start(&w, &client, &[("resource", "https://other.example/mcp")]);
    let mut b = Browser::new(&w.base);
    let a = b.open_authorize(&s.url, OWNER).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let loc = a.location.expect("redirect");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("invalid_target"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st4te"));
    // Without a resource at all: refused the same way.
    let s = start(&w, &client, &[("resource", "")]);
    let a = b.open_authorize(&s.url, OWNER).await;
    assert_eq!(
        param(&a.location.expect("redirect"), "error").as_deref(),
        Some("invalid_target")
    );
    // A code for this hub exchanged for another resource.
    let s = start(&w, &client, &[]);
    let code = allowed_code(&w, &s).await;
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client),
            ("code_verifier", &s.verifier),
            ("resource", "https://other.example/mcp"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_target", "{e}");
    // A token of this hub presented for another resource is refused.
    let signed = sign_in(&w, "Bound", "reader").await;
    let other = w
        .hub
        .authenticate_oauth(&signed.access, "https://other.example/mcp")
        .await;
    assert!(
        matches!(other, Err(HubError::Unauthenticated(_))),
        "{other:?}"
    );
    assert!(
        w.hub
            .authenticate_oauth(&signed.access, &w.mcp())
            .await
            .is_ok()
    );
    // Tokens only in the Authorization header, never in the URL.
    let status = reqwest::Client::new()
        .post(format!("{}?access_token={}", w.mcp(), signed.access))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("mcp")
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_redirect_uri_gets_an_error_page_and_no_redirect() {
    let w = world(Backend::Sqlite).await;
    let client = register_client(&w.base, "Redirects").await;
    let mut b = Browser::new(&w.base);
    for bad in [
        "https://evil.example/callback",
        "http://127.0.0.1:9/callback/../evil",
        "http://127.0.0.1:9/callbackX",
    ] {
        let s = start(&w, &client, &[("redirect_uri", bad)]);
        let a = b.open_authorize(&s.url, OWNER).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(a.location.is_none(), "never redirect to {bad}");
        // Nor with the form, posted by hand.
        let own_page = b.get("/oauth").await;
        let forged = b
            .answer_consent(
                &s.url,
                &own_page,
                &[("decision", "allow"), ("persona", "reader")],
            )
            .await;
        assert!(forged.location.is_none(), "{bad}: {:?}", forged.location);
    }
    // An unknown client: an error page too.
    let s = start(&w, "mshc_unknown", &[]);
    let a = b.open_authorize(&s.url, OWNER).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("unknown client_id"), "{}", a.body);
    assert!(
        w.hub
            .list_oauth_grants(None)
            .await
            .expect("grants")
            .is_empty()
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_required_and_only_s256() {
    let w = world(Backend::Sqlite).await;
    let client = register_client(&w.base, "Pkce").await;
    let mut b = Browser::new(&w.base);
    for (k, v) in [
        ("code_challenge", ""),
        ("code_challenge_method", "plain"),
        ("code_challenge_method", ""),
        ("code_challenge", "short"),
        ("response_type", "token"),
    ] {
        let s = start(&w, &client, &[(k, v)]);
        let a = b.open_authorize(&s.url, OWNER).await;
        let loc = a.location.unwrap_or_else(|| panic!("{k}={v}: {}", a.body));
        let error = param(&loc, "error");
        assert!(
            matches!(
                error.as_deref(),
                Some("invalid_request" | "unsupported_response_type")
            ),
            "{k}={v}: {loc}"
        );
        assert!(param(&loc, "code").is_none());
    }
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_viewers_forged_posts_and_foreign_origins_grant_nothing() {
    let w = world(Backend::Sqlite).await;
    let client = register_client(&w.base, "Consent").await;
    let s = start(&w, &client, &[]);

    // Deny: back to the client with access_denied and the state.
    let mut owner = Browser::new(&w.base);
    let page = owner.open_authorize(&s.url, OWNER).await;
    let denied = owner
        .answer_consent(
            &s.url,
            &page,
            &[("decision", "deny"), ("persona", "reader")],
        )
        .await;
    let loc = denied.location.expect("redirect");
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st4te"));
    assert!(param(&loc, "code").is_none());

    // A viewer sees no form, and a POST made by hand is refused.
    let mut viewer = Browser::new(&w.base);
    let page = viewer.open_authorize(&s.url, "vera").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!page.body.contains("name=\"decision\""));
    let own_page = viewer.get("/oauth").await;
    let forged = viewer
        .answer_consent(
            &s.url,
            &own_page,
            &[("decision", "allow"), ("persona", "reader")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // The owner's session, but no CSRF token: refused.
    let mut form: Vec<(String, String)> = url::Url::parse(&s.url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    form.push(("decision".into(), "allow".into()));
    form.push(("persona".into(), "reader".into()));
    let no_csrf = owner.post("/oauth/authorize", &form).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert!(
        w.hub
            .list_oauth_grants(None)
            .await
            .expect("grants")
            .is_empty()
    );

    // A sign-in link whose `next` points elsewhere lands on the overview.
    let mut b = Browser::new(&w.base);
    let login = b.get("/login?next=https%3A%2F%2Fevil.example%2F").await;
    assert!(!login.body.contains("evil.example"));
    let signed = b
        .post(
            "/login",
            &[
                ("csrf".into(), login.csrf()),
                ("name".into(), OWNER.into()),
                ("password".into(), PASSWORD.into()),
                ("next".into(), "https://evil.example/".into()),
            ],
        )
        .await;
    assert_eq!(signed.location.as_deref(), Some("/"));
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_refresh_tokens_belong_to_their_client() {
    let w = world(Backend::Sqlite).await;
    let a = register_client(&w.base, "Client A").await;
    let b_client = register_client(&w.base, "Client B").await;
    let s = start(&w, &a, &[]);
    let code = allowed_code(&w, &s).await;
    let stolen = Started {
        client_id: b_client.clone(),
        verifier: s.verifier.clone(),
        url: s.url.clone(),
    };
    let (status, e) = exchange(&w, &stolen, &code, &s.verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant", "{e}");

    let signed = sign_in(&w, "Owner Of Refresh", "reader").await;
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &signed.refresh),
            ("client_id", &b_client),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_grant", "{e}");

    // Unknown clients, secrets, doubled parameters, other grant types.
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "nobody"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_client");
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", &a),
            ("client_secret", "guess"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_client");
    let (status, e) = token(
        &w.base,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &a),
            ("client_id", &b_client),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_request");
    let (status, e) = token(
        &w.base,
        &[("grant_type", "client_credentials"), ("client_id", &a)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "unsupported_grant_type");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_unsafe_redirects_and_secrets() {
    let w = world(Backend::Sqlite).await;
    for (body, error) in [
        (
            json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://user:pw@app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_client_metadata"),
        (
            json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb"], "grant_types": ["implicit"]}),
            "invalid_client_metadata",
        ),
        (json!("not an object"), "invalid_client_metadata"),
    ] {
        let (status, e) = register(&w.base, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(e["error"], error, "{body}: {e}");
    }
    // Claude's callbacks register fine; a control character in the name is dropped.
    let (status, ok) = register(
        &w.base,
        json!({
            "client_name": "Claude\u{0007}",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");
    assert_eq!(ok["client_name"], "Claude");
    assert_eq!(ok["token_endpoint_auth_method"], "none");
    assert!(w.hub.list_oauth_clients().await.expect("clients").len() == 1);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_describe_this_hub() {
    let w = world(Backend::Sqlite).await;
    let get = |path: &str| {
        let url = format!("{}{path}", w.base);
        async move {
            let r = reqwest::get(url).await.expect("get");
            (
                r.status(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, prm) = get("/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prm["resource"], w.mcp());
    assert_eq!(prm["authorization_servers"][0], w.base);
    let (_, root) = get("/.well-known/oauth-protected-resource").await;
    assert_eq!(root, prm);
    let (status, asm) = get("/.well-known/oauth-authorization-server").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(asm["issuer"], w.base);
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        asm["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );
    assert_eq!(
        asm["registration_endpoint"],
        format!("{}/oauth/register", w.base)
    );
    let (_, oidc) = get("/.well-known/openid-configuration").await;
    assert_eq!(oidc, asm);
    // A Host the hub cannot vouch for (no public URL): no metadata, so nothing is bound to it.
    let r = reqwest::Client::new()
        .get(format!("{}/.well-known/oauth-authorization-server", w.base))
        .header(reqwest::header::HOST, "evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    w.close().await;
}

/// Two requests with one code or one refresh token at the same time: one wins, in one
/// process and in two (two hubs on one PostgreSQL database).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_let_exactly_one_through() {
    let w = world(Backend::Postgres).await;
    let client = register_client(&w.base, "Racer").await;
    let s = start(&w, &client, &[]);
    let code = allowed_code(&w, &s).await;
    let (a, b) = tokio::join!(
        exchange(&w, &s, &code, &s.verifier),
        exchange(&w, &s, &code, &s.verifier)
    );
    let wins = [a.0, b.0].iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");

    // A second hub process on the same database.
    let other = memberspot_hub::Hub::open(
        memberspot_hub::store::Store::open(&w.db_url)
            .await
            .expect("store"),
        {
            use secrecy::ExposeSecret;
            memberspot_hub::secrets::MasterKey::parse(w.hub.master_key().encode().expose_secret())
                .expect("the same key")
        },
        None,
    )
    .await
    .expect("second hub");
    let signed = sign_in(&w, "Racer Two", "reader").await;
    let mcp = w.mcp();
    let (a, b) = tokio::join!(
        w.hub
            .refresh_oauth(&signed.client_id, &signed.refresh, Some(&mcp)),
        other.refresh_oauth(&signed.client_id, &signed.refresh, Some(&mcp))
    );
    // The second use looks like a replay and revokes the grant. Whether the first one's
    // new tokens were stored before that revocation is timing: at most one refresh
    // answers with tokens, and none of them works, because the grant is revoked.
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count();
    assert!(wins <= 1, "two refreshes won");
    let grants = w.hub.list_oauth_grants(None).await.expect("grants");
    let grant = grants
        .iter()
        .find(|g| g.client_id == signed.client_id)
        .expect("the grant");
    assert!(grant.revoked_at.is_some(), "the replay revoked the grant");
    use secrecy::ExposeSecret;
    for issued in [a, b].into_iter().flatten() {
        assert_eq!(
            mcp_status(&w, issued.access_token.expose_secret()).await,
            StatusCode::UNAUTHORIZED,
            "a token of a revoked grant"
        );
    }
    other.close().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_identified_by_a_metadata_document_are_fetched_and_checked() {
    use axum::routing::get;
    let w = world(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let docs = format!("http://{}", listener.local_addr().expect("addr"));
    let good = format!("{docs}/good.json");
    let liar = format!("{docs}/liar.json");
    let huge = format!("{docs}/huge.json");
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fetched = counter.clone();
    let good_doc =
        json!({"client_id": good, "client_name": "Le Chat Test", "redirect_uris": [REDIRECT]});
    let app = axum::Router::new()
        .route("/good.json", get(move || async move { axum::Json(good_doc) }))
        .route(
            "/liar.json",
            get(|| async { axum::Json(json!({"client_id": "https://someone.else/c.json", "redirect_uris": [REDIRECT]})) }),
        )
        .route("/huge.json", get(|| async { "x".repeat(200 * 1024) }))
        .route("/moved.json", get(|| async { axum::response::Redirect::to("/good.json") }))
        .route(
            "/counted.json",
            get(move || {
                fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { axum::Json(json!({"client_id": "unused", "redirect_uris": [REDIRECT]})) }
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A viewer, who cannot allow anything, does not make the hub fetch (or keep) a
    // client's document: refused before the request is looked at.
    let mut viewer = Browser::new(&w.base);
    let s = start(&w, &format!("{docs}/counted.json"), &[]);
    let refused = viewer.open_authorize(&s.url, "vera").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 0);

    let mut b = Browser::new(&w.base);
    let s = start(&w, &good, &[]);
    let page = b.open_authorize(&s.url, OWNER).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Le Chat Test"));
    let code = code_of(
        &b.answer_consent(
            &s.url,
            &page,
            &[("decision", "allow"), ("persona", "reader")],
        )
        .await,
    );
    let (status, t) = exchange(&w, &s, &code, &s.verifier).await;
    assert_eq!(status, StatusCode::OK, "{t}");

    for (bad, why) in [
        (liar, "not its own URL"),
        (huge, "larger than"),
        (format!("{docs}/moved.json"), "HTTP 3"),
        (format!("{docs}/missing.json"), "HTTP 404"),
    ] {
        let s = start(&w, &bad, &[]);
        let a = b.open_authorize(&s.url, OWNER).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(a.body.contains(why), "{bad}: {}", a.body);
        assert!(a.location.is_none());
    }
    server.abort();
    w.close().await;
}
