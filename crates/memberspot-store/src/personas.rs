//! Personas: the identities agents and automations call as, each bound to a connection.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::connections::connection_not_found;
use crate::error::{is_foreign_key_violation, is_unique_violation, is_unique_violation_on};
use crate::{NewPersona, Persona, Store, StoreError, args, check_name, now_ms};

pub(crate) const PERSONA_SELECT: &str = "SELECT p.id, p.name, p.description, c.name AS connection, \
     p.scopes, p.offer_ids, p.calls_per_minute, p.token_hash, p.token_prefix, \
     p.created_at, p.updated_at, p.revoked_at \
     FROM personas p JOIN connections c ON c.id = p.connection_id";

impl Store {
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
pub(crate) async fn insert_persona_on<'e, E>(e: E, p: &NewPersona) -> Result<Persona, StoreError>
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

pub(crate) fn persona_from_row(row: &AnyRow) -> Result<Persona, StoreError> {
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
