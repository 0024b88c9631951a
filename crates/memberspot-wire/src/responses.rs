//! Response envelopes, decoded from every reported shape.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::lenient::OneOrMany;
use crate::{CourseProgress, Extra, User};

/// One page of `GET /v1/users/list`.
///
/// Canonical: `{"users": [...], "nextPage": "uid"|null}`. Also decodes a bare
/// array, a `data`/`items` list, and a `next_page` cursor.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsersPage {
    pub users: Vec<User>,
    /// Cursor for the next page (pass as `lastLoadedId`); null on the last page.
    pub next_page: Option<String>,
}

/// One page of `GET /v1/users/course-progress/list/{email}`.
///
/// Canonical: `{"progress": [...], "nextPage": "courseId"|null}`; also decodes
/// a bare array and the same aliases as [`UsersPage`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressPage {
    pub progress: Vec<CourseProgress>,
    pub next_page: Option<String>,
}

fn split_page<T: serde::de::DeserializeOwned>(
    v: Value,
    list_keys: &[&str],
) -> Result<(Vec<T>, Option<String>), String> {
    let (items, cursor) = match v {
        Value::Array(items) => (items, None),
        Value::Object(mut o) => {
            let items = list_keys
                .iter()
                .find_map(|k| o.remove(*k))
                .unwrap_or(Value::Array(Vec::new()));
            let Value::Array(items) = items else {
                return Err(format!("expected a list under one of {list_keys:?}"));
            };
            let cursor = ["nextPage", "next_page", "lastLoadedId", "cursor"]
                .iter()
                .find_map(|k| o.remove(*k))
                .and_then(|c| match c {
                    Value::String(s) if !s.is_empty() => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            (items, cursor)
        }
        other => return Err(format!("expected a list or a page object, got {other}")),
    };
    // Items are decoded one by one so that a broken item is reported with its index.
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| serde_json::from_value(item).map_err(|e| format!("item {i}: {e}")))
        .collect::<Result<Vec<T>, _>>()?;
    Ok((items, cursor))
}

impl<'de> Deserialize<'de> for UsersPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (users, next_page) = split_page(Value::deserialize(d)?, &["users", "data", "items"])
            .map_err(serde::de::Error::custom)?;
        Ok(UsersPage { users, next_page })
    }
}

impl<'de> Deserialize<'de> for ProgressPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (progress, next_page) = split_page(
            Value::deserialize(d)?,
            &["progress", "courseProgress", "data", "items"],
        )
        .map_err(serde::de::Error::custom)?;
        Ok(ProgressPage {
            progress,
            next_page,
        })
    }
}

/// A list endpoint that answers with a bare array, or an array inside an
/// object under one of a few keys (`GET /v1/offers`, property definitions,
/// exam results).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ListOf<T>(pub Vec<T>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for ListOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (items, _) = split_page(
            Value::deserialize(d)?,
            &[
                "data",
                "items",
                "results",
                "offers",
                "properties",
                "customUserProperties",
            ],
        )
        .map_err(serde::de::Error::custom)?;
        Ok(ListOf(items))
    }
}

/// Answer of `GET /v1/users/login-token/{uid}`: canonical `{"token": "..."}`,
/// also a bare JSON string or `{"loginToken": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LoginToken {
    /// One-time login token, valid for one hour.
    pub token: String,
}

impl<'de> Deserialize<'de> for LoginToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(token) => Ok(LoginToken { token }),
            Value::Object(o) => o
                .get("token")
                .or_else(|| o.get("loginToken"))
                .or_else(|| o.get("customToken"))
                .and_then(|t| t.as_str())
                .map(|t| LoginToken {
                    token: t.to_string(),
                })
                .ok_or_else(|| serde::de::Error::custom("no token in the login-token answer")),
            other => Err(serde::de::Error::custom(format!(
                "expected a token, got {other}"
            ))),
        }
    }
}

/// Answer of the delete-users calls. The real shape is undocumented; every
/// field is optional and unknown ones are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteUsersResult {
    /// E-mails of the users that were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<String>>,
    /// How many users were deleted.
    #[serde(default, alias = "count", skip_serializing_if = "Option::is_none")]
    pub deleted_count: Option<u64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Answer of enable-chapter-access. Undocumented; lenient like [`DeleteUsersResult`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChapterAccessResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chapter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// NestJS error body: `{"statusCode", "message", "error"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status_code: u16,
    pub message: OneOrMany,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_page_decodes_every_reported_shape() {
        let user = json!({"uid": "u1", "email": "a@b.de"});
        for (body, cursor) in [
            (json!({"users": [user], "nextPage": "u1"}), Some("u1")),
            (json!({"users": [user], "next_page": "u1"}), Some("u1")),
            (json!({"data": [user], "nextPage": null}), None),
            (json!([user]), None),
        ] {
            let page: UsersPage = serde_json::from_value(body.clone()).expect("decodes");
            assert_eq!(page.users.len(), 1, "{body}");
            assert_eq!(page.next_page.as_deref(), cursor, "{body}");
        }
    }

    #[test]
    fn login_token_decodes_every_reported_shape() {
        for body in [
            json!("t"),
            json!({"token": "t"}),
            json!({"loginToken": "t"}),
        ] {
            let t: LoginToken = serde_json::from_value(body).expect("decodes");
            assert_eq!(t.token, "t");
        }
    }

    #[test]
    fn error_body_message_string_or_list() {
        let e: ErrorBody = serde_json::from_value(
            json!({"statusCode": 400, "message": ["email must be an email"], "error": "Bad Request"}),
        )
        .expect("decodes");
        assert_eq!(e.message.join(), "email must be an email");
        let e: ErrorBody =
            serde_json::from_value(json!({"statusCode": 401, "message": "Unauthorized"}))
                .expect("decodes");
        assert_eq!(e.error, None);
    }

    #[test]
    fn list_of_accepts_array_or_envelope() {
        let a: ListOf<crate::Offer> =
            serde_json::from_value(json!([{"id": "o", "name": "n"}])).expect("decodes");
        let b: ListOf<crate::Offer> =
            serde_json::from_value(json!({"data": [{"id": "o", "name": "n"}]})).expect("decodes");
        assert_eq!(a, b);
    }
}
