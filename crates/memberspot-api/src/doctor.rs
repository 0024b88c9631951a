//! Checking a school's answers against what this version reads: each read-only
//! endpoint called once (the key check, the offers, one page of members, one member,
//! that member's progress, the property definitions), never a write and never the
//! login token (each call mints one). The report holds field names, JSON types and
//! lengths only: no e-mail, name, id, token or date of the school, so it can be
//! attached to a bug report.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use memberspot_wire::shape::{self, Expect, Findings, Shape, looks_like_field_name};
use memberspot_wire::{
    CourseProgress, CustomUserProperty, ListOf, Offer, ProgressPage, User, UsersPage,
};

use crate::actions::{
    Action, CheckApiKey, FindUserByEmail, GetUserCourseProgress, ListCustomUserProperties,
    ListOffers, ListUserCourseProgress, ListUsers,
};
use crate::{ApiError, Client};

/// Members and courses read per page: enough to see the shapes, few enough to be quick.
const PAGE: u32 = 10;

/// How one answer compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Decoded, every field known and of the expected type.
    Ok,
    /// Decoded, but with fields this version does not know or of another type.
    Differs,
    /// A 2xx answer this version cannot read.
    Undecodable,
    /// The call failed (status and error code in the check).
    Failed,
    /// Not called (the reason says why).
    Skipped,
}

/// One endpoint's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The action (as the tool catalogue names it).
    pub name: &'static str,
    /// Method and path, with placeholders instead of values.
    pub request: &'static str,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, was skipped or could not be read, without values of the school.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The answer's media type (`application/json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// How the answer differs from what this version reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Findings>,
    /// Field names, JSON types and lengths of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
}

impl Check {
    fn new(name: &'static str, request: &'static str, verdict: Verdict) -> Check {
        Check {
            name,
            request,
            verdict,
            status: None,
            reason: None,
            content_type: None,
            findings: None,
            shape: None,
        }
    }

    fn skipped(name: &'static str, request: &'static str, reason: &str) -> Check {
        let mut c = Check::new(name, request, Verdict::Skipped);
        c.reason = Some(reason.to_string());
        c
    }
}

/// What the doctor found: safe to share (see the module documentation).
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The program and version that wrote the report.
    pub generator: String,
    /// `api.memberspot.de`, or `other` for any other host (its name is not kept: it could
    /// name the school).
    pub api_host: String,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Every call that was made succeeded and decoded.
    pub fn all_read(&self) -> bool {
        self.checks
            .iter()
            .all(|c| !matches!(c.verdict, Verdict::Failed | Verdict::Undecodable))
    }
}

/// Calls each read-only endpoint once on `client`'s school and compares the answers.
pub async fn run(client: &Client) -> DoctorReport {
    let mut checks = Vec::new();
    let (key, _) = probe::<_, Value>(
        client,
        &CheckApiKey,
        "check_api_key",
        "GET /api-auth",
        &Expect::Any,
    )
    .await;
    let refused = key.verdict == Verdict::Failed && matches!(key.status, Some(401 | 403));
    checks.push(key);
    let rest: [(&'static str, &'static str); 6] = [
        ("list_offers", "GET /v1/offers"),
        ("list_users", "GET /v1/users/list?pageLength=10"),
        ("find_user_by_email", "GET /v1/users/find-by-mail/{email}"),
        (
            "list_user_course_progress",
            "GET /v1/users/course-progress/list/{email}?pageLength=10",
        ),
        (
            "get_user_course_progress",
            "GET /v1/users/course-progress/{courseId}/{email}",
        ),
        (
            "list_custom_user_properties",
            "GET /v1/custom-user-properties/list",
        ),
    ];
    if refused {
        checks.extend(
            rest.iter()
                .map(|(name, request)| Check::skipped(name, request, "the API key was refused")),
        );
        return report(client, checks);
    }
    let [offers, users, find, progress_list, progress_one, properties] = rest;

    checks.push(
        probe::<_, ListOf<Offer>>(client, &ListOffers, offers.0, offers.1, &shape::OFFERS)
            .await
            .0,
    );

    let (check, page) = probe::<_, UsersPage>(
        client,
        &ListUsers::new().page_length(PAGE),
        users.0,
        users.1,
        &shape::USERS_PAGE,
    )
    .await;
    checks.push(check);
    // A member who holds an offer is the likeliest to have course progress to read.
    let member = page.and_then(|p| {
        let pick = p
            .users
            .iter()
            .find(|u| !u.offers.is_empty())
            .or(p.users.first());
        pick.map(|u| u.email.clone())
    });
    match member {
        None => {
            let why = "needs a member from the list of members (none was read)";
            for (name, request) in [find, progress_list, progress_one] {
                checks.push(Check::skipped(name, request, why));
            }
        }
        Some(email) => {
            checks.push(
                probe::<_, User>(
                    client,
                    &FindUserByEmail::new(&email),
                    find.0,
                    find.1,
                    &shape::USER,
                )
                .await
                .0,
            );
            let (check, progress) = probe::<_, ProgressPage>(
                client,
                &ListUserCourseProgress::new(&email).page_length(PAGE),
                progress_list.0,
                progress_list.1,
                &shape::PROGRESS_PAGE,
            )
            .await;
            checks.push(check);
            match progress.and_then(|p| p.progress.first().map(|c| c.course_id.clone())) {
                Some(course) => checks.push(
                    probe::<_, CourseProgress>(
                        client,
                        &GetUserCourseProgress::new(course, &email),
                        progress_one.0,
                        progress_one.1,
                        &shape::COURSE_PROGRESS,
                    )
                    .await
                    .0,
                ),
                None => checks.push(Check::skipped(
                    progress_one.0,
                    progress_one.1,
                    "needs a course from the member's progress list (none was read)",
                )),
            }
        }
    }
    checks.push(
        probe::<_, ListOf<CustomUserProperty>>(
            client,
            &ListCustomUserProperties,
            properties.0,
            properties.1,
            &shape::PROPERTIES,
        )
        .await
        .0,
    );
    report(client, checks)
}

fn report(client: &Client, checks: Vec<Check>) -> DoctorReport {
    let host = url::Url::parse(client.base_url())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    DoctorReport {
        generator: concat!("memberspot-hub ", env!("CARGO_PKG_VERSION")).to_string(),
        api_host: match host.as_deref() {
            Some("api.memberspot.de") => "api.memberspot.de".into(),
            _ => "other".into(),
        },
        checks,
    }
}

/// Calls `action` once and compares its answer with `expect` and with `T`. Answers the
/// decoded value too, for the next calls (it never goes into the report).
async fn probe<A: Action, T: DeserializeOwned>(
    client: &Client,
    action: &A,
    name: &'static str,
    request: &'static str,
    expect: &Expect,
) -> (Check, Option<T>) {
    let answer = match client.fetch(action).await {
        Ok(a) => a,
        Err(e) => {
            let mut c = Check::new(name, request, Verdict::Failed);
            c.status = e.status();
            c.reason = Some(failure(&e));
            return (c, None);
        }
    };
    let mut c = Check::new(name, request, Verdict::Ok);
    c.status = Some(answer.status);
    c.content_type = answer.content_type.as_deref().and_then(media_type);
    let value: Value = if answer.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&answer.body) {
            Ok(v) => v,
            Err(_) => {
                c.verdict = Verdict::Undecodable;
                c.reason = Some(format!(
                    "the answer is not JSON ({} bytes)",
                    answer.body.len()
                ));
                return (c, None);
            }
        }
    };
    let findings = shape::check(&value, expect);
    c.shape = Some(Shape::of_answer(&value, expect));
    let decoded = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            c.verdict = Verdict::Undecodable;
            let path = without_values_path(&e.path().to_string());
            let message = without_values(&e.inner().to_string());
            c.reason = Some(if path == "." {
                message
            } else {
                format!("at `{path}`: {message}")
            });
            None
        }
    };
    if c.verdict == Verdict::Ok && !findings.is_clean() {
        c.verdict = Verdict::Differs;
    }
    let quiet = findings.is_clean() && findings.other_names.is_empty();
    c.findings = (!quiet).then_some(findings);
    (c, decoded)
}

/// A failed call in words that carry nothing the server said (its message may quote
/// the school's data).
fn failure(e: &ApiError) -> String {
    let what = match e {
        ApiError::Unauthorized { .. } => "the API key was refused",
        ApiError::Forbidden { .. } => "forbidden; the plan may lack API access",
        ApiError::NotFound { .. } => "not found",
        ApiError::Validation { .. } => "the request was refused as invalid",
        ApiError::RateLimited { .. } => "rate limited",
        ApiError::Upstream { .. } => "a server error on Memberspot's side",
        ApiError::Timeout { .. } => "no answer in time",
        ApiError::Transport { .. } => "could not connect",
        ApiError::Decode { .. } => "an answer that could not be read",
        ApiError::Http { .. } => "an unexpected status",
        ApiError::Redirect { .. } => "a redirect (not followed)",
        ApiError::Config(_) => "the client is not configured correctly",
        ApiError::RepeatedCursor { .. } => "a list that repeats its cursor",
    };
    format!("{} ({what})", e.code())
}

/// `application/json` from `application/json; charset=utf-8`, if it looks like one.
fn media_type(header: &str) -> Option<String> {
    let t = header.split(';').next()?.trim().to_ascii_lowercase();
    let ok = t.split_once('/').is_some_and(|(a, b)| {
        [a, b].iter().all(|p| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".+-".contains(&c))
        })
    });
    ok.then_some(t)
}

/// A decoding message without the values it may quote: text in double quotes is a
/// value (`string "anna@…"`); text in backticks is kept only when it is a field name
/// (`missing field \`uid\``).
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                let inner: String = chars.by_ref().take_while(|x| *x != c).collect();
                out.push(c);
                out.push_str(if c == '`' && looks_like_field_name(&inner) {
                    &inner
                } else {
                    "…"
                });
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A JSON path (`users[3].customProperties.Lk3J…`) with keys that look like data as `*`.
fn without_values_path(path: &str) -> String {
    path.split('.')
        .map(|seg| {
            let (key, index) = seg.find('[').map_or((seg, ""), |i| seg.split_at(i));
            let key = if key.is_empty() || looks_like_field_name(key) {
                key
            } else {
                "*"
            };
            format!("{key}{index}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_paths_lose_their_values() {
        assert_eq!(
            without_values(r#"invalid type: string "anna@example.com", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        assert_eq!(without_values("missing field `uid`"), "missing field `uid`");
        assert_eq!(
            without_values("invalid value: integer `-5`, expected `Qe4TnW8yUi2OpA6sDf0G`"),
            "invalid value: integer `…`, expected `…`"
        );
        assert_eq!(
            without_values_path("users[3].customProperties.Lk3JhG5fDs7AzX9cVb1N"),
            "users[3].customProperties.*"
        );
        assert_eq!(without_values_path("[0].offers[2]"), "[0].offers[2]");
        assert_eq!(
            media_type("application/json; charset=utf-8").as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type("anna@example.com"), None);
    }
}
