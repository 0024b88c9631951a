//! Acting as the personas the flows subsystem creates: `digest`, each flow's, each sync's,
//! each export's. [`wanted`] says which `serve` creates with which scopes, and
//! [`check_scopes`] whether their scopes allow the tools the flows file calls (for
//! `flows validate`).
//!
//! Revoking one stops what runs as it, and nothing falls back to the operator: every call
//! still goes through [`Hub::call`] as that persona (re-read for each call, so a revocation
//! applies to the next one), which refuses it and records the attempt as `denied` under the
//! persona's name; the run then fails with an error that names the persona and the command
//! that creates it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use memberspot_api::wire::User;
use memberspot_hub::scopes::{ScopeError, Scopes};
use memberspot_hub::store::Persona;
use memberspot_hub::{CallContext, Hub, HubError, ListOptions, Principal};
use memberspot_tools::Catalogue;
use memberspot_tools::tools::ListUsersInput;
use serde_json::Value;

use crate::FlowsConfig;
use crate::config::Action;
use crate::service::DIGEST_PERSONA;

/// Why a call made as a persona failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The persona cannot act (revoked, missing): nothing it runs can succeed until it is
    /// created again, so the run stops.
    #[error("{0}")]
    Persona(String),
    /// The call itself failed (refused by scope, invalid, the school answered an error).
    #[error(transparent)]
    Call(HubError),
}

/// Calls `tool` as the persona `name`, read afresh for this call.
pub async fn call_as(
    hub: &Hub,
    name: &str,
    ctx: &CallContext,
    tool: &str,
    args: Value,
) -> Result<Value, CallError> {
    let persona = persona(hub, name).await?;
    let revoked = persona
        .revoked_at
        .is_some()
        .then(|| revoked_message(&persona));
    let outcome = hub
        .call(&Principal::Persona(persona), ctx, tool, args)
        .await;
    match (outcome.result, revoked) {
        (Ok(v), _) => Ok(v),
        (Err(e), Some(message)) if e.is_unauthenticated() => Err(CallError::Persona(message)),
        (Err(e), _) => Err(CallError::Call(e)),
    }
}

/// Every member matching `filter`, read as the persona `name` through the gateway's
/// member stream: each page one audited `list_users` call, the persona read again for
/// each page, a repeated cursor an error. Also answers how many pages were asked for.
pub async fn users_as(
    hub: &Hub,
    name: &str,
    ctx: &CallContext,
    filter: ListUsersInput,
) -> Result<(Vec<User>, usize), CallError> {
    let persona = persona(hub, name).await?;
    let who = Principal::Persona(persona);
    let pages = Arc::new(AtomicUsize::new(0));
    let counter = pages.clone();
    let options = ListOptions {
        before_page: Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {})
        })),
        ..ListOptions::default()
    };
    let read = hub
        .users_stream(&who, ctx, filter, options)
        .try_collect()
        .await;
    match read {
        Ok(users) => Ok((users, pages.load(Ordering::Relaxed))),
        // Revoked before or while reading: the hub refused (and recorded) the page.
        Err(e) if e.is_unauthenticated() => match hub.find_persona(name).await {
            Ok(p) if p.revoked_at.is_some() => Err(CallError::Persona(revoked_message(&p))),
            Ok(_) => Err(CallError::Call(e)),
            Err(_) => Err(missing(name)),
        },
        Err(e) => Err(CallError::Call(e)),
    }
}

/// The school the persona `name` acts on.
pub(crate) async fn connection_of(hub: &Hub, name: &str) -> Result<String, CallError> {
    persona(hub, name).await.map(|p| p.connection)
}

/// A member as JSON, for comparing and writing (a `User` always serialises).
pub(crate) fn member_json(u: User) -> Result<Value, crate::FlowsError> {
    serde_json::to_value(u).map_err(|e| crate::FlowsError::Tool {
        tool: "list_users".into(),
        about: None,
        error: HubError::Unavailable(format!("a member could not be read: {e}")),
    })
}

/// The persona `name`, revoked or not: the hub refuses a revoked persona's call and
/// records it.
async fn persona(hub: &Hub, name: &str) -> Result<memberspot_hub::store::Persona, CallError> {
    match hub.find_persona(name).await {
        Ok(p) => Ok(p),
        Err(e) if e.is_unauthenticated() => Err(missing(name)),
        Err(e) => Err(CallError::Call(e)),
    }
}

fn missing(name: &str) -> CallError {
    CallError::Persona(format!(
        "persona `{name}` does not exist; the flows subsystem creates it when it starts \
         (`memberspot serve`, `memberspot flows list`)"
    ))
}

pub use memberspot_hub::admin::revoked_message;

/// Exactly the tools a sync uses: read the school, change access and properties.
pub const SYNC_TOOLS: [&str; 6] = [
    "list_offers",
    "list_users",
    "grant_user_offer_by_email",
    "set_user_offer_state",
    "set_offer_expiration",
    "set_custom_user_properties",
];

/// A persona flows act as, and how it is created when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPersona {
    pub name: String,
    /// Its school, once decided ([`FlowsConfig::resolve_connections`]).
    pub connection: Option<String>,
    /// The scopes it is created with: `read` for the digest, flows and exports (grant a
    /// flow's persona more with `memberspot personas grant-scope`), [`SYNC_TOOLS`] for a
    /// sync's.
    pub scopes: Vec<String>,
}

/// Every persona the flows file acts as, in the order `serve` creates them when missing;
/// of items sharing a persona, the first one decides its scopes.
pub fn wanted(config: &FlowsConfig) -> Vec<WantedPersona> {
    let read = || vec!["read".to_owned()];
    let mut out = Vec::new();
    let mut add = |name: &str, connection: &Option<String>, scopes: Vec<String>| {
        out.push(WantedPersona {
            name: name.to_owned(),
            connection: connection.clone(),
            scopes,
        });
    };
    if let Some(d) = &config.digest {
        add(DIGEST_PERSONA, &d.connection, read());
    }
    for f in &config.flows {
        add(&f.persona, &f.connection, read());
    }
    for s in &config.syncs {
        add(
            &s.persona,
            &s.connection,
            SYNC_TOOLS.map(str::to_owned).to_vec(),
        );
    }
    for e in &config.exports {
        add(&e.persona, &e.connection, read());
    }
    out
}

/// A tool the flows file calls that its persona's scopes refuse, or a persona that cannot
/// act at all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeProblem {
    /// `flow `NAME``, `sync `NAME``, `export `NAME``.
    pub item: String,
    /// The flow's step, and its line in the flows file.
    pub step: Option<String>,
    pub line: Option<usize>,
    pub persona: String,
    /// None when the persona cannot act at all (revoked, unreadable scopes).
    pub tool: Option<String>,
    /// All of the above in words, with the command that fixes it.
    pub message: String,
}

/// One tool call an item makes as its persona.
struct Call<'a> {
    item: String,
    step: Option<(&'a str, usize)>,
    persona: &'a str,
    connection: Option<&'a str>,
    tool: &'a str,
}

/// The tool calls of every flow step, sync and export, as their personas.
fn calls<'a>(config: &'a FlowsConfig) -> Vec<Call<'a>> {
    let mut out = Vec::new();
    for f in &config.flows {
        for st in &f.steps {
            if let Action::Tool { tool, .. } = &st.action {
                out.push(Call {
                    item: format!("flow `{}`", f.name),
                    step: Some((&st.name, st.line)),
                    persona: &f.persona,
                    connection: f.connection.as_deref(),
                    tool,
                });
            }
        }
    }
    // A sync's and an export's calls are the same whatever the file says.
    let mut fixed =
        |item: String, persona: &'a str, connection: &'a Option<String>, tools: &[&'static str]| {
            out.extend(tools.iter().map(|tool| Call {
                item: item.clone(),
                step: None,
                persona,
                connection: connection.as_deref(),
                tool,
            }));
        };
    for s in &config.syncs {
        fixed(
            format!("sync `{}`", s.name),
            &s.persona,
            &s.connection,
            &SYNC_TOOLS,
        );
    }
    for e in &config.exports {
        let tools: &[&str] = if e.courses.is_empty() {
            &["list_users", "find_user_by_email"]
        } else {
            &[
                "list_users",
                "find_user_by_email",
                "get_user_course_progress",
            ]
        };
        fixed(
            format!("export `{}`", e.name),
            &e.persona,
            &e.connection,
            tools,
        );
    }
    out
}

/// Checks every tool the flows file calls against the scopes of the persona it calls as:
/// the stored persona's (`personas`: every persona of the hub), or, for one that does not
/// exist yet, the scopes `serve` will create it with ([`wanted`]). A revoked persona, or
/// one whose stored scopes no longer parse, is one problem per item.
pub fn check_scopes(config: &FlowsConfig, personas: &[Persona]) -> Vec<ScopeProblem> {
    let catalogue = Catalogue::standard();
    let defaults = wanted(config);
    let calls = calls(config);
    let mut problems = Vec::new();
    let mut unusable: std::collections::BTreeSet<(String, &str)> = Default::default();
    for call in &calls {
        // Unknown tools are the file's own problems.
        let Some(entry) = catalogue.get(call.tool) else {
            continue;
        };
        let at = match call.step {
            Some((step, _)) => format!("{} step `{step}`", call.item),
            None => call.item.clone(),
        };
        let problem = |tool: Option<&str>, message: String| ScopeProblem {
            item: call.item.clone(),
            step: call.step.map(|(s, _)| s.to_owned()),
            line: call.step.map(|(_, l)| l),
            persona: call.persona.to_owned(),
            tool: tool.map(str::to_owned),
            message,
        };
        let stored = personas.iter().find(|p| p.name == call.persona);
        // For a persona `serve` has yet to create: the scopes it would get.
        let default: Vec<String> = defaults
            .iter()
            .find(|w| w.name == call.persona)
            .map_or_else(|| vec!["read".to_owned()], |w| w.scopes.clone());
        let scopes = match stored {
            Some(p) if p.revoked_at.is_some() => {
                if unusable.insert((call.item.clone(), call.persona)) {
                    problems.push(problem(None, format!("{at}: {}", revoked_message(p))));
                }
                continue;
            }
            Some(p) => match Scopes::parse(&p.scopes, &catalogue) {
                Ok(s) => s.with_offers(p.offer_ids.clone()),
                Err(e) => {
                    if unusable.insert((call.item.clone(), call.persona)) {
                        problems.push(problem(
                            None,
                            format!(
                                "{at}: the stored scopes of persona `{}` no longer parse ({e}); \
                                 fix them with `memberspot personas grant-scope {} SCOPES --replace`",
                                p.name, p.name
                            ),
                        ));
                    }
                    continue;
                }
            },
            None => Scopes::parse(&default, &catalogue).unwrap_or_else(|_| Scopes::read_only()),
        };
        // Arguments are templates here: only refusals no argument can lift count.
        let refusal = match scopes.check_call(&entry.descriptor, &Value::Null) {
            Err(e @ (ScopeError::NotAllowed { .. } | ScopeError::NotTiedToAnOffer { .. })) => e,
            _ => continue,
        };
        let message = match (stored, refusal) {
            (None, ScopeError::NotAllowed { class, scopes, .. }) => format!(
                "{at}: persona `{p}` does not exist yet, and `memberspot serve` would create it \
                 with scopes {scopes}, which do not allow `{tool}` (a {class} tool); create it \
                 first with `{cmd}`",
                p = call.persona,
                tool = call.tool,
                cmd = create_command(call, &calls, &default, &catalogue),
            ),
            (Some(_), ScopeError::NotAllowed { class, scopes, .. }) => format!(
                "{at}: persona `{p}` may not call `{tool}` (a {class} tool; its scopes: \
                 {scopes}); grant it with `memberspot personas grant-scope {p} {tool}`",
                p = call.persona,
                tool = call.tool,
            ),
            (_, refusal) => format!(
                "{at}: persona `{p}`: {refusal}; run {item} as a persona without an offer \
                 restriction",
                p = call.persona,
                item = call.item,
            ),
        };
        problems.push(problem(Some(call.tool), message));
    }
    problems
}

/// `memberspot --connection C personas create P --scopes …`: the scopes it would get, plus
/// every tool the flows file calls as it that they do not allow.
fn create_command(
    call: &Call,
    calls: &[Call],
    default: &[String],
    catalogue: &Catalogue,
) -> String {
    let allowed = Scopes::parse(default, catalogue).unwrap_or_else(|_| Scopes::read_only());
    let mut all = default.to_vec();
    for c in calls.iter().filter(|c| c.persona == call.persona) {
        let refused = catalogue
            .get(c.tool)
            .is_some_and(|e| !allowed.allows(&e.descriptor));
        if refused && !all.iter().any(|s| s == c.tool) {
            all.push(c.tool.to_owned());
        }
    }
    format!(
        "memberspot --connection {} personas create {} --scopes {}",
        call.connection.unwrap_or("SCHOOL"),
        call.persona,
        all.join(",")
    )
}
