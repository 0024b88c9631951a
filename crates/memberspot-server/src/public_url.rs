//! Where clients reach the hub: the base of the OAuth issuer and of the `/mcp` resource URL
//! that access tokens are bound to.
//!
//! Behind a reverse proxy the base is `--public-url` and nothing a request says changes
//! it. Without one, only a request to a loopback `Host` gets an answer (a local test or a
//! desktop client): a `Host` header from anywhere else is the client's to choose, and must
//! not decide which URL tokens are bound to.

use axum::http::{HeaderMap, header};

/// Path of the protected resource: MCP over streamable HTTP.
pub const MCP_PATH: &str = "/mcp";
/// RFC 9728: where the protected resource's metadata is (the `/mcp` suffix added).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The hub's base URL (no trailing slash) for a request: the public URL when configured,
/// else `http://HOST` when the request's `Host` is loopback, else `None`.
pub fn base_url(public_url: Option<&url::Url>, headers: &HeaderMap) -> Option<String> {
    if let Some(u) = public_url {
        return Some(u.as_str().trim_end_matches('/').to_string());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let parsed = url::Url::parse(&format!("http://{host}")).ok()?;
    let loopback = match parsed.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    // Only a bare host[:port]: a `Host` with a path or credentials is not one.
    let bare = parsed.path() == "/" && parsed.username().is_empty() && parsed.query().is_none();
    (loopback && bare).then(|| parsed.as_str().trim_end_matches('/').to_string())
}

/// The `/mcp` URL that tokens are bound to (RFC 8707 resource).
pub fn mcp_resource(base: &str) -> String {
    format!("{base}{MCP_PATH}")
}

/// The metadata URL a `401` from `/mcp` points to (RFC 9728 §5.1).
pub fn resource_metadata_url(base: &str) -> String {
    format!("{base}{RESOURCE_METADATA_PATH}{MCP_PATH}")
}

/// True if `url` may carry OAuth: `https`, or `http` on a loopback host.
pub fn is_secure_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().unwrap());
        m
    }

    #[test]
    fn only_loopback_hosts_name_the_hub_without_a_public_url() {
        assert_eq!(
            base_url(None, &host("127.0.0.1:8080")).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            base_url(None, &host("localhost:1")).as_deref(),
            Some("http://localhost:1")
        );
        assert_eq!(
            base_url(None, &host("[::1]:9")).as_deref(),
            Some("http://[::1]:9")
        );
        for forged in [
            "evil.example",
            "10.0.0.1:80",
            "127.0.0.1.evil.example",
            "127.0.0.1@evil.example",
            "evil.example#127.0.0.1",
        ] {
            assert_eq!(base_url(None, &host(forged)), None, "{forged}");
        }
        assert_eq!(base_url(None, &HeaderMap::new()), None);
    }

    #[test]
    fn a_public_url_wins_over_the_host_header() {
        let public = url::Url::parse("https://hub.example.com/").unwrap();
        assert_eq!(
            base_url(Some(&public), &host("127.0.0.1:1")).as_deref(),
            Some("https://hub.example.com")
        );
        assert_eq!(
            resource_metadata_url("https://hub.example.com"),
            "https://hub.example.com/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn oauth_needs_https_except_on_loopback() {
        let ok = |u: &str| is_secure_or_loopback(&url::Url::parse(u).unwrap());
        assert!(ok("https://hub.example.com"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://localhost"));
        assert!(!ok("http://hub.example.com"));
        assert!(!ok("http://10.0.0.5"));
    }
}
