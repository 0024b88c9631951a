use memberspot_api::actions::{GetUserCourseProgress, ListUserCourseProgress};
use memberspot_api::{ApiError, Client};
use memberspot_wire::CourseProgress;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::READ;
use crate::inputs::{Email, Id, PageLength};
use crate::{Annotations, OfferScope, Tool};

pub struct ListUserCourseProgressTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProgressInput {
    /// The member's e-mail address.
    pub email: Email,
    /// Courses per page, 1 to 100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_length: Option<PageLength>,
    /// `next_cursor` from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Id>,
}

/// One page of a member's course progress.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProgressPageOutput {
    pub progress: Vec<CourseProgress>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl Tool for ListUserCourseProgressTool {
    type Input = ListProgressInput;
    type Output = ProgressPageOutput;
    const NAME: &'static str = "list_user_course_progress";
    const TITLE: &'static str = "List a member's progress in all courses";
    const DESCRIPTION: &'static str = paced!(
        "Show how far one member has got in each of their courses: per course the posts (lessons) started and completed. Read-only, paginated: call again with `cursor` = `next_cursor` until it is null. For a single course use get_user_course_progress. Fails with not_found for an unknown e-mail."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let mut action = ListUserCourseProgress::new(input.email.as_str());
        action.page.page_length = input.page_length.map(PageLength::get);
        action.page.last_loaded_id = input.cursor.map(|c| c.to_string());
        let page = client.execute(&action).await?;
        Ok(ProgressPageOutput {
            progress: page.progress,
            next_cursor: page.next_page,
        })
    }
}

pub struct GetUserCourseProgressTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseProgressInput {
    /// Id of the course.
    pub course_id: Id,
    /// The member's e-mail address.
    pub email: Email,
}

impl Tool for GetUserCourseProgressTool {
    type Input = CourseProgressInput;
    type Output = CourseProgress;
    const NAME: &'static str = "get_user_course_progress";
    const TITLE: &'static str = "Get a member's progress in one course";
    const DESCRIPTION: &'static str = paced!(
        "Show one member's progress in one course: the posts (lessons) they have started and completed, plus a short member block. Read-only. Fails with not_found when the member, the course, or the member's enrolment in it does not exist."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        client
            .execute(&GetUserCourseProgress::new(
                input.course_id.as_str(),
                input.email.as_str(),
            ))
            .await
    }
}
