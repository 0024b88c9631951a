//! Acting as the personas the flows subsystem creates: `digest`, each flow's, each sync's,
//! each export's.
//!
//! Revoking one stops what runs as it, and nothing falls back to the operator: every call
//! still goes through [`Hub::call`] as that persona (re-read for each call, so a revocation
//! applies to the next one), which refuses it and records the attempt as `denied` under the
//! persona's name; the run then fails with an error that names the persona and the command
//! that creates it again.

use memberspot_hub::{CallContext, Hub, HubError, Principal};
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
    // Revoked or not: the hub refuses a revoked persona's call and records it.
    let persona = match hub.find_persona(name).await {
        Ok(p) => p,
        Err(HubError::Unauthenticated(_)) => {
            return Err(CallError::Persona(format!(
                "persona `{name}` does not exist; the flows subsystem creates it when it starts \
                 (`memberspot serve`, `memberspot flows list`)"
            )));
        }
        Err(e) => return Err(CallError::Call(e)),
    };
    let revoked = persona
        .revoked_at
        .is_some()
        .then(|| revoked_message(&persona));
    let outcome = hub
        .call(&Principal::Persona(persona), ctx, tool, args)
        .await;
    match (outcome.result, revoked) {
        (Ok(v), _) => Ok(v),
        (Err(HubError::Unauthenticated(_)), Some(message)) => Err(CallError::Persona(message)),
        (Err(e), _) => Err(CallError::Call(e)),
    }
}

pub use memberspot_hub::admin::revoked_message;
