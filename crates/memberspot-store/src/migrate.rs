//! The schema, per backend, applied by [`Store::open`](crate::Store::open).
//!
//! Each backend's migrations are the `NNNN_name.sql` files of its directory under
//! `migrations/`, embedded at compile time by sqlx's `migrate!` (a new file is picked up
//! without registering it anywhere; `build.rs` rebuilds the crate when one is added). A
//! migration is recorded in `_sqlx_migrations` by version and a SHA-384 of its text, so an
//! applied file must never change: add a new one instead.

use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection as _};

use crate::{Backend, StoreError};

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
