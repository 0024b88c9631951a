//! What the hub records and how far it can be trusted, over real HTTP, against the sandbox,
//! on SQLite and PostgreSQL: the CSV export against formula injection, sealed keys bound
//! to their connection against someone who can write the database, and chain anchors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305};
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::secrets::MasterKey;
use memberspot_hub::store::{AuditFilter, Store, audit_hash};
use memberspot_hub::{CallContext, Hub, HubError, Principal, Surface};
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};
use memberspot_server::{App, ServerSettings};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Backend, drop_database, fresh_postgres};

const SCHOOL_KEY: &str = "sk_live_records_school_key_2c7e9a4b1f6d";

/// The database behind the hub's back, as someone with write access (not the master key)
/// sees it.
#[derive(Clone)]
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        use sqlx::Connection;
        match self {
            Raw::Sqlite(f) => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.display()))
                    .await
                    .expect("sqlite");
                sqlx::query(sql).execute(&mut c).await.expect(sql);
                c.close().await.expect("close");
            }
            Raw::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
                sqlx::query(sql).execute(&mut c).await.expect(sql);
                c.close().await.expect("close");
            }
        }
    }

    async fn text(&self, sql: &str) -> String {
        use sqlx::Connection;
        match self {
            Raw::Sqlite(f) => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", f.display()))
                    .await
                    .expect("sqlite");
                let v: String = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.expect("close");
                v
            }
            Raw::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
                let v: String = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.expect("close");
                v
            }
        }
    }
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn school(seed: u64) -> Sandbox {
    Sandbox::start_local(SandboxConfig {
        api_key: SCHOOL_KEY.into(),
        seed,
        size: SeedSize {
            users: 10,
            offers: 3 + seed as usize % 3,
            courses: 2,
        },
        rate_limit: 0.0,
        faults: Faults::default(),
        state_file: None,
        shapes: Default::default(),
    })
    .await
    .expect("sandbox")
}

struct World {
    sandbox: Sandbox,
    hub: Hub,
    base: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
    url: String,
    raw: Raw,
    pg_name: Option<String>,
    /// The master key as text, to open the same database again (a restart).
    key: SecretString,
    admin: String,
    reader: String,
}

async fn world(backend: Backend) -> World {
    let sandbox = school(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, raw, pg_name) = match backend {
        Backend::Sqlite => {
            let f = dir.path().join("hub.db");
            (format!("sqlite://{}", f.display()), Raw::Sqlite(f), None)
        }
        Backend::Postgres => {
            let (url, name) = fresh_postgres().await;
            (url.clone(), Raw::Postgres(url), Some(name))
        }
    };
    let key = MasterKey::generate();
    let key_text = key.encode();
    let hub = Hub::open(Store::open(&url).await.expect("store"), key, None)
        .await
        .expect("hub");
    hub.add_connection(
        "school",
        &sandbox.base_url(),
        &SecretString::from(SCHOOL_KEY.to_string()),
        0.0,
    )
    .await
    .expect("connection");
    let reader = hub
        .create_persona(PersonaSpec {
            name: "reader".into(),
            connection: Some("school".into()),
            ..Default::default()
        })
        .await
        .expect("reader");
    let admin = hub.issue_admin_token().await.expect("admin token");
    let cancel = CancellationToken::new();
    let base = serve(&hub, &cancel).await;
    World {
        sandbox,
        hub,
        base,
        cancel,
        _dir: dir,
        url,
        raw,
        pg_name,
        key: key_text,
        admin: admin.expose_secret().to_string(),
        reader: reader.token.expose_secret().to_string(),
    }
}

async fn serve(hub: &Hub, cancel: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = App::build(hub.clone(), ServerSettings::default(), Vec::new());
    tokio::spawn(app.serve(listener, cancel.clone()));
    format!("http://{addr}")
}

impl World {
    async fn close(self) {
        self.cancel.cancel();
        self.hub.close().await;
        let _ = self.sandbox.shutdown().await;
        if let Some(name) = &self.pg_name {
            drop_database(name).await;
        }
    }

    fn master_key(&self) -> MasterKey {
        MasterKey::parse(self.key.expose_secret()).expect("key")
    }

    /// The same database opened by another process (or after a restart).
    async fn reopen(&self) -> Result<Hub, HubError> {
        Hub::open(
            Store::open(&self.url).await.expect("store"),
            self.master_key(),
            None,
        )
        .await
    }

    async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    async fn call(&self, prompt: &str, end_user: &str) -> (u16, Value) {
        let (s, v, _) = self
            .rest(
                reqwest::Method::POST,
                "/v1/tools/list_offers/call",
                &self.reader,
                Some(json!({"arguments": {}, "prompt": prompt, "end_user": end_user})),
            )
            .await;
        (s, v)
    }
}

// ------------------------------------------------------------------ CSV export

fn is_formula_start(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Prompts and end users are the caller's: a spreadsheet opening the export must not run
/// them. The CSV has the columns of the JSON lines; the JSON lines keep the exact values.
async fn csv_export_neutralises_formulas(backend: Backend) {
    let w = world(backend).await;
    let inputs = [
        ("=HYPERLINK(\"http://evil\",\"x\")", "@SUM(1)"),
        ("+1", "-1"),
        ("\tcmd|' /C calc'!A0", "\r=2+3"),
        ("a, \"quoted\"\nsecond line", "kim@agency.example"),
    ];
    for (prompt, end_user) in inputs {
        let (s, v) = w.call(prompt, end_user).await;
        assert_eq!(s, 200, "{v}");
    }

    let (s, _, csv_text) = w
        .rest(
            reqwest::Method::GET,
            "/v1/audit/export?format=csv",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(s, 200, "{csv_text}");
    let (_, _, jsonl) = w
        .rest(
            reqwest::Method::GET,
            "/v1/audit/export?format=jsonl",
            &w.admin,
            None,
        )
        .await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), inputs.len());

    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), inputs.len());
    for ((row, line), (prompt, end_user)) in rows.iter().zip(&lines).zip(inputs) {
        assert_eq!(row.len(), header.len());
        let expect = |v: &str| {
            if is_formula_start(v) {
                format!("'{v}")
            } else {
                v.to_owned()
            }
        };
        assert_eq!(&row[col("prompt")], expect(prompt));
        assert_eq!(&row[col("end_user")], expect(end_user));
        for cell in row.iter() {
            assert!(
                !is_formula_start(cell),
                "a cell a spreadsheet runs: {cell:?}"
            );
        }
        // The same record, the exact values, in the JSON lines.
        assert_eq!(line["prompt"], prompt);
        assert_eq!(line["end_user"], end_user);
        assert_eq!(&row[col("seq")], line["seq"].to_string());
        assert_eq!(&row[col("hash")], line["hash"].as_str().expect("hash"));
        assert_eq!(
            &row[col("prev_hash")],
            line["prev_hash"].as_str().expect("prev")
        );
        let response: Value = serde_json::from_str(&row[col("response")]).expect("response");
        assert_eq!(response, line["response"]);
    }
    let mut json_keys: Vec<String> = lines[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    let mut sorted = header.clone();
    sorted.sort();
    json_keys.sort();
    assert_eq!(
        sorted, json_keys,
        "the CSV has the columns of the JSON lines"
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralises_formulas_sqlite() {
    csv_export_neutralises_formulas(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralises_formulas_postgres() {
    csv_export_neutralises_formulas(Backend::Postgres).await;
}

// ------------------------------------------------------------------ sealed keys

/// A server that should never be called: it counts connections and keeps what it got.
struct Listener {
    url: String,
    accepted: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Listener {
    async fn start() -> Listener {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1", l.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, r) = (accepted.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 8192];
                if let Ok(n) = s.read(&mut buf).await
                    && let Ok(mut got) = r.lock()
                {
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"data\":[]}\n")
                    .await;
            }
        });
        Listener {
            url,
            accepted,
            received,
        }
    }

    fn assert_untouched(&self) {
        let got = self.received.lock().map(|g| g.clone()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&got).contains(SCHOOL_KEY),
            "the school's key reached another server"
        );
        assert_eq!(
            self.accepted.load(Ordering::SeqCst),
            0,
            "the other server was contacted"
        );
    }
}

async fn call_as(hub: &Hub, persona: &str) -> Result<Value, HubError> {
    let p = hub.persona(persona).await.expect("persona");
    hub.call(
        &Principal::Persona(p),
        &CallContext::new(Surface::Rest),
        "list_offers",
        json!({}),
    )
    .await
    .result
}

fn assert_refused_naming(result: Result<Value, HubError>, connection: &str, url: &str) {
    match result {
        Ok(v) => panic!("the key was used: {v}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(&format!("connection `{connection}`")), "{m}");
            assert!(m.contains(url), "{m}");
            assert!(!m.contains(SCHOOL_KEY), "{m}");
        }
    }
}

/// Someone who can write the database (not read the master key) points a connection at
/// their own server, or moves its sealed key to a connection of theirs: the hub does not
/// open the key, says which connection and why, and the other server hears nothing. The
/// admin operation that changes a connection re-seals its key; master-key rotation keeps
/// keys bound.
async fn sealed_keys_are_bound_to_their_connection(backend: Backend) {
    let w = world(backend).await;
    let evil = Listener::start().await;
    let (s, v) = w.call("before", "kim").await;
    assert_eq!(s, 200, "{v}");

    // The URL changed behind the hub's back, then the hub restarts.
    w.raw
        .exec(&format!(
            "UPDATE connections SET base_url = {} WHERE name = 'school'",
            sql_text(&evil.url)
        ))
        .await;
    let restarted = w.reopen().await.expect("hub opens");
    assert_refused_naming(call_as(&restarted, "reader").await, "school", &evil.url);
    // The running hub, once the row looks changed (updated_at) and it rebuilds the client.
    w.raw
        .exec("UPDATE connections SET updated_at = updated_at + 1 WHERE name = 'school'")
        .await;
    let (s, v) = w.call("after the URL changed", "kim").await;
    assert!(s >= 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("connection `school`") && message.contains(&evil.url),
        "{v}"
    );
    evil.assert_untouched();
    // The refused call is on record, without the key.
    let refused = w
        .hub
        .audit(&AuditFilter {
            limit: Some(1),
            before_seq: None,
            newest_first: true,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(refused[0].outcome.as_str(), "tool_error");
    assert!(
        refused[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("connection `school`") && !e.contains(SCHOOL_KEY))
    );

    // Putting the URL back through the admin operation works again (the key still opens
    // for the connection it was sealed for).
    let (s, v, _) = w
        .rest(
            reqwest::Method::PATCH,
            "/v1/connections/school",
            &w.admin,
            Some(json!({"base_url": w.sandbox.base_url()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = w.call("restored", "kim").await;
    assert_eq!(s, 200, "{v}");

    // The school's sealed key copied to a connection of the attacker's.
    w.hub
        .add_connection(
            "mine",
            &evil.url,
            &SecretString::from("sk_live_attackers_own_key".to_string()),
            0.0,
        )
        .await
        .expect("connection");
    w.hub
        .create_persona(PersonaSpec {
            name: "mine-reader".into(),
            connection: Some("mine".into()),
            ..Default::default()
        })
        .await
        .expect("persona");
    w.raw
        .exec(
            "UPDATE connections SET sealed_key = (SELECT sealed_key FROM connections WHERE \
             name = 'school'), updated_at = updated_at + 1 WHERE name = 'mine'",
        )
        .await;
    let restarted = w.reopen().await.expect("hub opens");
    assert_refused_naming(call_as(&restarted, "mine-reader").await, "mine", &evil.url);
    evil.assert_untouched();

    // The admin operation moves a connection to another school and renames it: the key is
    // re-sealed for the new name and URL, personas follow.
    let other_school = school(4).await;
    let (s, v, _) = w
        .rest(
            reqwest::Method::PATCH,
            "/v1/connections/school",
            &w.admin,
            Some(json!({"base_url": other_school.base_url(), "name": "school-2"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "school-2");
    assert_eq!(v["base_url"], other_school.base_url());
    let (s, v) = w.call("moved", "kim").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["offers"].as_array().map(Vec::len),
        Some(4),
        "the other school answered: {v}"
    );
    let restarted = w.reopen().await.expect("hub opens");
    call_as(&restarted, "reader").await.expect("after restart");
    // Bad changes are refused, naming the problem.
    for (body, what) in [
        (json!({}), "nothing to change"),
        (json!({"base_url": "ftp://x"}), "http"),
        (json!({"name": "no spaces"}), "name"),
        (json!({"rate_limit": -1}), "rate_limit"),
    ] {
        let (s, v, _) = w
            .rest(
                reqwest::Method::PATCH,
                "/v1/connections/school-2",
                &w.admin,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(what)),
            "{body}: {v}"
        );
    }
    let (s, v, _) = w
        .rest(
            reqwest::Method::PATCH,
            "/v1/connections/sandbox",
            &w.admin,
            Some(json!({"base_url": evil.url})),
        )
        .await;
    assert_eq!(s, 400, "the built-in sandbox keeps its address: {v}");

    // Master-key rotation re-seals every key, still bound; all or nothing, so the moved key
    // stops it until that connection gets a key of its own.
    let refused = w.hub.rotate_master_key(&MasterKey::generate()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("connection `mine`")),
        "{:?}",
        refused.map(|_| ())
    );
    w.hub
        .rotate_connection_key(
            "mine",
            &SecretString::from("sk_live_attackers_own_key".to_string()),
        )
        .await
        .expect("a key of its own");
    let new_key = MasterKey::generate();
    let new_text = new_key.encode();
    assert_eq!(w.hub.rotate_master_key(&new_key).await.expect("rotate"), 3);
    let rotated = Hub::open(
        Store::open(&w.url).await.expect("store"),
        MasterKey::parse(new_text.expose_secret()).expect("key"),
        None,
    )
    .await
    .expect("opens with the new key");
    call_as(&rotated, "reader").await.expect("after rotation");
    assert!(matches!(w.reopen().await, Err(HubError::WrongMasterKey)));
    w.raw
        .exec(&format!(
            "UPDATE connections SET base_url = {}, updated_at = updated_at + 1 WHERE name = 'school-2'",
            sql_text(&evil.url)
        ))
        .await;
    assert_refused_naming(call_as(&rotated, "reader").await, "school-2", &evil.url);
    evil.assert_untouched();
    let _ = other_school.shutdown().await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_are_bound_to_their_connection_sqlite() {
    sealed_keys_are_bound_to_their_connection(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_are_bound_to_their_connection_postgres() {
    sealed_keys_are_bound_to_their_connection(Backend::Postgres).await;
}

/// A value sealed the way hubs did before keys were bound (`v1:`, no associated data).
fn seal_v1(key: &MasterKey, plaintext: &str) -> String {
    let bytes = STANDARD.decode(key.encode().expose_secret()).expect("b64");
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&bytes));
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(&nonce, plaintext.as_bytes())
        .expect("encrypts");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    format!("v1:{}", STANDARD.encode(out))
}

/// A database from before keys were bound: the first start binds them (several instances
/// starting together: once), they keep working, and from then on an old-format key is
/// refused instead of bound to whatever the row says.
async fn old_format_keys_are_bound_once(backend: Backend) {
    let w = world(backend).await;
    let evil = Listener::start().await;
    let key = w.master_key();
    w.raw
        .exec(&format!(
            "UPDATE connections SET sealed_key = {} WHERE name = 'school'",
            sql_text(&seal_v1(&key, SCHOOL_KEY))
        ))
        .await;
    w.raw
        .exec(&format!(
            "UPDATE connections SET sealed_key = {} WHERE name = 'sandbox'",
            sql_text(&seal_v1(&key, "embedded"))
        ))
        .await;
    w.raw
        .exec(&format!(
            "UPDATE meta SET value = {} WHERE key = 'master_key_check'",
            sql_text(&seal_v1(&key, "memberspot-hub master key check v1"))
        ))
        .await;
    w.raw
        .exec("DELETE FROM meta WHERE key = 'connection_keys_bound'")
        .await;

    // Several instances start together on it.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let mut starts = Vec::new();
    for _ in 0..3 {
        let store = Store::open(&w.url).await.expect("store");
        let key = w.master_key();
        let barrier = barrier.clone();
        starts.push(tokio::spawn(async move {
            barrier.wait().await;
            Hub::open(store, key, None).await
        }));
    }
    let mut hubs = Vec::new();
    for s in starts {
        hubs.push(s.await.expect("join").expect("every instance opens"));
    }
    for name in ["school", "sandbox"] {
        let sealed = w
            .raw
            .text(&format!(
                "SELECT sealed_key FROM connections WHERE name = '{name}'"
            ))
            .await;
        assert!(sealed.starts_with("v2:"), "{name} is bound");
    }
    for hub in &hubs {
        call_as(hub, "reader").await.expect("the bound key works");
    }

    // Later, an old-format value (from a backup) put back with another URL: refused.
    w.raw
        .exec(&format!(
            "UPDATE connections SET sealed_key = {}, base_url = {}, updated_at = updated_at + 1 \
             WHERE name = 'school'",
            sql_text(&seal_v1(&key, SCHOOL_KEY)),
            sql_text(&evil.url)
        ))
        .await;
    let restarted = w.reopen().await.expect("hub opens");
    let refused = call_as(&restarted, "reader").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("old format")),
        "{refused:?}"
    );
    assert_refused_naming(refused, "school", &evil.url);
    assert!(call_as(&hubs[0], "reader").await.is_err());
    evil.assert_untouched();
    for hub in hubs {
        hub.close().await;
    }
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_format_keys_are_bound_once_sqlite() {
    old_format_keys_are_bound_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_format_keys_are_bound_once_postgres() {
    old_format_keys_are_bound_once(Backend::Postgres).await;
}

// ------------------------------------------------------------------ anchors

/// `GET /v1/audit/verify?anchor=SEQ:HASH`: someone with database access rewrites the
/// chain from a record before the anchor, recomputing every hash: plain verification
/// passes, verification against the anchor fails.
async fn verify_takes_an_anchor(backend: Backend) {
    let w = world(backend).await;
    for i in 0..4 {
        let (s, v) = w.call(&format!("call {i}"), "kim").await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v, _) = w
        .rest(reqwest::Method::GET, "/v1/audit/verify", &w.admin, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let anchor = format!(
        "{}:{}",
        v["head"]["seq"],
        v["head"]["hash"].as_str().expect("hash")
    );
    let (s, _) = w.call("after the anchor", "kim").await;
    assert_eq!(s, 200);
    let path = format!("/v1/audit/verify?anchor={anchor}");
    let (_, v, _) = w.rest(reqwest::Method::GET, &path, &w.admin, None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["anchor"], anchor);

    // The rewrite, from the second record on.
    let records = w
        .hub
        .audit(&AuditFilter {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("audit");
    let mut prev: Option<String> = None;
    for mut r in records.into_iter().skip(1) {
        if prev.is_none() {
            r.prompt = Some("nothing happened".into());
        }
        if let Some(p) = &prev {
            r.prev_hash.clone_from(p);
        }
        r.hash = audit_hash(&r.prev_hash, &r);
        w.raw
            .exec(&format!(
                "UPDATE audit_log SET prompt = {}, prev_hash = {}, hash = {} WHERE seq = {}",
                sql_text(r.prompt.as_deref().unwrap_or_default()),
                sql_text(&r.prev_hash),
                sql_text(&r.hash),
                r.seq
            ))
            .await;
        w.raw
            .exec(&format!(
                "UPDATE meta SET value = {} WHERE key = 'store.audit_head'",
                sql_text(&format!("{} {}", r.seq, r.hash))
            ))
            .await;
        prev = Some(r.hash);
    }
    let (_, v, _) = w
        .rest(reqwest::Method::GET, "/v1/audit/verify", &w.admin, None)
        .await;
    assert_eq!(v["ok"], true, "valid hashes pass the walk: {v}");
    let (_, v, _) = w.rest(reqwest::Method::GET, &path, &w.admin, None).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["problem"]
            .as_str()
            .is_some_and(|p| p.contains("rewritten")),
        "{v}"
    );

    let (s, v, _) = w
        .rest(
            reqwest::Method::GET,
            "/v1/audit/verify?anchor=12:nothex",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "anchor", "{v}");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_takes_an_anchor_sqlite() {
    verify_takes_an_anchor(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_takes_an_anchor_postgres() {
    verify_takes_an_anchor(Backend::Postgres).await;
}
