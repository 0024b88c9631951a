//! The web console of Memberspot Hub: server-rendered pages (maud, compiled in) at `/`,
//! served by `memberspot serve` on the same listener as REST and MCP, through the
//! server's [`Plugin`] trait.
//!
//! Every change made here goes through the hub's admin operations as the signed-in
//! console user ([`memberspot_hub::admin::Hub::acting_as`]), so it lands in the audit log
//! as `console:NAME`. The Chat page is the exception: its tool calls are the persona's
//! (audited under it, the console user as end user), as in the REST chat. See
//! `docs/console.md`.

mod audit;
mod auth;
mod chat;
mod connections;
mod events;
mod flows;
mod form;
mod format;
pub mod i18n;
mod layout;
mod login_limits;
mod members;
mod oauth;
mod overview;
mod personas;
pub mod session;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use memberspot_hub::Hub;
use memberspot_server::{Plugin, spawn_periodic};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::i18n::I18n;
use crate::login_limits::LoginLimits;

/// Form bodies are small; anything larger is refused before it is read.
const BODY_LIMIT: usize = 64 * 1024;

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where browsers reach the console (`--public-url`). With `https://` cookies are
    /// `Secure`; when set, state-changing requests must come from exactly this origin.
    pub public_url: Option<url::Url>,
    /// The school's time zone: every time on the pages is shown in it.
    pub time_zone: chrono_tz::Tz,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, whatever happens.
    pub absolute_timeout: Duration,
    /// Sign-in attempts per name from one network (an IPv4 address, an IPv6 /64) and
    /// minute (per instance).
    pub login_per_user_per_minute: u32,
    /// Sign-in attempts per network and minute, whatever the names (per instance).
    pub login_per_address_per_minute: u32,
    /// Failed sign-ins per name and minute from all networks together (per instance).
    pub login_failures_per_user_per_minute: u32,
    /// The hub's data directory (shown on the settings page).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            public_url: None,
            time_zone: chrono_tz::Europe::Berlin,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            login_per_user_per_minute: 5,
            login_per_address_per_minute: 20,
            login_failures_per_user_per_minute: 20,
            data_dir: None,
        }
    }
}

/// The console's shared state.
pub struct Console {
    hub: Hub,
    settings: ConsoleSettings,
    i18n: I18n,
    limits: LoginLimits,
    /// The running events service, when `serve` gives it (replays wake its workers; the
    /// rules' sources are listed). Set once, before the routes are served.
    events: std::sync::OnceLock<memberspot_events::Events>,
    /// The running flows service, when `serve` gives it (run now, dry run, the daily summary).
    flows: std::sync::OnceLock<memberspot_flows::Flows>,
    /// Persona chat, when `serve` gives it the models file.
    chat: std::sync::OnceLock<chat::ChatService>,
    /// The OAuth authorization server, when `serve` runs it (the consent page checks
    /// requests with it).
    oauth: std::sync::OnceLock<Arc<memberspot_oauth::OAuth>>,
}

/// The console as a plug-in of the server (clones share one console).
#[derive(Clone)]
pub struct ConsolePlugin {
    console: Arc<Console>,
}

impl ConsolePlugin {
    pub fn new(hub: Hub, settings: ConsoleSettings) -> anyhow::Result<ConsolePlugin> {
        let limits = LoginLimits::new(
            settings.login_per_user_per_minute,
            settings.login_per_address_per_minute,
            settings.login_failures_per_user_per_minute,
        );
        Ok(ConsolePlugin {
            console: Arc::new(Console {
                hub,
                settings,
                i18n: I18n::load()?,
                limits,
                events: std::sync::OnceLock::new(),
                flows: std::sync::OnceLock::new(),
                chat: std::sync::OnceLock::new(),
                oauth: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Gives the console the running events service (the Events page lists its sources;
    /// replays go through it).
    pub fn with_events(self, events: memberspot_events::Events) -> ConsolePlugin {
        let _ = self.console.events.set(events);
        self
    }

    /// Gives the console the running flows service (the Flows page runs flows and the
    /// daily summary through it).
    pub fn with_flows(self, flows: memberspot_flows::Flows) -> ConsolePlugin {
        let _ = self.console.flows.set(flows);
        self
    }

    /// Gives the console the models file (the Chat page talks to the personas it configures).
    pub fn with_models(self, models: memberspot_agent::ModelsConfig) -> ConsolePlugin {
        let _ = self.console.chat.set(chat::ChatService::new(models));
        self
    }

    /// Gives the console the OAuth authorization server (its consent page at
    /// `/oauth/authorize`, the connected apps at `/oauth`).
    pub fn with_oauth(self, oauth: Arc<memberspot_oauth::OAuth>) -> ConsolePlugin {
        let _ = self.console.oauth.set(oauth);
        self
    }

    /// The console's routes, for tests that serve them without the rest of the app.
    pub fn router(&self) -> Router {
        router(self.console.clone())
    }

    /// When no console user exists: a one-time setup link (valid one hour) for the first
    /// owner, on the public URL or else `http://addr`. `None` once users exist.
    pub async fn first_run_link(&self, addr: SocketAddr) -> anyhow::Result<Option<String>> {
        let Some(token) = self.console.hub.issue_console_setup_token().await? else {
            return Ok(None);
        };
        let base = self.base_url(addr);
        Ok(Some(format!(
            "{}/setup?token={}",
            base.trim_end_matches('/'),
            token.expose_secret()
        )))
    }

    fn base_url(&self, addr: SocketAddr) -> String {
        match &self.console.settings.public_url {
            Some(u) => u.as_str().to_owned(),
            None => format!("http://{addr}"),
        }
    }
}

impl Plugin for ConsolePlugin {
    fn name(&self) -> &str {
        "console"
    }

    fn raw_routes(&self) -> Option<Router> {
        Some(self.router())
    }

    fn needs_https(&self) -> Vec<String> {
        vec!["the console's sign-in (/login, /setup) and session cookies".into()]
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let console = self.console.clone();
        // Ended sessions are refused when used; this only keeps the table small.
        vec![spawn_periodic(
            "console: purging ended sessions",
            Duration::from_secs(3600),
            cancel,
            move || {
                let console = console.clone();
                async move {
                    let idle = console.settings.idle_timeout;
                    console.hub.purge_console_sessions(idle).await.map(|_| ())
                }
            },
        )]
    }

    fn summary(&self, addr: SocketAddr) -> Vec<String> {
        vec![format!(
            "  console {}/",
            self.base_url(addr).trim_end_matches('/')
        )]
    }
}

const CSS: &str = include_str!("../assets/console.css");
/// Copy buttons; every page works without it.
const SCRIPT: &str = include_str!("../assets/console.js");

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/setup", get(auth::setup_page).post(auth::setup))
        .route("/logout", post(auth::logout))
        .route("/logout-everywhere", post(auth::logout_everywhere))
        .route("/lang", get(auth::switch_language))
        .route("/personas", get(personas::list).post(personas::create))
        .route("/personas/{name}", get(personas::show))
        .route(
            "/personas/{name}/edit",
            get(personas::edit_page).post(personas::edit),
        )
        .route(
            "/personas/{name}/revoke",
            get(personas::confirm_revoke).post(personas::revoke),
        )
        .route(
            "/personas/{name}/rotate",
            get(personas::confirm_rotate).post(personas::rotate),
        )
        .route("/members", get(members::page))
        .route("/members/revoke", get(members::confirm_revoke))
        .route("/members/grant", post(members::grant))
        .route("/members/state", post(members::set_state))
        .route(
            "/members/expiration",
            get(members::expiration_page).post(members::set_expiration),
        )
        .route("/members/login-link", post(members::login_link))
        .route(
            "/connections",
            get(connections::list).post(connections::add),
        )
        .route("/connections/{name}", get(connections::edit_page))
        .route("/connections/{name}/test", post(connections::test))
        .route("/connections/{name}/rate", post(connections::set_rate))
        .route("/connections/{name}/key", post(connections::rotate_key))
        .route(
            "/connections/{name}/remove",
            get(connections::confirm_remove).post(connections::remove),
        )
        .route("/settings", get(settings::page))
        .route("/settings/users", post(settings::add_user))
        .route(
            "/settings/password",
            get(settings::own_password_page).post(settings::change_own_password),
        )
        .route(
            "/settings/users/{name}/password",
            get(settings::user_password_page).post(settings::set_user_password),
        )
        .route("/settings/users/{name}/role", post(settings::set_role))
        .route(
            "/settings/users/{name}/remove",
            get(settings::confirm_remove).post(settings::remove),
        )
        .route("/events", get(events::list))
        .route("/events/{id}", get(events::detail))
        .route("/events/{id}/dry-run", get(events::dry_run))
        .route(
            "/events/{id}/replay",
            get(events::confirm_replay).post(events::replay),
        )
        .route("/flows", get(flows::list))
        .route("/flows/digest", post(flows::digest))
        .route("/flows/run", post(flows::run_with_input))
        .route("/flows/runs/{id}", get(flows::run_detail))
        .route("/flows/runs/{id}/rerun", post(flows::rerun))
        .route("/flows/{name}/run", post(flows::run))
        .route("/chat", get(chat::list))
        .route("/chat/{persona}", get(chat::show).post(chat::send))
        .route("/chat/{persona}/confirm", post(chat::confirm))
        .route(
            "/oauth/authorize",
            get(oauth::authorize_page).post(oauth::authorize_answer),
        )
        .route("/oauth", get(oauth::apps))
        .route(
            "/oauth/grants/{id}/revoke",
            get(oauth::confirm_revoke).post(oauth::revoke),
        )
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/export", get(audit::export))
        .route("/audit/{seq}", get(audit::detail))
        .route(
            "/assets/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/assets/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .with_state(console)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(protect))
}

/// Headers of every console answer: nothing is cached (tokens are shown once), no script
/// runs but the console's own file (no inline script, no other origin), no other site
/// frames the pages, no URL leaks to other sites through `Referer`.
async fn protect(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    // A page may widen only `form-action` (the OAuth consent page, whose answer redirects
    // to the client); it sets the whole policy itself then.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(
            h,
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        );
    }
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // `same-origin`, not `no-referrer`: with the latter browsers send `Origin: null` on
    // POST, and the origin check needs the real one.
    set(h, header::REFERRER_POLICY, "same-origin");
    r.into_response()
}
