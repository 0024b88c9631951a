//! Connections: the Memberspot schools, each with its sealed API key.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::is_unique_violation;
use crate::meta::{check_meta_key, put_meta};
use crate::{Backend, Connection, NewConnection, Store, StoreError, check_name, now_ms};

pub(crate) const CONNECTION_COLUMNS: &str =
    "id, name, base_url, sealed_key, key_hint, rate_limit, created_at, updated_at";

impl Store {
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
}

pub(crate) fn check_rate_limit(r: f64) -> Result<(), StoreError> {
    // NaN would even become NULL in SQLite.
    if !r.is_finite() || r < 0.0 {
        return Err(StoreError::Invalid(format!(
            "rate limit must be a finite number >= 0, got {r}"
        )));
    }
    Ok(())
}

pub(crate) fn connection_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("connection '{name}' not found"))
}

pub(crate) fn connection_from_row(row: &AnyRow) -> Result<Connection, StoreError> {
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
