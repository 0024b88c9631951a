//! SQLite statements run on the calling thread, for the hub's hot path.
//!
//! sqlx runs every SQLite statement on a thread of its own and hands requests and
//! rows across with channels; for the audit append and the directory check, which
//! take microseconds in SQLite, those hand-offs cost more than the statements. A
//! lane is one more connection to the same file, driven directly by the task that
//! holds it (a [`crate::PinnedConnection`]). It never waits and never syncs, so it
//! cannot stall the async runtime:
//!
//! - busy timeout 0: if another connection holds the write lock, the statement
//!   fails at once with [`LaneError::Busy`] and the caller uses its sqlx connection,
//!   which waits;
//! - only with `synchronous = NORMAL`, where a WAL commit is a write to the page
//!   cache (under `FULL` every commit syncs, and the store does not open lanes);
//! - no automatic checkpoint (a checkpoint syncs): the lane asks for a passive one
//!   on the pool, off the calling thread, every [`CHECKPOINT_EVERY`] commits. The
//!   first write after a complete checkpoint restarts the WAL and syncs its header;
//!   the checkpoint task makes that write itself, on the pool, so a lane commit
//!   syncs only if it slips in between the two (microseconds apart).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use sqlx::{AnyPool, Executor};

use crate::StoreError;

/// Lane commits between two passive checkpoints: about SQLite's own default of
/// 1000 WAL pages, at the handful of pages an audit append writes.
const CHECKPOINT_EVERY: u32 = 128;

/// Statements a lane keeps prepared (every audit batch size, plus a few).
const STATEMENT_CACHE: usize = 72;

/// Where and how a store opens lanes.
#[derive(Clone)]
pub(crate) struct LaneTarget {
    pub(crate) path: PathBuf,
    pool: AnyPool,
    checkpointing: Arc<AtomicBool>,
}

impl LaneTarget {
    pub(crate) fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    pub(crate) fn new(path: PathBuf, pool: AnyPool) -> Self {
        LaneTarget {
            path,
            pool,
            checkpointing: Arc::default(),
        }
    }

    pub(crate) fn open(&self) -> Result<SqliteLane, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteLane {
            conn,
            target: self.clone(),
            commits: 0,
        })
    }

    /// A passive checkpoint on a pool connection (sqlx's thread), unless one is running.
    fn checkpoint(&self) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared when the task ends, or is dropped unrun (the runtime shutting down).
        let running = Running(self.checkpointing.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        rt.spawn(async move {
            let _running = running;
            // The write restarts the WAL if the checkpoint completed (see above).
            let result = async {
                pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await?;
                pool.execute(RESTART_WRITE).await
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "passive WAL checkpoint failed");
            }
        });
    }
}

/// A write that changes nothing but goes through the WAL (there are no triggers on `meta`).
const RESTART_WRITE: &str = "UPDATE meta SET value = value WHERE key = 'store.audit_head'";

/// Clears the "checkpoint running" flag when dropped.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why a lane statement did not complete.
#[derive(Debug)]
pub(crate) enum LaneError {
    /// Another connection holds a lock; run the statement where it can wait.
    Busy,
    /// The database answered with this error (e.g. a trigger's RAISE).
    Failed(String),
    Other(rusqlite::Error),
}

impl From<rusqlite::Error> for LaneError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                LaneError::Busy
            }
            rusqlite::Error::SqliteFailure(_, Some(message)) => LaneError::Failed(message.clone()),
            _ => LaneError::Other(e),
        }
    }
}

impl From<LaneError> for StoreError {
    fn from(e: LaneError) -> Self {
        match e {
            LaneError::Busy => StoreError::Database("the database is locked".into()),
            LaneError::Failed(m) => StoreError::Database(m),
            LaneError::Other(e) => StoreError::Database(e.to_string()),
        }
    }
}

/// A positional parameter.
pub(crate) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

pub(crate) struct SqliteLane {
    conn: Connection,
    target: LaneTarget,
    commits: u32,
}

impl SqliteLane {
    /// One integer from `sql` (no parameters), which must return a row.
    pub(crate) fn query_i64(&self, sql: &str) -> Result<i64, LaneError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.query_row([], |row| row.get(0))?)
    }

    /// Runs an autocommit `INSERT … RETURNING seq, id` and returns `(id, seq)` per row.
    pub(crate) fn insert_returning<'p>(
        &mut self,
        sql: &str,
        params: impl IntoIterator<Item = Param<'p>>,
    ) -> Result<Vec<(String, i64)>, LaneError> {
        let out = {
            let mut stmt = self.conn.prepare_cached(sql)?;
            for (i, p) in params.into_iter().enumerate() {
                match p {
                    Param::Text(v) => stmt.raw_bind_parameter(i + 1, v)?,
                    Param::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
                }
            }
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push((row.get::<_, String>("id")?, row.get::<_, i64>("seq")?));
            }
            out
        };
        self.commits += 1;
        if self.commits >= CHECKPOINT_EVERY {
            self.commits = 0;
            self.target.checkpoint();
        }
        Ok(out)
    }
}
