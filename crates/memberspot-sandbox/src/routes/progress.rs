//! `/v1/users/course-progress/...`.

use axum::response::Response;
use memberspot_wire::ProgressPage;

use super::Ctx;
use crate::errors::ApiError;
use crate::validate::{QueryCheck, path_email};

/// `GET /v1/users/course-progress/list/{email}`: paginated by course id.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let email = path_email(ctx.param(0))?;
    let mut q = QueryCheck::new(&ctx.query);
    let page = q.page();
    q.finish()?;
    let (progress, next_page) = ctx
        .state
        .read(|s| s.list_progress(&email, page.last_loaded_id.as_deref(), page.page_length))?;
    let repeat = super::repeat_cursor(ctx, page.last_loaded_id.as_deref());
    let next_page = next_page.map(|next| repeat.unwrap_or(next));
    ctx.ok(&ProgressPage {
        progress,
        next_page,
    })
}

/// `GET /v1/users/course-progress/{courseId}/{email}`.
pub(super) fn one(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let course_id = ctx.param(0).trim().to_string();
    let email = path_email(ctx.param(1))?;
    let progress = ctx.state.read(|s| s.course_progress(&email, &course_id))?;
    ctx.ok(&progress)
}
