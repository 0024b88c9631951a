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
        // The kind, not the value: an error message must not carry the school's data.
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {}",
            crate::shape::kind_of(&other)
        ))),
    }
}

/// Decodes an optional id that may arrive as a number; any other type is absent.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// For each field of `spec` that has more than one of its names in `map`, keeps the
/// first present (the canonical name first, then the aliases in order) and takes the
/// others out, to be kept as unknown fields.
pub(crate) fn take_second_names(
    map: &mut serde_json::Map<String, Value>,
    spec: &crate::shape::Expect,
) -> Vec<(String, Value)> {
    let crate::shape::Expect::Object(fields) = spec else {
        return Vec::new();
    };
    let mut taken = Vec::new();
    for field in fields.iter().filter(|f| !f.aliases.is_empty()) {
        let mut names = std::iter::once(field.name)
            .chain(field.aliases.iter().copied())
            .filter(|n| map.contains_key(*n));
        if names.next().is_none() {
            continue;
        }
        for name in names.collect::<Vec<_>>() {
            if let Some(v) = map.remove(name) {
                taken.push((name.to_string(), v));
            }
        }
    }
    taken
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
                "expected a post id, got {}",
                crate::shape::kind_of(&other)
            ))),
        }
    }
}

/// The posts (lessons) of one course in a progress answer: listed by id, or only
/// counted. The progress endpoints list ids; the progress embedded in a member has been
/// reported with numbers (`"completedPosts": 3`). A count stays a count: it never
/// becomes an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Posts {
    /// The posts, by id.
    Ids(Vec<PostRef>),
    /// How many posts; which ones is not said.
    Count(u64),
}

impl Default for Posts {
    fn default() -> Self {
        Posts::Ids(Vec::new())
    }
}

impl Posts {
    /// How many posts, whichever form they came in.
    pub fn count(&self) -> u64 {
        match self {
            Posts::Ids(ids) => ids.len() as u64,
            Posts::Count(n) => *n,
        }
    }

    /// The ids, when the answer listed them.
    pub fn ids(&self) -> Option<&[PostRef]> {
        match self {
            Posts::Ids(ids) => Some(ids),
            Posts::Count(_) => None,
        }
    }

    /// The ids; none when the answer only counted them.
    pub fn into_ids(self) -> Vec<PostRef> {
        match self {
            Posts::Ids(ids) => ids,
            Posts::Count(_) => Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Posts {
    /// A list (elements that are not posts are skipped), a whole non-negative number
    /// (also as text), anything else as an empty list, like other odd optional fields.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let count = |n: &serde_json::Number| {
            n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            })
        };
        Ok(match Option::<Value>::deserialize(d)? {
            Some(Value::Array(items)) => Posts::Ids(
                items
                    .into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect(),
            ),
            Some(Value::Number(n)) => count(&n).map_or_else(Posts::default, Posts::Count),
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map_or_else(|_| Posts::default(), Posts::Count),
            _ => Posts::default(),
        })
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
