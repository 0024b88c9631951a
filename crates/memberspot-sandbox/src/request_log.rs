//! Ring buffer of the last API requests, for tests that assert on what a
//! client actually sent. Headers are never recorded, so the API key is not
//! either; should a client put the key into a path, query or body, it is
//! redacted there too.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::Value;

pub const CAPACITY: usize = 1000;
const REDACTED: &str = "[REDACTED]";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    /// As received, percent-encoding preserved.
    pub path: String,
    pub query: Option<String>,
    /// Parsed JSON, else the raw text, else null.
    pub body: Value,
    pub status: u16,
}

#[derive(Debug, Default)]
pub struct RequestLog {
    entries: VecDeque<LoggedRequest>,
}

fn redact(s: &str, secret: &str) -> String {
    if secret.is_empty() {
        s.to_string()
    } else {
        s.replace(secret, REDACTED)
    }
}

fn redact_value(v: Value, secret: &str) -> Value {
    match v {
        Value::String(s) => Value::String(redact(&s, secret)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|i| redact_value(i, secret)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (redact(&k, secret), redact_value(v, secret)))
                .collect(),
        ),
        other => other,
    }
}

/// The logged form of a body.
pub fn body_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl RequestLog {
    pub fn push(&mut self, entry: LoggedRequest, secret: &str) {
        let entry = LoggedRequest {
            path: redact(&entry.path, secret),
            query: entry.query.map(|q| redact(&q, secret)),
            body: redact_value(entry.body, secret),
            ..entry
        };
        if self.entries.len() >= CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The last `limit` entries, oldest first.
    pub fn last(&self, limit: usize) -> Vec<LoggedRequest> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries.iter().skip(skip).cloned().collect()
    }

    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(i: usize) -> LoggedRequest {
        LoggedRequest {
            method: "GET".into(),
            path: format!("/v1/{i}"),
            query: None,
            body: Value::Null,
            status: 200,
        }
    }

    #[test]
    fn keeps_the_last_thousand() {
        let mut log = RequestLog::default();
        for i in 0..1005 {
            log.push(entry(i), "k");
        }
        let all = log.last(usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].path, "/v1/5");
        assert_eq!(
            log.last(2)
                .iter()
                .map(|e| e.path.as_str())
                .collect::<Vec<_>>(),
            ["/v1/1003", "/v1/1004"]
        );
        assert_eq!(log.clear(), CAPACITY);
    }

    #[test]
    fn redacts_the_key_everywhere() {
        let mut log = RequestLog::default();
        let e = LoggedRequest {
            path: "/v1/secret".into(),
            query: Some("k=secret".into()),
            body: json!({"a": ["xsecretx"]}),
            ..entry(0)
        };
        log.push(e, "secret");
        let text = serde_json::to_string(&log.last(1)).unwrap_or_default();
        assert!(
            !text.contains("secret") && text.contains(REDACTED),
            "{text}"
        );
    }

    #[test]
    fn body_forms() {
        assert_eq!(body_value(b""), Value::Null);
        assert_eq!(body_value(b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(body_value(b"{oops"), json!("{oops"));
    }
}
