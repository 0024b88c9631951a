//! Delivery of messages to Slack (incoming webhooks) and e-mail (SMTP).
//!
//! The daily summary and the flows' "notify" steps render one [`Message`] and hand it to
//! [`send_slack`] and/or [`send_email`]. Each call either reports how it was delivered
//! ([`Delivered`]) or says which channel failed and why ([`NotifyError`]); neither ever
//! contains the Slack webhook URL or the SMTP password, because those are the credentials.
//!
//! Conventions follow `shared/webhooks.md` §7 (Slack) and §8 (e-mail digest).

mod error;

pub mod email;
pub mod slack;

pub use email::{EmailTarget, Security, send_email};
pub use error::{Channel, NotifyError};
pub use slack::{SlackTarget, send_slack};

/// What to say, once, rendered for every channel.
///
/// The renderer (digest, flow step) fills every form it can; each channel takes what it
/// understands: e-mail uses `subject`, `text` and `html`; Slack posts `slack_blocks` with
/// `text` as the notification/fallback text (or `text` alone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// E-mail subject, e.g. `Memberspot – 2 Mar 2026: 12 purchases, 1 refund`.
    pub subject: String,
    /// Plain text; tabular parts in aligned columns of at most 78 characters.
    pub text: String,
    /// Optional HTML alternative (inline CSS, user data already escaped).
    pub html: Option<String>,
    /// Optional Block Kit array for Slack; [`slack::fit`] trims it to Slack's limits.
    pub slack_blocks: Option<serde_json::Value>,
}

impl Message {
    /// A plain-text message; add `html` / `slack_blocks` through the public fields.
    pub fn new(subject: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            text: text.into(),
            html: None,
            slack_blocks: None,
        }
    }
}

/// How a message got through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Requests made (Slack retries count; e-mail is always one conversation).
    pub attempts: u32,
    /// One line for logs and the flow run record, e.g. the SMTP server's final reply.
    pub detail: String,
}
