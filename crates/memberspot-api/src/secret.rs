use secrecy::{ExposeSecret, SecretString};

/// A Memberspot API key. `Debug` and `Display` never show it; the only way to
/// read it is [`ApiKey::expose`], used when the request header is written.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(SecretString::from(key.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short, non-reversible label for logs ("…" plus the last 4
    /// characters only when the key is long enough not to be guessable).
    pub fn hint(&self) -> String {
        let k = self.expose();
        if k.chars().count() >= 24 {
            let tail: String = k
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            "…".to_string()
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let k = ApiKey::new("sk_live_very_secret_value_1234");
        assert!(!format!("{k:?}").contains("secret"));
        assert!(!format!("{k}").contains("secret"));
        assert_eq!(k.hint(), "…1234");
        assert_eq!(ApiKey::new("short").hint(), "…");
        assert_eq!(k.expose(), "sk_live_very_secret_value_1234");
    }
}
