//! Memberspot's own outbound webhooks: authenticated by a token in the URL
//! path; payloads are JSON like `{"event":"auth_test"}`. Other payload shapes
//! are unknown, so fields are searched for tolerantly.

use crate::event::json;
use crate::{Delivery, Event, EventKind, ParseError, Provider, VerifyError, verify_path_token};

/// Verify the URL token (`Delivery::path_secret`).
pub fn verify(delivery: &Delivery<'_>, token: &str) -> Result<(), VerifyError> {
    if token.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    verify_path_token(delivery, token)
}

/// Map a Memberspot payload: `auth_test` → [`EventKind::AuthTest`], any other
/// event name → [`EventKind::Member`].
pub fn normalize(body: &[u8]) -> Result<Event, ParseError> {
    let v = json::parse_object(body)?;
    let name = json::first(&v, &[&["event"], &["type"], &["name"]]).unwrap_or_default();
    let kind = match name.as_str() {
        "auth_test" => EventKind::AuthTest,
        "" => EventKind::Unknown,
        other => EventKind::Member {
            name: other.to_owned(),
        },
    };
    let mut e = Event::new(Provider::Memberspot, kind, name);
    e.provider_event_id = json::first(&v, &[&["eventId"], &["event_id"]]);
    e.buyer_email = json::find_key(&v, &["email", "userEmail", "user_email"]);
    e.first_name = json::find_key(&v, &["firstname", "firstName", "first_name"]);
    e.last_name = json::find_key(&v, &["lastname", "lastName", "last_name"]);
    e.product_id = json::find_key(&v, &["offerId", "offer_id", "courseId", "course_id"]);
    e.order_id = json::find_key(&v, &["orderId", "order_id"]);
    Ok(e)
}
