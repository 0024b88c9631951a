use memberspot_wire::{
    CustomPropertyValue, CustomUserProperty, ListOf, SetCustomUserPropertiesBody,
};
use reqwest::Method;

use super::{Action, Base, Idempotency, UserUpdate, to_body};

/// `GET /custom-user-properties/list`: the school's property definitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListCustomUserProperties;

impl Action for ListCustomUserProperties {
    type Output = ListOf<CustomUserProperty>;
    const NAME: &'static str = "list_custom_user_properties";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        "/custom-user-properties/list".into()
    }
}

/// `POST /users/set-custom-user-properties`: sets the listed values on one
/// member; properties not listed are left alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SetCustomUserProperties {
    pub body: SetCustomUserPropertiesBody,
}

impl SetCustomUserProperties {
    pub fn new<I, K, V>(email: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let properties = values
            .into_iter()
            .map(|(id, value)| CustomPropertyValue {
                id: id.into(),
                value: value.into(),
            })
            .collect();
        Self {
            body: SetCustomUserPropertiesBody {
                email: email.into(),
                properties,
            },
        }
    }
}

impl Action for SetCustomUserProperties {
    type Output = UserUpdate;
    const NAME: &'static str = "set_custom_user_properties";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/set-custom-user-properties".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `GET /api-auth` at the host root: succeeds when the key is valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckApiKey;

impl Action for CheckApiKey {
    type Output = serde_json::Value;
    const NAME: &'static str = "check_api_key";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;
    const BASE: Base = Base::Root;

    fn path(&self) -> String {
        "/api-auth".into()
    }
}
