//! Confirmation before a tool call (`elicitation/create`), by the persona's policy.
//!
//! A persona's `confirm:CLASS` scopes name the tool classes whose calls the user must
//! confirm over MCP (new personas that can reach a destructive tool get
//! `confirm:destructive`; `confirm:none` turns it off). A client that declared the
//! elicitation capability is asked; a declined or unanswered question, or a client that
//! cannot ask, leaves the school untouched and is recorded as `denied`.

use std::time::Duration;

use memberspot_hub::{CallContext, Hub, HubError, Principal};
use rmcp::RoleServer;
use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema};
use rmcp::service::{ElicitationMode, RequestContext};
use serde_json::Value;

/// Below `serve`'s request time-out (60 s), so the refusal reaches the client.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(50);
/// How much of the arguments the question shows.
const ARGS_SHOWN: usize = 600;

pub(super) enum Answer {
    /// The policy does not ask for this call (or the gateway will refuse it anyway).
    NotNeeded,
    /// The user confirmed; the note goes into the call's audit record.
    Confirmed(String),
}

/// Asks the user when the persona's policy wants it. `Err` is the refusal to return as a
/// tool error; it has been recorded.
pub(super) async fn ask(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    ctx: &RequestContext<RoleServer>,
    tool: &str,
    args: &Value,
) -> Result<Answer, HubError> {
    let Principal::Persona(persona) = who else {
        return Ok(Answer::NotNeeded);
    };
    let Some(entry) = hub.catalogue().get(tool) else {
        return Ok(Answer::NotNeeded);
    };
    let d = &entry.descriptor;
    // Calls the gateway refuses anyway are not worth the user's attention.
    let Ok(scopes) = hub.scopes_of(persona) else {
        return Ok(Answer::NotNeeded);
    };
    if persona.is_revoked()
        || !scopes.needs_confirmation(d.class)
        || scopes.check_call(d, args).is_err()
    {
        return Ok(Answer::NotNeeded);
    }
    let refuse = |reason: String| async move {
        hub.record_refused_call(
            &persona.name,
            Some(persona.connection.clone()),
            call,
            tool,
            args,
            &reason,
        )
        .await;
        HubError::Denied(reason)
    };
    if !ctx
        .peer
        .supported_elicitation_modes()
        .contains(&ElicitationMode::Form)
    {
        return Err(refuse(format!(
            "`{tool}` needs the user's confirmation (persona `{}` has the scope `confirm:{}`), and this MCP client cannot ask for one (it did not declare the elicitation capability); nothing was changed. Use a client that supports elicitation, or ask the hub's operator to allow these calls without confirmation: `memberspot personas grant-scope {} confirm:none` (replace the confirm scope, or use --replace)",
            persona.name,
            class_word(d.class),
            persona.name
        ))
        .await);
    }
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: question(d.title, tool, args, d.annotations.destructive),
        requested_schema: ElicitationSchema::builder().build_unchecked(),
    };
    let answer = ctx
        .peer
        .create_elicitation_with_timeout(params, Some(ANSWER_TIMEOUT))
        .await;
    match answer.map(|a| a.action) {
        Ok(ElicitationAction::Accept) => Ok(Answer::Confirmed(
            "[confirmed by the user over MCP elicitation]".to_string(),
        )),
        Ok(ElicitationAction::Decline) => Err(refuse(format!(
            "the user declined to run `{tool}`; nothing was changed"
        ))
        .await),
        // Cancel, or an answer this version does not know: not a yes.
        Ok(_) => Err(refuse(format!(
            "the user cancelled the confirmation of `{tool}`; nothing was changed"
        ))
        .await),
        Err(e) => Err(refuse(format!(
            "`{tool}` needs the user's confirmation and none came ({e}); nothing was changed"
        ))
        .await),
    }
}

fn question(title: &str, tool: &str, args: &Value, destructive: bool) -> String {
    let mut shown = args.to_string();
    if shown.len() > ARGS_SHOWN {
        let cut: String = shown.chars().take(ARGS_SHOWN).collect();
        shown = format!("{cut}…");
    }
    let warning = if destructive {
        " This deletes or removes data and may not be undone."
    } else {
        ""
    };
    format!("Allow the assistant to run \"{title}\" (`{tool}`) with {shown}?{warning}")
}

fn class_word(c: memberspot_tools::ToolClass) -> &'static str {
    match c {
        memberspot_tools::ToolClass::Read => "read",
        memberspot_tools::ToolClass::Write => "write",
        memberspot_tools::ToolClass::Destructive => "destructive",
    }
}
