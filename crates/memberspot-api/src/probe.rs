//! Where a school's API answers. A base URL given without `/v1`
//! (`https://api.memberspot.de`) passes the key check, which lives at the host root, and
//! then every call 404s; so a URL is tried by listing the offers there (a read), and at
//! `…/v1` first when its path does not end in `/v1`.

use std::time::Duration;

use crate::actions::ListOffers;
use crate::{ApiError, ApiKey, Client, RetryPolicy};

/// The base URL that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The URL as it will be stored (no trailing slash).
    pub base_url: String,
    /// Whether `/v1` was added to the URL given.
    pub added_v1: bool,
}

/// Why no base URL was found.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    /// Something answered, but not like the Memberspot API, at every URL tried.
    #[error(
        "`{given}` does not answer like the Memberspot API ({}); the API's address is https://api.memberspot.de/v1",
        tried.iter().map(|(url, why)| format!("GET {url}/offers: {why}")).collect::<Vec<_>>().join("; ")
    )]
    NotTheApi {
        given: String,
        /// Each URL tried, with what it answered.
        tried: Vec<(String, String)>,
    },
    /// The API refused the key, could not be reached, or the URL is not acceptable.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The URLs to try for `given`, most likely first.
fn candidates(given: &str) -> Vec<String> {
    let trimmed = given.trim().trim_end_matches('/').to_string();
    if trimmed.ends_with("/v1") {
        vec![trimmed]
    } else {
        vec![format!("{trimmed}/v1"), trimmed]
    }
}

/// Finds where `given` answers with `key`: lists the offers (read-only, nothing changes)
/// at `given/v1` and at `given` (only `given` when it ends in `/v1`), and answers the
/// first URL that answered with a list of offers. A refused key or an unreachable host
/// is an [`ApiError`]; answers that are not the API's (404, not JSON, a redirect) at
/// every URL are [`BaseUrlError::NotTheApi`], naming what each answered.
pub async fn resolve_base_url(
    given: &str,
    key: &ApiKey,
    timeout: Duration,
) -> Result<ResolvedBase, BaseUrlError> {
    let mut not_the_api = Vec::new();
    let mut refused = None;
    let mut unreachable = None;
    for url in candidates(given) {
        let client = Client::builder(url.clone())
            .api_key(key.clone())
            .rate_limit(0.0)
            .timeout(timeout)
            .retry(RetryPolicy {
                max_retries: 2,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
            })
            .build()?;
        match client.execute(&ListOffers).await {
            Ok(_) => {
                let added_v1 = url != given.trim().trim_end_matches('/');
                return Ok(ResolvedBase {
                    base_url: url,
                    added_v1,
                });
            }
            Err(e @ (ApiError::Unauthorized { .. } | ApiError::Forbidden { .. })) => {
                refused.get_or_insert(e);
            }
            Err(e) if e.is_transient() => {
                unreachable.get_or_insert(e);
            }
            Err(e @ ApiError::Config(_)) => return Err(e.into()),
            Err(e) => {
                let why = match &e {
                    ApiError::Decode { .. } => format!(
                        "{} with something that is not a list of offers",
                        e.status()
                            .map_or("answered".into(), |s| format!("answered {s}"))
                    ),
                    other => other.to_string(),
                };
                not_the_api.push((url, why));
            }
        }
    }
    match (refused, unreachable) {
        (Some(e), _) | (None, Some(e)) => Err(e.into()),
        (None, None) => Err(BaseUrlError::NotTheApi {
            given: given.trim().to_string(),
            tried: not_the_api,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_tried_first_unless_given() {
        assert_eq!(
            candidates("https://api.memberspot.de"),
            ["https://api.memberspot.de/v1", "https://api.memberspot.de"]
        );
        assert_eq!(
            candidates(" http://127.0.0.1:8080/ "),
            ["http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"]
        );
        assert_eq!(
            candidates("https://api.memberspot.de/v1/"),
            ["https://api.memberspot.de/v1"]
        );
    }
}
