//! Persistence for Memberspot Hub: connections (Memberspot schools with their sealed API
//! keys), personas (AI agent identities) and the tamper-evident, hash-chained audit log.
//!
//! One code path serves both backends through `sqlx::Any`: SQLite (a file; the default) and
//! PostgreSQL (`postgres://` / `postgresql://` URLs). Every query is runtime-checked and
//! written in the SQL both understand (`$n` placeholders, `RETURNING`, `ON CONFLICT`); times
//! are epoch milliseconds in integer columns and JSON is kept as TEXT, so both behave alike.
//!
//! The audit chain cannot fork, whatever the number of connections *and processes*: the
//! database refuses a record that does not link to the chain head and moves the head with
//! every insert (triggers, migration 0005; appending is in `audit_append.rs`). SQLite write
//! transactions start with `BEGIN IMMEDIATE` (the file's write lock, waited for up to the
//! busy timeout); purges of the chain take a transaction-scoped advisory lock on PostgreSQL.

// Opening and the schema.
mod migrate; // the migrations of each backend, applied on open
mod open; // URLs and paths, opening, the pool, transactions
// One module per resource.
mod audit; // reading, verifying and purging the audit chain
mod audit_append; // appending to it (group commit, pinned connections)
mod connection_keys; // connection changes that re-seal the key in the same transaction
mod connections; // schools and their sealed API keys
mod console; // the web console's users, sessions and setup links
mod directory; // the directory version and versioned look-ups for the hub's cache
mod events; // deliveries, the event queue, order access state, poller snapshots
mod flows; // flow runs and steps, leases, the digest's grouped reads
mod meta; // settings
mod oauth; // remote MCP sign-in: clients, grants, codes, tokens
mod personas; // agent identities
// Shared parts.
mod args;
mod error;
mod hash;
mod kinds;
mod model;
mod send_check;
mod sqlite_lane;

use sqlx::AnyPool;

pub use audit::{DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};
pub use audit_append::{PinnedConnection, audit_chunk_len};
pub use console::{ConsoleRole, ConsoleSession, ConsoleUser};
pub use directory::Versioned;
pub use error::StoreError;
pub use events::{
    Delivery, EventAction, EventFilter, EventFinish, EventLogEntry, EventPurge, EventStatus,
    EventStore, Inserted, MAX_EVENT_LIMIT, NewDelivery, NewEvent, OrderAccess, OrderFence,
    StatusCounts, StoredEvent, Trusted,
};
pub use flows::{AuditCount, EventCount, FlowRun, FlowStep, FlowStore, NewRun};
pub use hash::{ZERO_HASH, audit_hash, canonical_json};
pub use kinds::{AuditOutcome, RunStatus, StoredText, Surface, Verification};
pub use model::{
    AuditFilter, AuditRecord, AuditVerification, Backend, ChainHead, Connection, ConnectionUpdate,
    NewAuditRecord, NewConnection, NewPersona, Persona,
};
pub use oauth::{
    NewOAuthCode, OAuthClient, OAuthClientKind, OAuthGrant, OAuthTokenKind, RedeemedCode,
    Redemption, TokenGrant,
};

pub use meta::RESERVED_META_PREFIX;
pub use open::SQLITE_SYNCHRONOUS_ENV;

/// Handle to the database. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The audit chain head's hash as this process last saw it: appends chain onto it
    /// without reading it first (the database refuses a stale one, see migration 0005).
    audit_head: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// SQLite under `synchronous = NORMAL`, writable: where pinned connections open
    /// their lane (see `sqlite_lane.rs`).
    lane: Option<sqlite_lane::LaneTarget>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "{what} name must not be empty"
        )));
    }
    Ok(())
}
