//! Bearer-token extractors: a persona token for tool routes, the admin
//! token for admin routes. The persona is checked against the store on every
//! request (see `directory.rs`), so a revocation applies to the next call.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use memberspot_hub::admin::Actor;
use memberspot_hub::store::Persona;
use memberspot_hub::{Hub, Surface};

use super::HttpError;

/// The token of an `Authorization: Bearer <token>` header: the one place the server reads
/// bearer tokens (REST, `/mcp`, the plug-ins' routes).
pub fn bearer(headers: &HeaderMap) -> Result<&str, HttpError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send `Authorization: Bearer <token>`",
            )
        })?;
    let value = header.to_str().map_err(|_| {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the Authorization header is not text",
        )
    })?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

/// The persona whose token the request carries; a revoked one only if `revoked_ok`.
async fn persona_of(parts: &Parts, hub: &Hub, revoked_ok: bool) -> Result<Persona, HttpError> {
    let token = bearer(&parts.headers)?;
    Ok(if revoked_ok {
        hub.identify(token).await?
    } else {
        hub.authenticate(token).await?
    })
}

/// A request authenticated as a persona.
pub struct PersonaAuth(pub Persona);

impl<S> FromRequestParts<S> for PersonaAuth
where
    Hub: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        persona_of(parts, &Hub::from_ref(state), false)
            .await
            .map(PersonaAuth)
    }
}

/// The persona a tool call's token belongs to, revoked or not: the call itself is
/// refused (and the attempt audited) by the hub when the persona is revoked.
pub struct Caller(pub Persona);

impl<S> FromRequestParts<S> for Caller
where
    Hub: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        persona_of(parts, &Hub::from_ref(state), true)
            .await
            .map(Caller)
    }
}

/// A request carrying the admin token.
pub struct AdminAuth;

impl AdminAuth {
    /// Who the admin operations of this request are recorded as: `rest:admin` (the admin
    /// token names no person).
    pub fn actor(&self) -> Actor {
        Actor {
            surface: Surface::Rest,
            name: "admin".into(),
        }
    }
}

/// Any router whose state can give the hub (the events routes too).
impl<S> FromRequestParts<S> for AdminAuth
where
    Hub: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let hub = Hub::from_ref(state);
        let token = bearer(&parts.headers)?;
        if hub.check_admin_token(token).await? {
            Ok(AdminAuth)
        } else {
            Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this route needs the admin token",
            ))
        }
    }
}
