//! Client ID Metadata Documents: a client whose `client_id` is an HTTPS URL publishes its
//! name and redirect URIs there, and the hub fetches them when the client asks to sign in.
//!
//! The URL comes from whoever opens the authorization link, so the fetch is an outbound
//! request an attacker chooses: it goes only to public addresses (the host is resolved
//! first and the connection pinned to the checked address, so DNS cannot change its answer
//! in between), follows no redirects, reads at most [`MAX_DOCUMENT`] bytes and gives up
//! after [`FETCH_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use memberspot_hub::oauth::{MAX_REDIRECT_URIS, check_redirect_uri, clean_client_name};
use memberspot_hub::store::{OAuthClient, OAuthClientKind};
use serde::Deserialize;

/// Largest metadata document read.
pub const MAX_DOCUMENT: usize = 64 * 1024;
/// Time for the whole fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client id URL gave no usable client.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("client_id `{0}` is not an https URL with a path")]
    NotAnHttpsUrl(String),
    #[error(
        "client_id `{url}`: {host} resolves to a private or local address ({ip}); the hub fetches client metadata from public addresses only"
    )]
    PrivateAddress {
        url: String,
        host: String,
        ip: IpAddr,
    },
    #[error("client_id `{url}`: could not fetch the metadata document: {reason}")]
    Fetch { url: String, reason: String },
    #[error("client_id `{url}`: the metadata document is not usable: {reason}")]
    Invalid { url: String, reason: String },
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// Fetches metadata documents.
pub struct Fetcher {
    allow_private: bool,
}

/// True if a client id looks like a metadata document URL rather than a registered id.
pub fn is_metadata_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Addresses a fetch must never reach unless the owner allows it.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT; 0.0.0.0/8
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link local
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl Fetcher {
    pub fn new(allow_private: bool) -> Fetcher {
        Fetcher { allow_private }
    }

    /// The client described at `client_id`, checked: the document names itself with the
    /// same URL, lists valid redirect URIs, and asks for no client authentication.
    pub async fn fetch(&self, client_id: &str) -> Result<OAuthClient, MetadataError> {
        let not_url = || MetadataError::NotAnHttpsUrl(client_id.to_string());
        let url = url::Url::parse(client_id).map_err(|_| not_url())?;
        let loopback_http = self.allow_private
            && url.scheme() == "http"
            && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if (url.scheme() != "https" && !loopback_http)
            || url.path() == "/"
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(not_url());
        }
        let host = url.host_str().ok_or_else(not_url)?.to_string();
        let port = url.port_or_known_default().ok_or_else(not_url)?;
        let fetch_err = |reason: String| MetadataError::Fetch {
            url: client_id.to_string(),
            reason,
        };
        let lookup_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(FETCH_TIMEOUT, tokio::net::lookup_host((lookup_host, port)))
                .await
                .map_err(|_| fetch_err("name lookup timed out".into()))?
                .map_err(|e| fetch_err(format!("name lookup failed: {e}")))?
                .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| fetch_err("the name has no address".into()))?;
        if !self.allow_private
            && let Some(bad) = addrs.iter().find(|a| is_private(a.ip()))
        {
            return Err(MetadataError::PrivateAddress {
                url: client_id.to_string(),
                host,
                ip: bad.ip(),
            });
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .resolve(&host, addr)
            .build()
            .map_err(|e| fetch_err(e.to_string()))?;
        let mut response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fetch_err(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fetch_err(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_err(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(fetch_err(format!(
                    "the document is larger than {} KiB",
                    MAX_DOCUMENT / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let invalid = |reason: String| MetadataError::Invalid {
            url: client_id.to_string(),
            reason,
        };
        let doc: Document = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("not a client metadata document: {e}")))?;
        if doc.client_id != client_id {
            return Err(invalid(format!(
                "its client_id is `{}`, not its own URL",
                doc.client_id.chars().take(200).collect::<String>()
            )));
        }
        if let Some(m) = doc.token_endpoint_auth_method.as_deref()
            && m != "none"
        {
            return Err(invalid(format!(
                "token_endpoint_auth_method `{m}` is not offered (public clients: `none`)"
            )));
        }
        if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(invalid(format!(
                "redirect_uris: 1 to {MAX_REDIRECT_URIS} are needed"
            )));
        }
        for uri in &doc.redirect_uris {
            check_redirect_uri(uri).map_err(invalid)?;
        }
        let created_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        Ok(OAuthClient {
            client_id: client_id.to_string(),
            name: clean_client_name(doc.client_name.as_deref()),
            redirect_uris: doc.redirect_uris,
            kind: OAuthClientKind::MetadataDocument,
            created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                is_private(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))),
                "{ip}"
            );
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(
                !is_private(ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))),
                "{ip}"
            );
        }
    }

    #[tokio::test]
    async fn only_https_urls_with_a_path_are_client_ids() {
        let f = Fetcher::new(false);
        for id in [
            "http://client.example/meta.json",
            "https://client.example/",
            "https://client.example",
            "https://user@client.example/meta.json",
            "ftp://client.example/meta.json",
            "not a url",
        ] {
            assert!(
                matches!(f.fetch(id).await, Err(MetadataError::NotAnHttpsUrl(_))),
                "{id}"
            );
        }
    }

    #[tokio::test]
    async fn a_client_id_on_a_private_address_is_not_fetched() {
        let f = Fetcher::new(false);
        let r = f.fetch("https://127.0.0.1:9/client.json").await;
        assert!(
            matches!(r, Err(MetadataError::PrivateAddress { .. })),
            "{r:?}"
        );
        let r = f.fetch("https://localhost:9/client.json").await;
        assert!(
            matches!(r, Err(MetadataError::PrivateAddress { .. })),
            "{r:?}"
        );
    }
}
