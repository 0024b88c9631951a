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
use memberspot_wire::User;
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
    /// The API's answer when it is not a member object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<serde_json::Value>,
}

impl From<UserUpdate> for UserChange {
    fn from(u: UserUpdate) -> Self {
        match u {
            UserUpdate::User(user) => UserChange {
                user: Some(*user),
                answer: None,
            },
            UserUpdate::Other(v) => UserChange {
                user: None,
                answer: (!v.is_null()).then_some(v),
            },
        }
    }
}
