use memberspot_api::actions::EnableChapterAccess;
use memberspot_api::{ApiError, Client};
use memberspot_wire::ChapterAccessResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::inputs::{Email, Id};
use crate::{Annotations, OfferScope, Tool};

pub struct EnableChapterAccessTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChapterInput {
    /// The member's e-mail address.
    pub email: Email,
    /// Id of the course containing the chapter.
    pub course_id: Id,
    /// Id of the chapter to unlock.
    pub chapter_id: Id,
}

impl Tool for EnableChapterAccessTool {
    type Input = ChapterInput;
    type Output = ChapterAccessResult;
    const NAME: &'static str = "enable_chapter_access";
    const TITLE: &'static str = "Unlock a chapter";
    const DESCRIPTION: &'static str = paced!(
        "Unlock one chapter of a course for one member ahead of its drip schedule, or as a bonus. There is no call to lock it again. Idempotent. Fails with not_found for an unknown member, course or chapter."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::CourseOfOffers {
        argument: "course_id",
    };

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let action = EnableChapterAccess::new(
            input.email.as_str(),
            input.course_id.as_str(),
            input.chapter_id.as_str(),
        );
        client.execute(&action).await
    }
}
