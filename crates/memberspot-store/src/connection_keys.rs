//! Changes to a connection that touch its sealed key in the same transaction.
//!
//! The hub binds a sealed API key to its connection's name and base URL (associated data
//! of the encryption), so a key only opens for the connection it was stored for. The store
//! knows nothing of sealing: it hands the caller the connection as stored and writes back
//! what the caller returns, under one lock, all or nothing.

use crate::connections::{
    CONNECTION_COLUMNS, check_rate_limit, connection_from_row, connection_not_found,
};
use crate::error::is_unique_violation;
use crate::meta::{check_meta_key, meta_value, put_meta};
use crate::{Connection, ConnectionUpdate, Store, StoreError, check_name, now_ms};

impl Store {
    /// Changes a connection's name, base URL and/or rate limit. When the name or the base
    /// URL changes, `reseal(before, after)` returns the key sealed for the new ones, stored
    /// in the same statement; if it fails nothing changes ([`StoreError::Reseal`]). A taken
    /// name is a [`StoreError::Conflict`], a missing connection [`StoreError::NotFound`].
    /// Personas follow a renamed connection (they refer to it by id).
    pub async fn update_connection(
        &self,
        name: &str,
        change: &ConnectionUpdate,
        reseal: impl FnOnce(&Connection, &Connection) -> Result<String, String> + Send,
    ) -> Result<Connection, StoreError> {
        if let Some(n) = &change.name {
            check_name("connection", n)?;
        }
        if let Some(r) = change.rate_limit {
            check_rate_limit(r)?;
        }
        let mut tx = self.begin_keys_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| connection_not_found(name))?;
        let before = connection_from_row(&row)?;
        let mut after = before.clone();
        if let Some(n) = &change.name {
            after.name.clone_from(n);
        }
        if let Some(u) = &change.base_url {
            after.base_url.clone_from(u);
        }
        if let Some(r) = change.rate_limit {
            after.rate_limit = r;
        }
        if after.name != before.name || after.base_url != before.base_url {
            after.sealed_key = reseal(&before, &after).map_err(|message| StoreError::Reseal {
                connection: before.name.clone(),
                message,
            })?;
        }
        after.updated_at = now_ms();
        let res = sqlx::query(
            "UPDATE connections SET name = $1, base_url = $2, rate_limit = $3, sealed_key = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(&after.name)
        .bind(&after.base_url)
        .bind(after.rate_limit)
        .bind(&after.sealed_key)
        .bind(after.updated_at)
        .bind(&after.id)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "connection '{}' already exists",
                    after.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(after)
    }

    /// A one-time change of every sealed key, recorded under meta `marker`: if the marker
    /// is set nothing happens (`Ok(0)`); otherwise `f(connection)` gives each connection's
    /// new sealed key (`None`: keep it), the marker is set, and all of it commits together.
    /// Several processes starting at once run it one at a time, so exactly one does the
    /// work. Returns how many keys changed.
    pub async fn migrate_connection_keys(
        &self,
        marker: &str,
        f: impl Fn(&Connection) -> Result<Option<String>, String> + Send + Sync,
    ) -> Result<usize, StoreError> {
        check_meta_key(marker)?;
        // Done long ago on every start but the first: a read, not the write lock.
        if meta_value(&self.pool, marker).await?.is_some() {
            return Ok(0);
        }
        let mut tx = self.begin_keys_write().await?;
        if meta_value(&mut *tx, marker).await?.is_some() {
            return Ok(0);
        }
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        let mut changed = 0;
        for row in &rows {
            let c = connection_from_row(row)?;
            let new = f(&c).map_err(|message| StoreError::Reseal {
                connection: c.name.clone(),
                message,
            })?;
            if let Some(new) = new {
                sqlx::query(
                    "UPDATE connections SET sealed_key = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(&new)
                .bind(now)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
                changed += 1;
            }
        }
        put_meta(&mut *tx, marker, &now.to_string()).await?;
        tx.commit().await?;
        Ok(changed)
    }
}
