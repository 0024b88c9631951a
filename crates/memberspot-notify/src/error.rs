use std::fmt;
use std::time::Duration;

/// The channel a failure belongs to; every error message starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Slack,
    Email,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Slack => "slack",
            Channel::Email => "e-mail",
        })
    }
}

/// Why a message was not delivered.
///
/// Built so that neither `Display` nor `Debug` can show a credential: the webhook URL is
/// never stored here (reqwest errors are stripped of it and scrubbed), SMTP replies are
/// scrubbed of the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The message or the target is unusable; nothing was sent.
    #[error("{channel}: {field}: {problem}")]
    Invalid {
        channel: Channel,
        field: String,
        problem: String,
    },

    /// Slack answered with something repeating will not fix (`invalid_payload`,
    /// `channel_not_found`, …): the operator has to act.
    #[error("slack: HTTP {status} {error} (after {attempts} attempt(s); not retried)")]
    SlackRejected {
        status: u16,
        error: String,
        attempts: u32,
    },

    /// Rate limits, 5xx or refused connections until `max_attempts` ran out.
    #[error("slack: gave up after {attempts} attempt(s); last: {last}")]
    SlackGaveUp { attempts: u32, last: String },

    /// The request failed after it may have reached Slack (e.g. a time-out); not
    /// repeated, so the channel never gets the same digest twice.
    #[error("slack: request failed after {attempts} attempt(s): {reason}")]
    SlackTransport { attempts: u32, reason: String },

    /// No SMTP session: TCP, TLS or the greeting failed.
    #[error("e-mail: cannot connect to {server}: {reason}")]
    SmtpConnect { server: String, reason: String },

    /// `RCPT TO` was refused; nothing was sent to anybody.
    #[error("e-mail: {server} refused recipient {recipient}: {reply}")]
    RecipientRefused {
        server: String,
        recipient: String,
        reply: String,
        /// A 4xx reply: trying later may work.
        transient: bool,
    },

    /// Another step of the SMTP conversation failed.
    #[error("e-mail: {step} failed at {server}: {reply}")]
    Smtp {
        server: String,
        step: &'static str,
        reply: String,
        /// A 4xx reply or a network failure: trying later may work.
        transient: bool,
    },

    /// The whole conversation took longer than `EmailTarget::timeout`.
    #[error("e-mail: no complete answer from {server} within {timeout:?}")]
    SmtpTimeout { server: String, timeout: Duration },
}

impl NotifyError {
    pub fn channel(&self) -> Channel {
        match self {
            NotifyError::Invalid { channel, .. } => *channel,
            NotifyError::SlackRejected { .. }
            | NotifyError::SlackGaveUp { .. }
            | NotifyError::SlackTransport { .. } => Channel::Slack,
            NotifyError::SmtpConnect { .. }
            | NotifyError::RecipientRefused { .. }
            | NotifyError::Smtp { .. }
            | NotifyError::SmtpTimeout { .. } => Channel::Email,
        }
    }

    /// Whether sending the same message later may succeed (outage, rate limit, 4xx SMTP
    /// reply). The caller's scheduler decides when; `false` means someone has to fix the
    /// message or the configuration first.
    pub fn is_temporary(&self) -> bool {
        match self {
            NotifyError::Invalid { .. } | NotifyError::SlackRejected { .. } => false,
            NotifyError::SlackGaveUp { .. }
            | NotifyError::SlackTransport { .. }
            | NotifyError::SmtpConnect { .. }
            | NotifyError::SmtpTimeout { .. } => true,
            NotifyError::RecipientRefused { transient, .. }
            | NotifyError::Smtp { transient, .. } => *transient,
        }
    }

    pub(crate) fn invalid(
        channel: Channel,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        NotifyError::Invalid {
            channel,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Replaces every occurrence of each secret with `[redacted]`; belt and braces for text
/// that comes from a server or a library and is about to enter an error.
pub(crate) fn scrub(text: impl Into<String>, secrets: &[&str]) -> String {
    let mut text = text.into();
    for secret in secrets {
        // Very short "secrets" would shred ordinary words and protect nothing.
        if secret.len() >= 4 && text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// An error and its causes on one line, without the repetitions of libraries that also
/// print their source in their own message.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split(": ") {
        if segments.last() != Some(&segment) {
            segments.push(segment);
        }
    }
    segments.join(": ")
}

/// Server-provided text made safe for one log line: control characters removed, length
/// capped (a proxy may answer with a whole HTML page).
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let cleaned: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() <= max_chars {
        cleaned
    } else {
        let mut cut: String = cleaned.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_secret_but_not_tiny_ones() {
        assert_eq!(
            scrub("auth hunter22 failed for hunter22", &["hunter22", "ab"]),
            "auth [redacted] failed for [redacted]"
        );
        assert_eq!(scrub("a b", &["", "a"]), "a b");
    }

    #[test]
    fn chain_joins_causes_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "Connection error: Connection error: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(std::io::Error::other("refused"));
        assert_eq!(chain(&err), "Connection error: refused");
    }

    #[test]
    fn one_line_strips_controls_and_caps() {
        assert_eq!(one_line("  bad\r\nthing ", 50), "bad  thing");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
