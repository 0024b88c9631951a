//! Plain data types passed in and out of the store.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AuditOutcome, Surface};

/// Which database a [`crate::Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection to be created. `sealed_key` is the API key already encrypted by the caller.
#[derive(Clone, PartialEq)]
pub struct NewConnection {
    pub name: String,
    pub base_url: String,
    pub sealed_key: String,
    pub key_hint: String,
    /// Requests per second allowed against this school.
    pub rate_limit: f64,
}

/// A stored Memberspot school.
#[derive(Clone, PartialEq)]
pub struct Connection {
    pub id: String,
    pub name: String,
    pub base_url: String,
    /// The API key as sealed by the caller. Never printed by `Debug`.
    pub sealed_key: String,
    pub key_hint: String,
    pub rate_limit: f64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What [`crate::Store::update_connection`] changes; `None` keeps a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionUpdate {
    /// A new name.
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub rate_limit: Option<f64>,
}

/// A persona to be created. `token_hash` is the hash of the bearer token, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPersona {
    pub name: String,
    pub description: String,
    /// Name of an existing connection.
    pub connection: String,
    pub scopes: Vec<String>,
    /// `None`: every offer; `Some(ids)`: only these offers.
    pub offer_ids: Option<Vec<String>>,
    /// `None`: no per-persona limit.
    pub calls_per_minute: Option<u32>,
    pub token_hash: String,
    pub token_prefix: String,
}

/// A stored persona (an AI agent identity bound to one connection).
#[derive(Clone, PartialEq, Eq)]
pub struct Persona {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Name of the connection.
    pub connection: String,
    pub scopes: Vec<String>,
    pub offer_ids: Option<Vec<String>>,
    pub calls_per_minute: Option<u32>,
    /// Never printed by `Debug`.
    pub token_hash: String,
    pub token_prefix: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
}

impl Persona {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

const REDACTED: &str = "<redacted>";

// Hand-written Debug impls: a `{:?}` in a log line must not leak sealed keys or token hashes.
impl fmt::Debug for NewConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewConnection")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("sealed_key", &REDACTED)
            .field("key_hint", &self.key_hint)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("sealed_key", &REDACTED)
            .field("key_hint", &self.key_hint)
            .field("rate_limit", &self.rate_limit)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl fmt::Debug for NewPersona {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewPersona")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("connection", &self.connection)
            .field("scopes", &self.scopes)
            .field("offer_ids", &self.offer_ids)
            .field("calls_per_minute", &self.calls_per_minute)
            .field("token_hash", &REDACTED)
            .field("token_prefix", &self.token_prefix)
            .finish()
    }
}

impl fmt::Debug for Persona {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persona")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("description", &self.description)
            .field("connection", &self.connection)
            .field("scopes", &self.scopes)
            .field("offer_ids", &self.offer_ids)
            .field("calls_per_minute", &self.calls_per_minute)
            .field("token_hash", &REDACTED)
            .field("token_prefix", &self.token_prefix)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// One tool call to be recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    /// Epoch milliseconds.
    pub at: i64,
    pub request_id: String,
    /// Where the call came from.
    pub surface: Surface,
    pub connection: Option<String>,
    pub persona: Option<String>,
    pub end_user: Option<String>,
    pub prompt: Option<String>,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub outcome: AuditOutcome,
    pub response: Option<serde_json::Value>,
    pub error: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_ms: u64,
    /// The OAuth client a remote MCP call came through (its name and id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_client: Option<String>,
}

/// A recorded tool call, linked to its predecessor by `prev_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain (ascending; gaps are possible, e.g. after a rolled-back append).
    pub seq: i64,
    /// UUID v7.
    pub id: String,
    pub at: i64,
    pub request_id: String,
    pub surface: Surface,
    pub connection: Option<String>,
    pub persona: Option<String>,
    pub end_user: Option<String>,
    pub prompt: Option<String>,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub outcome: AuditOutcome,
    pub response: Option<serde_json::Value>,
    pub error: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_ms: u64,
    /// The OAuth client a remote MCP call came through (its name and id).
    #[serde(default)]
    pub oauth_client: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Which audit records [`crate::Store::query_audit`] returns. All set conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub persona: Option<String>,
    /// The calls of one request (e.g. the tool calls an event caused).
    pub request_id: Option<String>,
    pub tool: Option<String>,
    pub outcome: Option<String>,
    pub surface: Option<String>,
    /// Inclusive: `at >= since_ms`.
    pub since_ms: Option<i64>,
    /// Exclusive: `at < until_ms`.
    pub until_ms: Option<i64>,
    /// Only records with `seq > after_seq` (paging forward).
    pub after_seq: Option<i64>,
    /// Only records with `seq < before_seq` (paging backward, newest first).
    pub before_seq: Option<i64>,
    /// Default 100, at most 10000.
    pub limit: Option<u32>,
    /// Order by seq descending instead of ascending.
    pub newest_first: bool,
}

/// Result of [`crate::Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Records checked (all records in the log).
    pub records: u64,
    pub ok: bool,
    /// Seq of the first record found broken (for deleted newest records: the missing head's seq).
    pub first_bad_seq: Option<i64>,
    /// What is wrong, e.g. "record 17: hash does not match its contents (edited)".
    pub problem: Option<String>,
    /// The chain head the store records (`0` and the zero hash for an empty log).
    pub head: ChainHead,
}

/// A position in the audit chain: a record's sequence number and hash. Printed and parsed
/// as `SEQ:HASH`; the newest one (the head), kept outside the database, is an *anchor*
/// that shows whether the chain up to it was rewritten later (see
/// [`crate::Store::verify_audit_anchor`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: i64,
    /// 64 lowercase hex characters (SHA-256).
    pub hash: String,
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for ChainHead {
    type Err = String;

    /// `SEQ:HASH` as `audit anchor` prints it; also `#SEQ HASH` as the daily summary shows
    /// it, so a copied line works. The error says what is wrong and never echoes the input.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORMAT: &str = "use SEQ:HASH as `memberspot audit anchor` prints it \
                              (a record's sequence number and its 64-character hex hash)";
        let text = text.trim();
        let body = text.strip_prefix('#').unwrap_or(text);
        let (seq, hash) = body
            .split_once(':')
            .or_else(|| body.split_once(char::is_whitespace))
            .ok_or_else(|| format!("no `:` between sequence number and hash; {FORMAT}"))?;
        let seq: i64 = seq
            .trim()
            .parse()
            .ok()
            .filter(|s: &i64| *s >= 0)
            .ok_or_else(|| format!("the sequence number is not a whole number >= 0; {FORMAT}"))?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "the hash is not 64 hexadecimal characters; {FORMAT}"
            ));
        }
        Ok(ChainHead { seq, hash })
    }
}
