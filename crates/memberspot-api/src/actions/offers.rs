use memberspot_wire::{ListOf, Offer};
use reqwest::Method;

use super::{Action, Idempotency};

/// `GET /offers`: every offer of the school (not paginated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListOffers;

impl Action for ListOffers {
    type Output = ListOf<Offer>;
    const NAME: &'static str = "list_offers";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        "/offers".into()
    }
}
