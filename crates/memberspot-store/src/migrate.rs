//! The schema, per backend, applied by [`Store::open`](crate::Store::open).

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, Connection as _};

use crate::{Backend, StoreError};

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
