//! The door of MCP over HTTP, in front of rmcp's streamable HTTP service:
//!
//! - [`origin_guard`]: a browser page on another origin (DNS rebinding) is refused with 403
//!   before anything else runs, as the MCP specification requires.
//! - [`gate`]: reads the body once (size cap, read time-out) and answers malformed
//!   JSON-RPC (bad JSON, batches, deep nesting) with a JSON-RPC error and HTTP 400; an
//!   `initialize` costs a call from the persona's per-minute budget and needs a free
//!   session (per persona and in total); a request or `DELETE /mcp` for a session that is
//!   unknown, or another persona's, is 404.
//! - [`BoundedSessions`]: rmcp's in-memory session manager with idle expiry, which keeps
//!   the session count ([`SessionBook`]) right when a session ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use memberspot_hub::Hub;
use memberspot_hub::store::Persona;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use serde_json::{Value, json};

const SESSION_HEADER: &str = "mcp-session-id";

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
/// Implementation-defined server errors (-32000 to -32099).
const SERVER_BUSY: i64 = -32000;

/// Bounds of MCP sessions over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Open sessions in all (each holds memory until it ends).
    pub max_total: usize,
    /// Open sessions of one persona.
    pub max_per_persona: usize,
    /// A session nobody used for this long ends.
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_total: 512,
            max_per_persona: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A JSON-RPC error answer (`id` null when the request's id is unknown).
pub(crate) fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })),
    )
        .into_response()
}

// ------------------------------------------------------------------------------ origins

/// Origins a browser page may call `/mcp` from: loopback on any port, plus configured ones.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    origins: Vec<OriginPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: String,
    /// `None` matches any port (`:*`).
    port: Option<u16>,
}

impl OriginPattern {
    /// `scheme://host`, `scheme://host:port` or `scheme://host:*`; nothing after the authority.
    fn parse(s: &str) -> Result<OriginPattern, String> {
        let s = s.trim();
        let (text, any_port) = match s.strip_suffix(":*") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let url = url::Url::parse(text)
            .map_err(|e| format!("`{s}` is not an origin like https://app.example.com: {e}"))?;
        let host = url
            .host_str()
            .filter(|_| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| format!("`{s}` must be an http:// or https:// origin"))?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{s}` must be an origin (scheme://host[:port]), without a path"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("`{s}` must not carry credentials"));
        }
        // `url` drops a scheme's default port (`https://a:443`), so look at the text too.
        let explicit_port = text
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if any_port && explicit_port {
            return Err(format!("`{s}`: give a port or `:*`, not both"));
        }
        Ok(OriginPattern {
            scheme: url.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port: if any_port {
                None
            } else {
                url.port_or_known_default()
            },
        })
    }

    fn matches(&self, origin: &OriginPattern) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && (self.port.is_none() || self.port == origin.port)
    }
}

/// Checks an `--allowed-origin` value.
pub fn check_origin(s: &str) -> Result<String, String> {
    OriginPattern::parse(s).map(|_| s.trim().to_string())
}

/// Browser origins of local tools, allowed without configuration.
pub const LOOPBACK_ORIGINS: [&str; 3] =
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

impl AllowedOrigins {
    /// Loopback origins and `extra` (each checked with [`check_origin`]).
    pub fn new(extra: &[String]) -> Result<AllowedOrigins, String> {
        let mut origins = Vec::new();
        for o in LOOPBACK_ORIGINS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            origins.push(OriginPattern::parse(o)?);
        }
        Ok(AllowedOrigins { origins })
    }

    /// The same origins in rmcp's notation, each with its port or `:*`.
    pub fn to_rmcp(&self) -> Vec<String> {
        self.origins
            .iter()
            .map(|o| match o.port {
                Some(p) => format!("{}://{}:{p}", o.scheme, o.host),
                None => format!("{}://{}:*", o.scheme, o.host),
            })
            .collect()
    }

    fn allows(&self, origin: &str) -> bool {
        match OriginPattern::parse(origin) {
            Ok(o) if o.port.is_some() => self.origins.iter().any(|p| p.matches(&o)),
            _ => false,
        }
    }
}

/// Refuses a request whose `Origin` is not allowed (requests without one, from programs
/// rather than browser pages, pass).
pub async fn origin_guard(
    State(allowed): State<Arc<AllowedOrigins>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| allowed.allows(o));
        if !ok {
            tracing::warn!(origin = ?origin, "refused /mcp request from a foreign Origin");
            return rpc_error(
                StatusCode::FORBIDDEN,
                Value::Null,
                INVALID_REQUEST,
                "this Origin may not call the hub (allow it with `memberspot serve --allowed-origin`)",
            );
        }
    }
    next.run(req).await
}

// ----------------------------------------------------------------------------- sessions

/// Who holds which session, and how many each persona has.
#[derive(Debug)]
pub struct SessionBook {
    limits: SessionLimits,
    state: Mutex<BookState>,
}

#[derive(Debug, Default)]
struct BookState {
    /// Sessions open or being opened.
    total: usize,
    per_persona: HashMap<String, usize>,
    /// Session id → persona id.
    owners: HashMap<String, String>,
}

/// Why a session could not be opened.
enum Full {
    Persona(usize),
    Total(usize),
}

impl SessionBook {
    pub fn new(limits: SessionLimits) -> Arc<SessionBook> {
        Arc::new(SessionBook {
            limits,
            state: Mutex::new(BookState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        // The state stays consistent under every operation: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a session for `persona`, released when the [`Slot`] is dropped unless bound.
    fn reserve(self: &Arc<Self>, persona: &str) -> Result<Slot, Full> {
        let mut s = self.lock();
        if s.total >= self.limits.max_total {
            return Err(Full::Total(self.limits.max_total));
        }
        let mine = s.per_persona.entry(persona.to_string()).or_insert(0);
        if *mine >= self.limits.max_per_persona {
            return Err(Full::Persona(self.limits.max_per_persona));
        }
        *mine += 1;
        s.total += 1;
        Ok(Slot {
            book: self.clone(),
            persona: persona.to_string(),
            bound: false,
        })
    }

    fn release_count(&self, s: &mut BookState, persona: &str) {
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_persona.get_mut(persona) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_persona.remove(persona);
            }
        }
    }

    /// The session `id` ended: its place is free again (once, however often it is called).
    fn release(&self, id: &str) {
        let mut s = self.lock();
        if let Some(persona) = s.owners.remove(id) {
            self.release_count(&mut s, &persona);
        }
    }

    fn owner(&self, id: &str) -> Option<String> {
        self.lock().owners.get(id).cloned()
    }

    /// Open sessions (for tests and metrics).
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// A reserved session place.
struct Slot {
    book: Arc<SessionBook>,
    persona: String,
    bound: bool,
}

impl Slot {
    /// The session `id` now holds this place.
    fn bind(mut self, id: &str) {
        let mut s = self.book.lock();
        s.owners.insert(id.to_string(), self.persona.clone());
        self.bound = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.bound {
            let mut s = self.book.lock();
            self.book.release_count(&mut s, &self.persona);
        }
    }
}

/// rmcp's [`LocalSessionManager`] with idle expiry; every session end (DELETE, idle
/// time-out, a failed worker) frees its place in the [`SessionBook`].
pub struct BoundedSessions {
    inner: LocalSessionManager,
    book: Arc<SessionBook>,
}

impl BoundedSessions {
    pub fn new(book: Arc<SessionBook>) -> BoundedSessions {
        let mut config = SessionConfig::default();
        config.keep_alive = Some(book.limits.idle_timeout);
        // A session is created by its initialize request: there is no wait for one.
        config.init_timeout = Some(book.limits.idle_timeout.min(Duration::from_secs(60)));
        let mut inner = LocalSessionManager::default();
        inner.session_config = config;
        BoundedSessions { inner, book }
    }
}

impl SessionManager for BoundedSessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let result = self.inner.close_session(id).await;
        self.book.release(id);
        result
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // Sessions live in this process only: an unknown one is 404, never re-created.
        Ok(RestoreOutcome::NotSupported)
    }
}

// --------------------------------------------------------------------------------- gate

/// What [`gate`] needs.
#[derive(Clone)]
pub struct Gate {
    pub hub: Hub,
    pub book: Arc<SessionBook>,
    pub sessions: Arc<BoundedSessions>,
    pub body_limit: usize,
}

/// Reads the body of a POST once and checks it; counts and bounds sessions.
pub async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let Some(persona) = req.extensions().get::<Persona>().cloned() else {
        // bearer_auth runs first and always sets it; refuse rather than serve anonymously.
        return rpc_error(
            StatusCode::UNAUTHORIZED,
            Value::Null,
            INVALID_REQUEST,
            "no persona",
        );
    };
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A session is its persona's: to anyone else it does not exist.
    if let Some(id) = &session
        && g.book.owner(id).is_some_and(|owner| owner != persona.id)
    {
        return rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            INVALID_REQUEST,
            "no such session (it ended, expired, or was never opened)",
        );
    }
    match *req.method() {
        Method::DELETE => {
            let known = match &session {
                Some(id) => g
                    .sessions
                    .has_session(&SessionId::from(id.clone()))
                    .await
                    .unwrap_or(false),
                None => false,
            };
            if !known {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    Value::Null,
                    INVALID_REQUEST,
                    "no such session (it ended, expired, or was never opened)",
                );
            }
            next.run(req).await
        }
        Method::POST => post(g, persona, session, req, next).await,
        _ => next.run(req).await,
    }
}

async fn post(
    g: Gate,
    persona: Persona,
    session: Option<String>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, g.body_limit).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    if message.is_array() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "JSON-RPC batches are not supported: send one message per request",
        );
    }
    if let Err(e) = serde_json::from_value::<ClientJsonRpcMessage>(message.clone()) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            &format!("not a JSON-RPC 2.0 message this server understands: {e}"),
        );
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let opens_session = session.is_none() && message["method"] == "initialize";
    if !opens_session {
        return next.run(req).await;
    }
    if let Err(e) = g.hub.take_call_budget(&persona) {
        let mut r = rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            id,
            SERVER_BUSY,
            &e.to_string(),
        );
        if let memberspot_hub::HubError::Limited {
            retry_after_secs, ..
        } = e
        {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        return r;
    }
    let slot = match g.book.reserve(&persona.id) {
        Ok(s) => s,
        Err(Full::Persona(n)) => {
            return rpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                SERVER_BUSY,
                &format!(
                    "persona `{}` has {n} open MCP sessions, its limit; close one (DELETE /mcp) or wait until an idle one expires",
                    persona.name
                ),
            );
        }
        Err(Full::Total(n)) => {
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                SERVER_BUSY,
                &format!("the hub has {n} open MCP sessions, its limit; try again later"),
            );
        }
    };
    let response = next.run(req).await;
    if let Some(sid) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        slot.bind(sid);
        // The session may have ended before it was bound (a failed worker).
        if !g
            .sessions
            .has_session(&SessionId::from(sid.to_string()))
            .await
            .unwrap_or(false)
        {
            g.book.release(sid);
        }
    }
    // Not bound (a stateless answer, or an error): the place is freed here.
    response
}

/// The body, at most `limit` bytes. A body that is too large or stops arriving (the body
/// read time-out of the server) is refused and the connection closed.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let timed_out =
                    std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                        e.source()
                    })
                    .any(|e| e.is::<tower_http::timeout::TimeoutError>());
                let (status, message) = if timed_out {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body did not arrive in time",
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read",
                    )
                };
                return Err(closing(rpc_error(
                    status,
                    Value::Null,
                    INVALID_REQUEST,
                    message,
                )));
            }
        };
        if buf.len() + chunk.len() > limit {
            return Err(closing(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                INVALID_REQUEST,
                &format!("the request body is larger than {limit} bytes"),
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The answer, with the connection closed after it (the rest of the body is not read).
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_scheme_host_and_port() {
        let a =
            AllowedOrigins::new(&["https://app.example".into(), "http://tool.example:*".into()])
                .expect("valid");
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1:8787",
            "http://[::1]:3000",
            "https://app.example",
            "https://app.example:443",
            "http://tool.example:9999",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "https://app.example:444",
            "http://app.example",
            "https://localhost:5173",
            "http://localhost.evil.example:80",
            "null",
            "not an origin",
        ] {
            assert!(!a.allows(bad), "{bad}");
        }
        assert_eq!(
            a.to_rmcp(),
            [
                "http://localhost:*",
                "http://127.0.0.1:*",
                "http://[::1]:*",
                "https://app.example:443",
                "http://tool.example:*"
            ]
        );
        for bad in [
            "app.example",
            "https://app.example/path",
            "ftp://x",
            "https://a:443:*",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn places_are_counted_per_persona_and_in_total() {
        let book = SessionBook::new(SessionLimits {
            max_total: 3,
            max_per_persona: 2,
            idle_timeout: Duration::from_secs(1),
        });
        let a1 = book.reserve("a").ok().expect("a1");
        let a2 = book.reserve("a").ok().expect("a2");
        assert!(matches!(book.reserve("a"), Err(Full::Persona(2))));
        a1.bind("s1");
        drop(a2); // never bound: freed
        assert_eq!(book.open(), 1);
        book.reserve("b").ok().expect("b1").bind("s2");
        book.reserve("b").ok().expect("b2").bind("s3");
        assert!(matches!(book.reserve("c"), Err(Full::Total(3))));
        book.release("s2");
        book.release("s2");
        assert_eq!(book.open(), 2, "a session is released once");
        assert!(book.reserve("c").is_ok());
    }
}
