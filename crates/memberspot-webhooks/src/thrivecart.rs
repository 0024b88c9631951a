//! ThriveCart: no HMAC; the form field `thrivecart_secret` must equal the
//! account's secret word (constant-time, case-sensitive). The body is not
//! integrity-protected (reference §4).

use crate::event::split_name;
use crate::form::Form;
use crate::{Event, EventKind, Provider, VerifyError, ct_eq};

pub const SECRET_FIELD: &str = "thrivecart_secret";

/// Verify the secret word carried in the form body.
pub fn verify(body: &[u8], secret_word: &str) -> Result<(), VerifyError> {
    if secret_word.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    let form = Form::parse(body, None);
    let received = form
        .get(SECRET_FIELD)
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingSecret)?;
    if ct_eq(received.as_bytes(), secret_word.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::SecretMismatch)
    }
}

/// The form body with the secret word's value replaced by `<redacted>` (URL-encoded),
/// the other fields byte for byte.
pub fn redact(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for (i, pair) in body.split(|b| *b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
        let is_secret = form_urlencoded::parse(key)
            .next()
            .is_some_and(|(k, _)| k == SECRET_FIELD);
        if is_secret {
            out.extend_from_slice(key);
            out.extend_from_slice(b"=%3Credacted%3E");
        } else {
            out.extend_from_slice(pair);
        }
    }
    out
}

/// Map a legacy ThriveCart notification (also tolerates the newer Event
/// Subscription names like `order_created`).
pub fn normalize(body: &[u8]) -> crate::Event {
    let f = Form::parse(body, None);
    let name = f.non_empty("event").unwrap_or_default();
    let kind = match name.as_str() {
        "order.success" | "order_created" => EventKind::Purchase,
        "order.subscription_payment" | "order_rebill" => EventKind::RecurringPayment,
        "order.refund" | "order_refund" | "order_refunded" => EventKind::Refund,
        "order.subscription_cancelled" | "subscription_cancelled" => EventKind::Cancellation,
        "order.rebill_failed" | "order_rebill_failed" => EventKind::PaymentMissed,
        // No dedicated chargeback event is documented [unconfirmed].
        n if n.contains("chargeback") => EventKind::Chargeback,
        _ => EventKind::Unknown,
    };
    let mut e = Event::new(Provider::ThriveCart, kind, name);
    e.order_id = f.non_empty("order_id");
    e.product_id = f.first_of(&["base_product", "product_id"]);
    let date_unix = f.non_empty("date_unix");
    // invoice_id repeats on every rebill of an order; append the event time so
    // each payment gets its own transaction key.
    e.transaction_id = match (f.non_empty("invoice_id"), &date_unix) {
        (Some(inv), Some(t)) => Some(format!("{inv}@{t}")),
        (Some(inv), None) => Some(inv),
        (None, t) => t.clone(),
    };
    e.buyer_email = f.first_of(&["customer[email]", "customer_email", "email"]);
    e.first_name = f.first_of(&["customer[first_name]", "customer[firstname]"]);
    e.last_name = f.first_of(&["customer[last_name]", "customer[lastname]"]);
    if e.first_name.is_none()
        && e.last_name.is_none()
        && let Some(full) = f.non_empty("customer[name]")
    {
        (e.first_name, e.last_name) = split_name(&full);
    }
    e.amount = f.first_of(&["order[total]", "refund[amount]", "amount"]);
    e.currency = f.non_empty("currency");
    e.test = f.get("mode") == Some("test");
    e.occurred_at = f.non_empty("date_iso8601").or_else(|| {
        match (f.non_empty("order_date"), f.non_empty("order_time")) {
            (Some(d), Some(t)) => Some(format!("{d} {t}")),
            (d, _) => d,
        }
    });
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_only_the_secret_word() {
        let body =
            b"event=order.success&thrivecart_secret=MBRSECRETWORD42&customer%5Bemail%5D=a%40b.de";
        let kept = redact(body);
        let text = String::from_utf8(kept.clone()).expect("utf8");
        assert!(!text.contains("MBRSECRETWORD42"), "{text}");
        assert_eq!(
            text,
            "event=order.success&thrivecart_secret=%3Credacted%3E&customer%5Bemail%5D=a%40b.de"
        );
        // What the events are made of is unchanged.
        let (a, b) = (normalize(body), normalize(&kept));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(redact(b"event=x"), b"event=x");
    }
}
