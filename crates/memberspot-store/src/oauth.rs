//! Remote MCP sign-in (migration 0008): OAuth clients, grants (a client acting as one
//! persona), authorization codes and tokens.
//!
//! Codes and tokens arrive here as their SHA-256; the hub mints them. Every state change
//! that may race (a code redeemed twice, a refresh token used twice, a grant revoked while
//! it is used) is one conditional `UPDATE` whose row count decides who won.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::kinds::{parse_stored, stored_text};
use crate::{Store, StoreError};

stored_text! {
    /// How the hub knows a client.
    pub enum OAuthClientKind("OAuth client kind") {
        /// Registered itself (RFC 7591 dynamic client registration).
        Dynamic = "dynamic",
        /// Its `client_id` is the HTTPS URL of its metadata document.
        MetadataDocument = "metadata-document",
        /// Added by the owner (`memberspot oauth clients add`).
        Preregistered = "preregistered",
    }
}

stored_text! {
    /// What a stored token is.
    pub enum OAuthTokenKind("OAuth token kind") {
        Access = "access",
        Refresh = "refresh",
    }
}

/// A client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub kind: OAuthClientKind,
    pub created_at: i64,
}

/// A grant: `client_id` may act as `persona` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    pub id: String,
    pub client_id: String,
    pub client_name: String,
    pub persona: String,
    pub persona_id: String,
    /// The console user who allowed it.
    pub granted_by: String,
    pub resource: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_why: Option<String>,
}

/// A new authorization code.
#[derive(Debug, Clone)]
pub struct NewOAuthCode {
    pub code_hash: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expires_at: i64,
}

/// A redeemed code: what it was bound to, for the hub to check.
#[derive(Debug, Clone)]
pub struct RedeemedCode {
    pub grant: OAuthGrant,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expired: bool,
}

/// What redeeming a code or a refresh token found.
#[derive(Debug, Clone)]
pub enum Redemption<T> {
    /// First use: the caller may go on.
    First(T),
    /// Used before (a replay): the grant it belongs to.
    Reused { grant_id: String },
    /// Unknown.
    Unknown,
}

/// A token with its grant, as a bearer check finds it.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub grant: OAuthGrant,
    pub expires_at: i64,
}

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.client_name, g.persona, g.persona_id, \
    g.granted_by, g.resource, g.created_at, g.last_used_at, g.revoked_at, g.revoked_why";

fn grant_from_row(row: &AnyRow) -> Result<OAuthGrant, StoreError> {
    Ok(OAuthGrant {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        persona: row.try_get("persona")?,
        persona_id: row.try_get("persona_id")?,
        granted_by: row.try_get("granted_by")?,
        resource: row.try_get("resource")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_why: row.try_get("revoked_why")?,
    })
}

fn client_from_row(row: &AnyRow) -> Result<OAuthClient, StoreError> {
    let client_id: String = row.try_get("client_id")?;
    let kind: String = row.try_get("kind")?;
    let uris: String = row.try_get("redirect_uris")?;
    let owner = format!("OAuth client '{client_id}'");
    Ok(OAuthClient {
        kind: parse_stored(&kind, &owner)?,
        redirect_uris: serde_json::from_str(&uris)
            .map_err(|_| StoreError::Corrupt(format!("{owner}: redirect URIs are not JSON")))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        client_id,
    })
}

impl Store {
    /// Adds a client, or (for a metadata-document client, fetched again on every sign-in)
    /// replaces its name and redirect URIs.
    pub async fn upsert_oauth_client(&self, c: &OAuthClient) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&c.redirect_uris)
            .map_err(|e| StoreError::Invalid(format!("redirect URIs: {e}")))?;
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, name, redirect_uris, kind, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id) DO UPDATE SET \
             name = excluded.name, redirect_uris = excluded.redirect_uris",
        )
        .bind(&c.client_id)
        .bind(&c.name)
        .bind(uris)
        .bind(c.kind.as_str())
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let row = sqlx::query(
            "SELECT client_id, name, redirect_uris, kind, created_at FROM oauth_clients \
             WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    pub async fn list_oauth_clients(&self) -> Result<Vec<OAuthClient>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, name, redirect_uris, kind, created_at FROM oauth_clients \
             ORDER BY name, created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Removes a client and revokes its grants; false if there was none.
    pub async fn remove_oauth_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE oauth_grants SET revoked_at = $1, revoked_why = 'client removed' \
             WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected() > 0)
    }

    /// Forgets dynamically registered clients created before `before` that never got a
    /// grant (assistants may register anew on every connection). Returns how many.
    pub async fn purge_unused_oauth_clients(&self, before: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM oauth_clients WHERE kind = $1 AND created_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM oauth_grants g WHERE g.client_id = oauth_clients.client_id)",
        )
        .bind(OAuthClientKind::Dynamic.as_str())
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Stores a grant and its first authorization code in one transaction.
    pub async fn insert_oauth_grant(
        &self,
        g: &OAuthGrant,
        code: &NewOAuthCode,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO oauth_grants (id, client_id, client_name, persona, persona_id, \
             granted_by, resource, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&g.id)
        .bind(&g.client_id)
        .bind(&g.client_name)
        .bind(&g.persona)
        .bind(&g.persona_id)
        .bind(&g.granted_by)
        .bind(&g.resource)
        .bind(g.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&code.code_hash)
        .bind(&g.id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a code used. Only the first caller gets [`Redemption::First`], whatever the
    /// number of concurrent attempts: a second use is [`Redemption::Reused`].
    pub async fn redeem_oauth_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Redemption<RedeemedCode>, StoreError> {
        let claimed = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS}, c.redirect_uri, c.code_challenge, c.expires_at \
             FROM oauth_codes c JOIN oauth_grants g ON g.id = c.grant_id WHERE c.code_hash = $1"
        ))
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Redemption::Unknown);
        };
        let grant = grant_from_row(&row)?;
        if claimed.rows_affected() == 0 {
            return Ok(Redemption::Reused { grant_id: grant.id });
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        Ok(Redemption::First(RedeemedCode {
            grant,
            redirect_uri: row.try_get("redirect_uri")?,
            code_challenge: row.try_get("code_challenge")?,
            expired: expires_at <= now,
        }))
    }

    /// Stores a token of a grant.
    pub async fn insert_oauth_token(
        &self,
        token_hash: &str,
        grant_id: &str,
        kind: OAuthTokenKind,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_tokens (token_hash, grant_id, kind, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(grant_id)
        .bind(kind.as_str())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses a refresh token up (rotation). Only the first of concurrent uses gets
    /// [`Redemption::First`]; a token used before is [`Redemption::Reused`].
    pub async fn redeem_oauth_refresh(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Redemption<TokenGrant>, StoreError> {
        let claimed = sqlx::query(
            "UPDATE oauth_tokens SET used_at = $1 WHERE token_hash = $2 AND kind = $3 \
             AND used_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .bind(OAuthTokenKind::Refresh.as_str())
        .execute(&self.pool)
        .await?;
        match self
            .oauth_token_grant(token_hash, OAuthTokenKind::Refresh)
            .await?
        {
            None => Ok(Redemption::Unknown),
            Some(t) if claimed.rows_affected() == 0 => Ok(Redemption::Reused {
                grant_id: t.grant.id,
            }),
            Some(t) => Ok(Redemption::First(t)),
        }
    }

    /// The grant of a token of `kind`, expired or not.
    pub async fn oauth_token_grant(
        &self,
        token_hash: &str,
        kind: OAuthTokenKind,
    ) -> Result<Option<TokenGrant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS}, t.expires_at FROM oauth_tokens t \
             JOIN oauth_grants g ON g.id = t.grant_id WHERE t.token_hash = $1 AND t.kind = $2"
        ))
        .bind(token_hash)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TokenGrant {
                grant: grant_from_row(&row)?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Revokes a grant (its tokens stop at their next use); false if it was unknown or
    /// revoked already.
    pub async fn revoke_oauth_grant(
        &self,
        id: &str,
        why: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE oauth_grants SET revoked_at = $1, revoked_why = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(why)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Notes that a grant was used, at most once per `every_ms` (a write per call would
    /// cost more than the information is worth).
    pub async fn touch_oauth_grant(
        &self,
        id: &str,
        now: i64,
        every_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oauth_grants SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - every_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn oauth_grant(&self, id: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g WHERE g.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Grants, newest first; only `persona`'s when given.
    pub async fn list_oauth_grants(
        &self,
        persona: Option<&str>,
    ) -> Result<Vec<OAuthGrant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g WHERE ($1 = '' OR g.persona = $1) \
             ORDER BY g.created_at DESC LIMIT 1000"
        );
        let rows = sqlx::query(&sql)
            .bind(persona.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Drops codes and tokens that ended before `before` (they are refused anyway).
    pub async fn purge_ended_oauth_tokens(&self, before: i64) -> Result<u64, StoreError> {
        let codes = sqlx::query("DELETE FROM oauth_codes WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        let tokens = sqlx::query("DELETE FROM oauth_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(codes.rows_affected() + tokens.rows_affected())
    }
}
