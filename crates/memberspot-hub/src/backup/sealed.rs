//! The encrypted container of a backup: a passphrase stretched with Argon2id, and the
//! contents sealed in 64 KiB chunks with XChaCha20-Poly1305 in the STREAM construction
//! (each chunk numbered and the last one marked), so a changed, reordered, dropped or cut
//! off chunk fails to open instead of restoring part of a hub.
//!
//! Layout: the header (magic, format, Argon2id settings, salt, nonce prefix, passphrase
//! check), then the chunks. The header is the associated data of every chunk: changing it
//! fails too. The passphrase check (a SHA-256 of a second key derived with the first)
//! tells a wrong passphrase from a damaged file.

use std::io::{Read, Write};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::generic_array::GenericArray;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, OsRng, Payload, rand_core::RngCore};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use super::BackupError;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"MSHUBBK\x01";
const FORMAT: u8 = 1;
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SALT: usize = 16;
const NONCE_PREFIX: usize = 19;
const CHECK: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 1 + 12 + SALT + NONCE_PREFIX + CHECK;

/// Argon2id settings written into new backups: 64 MiB, three passes.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
/// The most a header may ask for: a crafted file must not make restore use gigabytes.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 8;

/// The shortest passphrase a backup accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

struct Keys {
    key: chacha20poly1305::Key,
    check: [u8; CHECK],
}

fn derive(
    passphrase: &SecretString,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Keys, BackupError> {
    let params = Params::new(m, t, p, Some(64))
        .map_err(|e| BackupError::Damaged(format!("key-derivation settings: {e}")))?;
    // Wiped when dropped.
    let mut out = SecretBox::new(Box::new([0u8; 64]));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(
            passphrase.expose_secret().as_bytes(),
            salt,
            out.expose_secret_mut(),
        )
        .map_err(|e| BackupError::Damaged(format!("key derivation: {e}")))?;
    let key = *chacha20poly1305::Key::from_slice(&out.expose_secret()[..32]);
    let check: [u8; CHECK] = Sha256::digest(&out.expose_secret()[32..]).into();
    Ok(Keys { key, check })
}

/// Writes a sealed stream; [`SealedWriter::finish`] seals the last chunk.
pub struct SealedWriter<W: Write> {
    out: W,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    header: Vec<u8>,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> SealedWriter<W> {
    pub fn new(mut out: W, passphrase: &SecretString) -> Result<Self, BackupError> {
        let mut salt = [0u8; SALT];
        let mut prefix = [0u8; NONCE_PREFIX];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut prefix);
        let keys = derive(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(FORMAT);
        for v in [M_COST_KIB, T_COST, P_COST] {
            header.extend_from_slice(&v.to_be_bytes());
        }
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(&keys.check);
        out.write_all(&header).map_err(BackupError::write)?;
        let aead = XChaCha20Poly1305::new(&keys.key);
        Ok(SealedWriter {
            out,
            encryptor: Some(EncryptorBE32::from_aead(
                aead,
                GenericArray::from_slice(&prefix),
            )),
            written: header.len() as u64,
            header,
            buf: Vec::with_capacity(2 * CHUNK),
        })
    }

    fn seal_full_chunks(&mut self) -> std::io::Result<()> {
        // Keep at least one byte back: the last chunk is sealed by `finish`.
        while self.buf.len() > CHUNK {
            let enc = self
                .encryptor
                .as_mut()
                .ok_or_else(|| std::io::Error::other("the backup stream is finished"))?;
            let sealed = enc
                .encrypt_next(Payload {
                    msg: &self.buf[..CHUNK],
                    aad: &self.header,
                })
                .map_err(|_| std::io::Error::other("encryption failed"))?;
            self.out.write_all(&sealed)?;
            self.written += sealed.len() as u64;
            self.buf.drain(..CHUNK);
        }
        Ok(())
    }

    /// Seals the last chunk and answers the writer and the bytes written.
    pub fn finish(mut self) -> Result<(W, u64), BackupError> {
        let enc = self
            .encryptor
            .take()
            .ok_or_else(|| BackupError::Io("the backup stream is finished".into()))?;
        let sealed = enc
            .encrypt_last(Payload {
                msg: &self.buf,
                aad: &self.header,
            })
            .map_err(|_| BackupError::Io("encryption failed".into()))?;
        self.out.write_all(&sealed).map_err(BackupError::write)?;
        self.out.flush().map_err(BackupError::write)?;
        Ok((self.out, self.written + sealed.len() as u64))
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.seal_full_chunks()?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a sealed stream. A chunk that does not open ends the read with an error that
/// [`BackupError::from_io`] turns back into [`BackupError::Damaged`].
pub struct SealedReader<R: Read> {
    input: R,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    header: Vec<u8>,
    /// Ciphertext read ahead (up to one chunk and one byte).
    ahead: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> SealedReader<R> {
    /// Reads the header and derives the key; a wrong passphrase is found here.
    pub fn new(mut input: R, passphrase: &SecretString) -> Result<Self, BackupError> {
        let mut header = vec![0u8; HEADER_LEN];
        let got = read_full(&mut input, &mut header).map_err(BackupError::read)?;
        if got < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if got < HEADER_LEN {
            return Err(BackupError::Damaged(
                "the file ends within its header".into(),
            ));
        }
        if header[MAGIC.len()] != FORMAT {
            return Err(BackupError::Damaged(format!(
                "format {} is not one this version reads (it reads format {FORMAT})",
                header[MAGIC.len()]
            )));
        }
        let at = MAGIC.len() + 1;
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[at + 4 * i..at + 4 * i + 4]);
            u32::from_be_bytes(b)
        };
        let (m, t, p) = (word(0), word(1), word(2));
        if m > MAX_M_COST_KIB || t > MAX_T_COST || p > MAX_P_COST {
            return Err(BackupError::Damaged(
                "its header asks for more key-derivation work than any backup uses".into(),
            ));
        }
        let salt = &header[at + 12..at + 12 + SALT];
        let prefix_at = at + 12 + SALT;
        let prefix: [u8; NONCE_PREFIX] = header[prefix_at..prefix_at + NONCE_PREFIX]
            .try_into()
            .map_err(|_| BackupError::Damaged("header".into()))?;
        let check = &header[prefix_at + NONCE_PREFIX..];
        let keys = derive(passphrase, salt, m, t, p)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&keys.check[..], check)) {
            return Err(BackupError::WrongPassphrase);
        }
        let aead = XChaCha20Poly1305::new(&keys.key);
        Ok(SealedReader {
            input,
            decryptor: Some(DecryptorBE32::from_aead(
                aead,
                GenericArray::from_slice(&prefix),
            )),
            header,
            ahead: Vec::new(),
            plain: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    /// Opens the next chunk into `plain`.
    fn open_next(&mut self) -> Result<(), BackupError> {
        let want = CHUNK + TAG + 1;
        let have = self.ahead.len();
        self.ahead.resize(want, 0);
        let got = read_full(&mut self.input, &mut self.ahead[have..]).map_err(BackupError::read)?;
        self.ahead.truncate(have + got);
        let damaged =
            || BackupError::Damaged("a part of it does not open (changed, or cut off)".into());
        if self.ahead.len() == want {
            let dec = self.decryptor.as_mut().ok_or_else(damaged)?;
            let chunk: Vec<u8> = self.ahead.drain(..CHUNK + TAG).collect();
            self.plain = dec
                .decrypt_next(Payload {
                    msg: &chunk,
                    aad: &self.header,
                })
                .map_err(|_| damaged())?;
        } else {
            if self.ahead.len() < TAG {
                return Err(BackupError::Damaged("it is cut off".into()));
            }
            let dec = self.decryptor.take().ok_or_else(damaged)?;
            let chunk = std::mem::take(&mut self.ahead);
            self.plain = dec
                .decrypt_last(Payload {
                    msg: &chunk,
                    aad: &self.header,
                })
                .map_err(|_| damaged())?;
            self.done = true;
        }
        self.pos = 0;
        Ok(())
    }

    /// Reads to the end: every chunk authenticated, the last one marked as last. Anything
    /// left after the contents is damage.
    pub fn finish(mut self) -> Result<(), BackupError> {
        let mut rest = [0u8; 1];
        match self.read(&mut rest) {
            Ok(0) => Ok(()),
            Ok(_) => Err(BackupError::Damaged("data after its end".into())),
            Err(e) => Err(BackupError::from_io(e)),
        }
    }
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.open_next().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the input ends; answers the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn seal(data: &[u8], pass: &str) -> Vec<u8> {
        let mut w = SealedWriter::new(Vec::new(), &SecretString::from(pass)).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap().0
    }

    fn open(file: &[u8], pass: &str) -> Result<Vec<u8>, BackupError> {
        let mut r = SealedReader::new(file, &SecretString::from(pass))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(BackupError::from_io)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_edges() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = seal(&data, "correct horse battery");
            assert_eq!(open(&file, "correct horse battery").unwrap(), data, "{len}");
        }
    }

    #[test]
    fn wrong_passphrase_cut_and_changed_files_do_not_open() {
        let data: Vec<u8> = (0..2 * CHUNK + 10).map(|i| (i % 7) as u8).collect();
        let file = seal(&data, "correct horse battery");
        assert!(matches!(
            open(&file, "wrong horse battery"),
            Err(BackupError::WrongPassphrase)
        ));
        // Cut anywhere after the header, also exactly at a chunk's end.
        for cut in [HEADER_LEN + 5, HEADER_LEN + CHUNK + TAG, file.len() - 1] {
            assert!(
                matches!(
                    open(&file[..cut], "correct horse battery"),
                    Err(BackupError::Damaged(_))
                ),
                "cut at {cut}"
            );
        }
        // One bit changed in a chunk, or in the header's salt.
        for at in [HEADER_LEN + CHUNK + 100, file.len() - 3, MAGIC.len() + 14] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(open(&bad, "correct horse battery").is_err(), "bit at {at}");
        }
        // Extra bytes after the end.
        let mut longer = file.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert!(open(&longer, "correct horse battery").is_err());
        assert!(matches!(open(b"hello", "x"), Err(BackupError::NotABackup)));
    }
}
