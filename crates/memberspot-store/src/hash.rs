//! The audit chain's hash.
//!
//! `hash = hex(sha256(prev_hash || "\n" || canonical_json))`, where `canonical_json` is the
//! compact JSON object of the record's fields except `seq` and `hash`, in this order:
//! `id, at, request_id, surface, connection, persona, end_user, prompt, tool, arguments,
//! outcome, response, error, upstream_status, latency_ms, prev_hash` (absent values are
//! `null`), then `oauth_client` only when the record has one (records from before it
//! existed hash as they always did). JSON values inside (`arguments`, `response`) are written with object keys sorted
//! bytewise at every level, so the hash does not depend on serde_json's `preserve_order`.
//! This is what `serde_json::to_string` of a struct with those fields in that order produces.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{AuditRecord, NewAuditRecord};

/// `prev_hash` of the very first record of a chain that was never purged.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Compact JSON with object keys sorted at every level. The audit log stores `arguments` and
/// `response` in exactly this form, which is also the form that is hashed.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, k);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        // Null, bool, number, string: serde_json's compact form is already canonical.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // Value's Display is serde_json's (infallible) compact writer with JSON escaping.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// The hashed fields of one record, with JSON values already in canonical text form.
/// Verification builds this straight from the stored columns, so it checks exactly the bytes
/// that were hashed (no lossy JSON round trip).
pub(crate) struct HashInput<'a> {
    pub id: &'a str,
    pub at: i64,
    pub request_id: &'a str,
    pub surface: &'a str,
    pub connection: Option<&'a str>,
    pub persona: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub tool: &'a str,
    pub arguments: &'a str,
    pub outcome: &'a str,
    pub response: Option<&'a str>,
    pub error: Option<&'a str>,
    pub upstream_status: Option<i64>,
    pub latency_ms: i64,
    pub prev_hash: &'a str,
    pub oauth_client: Option<&'a str>,
}

impl HashInput<'_> {
    pub(crate) fn canonical_json(&self) -> String {
        let mut out = String::with_capacity(256 + self.arguments.len());
        let mut first = true;
        let mut key = |out: &mut String, name: &str| {
            out.push(if first { '{' } else { ',' });
            first = false;
            push_json_str(out, name);
            out.push(':');
        };
        let opt_str = |out: &mut String, v: Option<&str>| match v {
            Some(s) => push_json_str(out, s),
            None => out.push_str("null"),
        };

        key(&mut out, "id");
        push_json_str(&mut out, self.id);
        key(&mut out, "at");
        out.push_str(&self.at.to_string());
        key(&mut out, "request_id");
        push_json_str(&mut out, self.request_id);
        key(&mut out, "surface");
        push_json_str(&mut out, self.surface);
        key(&mut out, "connection");
        opt_str(&mut out, self.connection);
        key(&mut out, "persona");
        opt_str(&mut out, self.persona);
        key(&mut out, "end_user");
        opt_str(&mut out, self.end_user);
        key(&mut out, "prompt");
        opt_str(&mut out, self.prompt);
        key(&mut out, "tool");
        push_json_str(&mut out, self.tool);
        key(&mut out, "arguments");
        out.push_str(self.arguments);
        key(&mut out, "outcome");
        push_json_str(&mut out, self.outcome);
        key(&mut out, "response");
        out.push_str(self.response.unwrap_or("null"));
        key(&mut out, "error");
        opt_str(&mut out, self.error);
        key(&mut out, "upstream_status");
        match self.upstream_status {
            Some(s) => out.push_str(&s.to_string()),
            None => out.push_str("null"),
        }
        key(&mut out, "latency_ms");
        out.push_str(&self.latency_ms.to_string());
        key(&mut out, "prev_hash");
        push_json_str(&mut out, self.prev_hash);
        if let Some(client) = self.oauth_client {
            key(&mut out, "oauth_client");
            push_json_str(&mut out, client);
        }
        out.push('}');
        out
    }

    /// The record's hash, chained after `prev_hash` (normally `self.prev_hash`).
    pub(crate) fn hash_after(&self, prev_hash: &str) -> String {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(self.canonical_json().as_bytes());
        hex::encode(h.finalize())
    }
}

/// Recomputes the hash of `r` as if chained after `prev_hash` (normally `r.prev_hash`; the
/// canonical JSON also contains the prev hash, and this function puts `prev_hash` there).
///
/// For records read back from the store this equals `r.hash` unless the record was altered.
/// (One theoretical exception: a float in `arguments`/`response` that serde_json does not
/// parse back bit-exactly; [`crate::Store::verify_audit`] hashes the stored text and is not
/// affected.)
pub fn audit_hash(prev_hash: &str, r: &AuditRecord) -> String {
    let fields = NewAuditRecord {
        at: r.at,
        request_id: r.request_id.clone(),
        surface: r.surface,
        connection: r.connection.clone(),
        persona: r.persona.clone(),
        end_user: r.end_user.clone(),
        prompt: r.prompt.clone(),
        tool: r.tool.clone(),
        arguments: r.arguments.clone(),
        outcome: r.outcome,
        response: r.response.clone(),
        error: r.error.clone(),
        upstream_status: r.upstream_status,
        latency_ms: r.latency_ms,
        oauth_client: r.oauth_client.clone(),
    };
    let arguments = canonical_json(&r.arguments);
    let response = r.response.as_ref().map(canonical_json);
    // The store refuses latencies above i64::MAX, so saturating only affects records that
    // could never have been stored.
    let latency_ms = i64::try_from(r.latency_ms).unwrap_or(i64::MAX);
    record_hash(
        &r.id,
        &fields,
        &arguments,
        response.as_deref(),
        latency_ms,
        prev_hash,
    )
}

/// The hash of `r`, stored as `id` after `prev_hash`, with its JSON values already in
/// canonical text form (as stored).
pub(crate) fn record_hash(
    id: &str,
    r: &NewAuditRecord,
    arguments: &str,
    response: Option<&str>,
    latency_ms: i64,
    prev_hash: &str,
) -> String {
    HashInput {
        id,
        at: r.at,
        request_id: &r.request_id,
        surface: r.surface.as_str(),
        connection: r.connection.as_deref(),
        persona: r.persona.as_deref(),
        end_user: r.end_user.as_deref(),
        prompt: r.prompt.as_deref(),
        tool: &r.tool,
        arguments,
        outcome: r.outcome.as_str(),
        response,
        error: r.error.as_deref(),
        upstream_status: r.upstream_status.map(i64::from),
        latency_ms,
        prev_hash,
        oauth_client: r.oauth_client.as_deref(),
    }
    .hash_after(prev_hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    #[test]
    fn the_oauth_client_is_hashed_only_when_present() {
        let mut input = HashInput {
            id: "0190-id",
            at: 1,
            request_id: "req",
            surface: "mcp-http",
            connection: None,
            persona: Some("claude"),
            end_user: None,
            prompt: None,
            tool: "list_offers",
            arguments: "{}",
            outcome: "ok",
            response: None,
            error: None,
            upstream_status: None,
            latency_ms: 1,
            prev_hash: ZERO_HASH,
            oauth_client: None,
        };
        let without = input.canonical_json();
        assert!(without.ends_with(&format!("\"prev_hash\":\"{ZERO_HASH}\"}}")));
        let before = input.hash_after(ZERO_HASH);
        input.oauth_client = Some("Claude (c1)");
        assert!(
            input
                .canonical_json()
                .ends_with(",\"oauth_client\":\"Claude (c1)\"}")
        );
        // A record that names its client cannot be passed off as one that does not.
        assert_ne!(input.hash_after(ZERO_HASH), before);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": "é\"\n"}], "m": 1.5}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"m":1.5,"z":[3,{"x":"é\"\n","y":null}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_record_json_equals_serde_struct_in_declaration_order() {
        #[derive(Serialize)]
        struct Canon<'a> {
            id: &'a str,
            at: i64,
            request_id: &'a str,
            surface: &'a str,
            connection: Option<&'a str>,
            persona: Option<&'a str>,
            end_user: Option<&'a str>,
            prompt: Option<&'a str>,
            tool: &'a str,
            arguments: Value,
            outcome: &'a str,
            response: Option<Value>,
            error: Option<&'a str>,
            upstream_status: Option<u16>,
            latency_ms: u64,
            prev_hash: &'a str,
        }
        // Keys already in sorted order, so the comparison holds even with `preserve_order`.
        let args = json!({"limit": 5, "offer_id": "o1"});
        let input = HashInput {
            id: "0190-id",
            at: 1_700_000_000_000,
            request_id: "req",
            surface: "mcp",
            connection: Some("acme"),
            persona: None,
            end_user: Some("u@example.com"),
            prompt: None,
            tool: "list_users",
            arguments: &canonical_json(&args),
            outcome: "ok",
            response: None,
            error: None,
            upstream_status: Some(200),
            latency_ms: 12,
            prev_hash: ZERO_HASH,
            oauth_client: None,
        };
        let via_serde = serde_json::to_string(&Canon {
            id: "0190-id",
            at: 1_700_000_000_000,
            request_id: "req",
            surface: "mcp",
            connection: Some("acme"),
            persona: None,
            end_user: Some("u@example.com"),
            prompt: None,
            tool: "list_users",
            arguments: args,
            outcome: "ok",
            response: None,
            error: None,
            upstream_status: Some(200),
            latency_ms: 12,
            prev_hash: ZERO_HASH,
        })
        .unwrap();
        assert_eq!(input.canonical_json(), via_serde);
    }
}
