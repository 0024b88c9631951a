//! Request bodies and query strings, with the API's own field names.
//!
//! These types serialise exactly what goes on the wire; note the odd names
//! the API uses (`grantOffer` carries the offer id, `name` is the last name).
//! Optional fields are omitted when `None`, which matters: an omitted
//! `active` removes a holding, it does not leave it unchanged.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Query of `GET /v1/users/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUsersQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_loaded_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Query of the paginated progress list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_loaded_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_length: Option<u32>,
}

/// Body of `POST /v1/users/grant-user-offer-by-mail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantUserOfferBody {
    pub email: String,
    /// The offer id.
    pub grant_offer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// Body of `POST /v1/users/set-offer-state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetOfferStateBody {
    pub email: String,
    pub offer_id: String,
    /// `Some(false)` revokes (progress kept), `Some(true)` restores,
    /// `None` removes the holding and its progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Body of `POST /v1/users/set-order-state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetOrderStateBody {
    pub email: String,
    pub order_id: String,
    /// As in [`SetOfferStateBody::active`], for every holding of the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Body of `POST /v1/users/set-offer-expires`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetOfferExpiresBody {
    pub email: String,
    pub offer_id: String,
    /// `None` clears the expiration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// Body of `DELETE /v1/users/delete-users` and `POST /v1/users/delete-users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteUsersBody {
    pub emails: Vec<String>,
}

/// One value in [`SetCustomUserPropertiesBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomPropertyValue {
    /// The property id; the sandbox also accepts `propertyId`.
    #[serde(alias = "propertyId")]
    pub id: String,
    pub value: String,
}

/// Body of `POST /v1/users/set-custom-user-properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetCustomUserPropertiesBody {
    pub email: String,
    pub properties: Vec<CustomPropertyValue>,
}

/// Body of `POST /v1/chapters/chapter-access/enable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnableChapterAccessBody {
    pub email: String,
    pub course_id: String,
    pub chapter_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_use_the_api_field_names() {
        let grant = GrantUserOfferBody {
            email: "a@b.de".into(),
            grant_offer: "o1".into(),
            firstname: None,
            name: Some("Last".into()),
            order_id: Some("ord".into()),
        };
        assert_eq!(
            serde_json::to_value(grant).expect("encodes"),
            json!({"email": "a@b.de", "grantOffer": "o1", "name": "Last", "orderId": "ord"})
        );
        let remove = SetOfferStateBody {
            email: "a@b.de".into(),
            offer_id: "o".into(),
            active: None,
        };
        assert_eq!(
            serde_json::to_value(remove).expect("encodes"),
            json!({"email": "a@b.de", "offerId": "o"}),
            "an omitted active must stay omitted, not null"
        );
    }
}
