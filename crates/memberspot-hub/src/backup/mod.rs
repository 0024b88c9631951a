//! Backups that restore: one encrypted file with what a hub needs to start again — a
//! consistent copy of the database (SQLite, taken while the hub runs), the master key
//! (unless it is kept separately) and the hub's files (rules, flows, models, config,
//! the admin token, the embedded school) — and its restore into an empty directory.
//!
//! A restore writes nothing to the target until the whole file has opened and checked:
//! every chunk authenticated up to the marked last one, every entry a name of a data
//! directory, the database opened by this binary, the master key matched against it and
//! the audit chain verified. It then moves the files into place.

mod archive;
mod sealed;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use memberspot_store::{AuditVerification, Backend, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::bootstrap::HubSettings;
use crate::secrets::{CHECK_META_KEY, MasterKey};

pub use archive::{ALLOWED, Manifest, ManifestFile};
pub use sealed::{MAGIC, MIN_PASSPHRASE_CHARS};

/// Why a backup or restore failed. Nothing is left half-written either way.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the passphrase does not open this backup")]
    WrongPassphrase,
    #[error("the file is not a memberspot backup")]
    NotABackup,
    #[error("the backup is damaged or was altered: {0}; nothing was restored")]
    Damaged(String),
    #[error("the backup is refused: {0}; nothing was restored")]
    Refused(String),
    #[error("{0} is not empty: restore into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("{0} already exists: choose another file name")]
    Exists(PathBuf),
    #[error("the passphrase is too short: use at least {MIN_PASSPHRASE_CHARS} characters")]
    WeakPassphrase,
    #[error(
        "the hub's database is PostgreSQL, which `memberspot backup` does not copy: back it up \
         with pg_dump (see docs/operations.md), and pass --files-only to back up the hub's own \
         files (master key, rules, flows, models, config)"
    )]
    PostgresDatabase,
    #[error("{0}")]
    MasterKey(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackupError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::WrongPassphrase => "wrong_passphrase",
            BackupError::NotABackup => "not_a_backup",
            BackupError::Damaged(_) => "damaged",
            BackupError::Refused(_) => "refused_entry",
            BackupError::NotEmpty(_) => "not_empty",
            BackupError::Exists(_) => "exists",
            BackupError::WeakPassphrase => "weak_passphrase",
            BackupError::PostgresDatabase => "postgres_store",
            BackupError::MasterKey(_) => "master_key",
            BackupError::Io(_) => "io",
            BackupError::Store(StoreError::TooNew { .. }) => "schema_newer_than_binary",
            BackupError::Store(_) => "store",
        }
    }

    fn write(e: std::io::Error) -> BackupError {
        BackupError::Io(format!("cannot write: {e}"))
    }

    fn read(e: std::io::Error) -> BackupError {
        BackupError::Io(format!("cannot read: {e}"))
    }

    /// An I/O error from reading the sealed stream: a chunk that did not open comes back
    /// as the [`BackupError`] it was; an early end is damage.
    fn from_io(e: std::io::Error) -> BackupError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return BackupError::Damaged("it ends early".into());
        }
        match e.into_inner() {
            Some(inner) => match inner.downcast::<BackupError>() {
                Ok(b) => *b,
                Err(other) => BackupError::Io(format!("cannot read: {other}")),
            },
            None => BackupError::Io("cannot read".into()),
        }
    }

    fn at(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
        move |e| BackupError::Io(format!("{}: {e}", path.display()))
    }
}

/// One of the hub's files outside the database, to put in a backup under `name` (one of
/// `rules.toml`, `flows.toml`, `models.toml`, `config.toml`).
#[derive(Debug, Clone)]
pub struct HubFile {
    pub name: &'static str,
    pub path: PathBuf,
}

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub settings: HubSettings,
    /// The rules, flows, models and config files in use (where they are).
    pub files: Vec<HubFile>,
    /// Put the master key in the backup; without it, it must be kept separately.
    pub include_master_key: bool,
    /// PostgreSQL: back up the hub's files only (the database goes with `pg_dump`).
    pub files_only: bool,
}

/// A step of a backup or restore, for progress output.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Progress {
    /// The database copy is taken.
    Snapshot { bytes: u64 },
    /// A file went into the backup, or came out of it.
    File { name: String, bytes: u64 },
    /// The restored database opened and was checked.
    Checked,
}

/// What a backup holds.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub file: String,
    /// The size of the encrypted file.
    pub bytes: u64,
    pub manifest: Manifest,
}

/// What a restore found and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub dir: String,
    pub manifest: Manifest,
    /// The checks of the restored database (absent when the backup has none).
    pub database: Option<RestoredDatabase>,
    /// What the operator still has to do.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredDatabase {
    pub schema_version: Option<i64>,
    pub audit: AuditVerification,
    pub personas: usize,
    pub connections: usize,
    /// Connections whose API key opens with the restored (or given) master key; `None`
    /// when no master key was at hand to try.
    pub connections_opening: Option<usize>,
    pub events: i64,
}

/// Refuses passphrases too short to protect a hub's secrets.
pub fn check_passphrase(p: &SecretString) -> Result<(), BackupError> {
    if p.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::WeakPassphrase);
    }
    Ok(())
}

/// Writes an encrypted backup of the hub to `out` (which must not exist), while the hub
/// may be running: the database is copied in one consistent read.
pub async fn create(
    req: &BackupRequest,
    passphrase: &SecretString,
    out: &Path,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupReport, BackupError> {
    check_passphrase(passphrase)?;
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let settings = &req.settings;
    let url = settings.database_url();
    if !Store::schema_status(&url).await?.exists {
        return Err(BackupError::Io(format!(
            "there is no hub database at {} yet: nothing to back up",
            settings.data_dir.join(archive::DATABASE).display()
        )));
    }
    // As it is: a backup taken before an upgrade, by the new binary, must not migrate the
    // database the old one still runs on.
    let store = Store::open_unmigrated(&url).await?;
    let result = async {
        let backend = store.backend();
        if backend == Backend::Postgres && !req.files_only {
            return Err(BackupError::PostgresDatabase);
        }
        let key = if req.include_master_key {
            Some(master_key_of(settings, &store).await?)
        } else {
            None
        };
        let schema = store.schema().await?;
        // The snapshot lives next to the database (owner-only directory) until it is sealed.
        let work = Workdir::new(&settings.data_dir)?;
        let mut entries: Vec<(String, PathBuf, String)> = Vec::new();
        let mut audit_head = None;
        if backend == Backend::Sqlite {
            let copy = work.path.join(archive::DATABASE);
            audit_head = Some(store.snapshot_into(&copy).await?.to_string());
            progress(Progress::Snapshot {
                bytes: file_len(&copy)?,
            });
            let source = store
                .sqlite_file()
                .map_or_else(|| store.location().to_owned(), |p| p.display().to_string());
            entries.push((archive::DATABASE.into(), copy, source));
        }
        if let Some((key, source)) = &key {
            let path = work.path.join(archive::MASTER_KEY);
            write_private(&path, key.encode().expose_secret().as_bytes())?;
            entries.push((archive::MASTER_KEY.into(), path, source.clone()));
        }
        for name in ["admin.token", "sandbox/school.json"] {
            let path = settings.data_dir.join(name);
            if path.is_file() {
                entries.push((name.into(), path.clone(), path.display().to_string()));
            }
        }
        for f in &req.files {
            archive::check_name(f.name)?;
            entries.push((f.name.into(), f.path.clone(), f.path.display().to_string()));
        }
        let mut files = Vec::new();
        for (name, path, source) in &entries {
            files.push(ManifestFile {
                name: name.clone(),
                bytes: file_len(path)?,
                source: source.clone(),
            });
        }
        let manifest = Manifest {
            format: 1,
            hub_version: env!("CARGO_PKG_VERSION").into(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            backend: backend.to_string(),
            database_included: backend == Backend::Sqlite,
            master_key_included: key.is_some(),
            schema_version: schema.database_version,
            audit_head,
            files,
        };
        let bytes = blocking(|| write_sealed(out, passphrase, &manifest, &entries, progress))?;
        Ok(BackupReport {
            file: out.display().to_string(),
            bytes,
            manifest,
        })
    }
    .await;
    store.close().await;
    result
}

/// The master key in force and where it came from, checked against the database.
async fn master_key_of(
    settings: &HubSettings,
    store: &Store,
) -> Result<(MasterKey, String), BackupError> {
    let (key, source) =
        MasterKey::load_or_create(settings.master_key.as_deref(), &settings.key_file(), false)
            .map_err(|e| BackupError::MasterKey(e.to_string()))?;
    if let Some(check) = store.get_meta(CHECK_META_KEY).await?
        && !key.matches_check(&check)
    {
        return Err(BackupError::MasterKey(
            "the master key in force does not open this database's secrets: a backup with it \
             would not restore the connections"
                .into(),
        ));
    }
    let source = match source {
        crate::secrets::KeySource::Env => crate::secrets::MASTER_KEY_ENV.to_owned(),
        crate::secrets::KeySource::File(p) | crate::secrets::KeySource::CreatedFile(p) => {
            p.display().to_string()
        }
    };
    Ok((key, source))
}

fn path_str(p: &Path) -> Result<&str, BackupError> {
    p.to_str()
        .ok_or_else(|| BackupError::Io(format!("{}: path is not valid UTF-8", p.display())))
}

/// Runs blocking file work (sealing, opening) off the runtime's worker where the runtime
/// allows it; on a single-threaded runtime (tests) in place.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

fn write_sealed(
    out: &Path,
    passphrase: &SecretString,
    manifest: &Manifest,
    entries: &[(String, PathBuf, String)],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, BackupError> {
    let partial = out.with_extension(format!(
        "{}partial",
        out.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    // Another backup writing the same file holds the partial one: refused, left alone.
    let file = create_private(&partial).map_err(|_| BackupError::Exists(partial.clone()))?;
    let written = seal_entries(file, passphrase, manifest, entries, progress).and_then(|bytes| {
        // A link, not a rename: it never replaces a file that appeared meanwhile.
        std::fs::hard_link(&partial, out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
            _ => BackupError::at(out)(e),
        })?;
        Ok(bytes)
    });
    let _ = std::fs::remove_file(&partial);
    written
}

/// Seals the manifest and the entries' contents into `file`; answers the bytes written.
fn seal_entries(
    file: File,
    passphrase: &SecretString,
    manifest: &Manifest,
    entries: &[(String, PathBuf, String)],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<u64, BackupError> {
    let mut w = sealed::SealedWriter::new(BufWriter::new(file), passphrase)?;
    archive::write_manifest(&mut w, manifest)?;
    for ((name, path, _), listed) in entries.iter().zip(&manifest.files) {
        let mut f = File::open(path).map_err(BackupError::at(path))?;
        archive::write_entry_header(&mut w, name, listed.bytes)?;
        // Exactly the size listed: a file that grew since is cut, one that shrank fails.
        let copied = std::io::copy(&mut (&mut f).take(listed.bytes), &mut w)
            .map_err(BackupError::at(path))?;
        if copied != listed.bytes {
            return Err(BackupError::Io(format!(
                "{} changed while it was backed up; try again",
                path.display()
            )));
        }
        progress(Progress::File {
            name: name.clone(),
            bytes: listed.bytes,
        });
    }
    archive::write_end(&mut w)?;
    let (buffered, bytes) = w.finish()?;
    let file = buffered
        .into_inner()
        .map_err(|e| BackupError::write(e.into_error()))?;
    file.sync_all().map_err(BackupError::write)?;
    Ok(bytes)
}

/// Restores the backup `file` into `dir`, which must be empty or not exist. `master_key`
/// (the environment's) is used to check the connections when the backup has no key.
pub async fn restore(
    file: &Path,
    passphrase: &SecretString,
    dir: &Path,
    master_key: Option<&str>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<RestoreReport, BackupError> {
    check_empty(dir)?;
    let parent = absolute_parent(dir)?;
    let stage = Workdir::new(&parent)?;
    let manifest = blocking(|| read_sealed(file, passphrase, &stage.path, progress))?;
    let mut notes = Vec::new();
    let key = match (manifest.master_key_included, master_key) {
        (true, _) => Some(
            MasterKey::parse(
                &std::fs::read_to_string(stage.path.join(archive::MASTER_KEY))
                    .map_err(BackupError::at(&stage.path))?,
            )
            .map_err(|e| BackupError::Damaged(format!("its master key does not read: {e}")))?,
        ),
        (false, Some(env)) => Some(MasterKey::parse(env).map_err(|e| {
            BackupError::MasterKey(format!("{}: {e}", crate::secrets::MASTER_KEY_ENV))
        })?),
        (false, None) => {
            notes.push(format!(
                "the master key is not in this backup: put it at {} (owner-only) or set {} \
                 before starting the hub",
                dir.join(archive::MASTER_KEY).display(),
                crate::secrets::MASTER_KEY_ENV
            ));
            None
        }
    };
    let database = if manifest.database_included {
        let checked = check_database(&stage.path.join(archive::DATABASE), key.as_ref()).await?;
        progress(Progress::Checked);
        Some(checked)
    } else {
        notes.push(
            "the database is not in this backup (PostgreSQL): restore it with pg_restore or \
             psql and set DATABASE_URL"
                .into(),
        );
        None
    };
    if manifest.files.iter().any(|f| f.name == "config.toml") {
        notes.push(format!(
            "config.toml was restored into {}: pass --config to use it, and check its paths \
             (data_dir, rules_file, …) point at the new place",
            dir.display()
        ));
    }
    if let Some(db) = manifest
        .files
        .iter()
        .find(|f| f.name == archive::DATABASE)
        .filter(|f| !f.source.ends_with(archive::DATABASE))
    {
        notes.push(format!(
            "the database was at {}; it is restored as {} (the data directory's default)",
            db.source,
            dir.join(archive::DATABASE).display()
        ));
    }
    stage.move_into(dir)?;
    Ok(RestoreReport {
        dir: dir.display().to_string(),
        manifest,
        database,
        notes,
    })
}

/// Decrypts `file` into `stage`, checking every entry against the manifest.
fn read_sealed(
    file: &Path,
    passphrase: &SecretString,
    stage: &Path,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Manifest, BackupError> {
    let f = File::open(file).map_err(BackupError::at(file))?;
    let mut r = sealed::SealedReader::new(BufReader::new(f), passphrase)?;
    let manifest = archive::read_manifest(&mut r)?;
    let mut seen: Vec<String> = Vec::new();
    while let Some((name, bytes)) = archive::read_entry_header(&mut r)? {
        let listed = manifest.files.iter().find(|f| f.name == name);
        if listed.is_none_or(|l| l.bytes != bytes) || seen.contains(&name) {
            return Err(BackupError::Damaged(format!(
                "its entry `{name}` does not match its manifest"
            )));
        }
        let path = stage.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(BackupError::at(parent))?;
        }
        let mut out = BufWriter::new(create_private(&path)?);
        let copied =
            std::io::copy(&mut (&mut r).take(bytes), &mut out).map_err(BackupError::from_io)?;
        if copied != bytes {
            return Err(BackupError::Damaged("it ends early".into()));
        }
        out.flush().map_err(BackupError::at(&path))?;
        progress(Progress::File {
            name: name.clone(),
            bytes,
        });
        seen.push(name);
    }
    r.finish()?;
    if seen.len() != manifest.files.len() {
        return Err(BackupError::Damaged(
            "files its manifest lists are missing".into(),
        ));
    }
    let must = |name: &str, wanted: bool| {
        if wanted && !seen.iter().any(|s| s == name) {
            return Err(BackupError::Damaged(format!("`{name}` is missing")));
        }
        Ok(())
    };
    must(archive::DATABASE, manifest.database_included)?;
    must(archive::MASTER_KEY, manifest.master_key_included)?;
    Ok(manifest)
}

/// Opens the restored database with this binary (a newer schema is refused, an older one
/// migrated), checks the master key against it and verifies the audit chain.
async fn check_database(
    db: &Path,
    key: Option<&MasterKey>,
) -> Result<RestoredDatabase, BackupError> {
    let store = Store::open(path_str(db)?).await?;
    let result = async {
        let connections = store.list_connections().await?;
        let connections_opening = match key {
            Some(key) => {
                if let Some(check) = store.get_meta(CHECK_META_KEY).await?
                    && !key.matches_check(&check)
                {
                    return Err(BackupError::MasterKey(
                        "the master key does not open this backup's database: it was set up \
                         with another key"
                            .into(),
                    ));
                }
                Some(
                    connections
                        .iter()
                        .filter(|c| key.open_connection_key(c).is_ok())
                        .count(),
                )
            }
            None => None,
        };
        let audit = store.verify_audit().await?;
        if !audit.ok {
            return Err(BackupError::Damaged(format!(
                "its audit chain does not verify: {}",
                audit.problem.clone().unwrap_or_default()
            )));
        }
        let events = store
            .events()
            .event_status_counts()
            .await?
            .values()
            .sum::<i64>();
        Ok(RestoredDatabase {
            schema_version: store.schema().await?.database_version,
            audit,
            personas: store.list_personas().await?.len(),
            connections: connections.len(),
            connections_opening,
            events,
        })
    }
    .await;
    store.close().await;
    result
}

/// `dir` does not exist, or is an empty directory.
pub fn check_empty(dir: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(BackupError::NotEmpty(dir.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(BackupError::NotEmpty(dir.to_path_buf()))
        }
        Err(e) => Err(BackupError::at(dir)(e)),
    }
}

fn absolute_parent(dir: &Path) -> Result<PathBuf, BackupError> {
    let abs = std::path::absolute(dir).map_err(BackupError::at(dir))?;
    let parent = abs
        .parent()
        .ok_or_else(|| BackupError::Io(format!("{} has no parent directory", abs.display())))?
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(BackupError::at(&parent))?;
    Ok(parent)
}

fn file_len(path: &Path) -> Result<u64, BackupError> {
    Ok(std::fs::metadata(path)
        .map_err(BackupError::at(path))?
        .len())
}

fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(BackupError::at(path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = create_private(path)?;
    f.write_all(bytes).map_err(BackupError::at(path))
}

/// A private directory that is removed, with what is left in it, when dropped.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn new(parent: &Path) -> Result<Workdir, BackupError> {
        std::fs::create_dir_all(parent).map_err(BackupError::at(parent))?;
        let path = parent.join(format!(
            ".memberspot-backup-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&path).map_err(BackupError::at(&path))?;
        Ok(Workdir { path })
    }

    /// Moves the contents into `dir` (empty or absent, checked again here). A claim file
    /// created first makes two restores into one directory exclusive: the second finds it
    /// and is refused, so files of two backups never mix.
    fn move_into(self, dir: &Path) -> Result<(), BackupError> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(BackupError::at(dir)(e)),
        }
        let claim = dir.join(".memberspot-restore");
        create_private(&claim).map_err(|_| BackupError::NotEmpty(dir.to_path_buf()))?;
        let moved = move_entries(&self.path, dir, &claim);
        let _ = std::fs::remove_file(&claim);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        moved
    }
}

/// Moves everything in `from` into `dir`, which holds nothing but `claim`.
fn move_entries(from: &Path, dir: &Path, claim: &Path) -> Result<(), BackupError> {
    let others = std::fs::read_dir(dir)
        .map_err(BackupError::at(dir))?
        .filter_map(Result::ok)
        .any(|e| e.path() != claim);
    if others {
        return Err(BackupError::NotEmpty(dir.to_path_buf()));
    }
    for entry in std::fs::read_dir(from).map_err(BackupError::at(from))? {
        let entry = entry.map_err(BackupError::at(from))?;
        move_entry(&entry.path(), &dir.join(entry.file_name()))?;
    }
    Ok(())
}

/// Renames `from` to `to`. SQLite's side files of the checked database (`-wal`, `-shm`,
/// `-journal`) may vanish between the listing and the rename: the last connection of the
/// check deletes them as it finishes closing, after checkpointing them into the database.
/// A side file moved before that is harmless (the frames it holds are in the database
/// already); one that is gone has nothing left to move.
fn move_entry(from: &Path, to: &Path) -> Result<(), BackupError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_sqlite_side_file(from) => Ok(()),
        Err(e) => Err(BackupError::at(to)(e)),
    }
}

fn is_sqlite_side_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(archive::DATABASE))
        .is_some_and(|rest| matches!(rest, "-wal" | "-shm" | "-journal"))
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    const PASS: &str = "a long enough passphrase";

    #[test]
    fn a_database_side_file_that_vanished_before_its_move_is_not_an_error() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let db = archive::DATABASE;
        for side in ["-wal", "-shm", "-journal"] {
            let name = format!("{db}{side}");
            move_entry(&from.path().join(&name), &to.path().join(&name)).unwrap();
        }
        // Anything else that goes missing is still an error, named by its path.
        let target = to.path().join(db);
        let err = move_entry(&from.path().join(db), &target)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&target.display().to_string()), "{err}");
        for other in ["master.key", "hub.db-walrus", "other.db-wal"] {
            let path = from.path().join(other);
            assert!(
                move_entry(&path, &to.path().join(other)).is_err(),
                "{other}"
            );
        }
        // A side file that is there is moved like any other.
        let wal = format!("{db}-wal");
        std::fs::write(from.path().join(&wal), b"frames").unwrap();
        move_entry(&from.path().join(&wal), &to.path().join(&wal)).unwrap();
        assert_eq!(std::fs::read(to.path().join(&wal)).unwrap(), b"frames");
    }

    fn pass(p: &str) -> SecretString {
        SecretString::from(p)
    }

    fn quiet(_: Progress) {}

    /// A hub in `dir` with a persona and a connection, its key in `master.key`.
    async fn hub_in(dir: &Path) -> HubSettings {
        let settings = HubSettings {
            data_dir: dir.to_path_buf(),
            database_url: None,
            master_key: None,
        };
        let (hub, _) = crate::bootstrap::open(&settings, None).await.unwrap();
        hub.add_connection(
            "school",
            "https://api.memberspot.de/v1",
            &SecretString::from("sk_live_x"),
            4.0,
        )
        .await
        .unwrap();
        hub.create_persona(crate::admin::PersonaSpec {
            name: "agent".into(),
            connection: Some("school".into()),
            scopes: vec!["read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        hub.close().await;
        std::fs::write(dir.join("rules.toml"), "# rules\n").unwrap();
        settings
    }

    /// Everything in `dir`, for "nothing was written".
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_restores_into_an_empty_directory_and_checks_it() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = hub_in(&tmp.path().join("hub")).await;
        let req = BackupRequest {
            files: vec![HubFile {
                name: "rules.toml",
                path: settings.data_dir.join("rules.toml"),
            }],
            settings,
            include_master_key: true,
            files_only: false,
        };
        let file = tmp.path().join("hub.backup");
        // No hub there yet: nothing to back up, and no database is created for it.
        let mut none = req.clone();
        none.settings.data_dir = tmp.path().join("none");
        let e = create(&none, &pass(PASS), &file, &quiet).await.unwrap_err();
        assert!(e.to_string().contains("nothing to back up"), "{e}");
        assert!(!none.settings.data_dir.join("hub.db").exists());
        assert!(matches!(
            create(&req, &pass("short"), &file, &quiet).await,
            Err(BackupError::WeakPassphrase)
        ));
        let made = create(&req, &pass(PASS), &file, &quiet).await.unwrap();
        assert!(made.manifest.database_included && made.manifest.master_key_included);
        // No plaintext of the key or the database's tables in the file.
        let bytes = std::fs::read(&file).unwrap();
        let key = std::fs::read_to_string(req.settings.key_file()).unwrap();
        assert!(
            !bytes
                .windows(key.trim().len())
                .any(|w| w == key.trim().as_bytes())
        );
        assert!(!bytes.windows(6).any(|w| w == b"SQLite"));
        // Again to the same file: refused, the first one kept.
        assert!(matches!(
            create(&req, &pass(PASS), &file, &quiet).await,
            Err(BackupError::Exists(_))
        ));
        // No work files left in the data directory.
        assert!(
            !listing(&req.settings.data_dir)
                .iter()
                .any(|n| n.starts_with(".memberspot"))
        );

        let target = tmp.path().join("restored");
        let r = restore(&file, &pass(PASS), &target, None, &quiet)
            .await
            .unwrap();
        let db = r.database.clone().unwrap();
        assert!(db.audit.ok);
        assert_eq!(
            (db.personas, db.connections),
            (1, 2),
            "agent; school and sandbox"
        );
        assert_eq!(db.connections_opening, Some(2));
        let files: Vec<String> = listing(&target)
            .into_iter()
            .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        assert_eq!(files, vec!["hub.db", "master.key", "rules.toml"], "{r:?}");
        // The restored hub opens with its key.
        let restored = HubSettings {
            data_dir: target.clone(),
            database_url: None,
            master_key: None,
        };
        let (hub, _) = crate::bootstrap::open(&restored, None).await.unwrap();
        assert_eq!(hub.list_personas().await.unwrap()[0].name, "agent");
        hub.close().await;

        // Into a directory that is not empty: refused before anything is read.
        assert!(matches!(
            restore(&file, &pass(PASS), &target, None, &quiet).await,
            Err(BackupError::NotEmpty(_))
        ));

        // Two restores into one new directory at once: one wins, the other is refused,
        // and the files are all the winner's.
        let twice = tmp.path().join("twice");
        let one = || {
            let (file, twice) = (file.clone(), twice.clone());
            tokio::spawn(async move { restore(&file, &pass(PASS), &twice, None, &quiet).await })
        };
        let (a, b) = (one(), one());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(
            matches!(
                (&a, &b),
                (Ok(_), Err(BackupError::NotEmpty(_))) | (Err(BackupError::NotEmpty(_)), Ok(_))
            ),
            "{a:?} {b:?}"
        );
        assert!(!twice.join(".memberspot-restore").exists());
        // Two backups to one file at once: one is written, the other refused.
        let same = tmp.path().join("same.backup");
        let one = || {
            let (req, same) = (req.clone(), same.clone());
            tokio::spawn(async move { create(&req, &pass(PASS), &same, &quiet).await })
        };
        let (a, b) = (one(), one());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(
            matches!(
                (&a, &b),
                (Ok(_), Err(BackupError::Exists(_))) | (Err(BackupError::Exists(_)), Ok(_))
            ),
            "{a:?} {b:?}"
        );
        assert!(!tmp.path().join("same.backup.partial").exists());
        let check = tmp.path().join("check");
        restore(&same, &pass(PASS), &check, None, &quiet)
            .await
            .unwrap();
    }

    /// A sealed backup with any entries, also ones no backup holds.
    fn raw_backup(out: &Path, manifest: &Manifest, entries: &[(&str, &[u8])]) {
        let mut w = sealed::SealedWriter::new(create_private(out).unwrap(), &pass(PASS)).unwrap();
        archive::write_manifest(&mut w, manifest).unwrap();
        for (name, bytes) in entries {
            archive::write_entry_header(&mut w, name, bytes.len() as u64).unwrap();
            w.write_all(bytes).unwrap();
        }
        archive::write_end(&mut w).unwrap();
        w.finish().unwrap();
    }

    fn manifest(files: &[(&str, u64)]) -> Manifest {
        Manifest {
            format: 1,
            hub_version: "0".into(),
            created_at: "2026-12-04T00:00:00Z".into(),
            backend: "sqlite".into(),
            database_included: false,
            master_key_included: false,
            schema_version: None,
            audit_head: None,
            files: files
                .iter()
                .map(|(n, b)| ManifestFile {
                    name: (*n).into(),
                    bytes: *b,
                    source: "x".into(),
                })
                .collect(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crafted_damaged_and_foreign_backups_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("restores");
        std::fs::create_dir(&parent).unwrap();
        let target = parent.join("hub");
        let try_restore = |file: PathBuf, p: &'static str| {
            let target = target.clone();
            async move { restore(&file, &pass(p), &target, None, &quiet).await }
        };
        let mut n = 0;
        let mut file_with = |manifest: Manifest, entries: &[(&str, &[u8])]| {
            n += 1;
            let f = tmp.path().join(format!("crafted-{n}"));
            raw_backup(&f, &manifest, entries);
            f
        };
        // Entries that climb out of the directory or are absolute, listed or not.
        for name in ["../x", "/tmp/x", "sandbox/../../x"] {
            let unlisted = file_with(manifest(&[("rules.toml", 1)]), &[(name, b"x")]);
            let listed = file_with(manifest(&[(name, 1)]), &[(name, b"x")]);
            for f in [unlisted, listed] {
                let e = try_restore(f, PASS).await.unwrap_err();
                assert!(matches!(e, BackupError::Refused(_)), "{name}: {e}");
                assert!(e.to_string().contains("outside the data directory"), "{e}");
            }
        }
        // A name a data directory does not have; an entry twice; sizes that lie.
        let cases = [
            file_with(manifest(&[("evil.sh", 1)]), &[("evil.sh", b"x")]),
            file_with(
                manifest(&[("rules.toml", 1)]),
                &[("rules.toml", b"x"), ("rules.toml", b"x")],
            ),
            file_with(manifest(&[("rules.toml", 5)]), &[("rules.toml", b"x")]),
            file_with(
                manifest(&[("rules.toml", 1), ("flows.toml", 1)]),
                &[("rules.toml", b"x")],
            ),
        ];
        for f in cases {
            let e = try_restore(f, PASS).await.unwrap_err();
            assert!(
                matches!(e, BackupError::Refused(_) | BackupError::Damaged(_)),
                "{e}"
            );
        }
        // A good one, then: a wrong passphrase, cut off, one byte changed, not a backup.
        let good = file_with(manifest(&[("rules.toml", 3)]), &[("rules.toml", b"abc")]);
        let bytes = std::fs::read(&good).unwrap();
        assert!(matches!(
            try_restore(good.clone(), "not the passphrase").await,
            Err(BackupError::WrongPassphrase)
        ));
        let cut = tmp.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
        assert!(matches!(
            try_restore(cut, PASS).await,
            Err(BackupError::Damaged(_))
        ));
        let mut flipped = bytes.clone();
        let at = flipped.len() - 20;
        flipped[at] ^= 0x40;
        let changed = tmp.path().join("changed");
        std::fs::write(&changed, &flipped).unwrap();
        assert!(matches!(
            try_restore(changed, PASS).await,
            Err(BackupError::Damaged(_))
        ));
        let foreign = tmp.path().join("foreign");
        std::fs::write(&foreign, b"SQLite format 3\0 and more").unwrap();
        assert!(matches!(
            try_restore(foreign, PASS).await,
            Err(BackupError::NotABackup)
        ));

        // Nothing was written: no target, no work directory left beside it.
        assert_eq!(listing(&parent), Vec::<String>::new());
        assert!(!tmp.path().join("x").exists());
        // And the good one restores.
        let r = try_restore(good, PASS).await.unwrap();
        assert!(
            r.notes.iter().any(|n| n.contains("not in this backup")),
            "{r:?}"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("rules.toml")).unwrap(),
            "abc"
        );
    }
}
