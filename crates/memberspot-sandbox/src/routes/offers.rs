//! `GET /v1/offers`.

use axum::response::Response;
use serde_json::Value;

use super::Ctx;
use crate::errors::ApiError;
use crate::render;
use crate::school::School;

/// A bare JSON array of every offer; not paginated.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let offers: Vec<Value> = ctx.state.read(|s| {
        s.offers
            .iter()
            .map(|o| render::offer(School::offer_to_wire(o), ctx.shapes))
            .collect()
    });
    ctx.ok(&offers)
}
