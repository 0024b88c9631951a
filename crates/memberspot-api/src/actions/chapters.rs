use memberspot_wire::{ChapterAccessResult, EnableChapterAccessBody};
use reqwest::Method;

use super::{Action, Idempotency, to_body};

/// `POST /chapters/chapter-access/enable`: unlocks one chapter for one member.
#[derive(Debug, Clone, PartialEq)]
pub struct EnableChapterAccess {
    pub body: EnableChapterAccessBody,
}

impl EnableChapterAccess {
    pub fn new(
        email: impl Into<String>,
        course_id: impl Into<String>,
        chapter_id: impl Into<String>,
    ) -> Self {
        Self {
            body: EnableChapterAccessBody {
                email: email.into(),
                course_id: course_id.into(),
                chapter_id: chapter_id.into(),
            },
        }
    }
}

impl Action for EnableChapterAccess {
    type Output = ChapterAccessResult;
    const NAME: &'static str = "enable_chapter_access";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/chapters/chapter-access/enable".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}
