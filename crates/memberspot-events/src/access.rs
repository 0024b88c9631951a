//! What an event does to an order's access: a pure function of the order's stored state,
//! the event and its rule.
//!
//! Deciding from stored state (not arrival order) is what makes late and repeated
//! deliveries harmless: once an order has ended (refund, chargeback, end of term) no later
//! purchase re-grants it, while a suspension (missed payment) is lifted by a later payment.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::config::Rule;

/// Order states as stored in `order_access.state`.
pub mod state {
    /// Never granted (or only seen through events that grant nothing).
    pub const NONE: &str = "none";
    pub const ACTIVE: &str = "active";
    /// A payment was missed; access continues until the grace period ends.
    pub const GRACE: &str = "grace";
    /// A payment was missed and the grace period is over: access switched off.
    pub const SUSPENDED: &str = "suspended";
    /// Refunded, charged back or past its term: final.
    pub const ENDED: &str = "ended";
}

/// The parts of an event a decision needs.
#[derive(Debug, Clone, Default)]
pub struct EventFacts {
    pub kind: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub order_id: Option<String>,
    /// Access continues until (provider-given date), for cancellations.
    pub access_until: Option<String>,
}

/// A tool call to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub tool: &'static str,
    pub args: Value,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The order's state afterwards.
    pub state: &'static str,
    /// For the grace period: when the suspension takes effect (epoch ms).
    pub deadline: Option<i64>,
    /// Tool calls, in order.
    pub actions: Vec<Action>,
    /// One line for the event's history.
    pub note: String,
}

impl Decision {
    fn keep(state: &'static str, note: impl Into<String>) -> Decision {
        Decision {
            state,
            deadline: None,
            actions: Vec::new(),
            note: note.into(),
        }
    }
}

/// Decides what `ev` does to an order currently in `current` (its stored email as a
/// fallback for events that carry none).
pub fn decide(
    current: &str,
    stored_email: Option<&str>,
    ev: &EventFacts,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Decision {
    let email = ev.email.as_deref().or(stored_email).map(str::to_owned);
    let order = ev.order_id.clone();
    let kind = ev.kind.as_str();
    let ended = current == state::ENDED;
    match kind {
        "purchase" | "recurring_payment" => {
            if ended {
                return Decision::keep(
                    state::ENDED,
                    "order has ended; a late payment event does not grant access again",
                );
            }
            let Some(email) = email else {
                return Decision::keep(
                    current_static(current),
                    "no buyer e-mail in the event; nothing granted",
                );
            };
            match current {
                state::SUSPENDED => Decision {
                    state: state::ACTIVE,
                    deadline: None,
                    actions: vec![set_order_state(
                        &email,
                        order.as_deref(),
                        "active",
                        &rule.offer,
                    )],
                    note: "payment received: suspension lifted".into(),
                },
                state::GRACE => {
                    Decision::keep(state::ACTIVE, "payment received within the grace period")
                }
                state::ACTIVE if kind == "purchase" => {
                    Decision::keep(state::ACTIVE, "order already has access")
                }
                _ => {
                    let mut actions = Vec::new();
                    if current == state::NONE {
                        actions.push(grant(&email, ev, &rule.offer));
                    }
                    if let Some(days) = rule.access_days {
                        let until = now + Duration::days(i64::from(days));
                        actions.push(Action {
                            tool: "set_offer_expiration",
                            args: json!({
                                "email": email,
                                "offer_id": rule.offer,
                                "expires_at": until.to_rfc3339_opts(SecondsFormat::Secs, true),
                            }),
                        });
                    }
                    let note = match (current, rule.access_days) {
                        (state::NONE, Some(d)) => {
                            format!("granted offer {} for {d} days", rule.offer)
                        }
                        (state::NONE, None) => format!("granted offer {}", rule.offer),
                        (_, Some(d)) => format!("payment received: access extended by {d} days"),
                        _ => "payment received".into(),
                    };
                    Decision {
                        state: state::ACTIVE,
                        deadline: None,
                        actions,
                        note,
                    }
                }
            }
        }
        "refund" | "chargeback" | "end_of_term" => {
            if !rule.revokes(kind) {
                return Decision::keep(
                    current_static(current),
                    format!("rule {} does not revoke on {kind}", rule.index),
                );
            }
            if ended {
                return Decision::keep(state::ENDED, "order had already ended");
            }
            if current == state::NONE {
                return Decision::keep(
                    state::ENDED,
                    format!("{kind} before any grant: order marked ended, nothing to revoke"),
                );
            }
            match email {
                Some(email) => Decision {
                    state: state::ENDED,
                    deadline: None,
                    actions: vec![set_order_state(
                        &email,
                        order.as_deref(),
                        "inactive",
                        &rule.offer,
                    )],
                    note: format!("{kind}: access revoked"),
                },
                None => Decision::keep(
                    state::ENDED,
                    format!("{kind}: order ended (no e-mail known to revoke with)"),
                ),
            }
        }
        "cancellation" => {
            if ended {
                return Decision::keep(state::ENDED, "order had already ended");
            }
            match (&ev.access_until, email) {
                (Some(until), Some(email)) if current != state::NONE => Decision {
                    state: current_static(current),
                    deadline: None,
                    actions: vec![Action {
                        tool: "set_offer_expiration",
                        args: json!({"email": email, "offer_id": rule.offer, "expires_at": until}),
                    }],
                    note: format!("cancelled: access ends {until}"),
                },
                _ => Decision::keep(
                    current_static(current),
                    "cancelled: access continues until the end of the paid term",
                ),
            }
        }
        "payment_missed" => {
            if !rule.subscription {
                return Decision::keep(
                    current_static(current),
                    format!(
                        "rule {} is not a subscription; a missed payment changes nothing",
                        rule.index
                    ),
                );
            }
            if current != state::ACTIVE {
                return Decision::keep(
                    current_static(current),
                    format!("order is {current}; nothing to suspend"),
                );
            }
            if rule.grace_days > 0 {
                let deadline = now + Duration::days(i64::from(rule.grace_days));
                return Decision {
                    state: state::GRACE,
                    deadline: Some(deadline.timestamp_millis()),
                    actions: Vec::new(),
                    note: format!(
                        "payment missed: access suspended on {} unless paid",
                        deadline.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                };
            }
            match email {
                Some(email) => Decision {
                    state: state::SUSPENDED,
                    deadline: None,
                    actions: vec![set_order_state(
                        &email,
                        order.as_deref(),
                        "inactive",
                        &rule.offer,
                    )],
                    note: "payment missed: access suspended".into(),
                },
                None => Decision::keep(
                    current_static(current),
                    "payment missed, but no e-mail known",
                ),
            }
        }
        other => Decision::keep(
            current_static(current),
            format!("`{other}` events change no access"),
        ),
    }
}

/// The action that suspends an order whose grace period is over.
pub fn suspend_after_grace(email: &str, order_id: &str, offer: &str) -> Action {
    set_order_state(email, Some(order_id), "inactive", offer)
}

fn grant(email: &str, ev: &EventFacts, offer: &str) -> Action {
    let mut args = json!({"email": email, "offer_id": offer});
    if let Some(o) = &ev.order_id {
        args["order_id"] = json!(o);
    }
    if let Some(f) = &ev.first_name {
        args["first_name"] = json!(f);
    }
    if let Some(l) = &ev.last_name {
        args["last_name"] = json!(l);
    }
    Action {
        tool: "grant_user_offer_by_email",
        args,
    }
}

/// By order when there is one (switches everything that purchase granted), else by offer.
fn set_order_state(email: &str, order_id: Option<&str>, to: &str, offer: &str) -> Action {
    match order_id {
        Some(o) => Action {
            tool: "set_order_state",
            args: json!({"email": email, "order_id": o, "state": to}),
        },
        None => Action {
            tool: "set_user_offer_state",
            args: json!({"email": email, "offer_id": offer, "state": to}),
        },
    }
}

fn current_static(s: &str) -> &'static str {
    match s {
        state::ACTIVE => state::ACTIVE,
        state::GRACE => state::GRACE,
        state::SUSPENDED => state::SUSPENDED,
        state::ENDED => state::ENDED,
        _ => state::NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            index: 1,
            line: 1,
            source: "ds24".into(),
            product: "p".into(),
            offer: "o1".into(),
            access_days: None,
            subscription: true,
            grace_days: 0,
            revoke_on: vec!["refund".into(), "chargeback".into(), "end_of_term".into()],
            include_test: true,
            currency: None,
            min_amount: None,
        }
    }

    fn ev(kind: &str) -> EventFacts {
        EventFacts {
            kind: kind.into(),
            email: Some("a@b.de".into()),
            order_id: Some("ORD1".into()),
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn purchase_grants_once() {
        let d = decide(state::NONE, None, &ev("purchase"), &rule(), now());
        assert_eq!(d.state, state::ACTIVE);
        assert_eq!(d.actions.len(), 1);
        assert_eq!(d.actions[0].tool, "grant_user_offer_by_email");
        assert_eq!(d.actions[0].args["order_id"], "ORD1");
        let again = decide(state::ACTIVE, None, &ev("purchase"), &rule(), now());
        assert!(again.actions.is_empty());
    }

    #[test]
    fn ended_orders_are_never_regranted() {
        for kind in ["purchase", "recurring_payment"] {
            let d = decide(state::ENDED, None, &ev(kind), &rule(), now());
            assert_eq!(d.state, state::ENDED);
            assert!(d.actions.is_empty(), "{kind}");
        }
    }

    #[test]
    fn refund_revokes_and_refund_first_blocks_the_purchase() {
        let d = decide(state::ACTIVE, None, &ev("refund"), &rule(), now());
        assert_eq!(d.state, state::ENDED);
        assert_eq!(d.actions[0].tool, "set_order_state");
        assert_eq!(d.actions[0].args["state"], "inactive");
        let early = decide(state::NONE, None, &ev("refund"), &rule(), now());
        assert_eq!(early.state, state::ENDED);
        assert!(early.actions.is_empty());
    }

    #[test]
    fn suspension_is_lifted_by_a_later_payment() {
        let d = decide(state::ACTIVE, None, &ev("payment_missed"), &rule(), now());
        assert_eq!(d.state, state::SUSPENDED);
        assert_eq!(d.actions[0].args["state"], "inactive");
        let d = decide(
            state::SUSPENDED,
            None,
            &ev("recurring_payment"),
            &rule(),
            now(),
        );
        assert_eq!(d.state, state::ACTIVE);
        assert_eq!(d.actions[0].args["state"], "active");
    }

    #[test]
    fn grace_period_defers_the_suspension() {
        let mut r = rule();
        r.grace_days = 3;
        let d = decide(state::ACTIVE, None, &ev("payment_missed"), &r, now());
        assert_eq!(d.state, state::GRACE);
        assert!(d.actions.is_empty());
        assert_eq!(
            d.deadline,
            Some((now() + Duration::days(3)).timestamp_millis())
        );
        let paid = decide(state::GRACE, None, &ev("recurring_payment"), &r, now());
        assert_eq!(paid.state, state::ACTIVE);
    }

    #[test]
    fn fixed_term_sets_an_expiration() {
        let mut r = rule();
        r.access_days = Some(30);
        let d = decide(state::NONE, None, &ev("purchase"), &r, now());
        assert_eq!(d.actions[1].tool, "set_offer_expiration");
        assert_eq!(d.actions[1].args["expires_at"], "2026-06-27T20:26:40Z");
    }

    #[test]
    fn cancellation_with_a_date_expires_then() {
        let mut e = ev("cancellation");
        e.access_until = Some("2026-07-01".into());
        let d = decide(state::ACTIVE, None, &e, &rule(), now());
        assert_eq!(d.actions[0].tool, "set_offer_expiration");
        assert_eq!(d.state, state::ACTIVE);
        let d = decide(state::ACTIVE, None, &ev("cancellation"), &rule(), now());
        assert!(d.actions.is_empty());
    }

    #[test]
    fn revoke_on_is_respected_and_stored_email_used() {
        let mut r = rule();
        r.revoke_on = vec!["refund".into()];
        assert!(
            decide(state::ACTIVE, None, &ev("chargeback"), &r, now())
                .actions
                .is_empty()
        );
        let mut e = ev("refund");
        e.email = None;
        let d = decide(state::ACTIVE, Some("stored@x.de"), &e, &r, now());
        assert_eq!(d.actions[0].args["email"], "stored@x.de");
    }

    #[test]
    fn missed_payment_on_one_time_rule_changes_nothing() {
        let mut r = rule();
        r.subscription = false;
        assert!(
            decide(state::ACTIVE, None, &ev("payment_missed"), &r, now())
                .actions
                .is_empty()
        );
    }
}
