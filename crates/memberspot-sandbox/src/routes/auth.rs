//! `GET /api-auth`: the key check used by integrations; the key guard has
//! already run when this is reached.

use axum::response::Response;
use serde_json::json;

use super::Ctx;
use crate::errors::ApiError;

pub(super) fn check(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.ok(&json!({}))
}
