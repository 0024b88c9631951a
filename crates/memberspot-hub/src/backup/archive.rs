//! The contents of a backup, inside the sealed stream: a manifest, then named files.
//!
//! ```text
//! u32 manifest length, manifest (JSON)
//! per file: u16 name length, name, u64 size, bytes
//! u16 0 (the end)
//! ```
//!
//! Names are the few a hub's data directory holds ([`ALLOWED`]); anything else — a
//! path that climbs out (`../x`), an absolute one, a name this version does not know —
//! is refused before a byte is written.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::BackupError;

/// The files a backup may hold, by the name they have in the data directory.
pub const ALLOWED: &[&str] = &[
    DATABASE,
    MASTER_KEY,
    "admin.token",
    "rules.toml",
    "flows.toml",
    "models.toml",
    "config.toml",
    "sandbox/school.json",
];
pub const DATABASE: &str = "hub.db";
pub const MASTER_KEY: &str = "master.key";
/// The longest manifest read (a real one is a few hundred bytes).
const MAX_MANIFEST: u32 = 1024 * 1024;

/// What a backup holds and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The `memberspot` version that wrote it.
    pub hub_version: String,
    /// RFC 3339.
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Whether the database is in the backup (not for PostgreSQL: `pg_dump`).
    pub database_included: bool,
    /// Whether the master key is in the backup (else it is kept separately).
    pub master_key_included: bool,
    /// The newest migration applied to the database when it was copied.
    pub schema_version: Option<i64>,
    /// The audit chain's head in the copy, `SEQ:HASH`.
    pub audit_head: Option<String>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    /// Its name in the data directory.
    pub name: String,
    pub bytes: u64,
    /// Where it was read from.
    pub source: String,
}

/// Refuses a name that is not one of [`ALLOWED`], saying why in terms of paths first.
pub fn check_name(name: &str) -> Result<(), BackupError> {
    let path = std::path::Path::new(name);
    let climbs = path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if name.is_empty() || path.is_absolute() || climbs || name.contains('\\') || name.contains('\0')
    {
        return Err(BackupError::Refused(format!(
            "it holds an entry `{}` that points outside the data directory",
            name.escape_debug()
        )));
    }
    if !ALLOWED.contains(&name) {
        return Err(BackupError::Refused(format!(
            "it holds an entry `{}` that is not part of a hub's data directory",
            name.escape_debug()
        )));
    }
    Ok(())
}

pub fn write_manifest(out: &mut impl Write, m: &Manifest) -> Result<(), BackupError> {
    let json = serde_json::to_vec(m).map_err(|e| BackupError::Io(e.to_string()))?;
    out.write_all(&(json.len() as u32).to_be_bytes())
        .and_then(|()| out.write_all(&json))
        .map_err(BackupError::write)
}

/// Starts a file of `bytes` bytes; its contents follow.
pub fn write_entry_header(out: &mut impl Write, name: &str, bytes: u64) -> Result<(), BackupError> {
    let n = u16::try_from(name.len()).map_err(|_| BackupError::Io("name too long".into()))?;
    out.write_all(&n.to_be_bytes())
        .and_then(|()| out.write_all(name.as_bytes()))
        .and_then(|()| out.write_all(&bytes.to_be_bytes()))
        .map_err(BackupError::write)
}

pub fn write_end(out: &mut impl Write) -> Result<(), BackupError> {
    out.write_all(&0u16.to_be_bytes())
        .map_err(BackupError::write)
}

pub fn read_manifest(input: &mut impl Read) -> Result<Manifest, BackupError> {
    let len = u32::from_be_bytes(read_array(input)?);
    if len > MAX_MANIFEST {
        return Err(BackupError::Damaged("its manifest is too long".into()));
    }
    let mut json = vec![0u8; len as usize];
    input.read_exact(&mut json).map_err(BackupError::from_io)?;
    let m: Manifest = serde_json::from_slice(&json)
        .map_err(|e| BackupError::Damaged(format!("its manifest does not read: {e}")))?;
    if m.format != 1 {
        return Err(BackupError::Damaged(format!(
            "manifest format {} is not one this version reads",
            m.format
        )));
    }
    for f in &m.files {
        check_name(&f.name)?;
    }
    Ok(m)
}

/// The next file's name and size, or `None` at the end.
pub fn read_entry_header(input: &mut impl Read) -> Result<Option<(String, u64)>, BackupError> {
    let n = u16::from_be_bytes(read_array(input)?);
    if n == 0 {
        return Ok(None);
    }
    let mut name = vec![0u8; n as usize];
    input.read_exact(&mut name).map_err(BackupError::from_io)?;
    let name = String::from_utf8(name)
        .map_err(|_| BackupError::Refused("it holds an entry whose name is not text".into()))?;
    check_name(&name)?;
    let bytes = u64::from_be_bytes(read_array(input)?);
    Ok(Some((name, bytes)))
}

fn read_array<const N: usize>(input: &mut impl Read) -> Result<[u8; N], BackupError> {
    let mut b = [0u8; N];
    input.read_exact(&mut b).map_err(BackupError::from_io)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_data_directory_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "sandbox/../../x",
            "./hub.db",
            "",
            "a\\..\\b",
            "hub.db\0",
            "sandbox/",
            "other.db",
            "sandbox/lock",
        ] {
            assert!(
                matches!(check_name(bad), Err(BackupError::Refused(_))),
                "{bad:?}"
            );
        }
        for good in ALLOWED {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
