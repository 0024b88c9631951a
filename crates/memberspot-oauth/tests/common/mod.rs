//! The whole hub (gateway, `/mcp`, console, OAuth endpoints) served on a loopback port,
//! and a cookie-keeping "browser" that signs in to the console and answers the consent page
//! like a person would.

#![allow(dead_code)]

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use memberspot_api::ApiKey;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_oauth::{OAuthPlugin, OAuthSettings};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, Plugin, ServerSettings};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub const OWNER: &str = "anna";
pub const PASSWORD: &str = "correct horse battery";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A running hub.
pub struct World {
    pub hub: Hub,
    pub base: String,
    pub db_url: String,
    pub sandbox: Sandbox,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
    pg: Option<String>,
}

pub async fn world(backend: Backend) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use sqlx::Connection;
    let sandbox = Sandbox::start_local(SandboxConfig {
        api_key: "sk_oauth_school".into(),
        seed: 7,
        size: SeedSize {
            users: 3,
            offers: 2,
            courses: 1,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let (db_url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("hub.db").display()),
            None,
        ),
        Backend::Postgres => {
            let admin = pg_admin_url();
            let name = format!("oauth_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL must be running ({admin}): {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            let (base, _) = admin.rsplit_once('/').expect("a database URL");
            (format!("{base}/{name}"), Some(name))
        }
    };
    let key = MasterKey::generate();
    let hub = Hub::open(
        Store::open(&db_url).await.expect("store"),
        key,
        Some(EmbeddedSandbox {
            base_url: sandbox.base_url(),
            api_key: ApiKey::new(sandbox.api_key()),
        }),
    )
    .await
    .expect("hub");
    hub.add_console_user(OWNER, &SecretString::from(PASSWORD), ConsoleRole::Owner)
        .await
        .expect("owner");
    hub.add_console_user("vera", &SecretString::from(PASSWORD), ConsoleRole::Viewer)
        .await
        .expect("viewer");
    hub.create_persona(PersonaSpec {
        name: "reader".into(),
        description: String::new(),
        connection: None,
        scopes: vec!["read".into()],
        offer_ids: None,
        calls_per_minute: None,
    })
    .await
    .expect("persona");
    let oauth = OAuthPlugin::new(
        hub.clone(),
        OAuthSettings {
            public_url: None,
            allow_private_client_metadata: true,
        },
    )
    .expect("oauth");
    let console = memberspot_console::ConsolePlugin::new(
        hub.clone(),
        memberspot_console::ConsoleSettings::default(),
    )
    .expect("console")
    .with_oauth(oauth.oauth());
    let plugins: Vec<Box<dyn Plugin>> = vec![Box::new(oauth), Box::new(console)];
    let app = App::build(
        hub.clone(),
        ServerSettings {
            oauth: true,
            ..ServerSettings::default()
        },
        plugins,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(app.serve(listener, cancel.clone()));
    World {
        hub,
        base,
        db_url,
        sandbox,
        cancel,
        task,
        _dir: dir,
        pg,
    }
}

impl World {
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub async fn close(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        self.hub.close().await;
        if let Some(name) = self.pg {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// An answer: status, `Location`, body.
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The first hidden `csrf` field of the page.
    pub fn csrf(&self) -> String {
        let key = "name=\"csrf\" value=\"";
        let at = self.body.find(key).expect("a csrf field on the page");
        let rest = &self.body[at + key.len()..];
        rest[..rest.find('"').expect("end of the value")].to_owned()
    }
}

/// A browser: keeps cookies, follows nothing by itself, sends `Origin` on POST.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.to_owned(),
            cookies: HashMap::new(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn answer(&mut self, r: reqwest::Response) -> Answer {
        for c in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let c = c.to_str().expect("cookie");
            let first = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                if c.contains("Max-Age=0") || v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let status = r.status();
        let headers = r.headers().clone();
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Answer {
            status,
            location,
            headers,
            body: r.text().await.unwrap_or_default(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let r = self
            .http
            .get(self.url(path))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.answer(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(String, String)]) -> Answer {
        let r = self
            .http
            .post(self.url(path))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(reqwest::header::ORIGIN, &self.base)
            .form(form)
            .send()
            .await
            .expect("POST");
        self.answer(r).await
    }

    /// Opens an authorization link; signs in as `user` when sent to the login page; returns
    /// the consent page (or whatever answered instead).
    pub async fn open_authorize(&mut self, url: &str, user: &str) -> Answer {
        let first = self.get(url).await;
        let Some(loc) = first.location.clone() else {
            return first;
        };
        if !loc.starts_with("/login") {
            return first;
        }
        let login = self.get(&loc).await;
        assert_eq!(login.status, StatusCode::OK, "login page: {}", login.body);
        let next = url::Url::parse(&format!("{}{loc}", self.base))
            .expect("login URL")
            .query_pairs()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned())
            .expect("the login link carries where to go back");
        assert!(
            login.body.contains("name=\"next\""),
            "the login form keeps where to go back"
        );
        let signed = self
            .post(
                "/login",
                &[
                    ("csrf".into(), login.csrf()),
                    ("name".into(), user.into()),
                    ("password".into(), PASSWORD.into()),
                    ("next".into(), next.clone()),
                ],
            )
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        assert_eq!(signed.location.as_deref(), Some(next.as_str()));
        self.get(&next).await
    }

    /// Answers the consent page of `authorize_url` with `extra` fields (decision, persona…):
    /// the request's own parameters go back as the page's hidden fields do.
    pub async fn answer_consent(
        &mut self,
        authorize_url: &str,
        page: &Answer,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut form: Vec<(String, String)> = url::Url::parse(authorize_url)
            .expect("authorization URL")
            .query_pairs()
            .into_owned()
            .collect();
        form.push(("csrf".into(), page.csrf()));
        form.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.post("/oauth/authorize", &form).await
    }
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Registers a public client by RFC 7591.
pub async fn register(base: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/oauth/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn register_client(base: &str, name: &str) -> String {
    let (status, body) = register(
        base,
        json!({ "client_name": name, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["client_id"].as_str().expect("client_id").to_owned()
}

pub fn authorize_url(base: &str, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&format!("{base}/oauth/authorize")).expect("url");
    u.query_pairs_mut().extend_pairs(params);
    u.to_string()
}

/// POSTs to the token endpoint.
pub async fn token(base: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(form)
        .send()
        .await
        .expect("token");
    let status = r.status();
    assert_eq!(
        r.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "token answers are never cached"
    );
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The status of an MCP `initialize` with `token`.
pub async fn mcp_status(w: &World, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(w.mcp())
        .bearer_auth(token)
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": { "name": "probe", "version": "1" } }
        }))
        .send()
        .await
        .expect("mcp")
        .status()
}

/// A client registered, consent given by the owner as `persona`, the code exchanged: the
/// token answer with the client id and the PKCE verifier used.
pub struct Signed {
    pub client_id: String,
    pub access: String,
    pub refresh: String,
}

pub async fn sign_in(w: &World, client_name: &str, persona: &str) -> Signed {
    let client_id = register_client(&w.base, client_name).await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &w.base,
        &[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s-1"),
            ("resource", &w.mcp()),
        ],
    );
    let mut b = Browser::new(&w.base);
    let page = b.open_authorize(&url, OWNER).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let done = b
        .answer_consent(&url, &page, &[("decision", "allow"), ("persona", persona)])
        .await;
    let code = code_of(&done);
    let (status, t) = token(
        &w.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
            ("resource", &w.mcp()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    Signed {
        client_id,
        access: t["access_token"].as_str().expect("access").to_owned(),
        refresh: t["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

/// The `code` of a consent answer's redirect (asserting it went to the client).
pub fn code_of(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let loc = a.location.clone().expect("a redirect");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    url::Url::parse(&loc)
        .expect("redirect URL")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {loc}"))
}

/// A query parameter of a redirect.
pub fn param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
