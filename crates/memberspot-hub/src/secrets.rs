//! The master key and sealing of stored secrets (the schools' API keys).
//!
//! Secrets are sealed with XChaCha20-Poly1305 under a 256-bit master key
//! that never enters the database: it comes from `MEMBERSPOT_MASTER_KEY`
//! or from a key file created on first start with owner-only permissions.
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Environment variable holding the master key (base64 or hex of 32 bytes).
pub const MASTER_KEY_ENV: &str = "MEMBERSPOT_MASTER_KEY";
/// Meta key under which a sealed known value lets us detect a wrong master key.
pub const CHECK_META_KEY: &str = "master_key_check";
const CHECK_PLAINTEXT: &str = "memberspot-hub master key check v1";
const PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{MASTER_KEY_ENV} must be 32 bytes as base64 or hex ({0})")]
    BadEnvKey(String),
    #[error("master key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error(
        "a stored secret could not be decrypted: the master key does not match the one it was sealed with, or the value was altered"
    )]
    Decrypt,
    #[error("a stored secret is not in the sealed format")]
    Format,
}

/// Where the master key came from, for start-up messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    CreatedFile(PathBuf),
}

/// The 256-bit master key. Never printed.
pub struct MasterKey {
    key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        MasterKey {
            key: SecretBox::new(Box::new(bytes)),
        }
    }

    /// Parses base64 (standard or URL-safe) or hex of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| STANDARD.decode(text).ok())
            .or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
            .ok_or("not valid base64 or hex")?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes instead of 32", b.len()))?;
        Ok(MasterKey {
            key: SecretBox::new(Box::new(arr)),
        })
    }

    /// base64 text of the key, for writing the key file or showing a new key once.
    pub fn encode(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.key.expose_secret()))
    }

    /// Loads the key from the environment, else from `file`, creating the
    /// file (mode 0600) when it does not exist and `may_create` (the database
    /// has no key yet: a new key could not open what an old one sealed).
    pub fn load_or_create(
        env_value: Option<&str>,
        file: &Path,
        may_create: bool,
    ) -> Result<(Self, KeySource), SecretError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Ok((
                Self::parse(v).map_err(SecretError::BadEnvKey)?,
                KeySource::Env,
            ));
        }
        let err = |message: String| SecretError::KeyFile {
            path: file.to_path_buf(),
            message,
        };
        match std::fs::read_to_string(file) {
            Ok(text) => {
                check_permissions(file).map_err(err)?;
                Ok((
                    Self::parse(&text).map_err(err)?,
                    KeySource::File(file.to_path_buf()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => Err(err(
                "missing, but the database was set up with a master key: restore the file, or \
                 set MEMBERSPOT_MASTER_KEY"
                    .into(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_owner_only(file, key.encode().expose_secret()).map_err(err)?;
                Ok((key, KeySource::CreatedFile(file.to_path_buf())))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.key.expose_secret()))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and a fresh nonce cannot fail.
        let ct = self
            .cipher()
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let raw = sealed.strip_prefix(PREFIX).ok_or(SecretError::Format)?;
        let bytes = STANDARD.decode(raw).map_err(|_| SecretError::Format)?;
        if bytes.len() < 24 + 16 {
            return Err(SecretError::Format);
        }
        let (nonce, ct) = bytes.split_at(24);
        let pt = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| SecretError::Decrypt)
    }

    /// A sealed known value, stored once, that tells a wrong key at start.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_PLAINTEXT)
    }

    pub fn matches_check(&self, check: &str) -> bool {
        self.open(check)
            .is_ok_and(|v| v.expose_secret() == CHECK_PLAINTEXT)
    }
}

#[cfg(unix)]
fn write_owner_only(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}

#[cfg(not(unix))]
fn write_owner_only(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, text).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "is readable by other users (mode {:o}); run `chmod 600 {}`",
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_detect_tampering() {
        let k = MasterKey::generate();
        let sealed = k.seal("sk_live_secret");
        assert!(!sealed.contains("sk_live_secret"));
        assert_eq!(
            k.open(&sealed).expect("opens").expose_secret(),
            "sk_live_secret"
        );
        assert_ne!(k.seal("x"), k.seal("x"), "fresh nonce every time");
        let other = MasterKey::generate();
        assert!(matches!(other.open(&sealed), Err(SecretError::Decrypt)));
        let mut bad = sealed.clone();
        bad.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(k.open(&bad).is_err());
        assert!(k.matches_check(&k.check_value()));
        assert!(!other.matches_check(&k.check_value()));
    }

    #[test]
    fn key_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/master.key");
        let (k1, src) = MasterKey::load_or_create(None, &path, true).expect("creates");
        assert_eq!(src, KeySource::CreatedFile(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (k2, _) = MasterKey::load_or_create(None, &path, false).expect("loads");
        assert_eq!(
            k2.open(&k1.seal("v")).expect("same key").expose_secret(),
            "v"
        );
        let env = k1.encode();
        let (k3, src) =
            MasterKey::load_or_create(Some(env.expose_secret()), &path, false).expect("env");
        assert_eq!(src, KeySource::Env);
        assert!(k3.matches_check(&k1.check_value()));
        assert!(MasterKey::parse("short").is_err());
        assert!(format!("{k1:?}").contains("redacted"));

        // A database that already has a key: a missing file is an error, and no new key
        // file takes its place.
        std::fs::remove_file(&path).expect("remove");
        match MasterKey::load_or_create(None, &path, false) {
            Err(e) => assert!(e.to_string().contains("restore the file"), "{e}"),
            Ok(_) => panic!("a missing key file was replaced"),
        }
        assert!(!path.exists());
    }
}
