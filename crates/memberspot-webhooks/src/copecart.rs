//! CopeCart: the classic IPN (`X-Copecart-Signature`, base64 HMAC-SHA256 over
//! the raw body) and COPE, the newer CloudEvents platform
//! (`X-Cope-Signature: t=…,v1=hex` over `t.body`, symmetric ±tolerance).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::event::json;
use crate::{Delivery, Event, EventKind, ParseError, Provider, VerifyError, ct_eq};

pub const CLASSIC_SIGNATURE_HEADER: &str = "X-Copecart-Signature";
pub const COPE_SIGNATURE_HEADER: &str = "X-Cope-Signature";

fn mac(secret: &str) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    }
}

/// Base64 (standard alphabet, padded) HMAC-SHA256 of the raw body.
pub fn classic_signature(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    STANDARD.encode(m.finalize().into_bytes())
}

/// Verify a classic CopeCart IPN. No timestamp: replays verify, dedupe on
/// `transaction_id` + `event_type`.
pub fn verify_classic(delivery: &Delivery<'_>, secret: &str) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    let header = delivery
        .header(CLASSIC_SIGNATURE_HEADER)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(VerifyError::MissingHeader)?;
    // CopeCart sends standard padded base64 of 32 bytes (44 chars). A hex
    // digest or the URL-safe alphabet is a sender/proxy bug, reported as such.
    let looks_hex = header.len() == 64 && header.bytes().all(|b| b.is_ascii_hexdigit());
    let decoded = if looks_hex {
        None
    } else {
        STANDARD.decode(header).ok().filter(|d| d.len() == 32)
    };
    let Some(received) = decoded else {
        return Err(VerifyError::EncodingMismatch);
    };
    let mut m = mac(secret);
    m.update(delivery.body);
    m.verify_slice(&received)
        .map_err(|_| VerifyError::SignatureMismatch)
}

/// Lowercase hex HMAC-SHA256 of `t.body` for COPE.
pub fn cope_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Verify a COPE delivery against one or more secrets (rotation overlap).
/// Like the official sample: elements trimmed, hex decoded before comparing
/// (uppercase accepted), window symmetric `|now - t| <= tolerance`
/// (`Duration::ZERO` disables it).
pub fn verify_cope(
    delivery: &Delivery<'_>,
    secrets: &[&str],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    let header = delivery
        .header(COPE_SIGNATURE_HEADER)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(VerifyError::MissingHeader)?;
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for element in header.split(',') {
        if let Some((k, v)) = element.trim().split_once('=') {
            match k.trim() {
                "t" if timestamp.is_none() => {
                    timestamp = Some(
                        v.trim()
                            .parse::<i64>()
                            .map_err(|_| VerifyError::MalformedHeader)?,
                    );
                }
                "v1" => v1.push(v.trim()),
                _ => {}
            }
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedHeader)?;
    if v1.is_empty() {
        return Err(VerifyError::NoV1Signature);
    }
    // Non-hex signatures simply do not match (the sample reports a length mismatch).
    let candidates: Vec<Vec<u8>> = v1.iter().filter_map(|s| hex::decode(s).ok()).collect();
    let matched = secrets.iter().any(|secret| {
        let mut m = mac(secret);
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(delivery.body);
        let expected = m.finalize().into_bytes();
        candidates
            .iter()
            .fold(false, |acc, c| acc | ct_eq(&expected, c))
    });
    if !matched {
        return Err(VerifyError::SignatureMismatch);
    }
    if !tolerance.is_zero() {
        let skew = now.timestamp().saturating_sub(timestamp).unsigned_abs();
        if skew > tolerance.as_secs() {
            return Err(VerifyError::TimestampOutsideTolerance);
        }
    }
    Ok(())
}

/// Map a classic CopeCart IPN (reference §3.1).
pub fn normalize_classic(body: &[u8]) -> Result<Event, ParseError> {
    let v = json::parse_object(body)?;
    let name = json::str_at(&v, &["event_type"]).unwrap_or_default();
    let rate = json::str_at(&v, &["rate_number"]).and_then(|r| r.parse::<u32>().ok());
    let kind = match name.as_str() {
        "payment.made" if rate.is_some_and(|r| r > 1) => EventKind::RecurringPayment,
        "payment.made" | "payment.trial" => EventKind::Purchase,
        "payment.failed" => EventKind::PaymentMissed,
        "payment.refunded" => EventKind::Refund,
        "payment.charged_back" => EventKind::Chargeback,
        "payment.recurring.cancelled" | "subscription.cancelled" => EventKind::Cancellation,
        _ => EventKind::Unknown,
    };
    let mut e = Event::new(Provider::CopeCart, kind, name);
    e.order_id = json::str_at(&v, &["order_id"]);
    e.product_id = json::str_at(&v, &["product_id"]);
    e.transaction_id = json::str_at(&v, &["transaction_id"]);
    e.buyer_email = json::str_at(&v, &["buyer_email"]);
    // Spec spells `buyer_firstname`; tolerate the underscore variant too.
    e.first_name = json::first(&v, &[&["buyer_firstname"], &["buyer_first_name"]]);
    e.last_name = json::first(&v, &[&["buyer_lastname"], &["buyer_last_name"]]);
    e.amount = json::str_at(&v, &["transaction_amount"]);
    e.currency = json::str_at(&v, &["transaction_currency"]);
    let status = json::str_at(&v, &["payment_status"]).unwrap_or_default();
    e.test = json::truthy(v.get("test_payment"))
        || status.starts_with("test_")
        || json::str_at(&v, &["payment_method"]).as_deref() == Some("test");
    e.occurred_at = json::first(&v, &[&["transaction_processed_at"], &["transaction_date"]]);
    e.access_until = json::str_at(&v, &["is_cancelled_for"]);
    if e.transaction_id.is_none() {
        // Cancellations carry no transaction: key on the end date (reference §3.1).
        e.occurred_at = e.access_until.clone().or(e.occurred_at);
    }
    Ok(e)
}

/// Map a COPE CloudEvent (reference §3.2). Event names beyond the captured
/// ones are unconfirmed; refund/dispute names are matched by keyword.
pub fn normalize_cope(body: &[u8]) -> Result<Event, ParseError> {
    let v = json::parse_object(body)?;
    let ty = json::str_at(&v, &["type"]).ok_or(ParseError::MissingField("type"))?;
    let kind = cope_kind(&ty);
    let mut e = Event::new(Provider::Cope, kind, ty);
    let id = json::str_at(&v, &["id"]);
    // Dedupe on source + id (ids are unique per source).
    e.provider_event_id = match (json::str_at(&v, &["source"]), id) {
        (Some(src), Some(id)) => Some(format!("{src}#{id}")),
        (None, Some(id)) => Some(id),
        _ => json::str_at(&v, &["idempotency_key"]),
    };
    e.occurred_at = json::str_at(&v, &["time"]);
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    e.order_id = json::first(
        &data,
        &[&["order", "uuid"], &["order", "id"], &["order_uuid"]],
    );
    e.product_id = json::first(
        &data,
        &[
            &["line_items", "0", "product", "uuid"],
            &["product", "uuid"],
            &["product_id"],
        ],
    );
    e.transaction_id = json::first(&data, &[&["payment", "uuid"], &["transaction", "uuid"]]);
    e.buyer_email = json::first(&data, &[&["buyer", "email"], &["customer", "email"]]);
    e.first_name = json::first(
        &data,
        &[&["buyer", "first_name"], &["customer", "first_name"]],
    );
    e.last_name = json::first(
        &data,
        &[&["buyer", "last_name"], &["customer", "last_name"]],
    );
    e.amount = json::first(
        &data,
        &[&["amount"], &["order", "amount"], &["order", "total"]],
    );
    e.currency = json::first(&data, &[&["currency"], &["order", "currency"]]);
    e.test = json::str_at(&data, &["mode"]).as_deref() == Some("test")
        || json::at(&data, &["livemode"]).is_some_and(|l| l == &Value::Bool(false));
    Ok(e)
}

fn cope_kind(ty: &str) -> EventKind {
    match ty {
        "payment.sale.succeeded" => EventKind::Purchase,
        "subscription.cancelled" => EventKind::Cancellation,
        t if t.contains("refund") => EventKind::Refund,
        t if t.contains("dispute") || t.contains("chargeback") => EventKind::Chargeback,
        t if t.starts_with("subscription.") && t.contains("payment") && t.contains("fail") => {
            EventKind::PaymentMissed
        }
        _ => EventKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SECRET: &str = "whsec_cope";
    const BODY: &[u8] = b"{\"type\":\"x\"}";

    fn cope(h: &str, now: i64) -> Result<(), VerifyError> {
        let headers = vec![("x-cope-signature".to_owned(), h.to_owned())];
        let d = Delivery {
            headers: &headers,
            body: BODY,
            path_secret: None,
        };
        let now = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
        verify_cope(&d, &[SECRET], now, Duration::from_secs(300))
    }

    #[test]
    fn cope_symmetric_window() {
        let h = format!("t=1000,v1={}", cope_signature(SECRET, 1000, BODY));
        assert_eq!(cope(&h, 1300), Ok(()));
        assert_eq!(cope(&h, 700), Ok(()));
        assert_eq!(cope(&h, 1301), Err(VerifyError::TimestampOutsideTolerance));
        assert_eq!(cope(&h, 699), Err(VerifyError::TimestampOutsideTolerance));
        assert_eq!(cope("v1=00", 1000), Err(VerifyError::MalformedHeader));
        assert_eq!(cope("t=1000", 1000), Err(VerifyError::NoV1Signature));
        assert_eq!(cope("", 1000), Err(VerifyError::MissingHeader));
    }

    fn classic(sig: Option<&str>) -> Result<(), VerifyError> {
        let headers: Vec<(String, String)> = sig
            .map(|s| vec![("X-COPECART-SIGNATURE".to_owned(), s.to_owned())])
            .unwrap_or_default();
        let d = Delivery {
            headers: &headers,
            body: BODY,
            path_secret: None,
        };
        verify_classic(&d, SECRET)
    }

    #[test]
    fn classic_encodings() {
        let good = classic_signature(SECRET, BODY);
        assert_eq!(classic(Some(&good)), Ok(()));
        assert_eq!(classic(None), Err(VerifyError::MissingHeader));
        assert_eq!(classic(Some("")), Err(VerifyError::MissingHeader));
        assert_eq!(
            classic(Some("not base64!")),
            Err(VerifyError::EncodingMismatch)
        );
        // Base64 of the wrong length (e.g. SHA-1 sized).
        assert_eq!(
            classic(Some(&STANDARD.encode([0u8; 20]))),
            Err(VerifyError::EncodingMismatch)
        );
        let mut hex_sig = [0u8; 32];
        if let Ok(raw) = STANDARD.decode(&good) {
            hex_sig.copy_from_slice(&raw);
        }
        assert_eq!(
            classic(Some(&hex::encode(hex_sig))),
            Err(VerifyError::EncodingMismatch)
        );
        assert_eq!(
            classic(Some(&STANDARD.encode([0u8; 32]))),
            Err(VerifyError::SignatureMismatch)
        );
    }
}
