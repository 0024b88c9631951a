//! The web console's users, sessions and first-run setup links (migration 0007).
//!
//! Passwords arrive here already hashed (Argon2id, by the hub) and session ids and setup
//! tokens as their SHA-256: nothing stored here signs anyone in on its own.

use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{is_foreign_key_violation, is_unique_violation};
use crate::kinds::{parse_stored, stored_text};
use crate::{Store, StoreError, check_name};

stored_text! {
    /// What a console user may do.
    pub enum ConsoleRole("console role") {
        /// Everything, including changes.
        Owner = "owner",
        /// The read-only pages.
        Viewer = "viewer",
    }
}

/// A console user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: ConsoleRole,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for ConsoleUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleUser")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A live session with its user, as [`Store::console_session`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub user: String,
    pub role: ConsoleRole,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

const USER_SELECT: &str =
    "SELECT name, password_hash, role, created_at, updated_at FROM console_users";

fn user_from_row(row: &AnyRow) -> Result<ConsoleUser, StoreError> {
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    Ok(ConsoleUser {
        role: parse_stored(&role, &format!("console user '{name}'"))?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        name,
    })
}

fn user_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("console user '{name}' not found"))
}

fn last_owner(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "console user '{name}' is the last owner; make another user owner first"
    ))
}

/// A user's role, read inside the console-users transaction.
async fn role_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
) -> Result<Option<ConsoleRole>, StoreError> {
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM console_users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    role.map(|r| parse_stored(&r, &format!("console user '{name}'")))
        .transpose()
}

/// How many owners there are other than `name`.
async fn owners_besides(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM console_users WHERE role = $1 AND name <> $2")
            .bind(ConsoleRole::Owner.as_str())
            .bind(name)
            .fetch_one(&mut **tx)
            .await?,
    )
}

impl Store {
    /// Adds a console user; a taken name is a [`StoreError::Conflict`].
    pub async fn insert_console_user(
        &self,
        name: &str,
        password_hash: &str,
        role: ConsoleRole,
        now: i64,
    ) -> Result<ConsoleUser, StoreError> {
        check_name("console user", name)?;
        let r = sqlx::query(
            "INSERT INTO console_users (name, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "console user '{name}' already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.console_user(name)
            .await?
            .ok_or_else(|| user_not_found(name))
    }

    /// Every console user, by name.
    pub async fn list_console_users(&self) -> Result<Vec<ConsoleUser>, StoreError> {
        let rows = sqlx::query(&format!("{USER_SELECT} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn console_user(&self, name: &str) -> Result<Option<ConsoleUser>, StoreError> {
        let row = sqlx::query(&format!("{USER_SELECT} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn count_console_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM console_users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Removes a console user and, with it, their sessions. False if there was none.
    /// Refused ([`StoreError::Conflict`]) when it would leave users but no owner; removing
    /// the very last user returns the hub to its first run (a setup link).
    pub async fn remove_console_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_console_users_write().await?;
        let Some(role) = role_in(&mut tx, name).await? else {
            return Ok(false);
        };
        if role == ConsoleRole::Owner {
            let others: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM console_users WHERE name <> $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            if others > 0 && owners_besides(&mut tx, name).await? == 0 {
                return Err(last_owner(name));
            }
        }
        sqlx::query("DELETE FROM console_sessions WHERE user_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM console_users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Gives a console user another role; the change applies to their open sessions at
    /// once (a session reads the role on every request). [`StoreError::NotFound`] if there
    /// is no such user, [`StoreError::Conflict`] if it would demote the last owner.
    pub async fn set_console_role(
        &self,
        name: &str,
        role: ConsoleRole,
        now: i64,
    ) -> Result<ConsoleUser, StoreError> {
        let mut tx = self.begin_console_users_write().await?;
        let Some(current) = role_in(&mut tx, name).await? else {
            return Err(user_not_found(name));
        };
        if current == ConsoleRole::Owner
            && role != ConsoleRole::Owner
            && owners_besides(&mut tx, name).await? == 0
        {
            return Err(last_owner(name));
        }
        sqlx::query("UPDATE console_users SET role = $1, updated_at = $2 WHERE name = $3")
            .bind(role.as_str())
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("{USER_SELECT} WHERE name = $1"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(user)
    }

    /// Replaces a user's password hash and ends all their sessions (a reset password
    /// signs every browser out). [`StoreError::NotFound`] if there is no such user.
    pub async fn set_console_password(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE console_users SET password_hash = $1, updated_at = $2 WHERE name = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(user_not_found(name));
        }
        sqlx::query("DELETE FROM console_sessions WHERE user_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new session of `user`, ending at `expires_at` at the latest.
    pub async fn insert_console_session(
        &self,
        id_hash: &str,
        user: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO console_sessions (id_hash, user_name, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(id_hash)
        .bind(user)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(user_not_found(user)),
            Err(e) => Err(e.into()),
        }
    }

    /// The session with this id hash if it is still live at `now`: before its absolute end
    /// and seen within `idle_ms`. Its last-seen time moves to `now` (written at most once a
    /// minute, so page views do not each cost a write). An ended session is deleted.
    pub async fn console_session(
        &self,
        id_hash: &str,
        now: i64,
        idle_ms: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let row = sqlx::query(
            "SELECT s.user_name, u.role, s.created_at, s.last_seen_at, s.expires_at \
             FROM console_sessions s JOIN console_users u ON u.name = s.user_name \
             WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user: String = row.try_get("user_name")?;
        let role: String = row.try_get("role")?;
        let session = ConsoleSession {
            role: parse_stored(&role, &format!("console user '{user}'"))?,
            user,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
        };
        if now >= session.expires_at || now - session.last_seen_at >= idle_ms {
            self.delete_console_session(id_hash).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= 60_000 {
            sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(id_hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(session))
    }

    /// Ends one session (logout). False if there was none.
    pub async fn delete_console_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ends every session of `user` (logout everywhere); how many there were.
    pub async fn delete_console_sessions_of(&self, user: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE user_name = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Deletes sessions and setup links that ended before `now` (sessions idle for
    /// `idle_ms` included); how many rows went.
    pub async fn purge_console_sessions(&self, now: i64, idle_ms: i64) -> Result<u64, StoreError> {
        let a = sqlx::query(
            "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at <= $2",
        )
        .bind(now)
        .bind(now - idle_ms)
        .execute(&self.pool)
        .await?;
        let b = sqlx::query("DELETE FROM console_setup_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    /// Stores a first-run setup link's token hash, valid until `expires_at`.
    pub async fn insert_console_setup_token(
        &self,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// True if the setup link is unused, not expired and no console user exists yet.
    pub async fn console_setup_token_usable(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM console_setup_tokens WHERE token_hash = $1 AND used_at IS NULL \
             AND expires_at > $2 AND NOT EXISTS (SELECT 1 FROM console_users)",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Uses a setup link: in one transaction, marks it used and adds the first user as
    /// owner. Refused ([`StoreError::Invalid`]) when the link is unknown, used, expired, or
    /// a console user exists already; nothing is stored then.
    pub async fn use_console_setup_token(
        &self,
        token_hash: &str,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<ConsoleUser, StoreError> {
        check_name("console user", name)?;
        let mut tx = self.begin_console_users_write().await?;
        let used = sqlx::query(
            "UPDATE console_setup_tokens SET used_at = $1 WHERE token_hash = $2 \
             AND used_at IS NULL AND expires_at > $1 \
             AND NOT EXISTS (SELECT 1 FROM console_users)",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() == 0 {
            return Err(StoreError::Invalid(
                "this setup link is unknown, used or expired".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO console_users (name, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(ConsoleRole::Owner.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.console_user(name)
            .await?
            .ok_or_else(|| user_not_found(name))
    }
}
