//! The optional config file. Flags and environment variables override it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// `config.toml`:
///
/// ```toml
/// [memberspot]
/// base_url = "https://api.memberspot.de/v1"
/// api_key = "..."            # or: api_key_file = "/run/secrets/memberspot"
/// rate_limit = 4             # requests per second
/// timeout_secs = 30
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub memberspot: MemberspotSection,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` to share the hub's state between instances.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Keep audit records this many days (they contain personal data); unset keeps them.
    #[serde(default)]
    pub audit_retention_days: Option<u32>,
    /// Webhook sources, access rules and the poller (see docs/events.md).
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
    /// The daily summary, delivery targets and flows (see docs/flows.md).
    #[serde(default)]
    pub flows_file: Option<PathBuf>,
    /// Language models for summaries and persona chat (see docs/flows.md).
    #[serde(default)]
    pub models_file: Option<PathBuf>,
    /// The embedded sandbox school (see docs/sandbox.md).
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// `serve`: reverse proxies (addresses or CIDR ranges) whose forwarding header names
    /// the client; `--trusted-proxy` / `MEMBERSPOT_TRUSTED_PROXIES` replace the list.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `serve`: `x-forwarded-for` (default) or `forwarded`.
    #[serde(default)]
    pub trusted_proxy_header: Option<crate::cli::ProxyHeaderArg>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// The answer shapes the embedded school speaks: `documented` (default) or `alternate`.
    pub shapes: Option<memberspot_sandbox::Shapes>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberspotSection {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub rate_limit: Option<f64>,
    pub timeout_secs: Option<f64>,
}

impl std::fmt::Debug for MemberspotSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberspotSection")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_file", &self.api_key_file)
            .field("rate_limit", &self.rate_limit)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl ConfigFile {
    /// Loads `explicit`, or the default file if it exists. An explicit path
    /// that does not exist is an error; a missing default file is not.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let (path, must_exist) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match dirs::config_dir() {
                Some(d) => (d.join("memberspot").join("config.toml"), false),
                None => return Ok((Self::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok((Self::default(), None));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read config file {}", path.display()));
            }
        };
        let cfg: ConfigFile = toml::from_str(&text)
            .with_context(|| format!("config file {} is invalid", path.display()))?;
        cfg.check()
            .with_context(|| format!("config file {}", path.display()))?;
        Ok((cfg, Some(path)))
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.audit_retention_days == Some(0) {
            bail!("`audit_retention_days` must be at least 1 (leave it out to keep records)");
        }
        for r in &self.trusted_proxies {
            if let Err(e) = crate::cli::proxy_range(r) {
                bail!("`trusted_proxies`: {e}");
            }
        }
        let m = &self.memberspot;
        if m.api_key.is_some() && m.api_key_file.is_some() {
            bail!("`memberspot.api_key` and `memberspot.api_key_file` are both set; keep one");
        }
        if let Some(url) = &m.base_url
            && let Err(e) = memberspot_api::check_base_url(url)
        {
            bail!("`memberspot.base_url`: {}", config_message(e));
        }
        if let Some(r) = m.rate_limit
            && !(r >= 0.0 && r.is_finite())
        {
            bail!("`memberspot.rate_limit` must be a number >= 0, got {r}");
        }
        if let Some(t) = m.timeout_secs
            && !(t > 0.0 && t.is_finite())
        {
            bail!("`memberspot.timeout_secs` must be a number > 0, got {t}");
        }
        Ok(())
    }

    /// Audit retention: `MEMBERSPOT_AUDIT_RETENTION_DAYS`, else the file's setting.
    pub fn retention_days(&self) -> anyhow::Result<Option<u32>> {
        match std::env::var("MEMBERSPOT_AUDIT_RETENTION_DAYS") {
            Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => bail!(
                    "MEMBERSPOT_AUDIT_RETENTION_DAYS must be a whole number of days >= 1, got `{v}`"
                ),
            },
            _ => Ok(self.audit_retention_days),
        }
    }

    /// The embedded school's answer shapes: `MEMBERSPOT_SANDBOX_SHAPES`, else the file's
    /// `sandbox.shapes`, else documented.
    pub fn sandbox_shapes(&self) -> anyhow::Result<memberspot_sandbox::Shapes> {
        if std::env::var(memberspot_sandbox::SHAPES_ENV).is_ok_and(|v| !v.trim().is_empty()) {
            return memberspot_sandbox::Shapes::from_env()
                .map_err(|e| crate::output::Usage(e).into());
        }
        Ok(self.sandbox.shapes.unwrap_or_default())
    }

    /// The API key from the file, reading `api_key_file` if given.
    pub fn api_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(k) = &self.memberspot.api_key {
            return Ok(Some(k.clone()));
        }
        match &self.memberspot.api_key_file {
            Some(p) => {
                let k = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read `memberspot.api_key_file` {}", p.display())
                })?;
                Ok(Some(k.trim().to_string()))
            }
            None => Ok(None),
        }
    }
}

/// The message of a configuration error, without the client's "invalid client configuration" prefix.
fn config_message(e: memberspot_api::ApiError) -> String {
    match e {
        memberspot_api::ApiError::Config(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_base_url_is_refused_unless_loopback() {
        let cfg: ConfigFile =
            toml::from_str("[memberspot]\nbase_url = \"http://school.example/v1\"\n")
                .expect("parses");
        let err = cfg.check().expect_err("http to a public host").to_string();
        assert!(
            err.contains("memberspot.base_url") && err.contains("https://"),
            "{err}"
        );
        let cfg: ConfigFile =
            toml::from_str("[memberspot]\nbase_url = \"http://127.0.0.1:8080/v1\"\n")
                .expect("parses");
        cfg.check().expect("loopback may use http");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            toml::from_str::<ConfigFile>("[memberspot]\napi_kye = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("api_kye"), "{err}");
        let err = toml::from_str::<ConfigFile>("[memberspot]\nrate_limit = \"fast\"\n")
            .expect_err("type");
        assert!(err.to_string().contains("rate_limit"), "{err}");
    }

    #[test]
    fn sandbox_shapes_come_from_the_file() {
        let cfg: ConfigFile =
            toml::from_str("[sandbox]\nshapes = \"alternate\"\n").expect("parses");
        assert_eq!(
            cfg.sandbox.shapes,
            Some(memberspot_sandbox::Shapes::Alternate)
        );
        let err = toml::from_str::<ConfigFile>("[sandbox]\nshapes = \"odd\"\n")
            .expect_err("unknown mode");
        assert!(err.to_string().contains("documented"), "{err}");
    }

    #[test]
    fn debug_hides_the_key() {
        let cfg: ConfigFile =
            toml::from_str("[memberspot]\napi_key = \"sk_secret_123\"\n").expect("parses");
        assert!(!format!("{cfg:?}").contains("sk_secret_123"));
    }
}
