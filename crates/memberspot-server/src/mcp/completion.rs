//! `completion/complete` for prompt and resource-template arguments: offer names from
//! the hub's offer index, member e-mails by prefix. Suggestions come from reads made as
//! the persona through the gateway, so they show only what it may read; an
//! offer-restricted persona is offered only its offers and their members.

use futures::TryStreamExt;
use memberspot_hub::{CallContext, Hub, ListOptions, Principal};
use memberspot_tools::inputs::Id;
use memberspot_tools::tools::ListUsersInput;
use rmcp::ErrorData as McpError;
use rmcp::model::{CompleteRequestParams, CompletionInfo, Reference};

use super::{prompts, resources};

/// Suggestions per answer (MCP allows 100).
const SHOWN: usize = 20;
/// Members looked at for e-mail suggestions, per offer for a restricted persona.
const SCANNED: usize = 500;
/// An argument value this long suggests nothing (an e-mail has at most 254 characters).
const VALUE_LIMIT: usize = 254;

enum Kind {
    Email,
    Offer,
}

pub(super) async fn complete(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    request: &CompleteRequestParams,
) -> Result<CompletionInfo, McpError> {
    let argument = request.argument.name.as_str();
    let kind = match (&request.r#ref, argument) {
        (Reference::Prompt(p), "email")
            if p.name == prompts::INVESTIGATE_ACCESS || p.name == prompts::GRANT_ACCESS =>
        {
            Kind::Email
        }
        (Reference::Prompt(p), "offer") if p.name == prompts::GRANT_ACCESS => Kind::Offer,
        (Reference::Resource(r), "email") if r.uri == resources::MEMBER_TEMPLATE => Kind::Email,
        _ => return Ok(CompletionInfo::default()),
    };
    let value = request.argument.value.trim();
    if value.len() > VALUE_LIMIT {
        return Ok(CompletionInfo::default());
    }
    let found = match kind {
        Kind::Offer => offers(hub, who, call, value).await?,
        Kind::Email => emails(hub, who, call, value).await?,
    };
    let total = found.len();
    let values: Vec<String> = found.into_iter().take(SHOWN).collect();
    let mut info = CompletionInfo::new(values).unwrap_or_default();
    info.total = u32::try_from(total).ok();
    info.has_more = Some(total > SHOWN);
    Ok(info)
}

/// Offer names starting with (then containing) `value`, case-insensitively.
async fn offers(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    value: &str,
) -> Result<Vec<String>, McpError> {
    let index = resources::offers(hub, who, call)
        .await
        .map_err(resources::hub_error)?;
    let allowed = allowed_offers(hub, who);
    let needle = value.to_lowercase();
    let mut starts = Vec::new();
    let mut contains = Vec::new();
    for o in index.offers() {
        if allowed.as_ref().is_some_and(|a| !a.contains(&o.id)) {
            continue;
        }
        let name = o.name.to_lowercase();
        if name.starts_with(&needle) {
            starts.push(o.name.clone());
        } else if name.contains(&needle) {
            contains.push(o.name.clone());
        }
    }
    starts.extend(contains);
    Ok(starts)
}

/// E-mails starting with `value`, from the members the persona may see.
async fn emails(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    value: &str,
) -> Result<Vec<String>, McpError> {
    let needle = value.to_lowercase();
    let filters: Vec<ListUsersInput> = match allowed_offers(hub, who) {
        // Only members holding one of the persona's offers.
        Some(ids) => ids
            .into_iter()
            .filter_map(|id| Id::parse(&id).ok())
            .map(|id| ListUsersInput {
                offer_id: Some(id),
                ..Default::default()
            })
            .collect(),
        None => vec![ListUsersInput::default()],
    };
    let mut found = std::collections::BTreeSet::new();
    for filter in filters {
        let options = ListOptions {
            max_items: Some(SCANNED),
            ..Default::default()
        };
        let users: Vec<_> = hub
            .users_stream(who, call, filter, options)
            .try_collect()
            .await
            .map_err(resources::hub_error)?;
        found.extend(
            users
                .into_iter()
                .map(|u| u.email)
                .filter(|e| e.to_lowercase().starts_with(&needle)),
        );
    }
    Ok(found.into_iter().collect())
}

fn allowed_offers(hub: &Hub, who: &Principal) -> Option<Vec<String>> {
    match who {
        Principal::Persona(p) => hub.scopes_of(p).ok().and_then(|s| s.offer_ids()),
        Principal::Operator { .. } => None,
    }
}
