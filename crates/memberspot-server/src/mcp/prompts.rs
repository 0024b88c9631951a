//! Prompts a hosted assistant can offer its user: short message sequences that lead the
//! model to the right resources and tools. Listed only when the persona may call the
//! tools they lead to.

use memberspot_hub::{CallContext, Hub, Principal};
use memberspot_tools::inputs::Email;
use rmcp::ErrorData as McpError;
use rmcp::model::{GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, Role};

use super::resources;

pub(super) const DAILY_SUMMARY: &str = "daily_summary";
pub(super) const INVESTIGATE_ACCESS: &str = "investigate_access";
pub(super) const GRANT_ACCESS: &str = "grant_access";

/// Each prompt with the tools it needs.
fn catalogue() -> Vec<(Prompt, &'static [&'static str])> {
    let email = || {
        PromptArgument::new("email")
            .with_description("The member's e-mail address")
            .with_required(true)
    };
    vec![
        (
            Prompt::new(
                DAILY_SUMMARY,
                Some("Today's numbers of the school: members, new members, offers"),
                None,
            )
            .with_title("Daily summary"),
            &["list_offers", "list_users"],
        ),
        (
            Prompt::new(
                INVESTIGATE_ACCESS,
                Some("Find out why a member cannot reach a course, without changing anything"),
                Some(vec![email()]),
            )
            .with_title("Investigate a member's access"),
            &[
                "find_user_by_email",
                "list_offers",
                "list_user_course_progress",
            ],
        ),
        (
            Prompt::new(
                GRANT_ACCESS,
                Some("Give a member access to an offer, checking first what they hold"),
                Some(vec![
                    email(),
                    PromptArgument::new("offer")
                        .with_description("The offer's name or id")
                        .with_required(true),
                ]),
            )
            .with_title("Grant access to an offer"),
            &["find_user_by_email", "grant_user_offer_by_email"],
        ),
    ]
}

pub(super) fn list(hub: &Hub, who: &Principal) -> Vec<Prompt> {
    let Ok(tools) = hub.tools_for(who) else {
        return Vec::new();
    };
    catalogue()
        .into_iter()
        .filter(|(_, needs)| needs.iter().all(|n| tools.iter().any(|d| d.name == *n)))
        .map(|(p, _)| p)
        .collect()
}

pub(super) async fn get(
    hub: &Hub,
    who: &Principal,
    call: &CallContext,
    name: &str,
    args: Option<&JsonObject>,
) -> Result<GetPromptResult, McpError> {
    let arg = |key: &str| -> Result<String, McpError> {
        args.and_then(|a| a.get(key))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                McpError::invalid_params(
                    format!("the prompt `{name}` needs the argument `{key}`"),
                    None,
                )
            })
    };
    let email = || -> Result<Email, McpError> {
        Email::parse(&arg("email")?)
            .map_err(|e| McpError::invalid_params(format!("`email`: {e}"), None))
    };
    let (description, text) = match name {
        DAILY_SUMMARY => (
            "Today's numbers of the school",
            format!(
                "Give me a short summary of my Memberspot school for today. Read the resource {} (offers with their courses, the number of members, today's new members). Then answer in a few lines: how many members the school has, how many joined today, and which offers exist with how many courses each. Do not change anything.",
                resources::SCHOOL
            ),
        ),
        INVESTIGATE_ACCESS => {
            let email = email()?;
            (
                "Why a member cannot reach a course",
                format!(
                    "The member {email} says they cannot reach a course. Investigate without changing anything:\n1. Read memberspot://members/{email} (or call find_user_by_email) to see the offers they hold, whether each is active, and when it expires.\n2. Call list_offers to see which courses each offer unlocks, and find the offer that should give them the course.\n3. Look at their progress (list_user_course_progress) to see whether they ever started it.\nThen tell me the cause in one or two sentences (no member, offer missing, offer inactive, expired) and the fix you would make (for example grant_user_offer_by_email, set_user_offer_state with state active, or set_offer_expiration). Ask me before making it."
                ),
            )
        }
        GRANT_ACCESS => {
            let email = email()?;
            let given = arg("offer")?;
            let index = resources::offers(hub, who, call)
                .await
                .map_err(resources::hub_error)?;
            let offer_id = index
                .resolve(&given)
                .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
            let label = index.label(&offer_id);
            (
                "Grant a member access to an offer",
                format!(
                    "Give {email} access to the offer {label}.\n1. Call find_user_by_email with {email}: if they already hold offer_id {offer_id} and it is active, tell me and stop. If no member has that address, say that granting will create one.\n2. Otherwise call grant_user_offer_by_email with email {email} and offer_id {offer_id}.\n3. Tell me what changed, in one sentence."
                ),
            )
        }
        other => {
            return Err(McpError::invalid_params(
                format!(
                    "no prompt `{other}`; there are {DAILY_SUMMARY}, {INVESTIGATE_ACCESS} and {GRANT_ACCESS}"
                ),
                None,
            ));
        }
    };
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(description),
    )
}
