//! The schema, per backend, applied by [`Store::open`](crate::Store::open).
//!
//! Each backend's migrations are the `NNNN_name.sql` files of its directory under
//! `migrations/`, embedded at compile time by sqlx's `migrate!` (a new file is picked up
//! without registering it anywhere; `build.rs` rebuilds the crate when one is added). A
//! migration is recorded in `_sqlx_migrations` by version and a SHA-384 of its text, so an
//! applied file must never change: add a new one instead.

use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection as _, Row as _};

use crate::{Backend, StoreError};

/// One migration this binary knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
}

/// Where a database's schema stands against this binary's migrations
/// ([`crate::Store::schema_status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaStatus {
    /// The newest migration this binary has.
    pub binary_version: i64,
    /// The newest migration applied to the database; `None` when it has none (or does
    /// not exist yet).
    pub database_version: Option<i64>,
    /// Whether the database exists (a SQLite file not created yet: `false`).
    pub exists: bool,
    /// The migrations that opening the database would apply, oldest first.
    pub pending: Vec<MigrationInfo>,
    /// Applied migrations this binary does not know: a newer `memberspot` ran here.
    pub unknown: Vec<i64>,
    /// Applied migrations whose text differs from this binary's (the migrator refuses
    /// to open such a database).
    pub modified: Vec<i64>,
}

impl SchemaStatus {
    /// The database was migrated by a newer binary: opening it is refused.
    pub fn is_newer_than_binary(&self) -> bool {
        !self.unknown.is_empty()
    }

    pub fn is_current(&self) -> bool {
        self.exists
            && self.pending.is_empty()
            && self.unknown.is_empty()
            && self.modified.is_empty()
    }
}

/// The newest migration of `backend` in this binary (both backends have the same).
pub fn binary_version(backend: Backend) -> i64 {
    migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The migrations recorded as applied in the database: version and checksum. A database
/// without the migrations table has none.
pub(crate) async fn applied(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let exists_sql = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        }
    };
    let tables: i64 = sqlx::query_scalar(exists_sql).fetch_one(&mut *conn).await?;
    if tables == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?)))
        .collect()
}

/// Compares what the database has applied with what this binary has.
pub(crate) fn compare(backend: Backend, applied: &[(i64, Vec<u8>)], exists: bool) -> SchemaStatus {
    let migrator = migrator(backend);
    let known: std::collections::HashMap<i64, &[u8]> = migrator
        .iter()
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    let applied_versions: std::collections::HashSet<i64> =
        applied.iter().map(|(v, _)| *v).collect();
    SchemaStatus {
        binary_version: binary_version(backend),
        database_version: applied.iter().map(|(v, _)| *v).max(),
        exists,
        pending: migrator
            .iter()
            .filter(|m| !applied_versions.contains(&m.version))
            .map(|m| MigrationInfo {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect(),
        unknown: applied
            .iter()
            .filter(|(v, _)| !known.contains_key(v))
            .map(|(v, _)| *v)
            .collect(),
        modified: applied
            .iter()
            .filter(|(v, sum)| known.get(v).is_some_and(|k| *k != sum.as_slice()))
            .map(|(v, _)| *v)
            .collect(),
    }
}

/// Refuses a database migrated by a newer binary, naming both versions, before the
/// migrator would fail with a message about a "missing" migration.
fn refuse_newer(status: &SchemaStatus) -> Result<(), StoreError> {
    if status.is_newer_than_binary() {
        return Err(StoreError::TooNew {
            database: status.database_version.unwrap_or_default(),
            binary: status.binary_version,
        });
    }
    Ok(())
}

// `sqlx::migrate!` forwards to this macro. It is called directly because the `sqlx`
// crate's `macros` feature also builds both database drivers and a second SQLite for the
// compiler (minutes of CPU time in a cold build) to support checked queries,
// which the store does not use.
static SQLITE: Migrator = sqlx_macros::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx_macros::migrate!("migrations/postgres");

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// Refuses a database migrated by a newer binary, changing nothing.
pub(crate) async fn check_not_newer(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<(), StoreError> {
    refuse_newer(&compare(backend, &applied(conn, backend).await?, true))
}

pub(crate) async fn run_migrations(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<(), StoreError> {
    let migrator = migrator(backend);
    match backend {
        // sqlx's migration lock is a no-op on SQLite, so two processes opening a new file at
        // once would both create the tables. Run everything inside one IMMEDIATE transaction
        // instead: the second opener waits for the file's write lock, then finds the
        // migrations applied. (The migrator's own transactions become savepoints.)
        Backend::Sqlite => {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            refuse_newer(&compare(backend, &applied(&mut tx, backend).await?, true))?;
            // `run_direct` rather than `run`: the latter's `Acquire` bound makes the future
            // not `Send` (sqlx's documented workaround).
            migrator.run_direct(&mut *tx).await?;
            tx.commit().await?;
        }
        // On PostgreSQL the migrator takes an advisory lock for the whole run; a newer
        // binary migrating between this look and the run is refused by the migrator
        // itself (a "missing" migration).
        Backend::Postgres => {
            refuse_newer(&compare(
                backend,
                &applied(&mut *conn, backend).await?,
                true,
            ))?;
            migrator.run_direct(conn).await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both backends have the same migrations, one per version, under the same names, each
    /// run in its own transaction as before.
    #[test]
    fn backends_stay_in_step() {
        let list = |b| {
            migrator(b)
                .iter()
                .map(|m| (m.version, m.description.to_string(), m.no_tx))
                .collect::<Vec<_>>()
        };
        let sqlite = list(Backend::Sqlite);
        assert_eq!(sqlite, list(Backend::Postgres));
        let versions: Vec<i64> = sqlite.iter().map(|m| m.0).collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        assert!(sqlite.iter().all(|m| !m.2));
        assert_eq!(sqlite[4].1, "audit head");
    }
}
