//! `send_email` through a real SMTP conversation with the local responder; what arrives
//! is parsed with `mail-parser`, as a mail client would.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use memberspot_notify::{EmailTarget, Message, NotifyError, Security, send_email};
use secrecy::SecretString;

use crate::smtp_server::{Behaviour, SmtpServer};

const PASSWORD: &str = "pa55-w0rd!";

const SUBJECT: &str = "Memberspot – 2 März 2026: 12 Käufe";

const TEXT: &str = "\
Memberspot – 2 März 2026: 12 Käufe, 1 Erstattung, 1 fehlgeschlagene Freischaltung

Zu erledigen
  CopeCart CC-ORD-8F3K2LQ – Freischaltung fehlgeschlagen (API 502)

Zeit   Anbieter     Ereignis   Bestellung       Käufer            Ergebnis
06:00  digistore24  Kauf       MBR7Q2XZ         j***@beispiel.de  ok
06:05  copecart     Kauf       CC-ORD-8F3K2LQ   m***@beispiel.de  Fehler
.a line starting with a dot survives dot-stuffing
";

const HTML: &str = "<!doctype html><html><body style=\"font-family:sans-serif;width:600px\">\
<h1>Memberspot – 2 März 2026</h1><table><tr><td>Käufe</td><td>12</td></tr>\
<tr><td>Käufer</td><td>Jörg &amp; Söhne &lt;GmbH&gt;</td></tr></table></body></html>";

fn target(server: &SmtpServer, to: &[&str]) -> EmailTarget {
    EmailTarget {
        host: "127.0.0.1".into(),
        port: server.port,
        security: Security::None,
        username: None,
        password: None,
        from: "Memberspot Hub <hub@example.com>".into(),
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        timeout: Duration::from_secs(10),
    }
}

fn digest() -> Message {
    Message {
        html: Some(HTML.into()),
        ..Message::new(SUBJECT, TEXT)
    }
}

fn crlf_to_lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_digest_arrives_as_multipart_alternative() {
    let server = SmtpServer::start(Behaviour {
        credentials: Some(("hub".into(), PASSWORD.into())),
        ..Behaviour::default()
    })
    .await;
    let recipients = [
        "ops@example.com",
        "Jörg Müller <joerg@beispiel.de>",
        "finance@example.org",
    ];
    let target = EmailTarget {
        username: Some("hub".into()),
        password: Some(SecretString::from(PASSWORD)),
        ..target(&server, &recipients)
    };

    let delivered = send_email(&target, &digest()).await.unwrap();
    assert_eq!(delivered.attempts, 1);
    assert_eq!(
        delivered.detail,
        format!(
            "accepted by 127.0.0.1:{} for 3 recipient(s): 250 2.0.0 Ok: queued as 4F2A9C",
            server.port
        )
    );

    let sessions = server.sessions();
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert!(session.ehlo.is_some());
    assert_eq!(session.auth, Some(("hub".into(), PASSWORD.into())));
    assert_eq!(session.mail_from.as_deref(), Some("hub@example.com"));
    assert_eq!(
        session.rcpt_to,
        [
            "ops@example.com",
            "joerg@beispiel.de",
            "finance@example.org"
        ]
    );
    assert!(session.quit, "the client says goodbye");

    let raw = session.data.as_ref().unwrap();
    assert!(raw.is_ascii(), "encoded for 7-bit transport");
    let mail = MessageParser::default().parse(raw).unwrap();
    assert_eq!(mail.subject(), Some(SUBJECT));
    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("hub@example.com"));
    assert_eq!(from.name(), Some("Memberspot Hub"));
    let to: Vec<(Option<&str>, Option<&str>)> = mail
        .to()
        .unwrap()
        .iter()
        .map(|a| (a.name(), a.address()))
        .collect();
    assert_eq!(
        to,
        [
            (None, Some("ops@example.com")),
            (Some("Jörg Müller"), Some("joerg@beispiel.de")),
            (None, Some("finance@example.org")),
        ]
    );
    assert!(mail.date().is_some(), "Date header");
    let message_id = mail.message_id().unwrap();
    assert!(message_id.ends_with("@example.com"), "{message_id}");

    let root = mail.content_type().unwrap();
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    let PartType::Multipart(children) = &mail.parts[0].body else {
        panic!("root is not multipart: {:?}", mail.parts[0].body);
    };
    assert_eq!(children.len(), 2, "exactly two alternatives");
    let plain = &mail.parts[children[0] as usize];
    let html = &mail.parts[children[1] as usize];
    let plain_type = plain.content_type().unwrap();
    assert_eq!(
        (plain_type.ctype(), plain_type.subtype()),
        ("text", Some("plain"))
    );
    assert_eq!(
        plain_type
            .attribute("charset")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("utf-8")
    );
    let html_type = html.content_type().unwrap();
    assert_eq!(
        (html_type.ctype(), html_type.subtype()),
        ("text", Some("html"))
    );
    assert_eq!(
        html_type
            .attribute("charset")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("utf-8")
    );
    assert_eq!(crlf_to_lf(plain.text_contents().unwrap()), TEXT);
    assert_eq!(crlf_to_lf(html.text_contents().unwrap()), HTML);
}

#[tokio::test]
async fn without_html_the_text_is_the_only_part() {
    let server = SmtpServer::start(Behaviour::default()).await;
    send_email(
        &target(&server, &["ops@example.com"]),
        &Message::new(SUBJECT, TEXT),
    )
    .await
    .unwrap();
    let raw = server.sessions()[0].data.clone().unwrap();
    let mail = MessageParser::default().parse(&raw).unwrap();
    let ctype = mail.content_type().unwrap();
    assert_eq!((ctype.ctype(), ctype.subtype()), ("text", Some("plain")));
    assert_eq!(crlf_to_lf(&mail.body_text(0).unwrap()), TEXT);
}

#[tokio::test]
async fn a_refused_recipient_is_named_and_nobody_gets_the_message() {
    let server = SmtpServer::start(Behaviour {
        refuse: vec!["nobody@example.com".into()],
        ..Behaviour::default()
    })
    .await;
    let target = target(&server, &["ops@example.com", "nobody@example.com"]);
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "e-mail: 127.0.0.1:{} refused recipient nobody@example.com: \
             550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
            server.port
        )
    );
    assert!(matches!(
        err,
        NotifyError::RecipientRefused {
            transient: false,
            ..
        }
    ));
    assert!(!err.is_temporary());
    let session = &server.sessions()[0];
    assert!(session.data.is_none(), "no DATA after a refused recipient");
    assert!(session.quit, "the transaction is abandoned politely");
}

#[tokio::test]
async fn nobody_listening_names_host_and_port() {
    let port = dead_port();
    let target = EmailTarget {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: Some("hub".into()),
        password: Some(SecretString::from(PASSWORD)),
        from: "hub@example.com".into(),
        to: vec!["ops@example.com".into()],
        timeout: Duration::from_secs(5),
    };
    let err = send_email(&target, &digest()).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("e-mail: cannot connect to 127.0.0.1:{port}: ")),
        "{shown}"
    );
    assert!(err.is_temporary());
    assert!(!shown.contains(PASSWORD) && !format!("{err:?}").contains(PASSWORD));
}

#[tokio::test]
async fn the_password_never_shows() {
    // The server rejects the login and echoes the credentials in its reply.
    let server = SmtpServer::start(Behaviour {
        credentials: Some(("hub".into(), "the-right-one".into())),
        ..Behaviour::default()
    })
    .await;
    let target = EmailTarget {
        username: Some("hub".into()),
        password: Some(SecretString::from(PASSWORD)),
        ..target(&server, &["ops@example.com"])
    };
    assert!(!format!("{target:?}").contains(PASSWORD));
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(
        server.sessions()[0].auth,
        Some(("hub".into(), PASSWORD.into()))
    );
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        shown.starts_with("e-mail: AUTH failed at 127.0.0.1:"),
        "{shown}"
    );
    assert!(shown.contains("535 5.7.8"), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(server.sessions()[0].mail_from.is_none());
}

#[tokio::test]
async fn starttls_is_required_when_asked_for() {
    let server = SmtpServer::start(Behaviour {
        credentials: Some(("hub".into(), PASSWORD.into())),
        ..Behaviour::default()
    })
    .await;
    let target = EmailTarget {
        security: Security::StartTls,
        username: Some("hub".into()),
        password: Some(SecretString::from(PASSWORD)),
        ..target(&server, &["ops@example.com"])
    };
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "e-mail: STARTTLS failed at 127.0.0.1:{}: \
             the server does not offer STARTTLS; not continuing unencrypted",
            server.port
        )
    );
    let session = &server.sessions()[0];
    assert!(session.auth.is_none(), "no password over plain text");
    assert!(session.mail_from.is_none());
}

#[tokio::test]
async fn implicit_tls_against_a_plain_server_fails_the_handshake() {
    let server = SmtpServer::start(Behaviour::default()).await;
    let target = EmailTarget {
        security: Security::Tls,
        ..target(&server, &["ops@example.com"])
    };
    let err = send_email(&target, &digest()).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "e-mail: TLS handshake failed at 127.0.0.1:{}",
            server.port
        )),
        "{shown}"
    );
    assert!(!err.is_temporary());
    assert!(server.sessions()[0].mail_from.is_none());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts the connection and never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let target = EmailTarget {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        from: "hub@example.com".into(),
        to: vec!["ops@example.com".into()],
        timeout: Duration::from_millis(300),
    };
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("e-mail: no complete answer from 127.0.0.1:{port} within 300ms")
    );
    assert!(err.is_temporary());
    hold.abort();
}

#[tokio::test]
async fn invalid_addresses_are_refused_before_connecting() {
    let port = dead_port();
    let mut target = EmailTarget {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        from: "hub@example.com".into(),
        to: vec!["a@example.com".into(), "b@example.com".into(), "x@".into()],
        timeout: Duration::from_secs(5),
    };
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"e-mail: to[2]: "x@" is not an e-mail address"#
    );
    target.to.clear();
    let err = send_email(&target, &digest()).await.unwrap_err();
    assert_eq!(err.to_string(), "e-mail: to: no recipients");
}
