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

mod args;
mod audit_append;
mod connection_keys;
mod directory;
mod error;
mod events;
mod flows;
mod hash;
mod model;
mod sqlite_lane;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Executor, Row, Transaction};

pub use audit_append::{PinnedConnection, audit_chunk_len};
pub use directory::Versioned;
pub use error::StoreError;
pub use events::{
    Delivery, EventAction, EventFilter, EventFinish, EventLogEntry, EventPurge, EventStatus,
    Inserted, MAX_EVENT_LIMIT, NewDelivery, NewEvent, OrderAccess, OrderFence, StatusCounts,
    StoredEvent, Trusted,
};
pub use flows::{AuditCount, EventCount, FlowRun, FlowStep, NewRun};
pub use hash::{ZERO_HASH, audit_hash, canonical_json};
pub use model::{
    AuditFilter, AuditRecord, AuditVerification, Backend, ChainHead, Connection, ConnectionUpdate,
    NewAuditRecord, NewConnection, NewPersona, Persona,
};

use error::{describe_sqlx, is_foreign_key_violation, is_unique_violation, is_unique_violation_on};
use hash::HashInput;

/// Default and maximum number of records [`Store::query_audit`] returns.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
pub const MAX_AUDIT_LIMIT: u32 = 10_000;

/// Meta keys under this prefix belong to the store itself; [`Store::set_meta`] refuses them.
pub const RESERVED_META_PREFIX: &str = "store.";
/// `"<seq> <hash>"` of the newest audit record. Appends chain onto it, and verification uses
/// it to notice records deleted from the end of the log.
const AUDIT_HEAD_KEY: &str = "store.audit_head";
/// `"<seq> <hash>"` of the newest purged audit record: the first kept record chains onto it.
const AUDIT_ANCHOR_KEY: &str = "store.audit_anchor";

/// PostgreSQL advisory lock key serializing audit appends and purges ("mshubaud").
const AUDIT_LOCK_KEY: i64 = 0x6d73_6875_6261_7564;
/// PostgreSQL advisory lock key serializing changes to sealed keys ("mshubkey").
const KEYS_LOCK_KEY: i64 = 0x6d73_6875_626b_6579;
/// Records read per round trip while verifying the chain.
const VERIFY_PAGE: i64 = 1000;
/// How long SQLite waits for another writer (other connection or process) to finish.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "events",
        include_str!("../migrations/sqlite/0002_events.sql"),
    ),
    (
        3,
        "flows",
        include_str!("../migrations/sqlite/0003_flows.sql"),
    ),
    (
        4,
        "directory",
        include_str!("../migrations/sqlite/0004_directory.sql"),
    ),
    (
        5,
        "audit head",
        include_str!("../migrations/sqlite/0005_audit_head.sql"),
    ),
    (
        6,
        "trust",
        include_str!("../migrations/sqlite/0006_trust.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "events",
        include_str!("../migrations/postgres/0002_events.sql"),
    ),
    (
        3,
        "flows",
        include_str!("../migrations/postgres/0003_flows.sql"),
    ),
    (
        4,
        "directory",
        include_str!("../migrations/postgres/0004_directory.sql"),
    ),
    (
        5,
        "audit head",
        include_str!("../migrations/postgres/0005_audit_head.sql"),
    ),
    (
        6,
        "trust",
        include_str!("../migrations/postgres/0006_trust.sql"),
    ),
];

const CONNECTION_COLUMNS: &str =
    "id, name, base_url, sealed_key, key_hint, rate_limit, created_at, updated_at";
const PERSONA_SELECT: &str = "SELECT p.id, p.name, p.description, c.name AS connection, \
     p.scopes, p.offer_ids, p.calls_per_minute, p.token_hash, p.token_prefix, \
     p.created_at, p.updated_at, p.revoked_at \
     FROM personas p JOIN connections c ON c.id = p.connection_id";
const AUDIT_COLUMNS: &str = "seq, id, at, request_id, surface, connection, persona, end_user, \
     prompt, tool, arguments, outcome, response, error, upstream_status, latency_ms, prev_hash, hash";

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

/// Where `Store::open` connects, resolved from the user's string.
struct Target {
    backend: Backend,
    /// URL handed to sqlx.
    url: String,
    /// For error messages: the file path, or the PostgreSQL URL without its password.
    display: String,
    /// The SQLite file, unless it is opened read-only.
    writable_file: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    ///
    /// Accepts `"sqlite:///abs/path/hub.db"`, `"sqlite://relative.db"`, `"sqlite:relative.db"`,
    /// a bare file path (SQLite; the file and its parent directory are created if missing),
    /// or a `postgres://` / `postgresql://` URL. In SQLite URLs the path is taken literally;
    /// a `?query` is passed to sqlx (e.g. `?mode=ro`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let target = resolve_target(url)?;
        let options = AnyConnectOptions::from_str(&target.url)
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;

        // Connect once directly before building the pool: the pool silently retries refused
        // connections until its timeout and then reports only "timed out", while a single
        // connect reports the real cause. This connection also runs the migrations.
        let mut conn = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        if target.backend == Backend::Sqlite {
            enable_wal(&mut conn).await?;
        }
        let migrated = run_migrations(&mut conn, target.backend).await;
        // Best effort: the connection is done either way.
        let _ = conn.close().await;
        migrated?;

        let synchronous = sqlite_synchronous()?;
        let pool_options = match target.backend {
            Backend::Sqlite => {
                // Two of them are pinned by the hub's audit writer and directory check.
                AnyPoolOptions::new()
                    .max_connections(7)
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            // NORMAL under WAL: a crash never corrupts the database, but a
                            // power loss may drop the last commits; FULL syncs every commit.
                            conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
                                .await?;
                            // Per-connection settings (sqlx's defaults already match; stated here
                            // because the store's correctness depends on them).
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute(
                                format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(12),
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        tracing::debug!(backend = %target.backend, "store opened");
        let lane = target
            .writable_file
            .filter(|_| synchronous == "NORMAL")
            .map(|path| sqlite_lane::LaneTarget::new(path, pool.clone()));
        Ok(Store {
            pool,
            backend: target.backend,
            audit_head: Default::default(),
            lane,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether pinned connections run statements on their holder's thread (SQLite
    /// under `synchronous = NORMAL`; see `sqlite_lane.rs`).
    pub fn has_lanes(&self) -> bool {
        self.lane.is_some()
    }

    /// Closes every pooled connection (for SQLite this also checkpoints the WAL into the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Resolves once [`Store::close`] has been called: holders of a
    /// [`PinnedConnection`] outside a task's wait use it to [`PinnedConnection::release`].
    pub async fn closed(&self) {
        self.pool.close_event().await;
    }

    // ---------------------------------------------------------------- transactions

    /// A transaction that will write. On SQLite, `BEGIN IMMEDIATE` takes the write lock up
    /// front (waiting up to the busy timeout), so a transaction that reads before it writes
    /// cannot fail midway with SQLITE_BUSY because another connection or process wrote in
    /// between. PostgreSQL needs nothing extra: row locks and constraints do the work.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// A write transaction in which purges of the audit chain, from any number of
    /// processes, run one at a time (appends are kept in line by the head trigger).
    async fn begin_audit_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Transaction-scoped: released by COMMIT/ROLLBACK, also if the process dies.
            // (Selected via FROM because the function returns `void`, which Any cannot decode.)
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// A write transaction in which changes to sealed keys that read them first (master-key
    /// rotation, re-binding, a rename), from any number of processes, run one at a time.
    async fn begin_keys_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(KEYS_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// A read-only transaction whose reads all see one snapshot.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            // A deferred SQLite transaction in WAL mode reads one snapshot from its first read.
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        };
        Ok(tx)
    }

    // ---------------------------------------------------------------- meta

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        meta_value(&self.pool, key).await
    }

    /// Sets (inserts or replaces) a setting. Keys starting with [`RESERVED_META_PREFIX`]
    /// belong to the store and are refused.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        check_meta_key(key)?;
        put_meta(&self.pool, key, value).await
    }

    /// Sets a setting only if it has none, and returns the value in force: the one
    /// given, or the one another instance stored first. Two instances starting on a
    /// fresh database agree on one value this way.
    pub async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        check_meta_key(key)?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        meta_value(&self.pool, key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting '{key}' vanished as it was set")))
    }

    // ---------------------------------------------------------------- connections

    /// Stores a new connection. A taken name is a [`StoreError::Conflict`].
    pub async fn insert_connection(&self, c: &NewConnection) -> Result<Connection, StoreError> {
        check_name("connection", &c.name)?;
        check_rate_limit(c.rate_limit)?;
        let now = now_ms();
        let conn = Connection {
            id: uuid::Uuid::now_v7().to_string(),
            name: c.name.clone(),
            base_url: c.base_url.clone(),
            sealed_key: c.sealed_key.clone(),
            key_hint: c.key_hint.clone(),
            rate_limit: c.rate_limit,
            created_at: now,
            updated_at: now,
        };
        let res = sqlx::query(
            "INSERT INTO connections \
             (id, name, base_url, sealed_key, key_hint, rate_limit, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&conn.id)
        .bind(&conn.name)
        .bind(&conn.base_url)
        .bind(&conn.sealed_key)
        .bind(&conn.key_hint)
        .bind(conn.rate_limit)
        .bind(conn.created_at)
        .bind(conn.updated_at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(conn),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "connection '{}' already exists",
                c.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// All connections, ordered by name.
    pub async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(connection_from_row).collect()
    }

    pub async fn get_connection(&self, name: &str) -> Result<Option<Connection>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(connection_from_row).transpose()
    }

    /// Replaces the sealed API key. [`StoreError::NotFound`] if there is no such connection.
    pub async fn update_connection_key(
        &self,
        name: &str,
        sealed_key: &str,
        key_hint: &str,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE connections SET sealed_key = $1, key_hint = $2, updated_at = $3 \
             WHERE name = $4",
        )
        .bind(sealed_key)
        .bind(key_hint)
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(connection_not_found(name));
        }
        Ok(())
    }

    /// Deletes a connection; `Ok(false)` if there was none. Refused with
    /// [`StoreError::Conflict`] while a non-revoked persona uses it; revoked personas of the
    /// connection are deleted with it (their audit records stay).
    pub async fn delete_connection(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // On PostgreSQL, FOR UPDATE makes a concurrent insert_persona (whose foreign-key check
        // share-locks this row) either finish before our check or fail after our delete.
        // SQLite needs no row lock: BEGIN IMMEDIATE already excludes every other writer.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let id: Option<String> =
            sqlx::query_scalar(&format!("SELECT id FROM connections WHERE name = $1{lock}"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM personas WHERE connection_id = $1 AND revoked_at IS NULL \
             ORDER BY name",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "connection '{name}' is used by {} active persona(s): {}; revoke them first",
                users.len(),
                users.join(", ")
            )));
        }
        sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Re-encrypts every sealed key in ONE transaction (master-key rotation):
    /// `f(connection) -> new_sealed` (the connection as stored, with its old sealed key).
    /// If `f` fails for any connection nothing is changed. Returns the number of connections
    /// re-sealed.
    pub async fn reseal_all_connections(
        &self,
        f: impl Fn(&Connection) -> Result<String, String> + Send + Sync,
    ) -> Result<usize, StoreError> {
        self.reseal(f, None).await
    }

    /// [`Store::reseal_all_connections`] that also sets meta `key` to `value` in the same
    /// transaction, e.g. the master-key check value: a crash can then never leave the keys
    /// sealed under one master key and the check value of the other.
    pub async fn reseal_all_connections_and_set_meta(
        &self,
        f: impl Fn(&Connection) -> Result<String, String> + Send + Sync,
        key: &str,
        value: &str,
    ) -> Result<usize, StoreError> {
        check_meta_key(key)?;
        self.reseal(f, Some((key, value))).await
    }

    async fn reseal(
        &self,
        f: impl Fn(&Connection) -> Result<String, String> + Send + Sync,
        meta: Option<(&str, &str)>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_keys_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        let mut count = 0;
        for row in &rows {
            let c = connection_from_row(row)?;
            // On error the transaction is dropped, i.e. rolled back: all or nothing.
            let new = f(&c).map_err(|message| StoreError::Reseal {
                connection: c.name.clone(),
                message,
            })?;
            sqlx::query("UPDATE connections SET sealed_key = $1, updated_at = $2 WHERE id = $3")
                .bind(&new)
                .bind(now)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        if let Some((key, value)) = meta {
            put_meta(&mut *tx, key, value).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    // ---------------------------------------------------------------- personas

    /// Stores a new persona. Its connection must exist ([`StoreError::NotFound`] naming it);
    /// a taken name or token hash is a [`StoreError::Conflict`].
    pub async fn insert_persona(&self, p: &NewPersona) -> Result<Persona, StoreError> {
        insert_persona_on(&self.pool, p).await
    }

    /// [`Store::insert_persona`] that first removes a *revoked* persona of the same name, in
    /// one transaction: a revoked persona is created again (new id, token and settings; its
    /// audit records, which name it, stay). An active persona of that name is a
    /// [`StoreError::Conflict`].
    pub async fn replace_revoked_persona(&self, p: &NewPersona) -> Result<Persona, StoreError> {
        let mut tx = self.begin_write().await?;
        let state: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM personas WHERE name = $1")
                .bind(&p.name)
                .fetch_optional(&mut *tx)
                .await?;
        match state {
            Some(None) => {
                return Err(StoreError::Conflict(format!(
                    "persona '{}' already exists and is not revoked",
                    p.name
                )));
            }
            Some(Some(_)) => {
                sqlx::query("DELETE FROM personas WHERE name = $1 AND revoked_at IS NOT NULL")
                    .bind(&p.name)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {}
        }
        let persona = insert_persona_on(&mut *tx, p).await?;
        tx.commit().await?;
        Ok(persona)
    }

    /// All personas (revoked ones included), ordered by name.
    pub async fn list_personas(&self) -> Result<Vec<Persona>, StoreError> {
        let rows = sqlx::query(&format!("{PERSONA_SELECT} ORDER BY p.name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(persona_from_row).collect()
    }

    pub async fn get_persona(&self, name: &str) -> Result<Option<Persona>, StoreError> {
        let row = sqlx::query(&format!("{PERSONA_SELECT} WHERE p.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(persona_from_row).transpose()
    }

    /// The persona whose token hashes to `token_hash`, revoked ones included (the caller
    /// decides; check [`Persona::revoked_at`]).
    pub async fn get_persona_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Persona>, StoreError> {
        let row = sqlx::query(&format!("{PERSONA_SELECT} WHERE p.token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(persona_from_row).transpose()
    }

    /// Replaces the persona's scopes, offer restriction (`None`: every offer) and call limit
    /// (`None`: no limit), and returns the updated persona. [`StoreError::NotFound`] if absent.
    pub async fn update_persona_scopes(
        &self,
        name: &str,
        scopes: &[String],
        offer_ids: Option<&[String]>,
        calls_per_minute: Option<u32>,
    ) -> Result<Persona, StoreError> {
        let scopes = to_json_list(scopes)?;
        let offer_ids = offer_ids.map(to_json_list).transpose()?;
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let mut a = args::Args::default();
        let sql = format!(
            "UPDATE personas SET scopes = {}, offer_ids = {}, calls_per_minute = {}, \
             updated_at = {} WHERE name = {}",
            a.text(&scopes),
            a.opt_text(offer_ids.as_deref()),
            a.opt_int(calls_per_minute.map(i64::from)),
            a.int(now),
            a.text(name)
        );
        let res = a.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        if res.rows_affected() == 0 {
            return Err(persona_not_found(name));
        }
        let row = sqlx::query(&format!("{PERSONA_SELECT} WHERE p.name = $1"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let persona = persona_from_row(&row)?;
        tx.commit().await?;
        Ok(persona)
    }

    /// Token rotation: replaces the token hash and prefix, so the old token stops working.
    /// [`StoreError::NotFound`] if absent, [`StoreError::Conflict`] if revoked.
    pub async fn set_persona_token(
        &self,
        name: &str,
        token_hash: &str,
        token_prefix: &str,
    ) -> Result<(), StoreError> {
        if token_hash.is_empty() {
            return Err(StoreError::Invalid(
                "persona token hash must not be empty".into(),
            ));
        }
        let res = sqlx::query(
            "UPDATE personas SET token_hash = $1, token_prefix = $2, updated_at = $3 \
             WHERE name = $4 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .bind(token_prefix)
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => match self.get_persona(name).await? {
                None => Err(persona_not_found(name)),
                Some(_) => Err(StoreError::Conflict(format!(
                    "persona '{name}' is revoked; its token cannot be rotated"
                ))),
            },
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(token_in_use()),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes the persona (sets `revoked_at`). `Ok(false)` if it already was revoked,
    /// [`StoreError::NotFound`] if there is no such persona.
    pub async fn revoke_persona(&self, name: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE personas SET revoked_at = $1, updated_at = $2 \
             WHERE name = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() > 0 {
            return Ok(true);
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM personas WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match exists {
            Some(_) => Ok(false),
            None => Err(persona_not_found(name)),
        }
    }

    // ---------------------------------------------------------------- audit log

    /// Records matching every set condition of `f`, by seq ascending (descending with
    /// `newest_first`), at most `f.limit` (default 100, capped at 10000).
    pub async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        enum Arg<'a> {
            Text(&'a str),
            Int(i64),
        }
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg<'_>> = Vec::new();
        let texts = [
            ("persona =", &f.persona),
            ("request_id =", &f.request_id),
            ("tool =", &f.tool),
            ("outcome =", &f.outcome),
            ("surface =", &f.surface),
        ];
        for (cond, value) in texts {
            if let Some(v) = value {
                args.push(Arg::Text(v));
                conds.push(format!("{cond} ${}", args.len()));
            }
        }
        let ints = [
            ("at >=", f.since_ms),
            ("at <", f.until_ms),
            ("seq >", f.after_seq),
        ];
        for (cond, value) in ints {
            if let Some(v) = value {
                args.push(Arg::Int(v));
                conds.push(format!("{cond} ${}", args.len()));
            }
        }
        let limit = f.limit.unwrap_or(DEFAULT_AUDIT_LIMIT).min(MAX_AUDIT_LIMIT);
        // Bound, not inlined: every distinct SQL text is another cached prepared statement.
        args.push(Arg::Int(i64::from(limit)));
        let limit_param = args.len();
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(if f.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq ASC"
        });
        sql.push_str(&format!(" LIMIT ${limit_param}"));

        let mut q = sqlx::query(&sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// Walks the whole chain in seq order (one consistent snapshot), recomputing every hash
    /// from the stored columns and checking every link; also checks that the newest record
    /// is the recorded chain head (records deleted from the end) and that the oldest one
    /// links to the purge anchor (records deleted from the start).
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        self.verify_chain(None).await
    }

    /// [`Store::verify_audit`], and the record at `anchor.seq` must still be in the chain
    /// with `anchor.hash`. Someone who can write the database can rewrite the chain from
    /// some record on with valid hashes, which the walk alone cannot tell; but every hash
    /// covers all records before it, so a rewrite that starts at or before the anchored
    /// record changes that record's hash. An anchor whose record was purged cannot be
    /// checked, and fails (use a newer one).
    pub async fn verify_audit_anchor(
        &self,
        anchor: &ChainHead,
    ) -> Result<AuditVerification, StoreError> {
        self.verify_chain(Some(anchor)).await
    }

    /// The chain head: the newest record's seq and hash (`0` and the zero hash when the log
    /// has never had a record). Kept outside the database, it is an anchor for
    /// [`Store::verify_audit_anchor`].
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(head_or_start(chain_pos(&self.pool, AUDIT_HEAD_KEY).await?))
    }

    async fn verify_chain(
        &self,
        wanted: Option<&ChainHead>,
    ) -> Result<AuditVerification, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let anchor = chain_pos(&mut *tx, AUDIT_ANCHOR_KEY).await?;
        let head = chain_pos(&mut *tx, AUDIT_HEAD_KEY).await?;
        // The stored hash of the record `wanted` names, once the walk passes it.
        let mut wanted_found: Option<String> = None;

        let mut expected_prev = anchor
            .as_ref()
            .map_or_else(|| ZERO_HASH.to_owned(), |a| a.hash.clone());
        let mut prev_seq: Option<i64> = None;
        let mut records: u64 = 0;
        let mut bad: Option<(Option<i64>, String)> = None;
        let mut cursor = i64::MIN;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(cursor)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                cursor = seq;
                records += 1;
                let stored = StoredAudit::from_row(row);
                if wanted.is_some_and(|w| w.seq == seq) {
                    wanted_found = Some(
                        stored
                            .as_ref()
                            .map_or_else(|_| String::new(), |s| s.hash.clone()),
                    );
                }
                if bad.is_none() {
                    bad = check_link(
                        seq,
                        stored.as_ref().ok(),
                        &expected_prev,
                        prev_seq,
                        anchor.as_ref(),
                    )
                    .map(|problem| (Some(seq), problem));
                }
                // Keep walking after a problem to count every record.
                expected_prev = match stored {
                    Ok(s) => s.hash,
                    Err(_) => String::new(),
                };
                prev_seq = Some(seq);
            }
            if (rows.len() as i64) < VERIFY_PAGE {
                break;
            }
        }
        tx.commit().await?;

        if bad.is_none() {
            bad = check_head(head.as_ref(), &expected_prev, prev_seq, records);
        }
        if bad.is_none()
            && let Some(w) = wanted
        {
            bad = check_anchor(w, wanted_found.as_deref(), anchor.as_ref(), head.as_ref())
                .map(|problem| (Some(w.seq), problem));
        }
        let head = head_or_start(head);
        Ok(match bad {
            None => AuditVerification {
                records,
                ok: true,
                first_bad_seq: None,
                problem: None,
                head,
            },
            Some((seq, problem)) => AuditVerification {
                records,
                ok: false,
                first_bad_seq: seq,
                problem: Some(problem),
                head,
            },
        })
    }

    /// Deletes the oldest records, those with `at < before_ms`, and returns how many.
    /// Only a prefix of the chain is removed (it stops at the first record, in seq order,
    /// that is not older), and the last deleted record's hash becomes the anchor the first
    /// kept record is verified against, so verification stays ok.
    pub async fn purge_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_audit_write().await?;
        let first_kept: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at >= $1")
                .bind(before_ms)
                .fetch_one(&mut *tx)
                .await?;
        let last_deleted = match first_kept {
            Some(k) => {
                sqlx::query(
                    "SELECT seq, hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(k)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(last) = last_deleted else {
            return Ok(0);
        };
        let seq: i64 = last.try_get("seq")?;
        let hash: String = last.try_get("hash")?;
        let res = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        put_meta(&mut *tx, AUDIT_ANCHOR_KEY, &format!("{seq} {hash}")).await?;
        tx.commit().await?;
        tracing::info!(
            deleted = res.rows_affected(),
            anchor_seq = seq,
            "audit log purged"
        );
        Ok(res.rows_affected())
    }
}

// -------------------------------------------------------------------- opening

/// WAL is a property of the file (readers no longer block the writer), so it is set once
/// here rather than per pooled connection. Switching needs an exclusive lock that SQLite's busy
/// timeout does not wait for: another process opening the same new file at the same moment
/// can make it fail, so retry for up to the busy timeout.
async fn enable_wal(conn: &mut AnyConnection) -> Result<(), StoreError> {
    let deadline =
        std::time::Instant::now() + Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
    loop {
        let res: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await;
        let retry = match &res {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(_) => true,
            Err(e) => error::is_busy(e),
        };
        if !retry || std::time::Instant::now() >= deadline {
            return match res {
                Ok(mode) => Err(StoreError::Open(format!(
                    "cannot switch the SQLite file to WAL mode (it stays in '{mode}' mode)"
                ))),
                Err(e) => Err(e.into()),
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn run_migrations(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    let migrator = migrator(backend);
    match backend {
        // sqlx's migration lock is a no-op on SQLite, so two processes opening a new file at
        // once would both create the tables. Run everything inside one IMMEDIATE transaction
        // instead: the second opener waits for the file's write lock, then finds the
        // migrations applied. (The migrator's own transactions become savepoints.)
        Backend::Sqlite => {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            // `run_direct` rather than `run`: the latter's `Acquire` bound makes the future
            // not `Send` (sqlx's documented workaround).
            migrator.run_direct(&mut *tx).await?;
            tx.commit().await?;
        }
        // On PostgreSQL the migrator takes an advisory lock for the whole run.
        Backend::Postgres => migrator.run_direct(conn).await?,
    }
    Ok(())
}

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator {
        migrations: list
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into(),
                    false,
                )
            })
            .collect::<Vec<_>>()
            .into(),
        // Same settings as `sqlx::migrate!`: on PostgreSQL an advisory lock keeps several
        // hub processes starting at once from migrating twice.
        ..Migrator::DEFAULT
    }
}

/// The scheme of `url` if it starts like one (`word://`).
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

fn resolve_target(url: &str) -> Result<Target, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target {
            backend: Backend::Postgres,
            url: url.to_owned(),
            display: redact_url(url),
            writable_file: None,
        });
    }
    let (path, query) = match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(rest) => match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        },
        // A bare path: taken whole, even if it contains '?'; but something that looks like
        // a URL of another scheme is a mistake (a typo in `postgres://`), not a file name.
        None => {
            if let Some(scheme) = url_scheme(url) {
                return Err(StoreError::Invalid(format!(
                    "database URL scheme `{scheme}://` is not supported: use postgres://, \
                     postgresql:// or sqlite:// (or a file path)"
                )));
            }
            (url, None)
        }
    };
    if path.is_empty() || path == ":memory:" {
        // sqlx's Any driver would give every pooled connection its own in-memory database.
        return Err(StoreError::Invalid(
            "SQLite needs a file path (in-memory databases are not supported; use a file in a \
             temporary directory)"
                .into(),
        ));
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) if !q.is_empty() => format!("{q}&mode=rwc"),
        _ => "mode=rwc".to_owned(),
    };
    let path = std::path::absolute(Path::new(path))
        .map_err(|e| StoreError::Open(format!("{path}: {e}")))?;
    let display = path.display().to_string();
    if query.contains("mode=rwc") {
        create_parent_dir(&path)?;
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("{display}: path is not valid UTF-8")))?;
    let writable = !query.contains("mode=ro");
    Ok(Target {
        backend: Backend::Sqlite,
        url: format!("sqlite://{}?{query}", percent_encode_path(path_str)),
        display,
        writable_file: writable.then_some(path),
    })
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    let parent: Option<PathBuf> = path.parent().map(Path::to_path_buf);
    if let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// sqlx percent-decodes the path of a `sqlite://` URL, so encode everything but the plainest
/// characters (spaces, `%`, `?`, `#`, non-ASCII, ...).
fn percent_encode_path(path: &str) -> String {
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(path, KEEP).to_string()
}

/// The URL without its password, for error messages. Everything before the last `@` is
/// the user part, as a person reads it: a password holding an unencoded `/`, `?` or `#`
/// (which a URL parser takes as the end of the user part, showing the rest of the
/// password as host, port or path) is hidden as well.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

// -------------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "{what} name must not be empty"
        )));
    }
    Ok(())
}

fn check_meta_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("meta key must not be empty".into()));
    }
    if key.starts_with(RESERVED_META_PREFIX) {
        return Err(StoreError::Invalid(format!(
            "meta keys starting with '{RESERVED_META_PREFIX}' are reserved for the store"
        )));
    }
    Ok(())
}

fn check_rate_limit(r: f64) -> Result<(), StoreError> {
    // NaN would even become NULL in SQLite.
    if !r.is_finite() || r < 0.0 {
        return Err(StoreError::Invalid(format!(
            "rate limit must be a finite number >= 0, got {r}"
        )));
    }
    Ok(())
}

fn connection_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("connection '{name}' not found"))
}

fn persona_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("persona '{name}' not found"))
}

fn token_in_use() -> StoreError {
    // Deliberately names no hash.
    StoreError::Conflict("that persona token is already in use by another persona".into())
}

fn to_json_list(items: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn from_json_list(what: &str, owner: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| {
        StoreError::Corrupt(format!("{what} of '{owner}' is not a JSON list of strings"))
    })
}

/// [`Store::insert_persona`] on a pool or in a transaction.
async fn insert_persona_on<'e, E>(e: E, p: &NewPersona) -> Result<Persona, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    check_name("persona", &p.name)?;
    if p.token_hash.is_empty() {
        return Err(StoreError::Invalid(
            "persona token hash must not be empty".into(),
        ));
    }
    let now = now_ms();
    let id = uuid::Uuid::now_v7().to_string();
    let scopes = to_json_list(&p.scopes)?;
    let offer_ids = p.offer_ids.as_deref().map(to_json_list).transpose()?;
    // One statement: the connection is resolved and the row inserted atomically, and the
    // foreign key catches a connection deleted concurrently.
    let mut a = args::Args::default();
    let sql = format!(
        "INSERT INTO personas (id, name, description, connection_id, scopes, offer_ids, \
         calls_per_minute, token_hash, token_prefix, created_at, updated_at) \
         SELECT {}, {}, {}, c.id, {}, {}, {}, {}, {}, {}, {} \
         FROM connections c WHERE c.name = {}",
        a.text(&id),
        a.text(&p.name),
        a.text(&p.description),
        a.text(&scopes),
        a.opt_text(offer_ids.as_deref()),
        a.opt_int(p.calls_per_minute.map(i64::from)),
        a.text(&p.token_hash),
        a.text(&p.token_prefix),
        a.int(now),
        a.int(now),
        a.text(&p.connection)
    );
    let res = a.bind(sqlx::query(&sql)).execute(e).await;
    match res {
        Ok(r) if r.rows_affected() == 0 => Err(connection_not_found(&p.connection)),
        Ok(_) => Ok(Persona {
            id,
            name: p.name.clone(),
            description: p.description.clone(),
            connection: p.connection.clone(),
            scopes: p.scopes.clone(),
            offer_ids: p.offer_ids.clone(),
            calls_per_minute: p.calls_per_minute,
            token_hash: p.token_hash.clone(),
            token_prefix: p.token_prefix.clone(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
        }),
        Err(e) if is_unique_violation_on(&e, "token_hash") => Err(token_in_use()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "persona '{}' already exists",
            p.name
        ))),
        Err(e) if is_foreign_key_violation(&e) => Err(connection_not_found(&p.connection)),
        Err(e) => Err(e.into()),
    }
}

async fn meta_value<'e, E>(e: E, key: &str) -> Result<Option<String>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(e)
        .await?)
}

async fn put_meta<'e, E>(e: E, key: &str, value: &str) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(e)
    .await?;
    Ok(())
}

/// A position in the audit chain, kept in meta as `"<seq> <hash>"`.
struct ChainPos {
    seq: i64,
    hash: String,
}

async fn chain_pos<'e, E>(e: E, key: &str) -> Result<Option<ChainPos>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let Some(v) = meta_value(e, key).await? else {
        return Ok(None);
    };
    v.split_once(' ')
        .and_then(|(seq, hash)| {
            Some(ChainPos {
                seq: seq.parse().ok()?,
                hash: hash.to_owned(),
            })
        })
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt(format!("meta '{key}' is not '<seq> <hash>'")))
}

/// The first problem with record `seq`, if any: its own hash, then its link to the previous.
fn check_link(
    seq: i64,
    stored: Option<&StoredAudit>,
    expected_prev: &str,
    prev_seq: Option<i64>,
    anchor: Option<&ChainPos>,
) -> Option<String> {
    let Some(s) = stored else {
        return Some(format!("record {seq}: columns cannot be read (edited)"));
    };
    if s.recompute_hash() != s.hash {
        return Some(format!(
            "record {seq}: hash does not match its contents (edited)"
        ));
    }
    if s.prev_hash != expected_prev {
        return Some(match (prev_seq, anchor) {
            (Some(p), _) => format!(
                "record {seq}: previous hash does not match record {p} (a record was deleted)"
            ),
            (None, Some(a)) => format!(
                "record {seq}: previous hash does not match the purge anchor (record {}) \
                 (a record was deleted)",
                a.seq
            ),
            (None, None) => format!(
                "record {seq}: previous hash does not match the start of the chain \
                 (a record was deleted)"
            ),
        });
    }
    None
}

/// After a clean walk: does the chain end at the recorded head?
fn check_head(
    head: Option<&ChainPos>,
    last_hash: &str,
    last_seq: Option<i64>,
    records: u64,
) -> Option<(Option<i64>, String)> {
    match head {
        Some(h) if h.hash != last_hash => {
            let end = match last_seq {
                Some(s) => format!("the log ends at record {s}"),
                None => "the log is empty".to_owned(),
            };
            Some((
                Some(h.seq),
                format!(
                    "record {}: missing; it is the newest record but {end} \
                     (records were deleted from the end)",
                    h.seq
                ),
            ))
        }
        None if records > 0 => Some((
            None,
            "the chain head is missing from the store's metadata".to_owned(),
        )),
        _ => None,
    }
}

/// After a clean walk: is the anchored record still there, with the anchored hash?
/// `found` is the stored hash of the record at `wanted.seq`, if the walk met one.
fn check_anchor(
    wanted: &ChainHead,
    found: Option<&str>,
    purged: Option<&ChainPos>,
    head: Option<&ChainPos>,
) -> Option<String> {
    let short = |h: &str| h.chars().take(12).collect::<String>();
    let mismatch = |stored: &str| {
        format!(
            "record {}: its hash is now {}…, not {}… as anchored (the chain was rewritten \
             from this record or an earlier one)",
            wanted.seq,
            short(stored),
            short(&wanted.hash)
        )
    };
    if let Some(stored) = found {
        return (stored != wanted.hash).then(|| mismatch(stored));
    }
    // The anchor of an empty log, or the last purged record: both are still known.
    let start = purged.map_or((0, ZERO_HASH), |p| (p.seq, p.hash.as_str()));
    if wanted.seq == start.0 {
        return (start.1 != wanted.hash).then(|| mismatch(start.1));
    }
    if wanted.seq < start.0 {
        return Some(format!(
            "record {}: purged (the log now starts after record {}), so this anchor cannot be \
             checked; use a newer anchor",
            wanted.seq, start.0
        ));
    }
    let head_seq = head.map_or(0, |h| h.seq);
    Some(if wanted.seq > head_seq {
        format!(
            "record {}: missing; the chain ends at record {head_seq} (records were removed, \
             or the anchor is from another database)",
            wanted.seq
        )
    } else {
        format!(
            "record {}: missing from the chain (records were removed and the chain rewritten)",
            wanted.seq
        )
    })
}

fn head_or_start(head: Option<ChainPos>) -> ChainHead {
    head.map_or_else(
        || ChainHead {
            seq: 0,
            hash: ZERO_HASH.to_owned(),
        },
        |h| ChainHead {
            seq: h.seq,
            hash: h.hash,
        },
    )
}

fn connection_from_row(row: &AnyRow) -> Result<Connection, StoreError> {
    Ok(Connection {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        base_url: row.try_get("base_url")?,
        sealed_key: row.try_get("sealed_key")?,
        key_hint: row.try_get("key_hint")?,
        rate_limit: row.try_get("rate_limit")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn persona_from_row(row: &AnyRow) -> Result<Persona, StoreError> {
    let name: String = row.try_get("name")?;
    let scopes: String = row.try_get("scopes")?;
    let offer_ids: Option<String> = row.try_get("offer_ids")?;
    let calls_per_minute: Option<i64> = row.try_get("calls_per_minute")?;
    Ok(Persona {
        id: row.try_get("id")?,
        description: row.try_get("description")?,
        connection: row.try_get("connection")?,
        scopes: from_json_list("scopes", &name, &scopes)?,
        offer_ids: offer_ids
            .map(|t| from_json_list("offer ids", &name, &t))
            .transpose()?,
        calls_per_minute: calls_per_minute
            .map(|v| {
                u32::try_from(v).map_err(|_| {
                    StoreError::Corrupt(format!("calls per minute of '{name}' is out of range"))
                })
            })
            .transpose()?,
        token_hash: row.try_get("token_hash")?,
        token_prefix: row.try_get("token_prefix")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        revoked_at: row.try_get("revoked_at")?,
        name,
    })
}

/// An audit row as stored (JSON still as text), for verification.
struct StoredAudit {
    id: String,
    at: i64,
    request_id: String,
    surface: String,
    connection: Option<String>,
    persona: Option<String>,
    end_user: Option<String>,
    prompt: Option<String>,
    tool: String,
    arguments: String,
    outcome: String,
    response: Option<String>,
    error: Option<String>,
    upstream_status: Option<i64>,
    latency_ms: i64,
    prev_hash: String,
    hash: String,
}

impl StoredAudit {
    fn from_row(row: &AnyRow) -> Result<StoredAudit, sqlx::Error> {
        Ok(StoredAudit {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            request_id: row.try_get("request_id")?,
            surface: row.try_get("surface")?,
            connection: row.try_get("connection")?,
            persona: row.try_get("persona")?,
            end_user: row.try_get("end_user")?,
            prompt: row.try_get("prompt")?,
            tool: row.try_get("tool")?,
            arguments: row.try_get("arguments")?,
            outcome: row.try_get("outcome")?,
            response: row.try_get("response")?,
            error: row.try_get("error")?,
            upstream_status: row.try_get("upstream_status")?,
            latency_ms: row.try_get("latency_ms")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn recompute_hash(&self) -> String {
        HashInput {
            id: &self.id,
            at: self.at,
            request_id: &self.request_id,
            surface: &self.surface,
            connection: self.connection.as_deref(),
            persona: self.persona.as_deref(),
            end_user: self.end_user.as_deref(),
            prompt: self.prompt.as_deref(),
            tool: &self.tool,
            arguments: &self.arguments,
            outcome: &self.outcome,
            response: self.response.as_deref(),
            error: self.error.as_deref(),
            upstream_status: self.upstream_status,
            latency_ms: self.latency_ms,
            prev_hash: &self.prev_hash,
        }
        .hash_after(&self.prev_hash)
    }
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let seq: i64 = row.try_get("seq")?;
    let s = StoredAudit::from_row(row)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit record {seq}: {what}"));
    Ok(AuditRecord {
        seq,
        arguments: serde_json::from_str(&s.arguments)
            .map_err(|_| corrupt("arguments are not valid JSON"))?,
        response: s
            .response
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt("response is not valid JSON"))?,
        upstream_status: s
            .upstream_status
            .map(u16::try_from)
            .transpose()
            .map_err(|_| corrupt("upstream status is out of range"))?,
        latency_ms: u64::try_from(s.latency_ms).map_err(|_| corrupt("latency is negative"))?,
        id: s.id,
        at: s.at,
        request_id: s.request_id,
        surface: s.surface,
        connection: s.connection,
        persona: s.persona,
        end_user: s.end_user,
        prompt: s.prompt,
        tool: s.tool,
        outcome: s.outcome,
        error: s.error,
        prev_hash: s.prev_hash,
        hash: s.hash,
    })
}

/// Every public future must be `Send` for any borrow (the hub awaits them in spawned tasks);
/// generic sqlx executors easily lose that, so check it at compile time.
#[allow(dead_code)]
fn public_futures_are_send() {
    fn spawnable<T: std::future::Future + Send + 'static>(_: T) {}
    spawnable(async {
        let Ok(s) = Store::open("").await else {
            return;
        };
        let name = String::new();
        let _ = s.get_meta(&name).await;
        let _ = s.set_meta(&name, &name).await;
        let c = NewConnection {
            name: name.clone(),
            base_url: name.clone(),
            sealed_key: name.clone(),
            key_hint: name.clone(),
            rate_limit: 0.0,
        };
        let _ = s.insert_connection(&c).await;
        let _ = s.list_connections().await;
        let _ = s.get_connection(&name).await;
        let _ = s.update_connection_key(&name, &name, &name).await;
        let _ = s
            .update_connection(
                &name,
                &ConnectionUpdate::default(),
                |_, _| Ok(String::new()),
            )
            .await;
        let _ = s
            .migrate_connection_keys(&name, |_| Ok(None::<String>))
            .await;
        let _ = s.audit_head().await;
        let _ = s.delete_connection(&name).await;
        let _ = s.reseal_all_connections(|x| Ok(x.sealed_key.clone())).await;
        let _ = s
            .reseal_all_connections_and_set_meta(|x| Ok(x.sealed_key.clone()), &name, &name)
            .await;
        let p = NewPersona {
            name: name.clone(),
            description: name.clone(),
            connection: name.clone(),
            scopes: Vec::new(),
            offer_ids: None,
            calls_per_minute: None,
            token_hash: name.clone(),
            token_prefix: name.clone(),
        };
        let _ = s.insert_persona(&p).await;
        let _ = s.replace_revoked_persona(&p).await;
        let _ = s.list_personas().await;
        let _ = s.get_persona(&name).await;
        let _ = s.get_persona_by_token_hash(&name).await;
        let _ = s.update_persona_scopes(&name, &[], None, None).await;
        let _ = s.set_persona_token(&name, &name, &name).await;
        let _ = s.revoke_persona(&name).await;
        let r = NewAuditRecord {
            at: 0,
            request_id: name.clone(),
            surface: name.clone(),
            connection: None,
            persona: None,
            end_user: None,
            prompt: None,
            tool: name.clone(),
            arguments: serde_json::Value::Null,
            outcome: name.clone(),
            response: None,
            error: None,
            upstream_status: None,
            latency_ms: 0,
        };
        let _ = s.append_audit(&r).await;
        let _ = s.query_audit(&AuditFilter::default()).await;
        let _ = s.verify_audit().await;
        let head = ChainHead {
            seq: 0,
            hash: name.clone(),
        };
        let _ = s.verify_audit_anchor(&head).await;
        let _ = s.purge_audit_before(0).await;
        s.close().await;
    });
}

/// Environment variable choosing SQLite's `synchronous` setting.
pub const SQLITE_SYNCHRONOUS_ENV: &str = "MEMBERSPOT_SQLITE_SYNCHRONOUS";

/// `NORMAL` (default) or `FULL`, from [`SQLITE_SYNCHRONOUS_ENV`].
fn sqlite_synchronous() -> Result<&'static str, StoreError> {
    match std::env::var(SQLITE_SYNCHRONOUS_ENV) {
        Err(_) => Ok("NORMAL"),
        Ok(v) => match v.trim().to_ascii_uppercase().as_str() {
            "" | "NORMAL" => Ok("NORMAL"),
            "FULL" => Ok("FULL"),
            other => Err(StoreError::Invalid(format!(
                "{SQLITE_SYNCHRONOUS_ENV} must be NORMAL or FULL, got `{other}`"
            ))),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn targets_resolve() {
        let t = resolve_target("postgres://u:secret@db:5432/hub").unwrap();
        assert_eq!(t.backend, Backend::Postgres);
        assert_eq!(t.display, "postgres://u:***@db:5432/hub");
        assert!(!t.display.contains("secret"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a dir/h?b#%.db");
        let t = resolve_target(p.to_str().unwrap()).unwrap();
        assert_eq!(t.backend, Backend::Sqlite);
        assert!(t.url.starts_with("sqlite:///"));
        assert!(t.url.ends_with("?mode=rwc"));
        assert!(t.url.contains("a%20dir/h%3Fb%23%25.db"));
        assert!(dir.path().join("a dir").is_dir());

        let t = resolve_target("sqlite://rel.db").unwrap();
        assert!(t.url.starts_with("sqlite:///"));
        assert!(t.url.ends_with("/rel.db?mode=rwc"));
        let t = resolve_target("sqlite:///abs/x.db?mode=ro").unwrap();
        assert_eq!(t.url, "sqlite:///abs/x.db?mode=ro");

        assert!(matches!(
            resolve_target("sqlite::memory:"),
            Err(StoreError::Invalid(_))
        ));

        // A mistyped or foreign scheme is refused, not taken as a file name; the error
        // names the scheme and nothing else of the URL.
        for url in ["postgress://u:pw@db/hub", "mysql://u:pw@db/hub"] {
            match resolve_target(url) {
                Err(StoreError::Invalid(m)) => {
                    assert!(m.contains(url.split_once(':').unwrap().0), "{m}");
                    assert!(!m.contains("pw"), "{m}");
                }
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url} was accepted"),
            }
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db?x=1"),
            "postgresql://u:***@h/db?x=1"
        );
        // Passwords with characters that end a URL's user part early (generated
        // passwords often hold `/`): none of the password shows.
        for (url, shown) in [
            ("postgres://u:Zm9v/YmFy@h/db", "postgres://u:***@h/db"),
            ("postgres://u:12/ss@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:pa?ss@h/db?x=1", "postgres://u:***@h/db?x=1"),
            ("postgres://u:pa#ss@h/db", "postgres://u:***@h/db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn sqlite_paths_are_percent_encoded_for_sqlx() {
        assert_eq!(
            percent_encode_path("/tmp/a b/hub%1?#ü.db"),
            "/tmp/a%20b/hub%251%3F%23%C3%BC.db"
        );
        assert_eq!(percent_encode_path("/x/Hub-1_v2.~db"), "/x/Hub-1_v2.~db");
    }
}
