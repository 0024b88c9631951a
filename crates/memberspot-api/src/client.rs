use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT,
};
use url::Url;

use crate::actions::{Action, Base};
use crate::error::ApiError;
use crate::ratelimit::Pacer;
use crate::retry::{self, Decision, Outcome, RetryPolicy};
use crate::secret::ApiKey;
use memberspot_wire::text_answer as text_answer_json;

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.memberspot.de/v1";

/// Executes [`Action`]s against one school. Cheap to clone; clones share the
/// connection pool, the rate limiter and the counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    v1: String,
    root: String,
    key: ApiKey,
    pacer: Pacer,
    retry: RetryPolicy,
    timeout: Duration,
    rate_limit: f64,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
}

/// Counters since the client was built (shared by clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// 5xx answers received.
    pub server_errors: u64,
    pub timeouts: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.v1)
            .field("api_key", &self.inner.key)
            .field("rate_limit", &self.inner.rate_limit)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// Configures a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<ApiKey>,
    rate_limit: f64,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    user_agent: String,
}

impl ClientBuilder {
    /// The API key (required).
    pub fn api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Requests per second for all clones of this client (default 4, the
    /// documented Memberspot limit); `0` disables pacing.
    pub fn rate_limit(mut self, rps: f64) -> Self {
        self.rate_limit = rps;
        self
    }

    /// Time limit of one attempt (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    pub fn build(self) -> Result<Client, ApiError> {
        let key = self
            .api_key
            .ok_or_else(|| ApiError::Config("an API key is required".into()))?;
        if key.expose().trim().is_empty() {
            return Err(ApiError::Config("the API key is empty".into()));
        }
        if HeaderValue::from_str(key.expose()).is_err() {
            return Err(ApiError::Config(
                "the API key contains characters that cannot be sent in a header".into(),
            ));
        }
        let (v1, root) = split_base(&self.base_url)?;
        if !(self.rate_limit >= 0.0 && self.rate_limit.is_finite()) {
            return Err(ApiError::Config(format!(
                "rate limit must be a number >= 0, got {}",
                self.rate_limit
            )));
        }
        let pacer = Pacer::new(self.rate_limit).map_err(ApiError::Config)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let ua = HeaderValue::from_str(&self.user_agent)
            .map_err(|_| ApiError::Config("invalid user agent".into()))?;
        headers.insert(USER_AGENT, ua);
        let http = reqwest::Client::builder()
            // The key travels in a header that reqwest keeps on redirects, to any host:
            // a 3xx is answered as an error instead (see `ApiError::Redirect`).
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| ApiError::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                v1,
                root,
                key,
                pacer,
                retry: self.retry,
                timeout: self.timeout,
                rate_limit: self.rate_limit,
                stats: Counters::default(),
            }),
        })
    }
}

/// Normalises the base URL and derives the host root (for `/api-auth`).
fn split_base(base: &str) -> Result<(String, String), ApiError> {
    let url = Url::parse(base.trim())
        .map_err(|e| ApiError::Config(format!("base URL `{base}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::Config(format!(
            "base URL `{base}` must start with http:// or https://"
        )));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Config(
            "base URL must not carry a query or credentials; the key goes in the API key setting"
                .into(),
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ApiError::Config(format!(
            "base URL `{base}` uses http://, which would send the API key unencrypted; use https:// \
             (http:// is accepted only for loopback addresses: localhost, 127.0.0.0/8, ::1)"
        )));
    }
    let v1 = url.as_str().trim_end_matches('/').to_string();
    let path = url.path().trim_end_matches('/');
    let root_path = path.strip_suffix("/v1").unwrap_or(path);
    let mut root = url.clone();
    root.set_path(root_path);
    Ok((v1, root.as_str().trim_end_matches('/').to_string()))
}

/// Checks a base URL as [`ClientBuilder::build`] will: an http(s) URL without query or
/// credentials, `https://` unless the host is a loopback address. For checking settings
/// where they are entered, before any client is built.
pub fn check_base_url(base: &str) -> Result<(), ApiError> {
    split_base(base).map(|_| ())
}

/// `localhost`, 127.0.0.0/8 or ::1: the only hosts plain `http://` may reach with a
/// credential.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl Client {
    /// Starts configuring a client for `base_url` (e.g. [`DEFAULT_BASE_URL`]).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            rate_limit: 4.0,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            user_agent: concat!("memberspot-hub/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.v1
    }

    pub fn rate_limit(&self) -> f64 {
        self.inner.rate_limit
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.stats;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
        }
    }

    /// Sends `action`, pacing and retrying as configured, and decodes the answer.
    pub async fn execute<A: Action>(&self, action: &A) -> Result<A::Output, ApiError> {
        let answer = self.fetch(action).await?;
        decode::<A::Output>(answer.status, &answer.body, A::TEXT_ANSWER)
    }

    /// Sends `action` like [`Client::execute`] and answers the 2xx answer's status and
    /// bytes undecoded (for checking what shape a school answers in).
    pub async fn fetch<A: Action>(&self, action: &A) -> Result<RawAnswer, ApiError> {
        let inner = &self.inner;
        let mut attempt = 0u32;
        loop {
            inner.pacer.acquire().await;
            inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (err, outcome) = match self.send_once(action).await {
                Ok(Answer {
                    status,
                    content_type,
                    body,
                    ..
                }) if (200..300).contains(&status) => {
                    return Ok(RawAnswer {
                        status,
                        content_type,
                        body,
                    });
                }
                Ok(Answer {
                    status,
                    redirect_to,
                    ..
                }) if (300..400).contains(&status) => (
                    ApiError::Redirect {
                        status,
                        target: redirect_to.unwrap_or_else(|| "nowhere (no Location)".into()),
                    },
                    Outcome::Final,
                ),
                Ok(Answer {
                    status,
                    retry_after,
                    body,
                    ..
                }) => {
                    let err = ApiError::from_response(status, retry_after, &body);
                    let outcome = match status {
                        429 => {
                            inner.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                            if let Some(d) = retry_after {
                                inner.pacer.pause_for(d);
                            }
                            Outcome::RateLimited { retry_after }
                        }
                        500..=599 => {
                            inner.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                            Outcome::ServerError { status }
                        }
                        _ => Outcome::Final,
                    };
                    (err, outcome)
                }
                Err(e) => {
                    let outcome = if e.is_timeout() {
                        inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        Outcome::Timeout
                    } else if e.is_connect() {
                        Outcome::ConnectFailed
                    } else {
                        // The connection broke mid-request: it may have been applied.
                        Outcome::Timeout
                    };
                    let err = if e.is_timeout() {
                        ApiError::Timeout {
                            after: inner.timeout,
                        }
                    } else {
                        ApiError::Transport {
                            message: transport_message(&e),
                        }
                    };
                    (err, outcome)
                }
            };
            match retry::decide(
                &inner.retry,
                A::IDEMPOTENCY,
                outcome,
                attempt,
                rand::random::<f64>(),
            ) {
                Decision::RetryAfter(delay) => {
                    tracing::debug!(action = A::NAME, attempt, ?delay, error = %err, "retrying");
                    inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Decision::GiveUp => {
                    tracing::debug!(action = A::NAME, attempt, error = %err, "giving up");
                    return Err(err);
                }
            }
        }
    }

    async fn send_once<A: Action>(&self, action: &A) -> Result<Answer, reqwest::Error> {
        let inner = &self.inner;
        let base = match A::BASE {
            Base::V1 => &inner.v1,
            Base::Root => &inner.root,
        };
        let url = format!("{base}{}", action.path());
        let mut req = inner
            .http
            .request(A::METHOD, &url)
            .header("X-API-KEY", inner.key.expose())
            .timeout(inner.timeout);
        let query = action.query();
        if !query.is_empty() {
            req = req.query(&query);
        }
        if let Some(body) = action.body() {
            req = req.header(CONTENT_TYPE, "application/json").json(&body);
        }
        let started = std::time::Instant::now();
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let redirect_to = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|location| location_host(&url, location));
        let body = resp.bytes().await?.to_vec();
        tracing::trace!(
            action = A::NAME,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answer"
        );
        Ok(Answer {
            status,
            content_type,
            retry_after,
            redirect_to,
            body,
        })
    }
}

/// A 2xx answer as it came: status, content type and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<Duration>,
    /// For a 3xx: the host (and port) of its `Location`.
    redirect_to: Option<String>,
    body: Vec<u8>,
}

/// The host (and port) a `Location` points to, resolved against the request URL; never
/// its path or query (they may hold member e-mails or tokens).
fn location_host(request_url: &str, location: &str) -> String {
    let target = Url::parse(request_url)
        .and_then(|base| base.join(location))
        .ok();
    match target
        .as_ref()
        .and_then(|t| t.host_str().map(|h| (h, t.port())))
    {
        Some((host, Some(port))) => format!("{host}:{port}"),
        Some((host, None)) => host.to_string(),
        None => "an unreadable Location".to_string(),
    }
}

/// Decodes a 2xx answer. With `text_answer` (writes, see [`Action::TEXT_ANSWER`]), an
/// answer that is not JSON (`ok`), or is a bare JSON string, number or boolean, is the
/// success it reports: it decodes as `{"ok": true, "message": "<the text>"}`.
fn decode<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &[u8],
    text_answer: bool,
) -> Result<T, ApiError> {
    // Some write endpoints may answer with an empty body: decode it as null,
    // or as an empty object for result types that are objects.
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        if let Ok(v) = serde_json::from_slice::<T>(b"null") {
            return Ok(v);
        }
        return decode(status, b"{}", false);
    }
    // Tracking the path costs on every answer; it is only needed for the error message.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    if text_answer {
        let text = match serde_json::from_slice::<serde_json::Value>(body) {
            Err(_) => Some(String::from_utf8_lossy(body).into_owned()),
            Ok(serde_json::Value::String(s)) => Some(s),
            Ok(v @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_))) => {
                Some(v.to_string())
            }
            Ok(_) => None,
        };
        if let Some(v) = text.and_then(|t| serde_json::from_value(text_answer_json(&t)).ok()) {
            return Ok(v);
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| ApiError::Decode {
        status,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// `Retry-After` is either delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite())
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let t = httpdate(v)?;
    let now = std::time::SystemTime::now();
    Some(
        t.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

fn httpdate(v: &str) -> Option<std::time::SystemTime> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64;
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
}

/// A transport error as text, without the URL (it holds member e-mails).
fn transport_message(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_normalisation() {
        let (v1, root) = split_base("https://api.memberspot.de/v1/").expect("valid");
        assert_eq!(v1, "https://api.memberspot.de/v1");
        assert_eq!(root, "https://api.memberspot.de");
        let (v1, root) = split_base("http://127.0.0.1:8080/v1").expect("valid");
        assert_eq!(
            (v1.as_str(), root.as_str()),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080")
        );
        assert!(split_base("ftp://x").is_err());
        // Plain http only to loopback: the key must not cross a network in clear text.
        for ok in [
            "http://localhost:8080/v1",
            "http://127.0.0.1/v1",
            "http://127.8.9.10:1/v1",
            "http://[::1]:8080/v1",
            "https://api.memberspot.de/v1",
        ] {
            assert!(split_base(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.memberspot.de/v1",
            "http://10.0.0.5/v1",
            "http://[::2]/v1",
            "http://localhost.evil.example/v1",
            "http://128.0.0.1/v1",
        ] {
            let e = split_base(bad).expect_err(bad).to_string();
            assert!(e.contains("https://") && e.contains("loopback"), "{e}");
        }
        assert!(split_base("https://key@api.memberspot.de/v1").is_err());
        assert!(split_base("not a url").is_err());
    }

    #[test]
    fn redirect_targets_name_only_the_host() {
        let base = "http://127.0.0.1:9/v1/users?email=a%40b.de";
        assert_eq!(
            location_host(base, "https://evil.example/steal?key=1"),
            "evil.example"
        );
        assert_eq!(
            location_host(base, "http://127.0.0.1:7777/x"),
            "127.0.0.1:7777"
        );
        assert_eq!(location_host(base, "/v2/users"), "127.0.0.1:9");
        assert_eq!(location_host(base, "http://"), "an unreadable Location");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
    }

    #[test]
    fn empty_bodies_decode_as_null_or_empty_object() {
        let r: memberspot_wire::DeleteUsersResult = decode(200, b"", true).expect("empty object");
        assert_eq!(r.deleted_count, None);
        let v: serde_json::Value = decode(201, b" ", false).expect("null");
        assert!(v.is_null());
        let e =
            decode::<memberspot_wire::User>(200, br#"{"uid": 1}"#, false).expect_err("no email");
        assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
    }

    #[test]
    fn a_write_answered_with_text_succeeds_and_keeps_the_text() {
        use memberspot_wire::DeleteUsersResult;
        for body in [&b"ok"[..], b"ok\n", br#""ok""#] {
            let r: DeleteUsersResult = decode(200, body, true).expect("text is success");
            assert_eq!((r.ok, r.message.as_deref()), (Some(true), Some("ok")));
        }
        let r: DeleteUsersResult = decode(200, b"true", true).expect("a bare boolean");
        assert_eq!(r.message.as_deref(), Some("true"));
        let u: crate::actions::UserUpdate = decode(201, b"Created", true).expect("text");
        assert_eq!(
            u,
            crate::actions::UserUpdate::Other(
                serde_json::json!({"ok": true, "message": "Created"})
            )
        );
        // A read needs its data: text is still a decode error there.
        let e = decode::<memberspot_wire::ListOf<memberspot_wire::Offer>>(200, b"ok", false)
            .expect_err("a list must be JSON");
        assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
        let e = decode::<memberspot_wire::LoginToken>(200, b"<html>", false).expect_err("no token");
        assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Client::builder("http://127.0.0.1:1/v1")
            .api_key(ApiKey::new("sk_live_top_secret_key_value"))
            .build()
            .expect("builds");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("top_secret"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn bad_configuration_is_explained() {
        let e = Client::builder("https://x/v1").build().expect_err("no key");
        assert!(e.to_string().contains("API key is required"));
        let e = Client::builder("https://x/v1")
            .api_key(ApiKey::new("k\n"))
            .build()
            .expect_err("bad key");
        assert!(e.to_string().contains("header"));
        let e = Client::builder("https://x/v1")
            .api_key(ApiKey::new("k"))
            .rate_limit(-1.0)
            .build()
            .expect_err("bad rps");
        assert!(e.to_string().contains("rate limit"));
    }
}
