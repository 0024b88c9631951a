//! One tool per Memberspot action. Names are a contract shared by the CLI,
//! MCP and REST: never rename one.

mod chapters;
mod exams;
mod offers;
mod progress;
mod properties;
mod users;

pub use chapters::EnableChapterAccessTool;
pub use exams::ListExamResultsTool;
pub use offers::ListOffersTool;
pub use progress::{GetUserCourseProgressTool, ListUserCourseProgressTool};
pub use properties::{ListCustomUserPropertiesTool, SetCustomUserPropertiesTool};
pub use users::{
    CreateLoginTokenTool, DeleteUsersPostTool, DeleteUsersTool, FindUserByEmailTool,
    GrantUserOfferByEmailTool, ListUsersTool, SetOfferExpirationTool, SetOrderStateTool,
    SetUserOfferStateTool,
};

use memberspot_api::actions::UserUpdate;
use memberspot_wire::{StateAnswer, User};
use schemars::JsonSchema;
use serde::Serialize;

use crate::Annotations;

/// A read that stays inside the school's data.
pub(crate) const READ: Annotations = Annotations {
    read_only: true,
    destructive: false,
    idempotent: true,
    open_world: false,
};

/// Output of a write that returns the member.
#[derive(Debug, Serialize, JsonSchema)]
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
