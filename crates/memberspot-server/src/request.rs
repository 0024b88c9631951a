//! Who sent a request and under which id: one middleware, [`request_context`], resolves
//! the client's address (through the configured reverse proxies only) and the request id
//! before any route runs, and puts both into the request's extensions. Everything that
//! needs them — the console's sign-in limits, the webhook receivers' log lines, audit
//! records, error answers — reads those two values, never the headers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use memberspot_hub::{CallContext, Surface};
use tracing::Instrument;

/// The request id header: read from the client when it is short and safe, always answered.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A client's own request id is used up to this length.
const MAX_REQUEST_ID: usize = 64;

/// Error bodies above this are passed on without a `request_id` (none of ours are).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The address of the client: the TCP peer, or, when the peer is a trusted proxy, the
/// address that proxy reports. In-process callers (tests) without a peer are `0.0.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The id of one HTTP request: in its log lines, its audit records, its error answers and
/// the `X-Request-Id` header of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The client's id when it is 1 to 64 characters of `A-Z a-z 0-9 . _ : -` (it lands in
    /// logs and records, so nothing that could forge a line or a field), else a new UUID v7.
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        let given = headers
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_safe_id(v));
        match given {
            Some(v) => RequestId(v.to_owned()),
            None => RequestId(uuid::Uuid::now_v7().to_string()),
        }
    }
}

/// The call context of a tool call made for an HTTP request: audited under the request's
/// id when the request went through [`request_context`], else under a new one.
pub fn call_context(surface: Surface, id: Option<&RequestId>) -> CallContext {
    let mut ctx = CallContext::new(surface);
    if let Some(id) = id {
        ctx.request_id = id.0.clone();
    }
    ctx
}

fn is_safe_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Which header trusted proxies report the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, …` (Caddy and nginx set it).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

impl ProxyHeader {
    pub fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "X-Forwarded-For",
            ProxyHeader::Forwarded => "Forwarded",
        }
    }
}

/// The reverse proxies whose forwarding header is believed, as address ranges. Empty:
/// the TCP peer is the client and forwarding headers are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Only one header is read: a proxy that sets one passes the other on from the
    /// client unchanged, so reading both would let a client choose its address.
    header: ProxyHeader,
}

/// A `--trusted-proxy` value that is not an address or a CIDR range.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range (e.g. 127.0.0.1, 10.0.0.0/8, ::1)")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// Parses each of `ranges` (`10.0.0.0/8`, `::1`, `192.0.2.7`; a bare address is one
    /// host).
    pub fn parse<S: AsRef<str>>(ranges: &[S], header: ProxyHeader) -> Result<Self, BadProxy> {
        let nets = ranges
            .iter()
            .map(|r| parse_net(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets, header })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn header(&self) -> ProxyHeader {
        self.header
    }

    /// The ranges, as written canonically (for the startup summary).
    pub fn ranges(&self) -> Vec<String> {
        self.nets.iter().map(ToString::to_string).collect()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`: walking the forwarding chain from the nearest hop, every
    /// address that is a trusted proxy is skipped, and the first other one is the client.
    /// The chain is not read at all when `peer` is not trusted; an entry that is not an
    /// address ends the walk at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match self.header {
            ProxyHeader::XForwardedFor => x_forwarded_for(headers),
            ProxyHeader::Forwarded => forwarded_for(headers),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop.map(canonical) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

fn parse_net(s: &str) -> Result<IpNet, BadProxy> {
    let s = s.trim();
    IpNet::from_str(s)
        .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| BadProxy(s.to_owned()))
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Every `X-Forwarded-For` entry, in order over all such headers; `None` for one that is
/// not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            let text = v.to_str().unwrap_or("\u{0}");
            text.split(',')
                .map(|e| node_addr(e.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `for=` of every element of every `Forwarded` header, in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for v in headers.get_all(header::FORWARDED).iter() {
        let Ok(text) = v.to_str() else {
            hops.push(None);
            continue;
        };
        for element in text.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            hops.push(node.and_then(|n| node_addr(n.trim_matches('"'))));
        }
    }
    hops
}

/// An address from `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1` or `[2001:db8::1]:443`.
fn node_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ip);
    }
    if let Ok(sock) = SocketAddr::from_str(s) {
        return Some(sock.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| IpAddr::from_str(v6).ok())
}

/// The middleware in front of every route: resolves [`ClientAddr`] and [`RequestId`],
/// runs the request inside a `request` span carrying both (so every log line of the
/// request names them), logs one line when it is answered, answers the id in
/// `X-Request-Id` and adds it to JSON error bodies (`{"error": {…, "request_id"}}`).
pub async fn request_context(
    State(proxies): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let client = proxies.client(peer, req.headers());
    let id = RequestId::from_headers(req.headers());
    req.extensions_mut().insert(ClientAddr(client));
    req.extensions_mut().insert(id.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // At error level, so that the span is on whenever any line is: a filter such as
    // `warn` keeps the request id and client on the lines it lets through.
    let span = tracing::error_span!(
        "request",
        request_id = %id.0,
        client = %client,
        method = %method,
        path = %path,
    );
    let response = async move {
        let response = next.run(req).await;
        let status = response.status();
        let ms = started.elapsed().as_millis() as u64;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms, "answered");
        } else if status.is_client_error() {
            tracing::info!(status = status.as_u16(), ms, "answered");
        } else {
            tracing::debug!(status = status.as_u16(), ms, "answered");
        }
        response
    }
    .instrument(span)
    .await;
    let mut response = with_request_id(response, &id.0).await;
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER.clone(), v);
    }
    response
}

/// Adds `request_id` to the `error` object of a JSON error answer (REST, the webhook
/// receivers, `/mcp`'s door); other answers pass unchanged.
async fn with_request_id(response: Response, id: &str) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(_) => return (status, "").into_response(),
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    // JSON-RPC error objects have a fixed shape; only the hub's own shape gets the id.
    let ours = value.get("jsonrpc").is_none();
    match value.get_mut("error").and_then(|e| e.as_object_mut()) {
        Some(error) if ours => {
            error.insert(
                "request_id".into(),
                serde_json::Value::String(id.to_owned()),
            );
        }
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(none.client(ip("198.51.100.4"), &h), ip("198.51.100.4"));
        let lo = TrustedProxies::parse(&["127.0.0.1"], ProxyHeader::XForwardedFor).expect("ok");
        assert_eq!(lo.client(ip("198.51.100.4"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let p =
            TrustedProxies::parse(&["10.0.0.0/8", "::1"], ProxyHeader::XForwardedFor).expect("ok");
        // The client forged the first entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Several headers count as one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(p.client(ip("::1"), &h), ip("203.0.113.9"));
        // Only proxies in the chain: the farthest one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn garbage_in_the_chain_stops_at_the_last_trusted_hop() {
        let p = TrustedProxies::parse(&["10.0.0.0/8"], ProxyHeader::XForwardedFor).expect("ok");
        let h = headers(&[("x-forwarded-for", "203.0.113.9, not-an-ip, 10.1.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = TrustedProxies::parse(&["127.0.0.1"], ProxyHeader::XForwardedFor).expect("ok");
        let fwd = TrustedProxies::parse(&["127.0.0.1"], ProxyHeader::Forwarded).expect("ok");
        let h = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(xff.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        assert_eq!(fwd.client(ip("127.0.0.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn forwarded_elements_with_ports_quotes_and_ipv6() {
        let p = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"], ProxyHeader::Forwarded)
            .expect("ok");
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, For=10.0.0.3:80;by=x",
        )]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=_hidden, for=10.0.0.3")]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_ranges() {
        let p = TrustedProxies::parse(&["127.0.0.1/32"], ProxyHeader::XForwardedFor).expect("ok");
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(p.client(ip("::ffff:127.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn ranges_parse_and_bad_ones_are_named() {
        let p = TrustedProxies::parse(
            &["10.1.2.3/8", " ::1 ", "192.0.2.7"],
            ProxyHeader::Forwarded,
        )
        .expect("ok");
        assert_eq!(p.ranges(), ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        for bad in ["10.0.0.0/33", "example.com", "", "10.0.0.0/8/1"] {
            let e = TrustedProxies::parse(&[bad], ProxyHeader::XForwardedFor).expect_err(bad);
            assert!(e.to_string().contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn only_short_safe_request_ids_are_taken() {
        let given = |v: &str| RequestId::from_headers(&headers(&[("x-request-id", v)])).0;
        assert_eq!(given("abc-123_X.y:z"), "abc-123_X.y:z");
        for bad in [
            "",
            "has space",
            "line\tbreak",
            "quote\"",
            "{\"json\":1}",
            &"a".repeat(65),
        ] {
            let id = given(bad);
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&RequestId::from_headers(&HeaderMap::new()).0).is_ok());
    }
}
