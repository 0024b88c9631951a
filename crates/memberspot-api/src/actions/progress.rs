use memberspot_wire::{CourseProgress, PageQuery, ProgressPage};
use reqwest::Method;

use super::{Action, Idempotency, seg};

/// `GET /users/course-progress/list/{email}`: one page of a member's
/// progress across all their courses.
#[derive(Debug, Clone, PartialEq)]
pub struct ListUserCourseProgress {
    pub email: String,
    pub page: PageQuery,
}

impl ListUserCourseProgress {
    pub fn new(email: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            page: PageQuery::default(),
        }
    }
    pub fn page_length(mut self, n: u32) -> Self {
        self.page.page_length = Some(n);
        self
    }
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.page.last_loaded_id = Some(cursor.into());
        self
    }
}

impl Action for ListUserCourseProgress {
    type Output = ProgressPage;
    const NAME: &'static str = "list_user_course_progress";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        format!("/users/course-progress/list/{}", seg(&self.email))
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(v) = &self.page.last_loaded_id {
            out.push(("lastLoadedId", v.clone()));
        }
        if let Some(v) = self.page.page_length {
            out.push(("pageLength", v.to_string()));
        }
        out
    }
}

/// `GET /users/course-progress/{courseId}/{email}` (course id first).
#[derive(Debug, Clone, PartialEq)]
pub struct GetUserCourseProgress {
    pub course_id: String,
    pub email: String,
}

impl GetUserCourseProgress {
    pub fn new(course_id: impl Into<String>, email: impl Into<String>) -> Self {
        Self {
            course_id: course_id.into(),
            email: email.into(),
        }
    }
}

impl Action for GetUserCourseProgress {
    type Output = CourseProgress;
    const NAME: &'static str = "get_user_course_progress";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        format!(
            "/users/course-progress/{}/{}",
            seg(&self.course_id),
            seg(&self.email)
        )
    }
}
