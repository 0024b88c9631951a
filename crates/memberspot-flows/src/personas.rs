//! Acting as the personas the flows subsystem creates: `digest`, each flow's, each sync's,
//! each export's.
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
use memberspot_hub::{CallContext, Hub, HubError, ListOptions, Principal};
use memberspot_tools::tools::ListUsersInput;
use serde_json::Value;

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
