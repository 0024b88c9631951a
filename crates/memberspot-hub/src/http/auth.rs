//! Bearer-token extractors: a persona token for tool routes, the admin
//! token for admin routes. The persona is checked against the store on every
//! request (see `directory.rs`), so a revocation applies to the next call.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use memberspot_store::Persona;

use super::HttpError;
use crate::Hub;

pub fn bearer(parts: &Parts) -> Result<&str, HttpError> {
    let header = parts
        .headers
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

/// A request authenticated as a persona.
pub struct PersonaAuth(pub Persona);

impl<S> FromRequestParts<S> for PersonaAuth
where
    Hub: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        Ok(PersonaAuth(Hub::from_ref(state).authenticate(token).await?))
    }
}

/// A request carrying the admin token.
pub struct AdminAuth;

/// Any router whose state can give the hub (the events routes too).
impl<S> FromRequestParts<S> for AdminAuth
where
    Hub: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let hub = Hub::from_ref(state);
        let token = bearer(parts)?;
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
