//! Argument types that parse instead of validate: a value of these types is
//! already known to be well-formed, and a bad one fails decoding with a
//! message naming the field (via `serde_path_to_error`).

use std::borrow::Cow;

use memberspot_wire::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// An e-mail address, trimmed, with plausible syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            });
        if valid {
            Ok(Email(s.to_string()))
        } else {
            Err(format!("`{s}` is not a valid e-mail address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The argument `name` of a call's JSON arguments, read as the tool reads it.
    pub fn from_argument(args: &serde_json::Value, name: &str) -> Option<Self> {
        Email::deserialize(args.get(name)?).ok()
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Email {
    fn schema_name() -> Cow<'static, str> {
        "Email".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "email", "minLength": 3, "maxLength": 254 })
    }
}

/// A non-empty id (offer, course, chapter, exam, property, user).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            Err("must not be empty".into())
        } else if s.chars().any(char::is_control) {
            Err("must not contain control characters".into())
        } else {
            Ok(Id(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The argument `name` of a call's JSON arguments, read as the tool reads it.
    pub fn from_argument(args: &serde_json::Value, name: &str) -> Option<Self> {
        Id::deserialize(args.get(name)?).ok()
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Ids are strings, but a model may send a numeric id unquoted.
        let v = serde_json::Value::deserialize(d)?;
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected an id string, got {other}"
                )));
            }
        };
        Id::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Id {
    fn schema_name() -> Cow<'static, str> {
        "Id".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1 })
    }
}

/// Page size for list calls: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PageLength(u32);

impl PageLength {
    pub const MAX: u32 = 100;
    /// The largest page: a whole list in the fewest calls.
    pub const LARGEST: PageLength = PageLength(Self::MAX);

    /// `n` when it is a page length the API accepts (1 to [`PageLength::MAX`]).
    pub const fn new(n: u32) -> Option<Self> {
        if n >= 1 && n <= Self::MAX {
            Some(PageLength(n))
        } else {
            None
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PageLength {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if (1..=i64::from(Self::MAX)).contains(&n) {
            Ok(PageLength(n as u32))
        } else {
            Err(serde::de::Error::custom(format!(
                "must be between 1 and {}, got {n}",
                Self::MAX
            )))
        }
    }
}

impl JsonSchema for PageLength {
    fn schema_name() -> Cow<'static, str> {
        "PageLength".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "maximum": 100 })
    }
}

/// An ISO-8601 date-time or date (a bare date means midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IsoDateTime(pub Timestamp);

impl<'de> Deserialize<'de> for IsoDateTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map(IsoDateTime).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not an ISO-8601 date-time (e.g. 2026-12-31T23:59:59Z or 2026-12-31)"
            ))
        })
    }
}

impl JsonSchema for IsoDateTime {
    fn schema_name() -> Cow<'static, str> {
        "IsoDateTime".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// The state to put a holding (or all holdings of an order) into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HoldingState {
    Active,
    Inactive,
    Remove,
}

impl HoldingState {
    /// The API's encoding: `active: true`, `active: false`, `active` omitted.
    pub fn to_active(self) -> Option<bool> {
        match self {
            HoldingState::Active => Some(true),
            HoldingState::Inactive => Some(false),
            HoldingState::Remove => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.de", " Anna.Schmidt+kurs@example.co.uk ", "x@y.z"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.de", "a@@b.de", "a b@c.de", "a@.de", "a@b.de.", "a@b..de",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_pages() {
        assert!(Id::parse("  ").is_err());
        assert_eq!(Id::parse(" o1 ").map(|i| i.0), Ok("o1".to_string()));
        assert!(serde_json::from_str::<PageLength>("0").is_err());
        assert!(serde_json::from_str::<PageLength>("101").is_err());
        assert_eq!(
            serde_json::from_str::<PageLength>("100")
                .map(|p| p.get())
                .ok(),
            Some(100)
        );
        assert!(serde_json::from_str::<IsoDateTime>("\"next week\"").is_err());
        assert!(serde_json::from_str::<IsoDateTime>("\"2026-12-31\"").is_ok());
    }
}
