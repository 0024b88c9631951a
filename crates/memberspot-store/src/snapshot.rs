//! What backups and upgrades ask of the store: a consistent copy of a SQLite database
//! while others write to it, and where the schema stands against this binary.

use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection as _};

use crate::error::describe_sqlx;
use crate::migrate::{self, SchemaStatus};
use crate::open::resolve_target_as;
use crate::{Backend, ChainHead, Store, StoreError};

impl Store {
    /// Writes a consistent copy of the SQLite database to `dest` (which must not exist)
    /// while other connections and processes go on writing: `VACUUM INTO` reads one
    /// snapshot, so the copy holds every transaction committed before it started and
    /// none after. Answers the audit chain's head in the copy. PostgreSQL is copied with
    /// its own tools (`pg_dump`).
    pub async fn snapshot_into(&self, dest: &Path) -> Result<ChainHead, StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Invalid(
                "a PostgreSQL store is copied with pg_dump, not by the hub".into(),
            ));
        }
        if dest.exists() {
            return Err(StoreError::Conflict(format!(
                "{} already exists",
                dest.display()
            )));
        }
        let dest = dest.to_str().ok_or_else(|| {
            StoreError::Invalid(format!("{}: path is not valid UTF-8", dest.display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(&self.pool)
            .await?;
        // The copy is a plain (rollback-journal) file: read it without opening it as a
        // store, which would change it (WAL mode, migrations).
        let target = resolve_target_as(dest, true)?;
        let options = AnyConnectOptions::from_str(&target.url)
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        let mut conn = AnyConnection::connect_with(&options).await?;
        let head = crate::audit::head_in(&mut conn).await;
        let _ = conn.close().await;
        head
    }

    /// The SQLite file of this store (`None` on PostgreSQL).
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    /// Where the open database's schema stands against this binary's migrations.
    pub async fn schema(&self) -> Result<SchemaStatus, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let applied = migrate::applied(&mut conn, self.backend).await?;
        Ok(migrate::compare(self.backend, &applied, true))
    }

    /// Where the schema of the database at `url` stands against this binary's
    /// migrations, without opening it as a store: nothing is migrated, and a SQLite file
    /// that does not exist is not created (it has every migration pending).
    pub async fn schema_status(url: &str) -> Result<SchemaStatus, StoreError> {
        sqlx::any::install_default_drivers();
        let target = resolve_target_as(url, true)?;
        if let Some(file) = &target.sqlite_file
            && !file.exists()
        {
            return Ok(migrate::compare(target.backend, &[], false));
        }
        let options = AnyConnectOptions::from_str(&target.url)
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        let mut conn = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        let applied = migrate::applied(&mut conn, target.backend).await;
        let _ = conn.close().await;
        Ok(migrate::compare(target.backend, &applied?, true))
    }

    /// Applies the pending migrations of the database at `url` (creating it if needed)
    /// and answers where its schema stood before.
    pub async fn migrate(url: &str) -> Result<SchemaStatus, StoreError> {
        let before = Store::schema_status(url).await?;
        let store = Store::open(url).await?;
        store.close().await;
        Ok(before)
    }
}
