//! The shape every state-changing form of a signed-in user shares, written once as
//! extractors: [`Change`] reads the form and passes the origin, CSRF and owner checks (a
//! refusal answers the 403 page before the handler runs); [`Owner`] admits only owners to
//! a page that leads to a change (a confirmation step).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use serde::de::DeserializeOwned;

use crate::Console;
use crate::auth::refused;
use crate::session::{Refusal, Signed};

/// A form with the session's CSRF token in its `csrf` field.
pub trait CsrfField {
    fn csrf(&self) -> &str;
}

/// Implements [`CsrfField`] for forms whose token is the field `csrf`.
macro_rules! csrf_forms {
    ($($form:ty),* $(,)?) => {
        $(impl $crate::form::CsrfField for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}
pub(crate) use csrf_forms;

/// A checked change: the signed-in owner and the form they sent from a console page.
pub struct Change<F>(pub Signed, pub F);

impl<F> FromRequest<Arc<Console>> for Change<F>
where
    F: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, c: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let (s, form) = signed_form(req, c, Console::check_change).await?;
        Ok(Change(s, form))
    }
}

/// A checked change of the signed-in user's own things (their password): like [`Change`],
/// but viewers pass too.
pub struct OwnChange<F>(pub Signed, pub F);

impl<F> FromRequest<Arc<Console>> for OwnChange<F>
where
    F: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, c: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let (s, form) = signed_form(req, c, Console::check_own_change).await?;
        Ok(OwnChange(s, form))
    }
}

type Check = fn(&Console, &Signed, &axum::http::HeaderMap, &str) -> Result<(), Refusal>;

/// The session and the form of `req`, once `check` passes (else the 403 page).
async fn signed_form<F: DeserializeOwned + CsrfField + Send>(
    req: Request,
    c: &Arc<Console>,
    check: Check,
) -> Result<(Signed, F), Response> {
    let (mut parts, body) = req.into_parts();
    let s = Signed::from_request_parts(&mut parts, c).await?;
    let headers = parts.headers.clone();
    let Form(form) = Form::<F>::from_request(Request::from_parts(parts, body), c)
        .await
        .map_err(IntoResponse::into_response)?;
    check(c, &s, &headers, form.csrf()).map_err(|r| refused(c, s.lang, r))?;
    Ok((s, form))
}

/// A signed-in owner: a viewer is refused (403) before the page is built.
pub struct Owner(pub Signed);

impl FromRequestParts<Arc<Console>> for Owner {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let s = Signed::from_request_parts(parts, c).await?;
        if !s.is_owner() {
            return Err(refused(c, s.lang, Refusal::Viewer));
        }
        Ok(Owner(s))
    }
}
