//! A small SMTP responder: enough of RFC 5321 for one well-behaved client (EHLO, AUTH
//! PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT), recording what it was told. It never offers
//! STARTTLS, which lets the tests see that `Security::StartTls` refuses to go on without.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;

#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Recipients answered with `550 5.1.1`.
    pub refuse: Vec<String>,
    /// Offer AUTH PLAIN and accept exactly these; a failure reply echoes what was sent,
    /// as careless servers do.
    pub credentials: Option<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct Session {
    pub ehlo: Option<String>,
    pub auth: Option<(String, String)>,
    pub mail_from: Option<String>,
    pub mail_params: String,
    pub rcpt_to: Vec<String>,
    pub data: Option<Vec<u8>>,
    pub quit: bool,
}

pub struct SmtpServer {
    pub port: u16,
    sessions: Arc<Mutex<Vec<Session>>>,
}

impl SmtpServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(behaviour);
        let shared = sessions.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut sessions = shared.lock().unwrap();
                    sessions.push(Session::default());
                    sessions.len() - 1
                };
                let (shared, behaviour) = (shared.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let (read, write) = stream.into_split();
                    let mut conn = Conn {
                        read: BufReader::new(read),
                        write,
                        behaviour,
                        sessions: shared,
                        index,
                    };
                    // A client hanging up mid-way is a legitimate test case.
                    let _ = conn.serve().await;
                });
            }
        });
        Self { port, sessions }
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }
}

struct Conn {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: OwnedWriteHalf,
    behaviour: Arc<Behaviour>,
    sessions: Arc<Mutex<Vec<Session>>>,
    index: usize,
}

impl Conn {
    fn session(&self, f: impl FnOnce(&mut Session)) {
        f(&mut self.sessions.lock().unwrap()[self.index]);
    }

    async fn line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        if self.read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        Ok(Some(line))
    }

    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        self.write.write_all(text.as_bytes()).await?;
        self.write.write_all(b"\r\n").await
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        self.reply("220 test.local ESMTP ready").await?;
        while let Some(raw) = self.line().await? {
            let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            let upper = line.to_ascii_uppercase();
            let reply = if let Some(name) = upper.strip_prefix("EHLO ") {
                let name = line[line.len() - name.len()..].to_owned();
                self.session(|s| s.ehlo = Some(name));
                let auth = if self.behaviour.credentials.is_some() {
                    "250-AUTH PLAIN\r\n"
                } else {
                    ""
                };
                format!("250-test.local\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{auth}250 SIZE 10485760")
            } else if upper.starts_with("AUTH PLAIN") {
                self.auth_plain(line[10..].trim()).await?
            } else if upper.starts_with("MAIL FROM:") {
                let (address, params) = path_and_params(&line[10..]);
                self.session(|s| {
                    s.mail_from = Some(address);
                    s.mail_params = params;
                });
                "250 2.1.0 Ok".to_owned()
            } else if upper.starts_with("RCPT TO:") {
                let (address, _) = path_and_params(&line[8..]);
                if self.behaviour.refuse.contains(&address) {
                    format!("550 5.1.1 <{address}>: Recipient address rejected: User unknown")
                } else {
                    self.session(|s| s.rcpt_to.push(address));
                    "250 2.1.5 Ok".to_owned()
                }
            } else if upper == "DATA" {
                self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = Vec::new();
                while let Some(line) = self.line().await? {
                    if line == b".\r\n" {
                        break;
                    }
                    // Undo dot-stuffing.
                    data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                }
                self.session(|s| s.data = Some(data));
                "250 2.0.0 Ok: queued as 4F2A9C".to_owned()
            } else if upper == "RSET" {
                self.session(|s| {
                    s.mail_from = None;
                    s.rcpt_to.clear();
                });
                "250 2.0.0 Ok".to_owned()
            } else if upper == "NOOP" {
                "250 2.0.0 Ok".to_owned()
            } else if upper == "QUIT" {
                self.session(|s| s.quit = true);
                self.reply("221 2.0.0 Bye").await?;
                return Ok(());
            } else {
                "502 5.5.2 Error: command not recognized".to_owned()
            };
            self.reply(&reply).await?;
        }
        Ok(())
    }

    async fn auth_plain(&mut self, initial: &str) -> std::io::Result<String> {
        let encoded = if initial.is_empty() {
            self.reply("334 ").await?;
            let line = self.line().await?.unwrap_or_default();
            String::from_utf8_lossy(&line).trim().to_owned()
        } else {
            initial.to_owned()
        };
        let decoded = STANDARD.decode(encoded).unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let mut parts = decoded.split('\0').skip(1);
        let user = parts.next().unwrap_or_default().to_owned();
        let password = parts.next().unwrap_or_default().to_owned();
        self.session(|s| s.auth = Some((user.clone(), password.clone())));
        Ok(match &self.behaviour.credentials {
            Some((u, p)) if *u == user && *p == password => {
                "235 2.7.0 Authentication successful".to_owned()
            }
            _ => format!("535 5.7.8 Authentication failed for {user}:{password}"),
        })
    }
}

/// `<a@b> BODY=8BITMIME` → (`a@b`, `BODY=8BITMIME`).
fn path_and_params(rest: &str) -> (String, String) {
    let rest = rest.trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(open), Some(close)) if open < close => (
            rest[open + 1..close].to_owned(),
            rest[close + 1..].trim().to_owned(),
        ),
        _ => (rest.to_owned(), String::new()),
    }
}
