//! Whether `serve` may answer on its address over plain HTTP: sign-in forms, OAuth and
//! webhook receivers carry passwords, session cookies, tokens and signed deliveries, which
//! must not cross a network unencrypted. On loopback they stay on the machine (a reverse
//! proxy on the same host terminates HTTPS); anywhere else an HTTPS public URL says a
//! proxy terminates TLS in front, or the operator must say `--insecure-http`.

use std::net::SocketAddr;

/// `serve` would expose credential-carrying routes over plain HTTP.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve {paths} on {listen} without HTTPS: passwords, session cookies, tokens \
     and signed webhook deliveries would cross the network unencrypted, where anyone on the \
     way can read or replay them.\n\
     Put an HTTPS reverse proxy (Caddy, nginx) in front and pass --public-url https://YOUR-HOST \
     (see docs/operations.md, \"Behind HTTPS\"), or listen on 127.0.0.1 / [::1] behind a proxy \
     on the same machine, or pass --insecure-http if the network between clients and the hub \
     is private and trusted"
)]
pub struct InsecureExposure {
    pub listen: SocketAddr,
    pub paths: String,
}

/// Refuses `sensitive` routes on a non-loopback `listen` unless `public_url` is `https://`
/// or `insecure_http` is set.
pub fn check(
    listen: SocketAddr,
    public_url: Option<&url::Url>,
    insecure_http: bool,
    sensitive: &[String],
) -> Result<(), InsecureExposure> {
    let behind_https = public_url.is_some_and(|u| u.scheme() == "https");
    if listen.ip().is_loopback() || behind_https || insecure_http || sensitive.is_empty() {
        return Ok(());
    }
    Err(InsecureExposure {
        listen,
        paths: sensitive.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn plain_http_off_loopback_is_refused_with_the_reasons() {
        let paths = vec!["/login".to_owned(), "/hooks/*".to_owned()];
        let https = url::Url::parse("https://hub.example.com").expect("url");
        let http = url::Url::parse("http://hub.example.com").expect("url");
        for ok in ["127.0.0.1:8787", "[::1]:8787", "127.0.0.5:1"] {
            check(addr(ok), None, false, &paths).expect(ok);
        }
        check(addr("0.0.0.0:8787"), Some(&https), false, &paths).expect("behind https");
        check(addr("0.0.0.0:8787"), None, true, &paths).expect("insecure by choice");
        check(addr("0.0.0.0:8787"), None, false, &[]).expect("nothing sensitive");
        for (listen, url) in [
            ("0.0.0.0:8787", None),
            ("[::]:8787", None),
            ("192.0.2.4:80", Some(&http)),
        ] {
            let e = check(addr(listen), url, false, &paths)
                .expect_err(listen)
                .to_string();
            assert!(e.contains("/login, /hooks/*"), "{e}");
            assert!(e.contains("--public-url https://"), "{e}");
            assert!(e.contains("--insecure-http"), "{e}");
        }
    }
}
