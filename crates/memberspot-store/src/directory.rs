//! Reads for the hub's in-memory directory of personas and connections: the directory
//! version (bumped by triggers on every change, see migration 0004), and lookups that
//! return a row together with the version it was read at, from one statement, so a
//! cache never files an old row under a newer version.

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::connections::{CONNECTION_COLUMNS, connection_from_row};
use crate::personas::{PERSONA_SELECT, persona_from_row};
use crate::{Connection, Persona, Store, StoreError};

/// The directory version subquery every versioned lookup selects.
const VERSION: &str = "(SELECT version FROM directory_version WHERE id = 1) AS directory_version";

pub(crate) const DIRECTORY_VERSION_SQL: &str = "SELECT version FROM directory_version WHERE id = 1";

pub(crate) async fn directory_version(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(DIRECTORY_VERSION_SQL)
        .fetch_one(conn)
        .await?)
}

/// A row and the directory version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
}

impl Store {
    /// The current directory version: it changes whenever a persona or connection does.
    pub async fn directory_version(&self) -> Result<i64, StoreError> {
        directory_version(&mut *self.pool.acquire().await?).await
    }

    /// The persona whose token hashes to `token_hash` (revoked ones included), with the
    /// version it was read at; `None` if there is none.
    pub async fn persona_by_token_hash_versioned(
        &self,
        token_hash: &str,
    ) -> Result<Option<Versioned<Persona>>, StoreError> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("{} WHERE p.token_hash = $1", versioned_persona_select()));
        self.versioned(&SQL, token_hash, persona_from_row).await
    }

    /// The persona named `name` (revoked ones included), with the version it was read at.
    pub async fn persona_versioned(
        &self,
        name: &str,
    ) -> Result<Option<Versioned<Persona>>, StoreError> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("{} WHERE p.name = $1", versioned_persona_select()));
        self.versioned(&SQL, name, persona_from_row).await
    }

    /// The connection named `name`, with the version it was read at.
    pub async fn connection_versioned(
        &self,
        name: &str,
    ) -> Result<Option<Versioned<Connection>>, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {VERSION}, {CONNECTION_COLUMNS} FROM connections WHERE name = $1")
        });
        self.versioned(&SQL, name, connection_from_row).await
    }

    /// The row `sql` selects for `key`, with the version column it also selects.
    async fn versioned<T>(
        &self,
        sql: &str,
        key: &str,
        from_row: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Versioned {
                value: from_row(&r)?,
                version: r.try_get("directory_version")?,
            })
        })
        .transpose()
    }
}

fn versioned_persona_select() -> String {
    PERSONA_SELECT.replacen("SELECT ", &format!("SELECT {VERSION}, "), 1)
}
