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
use tokio::sync::Semaphore;

use crate::admin::ActingAdmin;
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

/// Password checks and hashes that may run at once, and how many more may wait.
///
/// Argon2id takes 19 MiB and a core for tens of milliseconds per password, and anyone can
/// post a sign-in form. Unbounded, a flood of sign-ins (random names dodge the per-name
/// limit) would queue work and memory without end; so at most one check per core runs, a
/// few more wait their turn, and beyond that the hub answers "busy" at once
/// ([`HubError::Limited`]) without hashing anything.
pub struct PasswordWork {
    running: Semaphore,
    admitted: Semaphore,
}

/// How long a caller turned away as busy is told to wait.
const PASSWORD_BUSY_RETRY_SECS: u64 = 2;

impl PasswordWork {
    /// `running` at once (at least 1), `waiting` more in line.
    pub fn new(running: usize, waiting: usize) -> PasswordWork {
        let running = running.max(1);
        PasswordWork {
            running: Semaphore::new(running),
            admitted: Semaphore::new(running + waiting),
        }
    }

    /// One check per core (at most 8: each holds 19 MiB), four times as many waiting.
    pub fn for_this_machine() -> PasswordWork {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let running = cores.clamp(1, 8);
        PasswordWork::new(running, 4 * running)
    }

    /// Runs `job` on a blocking thread when its turn comes, or refuses at once when the
    /// line is full.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HubError> {
        let Ok(_in_line) = self.admitted.try_acquire() else {
            return Err(HubError::Limited {
                message: "too many passwords are being checked right now; try again in a moment"
                    .into(),
                retry_after_secs: PASSWORD_BUSY_RETRY_SECS,
            });
        };
        let _turn = self
            .running
            .acquire()
            .await
            .map_err(|_| HubError::Unavailable("password checks have stopped".into()))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| HubError::Unavailable(format!("password hashing stopped: {e}")))
    }
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's baseline), off
/// the async threads and in line with every other password check ([`PasswordWork`]).
async fn hash_password(work: &PasswordWork, password: &SecretString) -> Result<String, HubError> {
    let password = password.clone();
    work.run(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| HubError::Unavailable(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HubError::Unavailable(format!("password hashing failed: {e}")))
    })
    .await?
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

/// True when `password` matches `stored`; an unknown user (`None`) is checked against a
/// decoy and fails. Busy ([`PasswordWork`]) is an error, never a "wrong password".
async fn verify_password(
    work: &PasswordWork,
    password: &SecretString,
    stored: Option<String>,
) -> Result<bool, HubError> {
    let password = password.clone();
    work.run(move || {
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
        let hash = hash_password(self.password_work(), password).await?;
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

    /// Gives a console user another role (refused for the last owner).
    pub async fn set_console_role(
        &self,
        name: &str,
        role: ConsoleRole,
    ) -> Result<ConsoleUser, HubError> {
        Ok(self.store().set_console_role(name, role, now_ms()).await?)
    }

    /// A user changes their own password: the current one must be right (else
    /// [`HubError::Unauthenticated`]). Ends all their sessions, like a reset.
    pub async fn change_console_password(
        &self,
        name: &str,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<(), HubError> {
        check_password(new)?;
        self.console_login(name, current).await?;
        self.reset_console_password(name, new).await
    }

    /// Sets a new password and ends the user's sessions.
    pub async fn reset_console_password(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<(), HubError> {
        check_password(password)?;
        let hash = hash_password(self.password_work(), password).await?;
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
        if verify_password(self.password_work(), password, stored).await?
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
        let hash = hash_password(self.password_work(), password).await?;
        Ok(self
            .store()
            .use_console_setup_token(&secret_hash(token), name, &hash, now_ms())
            .await?)
    }
}

impl ActingAdmin<'_> {
    /// [`Hub::add_console_user`], recorded as `admin.add_console_user` (the password is
    /// not).
    pub async fn add_console_user(
        &self,
        name: &str,
        password: &SecretString,
        role: ConsoleRole,
    ) -> Result<ConsoleUser, HubError> {
        let started = std::time::Instant::now();
        let r = self.hub().add_console_user(name, password, role).await;
        let args = serde_json::json!({ "name": name, "role": role });
        self.record(
            "admin.add_console_user",
            args,
            None,
            &r,
            user_value,
            started,
        )
        .await;
        r
    }

    /// [`Hub::remove_console_user`], recorded as `admin.remove_console_user`.
    pub async fn remove_console_user(&self, name: &str) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = self.hub().remove_console_user(name).await;
        let done = |_: &()| serde_json::json!({ "name": name, "removed": true });
        let args = serde_json::json!({ "name": name });
        self.record("admin.remove_console_user", args, None, &r, done, started)
            .await;
        r
    }

    /// [`Hub::set_console_role`], recorded as `admin.set_console_role`.
    pub async fn set_console_role(
        &self,
        name: &str,
        role: ConsoleRole,
    ) -> Result<ConsoleUser, HubError> {
        let started = std::time::Instant::now();
        let r = self.hub().set_console_role(name, role).await;
        let args = serde_json::json!({ "name": name, "role": role });
        self.record(
            "admin.set_console_role",
            args,
            None,
            &r,
            user_value,
            started,
        )
        .await;
        r
    }

    /// [`Hub::reset_console_password`] of another user, recorded as
    /// `admin.reset_console_password` (the password is not).
    pub async fn reset_console_password(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = self.hub().reset_console_password(name, password).await;
        let done = |_: &()| serde_json::json!({ "name": name, "password_reset": true });
        let args = serde_json::json!({ "name": name });
        self.record(
            "admin.reset_console_password",
            args,
            None,
            &r,
            done,
            started,
        )
        .await;
        r
    }

    /// [`Hub::change_console_password`] of the acting user, recorded as
    /// `admin.change_console_password` (neither password is).
    pub async fn change_own_console_password(
        &self,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let name = self.actor().name.clone();
        let r = self
            .hub()
            .change_console_password(&name, current, new)
            .await;
        let done = |_: &()| serde_json::json!({ "name": name, "password_changed": true });
        let args = serde_json::json!({ "name": name });
        self.record(
            "admin.change_console_password",
            args,
            None,
            &r,
            done,
            started,
        )
        .await;
        r
    }
}

fn user_value(u: &ConsoleUser) -> serde_json::Value {
    serde_json::json!({ "name": u.name, "role": u.role })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A flood of checks: never more than `running` at once, `waiting` more in line, and
    /// every one beyond that refused at once as busy, not queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_work_runs_a_bounded_number_and_turns_the_rest_away() {
        let work = Arc::new(PasswordWork::new(2, 3));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut calls = Vec::new();
        for _ in 0..20 {
            let (work, now, most, gate) = (work.clone(), now.clone(), most.clone(), gate.clone());
            calls.push(tokio::spawn(async move {
                work.run(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    // Held until the test lets one job go.
                    let _ = gate.lock().map(|g| g.recv());
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Every call beyond the 5 admitted answers at once, while the first ones still run.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let finished = calls.iter().filter(|c| c.is_finished()).count();
        assert_eq!(
            finished, 15,
            "the calls beyond running + waiting answer at once"
        );
        for _ in 0..5 {
            release.send(()).expect("a job waits");
        }
        let (mut ran, mut busy) = (0, 0);
        for c in calls {
            match c.await.expect("joined") {
                Ok(()) => ran += 1,
                Err(HubError::Limited {
                    retry_after_secs, ..
                }) => {
                    assert!(retry_after_secs >= 1);
                    busy += 1;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!((ran, busy), (5, 15));
        assert_eq!(most.load(Ordering::SeqCst), 2, "at most two at once");
        // The line is free again afterwards.
        let after = work.run(|| 7).await.expect("room again");
        assert_eq!(after, 7);
    }
}
