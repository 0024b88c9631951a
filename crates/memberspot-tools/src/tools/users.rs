use memberspot_api::actions::{
    CreateLoginToken, DeleteUsers, DeleteUsersPost, FindUserByEmail, GrantUserOfferByEmail,
    ListUsers, SetOfferExpiration, SetOrderState, SetUserOfferState,
};
use memberspot_api::{ApiError, Client};
use memberspot_wire::{DeleteUsersResult, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{READ, UserChange};
use crate::inputs::{Email, HoldingState, Id, IsoDateTime, PageLength};
use crate::{Annotations, MemberKey, OfferScope, Tool, ToolError};

pub struct ListUsersTool;

/// Filters and paging for `list_users`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListUsersInput {
    /// Only members holding this offer (any state unless `active` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<Id>,
    /// Only members with an offer granting this course.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_id: Option<Id>,
    /// true: only members whose (filtered) offer is active; false: only members without an active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Members per page, 1 to 100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_length: Option<PageLength>,
    /// `next_cursor` from the previous page, to continue after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Id>,
}

/// One page of members.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UsersPageOutput {
    pub users: Vec<User>,
    /// Pass as `cursor` to get the next page; null when this is the last page.
    pub next_cursor: Option<String>,
}

impl Tool for ListUsersTool {
    type Input = ListUsersInput;
    type Output = UsersPageOutput;
    const NAME: &'static str = "list_users";
    const TITLE: &'static str = "List members";
    const DESCRIPTION: &'static str = paced!(
        "List the school's members (users) one page at a time, optionally only those holding an offer, with access to a course, or with active/inactive access. Each member has uid, email, names, creation date, held offers (offerId, active, orderId, expiresAt) and custom property values. Read-only. To get everything, call again with `cursor` set to the returned `next_cursor` until it is null. To look up one person use find_user_by_email instead."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let mut action = ListUsers::new();
        action.query.offer_id = input.offer_id.map(|i| i.to_string());
        action.query.course_id = input.course_id.map(|i| i.to_string());
        action.query.active = input.active;
        action.query.page_length = input.page_length.map(PageLength::get);
        action.query.last_loaded_id = input.cursor.map(|i| i.to_string());
        let page = client.execute(&action).await?;
        Ok(UsersPageOutput {
            users: page.users,
            next_cursor: page.next_page,
        })
    }
}

pub struct FindUserByEmailTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    /// The member's e-mail address (case does not matter).
    pub email: Email,
}

impl Tool for FindUserByEmailTool {
    type Input = EmailInput;
    type Output = User;
    const NAME: &'static str = "find_user_by_email";
    const TITLE: &'static str = "Find member by e-mail";
    const DESCRIPTION: &'static str = paced!(
        "Look up one member by e-mail address and return their profile: uid, names, creation date, every offer they hold with its state (active, orderId, expiresAt) and their custom property values. Read-only. Fails with not_found when no member has that address. Use this before changing a member's access to see what they hold."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        client
            .execute(&FindUserByEmail::new(input.email.as_str()))
            .await
    }
}

pub struct GrantUserOfferByEmailTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// The member's e-mail address; a new member is created if none exists.
    pub email: Email,
    /// Id of the offer to grant (see list_offers).
    pub offer_id: Id,
    /// First name, used when the member is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name, used when the member is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// External order id (e.g. from Digistore24, CopeCart, Stripe) to tie this access to, so set_order_state can switch it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Id>,
}

impl Tool for GrantUserOfferByEmailTool {
    type Input = GrantInput;
    type Output = UserChange;
    const NAME: &'static str = "grant_user_offer_by_email";
    const TITLE: &'static str = "Grant an offer";
    const DESCRIPTION: &'static str = paced!(
        "Give a person access to an offer (a product that unlocks courses), identified by e-mail. If no member has that e-mail, Memberspot creates one with the given names (and may send them a welcome e-mail). If they already hold the offer it is re-activated. Pass the shop's order id to tie the access to a purchase so it can later be switched off with set_order_state. Idempotent: granting twice has the same effect as once. Returns the member."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: true,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::NamesOffer {
        argument: "offer_id",
    };

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let mut action = GrantUserOfferByEmail::new(input.email.as_str(), input.offer_id.as_str());
        action.body.firstname = input.first_name.filter(|s| !s.trim().is_empty());
        action.body.name = input.last_name.filter(|s| !s.trim().is_empty());
        action.body.order_id = input.order_id.map(|i| i.to_string());
        client.execute(&action).await.map(Into::into)
    }
}

pub struct SetUserOfferStateTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferStateInput {
    /// The member's e-mail address.
    pub email: Email,
    /// Id of the offer the member holds.
    pub offer_id: Id,
    /// "inactive" revokes access and keeps course progress (reversible); "active" restores access; "remove" takes the offer away completely and PERMANENTLY DELETES the member's progress in its courses.
    pub state: HoldingState,
}

impl Tool for SetUserOfferStateTool {
    type Input = OfferStateInput;
    type Output = UserChange;
    const NAME: &'static str = "set_user_offer_state";
    const TITLE: &'static str = "Revoke, restore or remove an offer";
    const DESCRIPTION: &'static str = paced!(
        "Change one member's access to one offer. state=inactive revokes access but keeps their course progress, so it can be restored later with state=active. state=remove deletes the holding and permanently deletes the member's progress in that offer's courses; it cannot be undone, so prefer inactive unless deletion is explicitly wanted. Fails with not_found if the member or holding does not exist. Returns the member."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::NamesOffer {
        argument: "offer_id",
    };

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let action = SetUserOfferState::new(
            input.email.as_str(),
            input.offer_id.as_str(),
            input.state.to_active(),
        );
        client.execute(&action).await.map(Into::into)
    }
}

pub struct SetOrderStateTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderStateInput {
    /// The member's e-mail address.
    pub email: Email,
    /// The order id given when the access was granted.
    pub order_id: Id,
    /// "inactive" revokes all access from this order and keeps progress (e.g. refund, chargeback); "active" restores it; "remove" deletes the order's holdings and PERMANENTLY DELETES the related progress.
    pub state: HoldingState,
}

impl Tool for SetOrderStateTool {
    type Input = OrderStateInput;
    type Output = UserChange;
    const NAME: &'static str = "set_order_state";
    const TITLE: &'static str = "Switch all access from one order";
    const DESCRIPTION: &'static str = paced!(
        "Switch every offer a member received through one purchase (order id) at once: use state=inactive on a refund or chargeback (progress is kept), state=active when a payment resumes, state=remove to delete the order's holdings together with the related course progress (irreversible). Fails with not_found if the member has no access from that order. Returns the member."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    };
    // An order may span offers outside the persona's; its holdings are not checked.
    const OFFER_SCOPE: OfferScope = OfferScope::Never;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let action = SetOrderState::new(
            input.email.as_str(),
            input.order_id.as_str(),
            input.state.to_active(),
        );
        client.execute(&action).await.map(Into::into)
    }
}

pub struct SetOfferExpirationTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpirationInput {
    /// The member's e-mail address.
    pub email: Email,
    /// Id of the offer the member holds.
    pub offer_id: Id,
    /// When access ends, ISO-8601 (e.g. 2026-12-31T23:59:59Z; a bare date means midnight UTC). Omit or null to remove the expiration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<IsoDateTime>,
}

impl Tool for SetOfferExpirationTool {
    type Input = ExpirationInput;
    type Output = UserChange;
    const NAME: &'static str = "set_offer_expiration";
    const TITLE: &'static str = "Set or clear an offer's end date";
    const DESCRIPTION: &'static str = paced!(
        "Set the date on which a member's access to one offer ends (fixed-term access, trials), or clear it by omitting expires_at. Once the date passes the offer counts as inactive; progress is kept. A date in the past ends access immediately. Fails with not_found if the member does not hold the offer. Returns the member."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::NamesOffer {
        argument: "offer_id",
    };

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let action = SetOfferExpiration::new(
            input.email.as_str(),
            input.offer_id.as_str(),
            input.expires_at.map(|t| t.0),
        );
        client.execute(&action).await.map(Into::into)
    }
}

pub struct DeleteUsersTool;
pub struct DeleteUsersPostTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteUsersInput {
    /// E-mail addresses of the members to delete (1 to 100).
    #[schemars(length(min = 1, max = 100))]
    pub emails: Vec<Email>,
}

/// What the delete did.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeleteUsersOutput {
    /// The API's answer (deleted e-mails and count, when it reports them).
    pub result: DeleteUsersResult,
    /// Requested e-mails that were not deleted because no such member exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_found: Option<Vec<String>>,
}

fn check_emails(input: &DeleteUsersInput) -> Result<(), ToolError> {
    match input.emails.len() {
        0 => Err(ToolError::invalid(
            "emails",
            "list at least one e-mail address",
        )),
        n if n > 100 => Err(ToolError::invalid(
            "emails",
            format!("at most 100 e-mail addresses per call, got {n}"),
        )),
        _ => Ok(()),
    }
}

fn delete_output(requested: &[Email], result: DeleteUsersResult) -> DeleteUsersOutput {
    let not_found = result.deleted.as_ref().map(|deleted| {
        requested
            .iter()
            .map(|e| e.as_str().to_lowercase())
            .filter(|e| !deleted.iter().any(|d| d.eq_ignore_ascii_case(e)))
            .collect()
    });
    DeleteUsersOutput { result, not_found }
}

const DELETE_DESCRIPTION: &str = paced!(
    "PERMANENTLY delete members of the school by e-mail, with all their data: access, course progress, exam results, custom properties. This cannot be undone; to take away access but keep the member use set_user_offer_state with state=inactive instead. Unknown or invalid e-mail addresses are ignored by Memberspot (reported here as not_found). Idempotent."
);

impl Tool for DeleteUsersTool {
    type Input = DeleteUsersInput;
    type Output = DeleteUsersOutput;
    const NAME: &'static str = "delete_users";
    const TITLE: &'static str = "Delete members";
    const DESCRIPTION: &'static str = DELETE_DESCRIPTION;
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    };
    // Deleting a member takes every offer they hold, not only the persona's.
    const OFFER_SCOPE: OfferScope = OfferScope::Never;

    fn check(input: &Self::Input) -> Result<(), ToolError> {
        check_emails(input)
    }

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let result = client
            .execute(&DeleteUsers::new(input.emails.iter().map(|e| e.as_str())))
            .await?;
        Ok(delete_output(&input.emails, result))
    }
}

impl Tool for DeleteUsersPostTool {
    type Input = DeleteUsersInput;
    type Output = DeleteUsersOutput;
    const NAME: &'static str = "delete_users_post";
    const TITLE: &'static str = "Delete members (POST variant)";
    const DESCRIPTION: &'static str = paced!(
        "Same as delete_users, sent as POST for integrations that cannot send a body with DELETE. PERMANENTLY deletes members by e-mail with all their data; cannot be undone. Unknown e-mails are ignored (reported as not_found). Idempotent."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    };
    // Deleting a member takes every offer they hold, not only the persona's.
    const OFFER_SCOPE: OfferScope = OfferScope::Never;

    fn check(input: &Self::Input) -> Result<(), ToolError> {
        check_emails(input)
    }

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let action = DeleteUsersPost(DeleteUsers::new(input.emails.iter().map(|e| e.as_str())));
        let result = client.execute(&action).await?;
        Ok(delete_output(&input.emails, result))
    }
}

pub struct CreateLoginTokenTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UidInput {
    /// The member's uid (from find_user_by_email or list_users), not the e-mail.
    pub uid: Id,
}

/// A passwordless login token.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct LoginTokenOutput {
    /// One-time token that logs the member in without a password.
    pub token: String,
    /// A link that logs the member in with the token, when Memberspot sends one. It
    /// carries the token: treat it like a password too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// Seconds until the token expires.
    pub expires_in_seconds: u32,
}

impl Tool for CreateLoginTokenTool {
    type Input = UidInput;
    type Output = LoginTokenOutput;
    const NAME: &'static str = "create_login_token";
    const TITLE: &'static str = "Create a login token";
    const DESCRIPTION: &'static str = paced!(
        "Create a one-time token that lets a member log in without a password, valid for one hour (e.g. for a support reply or an automated welcome link). Needs the member's uid, not the e-mail: use find_user_by_email first. Each call mints a new token; treat it like a password and send it only to the member. Fails with not_found for an unknown uid."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: false,
        idempotent: false,
        open_world: false,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::MemberHoldsOffer {
        argument: "uid",
        by: MemberKey::Uid,
    };
    // The login link carries the token.
    const SECRET_OUTPUT_FIELDS: &'static [&'static str] = &["token", "login_url"];

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let t = client
            .execute(&CreateLoginToken::new(input.uid.as_str()))
            .await?;
        Ok(LoginTokenOutput {
            token: t.token,
            login_url: t.login_url,
            expires_in_seconds: 3600,
        })
    }
}
