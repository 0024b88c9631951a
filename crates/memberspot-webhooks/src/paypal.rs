//! PayPal IPN: authenticity comes from posting the body back to PayPal, which
//! answers `VERIFIED` or `INVALID` (reference §6). This crate builds the
//! post-back body and interprets the answer; the HTTP call is the caller's.
//!
//! Flow: answer the IPN with [`crate::success_response`] (200, empty body),
//! POST [`postback_body`] with content type [`POSTBACK_CONTENT_TYPE`] to
//! [`POSTBACK_URL`] (or [`SANDBOX_POSTBACK_URL`]), then
//! [`interpret_postback_answer`]. After `VERIFIED` still check
//! `receiver_email`, amount/currency and an unseen `txn_id`.

use crate::form::Form;
use crate::{Event, EventKind, Provider, VerifyError};

pub const POSTBACK_URL: &str = "https://ipnpb.paypal.com/cgi-bin/webscr";
pub const SANDBOX_POSTBACK_URL: &str = "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr";
pub const POSTBACK_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// `cmd=_notify-validate&` + the raw body, byte for byte. Never decode and
/// re-encode: values may be windows-1252 (`%F6`), and re-encoding as UTF-8
/// would make PayPal answer `INVALID`.
pub fn postback_body(raw_body: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = b"cmd=_notify-validate&";
    let mut out = Vec::with_capacity(PREFIX.len() + raw_body.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(raw_body);
    out
}

/// Interpret PayPal's answer to the post-back. Non-2xx → retry later;
/// `VERIFIED` → ok; `INVALID` → forged/altered; anything else (maintenance
/// pages) → retry later.
pub fn interpret_postback_answer(status: u16, body: &str) -> Result<(), VerifyError> {
    if !(200..300).contains(&status) {
        return Err(VerifyError::TransportErrorRetryLater);
    }
    match body.trim() {
        "VERIFIED" => Ok(()),
        "INVALID" => Err(VerifyError::PaypalSaysInvalid),
        _ => Err(VerifyError::UnexpectedResponseRetryLater),
    }
}

/// Whom an IPN says the money went to. PayPal answers `VERIFIED` for any genuine message,
/// including one about a payment to somebody else's account sent to our URL (its
/// `notify_url` is chosen by whoever pays): the receiver must be checked against the shop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receiver {
    /// `receiver_email`: the primary e-mail of the account paid.
    pub email: Option<String>,
    /// `business`: the address the buyer paid (may be a secondary address of the account).
    pub business: Option<String>,
    /// `receiver_id`: the merchant account id.
    pub id: Option<String>,
}

/// The receiver fields of an IPN body.
pub fn receiver(body: &[u8]) -> Receiver {
    let f = Form::parse(body, Some("charset"));
    Receiver {
        email: f.non_empty("receiver_email"),
        business: f.non_empty("business"),
        id: f.non_empty("receiver_id"),
    }
}

/// Map an IPN. Values are decoded with the charset named in the `charset`
/// field (often windows-1252).
pub fn normalize(body: &[u8]) -> Event {
    let f = Form::parse(body, Some("charset"));
    let txn_type = f.non_empty("txn_type").unwrap_or_default();
    let status = f.non_empty("payment_status").unwrap_or_default();
    let completed = status == "Completed";
    // Refund/reversal notifications can come without txn_type; the
    // payment_status decides first.
    let kind = match (status.as_str(), txn_type.as_str()) {
        ("Refunded", _) => EventKind::Refund,
        ("Reversed", _) => EventKind::Chargeback,
        (_, "new_case") if f.get("case_type") == Some("chargeback") => EventKind::Chargeback,
        (_, "web_accept" | "cart" | "express_checkout" | "virtual_terminal") if completed => {
            EventKind::Purchase
        }
        (_, "subscr_payment" | "recurring_payment") if completed => EventKind::RecurringPayment,
        (_, "subscr_failed" | "recurring_payment_failed" | "recurring_payment_skipped") => {
            EventKind::PaymentMissed
        }
        (_, "subscr_cancel" | "recurring_payment_profile_cancel") => EventKind::Cancellation,
        (_, "subscr_eot" | "recurring_payment_expired") => EventKind::EndOfTerm,
        _ => EventKind::Unknown,
    };
    let raw_name = if txn_type.is_empty() {
        status.clone()
    } else {
        txn_type
    };
    let mut e = Event::new(Provider::PaypalIpn, kind, raw_name);
    e.transaction_id = f.non_empty("txn_id");
    // Subscriptions key on subscr_id; refunds/reversals link to the original
    // payment via parent_txn_id.
    e.order_id = f
        .first_of(&["subscr_id", "recurring_payment_id", "parent_txn_id"])
        .or_else(|| e.transaction_id.clone());
    e.product_id = f.first_of(&["item_number", "item_number1"]);
    e.buyer_email = f.non_empty("payer_email");
    e.first_name = f.non_empty("first_name");
    e.last_name = f.non_empty("last_name");
    e.amount = f.first_of(&["mc_gross", "amount", "mc_amount3"]);
    e.currency = f.non_empty("mc_currency");
    e.test = f.get("test_ipn") == Some("1");
    e.occurred_at = f.first_of(&["payment_date", "subscr_date", "time_created"]);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postback_answers() {
        assert_eq!(interpret_postback_answer(200, "VERIFIED\n"), Ok(()));
        assert_eq!(
            interpret_postback_answer(200, "INVALID"),
            Err(VerifyError::PaypalSaysInvalid)
        );
        assert_eq!(
            interpret_postback_answer(302, "VERIFIED"),
            Err(VerifyError::TransportErrorRetryLater)
        );
    }

    #[test]
    fn receiver_fields() {
        let r = receiver(b"receiver_email=shop%40example.com&business=sales%40example.com&receiver_id=ABC123&txn_type=web_accept");
        assert_eq!(r.email.as_deref(), Some("shop@example.com"));
        assert_eq!(r.business.as_deref(), Some("sales@example.com"));
        assert_eq!(r.id.as_deref(), Some("ABC123"));
        assert_eq!(receiver(b"txn_type=web_accept"), Receiver::default());
    }

    #[test]
    fn refund_links_to_parent() {
        let e = normalize(b"payment_status=Refunded&txn_id=R1&parent_txn_id=P1&mc_gross=-49.00");
        assert_eq!(e.kind, EventKind::Refund);
        assert_eq!(e.order_id.as_deref(), Some("P1"));
        assert_eq!(e.transaction_id.as_deref(), Some("R1"));
        let e = normalize(b"txn_type=subscr_eot&subscr_id=S-1");
        assert_eq!(e.kind, EventKind::EndOfTerm);
        assert_eq!(e.order_id.as_deref(), Some("S-1"));
    }
}
