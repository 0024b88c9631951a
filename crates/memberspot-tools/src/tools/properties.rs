use memberspot_api::actions::{ListCustomUserProperties, SetCustomUserProperties};
use memberspot_api::{ApiError, Client};
use memberspot_wire::CustomUserProperty;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::offers::NoInput;
use super::{READ, UserChange};
use crate::inputs::{Email, Id};
use crate::{Annotations, MemberKey, OfferScope, Tool, ToolError};

pub struct ListCustomUserPropertiesTool;

/// The school's custom property definitions.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PropertiesOutput {
    pub properties: Vec<CustomUserProperty>,
}

impl Tool for ListCustomUserPropertiesTool {
    type Input = NoInput;
    type Output = PropertiesOutput;
    const NAME: &'static str = "list_custom_user_properties";
    const TITLE: &'static str = "List custom member properties";
    const DESCRIPTION: &'static str = paced!(
        "List the extra profile fields the school has defined for members (e.g. company, phone, newsletter consent) with their ids, names and types. Read-only; returns definitions, not values (values are on each member). Use it to find the ids for set_custom_user_properties."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, _: Self::Input) -> Result<Self::Output, ApiError> {
        Ok(PropertiesOutput {
            properties: client.execute(&ListCustomUserProperties).await?.0,
        })
    }
}

pub struct SetCustomUserPropertiesTool;

/// One value to set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PropertyValue {
    /// Id of the custom property (see list_custom_user_properties).
    pub id: Id,
    /// The new value, as text.
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPropertiesInput {
    /// The member's e-mail address.
    pub email: Email,
    /// Values to set; properties not listed keep their value.
    #[schemars(length(min = 1))]
    pub properties: Vec<PropertyValue>,
}

impl Tool for SetCustomUserPropertiesTool {
    type Input = SetPropertiesInput;
    type Output = UserChange;
    const NAME: &'static str = "set_custom_user_properties";
    const TITLE: &'static str = "Set custom member properties";
    const DESCRIPTION: &'static str = paced!(
        "Set values of custom profile fields on one member, e.g. company or CRM tags; fields not listed are left unchanged, listed ones are overwritten. Idempotent. Fails with not_found for an unknown member or property id. Returns the member."
    );
    const ANNOTATIONS: Annotations = Annotations {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    const OFFER_SCOPE: OfferScope = OfferScope::MemberHoldsOffer {
        argument: "email",
        by: MemberKey::Email,
    };

    fn check(input: &Self::Input) -> Result<(), ToolError> {
        if input.properties.is_empty() {
            return Err(ToolError::invalid(
                "properties",
                "list at least one property value",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in input.properties.iter().enumerate() {
            if !seen.insert(p.id.as_str()) {
                return Err(ToolError::invalid(
                    format!("properties[{i}].id"),
                    format!("property `{}` is listed twice", p.id),
                ));
            }
        }
        Ok(())
    }

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        let values = input
            .properties
            .into_iter()
            .map(|p| (p.id.to_string(), p.value));
        client
            .execute(&SetCustomUserProperties::new(input.email.as_str(), values))
            .await
            .map(Into::into)
    }
}
