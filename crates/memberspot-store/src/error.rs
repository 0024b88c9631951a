//! The one error type of the store.
//!
//! Messages name things (a connection, a persona, a record's seq) but never carry secret
//! material: sealed keys and token hashes are never formatted into an error, and database
//! errors are reduced to the server's primary message (PostgreSQL puts offending key values
//! in the *detail*, which is dropped here).

/// Everything that can go wrong in the store. `Clone`, so that one failed batch can answer
/// every caller in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (e.g. "connection 'acme' not found").
    #[error("{0}")]
    NotFound(String),
    /// The change collides with existing data (duplicate name, connection still in use, ...).
    #[error("{0}")]
    Conflict(String),
    /// The caller passed a value the store cannot keep (empty name, NaN rate limit, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value could not be read back (e.g. a JSON column that no longer parses).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database could not be opened or connected to.
    #[error("cannot open the database: {0}")]
    Open(String),
    /// Applying the schema migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// The database was migrated by a newer `memberspot`: this binary does not open it.
    #[error(
        "the database schema is at version {database}, newer than this binary's {binary}: \
         a newer memberspot has upgraded it. Run that version (or newer), or restore a \
         backup taken before the upgrade; migrations are forward-only"
    )]
    TooNew { database: i64, binary: i64 },
    /// The re-seal callback of a master-key rotation failed; nothing was changed.
    #[error("re-sealing the key of connection '{connection}' failed: {message}")]
    Reseal { connection: String, message: String },
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub(crate) fn database(e: &sqlx::Error) -> StoreError {
        StoreError::Database(describe_sqlx(e))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::database(&e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => {
                StoreError::Migration(describe_sqlx(&inner))
            }
            other => StoreError::Migration(other.to_string()),
        }
    }
}

/// A secret-free description of a sqlx error: for server errors only the code and the
/// primary message (never PostgreSQL's DETAIL, which quotes key values such as token hashes).
pub(crate) fn describe_sqlx(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// True when `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `e` is a unique-constraint violation mentioning `column` (SQLite names the
/// column in its message, PostgreSQL's default constraint names contain it).
pub(crate) fn is_unique_violation_on(e: &sqlx::Error, column: &str) -> bool {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint().is_some_and(|c| c.contains(column)) || db.message().contains(column)
        }
        _ => false,
    }
}

/// True when `e` is a foreign-key violation.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// True when `e` is SQLite's SQLITE_BUSY (any extended variant): another connection holds a
/// lock that the busy timeout did not, or could not, wait out.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}
