//! Response envelopes, decoded from every reported shape.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::lenient::{self, OneOrMany};
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

/// Where a page's list and cursor may be: a canonical key first, then the other keys
/// read (the doctor's expectations in [`crate::shape`] use the same lists).
pub(crate) const USERS_LIST: (&str, &[&str]) = ("users", &["data", "items"]);
pub(crate) const PROGRESS_LIST: (&str, &[&str]) =
    ("progress", &["courseProgress", "data", "items"]);
pub(crate) const CURSOR: (&str, &[&str]) = ("nextPage", &["next_page", "lastLoadedId", "cursor"]);
/// The list of a [`ListOf`] answer sent as an object: no canonical key (the canonical
/// answer is a bare array).
pub(crate) const LIST_OF: (&str, &[&str]) = (
    "",
    &[
        "data",
        "items",
        "results",
        "offers",
        "properties",
        "customUserProperties",
    ],
);

/// The canonical key and the other keys, in the order they are looked for.
fn keys(
    (first, rest): (&'static str, &'static [&'static str]),
) -> impl Iterator<Item = &'static str> {
    std::iter::once(first)
        .filter(|k| !k.is_empty())
        .chain(rest.iter().copied())
}

fn split_page<T: serde::de::DeserializeOwned>(
    v: Value,
    list: (&'static str, &'static [&'static str]),
) -> Result<(Vec<T>, Option<String>), String> {
    let (items, cursor) = match v {
        Value::Array(items) => (items, None),
        Value::Object(mut o) => {
            let items = keys(list)
                .find_map(|k| o.remove(k))
                .unwrap_or(Value::Array(Vec::new()));
            let Value::Array(items) = items else {
                let names: Vec<&str> = keys(list).collect();
                return Err(format!("expected a list under one of {names:?}"));
            };
            let cursor = keys(CURSOR)
                .find_map(|k| o.remove(k))
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
        let (users, next_page) =
            split_page(Value::deserialize(d)?, USERS_LIST).map_err(serde::de::Error::custom)?;
        Ok(UsersPage { users, next_page })
    }
}

impl<'de> Deserialize<'de> for ProgressPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (progress, next_page) =
            split_page(Value::deserialize(d)?, PROGRESS_LIST).map_err(serde::de::Error::custom)?;
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
        let (items, _) =
            split_page(Value::deserialize(d)?, LIST_OF).map_err(serde::de::Error::custom)?;
        Ok(ListOf(items))
    }
}

/// Answer of `GET /v1/users/login-token/{uid}`: canonical `{"token": "..."}`, also
/// with a `loginUrl` next to the token, a bare JSON string, or `{"loginToken": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LoginToken {
    /// One-time login token, valid for one hour.
    pub token: String,
    /// A link that logs the member in with the token, when the API sends one.
    #[serde(rename = "loginUrl", skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

impl<'de> Deserialize<'de> for LoginToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        match Value::deserialize(d)? {
            Value::String(token) => Ok(LoginToken {
                token,
                login_url: None,
            }),
            Value::Object(o) => {
                let token = text(
                    o.get("token")
                        .or_else(|| o.get("loginToken"))
                        .or_else(|| o.get("customToken")),
                )
                .ok_or_else(|| serde::de::Error::custom("no token in the login-token answer"))?;
                let login_url = text(o.get("loginUrl").or_else(|| o.get("login_url")))
                    .filter(|u| !u.trim().is_empty());
                Ok(LoginToken { token, login_url })
            }
            other => Err(serde::de::Error::custom(format!(
                "expected a token, got {}",
                crate::shape::kind_of(&other)
            ))),
        }
    }
}

/// Answer of a write whose body is not a JSON object: the text is kept. The client reads
/// a 2xx answer that is not JSON (`ok`), or is a bare JSON string, number or boolean, as
/// `{"ok": true, "message": "<the text>"}`.
pub fn text_answer(text: &str) -> Value {
    /// A text answer is a status line, not data: a longer one is cut.
    const MAX_CHARS: usize = 1000;
    let text = text.trim();
    let message: String = if text.chars().count() > MAX_CHARS {
        text.chars().take(MAX_CHARS).chain("…".chars()).collect()
    } else {
        text.to_string()
    };
    serde_json::json!({"ok": true, "message": message})
}

/// Answer of the delete-users calls. The real shape is undocumented; every field is
/// optional and unknown ones are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteUsersResult {
    /// E-mails of the users that were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<String>>,
    /// How many users were deleted.
    #[serde(default, alias = "count", skip_serializing_if = "Option::is_none")]
    pub deleted_count: Option<u64>,
    /// true when Memberspot answered with text (e.g. `ok`) instead of JSON: the call
    /// succeeded, but which members were deleted is not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Memberspot's answer when it was text, e.g. `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    /// true when Memberspot answered with text instead of JSON (the call succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Memberspot's answer when it was text, e.g. `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Answer of set-offer-state / set-order-state when the API reports the new state
/// instead of the member: `{active, email, offerId}` or `{active, email, orderId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateAnswer {
    /// The member's e-mail address.
    pub email: String,
    /// The holding's new state; absent when it was removed.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub active: Option<bool>,
    /// The offer whose holding changed (set-offer-state).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_id: Option<String>,
    /// The order whose holdings changed (set-order-state).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub order_id: Option<String>,
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
            assert_eq!(t.login_url, None);
        }
        let t: LoginToken = serde_json::from_value(
            json!({"token": "t", "loginUrl": "https://school.example/login?token=t"}),
        )
        .expect("decodes");
        assert_eq!(
            t.login_url.as_deref(),
            Some("https://school.example/login?token=t")
        );
        assert_eq!(
            serde_json::to_value(&t).expect("encodes"),
            json!({"token": "t", "loginUrl": "https://school.example/login?token=t"})
        );
        let e = serde_json::from_value::<LoginToken>(json!(["secret-token-value"]))
            .expect_err("a list is no token");
        assert!(!e.to_string().contains("secret-token"), "{e}");
    }

    #[test]
    fn text_and_state_answers() {
        let r: DeleteUsersResult = serde_json::from_value(text_answer(" ok\n")).expect("decodes");
        assert_eq!((r.ok, r.message.as_deref()), (Some(true), Some("ok")));
        assert_eq!(r.deleted, None);
        let long = "x".repeat(5000);
        let cut = text_answer(&long);
        assert_eq!(
            cut["message"].as_str().map(|m| m.chars().count()),
            Some(1001)
        );
        let s: StateAnswer =
            serde_json::from_value(json!({"active": false, "email": "a@b.de", "offerId": "o1"}))
                .expect("decodes");
        assert_eq!(
            (s.active, s.offer_id.as_deref(), s.order_id.as_deref()),
            (Some(false), Some("o1"), None)
        );
        let s: StateAnswer =
            serde_json::from_value(json!({"active": true, "email": "a@b.de", "orderId": 17}))
                .expect("decodes");
        assert_eq!(s.order_id.as_deref(), Some("17"));
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
