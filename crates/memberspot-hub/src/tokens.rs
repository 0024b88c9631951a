//! Persona bearer tokens: shown once, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every persona token starts with this, so leaked tokens are easy to spot.
pub const TOKEN_PREFIX: &str = "msh_";

/// A freshly minted token: the secret (show it once) and what to store.
pub struct NewToken {
    pub secret: SecretString,
    pub hash: String,
    /// First characters, safe to show in listings to tell tokens apart.
    pub display_prefix: String,
}

/// 256 random bits.
pub fn mint() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    let display_prefix = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    NewToken {
        secret: SecretString::from(token),
        hash,
        display_prefix,
    }
}

/// The stored form. Tokens carry 256 bits of entropy, so an unsalted hash
/// cannot be reversed by guessing.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Constant-time comparison of a presented token with a stored hash.
pub fn verify(token: &str, stored_hash: &str) -> bool {
    hash(token).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Cheap syntactic check before touching the store.
pub fn looks_like_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX) && token.len() >= TOKEN_PREFIX.len() + 40
}

/// Wraps a presented token so it cannot be logged by accident.
pub fn presented(token: &str) -> SecretString {
    SecretString::from(token.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn mint_hash_verify() {
        let t = mint();
        let token = t.secret.expose_secret();
        assert!(looks_like_token(token));
        assert!(verify(token, &t.hash));
        assert!(!verify(&format!("{token}x"), &t.hash));
        assert!(token.starts_with(&t.display_prefix));
        assert_ne!(mint().hash, t.hash);
        assert!(!t.hash.contains(&token[4..]));
    }
}
