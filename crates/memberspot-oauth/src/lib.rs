//! Remote MCP sign-in for hosted assistants: `memberspot serve` as the OAuth 2.1
//! authorization server of its own `/mcp` (MCP authorization specification, 2025-06-18 and
//! 2025-11-25).
//!
//! - [`metadata`]: Protected Resource Metadata (RFC 9728) and Authorization Server
//!   Metadata (RFC 8414), also at the OpenID discovery path.
//! - [`register`]: Dynamic Client Registration (RFC 7591), public clients only.
//! - [`client_metadata`]: clients whose `client_id` is the HTTPS URL of their metadata
//!   document, fetched with a size cap and a time-out, never from private addresses unless
//!   the owner allows it.
//! - [`authorize`]: the checks of an authorization request. The consent page itself is the
//!   console's (`/oauth/authorize`): the owner signs in there and picks the persona.
//! - [`token`]: the token endpoint (authorization code with PKCE S256, refresh with
//!   rotation); the grants and tokens themselves are the hub's (`memberspot_hub::oauth`).
//!
//! The issuer is `--public-url` (HTTPS, or loopback for local use); without one only a
//! request to a loopback `Host` is answered, so tokens are never bound to a URL a client
//! made up.

pub mod authorize;
pub mod client_metadata;
pub mod metadata;
pub mod register;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use memberspot_hub::Hub;
use memberspot_server::public_url;
use memberspot_server::{Plugin, spawn_periodic};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use authorize::{AuthorizeError, AuthorizeQuery, CheckedAuthorize};

/// How the authorization server behaves.
#[derive(Debug, Clone, Default)]
pub struct OAuthSettings {
    /// Where clients reach the hub (`--public-url`): the issuer and the base of the
    /// resource URL. Must be `https`, or `http` on a loopback host.
    pub public_url: Option<url::Url>,
    /// Fetch client metadata documents from private and loopback addresses too (and over
    /// plain `http` on loopback): for a hub and its clients on one private network, and
    /// for tests. Off by default: a client id must not make the hub reach inside.
    pub allow_private_client_metadata: bool,
}

/// Why the OAuth endpoints cannot be served with these settings.
#[derive(Debug, thiserror::Error)]
pub enum OAuthSetupError {
    #[error(
        "--public-url {0} is plain http on a host that is not loopback: OAuth sends sign-in codes and tokens through it, which anyone on the way could read. Put the hub behind HTTPS (a reverse proxy such as Caddy) and give --public-url https://…"
    )]
    NotHttps(url::Url),
    #[error(
        "--public-url {0} has a path: OAuth clients look for the hub's metadata at the root of its host (/.well-known/…), so serve the hub at the root of its own host name (e.g. https://hub.example.com)"
    )]
    HasPath(url::Url),
}

/// The authorization server's shared state: the hub, the settings, the metadata fetcher.
pub struct OAuth {
    hub: Hub,
    settings: OAuthSettings,
    fetcher: client_metadata::Fetcher,
    registrations: register::RegistrationLimit,
}

impl OAuth {
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The issuer (the hub's base URL, no trailing slash) for a request; `None` when the
    /// hub has no public URL and the request is not to a loopback host.
    pub fn issuer(&self, headers: &HeaderMap) -> Option<String> {
        public_url::base_url(self.settings.public_url.as_ref(), headers)
    }
}

/// The OAuth endpoints as a plug-in of the server.
pub struct OAuthPlugin {
    oauth: Arc<OAuth>,
}

impl OAuthPlugin {
    pub fn new(hub: Hub, settings: OAuthSettings) -> Result<OAuthPlugin, OAuthSetupError> {
        if let Some(u) = &settings.public_url {
            if !public_url::is_secure_or_loopback(u) {
                return Err(OAuthSetupError::NotHttps(u.clone()));
            }
            if u.path() != "/" {
                return Err(OAuthSetupError::HasPath(u.clone()));
            }
        }
        let fetcher = client_metadata::Fetcher::new(settings.allow_private_client_metadata);
        Ok(OAuthPlugin {
            oauth: Arc::new(OAuth {
                hub,
                settings,
                fetcher,
                registrations: register::RegistrationLimit::default(),
            }),
        })
    }

    /// The state the console's consent page checks requests with.
    pub fn oauth(&self) -> Arc<OAuth> {
        self.oauth.clone()
    }

    /// The endpoints, for tests that serve them without the rest of the app.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/.well-known/oauth-protected-resource",
                get(metadata::protected_resource),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(metadata::protected_resource),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata::authorization_server),
            )
            .route(
                "/.well-known/openid-configuration",
                get(metadata::authorization_server),
            )
            .route("/oauth/register", post(register::register))
            .route("/oauth/token", post(token::token))
            .with_state(self.oauth.clone())
    }
}

impl Plugin for OAuthPlugin {
    fn name(&self) -> &str {
        "oauth"
    }

    fn raw_routes(&self) -> Option<Router> {
        Some(self.router())
    }

    fn needs_https(&self) -> Vec<String> {
        vec!["OAuth sign-in and tokens (/oauth/*, /.well-known/oauth-*)".into()]
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let hub = self.oauth.hub.clone();
        // Ended codes and tokens are refused when used; this keeps the tables small.
        vec![spawn_periodic(
            "oauth: purging ended tokens",
            Duration::from_secs(3600),
            cancel,
            move || {
                let hub = hub.clone();
                async move { hub.purge_oauth().await.map(|_| ()) }
            },
        )]
    }

    fn summary(&self, addr: SocketAddr) -> Vec<String> {
        let base = match &self.oauth.settings.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => format!("http://{addr}"),
        };
        vec![format!(
            "  OAuth   {base}/mcp accepts OAuth sign-in (connectors of hosted assistants)"
        )]
    }
}
