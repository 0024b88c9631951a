//! Stripe: `Stripe-Signature: t=…,v1=…` over `t.body`, HMAC-SHA256, lowercase hex.
//!
//! Behaviour mirrors the official libraries (reference §1.3): any `v1` may
//! match, `v0` is ignored, hex compared exactly (uppercase rejected), and the
//! timestamp check is age-only (`now - t > tolerance` rejects; future passes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::{json, split_name};
use crate::{Delivery, Event, EventKind, ParseError, Provider, VerifyError, ct_eq};

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Parsed signature header.
struct Header<'h> {
    timestamp: i64,
    v1: Vec<&'h str>,
}

fn parse_header(value: &str) -> Result<Header<'_>, VerifyError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for element in value.split(',') {
        let Some((key, val)) = element.split_once('=') else {
            continue;
        };
        match key.trim() {
            // Official libraries take the first `t`.
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    val.trim()
                        .parse::<i64>()
                        .map_err(|_| VerifyError::MalformedHeader)?,
                );
            }
            "v1" => v1.push(val.trim()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedHeader)?;
    Ok(Header { timestamp, v1 })
}

/// Lowercase hex HMAC-SHA256 of `t.body`, keyed with the whole secret string.
pub fn compute_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_for(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn hmac_for(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    }
}

/// Verify against one or more endpoint secrets (several during a secret roll).
pub fn verify(
    delivery: &Delivery<'_>,
    secrets: &[&str],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    verify_header(
        delivery.header(SIGNATURE_HEADER).unwrap_or(""),
        delivery.body,
        &secrets,
        now,
        tolerance,
    )
}

/// Verify a raw header value (empty = missing).
pub fn verify_header(
    header: &str,
    body: &[u8],
    secrets: &[&str],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    if header.trim().is_empty() {
        return Err(VerifyError::MissingHeader);
    }
    let parsed = parse_header(header)?;
    if parsed.v1.is_empty() {
        return Err(VerifyError::NoV1Signature);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = compute_signature(secret, parsed.timestamp, body);
        // Evaluate every candidate (no early exit on the comparison itself).
        parsed.v1.iter().fold(false, |acc, sig| {
            acc | ct_eq(expected.as_bytes(), sig.as_bytes())
        })
    });
    if !matched {
        return Err(VerifyError::SignatureMismatch);
    }
    if !tolerance.is_zero() {
        let age = now.timestamp().saturating_sub(parsed.timestamp);
        let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        if age > limit {
            return Err(VerifyError::TimestampOutsideTolerance);
        }
    }
    Ok(())
}

/// Map a Stripe event (reference §1.2, §1.4).
pub fn normalize(body: &[u8]) -> Result<Event, ParseError> {
    let v = json::parse_object(body)?;
    let ty = json::str_at(&v, &["type"]).ok_or(ParseError::MissingField("type"))?;
    let obj = json::at(&v, &["data", "object"])
        .cloned()
        .unwrap_or_default();
    let paid = matches!(
        json::str_at(&obj, &["payment_status"]).as_deref(),
        Some("paid" | "no_payment_required")
    );
    let kind = match ty.as_str() {
        // Delayed methods (SEPA) complete unpaid; wait for async_payment_succeeded.
        "checkout.session.completed" if paid => EventKind::Purchase,
        "checkout.session.async_payment_succeeded" | "payment_intent.succeeded" => {
            EventKind::Purchase
        }
        "invoice.paid" | "invoice.payment_succeeded" => EventKind::RecurringPayment,
        "invoice.payment_failed" => EventKind::PaymentMissed,
        // A partial refund (a goodwill credit) leaves the purchase standing: `refunded`
        // turns true only once the whole amount is back. Stored for a person to judge.
        "charge.refunded" if obj.get("refunded") == Some(&serde_json::Value::Bool(false)) => {
            EventKind::Unknown
        }
        "charge.refunded" | "refund.created" => EventKind::Refund,
        "charge.dispute.created" => EventKind::Chargeback,
        "customer.subscription.deleted" => EventKind::EndOfTerm,
        _ => EventKind::Unknown,
    };
    let mut e = Event::new(Provider::Stripe, kind, ty);
    e.provider_event_id = json::str_at(&v, &["id"]);
    e.test = !json::truthy(v.get("livemode"));
    e.occurred_at = json::str_at(&v, &["created"]);
    let object_type = json::str_at(&obj, &["object"]).unwrap_or_default();
    e.transaction_id = json::str_at(&obj, &["id"]);
    e.order_id = match object_type.as_str() {
        "checkout.session" => json::first(&obj, &[&["subscription"], &["payment_intent"], &["id"]]),
        "invoice" => json::first(
            &obj,
            &[
                &["parent", "subscription_details", "subscription"],
                &["subscription"],
                &["id"],
            ],
        ),
        "subscription" | "payment_intent" => json::str_at(&obj, &["id"]),
        _ => json::first(&obj, &[&["payment_intent"], &["id"]]),
    };
    e.product_id = json::first(
        &obj,
        &[
            &["metadata", "memberspot_offer_id"],
            &["lines", "data", "0", "pricing", "price_details", "product"],
            &["lines", "data", "0", "price", "product"],
        ],
    );
    e.buyer_email = json::first(
        &obj,
        &[
            &["customer_details", "email"],
            &["customer_email"],
            &["billing_details", "email"],
            &["receipt_email"],
        ],
    );
    if let Some(name) = json::first(
        &obj,
        &[
            &["customer_details", "name"],
            &["customer_name"],
            &["billing_details", "name"],
        ],
    ) {
        (e.first_name, e.last_name) = split_name(&name);
    }
    e.amount = json::first(
        &obj,
        &[
            &["amount_total"],
            &["amount_paid"],
            &["amount_refunded"],
            &["amount"],
        ],
    );
    e.currency = json::str_at(&obj, &["currency"]);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = b"{\"id\":\"evt_1\"}";

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    fn header(t: i64) -> String {
        format!("t={t},v1={}", compute_signature(SECRET, t, BODY))
    }

    fn check(h: &str, now: i64, tol: u64) -> Result<(), VerifyError> {
        verify_header(h, BODY, &[SECRET], at(now), Duration::from_secs(tol))
    }

    #[test]
    fn tolerance_boundaries() {
        let h = header(1000);
        assert_eq!(check(&h, 1300, 300), Ok(()));
        assert_eq!(
            check(&h, 1301, 300),
            Err(VerifyError::TimestampOutsideTolerance)
        );
        // Age-only check, as in the official libraries.
        assert_eq!(check(&h, 0, 300), Ok(()));
        assert_eq!(check(&h, 1_000_000, 0), Ok(()));
    }

    #[test]
    fn header_errors() {
        assert_eq!(check("", 1000, 300), Err(VerifyError::MissingHeader));
        assert_eq!(check("   ", 1000, 300), Err(VerifyError::MissingHeader));
        assert_eq!(
            check("t=abc,v1=00", 1000, 300),
            Err(VerifyError::MalformedHeader)
        );
        assert_eq!(check("v1=00", 1000, 300), Err(VerifyError::MalformedHeader));
        assert_eq!(check("t=1000", 1000, 300), Err(VerifyError::NoV1Signature));
        assert_eq!(
            check("t=1000,v1=", 1000, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn any_of_several_secrets() {
        let h = header(1000);
        assert_eq!(
            verify_header(
                &h,
                BODY,
                &["whsec_old", SECRET],
                at(1000),
                Duration::from_secs(300)
            ),
            Ok(())
        );
        let d = Delivery {
            headers: &[],
            body: BODY,
            path_secret: None,
        };
        assert_eq!(
            verify(&d, &[], at(1000), Duration::from_secs(300)),
            Err(VerifyError::NoSecretConfigured)
        );
        assert_eq!(
            verify(&d, &[SECRET], at(1000), Duration::from_secs(300)),
            Err(VerifyError::MissingHeader)
        );
    }

    #[test]
    fn unpaid_checkout_is_not_a_purchase() {
        let body = br#"{"id":"evt_2","type":"checkout.session.completed","livemode":true,
            "data":{"object":{"object":"checkout.session","id":"cs_1","payment_status":"unpaid"}}}"#;
        let e = normalize(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.kind, EventKind::Unknown);
        assert!(!e.test);
        assert_eq!(e.order_id.as_deref(), Some("cs_1"));
    }

    #[test]
    fn a_partial_refund_does_not_end_the_purchase() {
        let refund = |refunded: bool, amount_refunded: u64| {
            let body = format!(
                r#"{{"id":"evt_r","type":"charge.refunded","livemode":false,"data":{{"object":{{"object":"charge","id":"ch_1","payment_intent":"pi_1","amount":4900,"amount_refunded":{amount_refunded},"refunded":{refunded}}}}}}}"#
            );
            normalize(body.as_bytes()).map(|e| e.kind)
        };
        assert_eq!(refund(false, 500), Ok(EventKind::Unknown));
        assert_eq!(refund(true, 4900), Ok(EventKind::Refund));
    }
}
