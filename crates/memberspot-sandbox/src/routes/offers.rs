//! `GET /v1/offers`.

use axum::response::Response;
use memberspot_wire::Offer;

use super::Ctx;
use crate::errors::ApiError;
use crate::school::School;

/// A bare JSON array of every offer; not paginated.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let offers: Vec<Offer> = ctx
        .state
        .read(|s| s.offers.iter().map(School::offer_to_wire).collect());
    ctx.ok(&offers)
}
