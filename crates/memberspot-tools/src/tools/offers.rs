use memberspot_api::actions::ListOffers;
use memberspot_api::{ApiError, Client};
use memberspot_wire::Offer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::READ;
use crate::{Annotations, OfferScope, Tool};

pub struct ListOffersTool;

/// No arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// Every offer of the school.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct OffersOutput {
    pub offers: Vec<Offer>,
}

impl Tool for ListOffersTool {
    type Input = NoInput;
    type Output = OffersOutput;
    const NAME: &'static str = "list_offers";
    const TITLE: &'static str = "List offers";
    const DESCRIPTION: &'static str = paced!(
        "List every offer (a product or access bundle, German 'Zugang') of the school with its id, name, the course ids it unlocks, priority and last update. Read-only. Use it to find the offer_id needed by grant_user_offer_by_email and the other access tools."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, _: Self::Input) -> Result<Self::Output, ApiError> {
        Ok(OffersOutput {
            offers: client.execute(&ListOffers).await?.0,
        })
    }
}
