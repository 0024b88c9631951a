//! Resources: `memberspot://school`, `memberspot://offers` and the template
//! `memberspot://members/{email}`. A read is the tool calls behind it, made through the
//! gateway as the persona (scoped, limited, audited like any call): a persona that may
//! not call `list_offers` or `find_user_by_email` may not read what they show.

use futures::TryStreamExt;
use memberspot_hub::offer_names::OfferIndex;
use memberspot_hub::{CallContext, Hub, HubError, ListOptions, Principal};
use memberspot_tools::inputs::Email;
use memberspot_tools::tools::{
    EmailInput, FindUserByEmailTool, ListOffersTool, ListProgressInput, ListUsersInput, NoInput,
};
use rmcp::ErrorData as McpError;
use rmcp::model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde_json::{Value, json};

pub(super) const SCHOOL: &str = "memberspot://school";
pub(super) const OFFERS: &str = "memberspot://offers";
pub(super) const MEMBER_TEMPLATE: &str = "memberspot://members/{email}";
const MEMBER_PREFIX: &str = "memberspot://members/";
/// Longer URIs are refused before anything is decoded (an e-mail has at most 254 characters).
const URI_LIMIT: usize = 512;
/// Members counted for the school view; a larger school says "at least".
const MEMBERS_COUNTED: usize = 10_000;
/// Courses with progress shown for one member.
const PROGRESS_SHOWN: usize = 200;
const JSON: &str = "application/json";

pub(super) fn list() -> Vec<Resource> {
    vec![
        Resource::new(SCHOOL, "school")
            .with_title("The school at a glance")
            .with_description("Offers with their courses, the number of members, and today's new members. Reading it lists the offers and pages through the members (audited reads).")
            .with_mime_type(JSON),
        Resource::new(OFFERS, "offers")
            .with_title("Offers")
            .with_description("Every offer (access product) with its id, name and the course ids it unlocks.")
            .with_mime_type(JSON),
    ]
}

pub(super) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(MEMBER_TEMPLATE, "member")
            .with_title("A member")
            .with_description("One member by e-mail: the offers they hold with offer names, state and expiration, and their course progress.")
            .with_mime_type(JSON),
    ]
}

/// What a resource URI names.
#[derive(Debug, PartialEq)]
pub(super) enum Target {
    School,
    Offers,
    Member(Email),
}

/// Parses a resource URI strictly: no query, fragment, extra path segments or
/// traversal; the e-mail is percent-decoded once and must be a valid address.
pub(super) fn parse(uri: &str) -> Result<Target, McpError> {
    if uri.len() > URI_LIMIT {
        return Err(McpError::invalid_params(
            format!(
                "resource URI too long ({} bytes; at most {URI_LIMIT})",
                uri.len()
            ),
            None,
        ));
    }
    match uri {
        SCHOOL => return Ok(Target::School),
        OFFERS => return Ok(Target::Offers),
        _ => {}
    }
    let Some(raw) = uri.strip_prefix(MEMBER_PREFIX) else {
        return Err(not_found(uri));
    };
    if raw.is_empty() || raw.contains(['/', '?', '#', '\\']) {
        return Err(McpError::invalid_params(
            format!(
                "`{}` is not a member URI: use memberspot://members/{{email}} with one e-mail address",
                shown(uri)
            ),
            None,
        ));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            McpError::invalid_params(
                "the e-mail in the URI is not valid UTF-8 once decoded",
                None,
            )
        })?;
    if decoded.contains(['/', '\\']) || decoded.chars().any(char::is_control) {
        return Err(McpError::invalid_params(
            "the e-mail in the URI holds a path separator or a control character",
            None,
        ));
    }
    Email::parse(&decoded).map(Target::Member).map_err(|e| {
        McpError::invalid_params(
            format!("`{}` is not an e-mail address: {e}", shown(&decoded)),
            None,
        )
    })
}

fn not_found(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!(
            "no resource `{}`; there are {SCHOOL}, {OFFERS} and {MEMBER_TEMPLATE}",
            shown(uri)
        ),
        None,
    )
}

/// A bounded echo of caller input for messages.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

pub(super) async fn read(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    uri: &str,
) -> Result<ReadResourceResult, McpError> {
    let target = parse(uri)?;
    let value = match target {
        Target::School => school(hub, who, call).await,
        Target::Offers => offers(hub, who, call)
            .await
            .map(|o| json!({ "offers": o.offers() })),
        Target::Member(email) => member(hub, who, call, &email).await,
    }
    .map_err(hub_error)?;
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(JSON),
    ]))
}

/// Refusals and failures of the reads behind a resource, as protocol errors that say why.
pub(super) fn hub_error(e: HubError) -> McpError {
    let data = Some(e.to_json());
    if e.is_not_found() {
        McpError::resource_not_found(e.to_string(), data)
    } else if e.is_denied() || e.is_unauthenticated() || e.is_limited() {
        McpError::invalid_request(e.to_string(), data)
    } else {
        McpError::internal_error(e.to_string(), data)
    }
}

pub(super) async fn offers(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
) -> Result<OfferIndex, HubError> {
    let out = hub.run::<ListOffersTool>(who, call, NoInput {}).await?;
    Ok(OfferIndex::new(out.offers))
}

async fn school(hub: &Hub, who: &Principal, call: &CallContext) -> Result<Value, HubError> {
    let index = offers(hub, who, call).await?;
    let options = ListOptions {
        max_items: Some(MEMBERS_COUNTED),
        ..Default::default()
    };
    let today = chrono::Utc::now().date_naive();
    let (mut members, mut new_today) = (0usize, 0usize);
    let mut stream =
        std::pin::pin!(hub.users_stream(who, call, ListUsersInput::default(), options));
    while let Some(user) = stream.try_next().await? {
        members += 1;
        if user.created_at.is_some_and(|t| t.0.date_naive() == today) {
            new_today += 1;
        }
    }
    let offers: Vec<Value> = index
        .offers()
        .iter()
        .map(|o| json!({ "id": o.id, "name": o.name, "course_ids": o.course_ids }))
        .collect();
    Ok(json!({
        "offers": offers,
        "members": members,
        "members_complete": members < MEMBERS_COUNTED,
        "today": { "date": today.to_string(), "new_members": new_today },
    }))
}

/// A member's holdings with offer names, and their progress per course.
pub(super) async fn member(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    email: &Email,
) -> Result<Value, HubError> {
    let user = hub
        .run::<FindUserByEmailTool>(
            who,
            call,
            EmailInput {
                email: email.clone(),
            },
        )
        .await?;
    // Names are a courtesy: a member view never fails for want of them.
    let index = offers(hub, who, call).await.ok();
    let holdings: Vec<Value> = user
        .offers
        .iter()
        .map(|h| {
            json!({
                "offer_id": h.offer_id,
                "offer_name": index.as_ref().and_then(|i| i.name_of(&h.offer_id)),
                "active": h.active,
                "expires_at": h.expires_at.as_ref().map(|t| t.0.to_rfc3339()),
                "order_id": h.order_id,
            })
        })
        .collect();
    let request = ListProgressInput {
        email: email.clone(),
        page_length: None,
        cursor: None,
    };
    let options = ListOptions {
        max_items: Some(PROGRESS_SHOWN),
        ..Default::default()
    };
    let progress: Vec<_> = hub
        .progress_stream(who, call, request, options)
        .try_collect()
        .await?;
    Ok(json!({
        "uid": user.uid,
        "email": user.email,
        "first_name": user.firstname,
        "last_name": user.name,
        "created_at": user.created_at.as_ref().map(|t| t.0.to_rfc3339()),
        "offers": holdings,
        "progress": progress,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_uris_parse_strictly() {
        assert_eq!(parse(SCHOOL).ok(), Some(Target::School));
        let Ok(Target::Member(e)) = parse("memberspot://members/anna%40example.com") else {
            panic!("encoded @ is an address");
        };
        assert_eq!(e.as_str(), "anna@example.com");
        for bad in [
            "memberspot://members/",
            "memberspot://members/../school",
            "memberspot://members/a@example.com/offers",
            "memberspot://members/..%2F..%2Fetc%2Fpasswd",
            "memberspot://members/a%00@example.com",
            "memberspot://members/%FF%FE",
            "memberspot://members/a@example.com?x=1",
            "memberspot://members/not-an-address",
            "memberspot://school/",
            "file:///etc/passwd",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let huge = format!("memberspot://members/{}@example.com", "a".repeat(10_000));
        let e = parse(&huge).expect_err("huge");
        assert!(e.message.contains("too long"), "{}", e.message);
    }
}
