//! Which school (connection) an automation acts on: a webhook source, the poller, a flow,
//! a sync, an export or the daily summary.
//!
//! The embedded sandbox is a choice, never a silent default. An item acts on the
//! connection it names; else on the file's `default_connection`; else, while the embedded
//! sandbox is the hub's only connection, on the sandbox (and the caller says so). Once a
//! real school is connected, an item that names none is an error, so a payment source
//! written without `connection =` can never grant access in the emulator instead of the
//! school.

use std::fmt;

use memberspot_store::Connection;

use crate::{EMBEDDED_BASE_URL, Hub, HubError, SANDBOX_CONNECTION};

/// The hub's connections, as far as choosing a school goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schools {
    /// Every connection's name, sorted.
    names: Vec<String>,
    /// Whether a connection other than the embedded sandbox exists.
    any_real: bool,
}

/// How an item came to act on its school.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// It names the connection (`connection = "…"`).
    Named,
    /// The file's `default_connection`.
    Default,
    /// Nothing named, and the embedded sandbox is the only connection.
    OnlySandbox,
}

/// The school an item acts on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct School {
    pub connection: String,
    pub choice: Choice,
}

impl fmt::Display for School {
    /// `` `akademie` ``, `` `akademie` (default_connection) ``, or a sentence for the sandbox.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.choice {
            Choice::Named => write!(f, "`{}`", self.connection),
            Choice::Default => write!(f, "`{}` (default_connection)", self.connection),
            Choice::OnlySandbox => write!(
                f,
                "`{}` (the embedded sandbox, not a real school: no other connection exists)",
                self.connection
            ),
        }
    }
}

/// Why an item has no school.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchoolError {
    #[error("{item}: connection `{connection}` does not exist; connections: {known}")]
    Unknown {
        item: String,
        connection: String,
        known: String,
    },
    #[error(
        "{item}: no `connection` is set, and the hub has schools besides the embedded sandbox \
         (connections: {known}); name one with `connection = \"…\"`, or set \
         `default_connection` at the top of {file}"
    )]
    Required {
        item: String,
        known: String,
        file: String,
    },
}

/// Every item that has no school, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unresolved(pub Vec<SchoolError>);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<Unresolved> for HubError {
    fn from(e: Unresolved) -> HubError {
        HubError::Invalid(e.to_string())
    }
}

impl Schools {
    /// From the stored connections: the embedded sandbox is the one whose base URL is the
    /// embedded marker (a connection named `sandbox` pointed at a real school is real).
    pub fn new(connections: &[Connection]) -> Schools {
        let mut names: Vec<String> = connections.iter().map(|c| c.name.clone()).collect();
        names.sort();
        Schools {
            names,
            any_real: connections.iter().any(|c| c.base_url != EMBEDDED_BASE_URL),
        }
    }

    /// The school of `item` ("source `ds24`"), which names `named` (if anything), in a
    /// file whose `default_connection` is `default`; `file` names that file in messages.
    pub fn resolve(
        &self,
        item: &str,
        named: Option<&str>,
        default: Option<&str>,
        file: &str,
    ) -> Result<School, SchoolError> {
        let (connection, choice) = match (named, default) {
            (Some(n), _) => (n, Choice::Named),
            (None, Some(d)) => (d, Choice::Default),
            (None, None) if !self.any_real => (SANDBOX_CONNECTION, Choice::OnlySandbox),
            (None, None) => {
                return Err(SchoolError::Required {
                    item: item.to_owned(),
                    known: self.known(),
                    file: file.to_owned(),
                });
            }
        };
        if !self.names.iter().any(|n| n == connection) {
            return Err(SchoolError::Unknown {
                item: match choice {
                    Choice::Default => format!("{item} (by default_connection)"),
                    _ => item.to_owned(),
                },
                connection: connection.to_owned(),
                known: self.known(),
            });
        }
        Ok(School {
            connection: connection.to_owned(),
            choice,
        })
    }

    fn known(&self) -> String {
        if self.names.is_empty() {
            "none (add one with `memberspot connections add`)".to_owned()
        } else {
            self.names.join(", ")
        }
    }
}

/// Resolves every `(item, connection as configured)` of one file and fills each in with
/// its school's name; every item without one is reported at once.
pub fn resolve_all(
    schools: &Schools,
    items: Vec<(String, &mut Option<String>)>,
    default: Option<&str>,
    file: &str,
) -> Result<Vec<(String, School)>, Unresolved> {
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    for (item, connection) in items {
        match schools.resolve(&item, connection.as_deref(), default, file) {
            Ok(school) => {
                *connection = Some(school.connection.clone());
                resolved.push((item, school));
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(Unresolved(problems))
    }
}

/// Logs the school of each item: a warning where it is the embedded sandbox by default
/// (nothing named it), so acting on the emulator is never silent.
pub fn log(schools: &[(String, School)]) {
    for (item, school) in schools {
        if school.choice == Choice::OnlySandbox {
            tracing::warn!("{item} acts on {school}");
        } else {
            tracing::info!("{item} acts on {school}");
        }
    }
}

impl Hub {
    /// The connections automations may act on, read now.
    pub async fn schools(&self) -> Result<Schools, HubError> {
        Ok(Schools::new(&self.store().list_connections().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, base_url: &str) -> Connection {
        Connection {
            id: name.into(),
            name: name.into(),
            base_url: base_url.into(),
            sealed_key: String::new(),
            key_hint: String::new(),
            rate_limit: 4.0,
            created_at: 0,
            updated_at: 0,
        }
    }

    const FILE: &str = "the rules file";

    #[test]
    fn only_the_sandbox_means_the_sandbox_and_says_so() {
        let s = Schools::new(&[conn("sandbox", EMBEDDED_BASE_URL)]);
        let school = s
            .resolve("source `ds24`", None, None, FILE)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(school.connection, "sandbox");
        assert_eq!(school.choice, Choice::OnlySandbox);
        assert!(school.to_string().contains("not a real school"), "{school}");
    }

    #[test]
    fn a_real_school_makes_the_connection_required() {
        let s = Schools::new(&[
            conn("sandbox", EMBEDDED_BASE_URL),
            conn("akademie", "https://api.memberspot.de/v1"),
        ]);
        let e = s
            .resolve("source `ds24`", None, None, FILE)
            .expect_err("a real school makes naming one required");
        let m = e.to_string();
        assert!(m.starts_with("source `ds24`: no `connection`"), "{m}");
        assert!(
            m.contains("akademie, sandbox") && m.contains("default_connection"),
            "{m}"
        );
        assert!(m.contains(FILE), "{m}");

        // A default picks it; a named one wins over the default.
        let d = s
            .resolve("source `ds24`", None, Some("akademie"), FILE)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.connection.as_str(), d.choice),
            ("akademie", Choice::Default)
        );
        let n = s
            .resolve("source `ds24`", Some("sandbox"), Some("akademie"), FILE)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.connection.as_str(), n.choice),
            ("sandbox", Choice::Named)
        );
    }

    #[test]
    fn the_sandbox_name_pointed_at_a_school_is_a_real_school() {
        let s = Schools::new(&[conn("sandbox", "https://api.memberspot.de/v1")]);
        assert!(matches!(
            s.resolve("flow `welcome`", None, None, FILE),
            Err(SchoolError::Required { .. })
        ));
    }

    #[test]
    fn unknown_connections_name_the_item_and_list_the_known_ones() {
        let s = Schools::new(&[
            conn("sandbox", EMBEDDED_BASE_URL),
            conn("school", "https://x"),
        ]);
        let m = s
            .resolve("sync `crm`", Some("akademy"), None, FILE)
            .expect_err("unknown named connection")
            .to_string();
        assert_eq!(
            m,
            "sync `crm`: connection `akademy` does not exist; connections: sandbox, school"
        );
        let m = s
            .resolve("sync `crm`", None, Some("nope"), FILE)
            .expect_err("unknown default connection")
            .to_string();
        assert!(
            m.starts_with("sync `crm` (by default_connection): connection `nope`"),
            "{m}"
        );
        let none = Schools::new(&[]);
        let m = none
            .resolve("the poller", None, None, FILE)
            .expect_err("no connections at all")
            .to_string();
        assert!(
            m.contains("connection `sandbox` does not exist; connections: none"),
            "{m}"
        );
    }
}
