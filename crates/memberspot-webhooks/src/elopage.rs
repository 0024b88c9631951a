//! elopage / ablefy: no documented signature; the secret is a long random
//! token in the registered URL path, compared in constant time (reference §5).

use crate::form::Form;
use crate::{Delivery, Event, EventKind, Provider, VerifyError, verify_path_token};

/// Verify the URL token (`Delivery::path_secret`) against the configured token.
pub fn verify(delivery: &Delivery<'_>, token: &str) -> Result<(), VerifyError> {
    if token.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    verify_path_token(delivery, token)
}

/// Map an elopage notification. Refund and cancellation event names are
/// unconfirmed, so they are matched by keyword.
pub fn normalize(body: &[u8]) -> Event {
    let f = Form::parse(body, None);
    let name = f.first_of(&["event", "action"]).unwrap_or_default();
    let kind = match name.as_str() {
        "payment.successful" => EventKind::Purchase,
        "order.subscription.paying" => EventKind::RecurringPayment,
        "chargeback.successful" => EventKind::Chargeback,
        n if n.contains("refund") => EventKind::Refund,
        n if n.contains("chargeback") => EventKind::Chargeback,
        n if n.contains("cancel") => EventKind::Cancellation,
        _ => EventKind::Unknown,
    };
    let mut e = Event::new(Provider::Elopage, kind, name);
    e.order_id = f.non_empty("order_id");
    e.product_id = f.first_of(&["product_id", "product[id]"]);
    e.transaction_id = f.non_empty("id");
    e.buyer_email = f.first_of(&["payer[email]", "email"]);
    e.first_name = f.non_empty("payer[first_name]");
    e.last_name = f.non_empty("payer[last_name]");
    e.amount = f.first_of(&["amount", "product[price]"]);
    e.currency = f.non_empty("currency");
    e.occurred_at = f.first_of(&["success_date", "created_date"]);
    e
}
