//! One value per API endpoint. An action knows its method, path, query and
//! body and whether it is safe to repeat; [`crate::Client::execute`] sends it.
//!
//! | action | method and path | repeat-safety |
//! |---|---|---|
//! | [`ListUsers`] | `GET /users/list` | idempotent (read) |
//! | [`FindUserByEmail`] | `GET /users/find-by-mail/{email}` | idempotent (read) |
//! | [`GrantUserOfferByEmail`] | `POST /users/grant-user-offer-by-mail` | idempotent: a second grant re-activates the same holding |
//! | [`SetUserOfferState`] | `POST /users/set-offer-state` | idempotent (same state); with `active` omitted a repeat answers 404 because the holding is gone |
//! | [`SetOrderState`] | `POST /users/set-order-state` | as above |
//! | [`SetOfferExpiration`] | `POST /users/set-offer-expires` | idempotent |
//! | [`DeleteUsers`] / [`DeleteUsersPost`] | `DELETE`/`POST /users/delete-users` | idempotent: unknown e-mails are ignored |
//! | [`ListUserCourseProgress`] | `GET /users/course-progress/list/{email}` | idempotent (read) |
//! | [`GetUserCourseProgress`] | `GET /users/course-progress/{courseId}/{email}` | idempotent (read) |
//! | [`CreateLoginToken`] | `GET /users/login-token/{uid}` | safe to repeat, not idempotent: each call mints a new token |
//! | [`ListOffers`] | `GET /offers` | idempotent (read) |
//! | [`ListCustomUserProperties`] | `GET /custom-user-properties/list` | idempotent (read) |
//! | [`SetCustomUserProperties`] | `POST /users/set-custom-user-properties` | idempotent |
//! | [`EnableChapterAccess`] | `POST /chapters/chapter-access/enable` | idempotent |
//! | [`ListExamResults`] | `GET /exams/{examId}/results` | idempotent (read) |
//! | [`CheckApiKey`] | `GET /api-auth` (host root) | idempotent (read) |

mod chapters;
mod exams;
mod offers;
mod progress;
mod properties;
mod users;

pub use chapters::EnableChapterAccess;
pub use exams::ListExamResults;
pub use offers::ListOffers;
pub use progress::{GetUserCourseProgress, ListUserCourseProgress};
pub use properties::{CheckApiKey, ListCustomUserProperties, SetCustomUserProperties};
pub use users::{
    CreateLoginToken, DeleteUsers, DeleteUsersPost, FindUserByEmail, GrantUserOfferByEmail,
    ListUsers, SetOfferExpiration, SetOrderState, SetUserOfferState, UserUpdate,
};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde::de::DeserializeOwned;

/// Whether an action may be sent again when it is unknown if the first
/// attempt was applied (a timeout or a 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating leaves the school in the same state.
    Idempotent,
    /// Repeating is harmless but gives a different answer (a new login token).
    SafeToRepeat,
    /// Repeating could apply the change twice.
    NotSafe,
}

impl Idempotency {
    pub fn safe_to_retry(self) -> bool {
        !matches!(self, Idempotency::NotSafe)
    }
}

/// Which root a path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The versioned API, `https://api.memberspot.de/v1`.
    V1,
    /// The host root (only the key check lives there).
    Root,
}

/// One API endpoint with its inputs.
pub trait Action: Send + Sync {
    /// The decoded answer.
    type Output: DeserializeOwned + Send;
    /// Name used in logs and metrics (the tool name where there is one).
    const NAME: &'static str;
    const METHOD: Method;
    const IDEMPOTENCY: Idempotency;
    const BASE: Base = Base::V1;
    /// A 2xx answer that is not JSON (e.g. the text `ok`) is the success it reports,
    /// decoded as `{"ok": true, "message": "<text>"}` (writes). Reads need their data, so
    /// text fails to decode there.
    const TEXT_ANSWER: bool = false;

    /// Path below the base, starting with `/`, with parameters encoded.
    fn path(&self) -> String;

    /// Query parameters.
    fn query(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// JSON body, if the endpoint takes one.
    fn body(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The characters JavaScript's `encodeURIComponent` leaves alone; every
/// client in the wild encodes path e-mails this way (`+` becomes `%2B`).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Encodes one path segment.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

fn to_body<T: serde::Serialize>(body: &T) -> Option<serde_json::Value> {
    // Serialising these plain structs cannot fail; a failure would be a bug.
    serde_json::to_value(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_like_encode_uri_component() {
        assert_eq!(seg("a+b@x.de"), "a%2Bb%40x.de");
        assert_eq!(seg("o'neil.x_y-z~(1)*!@a.de"), "o'neil.x_y-z~(1)*!%40a.de");
        assert_eq!(seg("ä b/c"), "%C3%A4%20b%2Fc");
    }
}
