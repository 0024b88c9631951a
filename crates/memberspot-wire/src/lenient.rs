//! Decoding helpers for fields whose shape public material disagrees on.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Decodes an optional field, treating a value of the wrong type as absent
/// so that one odd field never fails a whole page.
pub(crate) fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Decodes a list, skipping elements that do not decode and treating a
/// non-list as empty.
pub(crate) fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<Value>::deserialize(d)? {
        Some(Value::Array(items)) => Ok(items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// Decodes a string that may arrive as a number (ids are sometimes numeric).
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// A reference to a post (lesson) in a progress list: the API may send bare
/// ids or objects with an `id`/`postId`; either way we keep the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
#[schemars(transparent)]
pub struct PostRef(pub String);

impl Serialize for PostRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PostRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(PostRef(s)),
            Value::Number(n) => Ok(PostRef(n.to_string())),
            Value::Object(o) => o
                .get("id")
                .or_else(|| o.get("postId"))
                .and_then(|v| v.as_str())
                .map(|s| PostRef(s.to_string()))
                .ok_or_else(|| serde::de::Error::custom("post object without id")),
            other => Err(serde::de::Error::custom(format!(
                "expected a post id, got {other}"
            ))),
        }
    }
}

/// NestJS answers `message` as a string or, for validation errors, as a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn join(&self) -> String {
        match self {
            OneOrMany::One(s) => s.clone(),
            OneOrMany::Many(v) => v.join("; "),
        }
    }
}
