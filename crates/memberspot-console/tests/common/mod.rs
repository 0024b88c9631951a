//! A hub on SQLite or a fresh PostgreSQL database for the console's tests, and a small
//! cookie-keeping client that drives the console's router in process.

#![allow(dead_code)]

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use memberspot_api::ApiKey;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::Store;
use memberspot_hub::{EmbeddedSandbox, Hub};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use tower::ServiceExt;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("MEMBERSPOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A hub with the embedded sandbox school, on `backend`. Keep the returned guard alive.
pub struct TestHub {
    pub hub: Hub,
    pub sandbox: Sandbox,
    /// The store's database, for tests that change it behind the hub's back.
    pub url: String,
    _dir: tempfile::TempDir,
    pg: Option<String>,
}

impl TestHub {
    pub async fn open(backend: Backend) -> TestHub {
        use sqlx::Connection;
        let sandbox = Sandbox::start_local(SandboxConfig {
            api_key: "sk_console_school".into(),
            seed: 5,
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
        let (url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("hub.db").display()),
                None,
            ),
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("console_{}", uuid::Uuid::new_v4().simple());
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
        let embedded = EmbeddedSandbox {
            base_url: sandbox.base_url(),
            api_key: ApiKey::new(sandbox.api_key()),
        };
        let hub = Hub::open(
            Store::open(&url).await.expect("store"),
            MasterKey::generate(),
            Some(embedded),
        )
        .await
        .expect("hub");
        TestHub {
            hub,
            sandbox,
            url,
            _dir: dir,
            pg,
        }
    }

    /// Runs `sql` on the store's database directly, as someone with access to it could.
    pub async fn tamper(&self, sql: &str) {
        use sqlx::Connection;
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("the SQLite file");
            sqlx::query(sql).execute(&mut conn).await.expect("tamper");
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("the database");
            sqlx::query(sql).execute(&mut conn).await.expect("tamper");
        }
    }

    pub async fn close(self) {
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

pub const HOST: &str = "console.test";
pub const ORIGIN: &str = "http://console.test";

/// An answer: status, headers, body text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The value of the first hidden `csrf` field on the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field on the page");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the value")].to_owned()
    }
}

/// A browser without a browser: keeps cookies, sends `Host` (and `Origin` on POST).
pub struct Client {
    pub router: Router,
    pub cookies: HashMap<String, String>,
    pub origin: Option<String>,
    /// Sent as `Accept-Language` when set, as a browser does.
    pub accept_language: Option<String>,
}

impl Client {
    pub fn new(router: Router) -> Client {
        Client {
            router,
            cookies: HashMap::new(),
            origin: Some(ORIGIN.into()),
            accept_language: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.expect("answer");
        let status = res.status();
        let headers = res.headers().clone();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().expect("cookie text");
            let first = c.split(';').next().unwrap_or("");
            let (k, v) = first.split_once('=').expect("name=value");
            if c.contains("Max-Age=0") || v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let mut req = Request::get(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, self.cookie_header());
        if let Some(l) = &self.accept_language {
            req = req.header(header::ACCEPT_LANGUAGE, l);
        }
        self.send(req.body(Body::empty()).expect("request")).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(o) = &self.origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(l) = &self.accept_language {
            req = req.header(header::ACCEPT_LANGUAGE, l);
        }
        self.send(req.body(Body::from(body)).expect("request"))
            .await
    }

    /// As [`Client::post`], for a form built with owned values.
    pub async fn post_owned(&mut self, path: &str, form: &[(&str, String)]) -> Answer {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(path, &pairs).await
    }

    /// Signs in through the login form.
    pub async fn login(&mut self, name: &str, password: &str) -> Answer {
        let page = self.get("/login").await;
        let csrf = page.csrf();
        self.post(
            "/login",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }
}

/// The password the page tests give their console users.
pub const PASSWORD: &str = "correct horse battery";

/// Adds the console user `name` with `role` and signs them in through the login form.
pub async fn signed_in(
    t: &TestHub,
    plugin: &memberspot_console::ConsolePlugin,
    name: &str,
    role: memberspot_hub::console::ConsoleRole,
) -> Client {
    t.hub
        .add_console_user(name, &secrecy::SecretString::from(PASSWORD), role)
        .await
        .expect("add user");
    let mut c = Client::new(plugin.router());
    assert_eq!(c.login(name, PASSWORD).await.status, StatusCode::SEE_OTHER);
    c
}
