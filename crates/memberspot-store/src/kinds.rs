//! Values kept in TEXT columns that are really one of a few: typed at the edge of the store.
//!
//! Each type writes its text form and parses it back when a row is read; a text it does
//! not know is [`StoreError::Corrupt`], never a guess. The columns stay TEXT (older rows
//! hold the same words), so adding a variant needs no migration.

use crate::StoreError;

/// A type stored as one of a fixed set of words.
pub trait StoredText: Sized + Copy + 'static {
    /// What the value is, for error messages ("audit outcome").
    const WHAT: &'static str;
    /// Every value, in declaration order.
    fn all() -> &'static [Self];
    fn as_str(self) -> &'static str;

    /// The value written as `text`, if it is one.
    fn parse(text: &str) -> Option<Self> {
        Self::all().iter().copied().find(|v| v.as_str() == text)
    }

    /// The accepted words, comma-separated (for messages).
    fn choices() -> String {
        Self::all()
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads a stored word of `T` for `owner` (e.g. "audit record 17"): an unknown one is
/// corrupt data, named with the owner (the word is shown cut to 40 characters).
pub(crate) fn parse_stored<T: StoredText>(text: &str, owner: &str) -> Result<T, StoreError> {
    T::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(40).collect();
        StoreError::Corrupt(format!(
            "{owner}: unknown {} `{shown}` (known: {})",
            T::WHAT,
            T::choices()
        ))
    })
}

/// Declares an enum stored as text: serde, `Display`, `ALL`, `as_str` and `parse` all use
/// the words given per variant.
macro_rules! stored_text {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                <$name as $crate::kinds::StoredText>::parse(text)
            }
        }

        impl $crate::kinds::StoredText for $name {
            const WHAT: &'static str = $what;

            fn all() -> &'static [$name] {
                &$name::ALL
            }

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_text;

stored_text! {
    /// Where a tool call came from (the audit log's `surface`).
    #[derive(Default)]
    pub enum Surface("surface") {
        #[default]
        Cli = "cli",
        McpStdio = "mcp-stdio",
        McpHttp = "mcp-http",
        Rest = "rest",
        Flow = "flow",
        /// Access rules acting on webhook events.
        Events = "events",
        /// The change-detection poller.
        Poller = "poller",
        /// The web console (a signed-in console user).
        Console = "console",
    }
}

stored_text! {
    /// How a recorded tool call ended.
    pub enum AuditOutcome("audit outcome") {
        /// The tool ran and answered.
        Ok = "ok",
        /// The tool ran and failed (the school refused it, or could not be reached).
        ToolError = "tool_error",
        /// Refused before running: revoked, out of scope or offers, over the limit.
        Denied = "denied",
        /// Refused before running: an unknown tool or arguments that do not parse.
        Invalid = "invalid",
        /// The caller went away before the call finished.
        Cancelled = "cancelled",
    }
}

stored_text! {
    /// How a webhook delivery's authenticity was established.
    pub enum Verification("delivery verification") {
        /// Verified before it was stored (signature, secret field, URL token or post-back).
        Verified = "verified",
        /// Stored first and posted back to PayPal afterwards (older versions).
        Postback = "postback",
        /// Refused: kept as its reason, size, source and time only.
        Rejected = "rejected",
    }
}

stored_text! {
    /// Where a flow run is.
    pub enum RunStatus("flow run status") {
        Running = "running",
        Ok = "ok",
        Failed = "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventStatus;

    fn round_trips<T: StoredText + PartialEq + std::fmt::Debug + serde::Serialize>() {
        for v in T::all() {
            assert_eq!(T::parse(v.as_str()), Some(*v));
            assert_eq!(
                serde_json::to_value(v).unwrap_or_default(),
                serde_json::Value::String(v.as_str().to_owned())
            );
        }
        assert_eq!(T::parse("nonsense"), None);
        assert_eq!(T::parse(""), None);
        match parse_stored::<T>("NONSENSE", "record 7") {
            Err(StoreError::Corrupt(m)) => {
                assert!(m.contains("record 7") && m.contains(T::WHAT), "{m}");
                assert!(m.contains("NONSENSE"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips_and_refuses_unknown_words() {
        round_trips::<Surface>();
        round_trips::<AuditOutcome>();
        round_trips::<Verification>();
        round_trips::<RunStatus>();
        round_trips::<EventStatus>();
    }

    /// The words are what older rows hold: changing one would make them unreadable.
    #[test]
    fn stored_words_are_stable() {
        assert_eq!(
            Surface::choices(),
            "cli, mcp-stdio, mcp-http, rest, flow, events, poller, console"
        );
        assert_eq!(
            AuditOutcome::choices(),
            "ok, tool_error, denied, invalid, cancelled"
        );
        assert_eq!(Verification::choices(), "verified, postback, rejected");
        assert_eq!(RunStatus::choices(), "running, ok, failed");
        assert_eq!(
            EventStatus::choices(),
            "pending, processing, retry, done, unmatched, ignored, rejected, dead, refused_amount"
        );
    }
}
