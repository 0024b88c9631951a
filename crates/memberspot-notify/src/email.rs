//! E-mail over SMTP (`shared/webhooks.md` §8).
//!
//! The message is `multipart/alternative` (text/plain first, text/html second, so
//! clients show the richest part they support), UTF-8, with Date, Message-ID, From, To
//! and Subject, built by `lettre`. The SMTP conversation is driven step by step
//! (`lettre`'s connection, not its transport) so a refused `RCPT TO` can name the
//! recipient. One conversation per call and no retries: the caller's schedule decides
//! whether a temporary failure ([`NotifyError::is_temporary`]) is worth another run.
//!
//! Production servers use STARTTLS on port 587 ([`Security::StartTls`]) or TLS from the
//! first byte on port 465 ([`Security::Tls`]), verified against the Mozilla roots
//! (rustls + webpki-roots, no system OpenSSL needed).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Channel, NotifyError, chain, one_line, scrub};
use crate::{Delivered, Message};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connect, then `STARTTLS`, which the server must offer (we never continue
    /// unencrypted). Usually port 587.
    StartTls,
    /// TLS from the first byte ("SMTPS"). Usually port 465.
    Tls,
    /// No encryption at all: for local test servers and relays on the same host only.
    /// A password is refused unless the host is loopback.
    None,
}

impl Security {
    /// The conventional port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// The SMTP server and the envelope.
#[derive(Debug, Clone)]
pub struct EmailTarget {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Both or neither of `username` and `password`; AUTH PLAIN or LOGIN.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `hub@example.com` or `Memberspot Hub <hub@example.com>`.
    pub from: String,
    /// Same forms as `from`; at least one.
    pub to: Vec<String>,
    /// Bounds the whole conversation, connect to QUIT.
    pub timeout: Duration,
}

/// Sends `msg` in one SMTP conversation. A refused recipient aborts the transaction, so
/// either every recipient gets the message or none does.
pub async fn send_email(target: &EmailTarget, msg: &Message) -> Result<Delivered, NotifyError> {
    let prepared = prepare(target, msg)?;
    let server = server_name(target);
    let password = target
        .password
        .as_ref()
        .map(|p| p.expose_secret().to_owned())
        .unwrap_or_default();
    let secrets = [password.as_str()];
    let session = Session {
        target,
        server: &server,
        secrets: &secrets,
    };
    match tokio::time::timeout(target.timeout, session.run(&prepared)).await {
        Ok(result) => result,
        Err(_) => Err(NotifyError::SmtpTimeout {
            server,
            timeout: target.timeout,
        }),
    }
}

/// The message exactly as it would go over the wire (after validation); for previews and
/// dry runs.
pub fn render(target: &EmailTarget, msg: &Message) -> Result<Vec<u8>, NotifyError> {
    prepare(target, msg).map(|p| p.bytes)
}

struct Prepared {
    envelope: Envelope,
    bytes: Vec<u8>,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> NotifyError {
    NotifyError::invalid(Channel::Email, field, problem)
}

fn mailbox(field: String, raw: &str) -> Result<Mailbox, NotifyError> {
    raw.trim()
        .parse::<Mailbox>()
        .map_err(|_| invalid(field, format!("{raw:?} is not an e-mail address")))
}

fn prepare(target: &EmailTarget, msg: &Message) -> Result<Prepared, NotifyError> {
    if target.host.trim().is_empty() {
        return Err(invalid("host", "is empty"));
    }
    if target.port == 0 {
        return Err(invalid("port", "must not be 0"));
    }
    if target.timeout.is_zero() {
        return Err(invalid("timeout", "must be longer than 0"));
    }
    match (&target.username, &target.password) {
        (Some(_), None) => return Err(invalid("password", "missing (username is set)")),
        (None, Some(_)) => return Err(invalid("username", "missing (password is set)")),
        (Some(_), Some(_)) if target.security == Security::None && !is_loopback(&target.host) => {
            return Err(invalid(
                "security",
                format!(
                    "refusing to send the password unencrypted to {}; use StartTls or Tls",
                    target.host
                ),
            ));
        }
        _ => {}
    }
    let from = mailbox("from".to_owned(), &target.from)?;
    if target.to.is_empty() {
        return Err(invalid("to", "no recipients"));
    }
    let to = target
        .to
        .iter()
        .enumerate()
        .map(|(i, raw)| mailbox(format!("to[{i}]"), raw))
        .collect::<Result<Vec<_>, _>>()?;
    if msg.subject.trim().is_empty() {
        return Err(invalid("subject", "is empty"));
    }
    if msg.subject.chars().any(char::is_control) {
        return Err(invalid(
            "subject",
            "contains a line break or control character",
        ));
    }

    let message_id = format!(
        "<{}@{}>",
        uuid::Uuid::new_v4().simple(),
        from.email.domain()
    );
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(msg.subject.clone())
        .date(SystemTime::now())
        .message_id(Some(message_id));
    for mailbox in to {
        builder = builder.to(mailbox);
    }
    let built = match &msg.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            msg.text.clone(),
            html.clone(),
        )),
        // lettre ends a lone part with its own CRLF; the text's last one would become
        // an empty line.
        None => builder.singlepart(SinglePart::plain(
            msg.text
                .strip_suffix("\r\n")
                .or_else(|| msg.text.strip_suffix('\n'))
                .unwrap_or(&msg.text)
                .to_owned(),
        )),
    }
    .map_err(|e| invalid("message", e.to_string()))?;
    Ok(Prepared {
        envelope: built.envelope().clone(),
        bytes: built.formatted(),
    })
}

/// A TLS handshake that met something else than TLS (e.g. a plain SMTP greeting) shows
/// up as invalid data, not as lettre's TLS kind.
fn is_invalid_data(err: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether `host` is this machine (`localhost`, `127.0.0.1`, `[::1]`): the only place a
/// password may go without TLS.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn server_name(target: &EmailTarget) -> String {
    if target.host.contains(':') && !target.host.starts_with('[') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

/// Which TLS, if any, the connection gets: implicit at connect, or via STARTTLS.
struct TlsPlan {
    implicit: Option<TlsParameters>,
    starttls: Option<TlsParameters>,
}

fn tls_plan(target: &EmailTarget, server: &str) -> Result<TlsPlan, NotifyError> {
    let params = || {
        TlsParameters::new(target.host.clone()).map_err(|e| NotifyError::Smtp {
            server: server.to_owned(),
            step: "TLS setup",
            reply: e.to_string(),
            transient: false,
        })
    };
    Ok(match target.security {
        Security::Tls => TlsPlan {
            implicit: Some(params()?),
            starttls: None,
        },
        Security::StartTls => TlsPlan {
            implicit: None,
            starttls: Some(params()?),
        },
        Security::None => TlsPlan {
            implicit: None,
            starttls: None,
        },
    })
}

struct Session<'a> {
    target: &'a EmailTarget,
    server: &'a str,
    secrets: &'a [&'a str],
}

impl Session<'_> {
    async fn run(&self, prepared: &Prepared) -> Result<Delivered, NotifyError> {
        let plan = tls_plan(self.target, self.server)?;
        let hello = ClientId::default();
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.target.host.as_str(), self.target.port),
            Some(self.target.timeout),
            &hello,
            plan.implicit,
            None,
        )
        .await
        .map_err(|e| {
            if e.is_tls() || (self.target.security == Security::Tls && is_invalid_data(&e)) {
                self.failed("TLS handshake", &e)
            } else {
                NotifyError::SmtpConnect {
                    server: self.server.to_owned(),
                    reason: self.reason(&e),
                }
            }
        })?;
        match self
            .transaction(&mut conn, plan.starttls, &hello, prepared)
            .await
        {
            Ok(reply) => {
                // The message is accepted; a failing QUIT changes nothing.
                let _ = conn.quit().await;
                Ok(Delivered {
                    attempts: 1,
                    detail: format!(
                        "accepted by {} for {} recipient(s): {}",
                        self.server,
                        prepared.envelope.to().len(),
                        self.reply_text(&reply)
                    ),
                })
            }
            Err(err) => {
                conn.abort().await;
                Err(err)
            }
        }
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        starttls: Option<TlsParameters>,
        hello: &ClientId,
        prepared: &Prepared,
    ) -> Result<Response, NotifyError> {
        if let Some(params) = starttls {
            if !conn.can_starttls() {
                return Err(NotifyError::Smtp {
                    server: self.server.to_owned(),
                    step: "STARTTLS",
                    reply: "the server does not offer STARTTLS; not continuing unencrypted"
                        .to_owned(),
                    transient: false,
                });
            }
            conn.starttls(params, hello)
                .await
                .map_err(|e| self.failed("STARTTLS", &e))?;
        }
        if let (Some(user), Some(password)) = (&self.target.username, &self.target.password) {
            let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| self.failed("AUTH", &e))?;
        }

        let envelope = &prepared.envelope;
        let mut params = Vec::new();
        let non_ascii_address = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii_address {
            self.require(
                conn,
                Extension::SmtpUtfEight,
                "SMTPUTF8 (needed for a non-ASCII address)",
            )?;
            params.push(MailParameter::SmtpUtfEight);
        }
        if !prepared.bytes.is_ascii() {
            self.require(conn, Extension::EightBitMime, "8BITMIME")?;
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), params))
            .await
            .map_err(|e| self.failed("MAIL FROM", &e))?;
        for recipient in envelope.to() {
            conn.command(Rcpt::new(recipient.clone(), Vec::new()))
                .await
                .map_err(|e| NotifyError::RecipientRefused {
                    server: self.server.to_owned(),
                    recipient: recipient.to_string(),
                    reply: self.reason(&e),
                    transient: e.is_transient(),
                })?;
        }
        conn.command(Data)
            .await
            .map_err(|e| self.failed("DATA", &e))?;
        // The terminating "\r\n.\r\n" supplies the last line's CRLF; sending the
        // message's own as well would append an empty line to the body.
        let bytes = prepared
            .bytes
            .strip_suffix(b"\r\n")
            .unwrap_or(&prepared.bytes);
        conn.message(bytes)
            .await
            .map_err(|e| self.failed("sending the message", &e))
    }

    fn require(
        &self,
        conn: &AsyncSmtpConnection,
        extension: Extension,
        name: &str,
    ) -> Result<(), NotifyError> {
        if conn.server_info().supports_feature(extension) {
            Ok(())
        } else {
            Err(NotifyError::Smtp {
                server: self.server.to_owned(),
                step: "MAIL FROM",
                reply: format!("the server does not support {name}"),
                transient: false,
            })
        }
    }

    fn failed(&self, step: &'static str, err: &lettre::transport::smtp::Error) -> NotifyError {
        NotifyError::Smtp {
            server: self.server.to_owned(),
            step,
            reply: self.reason(err),
            transient: err.is_transient(),
        }
    }

    /// `550 5.1.1 no such user` for replies, the error chain otherwise; scrubbed.
    fn reason(&self, err: &lettre::transport::smtp::Error) -> String {
        let source = std::error::Error::source(err).map(ToString::to_string);
        let text = match (err.status(), source) {
            (Some(code), Some(message)) => format!("{code} {message}"),
            (Some(code), None) => code.to_string(),
            (None, _) => chain(err),
        };
        one_line(&scrub(text, self.secrets), 300)
    }

    fn reply_text(&self, reply: &Response) -> String {
        let lines: Vec<&str> = reply.message().collect();
        one_line(
            &scrub(
                format!("{} {}", reply.code(), lines.join(" ")),
                self.secrets,
            ),
            200,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target(security: Security) -> EmailTarget {
        EmailTarget {
            host: "smtp.example.com".into(),
            port: security.default_port(),
            security,
            username: Some("hub".into()),
            password: Some(SecretString::from("pa55-w0rd!")),
            from: "Memberspot Hub <hub@example.com>".into(),
            to: vec!["ops@example.com".into()],
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn each_security_mode_plans_its_tls() {
        let server = "smtp.example.com:465";
        let tls = tls_plan(&target(Security::Tls), server).unwrap();
        assert_eq!(tls.implicit.as_ref().unwrap().domain(), "smtp.example.com");
        assert!(tls.starttls.is_none());

        let starttls = tls_plan(&target(Security::StartTls), server).unwrap();
        assert!(starttls.implicit.is_none());
        assert_eq!(
            starttls.starttls.as_ref().unwrap().domain(),
            "smtp.example.com"
        );

        let none = tls_plan(&target(Security::None), server).unwrap();
        assert!(none.implicit.is_none() && none.starttls.is_none());

        assert_eq!(Security::StartTls.default_port(), 587);
        assert_eq!(Security::Tls.default_port(), 465);
    }

    #[test]
    fn validation_names_the_field() {
        let msg = Message::new("Digest", "body");
        let check = |t: EmailTarget, want: &str| {
            let err = render(&t, &msg).unwrap_err().to_string();
            assert_eq!(err, want);
        };
        let mut t = target(Security::StartTls);
        t.to = vec!["a@example.com".into(), "b@example.com".into(), "x@".into()];
        check(t, r#"e-mail: to[2]: "x@" is not an e-mail address"#);

        let mut t = target(Security::StartTls);
        t.to.clear();
        check(t, "e-mail: to: no recipients");

        let mut t = target(Security::StartTls);
        t.from = "hub at example".into();
        check(
            t,
            r#"e-mail: from: "hub at example" is not an e-mail address"#,
        );

        let mut t = target(Security::StartTls);
        t.password = None;
        check(t, "e-mail: password: missing (username is set)");

        let t = target(Security::None);
        check(
            t,
            "e-mail: security: refusing to send the password unencrypted to smtp.example.com; use StartTls or Tls",
        );

        let mut t = target(Security::None);
        t.host = "127.0.0.1".into();
        assert!(render(&t, &msg).is_ok());

        let err = render(
            &target(Security::Tls),
            &Message::new("a\r\nBcc: x@evil", "b"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("e-mail: subject: "), "{err}");
    }

    #[test]
    fn debug_of_a_target_hides_the_password() {
        let debug = format!("{:?}", target(Security::Tls));
        assert!(!debug.contains("pa55-w0rd!"), "{debug}");
    }
}
