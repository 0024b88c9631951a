//! Stripe Checkout sessions and Payment Links carry no line items in their webhook, so the
//! purchased product is not in the event. With an API key on the source (a restricted key
//! that may read Checkout Sessions), the worker reads it from Stripe:
//! `GET /v1/checkout/sessions/{id}/line_items`, the first item's `price.product`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Answers larger than this are not read (a line-item page of one item is ~2 KB).
const MAX_ANSWER: usize = 256 * 1024;

/// Why the product could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Stripe did not answer, or answered 429/5xx: try the event again later.
    Retry(String),
    /// The key or the session was refused (401, 403, 404): retrying will not help.
    Refused(String),
}

/// The product id of the session's first line item (`prod_…`), if it has one.
pub async fn session_product(
    http: &reqwest::Client,
    api_url: &str,
    key: &SecretString,
    session: &str,
) -> Result<Option<String>, LookupError> {
    if !session.starts_with("cs_")
        || !session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Ok(None);
    }
    let url = format!(
        "{}/v1/checkout/sessions/{session}/line_items?limit=1",
        api_url.trim_end_matches('/')
    );
    let answer = http
        .get(&url)
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .map_err(|e| LookupError::Retry(format!("Stripe's API did not answer: {e}")))?;
    let status = answer.status();
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(LookupError::Retry(format!(
            "Stripe's API answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(LookupError::Refused(format!(
            "Stripe's API answered {status} for session {session}: check the source's \
             stripe_api_key (it needs read access to Checkout Sessions)"
        )));
    }
    let body = answer
        .bytes()
        .await
        .map_err(|e| LookupError::Retry(format!("reading Stripe's answer: {e}")))?;
    if body.len() > MAX_ANSWER {
        return Err(LookupError::Refused(format!(
            "Stripe's answer is larger than {MAX_ANSWER} bytes"
        )));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| LookupError::Refused(format!("Stripe's answer is not JSON: {e}")))?;
    let product = &v["data"][0]["price"]["product"];
    // `product` is an id, or the product object when the request expanded it.
    Ok(product
        .as_str()
        .or_else(|| product["id"].as_str())
        .map(str::to_owned))
}
