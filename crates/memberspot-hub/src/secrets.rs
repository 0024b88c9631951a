//! The master key and sealing of stored secrets (the schools' API keys).
//!
//! Secrets are sealed with XChaCha20-Poly1305 under a 256-bit master key
//! that never enters the database: it comes from `MEMBERSPOT_MASTER_KEY`
//! or from a key file created on first start with owner-only permissions.
//!
//! A sealed value is `v2:` + base64(nonce ‖ ciphertext ‖ tag), sealed with
//! associated data that says what it belongs to: for a connection's API key,
//! the connection's name and base URL ([`connection_binding`]). Someone who
//! can write the database but not read the master key can then neither point
//! a connection at another server nor move a key to another connection: the
//! key no longer opens, and is never sent. `v1:` values (no associated data)
//! come from before that; the hub binds them once, at the first start that
//! finds them ([`bind_stored_keys`]), and refuses them afterwards.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use memberspot_store::{Connection, Store, StoreError};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Environment variable holding the master key (base64 or hex of 32 bytes).
pub const MASTER_KEY_ENV: &str = "MEMBERSPOT_MASTER_KEY";
/// Meta key under which a sealed known value lets us detect a wrong master key.
pub const CHECK_META_KEY: &str = "master_key_check";
/// Meta key set once the stored connection keys are bound to their connections: from then
/// on an unbound (`v1:`) key is refused instead of bound to whatever the row says.
pub const KEYS_BOUND_META_KEY: &str = "connection_keys_bound";
const CHECK_PLAINTEXT: &str = "memberspot-hub master key check v1";
const CHECK_BINDING: &[u8] = b"memberspot-hub master key check";
const V1: &str = "v1:";
const V2: &str = "v2:";

/// The associated data binding a sealed API key to its connection: the name and the base
/// URL as stored, each length-prefixed so no two pairs encode alike.
pub fn connection_binding(name: &str, base_url: &str) -> Vec<u8> {
    const DOMAIN: &[u8] = b"memberspot-hub connection key\0";
    let mut ad = Vec::with_capacity(DOMAIN.len() + 16 + name.len() + base_url.len());
    ad.extend_from_slice(DOMAIN);
    for part in [name, base_url] {
        ad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        ad.extend_from_slice(part.as_bytes());
    }
    ad
}

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
    /// A `v1:` value where a bound one is required.
    #[error("a stored secret is in the old format, which is not bound to what it belongs to")]
    Unbound,
    /// A connection's key that does not open for the connection as stored; the message
    /// names the connection and says what to do.
    #[error("{0}")]
    NotBound(String),
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

    /// Seals `plaintext` bound to `binding` (associated data): it opens only with the same.
    pub fn seal(&self, plaintext: &str, binding: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: binding,
        };
        // Encryption with a valid key and a fresh nonce cannot fail.
        let ct = self.cipher().encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{V2}{}", STANDARD.encode(out))
    }

    /// Opens a value sealed by [`MasterKey::seal`] with the same `binding`. An unbound
    /// (`v1:`) value is [`SecretError::Unbound`].
    pub fn open(&self, sealed: &str, binding: &[u8]) -> Result<SecretString, SecretError> {
        if sealed.starts_with(V1) {
            return Err(SecretError::Unbound);
        }
        let raw = sealed.strip_prefix(V2).ok_or(SecretError::Format)?;
        self.decrypt(raw, binding)
    }

    /// Opens a value sealed before binding existed (`v1:`), to bind it.
    fn open_unbound(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let raw = sealed.strip_prefix(V1).ok_or(SecretError::Format)?;
        self.decrypt(raw, b"")
    }

    fn decrypt(&self, raw: &str, binding: &[u8]) -> Result<SecretString, SecretError> {
        let bytes = STANDARD.decode(raw).map_err(|_| SecretError::Format)?;
        if bytes.len() < 24 + 16 {
            return Err(SecretError::Format);
        }
        let (nonce, ct) = bytes.split_at(24);
        let payload = Payload {
            msg: ct,
            aad: binding,
        };
        let pt = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| SecretError::Decrypt)
    }

    /// A connection's API key, sealed for its name and base URL (as stored).
    pub fn seal_connection_key(&self, name: &str, base_url: &str, key: &str) -> String {
        self.seal(key, &connection_binding(name, base_url))
    }

    /// A stored connection's API key. It opens only for the name and base URL it was
    /// sealed for; otherwise the error names the connection and says what to do.
    pub fn open_connection_key(&self, c: &Connection) -> Result<SecretString, SecretError> {
        let not_bound = |why: &str| {
            SecretError::NotBound(format!(
                "connection `{name}`: its stored API key does not open for this connection \
                 (name `{name}`, base URL {url}): {why}, so the key is not used. The \
                 connection was changed outside memberspot: put back its URL with \
                 `memberspot connections update {name} --url URL`, or check it with \
                 `memberspot connections list` and set its key again with `memberspot \
                 connections rotate-key {name}`",
                name = c.name,
                url = c.base_url,
            ))
        };
        match self.open(&c.sealed_key, &connection_binding(&c.name, &c.base_url)) {
            Ok(key) => Ok(key),
            Err(SecretError::Decrypt) => Err(not_bound(
                "it was sealed for another name or base URL, or altered",
            )),
            Err(SecretError::Unbound) => Err(not_bound(
                "it is in the old format, which is not bound to a connection, and the keys \
                 of this database were bound already",
            )),
            Err(e) => Err(e),
        }
    }

    /// A sealed known value, stored once, that tells a wrong key at start.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_PLAINTEXT, CHECK_BINDING)
    }

    /// Whether `check` (from [`MasterKey::check_value`], or an unbound one stored before
    /// binding existed) was sealed with this key.
    pub fn matches_check(&self, check: &str) -> bool {
        self.open(check, CHECK_BINDING)
            .or_else(|_| self.open_unbound(check))
            .is_ok_and(|v| v.expose_secret() == CHECK_PLAINTEXT)
    }
}

/// Binds every stored connection key still in the unbound (`v1:`) format to its connection,
/// once per database: the first start after an upgrade does it in one transaction (several
/// instances starting together: one of them), and records that it did, so later unbound
/// keys are refused rather than bound to whatever connection row holds them. A key that does
/// not open is left as it is (it fails, naming its connection, when used). Returns how many
/// keys were bound.
pub async fn bind_stored_keys(store: &Store, key: &MasterKey) -> Result<usize, StoreError> {
    store
        .migrate_connection_keys(KEYS_BOUND_META_KEY, |c| {
            if !c.sealed_key.starts_with(V1) {
                return Ok(None);
            }
            match key.open_unbound(&c.sealed_key) {
                Ok(plain) => Ok(Some(key.seal_connection_key(
                    &c.name,
                    &c.base_url,
                    plain.expose_secret(),
                ))),
                Err(e) => {
                    tracing::warn!(connection = %c.name, error = %e, "a stored API key does not open; left as it is");
                    Ok(None)
                }
            }
        })
        .await
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
        let ad = connection_binding("school", "https://api.memberspot.de/v1");
        let sealed = k.seal("sk_live_secret", &ad);
        assert!(sealed.starts_with("v2:"));
        assert!(!sealed.contains("sk_live_secret"));
        assert_eq!(
            k.open(&sealed, &ad).expect("opens").expose_secret(),
            "sk_live_secret"
        );
        assert_ne!(k.seal("x", &ad), k.seal("x", &ad), "fresh nonce every time");
        let other = MasterKey::generate();
        assert!(matches!(
            other.open(&sealed, &ad),
            Err(SecretError::Decrypt)
        ));
        let mut bad = sealed.clone();
        bad.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(k.open(&bad, &ad).is_err());
        assert!(k.matches_check(&k.check_value()));
        assert!(!other.matches_check(&k.check_value()));
    }

    /// A v1 value as stored before keys were bound: no associated data.
    fn seal_v1(k: &MasterKey, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = k
            .cipher()
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("encrypts");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}", STANDARD.encode(out))
    }

    #[test]
    fn a_connection_key_opens_only_for_its_connection() {
        let k = MasterKey::generate();
        let url = "https://api.memberspot.de/v1";
        let conn = |name: &str, base_url: &str, sealed_key: String| Connection {
            id: "id".into(),
            name: name.into(),
            base_url: base_url.into(),
            sealed_key,
            key_hint: String::new(),
            rate_limit: 4.0,
            created_at: 0,
            updated_at: 0,
        };
        let sealed = k.seal_connection_key("school", url, "sk_live_secret");
        let ok = conn("school", url, sealed.clone());
        assert_eq!(
            k.open_connection_key(&ok).expect("opens").expose_secret(),
            "sk_live_secret"
        );
        // Another URL, another name, a name/URL split moved: refused, naming the connection.
        for (name, base_url) in [
            ("school", "http://127.0.0.1:9/v1"),
            ("school", "https://api.memberspot.de/v1/"),
            ("other", url),
            ("schoolh", "ttps://api.memberspot.de/v1"),
        ] {
            let moved = conn(name, base_url, sealed.clone());
            match k.open_connection_key(&moved) {
                Err(e @ SecretError::NotBound(_)) => {
                    let m = e.to_string();
                    assert!(m.contains(&format!("connection `{name}`")), "{m}");
                    assert!(m.contains(base_url), "{m}");
                    assert!(!m.contains("sk_live_secret"), "{m}");
                }
                other => panic!("{name} {base_url}: {other:?}"),
            }
        }
        // An old unbound value is refused where a bound one is required.
        let old = conn("school", url, seal_v1(&k, "sk_live_secret"));
        assert!(matches!(
            k.open_connection_key(&old),
            Err(SecretError::NotBound(_))
        ));
        assert_eq!(
            k.open_unbound(&old.sealed_key)
                .expect("v1 opens unbound")
                .expose_secret(),
            "sk_live_secret"
        );
        // A check value stored before binding still tells the right key from a wrong one.
        let old_check = seal_v1(&k, CHECK_PLAINTEXT);
        assert!(k.matches_check(&old_check));
        assert!(!MasterKey::generate().matches_check(&old_check));
        // The encoding is unambiguous.
        assert_ne!(connection_binding("ab", "c"), connection_binding("a", "bc"));
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
            k2.open(&k1.seal("v", b"ad"), b"ad")
                .expect("same key")
                .expose_secret(),
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
