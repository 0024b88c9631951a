use std::future::Future;

use memberspot_api::{ApiError, Client};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ToolError;

/// Behaviour hints, true to the semantics (they drive persona scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Annotations {
    /// Changes nothing in the school.
    pub read_only: bool,
    /// May delete data that no other call can bring back (members, progress).
    pub destructive: bool,
    /// Repeating the call with the same arguments has no further effect.
    pub idempotent: bool,
    /// Reaches beyond the school's data (e.g. may e-mail a member).
    pub open_world: bool,
}

/// Coarse permission class of a tool, used by persona scopes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    Read,
    Write,
    Destructive,
}

impl Annotations {
    pub const fn class(&self) -> ToolClass {
        if self.read_only {
            ToolClass::Read
        } else if self.destructive {
            ToolClass::Destructive
        } else {
            ToolClass::Write
        }
    }
}

/// How the gateway proves that a call stays within the offers a persona is restricted
/// to (`personas create --offers`). Every tool declares one; a call that cannot be shown
/// to stay within the offers is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum OfferScope {
    /// Changes nothing: an offer restriction limits changes, not reads.
    NotApplicable,
    /// Allowed when the offer in this argument is one of the persona's.
    NamesOffer { argument: &'static str },
    /// Allowed when the course in this argument is unlocked by one of the persona's
    /// offers (looked up with `list_offers`).
    CourseOfOffers { argument: &'static str },
    /// Allowed when the member in this argument currently holds (active, not expired)
    /// one of the persona's offers (looked up in the school).
    MemberHoldsOffer {
        argument: &'static str,
        by: MemberKey,
    },
    /// Cannot be limited to some offers (deleting members, switching a whole order):
    /// always refused under an offer restriction.
    Never,
}

/// How an argument names a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKey {
    Email,
    Uid,
}

/// Everything a surface needs to present a tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDescriptor {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub annotations: Annotations,
    pub class: ToolClass,
    pub offer_scope: OfferScope,
    /// Output fields (dotted paths) that hold secrets; records keep only a fingerprint.
    pub secret_output_fields: &'static [&'static str],
}

/// A typed tool. Implementations live in [`crate::tools`], one per action.
pub trait Tool: Send + Sync + 'static {
    /// Arguments; unknown fields are rejected, field docs become the schema. Serialize
    /// gives the JSON arguments of a typed call (`Hub::run`), absent options left out, so
    /// it is checked and recorded exactly like the same call made with JSON.
    type Input: Serialize + DeserializeOwned + JsonSchema + Send;
    /// Result; always a JSON object (MCP structured content requires one). Deserialize
    /// reads it back from the JSON result for a typed call.
    type Output: Serialize + DeserializeOwned + JsonSchema + Send;

    const NAME: &'static str;
    const TITLE: &'static str;
    /// Written for a language model: what, when, side effects, what it destroys, limits.
    const DESCRIPTION: &'static str;
    const ANNOTATIONS: Annotations;
    /// How a call is kept within a persona's offers; required, so that no tool is
    /// unrestricted by omission.
    const OFFER_SCOPE: OfferScope;
    /// Output fields that hold secrets (e.g. a login token), as dotted paths into the
    /// result. The caller gets them; the audit log and run history keep only a prefix
    /// and a hash (see [`crate::redact`]).
    const SECRET_OUTPUT_FIELDS: &'static [&'static str] = &[];

    /// Checks that span several fields, after decoding.
    fn check(_input: &Self::Input) -> Result<(), ToolError> {
        Ok(())
    }

    fn run(
        client: &Client,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;
}
