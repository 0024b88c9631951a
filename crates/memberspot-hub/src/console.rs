//! The web console's users, sessions and first-run setup links: the operations the CLI
//! (`memberspot console …`) and the console itself share. No HTTP here: cookies, CSRF and
//! pages live in `memberspot-console`.
//!
//! Passwords are kept as Argon2id hashes; session ids and setup tokens (256 random bits)
//! are handed out once and stored as their SHA-256, like persona tokens.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::{Hub, HubError};
pub use memberspot_store::{ConsoleRole, ConsoleSession, ConsoleUser};

/// How long a first-run setup link works.
pub const SETUP_LINK_VALIDITY: Duration = Duration::from_secs(3600);
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password, in bytes (hashing is deliberately slow; a huge input must
/// not make it slower).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The one message of a failed sign-in, whether the user exists or not.
pub const LOGIN_FAILED: &str = "wrong name or password";

/// A console user's name: 1–64 letters, digits, `.`, `_`, `-` or `@`. It appears in audit
/// records as `console:NAME`.
pub fn check_user_name(name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(HubError::Invalid(format!(
            "name: `{}` is not a console user name (1–64 letters, digits, `.`, `_`, `-` or `@`)",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// A new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password(password: &SecretString) -> Result<(), HubError> {
    let p = password.expose_secret();
    if p.chars().count() < MIN_PASSWORD_CHARS {
        return Err(HubError::Invalid(format!(
            "password: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(HubError::Invalid(format!(
            "password: use at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's baseline), off
/// the async threads.
async fn hash_password(password: &SecretString) -> Result<String, HubError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| HubError::Unavailable(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HubError::Unavailable(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| HubError::Unavailable(format!("password hashing stopped: {e}")))?
}

/// A hash of a password nobody knows, verified against when the user does not exist so
/// that a failed sign-in takes as long either way.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let Ok(salt) = SaltString::encode_b64(&salt) else {
            return String::new();
        };
        Argon2::default()
            .hash_password(&secret, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

async fn verify_password(password: &SecretString, stored: Option<String>) -> bool {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| decoy_hash().to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// 256 random bits, URL-safe.
fn mint_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

fn secret_hash(s: &SecretString) -> String {
    crate::tokens::hash(s.expose_secret())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Hub {
    /// Adds a console user (`console add-user`).
    pub async fn add_console_user(
        &self,
        name: &str,
        password: &SecretString,
        role: ConsoleRole,
    ) -> Result<ConsoleUser, HubError> {
        check_user_name(name)?;
        check_password(password)?;
        let hash = hash_password(password).await?;
        Ok(self
            .store()
            .insert_console_user(name, &hash, role, now_ms())
            .await?)
    }

    pub async fn list_console_users(&self) -> Result<Vec<ConsoleUser>, HubError> {
        Ok(self.store().list_console_users().await?)
    }

    pub async fn has_console_users(&self) -> Result<bool, HubError> {
        Ok(self.store().count_console_users().await? > 0)
    }

    /// Removes a console user and ends their sessions.
    pub async fn remove_console_user(&self, name: &str) -> Result<(), HubError> {
        if self.store().remove_console_user(name).await? {
            Ok(())
        } else {
            Err(HubError::NotFound(format!(
                "console user '{name}' not found"
            )))
        }
    }

    /// Sets a new password and ends the user's sessions.
    pub async fn reset_console_password(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<(), HubError> {
        check_password(password)?;
        let hash = hash_password(password).await?;
        Ok(self
            .store()
            .set_console_password(name, &hash, now_ms())
            .await?)
    }

    /// Checks a name and password. A wrong password and an unknown user fail alike
    /// ([`LOGIN_FAILED`]) and take comparable time (an unknown user is checked against a
    /// decoy hash).
    pub async fn console_login(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<ConsoleUser, HubError> {
        let user = if name.is_empty() || password.expose_secret().len() > MAX_PASSWORD_BYTES {
            None
        } else {
            self.store().console_user(name).await?
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        if verify_password(password, stored).await
            && let Some(u) = user
        {
            return Ok(u);
        }
        Err(HubError::Unauthenticated(LOGIN_FAILED.into()))
    }

    /// Opens a session for `user` that ends after `absolute` at the latest; the returned
    /// id goes into the cookie and is stored only as its hash.
    pub async fn open_console_session(
        &self,
        user: &str,
        absolute: Duration,
    ) -> Result<SecretString, HubError> {
        let id = mint_secret();
        let now = now_ms();
        self.store()
            .insert_console_session(&secret_hash(&id), user, now, now + millis(absolute))
            .await?;
        Ok(id)
    }

    /// The live session with this id, if any (idle for less than `idle`, before its
    /// absolute end).
    pub async fn console_session(
        &self,
        id: &SecretString,
        idle: Duration,
    ) -> Result<Option<ConsoleSession>, HubError> {
        Ok(self
            .store()
            .console_session(&secret_hash(id), now_ms(), millis(idle))
            .await?)
    }

    /// Ends one session (logout).
    pub async fn end_console_session(&self, id: &SecretString) -> Result<(), HubError> {
        self.store()
            .delete_console_session(&secret_hash(id))
            .await?;
        Ok(())
    }

    /// Ends every session of `user` (logout everywhere); how many there were.
    pub async fn end_console_sessions_of(&self, user: &str) -> Result<u64, HubError> {
        Ok(self.store().delete_console_sessions_of(user).await?)
    }

    /// Deletes ended sessions and setup links.
    pub async fn purge_console_sessions(&self, idle: Duration) -> Result<u64, HubError> {
        Ok(self
            .store()
            .purge_console_sessions(now_ms(), millis(idle))
            .await?)
    }

    /// A one-time setup token for the first owner, valid for [`SETUP_LINK_VALIDITY`], or
    /// `None` when console users exist already.
    pub async fn issue_console_setup_token(&self) -> Result<Option<SecretString>, HubError> {
        if self.has_console_users().await? {
            return Ok(None);
        }
        let token = mint_secret();
        let now = now_ms();
        self.store()
            .insert_console_setup_token(
                &secret_hash(&token),
                now,
                now + millis(SETUP_LINK_VALIDITY),
            )
            .await?;
        Ok(Some(token))
    }

    /// True while the setup token can still be used.
    pub async fn console_setup_usable(&self, token: &SecretString) -> Result<bool, HubError> {
        Ok(self
            .store()
            .console_setup_token_usable(&secret_hash(token), now_ms())
            .await?)
    }

    /// Uses the setup token: the first owner is created with this name and password, and
    /// the token stops working.
    pub async fn finish_console_setup(
        &self,
        token: &SecretString,
        name: &str,
        password: &SecretString,
    ) -> Result<ConsoleUser, HubError> {
        check_user_name(name)?;
        check_password(password)?;
        // A cheap refusal first: hashing is deliberately slow, and anyone can post here.
        if !self.console_setup_usable(token).await? {
            return Err(HubError::Invalid(
                "this setup link is unknown, used or expired".into(),
            ));
        }
        let hash = hash_password(password).await?;
        Ok(self
            .store()
            .use_console_setup_token(&secret_hash(token), name, &hash, now_ms())
            .await?)
    }
}
