//! Settings kept in the `meta` table: the caller's, and the store's own (reserved prefix).

use sqlx::{Any, Executor};

use crate::{Store, StoreError};

/// Meta keys under this prefix belong to the store itself; [`Store::set_meta`] refuses them.
pub const RESERVED_META_PREFIX: &str = "store.";

impl Store {
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        meta_value(&self.pool, key).await
    }

    /// Every setting whose key starts with `prefix`, by key.
    pub async fn meta_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // `_` and `%` are LIKE's wildcards: the pattern may match more, filtered below.
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE key LIKE $1 ORDER BY key")
                .bind(format!("{prefix}%"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
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
}

pub(crate) fn check_meta_key(key: &str) -> Result<(), StoreError> {
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

pub(crate) async fn meta_value<'e, E>(e: E, key: &str) -> Result<Option<String>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(e)
        .await?)
}

pub(crate) async fn put_meta<'e, E>(e: E, key: &str, value: &str) -> Result<(), StoreError>
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
