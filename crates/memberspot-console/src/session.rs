//! Who is asking: the language, the signed-in console user (session cookie, looked up in
//! the hub's database), and the checks every state-changing form passes — same origin,
//! CSRF token, role.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use memberspot_hub::console::ConsoleRole;
use memberspot_server::ClientAddr;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Console;
use crate::i18n::Lang;

pub const SESSION_COOKIE: &str = "msh_session";
/// The CSRF token of the forms shown before sign-in (login, setup): double-submitted.
pub const PRE_CSRF_COOKIE: &str = "msh_csrf";
pub const LANG_COOKIE: &str = "msh_lang";

/// The request's language and address, for every page.
pub struct Visitor {
    pub lang: Lang,
    pub jar: CookieJar,
    pub address: IpAddr,
}

impl FromRequestParts<Arc<Console>> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let lang = jar
            .get(LANG_COOKIE)
            .and_then(|c| Lang::parse(c.value()))
            .unwrap_or_else(|| {
                let accept = parts
                    .headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Lang::negotiate(accept)
            });
        // The server resolved the client's address (through trusted proxies only). In-process
        // callers (tests) without the server's middleware share one key.
        let address = parts
            .extensions
            .get::<ClientAddr>()
            .map(|c| c.0)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(Visitor { lang, jar, address })
    }
}

/// A signed-in console user. Extracting it refuses (a redirect to the sign-in page) when
/// the session cookie is missing, unknown, idle too long or past its absolute end.
pub struct Signed {
    pub name: String,
    pub role: ConsoleRole,
    pub lang: Lang,
    pub session: SecretString,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// The page asked for, path and query, when it was a `GET` (the language switch comes
    /// back to it); empty for a form's answer, which has no address to come back to.
    pub here: String,
}

impl Signed {
    pub fn is_owner(&self) -> bool {
        self.role == ConsoleRole::Owner
    }
}

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(visitor) = Visitor::from_request_parts(parts, console).await;
        let to_login = || Redirect::to("/login").into_response();
        let Some(id) = visitor
            .jar
            .get(SESSION_COOKIE)
            .map(|c| c.value().to_owned())
        else {
            return Err(to_login());
        };
        let id = SecretString::from(id);
        match console
            .hub
            .console_session(&id, console.settings.idle_timeout)
            .await
        {
            Ok(Some(s)) => Ok(Signed {
                here: here(parts),
                csrf: csrf_of(&id),
                name: s.user,
                role: s.role,
                lang: visitor.lang,
                session: id,
            }),
            Ok(None) => Err(to_login()),
            Err(e) => {
                tracing::error!(error = %e, "console: reading the session failed");
                Err(StatusCode::SERVICE_UNAVAILABLE.into_response())
            }
        }
    }
}

/// Path and query of a `GET` as the browser asked for it (before any nesting of routers).
fn here(parts: &Parts) -> String {
    if parts.method != axum::http::Method::GET {
        return String::new();
    }
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default()
}

/// A session's CSRF token: derived from the session id (which only the browser and, as a
/// hash, the database know), so it needs no storage and does not reveal the id.
pub fn csrf_of(session: &SecretString) -> String {
    let mut h = Sha256::new();
    h.update(b"memberspot-console-csrf:");
    h.update(session.expose_secret().as_bytes());
    hex::encode(h.finalize())
}

pub fn tokens_match(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Why a state-changing request was refused (answered 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Origin,
    Csrf,
    Viewer,
}

impl Refusal {
    pub fn message_id(self) -> &'static str {
        match self {
            Refusal::Origin => "refused-origin",
            Refusal::Csrf => "refused-csrf",
            Refusal::Viewer => "refused-viewer",
        }
    }
}

impl Console {
    /// Whether cookies get `Secure`: when the console's public URL is `https://`.
    pub fn secure_cookies(&self) -> bool {
        self.settings
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
    }

    pub fn cookie(&self, name: &'static str, value: String, max_age: Duration) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure_cookies())
            .max_age(time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build()
    }

    pub fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut c = self.cookie(name, String::new(), Duration::ZERO);
        c.make_removal();
        c
    }

    /// The request comes from a page of the console itself: its `Origin` (or, without
    /// one, its `Referer`) is the public URL's origin, or — without a public URL — has the
    /// request's own `Host`. A request with neither header is refused.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let source = headers
            .get(header::ORIGIN)
            .or_else(|| headers.get(header::REFERER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok());
        let Some(source) = source else { return false };
        match &self.settings.public_url {
            Some(public) => source.origin() == public.origin(),
            None => {
                let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                let Some(host) = host else { return false };
                let Some(source_host) = source.host_str() else {
                    return false;
                };
                let source_authority = match source.port() {
                    Some(p) => format!("{source_host}:{p}"),
                    None => source_host.to_owned(),
                };
                source_authority.eq_ignore_ascii_case(host)
            }
        }
    }

    /// The checks of a state-changing form of a signed-in user, in order: same origin,
    /// the session's CSRF token, an owner.
    pub fn check_change(&self, s: &Signed, headers: &HeaderMap, csrf: &str) -> Result<(), Refusal> {
        self.check_own_change(s, headers, csrf)?;
        if !s.is_owner() {
            return Err(Refusal::Viewer);
        }
        Ok(())
    }

    /// The checks of a form by which a signed-in user, viewers included, changes only
    /// what is theirs (their own password): same origin and the session's CSRF token.
    pub fn check_own_change(
        &self,
        s: &Signed,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<(), Refusal> {
        if !self.same_origin(headers) {
            return Err(Refusal::Origin);
        }
        if !tokens_match(csrf, &s.csrf) {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }

    /// The checks of a form shown before sign-in: same origin, and the token in the form
    /// equals the one in the `msh_csrf` cookie.
    pub fn check_pre(
        &self,
        jar: &CookieJar,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<(), Refusal> {
        if !self.same_origin(headers) {
            return Err(Refusal::Origin);
        }
        let expected = jar.get(PRE_CSRF_COOKIE).map(|c| c.value()).unwrap_or("");
        if !tokens_match(csrf, expected) {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }
}
