//! `GET /v1/exams/{examId}/results`.

use axum::response::Response;

use super::Ctx;
use crate::errors::ApiError;

/// A bare array of submissions.
pub(super) fn results(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let exam_id = ctx.param(0).trim();
    let results = ctx.state.read(|s| s.exam_results(exam_id))?;
    ctx.ok(&results)
}
