//! Digistore24: `sha_sign` = uppercase hex SHA-512 over the sorted non-empty
//! `key=value+passphrase` pairs (reference §2.3).
//!
//! We hash the percent-decoded *bytes* exactly as received, so the signature
//! does not depend on any charset interpretation (legacy charsets hash the same
//! bytes Digistore24 hashed). Both key-case conventions are accepted.

use std::collections::BTreeMap;

use sha2::{Digest, Sha512};

use crate::event::body_digest;
use crate::form::{self, Form};
use crate::{Event, EventKind, Provider, VerifyError, ct_eq};

/// Fields that carry the signature and are excluded from hashing.
const SIGNATURE_FIELDS: [&str; 2] = ["sha_sign", "SHASIGN"];

/// Compute the `sha_sign` for decoded parameters (keys/values as bytes).
/// `uppercase_keys` selects the `convert_keys_to_uppercase` convention.
/// Later duplicates of a key win (PHP `$_POST` semantics).
pub fn compute_sha_sign<K, V>(
    params: impl IntoIterator<Item = (K, V)>,
    passphrase: &str,
    uppercase_keys: bool,
) -> String
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    // BTreeMap<Vec<u8>, _> iterates in byte order = PHP SORT_STRING.
    let mut sorted: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in params {
        let k = k.as_ref();
        if SIGNATURE_FIELDS.iter().any(|s| s.as_bytes() == k) {
            continue;
        }
        let key = if uppercase_keys {
            k.to_ascii_uppercase()
        } else {
            k.to_vec()
        };
        sorted.insert(key, v.as_ref().to_vec());
    }
    let mut hasher = Sha512::new();
    for (k, v) in &sorted {
        // Empty values are skipped, key included; "0" is not empty.
        if v.is_empty() {
            continue;
        }
        hasher.update(k);
        hasher.update(b"=");
        hasher.update(v);
        hasher.update(passphrase.as_bytes());
    }
    hex::encode_upper(hasher.finalize())
}

/// Verify decoded parameters (e.g. from a framework that already parsed the
/// form). Prefer [`verify`] with the raw body.
pub fn verify_params<K, V>(
    params: impl IntoIterator<Item = (K, V)>,
    passphrase: Option<&str>,
) -> Result<(), VerifyError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = params
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
        .collect();
    verify_pairs(&pairs, passphrase)
}

/// Verify a raw form body.
pub fn verify(body: &[u8], passphrase: Option<&str>) -> Result<(), VerifyError> {
    verify_pairs(&form::parse_bytes(body), passphrase)
}

fn verify_pairs(pairs: &[(Vec<u8>, Vec<u8>)], passphrase: Option<&str>) -> Result<(), VerifyError> {
    let passphrase = passphrase
        .filter(|p| !p.is_empty())
        .ok_or(VerifyError::NoPassphraseConfigured)?;
    let received = pairs
        .iter()
        .rev()
        .find(|(k, v)| {
            SIGNATURE_FIELDS
                .iter()
                .any(|s| s.as_bytes() == k.as_slice())
                && !v.is_empty()
        })
        .map(|(_, v)| v.trim_ascii().to_ascii_uppercase())
        .ok_or(VerifyError::MissingSignature)?;
    let pairs_iter = || pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
    let original = compute_sha_sign(pairs_iter(), passphrase, false);
    let upper = compute_sha_sign(pairs_iter(), passphrase, true);
    // Evaluate both conventions (live accounts use original case; the PHP
    // reference can uppercase keys).
    let ok = ct_eq(original.as_bytes(), &received) | ct_eq(upper.as_bytes(), &received);
    if ok {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// Map a Digistore24 IPN (reference §2.2, §2.4). Connection tests and
/// unknown events become [`EventKind::Unknown`].
pub fn normalize(body: &[u8]) -> Event {
    let f = Form::parse(body, None);
    let name = f.non_empty("event").unwrap_or_default();
    let first_payment = f
        .non_empty("pay_sequence_no")
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_none_or(|n| n == 0);
    let kind = match name.as_str() {
        "on_payment" if first_payment => EventKind::Purchase,
        "on_payment" => EventKind::RecurringPayment,
        "on_refund" => EventKind::Refund,
        "on_chargeback" => EventKind::Chargeback,
        "on_payment_missed" => EventKind::PaymentMissed,
        "on_rebill_cancelled" => EventKind::Cancellation,
        "last_paid_day" => EventKind::EndOfTerm,
        // Sent when the IPN URL is saved in Digistore24: stored and ignored.
        "connection_test" => EventKind::AuthTest,
        _ => EventKind::Unknown,
    };
    let mut e = Event::new(Provider::Digistore24, kind, name);
    e.order_id = f.non_empty("order_id");
    e.product_id = f.non_empty("product_id");
    e.transaction_id = f.non_empty("transaction_id");
    // Missed/cancel/resume/last-day events repeat the original payment's
    // transaction id and date, so a second such event for the same order
    // would collide; key them on the body as well (reference §2.5).
    if !matches!(
        e.raw_event_name.as_str(),
        "on_payment" | "on_refund" | "on_chargeback"
    ) {
        e.dedupe_extra = Some(body_digest(body));
    }
    e.buyer_email = f.first_of(&["buyer_email", "email", "address_email"]);
    e.first_name = f.first_of(&[
        "buyer_first_name",
        "address_first_name",
        "billing_first_name",
    ]);
    e.last_name = f.first_of(&["buyer_last_name", "address_last_name", "billing_last_name"]);
    e.amount = f.non_empty("amount");
    e.currency = f.non_empty("currency");
    e.test = f.get("api_mode") == Some("test");
    e.occurred_at = match (
        f.non_empty("transaction_date"),
        f.non_empty("transaction_time"),
    ) {
        (Some(d), Some(t)) => Some(format!("{d} {t}")),
        (Some(d), None) => Some(d),
        _ => f.non_empty("order_date_time"),
    };
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "s3cret-passphrase";

    #[test]
    fn worked_example_and_field_names() {
        let sign = compute_sha_sign([("order_id", "ORD-1"), ("product_id", "42")], PASS, false);
        assert_eq!(sign.len(), 128);
        let body = format!("order_id=ORD-1&product_id=42&SHASIGN={sign}");
        assert_eq!(verify(body.as_bytes(), Some(PASS)), Ok(()));
        let body = format!(
            "order_id=ORD-1&product_id=42&sha_sign={}",
            sign.to_lowercase()
        );
        assert_eq!(verify(body.as_bytes(), Some(PASS)), Ok(()));
        assert_eq!(
            verify(b"order_id=ORD-1&sha_sign=", Some(PASS)),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            verify(b"order_id=ORD-1", Some("")),
            Err(VerifyError::NoPassphraseConfigured)
        );
    }

    #[test]
    fn the_connection_test_is_not_an_unknown_event() {
        assert_eq!(
            normalize(b"event=connection_test").kind,
            EventKind::AuthTest
        );
        assert_eq!(
            normalize(b"event=on_something_new").kind,
            EventKind::Unknown
        );
    }

    #[test]
    fn legacy_charset_bytes_are_hashed_as_sent() {
        // `%F6` is latin-1 'ö': the signature covers the byte 0xF6 itself.
        let sign = compute_sha_sign([(&b"name"[..], &b"J\xF6rg"[..])], PASS, false);
        let body = format!("name=J%F6rg&sha_sign={sign}");
        assert_eq!(verify(body.as_bytes(), Some(PASS)), Ok(()));
        let e = normalize(b"event=on_payment&buyer_first_name=J%F6rg");
        assert_eq!(e.first_name.as_deref(), Some("Jörg"));
    }

    #[test]
    fn non_transaction_events_do_not_collide() {
        let a = normalize(b"event=on_payment_missed&order_id=O&transaction_id=1&x=1");
        let b = normalize(b"event=on_payment_missed&order_id=O&transaction_id=1&x=2");
        assert_ne!(a.idempotency_key(), b.idempotency_key());
        let p = normalize(b"event=on_payment&order_id=O&transaction_id=1&x=1");
        let q = normalize(b"event=on_payment&order_id=O&transaction_id=1&x=2");
        assert_eq!(p.idempotency_key(), q.idempotency_key());
    }

    #[test]
    fn duplicate_keys_last_wins_consistently() {
        let sign = compute_sha_sign([("order_id", "B")], PASS, false);
        let body = format!("order_id=A&order_id=B&sha_sign={sign}");
        assert_eq!(verify(body.as_bytes(), Some(PASS)), Ok(()));
        let e = normalize(body.as_bytes());
        assert_eq!(e.order_id.as_deref(), Some("B"));
    }
}
