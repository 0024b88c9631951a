//! `grant_offer_bulk`: one offer to many e-mail addresses, one grant at a time within the
//! school's rate limit, with a result per address so that one failure loses nothing.

use std::collections::HashSet;

use memberspot_api::progress::{self, Progress};
use memberspot_api::{ApiError, Client};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{GrantInput, GrantUserOfferByEmailTool};
use crate::inputs::{Email, Id};
use crate::{Annotations, OfferScope, Tool, ToolError};

/// Addresses one call may carry: its audit record keeps every item's result.
pub const BULK_GRANT_MAX: usize = 50;

pub struct GrantOfferBulkTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkGrantInput {
    /// E-mail addresses to grant the offer to (1 to 50); new members are created for unknown ones. An address listed twice is granted once.
    #[schemars(length(min = 1, max = 50))]
    pub emails: Vec<Email>,
    /// Id of the offer to grant (see list_offers).
    pub offer_id: Id,
}

/// What happened to one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BulkItemStatus {
    /// The member holds the offer now.
    Granted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
    },
    /// Memberspot (or the network) refused; the other addresses are unaffected.
    Failed { code: String, message: String },
    /// Listed earlier in the same call; granted (or not) there.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BulkItem {
    pub email: String,
    #[serde(flatten)]
    pub status: BulkItemStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BulkGrantOutput {
    pub offer_id: String,
    /// Addresses that hold the offer now.
    pub granted: u32,
    /// Addresses whose grant failed (see their `message`).
    pub failed: u32,
    /// One entry per address, in the order given.
    pub items: Vec<BulkItem>,
}

impl Tool for GrantOfferBulkTool {
    type Input = BulkGrantInput;
    type Output = BulkGrantOutput;
    const NAME: &'static str = "grant_offer_bulk";
    const TITLE: &'static str = "Grant an offer to many people";
    const DESCRIPTION: &'static str = paced!(
        "Give up to 50 people (by e-mail) access to one offer, one grant after the other, like grant_user_offer_by_email for each address; unknown addresses become new members (Memberspot may send them a welcome e-mail). Returns a result per address (granted, failed with the reason, or duplicate); a failure does not stop the others, so retry only the failed ones. Idempotent: addresses that already hold the offer keep it. Takes about a quarter of a second per address."
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

    fn check(input: &Self::Input) -> Result<(), ToolError> {
        match input.emails.len() {
            0 => Err(ToolError::invalid(
                "emails",
                "list at least one e-mail address",
            )),
            n if n > BULK_GRANT_MAX => Err(ToolError::invalid(
                "emails",
                format!("at most {BULK_GRANT_MAX} addresses per call, got {n}; split the list"),
            )),
            _ => Ok(()),
        }
    }

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let total = input.emails.len() as u64;
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(input.emails.len());
        for (i, email) in input.emails.into_iter().enumerate() {
            let status = if !seen.insert(email.as_str().to_lowercase()) {
                BulkItemStatus::Duplicate
            } else {
                grant_one(client, email.clone(), input.offer_id.clone()).await
            };
            progress::report(Progress::Step {
                done: i as u64 + 1,
                total,
                message: format!("{email}: {}", status_word(&status)),
            });
            items.push(BulkItem {
                email: email.to_string(),
                status,
            });
        }
        let count =
            |f: fn(&BulkItemStatus) -> bool| items.iter().filter(|i| f(&i.status)).count() as u32;
        Ok(BulkGrantOutput {
            offer_id: input.offer_id.to_string(),
            granted: count(|s| matches!(s, BulkItemStatus::Granted { .. })),
            failed: count(|s| matches!(s, BulkItemStatus::Failed { .. })),
            items,
        })
    }
}

async fn grant_one(client: &Client, email: Email, offer_id: Id) -> BulkItemStatus {
    let input = GrantInput {
        email,
        offer_id,
        first_name: None,
        last_name: None,
        order_id: None,
    };
    match GrantUserOfferByEmailTool::run(client, input).await {
        Ok(change) => BulkItemStatus::Granted {
            uid: change.user.map(|u| u.uid),
        },
        Err(e) => BulkItemStatus::Failed {
            code: e.code().to_string(),
            message: e.to_string(),
        },
    }
}

fn status_word(s: &BulkItemStatus) -> &'static str {
    match s {
        BulkItemStatus::Granted { .. } => "granted",
        BulkItemStatus::Failed { .. } => "failed",
        BulkItemStatus::Duplicate => "duplicate",
    }
}
