//! One tool per Memberspot action. Names are a contract shared by the CLI,
//! MCP and REST: never rename one.

/// A tool description ending with the rate note every tool carries: a model that knows
/// calls are paced plans fewer of them. The note states
/// [`memberspot_api::DEFAULT_RATE_LIMIT`] (checked by a test below).
macro_rules! paced {
    ($text:literal) => {
        concat!($text, " ", rate_note!())
    };
}

macro_rules! rate_note {
    () => {
        "Memberspot allows about 4 requests per second per API key; calls are paced automatically."
    };
}

mod bulk_grant;
mod chapters;
mod exams;
mod offers;
mod progress;
mod properties;
mod users;

pub use bulk_grant::{
    BULK_GRANT_MAX, BulkGrantInput, BulkGrantOutput, BulkItem, BulkItemStatus, GrantOfferBulkTool,
};
pub use chapters::{ChapterInput, EnableChapterAccessTool};
pub use exams::{ExamInput, ExamResultsOutput, ListExamResultsTool};
pub use offers::{ListOffersTool, NoInput, OffersOutput};
pub use progress::{
    CourseProgressInput, GetUserCourseProgressTool, ListProgressInput, ListUserCourseProgressTool,
    ProgressPageOutput,
};
pub use properties::{
    ListCustomUserPropertiesTool, PropertiesOutput, PropertyValue, SetCustomUserPropertiesTool,
    SetPropertiesInput,
};
pub use users::{
    CreateLoginTokenTool, DeleteUsersInput, DeleteUsersOutput, DeleteUsersPostTool,
    DeleteUsersTool, EmailInput, ExpirationInput, FindUserByEmailTool, GrantInput,
    GrantUserOfferByEmailTool, ListUsersInput, ListUsersTool, LoginTokenOutput, OfferStateInput,
    OrderStateInput, SetOfferExpirationTool, SetOrderStateTool, SetUserOfferStateTool, UidInput,
    UsersPageOutput,
};

use memberspot_api::actions::UserUpdate;
use memberspot_wire::{StateAnswer, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Annotations;

/// A read that stays inside the school's data.
pub(crate) const READ: Annotations = Annotations {
    read_only: true,
    destructive: false,
    idempotent: true,
    open_world: false,
};

/// Output of a write that returns the member.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UserChange {
    /// The member after the change, when the API returns it.
    pub user: Option<User>,
    /// The new state when the API answers with it instead of the member:
    /// `{active, email, offerId}` or `{active, email, orderId}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateAnswer>,
    /// The API's answer when it is neither. When Memberspot answered with text instead
    /// of JSON, the change was made and this is `{"ok": true, "message": "<the text>"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<serde_json::Value>,
}

impl From<UserUpdate> for UserChange {
    fn from(u: UserUpdate) -> Self {
        let (user, state, answer) = match u {
            UserUpdate::User(user) => (Some(*user), None, None),
            UserUpdate::State(state) => (None, Some(state), None),
            UserUpdate::Other(v) => (None, None, (!v.is_null()).then_some(v)),
        };
        UserChange {
            user,
            state,
            answer,
        }
    }
}

#[cfg(test)]
mod rate_note_tests {
    use crate::Catalogue;

    #[test]
    fn every_description_ends_with_the_rate_note_naming_the_default_rate() {
        let note = rate_note!();
        let rate = memberspot_api::DEFAULT_RATE_LIMIT;
        assert!(
            note.contains(&format!("about {rate} requests per second")),
            "the note must state DEFAULT_RATE_LIMIT ({rate}): {note}"
        );
        for d in Catalogue::standard().descriptors() {
            assert!(d.description.ends_with(note), "{}", d.name);
            assert_eq!(d.description.matches(note).count(), 1, "{}", d.name);
        }
    }
}
