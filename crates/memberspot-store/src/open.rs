//! Where the store connects (SQLite file paths and URLs, PostgreSQL URLs), opening it
//! (WAL, per-connection settings, migrations, the pool) and the kinds of transaction every
//! write or consistent read starts with.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, Connection as _, Executor, Transaction};

use crate::error::{self, describe_sqlx};
use crate::migrate::run_migrations;
use crate::{Backend, Store, StoreError, sqlite_lane};

/// PostgreSQL advisory lock key serializing audit appends and purges ("mshubaud").
const AUDIT_LOCK_KEY: i64 = 0x6d73_6875_6261_7564;
/// PostgreSQL advisory lock key serializing changes to sealed keys ("mshubkey").
const KEYS_LOCK_KEY: i64 = 0x6d73_6875_626b_6579;
/// PostgreSQL advisory lock key serializing uses of console setup links ("mshsetup").
const CONSOLE_USERS_LOCK_KEY: i64 = 0x6d73_6873_6574_7570;
/// How long SQLite waits for another writer (other connection or process) to finish.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

/// Where `Store::open` connects, resolved from the user's string.
pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// URL handed to sqlx.
    pub(crate) url: String,
    /// For error messages: the file path, or the PostgreSQL URL without its password.
    pub(crate) display: String,
    /// The SQLite file, unless it is opened read-only.
    writable_file: Option<PathBuf>,
    /// The SQLite file.
    pub(crate) sqlite_file: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    ///
    /// Accepts `"sqlite:///abs/path/hub.db"`, `"sqlite://relative.db"`, `"sqlite:relative.db"`,
    /// a bare file path (SQLite; the file and its parent directory are created if missing),
    /// or a `postgres://` / `postgresql://` URL. In SQLite URLs the path is taken literally;
    /// a `?query` is passed to sqlx (e.g. `?mode=ro`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, true).await
    }

    /// Opens the database as it is, applying no migration (a database newer than this
    /// binary is still refused). For copying a database that an older `memberspot` may
    /// still be running on: a backup taken before an upgrade must not upgrade it.
    pub async fn open_unmigrated(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, false).await
    }

    async fn open_with(url: &str, migrate: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let target = resolve_target(url)?;
        let options = AnyConnectOptions::from_str(&target.url)
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;

        // Connect once directly before building the pool: the pool silently retries refused
        // connections until its timeout and then reports only "timed out", while a single
        // connect reports the real cause. This connection also runs the migrations.
        let mut conn = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        if target.backend == Backend::Sqlite {
            enable_wal(&mut conn).await?;
        }
        let migrated = if migrate {
            run_migrations(&mut conn, target.backend).await
        } else {
            crate::migrate::check_not_newer(&mut conn, target.backend).await
        };
        // Best effort: the connection is done either way.
        let _ = conn.close().await;
        migrated?;

        let synchronous = sqlite_synchronous()?;
        let pool_options = match target.backend {
            Backend::Sqlite => {
                // Two of them are pinned by the hub's audit writer and directory check.
                AnyPoolOptions::new()
                    .max_connections(7)
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            // NORMAL under WAL: a crash never corrupts the database, but a
                            // power loss may drop the last commits; FULL syncs every commit.
                            conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
                                .await?;
                            // Per-connection settings (sqlx's defaults already match; stated here
                            // because the store's correctness depends on them).
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute(
                                format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(12),
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(format!("{}: {}", target.display, describe_sqlx(&e))))?;
        tracing::debug!(backend = %target.backend, "store opened");
        let lane = target
            .writable_file
            .filter(|_| synchronous == "NORMAL")
            .map(|path| sqlite_lane::LaneTarget::new(path, pool.clone()));
        Ok(Store {
            pool,
            backend: target.backend,
            location: target.display,
            sqlite_file: target.sqlite_file,
            audit_head: Default::default(),
            lane,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the store is, for people: the SQLite file, or the PostgreSQL URL without
    /// its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether pinned connections run statements on their holder's thread (SQLite
    /// under `synchronous = NORMAL`; see `sqlite_lane.rs`).
    pub fn has_lanes(&self) -> bool {
        self.lane.is_some()
    }

    /// Closes every pooled connection (for SQLite this also checkpoints the WAL into the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Resolves once [`Store::close`] has been called: holders of a
    /// [`PinnedConnection`] outside a task's wait use it to [`PinnedConnection::release`].
    pub async fn closed(&self) {
        self.pool.close_event().await;
    }

    // ---------------------------------------------------------------- transactions

    /// A transaction that will write. On SQLite, `BEGIN IMMEDIATE` takes the write lock up
    /// front (waiting up to the busy timeout), so a transaction that reads before it writes
    /// cannot fail midway with SQLITE_BUSY because another connection or process wrote in
    /// between. PostgreSQL needs nothing extra: row locks and constraints do the work.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// A write transaction in which purges of the audit chain, from any number of
    /// processes, run one at a time (appends are kept in line by the head trigger).
    pub(crate) async fn begin_audit_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        self.begin_serialized_write(AUDIT_LOCK_KEY).await
    }

    /// A write transaction in which changes to sealed keys that read them first (master-key
    /// rotation, re-binding, a rename), from any number of processes, run one at a time.
    pub(crate) async fn begin_keys_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        self.begin_serialized_write(KEYS_LOCK_KEY).await
    }

    /// A write transaction in which changes to who the console users are and what they may
    /// do run one at a time: two setup links used at once must not both find "no console
    /// user yet", and two owners demoting or removing each other at once must not both
    /// find "another owner is left".
    pub(crate) async fn begin_console_users_write(
        &self,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        self.begin_serialized_write(CONSOLE_USERS_LOCK_KEY).await
    }

    /// A write transaction that, on PostgreSQL, first takes the advisory lock `key`, so
    /// that transactions taking the same key run one at a time across processes (READ
    /// COMMITTED alone lets two of them read the same "before"). SQLite's `BEGIN
    /// IMMEDIATE` already serializes every writer.
    async fn begin_serialized_write(
        &self,
        key: i64,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Transaction-scoped: released by COMMIT/ROLLBACK, also if the process dies.
            // (Selected via FROM because the function returns `void`, which Any cannot decode.)
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// A read-only transaction whose reads all see one snapshot.
    pub(crate) async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            // A deferred SQLite transaction in WAL mode reads one snapshot from its first read.
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        };
        Ok(tx)
    }
}

/// WAL is a property of the file (readers no longer block the writer), so it is set once
/// here rather than per pooled connection. Switching needs an exclusive lock that SQLite's busy
/// timeout does not wait for: another process opening the same new file at the same moment
/// can make it fail, so retry for up to the busy timeout.
pub(crate) async fn enable_wal(conn: &mut AnyConnection) -> Result<(), StoreError> {
    let deadline =
        std::time::Instant::now() + Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
    loop {
        let res: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await;
        let retry = match &res {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(_) => true,
            Err(e) => error::is_busy(e),
        };
        if !retry || std::time::Instant::now() >= deadline {
            return match res {
                Ok(mode) => Err(StoreError::Open(format!(
                    "cannot switch the SQLite file to WAL mode (it stays in '{mode}' mode)"
                ))),
                Err(e) => Err(e.into()),
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The scheme of `url` if it starts like one (`word://`).
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

fn resolve_target(url: &str) -> Result<Target, StoreError> {
    resolve_target_as(url, false)
}

/// Resolves `url`; `read_only` opens a SQLite file read-only (and creates nothing).
pub(crate) fn resolve_target_as(url: &str, read_only: bool) -> Result<Target, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target {
            backend: Backend::Postgres,
            url: url.to_owned(),
            display: redact_url(url),
            writable_file: None,
            sqlite_file: None,
        });
    }
    let (path, query) = match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(rest) => match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        },
        // A bare path: taken whole, even if it contains '?'; but something that looks like
        // a URL of another scheme is a mistake (a typo in `postgres://`), not a file name.
        None => {
            if let Some(scheme) = url_scheme(url) {
                return Err(StoreError::Invalid(format!(
                    "database URL scheme `{scheme}://` is not supported: use postgres://, \
                     postgresql:// or sqlite:// (or a file path)"
                )));
            }
            (url, None)
        }
    };
    if path.is_empty() || path == ":memory:" {
        // sqlx's Any driver would give every pooled connection its own in-memory database.
        return Err(StoreError::Invalid(
            "SQLite needs a file path (in-memory databases are not supported; use a file in a \
             temporary directory)"
                .into(),
        ));
    }
    let query = match query {
        _ if read_only => "mode=ro".to_owned(),
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) if !q.is_empty() => format!("{q}&mode=rwc"),
        _ => "mode=rwc".to_owned(),
    };
    let path = std::path::absolute(Path::new(path))
        .map_err(|e| StoreError::Open(format!("{path}: {e}")))?;
    let display = path.display().to_string();
    if query.contains("mode=rwc") {
        create_parent_dir(&path)?;
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("{display}: path is not valid UTF-8")))?;
    let writable = !query.contains("mode=ro");
    Ok(Target {
        backend: Backend::Sqlite,
        url: format!("sqlite://{}?{query}", percent_encode_path(path_str)),
        display,
        writable_file: writable.then_some(path.clone()),
        sqlite_file: Some(path),
    })
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    let parent: Option<PathBuf> = path.parent().map(Path::to_path_buf);
    if let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// sqlx percent-decodes the path of a `sqlite://` URL, so encode everything but the plainest
/// characters (spaces, `%`, `?`, `#`, non-ASCII, ...).
fn percent_encode_path(path: &str) -> String {
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(path, KEEP).to_string()
}

/// The URL without its password, for error messages. Everything before the last `@` is
/// the user part, as a person reads it: a password holding an unencoded `/`, `?` or `#`
/// (which a URL parser takes as the end of the user part, showing the rest of the
/// password as host, port or path) is hidden as well.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Environment variable choosing SQLite's `synchronous` setting.
pub const SQLITE_SYNCHRONOUS_ENV: &str = "MEMBERSPOT_SQLITE_SYNCHRONOUS";

/// `NORMAL` (default) or `FULL`, from [`SQLITE_SYNCHRONOUS_ENV`].
fn sqlite_synchronous() -> Result<&'static str, StoreError> {
    match std::env::var(SQLITE_SYNCHRONOUS_ENV) {
        Err(_) => Ok("NORMAL"),
        Ok(v) => match v.trim().to_ascii_uppercase().as_str() {
            "" | "NORMAL" => Ok("NORMAL"),
            "FULL" => Ok("FULL"),
            other => Err(StoreError::Invalid(format!(
                "{SQLITE_SYNCHRONOUS_ENV} must be NORMAL or FULL, got `{other}`"
            ))),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn targets_resolve() {
        let t = resolve_target("postgres://u:secret@db:5432/hub").unwrap();
        assert_eq!(t.backend, Backend::Postgres);
        assert_eq!(t.display, "postgres://u:***@db:5432/hub");
        assert!(!t.display.contains("secret"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a dir/h?b#%.db");
        let t = resolve_target(p.to_str().unwrap()).unwrap();
        assert_eq!(t.backend, Backend::Sqlite);
        assert!(t.url.starts_with("sqlite:///"));
        assert!(t.url.ends_with("?mode=rwc"));
        assert!(t.url.contains("a%20dir/h%3Fb%23%25.db"));
        assert!(dir.path().join("a dir").is_dir());

        let t = resolve_target("sqlite://rel.db").unwrap();
        assert!(t.url.starts_with("sqlite:///"));
        assert!(t.url.ends_with("/rel.db?mode=rwc"));
        let t = resolve_target("sqlite:///abs/x.db?mode=ro").unwrap();
        assert_eq!(t.url, "sqlite:///abs/x.db?mode=ro");

        assert!(matches!(
            resolve_target("sqlite::memory:"),
            Err(StoreError::Invalid(_))
        ));

        // A mistyped or foreign scheme is refused, not taken as a file name; the error
        // names the scheme and nothing else of the URL.
        for url in ["postgress://u:pw@db/hub", "mysql://u:pw@db/hub"] {
            match resolve_target(url) {
                Err(StoreError::Invalid(m)) => {
                    assert!(m.contains(url.split_once(':').unwrap().0), "{m}");
                    assert!(!m.contains("pw"), "{m}");
                }
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url} was accepted"),
            }
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db?x=1"),
            "postgresql://u:***@h/db?x=1"
        );
        // Passwords with characters that end a URL's user part early (generated
        // passwords often hold `/`): none of the password shows.
        for (url, shown) in [
            ("postgres://u:Zm9v/YmFy@h/db", "postgres://u:***@h/db"),
            ("postgres://u:12/ss@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:pa?ss@h/db?x=1", "postgres://u:***@h/db?x=1"),
            ("postgres://u:pa#ss@h/db", "postgres://u:***@h/db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn sqlite_paths_are_percent_encoded_for_sqlx() {
        assert_eq!(
            percent_encode_path("/tmp/a b/hub%1?#ü.db"),
            "/tmp/a%20b/hub%251%3F%23%C3%BC.db"
        );
        assert_eq!(percent_encode_path("/x/Hub-1_v2.~db"), "/x/Hub-1_v2.~db");
    }
}
