//! `search` and `fetch`, the two read-only tools ChatGPT-style connectors require, for
//! personas with the `connector` scope. Results follow OpenAI's shape: `search` gives
//! `{results: [{id, title, url, text}]}`, `fetch` one document `{id, title, text, url,
//! metadata}`; both as structured content and as JSON text. Ids are `offer:ID` and
//! `member:EMAIL`; each read behind them is an audited call of the persona.

use std::sync::Arc;

use memberspot_hub::{CallContext, Hub, HubError, Principal};
use memberspot_tools::inputs::Email;
use memberspot_tools::tools::{EmailInput, FindUserByEmailTool};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::{error_result, resources};

const SEARCH: &str = "search";
const FETCH: &str = "fetch";
/// Results per search.
const RESULTS: usize = 20;
/// A longer query finds nothing worth the reads.
const QUERY_LIMIT: usize = 254;

pub(super) fn is_connector_tool(name: &str) -> bool {
    name == SEARCH || name == FETCH
}

/// Whether `who` opted in (and may read, which both tools do).
pub(super) fn offered(hub: &Hub, who: &Principal) -> bool {
    let Principal::Persona(p) = who else {
        return false;
    };
    let Ok(scopes) = hub.scopes_of(p) else {
        return false;
    };
    scopes.connector()
        && ["list_offers", "find_user_by_email"].iter().all(|n| {
            hub.catalogue()
                .get(n)
                .is_some_and(|e| scopes.allows(&e.descriptor))
        })
}

fn schema(v: Value) -> Arc<JsonObject> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

pub(super) fn tools() -> Vec<Tool> {
    let read = ToolAnnotations::new()
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false);
    vec![
        Tool::new(
            SEARCH,
            "Search the school's offers by name, and members by exact e-mail address. Returns results with an id to pass to fetch. Read-only.",
            schema(json!({
                "type": "object",
                "properties": { "query": { "type": "string", "description": "An offer name (or part of it) or a member's e-mail address" } },
                "required": ["query"]
            })),
        )
        .with_title("Search members and offers")
        .with_annotations(read.clone()),
        Tool::new(
            FETCH,
            "Fetch one offer (id offer:ID) or member (id member:EMAIL) found with search: the offer's courses, or the member's offers with names, expirations and progress. Read-only.",
            schema(json!({
                "type": "object",
                "properties": { "id": { "type": "string", "description": "An id from search" } },
                "required": ["id"]
            })),
        )
        .with_title("Fetch a member or offer")
        .with_annotations(read),
    ]
}

pub(super) async fn call(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    name: &str,
    args: &Value,
) -> CallToolResult {
    if !offered(hub, who) {
        let reason = format!(
            "`{name}` is offered to personas with the `connector` scope (and read access) only"
        );
        // Recorded like any call outside the scopes.
        if let Principal::Persona(p) = who {
            hub.record_refused_call(
                &p.name,
                Some(p.connection.clone()),
                call,
                name,
                args,
                &reason,
            )
            .await;
        }
        return error_result(&HubError::Denied(reason));
    }
    let result = match name {
        SEARCH => match args["query"].as_str() {
            Some(q) => search(hub, who, call, q.trim()).await,
            None => Err(HubError::Invalid("`query` (a string) is required".into())),
        },
        _ => match args["id"].as_str() {
            Some(id) => fetch(hub, who, call, id.trim()).await,
            None => Err(HubError::Invalid("`id` (a string) is required".into())),
        },
    };
    match result {
        Ok(v) => {
            let text = v.to_string();
            let mut r = CallToolResult::structured(v);
            r.content = vec![ContentBlock::text(text)];
            r
        }
        Err(e) => error_result(&e),
    }
}

async fn search(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    query: &str,
) -> Result<Value, HubError> {
    if query.is_empty() || query.len() > QUERY_LIMIT {
        return Ok(json!({ "results": [] }));
    }
    let mut results = Vec::new();
    let index = resources::offers(hub, who, call).await?;
    let needle = query.to_lowercase();
    for o in index.offers() {
        if o.name.to_lowercase().contains(&needle) || o.id == query {
            results.push(json!({
                "id": format!("offer:{}", o.id),
                "title": o.name,
                "url": format!("memberspot://offers#{}", o.id),
                "text": format!("Offer unlocking {} course(s)", o.course_ids.len()),
            }));
        }
    }
    if let Ok(email) = Email::parse(query) {
        match hub
            .run::<FindUserByEmailTool>(
                who,
                call,
                EmailInput {
                    email: email.clone(),
                },
            )
            .await
        {
            Ok(user) => results.push(json!({
                "id": format!("member:{}", user.email),
                "title": member_title(&user.firstname, &user.name, &user.email),
                "url": format!("memberspot://members/{}", user.email),
                "text": format!("Member holding {} offer(s)", user.offers.len()),
            })),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    results.truncate(RESULTS);
    Ok(json!({ "results": results }))
}

async fn fetch(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    id: &str,
) -> Result<Value, HubError> {
    if let Some(offer_id) = id.strip_prefix("offer:") {
        let index = resources::offers(hub, who, call).await?;
        let Some(o) = index.offers().iter().find(|o| o.id == offer_id) else {
            return Err(HubError::NotFound(format!("no offer with id `{offer_id}`")));
        };
        return Ok(json!({
            "id": id,
            "title": o.name,
            "text": serde_json::to_string_pretty(o).unwrap_or_default(),
            "url": format!("memberspot://offers#{}", o.id),
            "metadata": { "kind": "offer", "course_ids": o.course_ids },
        }));
    }
    if let Some(raw) = id.strip_prefix("member:") {
        let email = Email::parse(raw).map_err(|e| HubError::Invalid(format!("`id`: {e}")))?;
        let member = resources::member(hub, who, call, &email).await?;
        return Ok(json!({
            "id": id,
            "title": format!("Member {email}"),
            "text": serde_json::to_string_pretty(&member).unwrap_or_default(),
            "url": format!("memberspot://members/{email}"),
            "metadata": { "kind": "member", "uid": member["uid"] },
        }));
    }
    Err(HubError::Invalid(
        "`id` must be offer:ID or member:EMAIL, as search returns them".into(),
    ))
}

fn member_title(first: &Option<String>, last: &Option<String>, email: &str) -> String {
    let name = [first.as_deref(), last.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        email.to_string()
    } else {
        format!("{name} ({email})")
    }
}
