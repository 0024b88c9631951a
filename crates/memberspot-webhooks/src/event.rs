//! The provider-neutral event every delivery is normalised into.

use serde::{Deserialize, Serialize};

use crate::Provider;
use crate::amount::Amount;

/// What happened, from the point of view of access management.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// First payment of an order (or a one-time purchase): grant.
    Purchase,
    /// Renewal / further rate of an existing order: grant/extend, lifts a suspension.
    RecurringPayment,
    /// Money returned: revoke.
    Refund,
    /// Chargeback / dispute opened: revoke.
    Chargeback,
    /// Rebilling stopped; the paid period usually continues (no immediate
    /// revoke). Stripe's `customer.subscription.deleted` is [`EventKind::EndOfTerm`].
    Cancellation,
    /// End of the paid term (Digistore24 `last_paid_day`, PayPal `subscr_eot`,
    /// Stripe `customer.subscription.deleted`): revoke.
    EndOfTerm,
    /// A rebill failed: suspend (reversible by a later payment).
    PaymentMissed,
    /// A connection test when the URL is set up (Memberspot `auth_test`, Digistore24
    /// `connection_test`): stored and ignored.
    AuthTest,
    /// Any other Memberspot outbound event (name as sent).
    Member {
        /// Event name as Memberspot sent it.
        name: String,
    },
    /// Verified but not relevant (or not understood): store, answer, do nothing.
    Unknown,
}

impl EventKind {
    /// Short stable name for logs and digests.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Purchase => "purchase",
            Self::RecurringPayment => "recurring_payment",
            Self::Refund => "refund",
            Self::Chargeback => "chargeback",
            Self::Cancellation => "cancellation",
            Self::EndOfTerm => "end_of_term",
            Self::PaymentMissed => "payment_missed",
            Self::AuthTest => "auth_test",
            Self::Member { name } => name,
            Self::Unknown => "unknown",
        }
    }
}

/// One normalised event. Strings are as the provider sent them (amounts are
/// not converted: Stripe/ThriveCart send minor units, the others decimals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub provider: Provider,
    pub kind: EventKind,
    /// Globally unique event id where the provider has one (Stripe `evt_…`,
    /// COPE `source#id`).
    pub provider_event_id: Option<String>,
    /// The key access is stored under (see the reference, §0.1).
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub transaction_id: Option<String>,
    pub buyer_email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Decimal as given by the provider.
    pub amount: Option<String>,
    pub currency: Option<String>,
    /// Provider flagged this as test/sandbox traffic.
    pub test: bool,
    /// Provider's event name (`on_payment`, `invoice.paid`, PayPal `txn_type`, …).
    pub raw_event_name: String,
    /// Provider's own event/transaction time, as given (no timezone conversion).
    pub occurred_at: Option<String>,
    /// Date until which access should continue, where the provider says so
    /// (CopeCart `is_cancelled_for`).
    pub access_until: Option<String>,
    /// Extra idempotency component for events that carry no transaction of
    /// their own (e.g. Digistore24 `on_payment_missed` repeats the original
    /// payment's `transaction_id`): a hash of the raw body, so two different
    /// notifications for the same order never collapse into one.
    pub dedupe_extra: Option<String>,
}

impl Event {
    /// Empty event of `provider`, to be filled by the provider modules.
    pub fn new(provider: Provider, kind: EventKind, raw_event_name: impl Into<String>) -> Self {
        Self {
            provider,
            kind,
            provider_event_id: None,
            order_id: None,
            product_id: None,
            transaction_id: None,
            buyer_email: None,
            first_name: None,
            last_name: None,
            amount: None,
            currency: None,
            test: false,
            raw_event_name: raw_event_name.into(),
            occurred_at: None,
            access_until: None,
            dedupe_extra: None,
        }
    }

    /// The amount in minor units (cents). Stripe and ThriveCart send minor units already;
    /// the others send decimals (`47.00`, also `47,00` or `47`). `None` when absent or
    /// unreadable.
    pub fn amount_minor(&self) -> Option<i64> {
        let raw = self.amount.as_deref()?.trim();
        match self.provider {
            Provider::Stripe | Provider::ThriveCart => raw.parse::<i64>().ok(),
            _ => decimal_to_minor(raw),
        }
    }

    /// The amount in the currency's units, exactly (Stripe and ThriveCart send minor
    /// units, converted with the currency's exponent; the others send decimals). `None`
    /// when absent or unreadable.
    pub fn amount_value(&self) -> Option<Amount> {
        let raw = self.amount.as_deref()?.trim();
        match self.provider {
            Provider::Stripe | Provider::ThriveCart => raw
                .parse::<i64>()
                .ok()
                .map(|minor| Amount::from_minor(minor, self.currency.as_deref())),
            _ => Amount::parse_lenient(raw).ok(),
        }
    }

    /// Key for the UNIQUE constraint that makes redeliveries harmless: the
    /// provider event id when present, else
    /// `provider:order:event:transaction[:extra]` (transaction falls back to
    /// the provider's event time; `extra` is [`Event::dedupe_extra`]).
    pub fn idempotency_key(&self) -> String {
        if let Some(id) = &self.provider_event_id {
            return id.clone();
        }
        let tx = self
            .transaction_id
            .as_deref()
            .or(self.occurred_at.as_deref())
            .unwrap_or("");
        let mut key = format!(
            "{}:{}:{}:{}",
            self.provider.as_str(),
            self.order_id.as_deref().unwrap_or(""),
            self.raw_event_name,
            tx
        );
        if let Some(extra) = &self.dedupe_extra {
            key.push(':');
            key.push_str(extra);
        }
        key
    }
}

/// `"47.5"` → 4750; `"-3,20"` → -320; more than two decimals are cut, not rounded.
fn decimal_to_minor(raw: &str) -> Option<i64> {
    let (neg, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (whole, frac) = match digits.split_once(['.', ',']) {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut cents = String::from(frac);
    if !cents.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    cents.truncate(2);
    while cents.len() < 2 {
        cents.push('0');
    }
    let v = whole
        .checked_mul(100)?
        .checked_add(cents.parse::<i64>().ok()?)?;
    Some(if neg { -v } else { v })
}

/// Short hex SHA-256 of the raw body (for [`Event::dedupe_extra`]).
pub(crate) fn body_digest(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    hex::encode(&digest[..16])
}

/// Split a single "full name" into first name and the rest (Stripe only has
/// one name field). Heuristic: first whitespace-separated word is the first name.
pub(crate) fn split_name(full: &str) -> (Option<String>, Option<String>) {
    let full = full.trim();
    if full.is_empty() {
        return (None, None);
    }
    match full.split_once(char::is_whitespace) {
        Some((first, rest)) => (Some(first.to_owned()), Some(rest.trim().to_owned())),
        None => (Some(full.to_owned()), None),
    }
}

/// JSON helpers shared by the JSON providers.
pub(crate) mod json {
    use serde_json::Value;

    use crate::ParseError;

    pub(crate) fn parse_object(body: &[u8]) -> Result<Value, ParseError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(ParseError::Json("top-level value is not an object".into()))
        }
    }

    /// Value at a `/`-free path of object keys and array indices.
    pub(crate) fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
        path.iter()
            .try_fold(v, |cur, seg| match seg.parse::<usize>() {
                Ok(i) if cur.is_array() => cur.get(i),
                _ => cur.get(*seg),
            })
    }

    /// String form of a scalar (numbers/bools as JSON text); empty and null are `None`.
    pub(crate) fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub(crate) fn str_at(v: &Value, path: &[&str]) -> Option<String> {
        at(v, path).and_then(scalar)
    }

    /// First present value among several paths.
    pub(crate) fn first(v: &Value, paths: &[&[&str]]) -> Option<String> {
        paths.iter().find_map(|p| str_at(v, p))
    }

    /// Truthy: `true`, `"true"`, `1`, `"1"`, `"yes"`.
    pub(crate) fn truthy(v: Option<&Value>) -> bool {
        match v {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "yes"),
            _ => false,
        }
    }

    /// Depth-first search for the first scalar under any of `keys`.
    pub(crate) fn find_key(v: &Value, keys: &[&str]) -> Option<String> {
        match v {
            Value::Object(map) => {
                for k in keys {
                    if let Some(s) = map.get(*k).and_then(scalar) {
                        return Some(s);
                    }
                }
                map.values().find_map(|child| find_key(child, keys))
            }
            Value::Array(items) => items.iter().find_map(|child| find_key(child, keys)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod amount_tests {
    use super::*;

    #[test]
    fn amounts_in_minor_units() {
        let mut e = Event::new(Provider::Digistore24, EventKind::Purchase, "on_payment");
        for (raw, want) in [
            ("47.00", Some(4700)),
            ("47,5", Some(4750)),
            ("47", Some(4700)),
            ("-3.20", Some(-320)),
            ("0.999", Some(99)),
            ("x", None),
            ("", None),
        ] {
            e.amount = Some(raw.into());
            assert_eq!(e.amount_minor(), want, "{raw}");
        }
        let mut s = Event::new(Provider::Stripe, EventKind::Purchase, "invoice.paid");
        s.amount = Some("4900".into());
        assert_eq!(s.amount_minor(), Some(4900));
    }
}
