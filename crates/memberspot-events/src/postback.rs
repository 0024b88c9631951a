//! PayPal IPN authenticity: the message is posted back to PayPal, which answers `VERIFIED`
//! or `INVALID`. The receiver does this *before* anything is stored, so a forged
//! notification never occupies the idempotency key of the genuine one; PayPal retries a
//! notification that was not answered with 2xx, so a post-back that cannot be made is
//! answered 503 and comes again.

use std::time::Duration;

use memberspot_webhooks::VerifyError;

use crate::config::Source;
use crate::service::Events;

/// PayPal answers in well under a second; a provider retry is cheaper than a held request.
const POSTBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// What PayPal said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Postback {
    Verified,
    /// Not a genuine IPN (forged or altered).
    Invalid,
    /// No usable answer; try again later. The text names the URL and the problem.
    Unavailable(String),
}

/// Posts `body` back to the source's post-back URL and interprets the answer.
pub async fn verify(events: &Events, source: &Source, body: &[u8]) -> Postback {
    let answer = events
        .http()
        .post(&source.postback_url)
        .timeout(POSTBACK_TIMEOUT)
        .header(
            "content-type",
            memberspot_webhooks::paypal::POSTBACK_CONTENT_TYPE,
        )
        .header("user-agent", "memberspot-hub-ipn")
        .body(memberspot_webhooks::paypal::postback_body(body))
        .send()
        .await;
    let (status, text) = match answer {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(err) => {
            return Postback::Unavailable(format!(
                "PayPal post-back to {} failed: {}",
                source.postback_url,
                without_url(&err)
            ));
        }
    };
    match memberspot_webhooks::paypal::interpret_postback_answer(status, &text) {
        Ok(()) => Postback::Verified,
        Err(VerifyError::PaypalSaysInvalid) => Postback::Invalid,
        Err(err) => Postback::Unavailable(format!(
            "PayPal post-back to {}: {err} (HTTP {status})",
            source.postback_url
        )),
    }
}

/// reqwest's error text without the URL it repeats.
fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    kind.to_owned()
}
