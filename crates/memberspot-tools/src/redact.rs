//! Secrets in tool results (a login token) go to the caller, never into records: the
//! audit log is append-only and hash-chained, so a secret written there could never be
//! removed. Records keep a fingerprint instead — a short prefix and a hash — enough to
//! tell which token a member was sent without being able to use it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Characters of a secret kept in its fingerprint (only for secrets of 16 or more).
const PREFIX_CHARS: usize = 4;

/// The fingerprint recorded in place of a secret: `abcd… (redacted, sha256:0123456789abcdef)`.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hash = hex::encode(&digest[..8]);
    let chars = secret.chars().count();
    let prefix: String = if chars >= 4 * PREFIX_CHARS {
        secret.chars().take(PREFIX_CHARS).collect()
    } else {
        String::new()
    };
    format!("{prefix}… (redacted, sha256:{hash})")
}

/// `value` with every field at one of `paths` (dotted; arrays are entered element by
/// element) replaced by its fingerprint.
pub fn redact_fields(value: &Value, paths: &[&str]) -> Value {
    let mut out = value.clone();
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        redact_at(&mut out, &segments);
    }
    out
}

/// The secret texts at `paths` in `value` (to find copies of them elsewhere).
pub fn secrets_at(value: &Value, paths: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        collect_at(value, &segments, &mut found);
    }
    found.retain(|s| !s.is_empty());
    found
}

/// Secrets shorter than this are not searched for as copies (they would match too much).
const MIN_COPY_LEN: usize = 8;

/// `value` with every copy of one of `secrets` inside its texts (a token rendered into
/// a message, a URL, a body) replaced by the secret's fingerprint.
pub fn redact_copies(value: &Value, secrets: &[String]) -> Value {
    let secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= MIN_COPY_LEN).collect();
    if secrets.is_empty() {
        return value.clone();
    }
    let mut out = value.clone();
    replace_copies(&mut out, &secrets);
    out
}

/// `text` with every copy of one of `secrets` replaced by its fingerprint.
pub fn redact_copies_in_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= MIN_COPY_LEN) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), &fingerprint(s));
        }
    }
    out
}

fn replace_copies(value: &mut Value, secrets: &[&String]) {
    match value {
        Value::String(text) => {
            for s in secrets {
                if text.contains(s.as_str()) {
                    *text = text.replace(s.as_str(), &fingerprint(s));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_copies(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_copies(v, secrets)),
        _ => {}
    }
}

fn redact_at(value: &mut Value, path: &[&str]) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| redact_at(v, path)),
        Value::Object(map) => {
            let Some((first, rest)) = path.split_first() else {
                return;
            };
            let Some(v) = map.get_mut(*first) else {
                return;
            };
            if rest.is_empty() {
                if !v.is_null() {
                    *v = Value::String(fingerprint(&secret_text(v)));
                }
            } else {
                redact_at(v, rest);
            }
        }
        _ => {}
    }
}

fn collect_at(value: &Value, path: &[&str], found: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_at(v, path, found)),
        Value::Object(map) => {
            let Some((first, rest)) = path.split_first() else {
                return;
            };
            let Some(v) = map.get(*first) else {
                return;
            };
            if rest.is_empty() {
                if !v.is_null() {
                    found.push(secret_text(v));
                }
            } else {
                collect_at(v, rest, found);
            }
        }
        _ => {}
    }
}

fn secret_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_become_a_prefix_and_a_hash() {
        let token = "Zq8r2Lk1Wm4Np7Xt0Bv3Cy6Hd9Fj5Gs2Ke8Ra1Tu4Io7Pw0";
        let result = json!({"token": token, "expires_in_seconds": 3600});
        let recorded = redact_fields(&result, &["token"]);
        let text = recorded["token"].as_str().expect("text");
        assert!(!recorded.to_string().contains(token));
        assert!(text.starts_with("Zq8r… (redacted, sha256:"), "{text}");
        assert_eq!(
            text,
            fingerprint(token),
            "the same token, the same fingerprint"
        );
        assert_ne!(fingerprint(token), fingerprint(&token.replace('Z', "Y")));
        assert_eq!(recorded["expires_in_seconds"], 3600);
        assert_eq!(result["token"], token, "the caller's value is untouched");
        assert_eq!(secrets_at(&result, &["token"]), [token]);
    }

    #[test]
    fn copies_inside_other_texts_are_replaced() {
        let token = "Zq8r2Lk1Wm4Np7Xt0Bv3Cy6Hd9Fj5Gs2Ke8Ra1Tu4Io7Pw0".to_string();
        let rendered =
            json!({"url": format!("https://school.example/login?token={token}"), "n": 1});
        let r = redact_copies(&rendered, std::slice::from_ref(&token));
        assert!(!r.to_string().contains(&token), "{r}");
        assert!(
            r["url"]
                .as_str()
                .is_some_and(|u| u.contains(&fingerprint(&token)))
        );
        assert_eq!(
            redact_copies_in_text(&format!("failed: {token}"), std::slice::from_ref(&token)),
            format!("failed: {}", fingerprint(&token))
        );
        // Short values are not treated as secrets to search for.
        assert_eq!(
            redact_copies(&json!("abc"), &["abc".to_string()]),
            json!("abc")
        );
    }

    #[test]
    fn nested_paths_arrays_short_and_odd_values() {
        let v = json!({"items": [{"a": {"key": "long-enough-secret-value"}}, {"a": {"key": 12345}}], "key": "x"});
        let r = redact_fields(&v, &["items.a.key"]);
        assert!(!r.to_string().contains("long-enough-secret-value"));
        assert!(!r.to_string().contains("12345"));
        assert_eq!(r["key"], "x", "only the declared path");
        // Too short to keep a prefix of.
        assert!(fingerprint("short").starts_with("… (redacted"));
        // Paths that are absent or null change nothing.
        assert_eq!(
            redact_fields(&json!({"b": null}), &["b", "c.d"]),
            json!({"b": null})
        );
        assert_eq!(
            secrets_at(&v, &["items.a.key"]),
            ["long-enough-secret-value", "12345"]
        );
    }
}
