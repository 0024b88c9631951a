//! `POST /v1/chapters/chapter-access/enable`.

use axum::response::Response;
use memberspot_wire::ChapterAccessResult;

use super::Ctx;
use crate::errors::ApiError;
use crate::validate::BodyCheck;

pub(super) fn enable(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let email = v.email("email");
    let course_id = v.required_string("courseId");
    let chapter_id = v.required_string("chapterId");
    v.finish()?;
    let (Some(email), Some(course_id), Some(chapter_id)) = (email, course_id, chapter_id) else {
        return Err(ApiError::internal());
    };
    let email = ctx
        .state
        .write(|s| s.enable_chapter(&email, &course_id, &chapter_id, ctx.now))?;
    ctx.ok(&ChapterAccessResult {
        email: Some(email),
        course_id: Some(course_id),
        chapter_id: Some(chapter_id),
        enabled: Some(true),
        ..ChapterAccessResult::default()
    })
}
