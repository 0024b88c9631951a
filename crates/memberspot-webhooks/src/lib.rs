//! Verification and normalisation of incoming webhooks for Memberspot Hub.
//!
//! Flow for a receiver: read the body once as bytes → [`verify`] (raw bytes,
//! constant time, fail closed) → store the raw delivery → answer with
//! [`success_response`] → [`normalize`] into [`Event`]s and act asynchronously,
//! deduplicating on [`Event::idempotency_key`].
//!
//! PayPal IPN is special: authenticity is established by posting the body back
//! to PayPal (see [`paypal`]); [`verify`] returns
//! [`VerifyError::PostbackRequired`] for it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

mod amount;
pub mod copecart;
pub mod digistore24;
pub mod elopage;
mod error;
mod event;
mod form;
pub mod memberspot;
pub mod paypal;
pub mod stripe;
pub mod thrivecart;

pub use amount::{Amount, AmountError, minor_unit_exponent};
pub use error::{ParseError, VerifyError};
pub use event::{Event, EventKind};

/// Default replay window for timestamped schemes (Stripe, COPE).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A webhook source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Stripe,
    Digistore24,
    /// CopeCart classic IPN.
    #[serde(rename = "copecart")]
    CopeCart,
    /// COPE, CopeCart's newer CloudEvents platform.
    Cope,
    #[serde(rename = "thrivecart")]
    ThriveCart,
    Elopage,
    #[serde(rename = "paypal")]
    PaypalIpn,
    /// Memberspot's own outbound webhooks.
    Memberspot,
}

impl Provider {
    pub const ALL: [Provider; 8] = [
        Self::Stripe,
        Self::Digistore24,
        Self::CopeCart,
        Self::Cope,
        Self::ThriveCart,
        Self::Elopage,
        Self::PaypalIpn,
        Self::Memberspot,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Digistore24 => "digistore24",
            Self::CopeCart => "copecart",
            Self::Cope => "cope",
            Self::ThriveCart => "thrivecart",
            Self::Elopage => "elopage",
            Self::PaypalIpn => "paypal",
            Self::Memberspot => "memberspot",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unknown provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == lower)
            .or(match lower.as_str() {
                // Accepted aliases.
                "ablefy" => Some(Self::Elopage),
                "paypal_ipn" => Some(Self::PaypalIpn),
                "ds24" => Some(Self::Digistore24),
                _ => None,
            })
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// One received HTTP request, as raw as possible.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Header name/value pairs; names are matched case-insensitively.
    pub headers: &'a [(String, String)],
    /// Exact body bytes as received (never re-serialised).
    pub body: &'a [u8],
    /// Secret token carried in the URL path (elopage, Memberspot).
    pub path_secret: Option<&'a str>,
}

impl<'a> Delivery<'a> {
    /// First header value with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Verify a delivery. `secret` is the provider's configured secret (Stripe
/// `whsec_…`, Digistore24 passphrase, CopeCart/COPE secret, ThriveCart secret
/// word, elopage/Memberspot URL token); `None` or empty fails closed.
/// `tolerance` applies to timestamped schemes (Stripe, COPE);
/// `Duration::ZERO` disables the window as in Stripe's libraries.
///
/// For [`Provider::PaypalIpn`] this always returns
/// [`VerifyError::PostbackRequired`]: use [`paypal::postback_body`] and
/// [`paypal::interpret_postback_answer`].
pub fn verify(
    provider: Provider,
    delivery: &Delivery<'_>,
    secret: Option<&str>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    match provider {
        Provider::Stripe => {
            let secret = require_secret(secret)?;
            stripe::verify(delivery, &[secret], now, tolerance)
        }
        Provider::Digistore24 => digistore24::verify(delivery.body, secret),
        Provider::CopeCart => copecart::verify_classic(delivery, require_secret(secret)?),
        Provider::Cope => {
            copecart::verify_cope(delivery, &[require_secret(secret)?], now, tolerance)
        }
        Provider::ThriveCart => thrivecart::verify(delivery.body, require_secret(secret)?),
        Provider::Elopage => elopage::verify(delivery, require_secret(secret)?),
        Provider::Memberspot => memberspot::verify(delivery, require_secret(secret)?),
        Provider::PaypalIpn => Err(VerifyError::PostbackRequired),
    }
}

/// Normalise a (verified) delivery into events. Usually one event; unknown
/// event names give one [`EventKind::Unknown`] event so they can be stored.
pub fn normalize(provider: Provider, delivery: &Delivery<'_>) -> Result<Vec<Event>, ParseError> {
    let body = delivery.body;
    let event = match provider {
        Provider::Stripe => stripe::normalize(body)?,
        Provider::Digistore24 => digistore24::normalize(body),
        Provider::CopeCart => copecart::normalize_classic(body)?,
        Provider::Cope => copecart::normalize_cope(body)?,
        Provider::ThriveCart => thrivecart::normalize(body),
        Provider::Elopage => elopage::normalize(body),
        Provider::PaypalIpn => paypal::normalize(body),
        Provider::Memberspot => memberspot::normalize(body)?,
    };
    Ok(vec![event])
}

/// The body as it may be kept and shown: a secret the provider sends inside the body
/// (ThriveCart's secret word) is replaced; every other byte is unchanged.
pub fn redact_body(provider: Provider, body: &[u8]) -> Vec<u8> {
    match provider {
        Provider::ThriveCart => thrivecart::redact(body),
        _ => body.to_vec(),
    }
}

/// The success answer each provider expects: `(status, content type, body)`.
pub fn success_response(provider: Provider) -> (u16, &'static str, &'static str) {
    const JSON_OK: (u16, &str, &str) = (200, "application/json", "{\"received\":true}");
    match provider {
        // Digistore24 needs a body *starting* with OK; extra lines would end up
        // in the buyer's e-mail, so just OK.
        Provider::Digistore24 => (200, "text/plain; charset=utf-8", "OK"),
        // CopeCart classic requires exactly `OK`, not JSON.
        Provider::CopeCart => (200, "text/plain; charset=utf-8", "OK"),
        // PayPal IPN: 200 with an empty body.
        Provider::PaypalIpn => (200, "text/plain; charset=utf-8", ""),
        Provider::Stripe
        | Provider::Cope
        | Provider::ThriveCart
        | Provider::Elopage
        | Provider::Memberspot => JSON_OK,
    }
}

/// Fail closed on a missing or empty secret.
fn require_secret(secret: Option<&str>) -> Result<&str, VerifyError> {
    secret
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::NoSecretConfigured)
}

/// Constant-time equality of two byte strings (length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Shared check for URL-token providers (elopage, Memberspot).
fn verify_path_token(delivery: &Delivery<'_>, expected: &str) -> Result<(), VerifyError> {
    let token = delivery
        .path_secret
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(VerifyError::TokenMissing)?;
    if ct_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::TokenMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
        }
        assert!("nope".parse::<Provider>().is_err());
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let headers = vec![("stripe-signature".to_owned(), "x".to_owned())];
        let d = Delivery {
            headers: &headers,
            body: b"",
            path_secret: None,
        };
        assert_eq!(d.header("Stripe-Signature"), Some("x"));
    }

    #[test]
    fn fails_closed_without_secret() {
        let d = Delivery {
            headers: &[],
            body: b"{}",
            path_secret: Some("t"),
        };
        for p in [
            Provider::Stripe,
            Provider::CopeCart,
            Provider::Cope,
            Provider::ThriveCart,
            Provider::Elopage,
            Provider::Memberspot,
        ] {
            for s in [None, Some("")] {
                assert_eq!(
                    verify(p, &d, s, Utc::now(), DEFAULT_TOLERANCE),
                    Err(VerifyError::NoSecretConfigured),
                    "{p}"
                );
            }
        }
        assert_eq!(
            verify(
                Provider::Digistore24,
                &d,
                None,
                Utc::now(),
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoPassphraseConfigured)
        );
    }

    #[test]
    fn success_answers() {
        assert_eq!(success_response(Provider::Digistore24).2, "OK");
        assert_eq!(success_response(Provider::CopeCart).2, "OK");
        assert_eq!(
            success_response(Provider::PaypalIpn),
            (200, "text/plain; charset=utf-8", "")
        );
        assert_eq!(success_response(Provider::Stripe).0, 200);
    }
}
