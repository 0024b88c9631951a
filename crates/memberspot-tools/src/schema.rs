//! JSON Schemas that every major function-calling API accepts.
//!
//! schemars emits full JSON Schema 2020-12; OpenAI, Anthropic and Gemini
//! each reject some of it (`$ref`, `format` values, type arrays, `oneOf`,
//! `default`, `additionalProperties` on older Gemini). We inline every
//! reference and keep only the keywords all three understand.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

/// Keywords kept in input schemas.
pub const ALLOWED_SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
        })
        .into_generator()
}

/// The input schema of `T`, reduced to the portable subset.
pub fn input_schema_for<T: JsonSchema>() -> Value {
    let schema = generator().into_root_schema_for::<T>();
    let mut v = portable(schema.as_value());
    ensure_object(&mut v);
    v
}

/// The output schema of `T` (full JSON Schema, references inlined).
pub fn output_schema_for<T: JsonSchema>() -> Value {
    let mut v = generator().into_root_schema_for::<T>().to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    v
}

fn ensure_object(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), Value::String("object".into()));
        o.entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn portable(v: &Value) -> Value {
    let Some(o) = v.as_object() else {
        return v.clone();
    };
    // Option<T> becomes `anyOf: [T, {type: null}]`: keep T, with our description.
    if let Some(Value::Array(alts)) = o.get("anyOf").or_else(|| o.get("oneOf")) {
        let non_null: Vec<&Value> = alts
            .iter()
            .filter(|a| a.get("type") != Some(&Value::from("null")))
            .collect();
        if let [only] = non_null.as_slice() {
            let mut merged = only.as_object().cloned().unwrap_or_default();
            for (k, val) in o {
                if k != "anyOf" && k != "oneOf" {
                    merged.insert(k.clone(), val.clone());
                }
            }
            return portable(&Value::Object(merged));
        }
    }
    let mut out = Map::new();
    let mut notes: Vec<String> = Vec::new();
    for (k, val) in o {
        match k.as_str() {
            "type" => {
                // ["string","null"] -> "string": optional fields are simply not required.
                let t = match val {
                    Value::Array(ts) => ts
                        .iter()
                        .find(|t| t.as_str() != Some("null"))
                        .cloned()
                        .unwrap_or(Value::Null),
                    other => other.clone(),
                };
                out.insert(k.clone(), t);
            }
            "properties" => {
                let props = val
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(name, s)| (name.clone(), portable(s)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), portable(val));
            }
            "default" if !val.is_null() => notes.push(format!("Default: {val}.")),
            "format" if val.as_str() == Some("date-time") && !o.contains_key("description") => {
                notes.push("ISO-8601 date-time.".into())
            }
            "format" if val.as_str() == Some("email") && !o.contains_key("description") => {
                notes.push("An e-mail address.".into())
            }
            "enum" => {
                out.insert(
                    k.clone(),
                    Value::Array(
                        val.as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|x| !x.is_null())
                            .collect(),
                    ),
                );
            }
            key if ALLOWED_SCHEMA_KEYWORDS.contains(&key) => {
                out.insert(k.clone(), val.clone());
            }
            _ => {}
        }
    }
    if !notes.is_empty() {
        let desc = out
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        let joined = notes.join(" ");
        let desc = if desc.is_empty() {
            joined
        } else {
            format!("{desc} {joined}")
        };
        out.insert("description".into(), Value::String(desc));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(schemars::JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        /// A number.
        #[serde(default = "ten")]
        n: Option<u32>,
        inner: Inner,
    }
    #[derive(schemars::JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        when: Option<chrono::DateTime<chrono::Utc>>,
    }
    fn ten() -> Option<u32> {
        Some(10)
    }

    #[test]
    fn references_inlined_and_types_simplified() {
        let s = input_schema_for::<Sample>();
        assert_eq!(s["type"], json!("object"));
        assert_eq!(s["properties"]["n"]["type"], json!("integer"));
        assert!(
            s["properties"]["n"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("Default: 10"))
        );
        assert_eq!(
            s["properties"]["inner"]["properties"]["when"]["type"],
            json!("string")
        );
        assert!(!s.to_string().contains("$ref"));
        assert!(!s.to_string().contains("format"));
    }
}
