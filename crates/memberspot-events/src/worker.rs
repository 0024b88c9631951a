//! Queue workers: claim due events, apply the access rules through the tool catalogue,
//! retry with back-off, dead-letter after the last attempt.
//!
//! Exactly-once in effect on top of at-least-once delivery:
//! - the store's unique `dedupe_key` turns redeliveries into counters, never new work;
//! - the events of one order are decided and applied strictly one after another, across
//!   tasks and instances: each attempt locks the order under an owner of its own (never
//!   shared by two tasks of one process), and commits its decision only if the order is
//!   still in the state it was decided from (a compare-and-set, [`OrderFence`]);
//! - leases (the event's and the order's) are renewed while an attempt works; an attempt
//!   that loses its lease stops, and every write it would still make is fenced by it;
//! - every tool call is recorded as `started` before it is made; a step found `started`
//!   after a crash is checked against the school before anything is sent again;
//! - a plan resumed after its order has ended (or been suspended) meanwhile does not give
//!   access back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use memberspot_api::retry::Backoff;
use memberspot_hub::store::{
    EventFinish, EventStatus, OrderAccess, OrderFence, StoredEvent, Verification,
};
use memberspot_hub::{CallContext, HubError, Principal, Surface};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::access::{self, state};
use crate::config::Source;
use crate::postback::Postback;
use crate::service::{Events, facts_of};

/// How often idle workers look for work other instances stored.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Retry delay when another worker holds the event's order.
const ORDER_BUSY_DELAY_MS: i64 = 200;

/// Works the queue until cancelled.
pub async fn run(events: Events, cancel: CancellationToken) {
    let concurrency = events.config().processing.concurrency;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let lease_until = wall_ms() + lease_ms(&events);
        // The lease owner of this claim: a claim of the same events after their lease ran
        // out (by this process or another) has another owner, so the two never both pass
        // the store's fences.
        let owner = attempt_owner(events.worker_id());
        let claimed = events
            .hub()
            .events_store()
            .claim_events(&owner, concurrency as u32, lease_until)
            .await;
        match claimed {
            Ok(batch) if !batch.is_empty() => {
                futures::stream::iter(batch)
                    .for_each_concurrent(concurrency, |e| {
                        let events = events.clone();
                        let owner = owner.clone();
                        async move { process(&events, e, &owner).await }
                    })
                    .await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claiming events failed; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = events.woken() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// `worker#random`: one lease owner per claim.
fn attempt_owner(worker: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{worker}#{}", &random[..12])
}

/// Processes one event claimed under `owner` and records how it ended.
pub async fn process(events: &Events, e: StoredEvent, owner: &str) {
    let store = events.hub().events_store();
    let worker = owner.to_owned();
    match store.start_attempt(&e.id, &worker).await {
        Ok(true) => {}
        Ok(false) => return, // lease lost to another worker
        Err(err) => {
            tracing::warn!(event = %e.id, error = %err, "could not start an attempt");
            return;
        }
    }
    let attempt = e.attempts + 1;
    let lease = LeaseKeeper::start(events, &e.id, &worker);
    let outcome = tokio::select! {
        outcome = handle(events, &e, &worker, &lease) => outcome,
        () = lease.lost() => Handled::LeaseLost,
    };
    drop(lease);
    let finish = match outcome {
        Handled::LeaseLost => {
            // Another worker may already be on it: nothing more is written by this one.
            tracing::warn!(event = %e.id, "lease lost while working; stopped, another worker takes the event up");
            return;
        }
        Handled::Done(note) => EventFinish {
            status: EventStatus::Done,
            error: None,
            next_attempt_at: None,
            detail: note,
            refusal: None,
        },
        Handled::Final(status, note) => EventFinish {
            status,
            error: None,
            next_attempt_at: None,
            detail: note,
            refusal: None,
        },
        Handled::Refused(note) => EventFinish {
            status: EventStatus::RefusedAmount,
            error: None,
            next_attempt_at: None,
            detail: note.clone(),
            refusal: Some(note),
        },
        Handled::Deferred => {
            let due = wall_ms() + ORDER_BUSY_DELAY_MS;
            // Not an attempt: deferring also takes back the count.
            if let Err(err) = store.defer_event(&e.id, &worker, due).await {
                tracing::warn!(event = %e.id, error = %err, "could not defer an event");
            }
            return;
        }
        Handled::Failed { error, retryable } => {
            let max = events.config().processing.max_attempts as i64;
            if retryable && attempt < max {
                let delay = backoff(events, attempt);
                tracing::warn!(event = %e.id, attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "event failed; will retry");
                EventFinish {
                    status: EventStatus::Retry,
                    detail: format!("failed: {error}; retry in {}s", delay.as_secs()),
                    error: Some(error),
                    next_attempt_at: Some(wall_ms() + delay.as_millis() as i64),
                    refusal: None,
                }
            } else {
                let why = if retryable {
                    format!("gave up after {attempt} attempts")
                } else {
                    "not retryable".to_owned()
                };
                tracing::error!(event = %e.id, attempt, error = %error, "event dead-lettered ({why})");
                EventFinish {
                    status: EventStatus::Dead,
                    detail: format!("dead ({why}): {error}"),
                    error: Some(error),
                    next_attempt_at: None,
                    refusal: None,
                }
            }
        }
    };
    match store.finish_event(&e.id, &worker, &finish).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(event = %e.id, "lease lost before finishing; another worker will redo the checks")
        }
        Err(err) => {
            tracing::warn!(event = %e.id, error = %err, "could not record the outcome; the lease will expire and the event is re-checked")
        }
    }
}

/// The product of a Stripe Checkout session that names none, read from Stripe's API when
/// the source has a key (`Ok(None)`: nothing to read, or no key).
async fn stripe_product(
    events: &Events,
    source: &crate::config::Source,
    e: &StoredEvent,
) -> Result<Option<String>, Handled> {
    let (Some(api), None) = (&source.stripe_api, e.product_id.as_deref()) else {
        return Ok(None);
    };
    let Some(session) = e.data["transaction_id"].as_str() else {
        return Ok(None);
    };
    match crate::stripe_lookup::session_product(events.http(), &api.url, &api.key, session).await {
        Ok(p) => Ok(p),
        Err(crate::stripe_lookup::LookupError::Retry(error)) => Err(Handled::Failed {
            error,
            retryable: true,
        }),
        Err(crate::stripe_lookup::LookupError::Refused(error)) => Err(Handled::Failed {
            error,
            retryable: false,
        }),
    }
}

/// Why no rule matched, and what to add so that the next such event (and a replay of this
/// one) is handled.
fn unmatched_note(e: &StoredEvent, product: Option<&str>) -> String {
    let source = &e.source;
    match product.filter(|p| !p.trim().is_empty()) {
        Some(product) if e.provider == "stripe" => format!(
            "no rule for source `{source}` product `{product}`: nothing changed. Add \
             [[rules]] source = \"{source}\" product = \"{product}\" offer = \"OFFER_ID\", or \
             set metadata.memberspot_offer_id to an offer a rule of `{source}` grants, then \
             replay this event"
        ),
        Some(product) => format!(
            "no rule for source `{source}` product `{product}`: nothing changed. Add \
             [[rules]] source = \"{source}\" product = \"{product}\" offer = \"OFFER_ID\" \
             (or product = \"*\"), then replay this event"
        ),
        None if e.provider == "stripe" => format!(
            "no rule for source `{source}`: the event names no product (Stripe Checkout \
             sessions and Payment Links carry no line items). Set metadata.memberspot_offer_id \
             on the Payment Link or Checkout Session to the Memberspot offer id (a rule of \
             `{source}` must grant that offer), or add a rule with product = \"*\"; then \
             replay this event"
        ),
        None => format!(
            "no rule for source `{source}`: the event names no product. Add a rule with \
             product = \"*\" for this source, then replay this event"
        ),
    }
}

enum Handled {
    Done(String),
    Final(EventStatus, String),
    /// The rule refuses the payment (currency, minimum amount): nothing granted.
    Refused(String),
    /// Try again shortly (the order is busy, or moved on while this attempt decided).
    Deferred,
    Failed {
        error: String,
        retryable: bool,
    },
    /// The attempt's lease is gone: stop without writing anything more.
    LeaseLost,
}

/// Keeps an attempt's leases (the event's and, once taken, its order's) alive while it
/// works, and says when they were lost.
struct LeaseKeeper {
    lost: CancellationToken,
    order: std::sync::Arc<std::sync::Mutex<Option<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    fn start(events: &Events, event_id: &str, owner: &str) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let order = std::sync::Arc::new(std::sync::Mutex::new(None::<(String, String, String)>));
        let task = tokio::spawn({
            let (events, event_id, owner) = (events.clone(), event_id.to_owned(), owner.to_owned());
            let (lost, order) = (lost.clone(), order.clone());
            async move {
                let lease = lease_ms(&events);
                let every = Duration::from_millis((lease / 3).max(100) as u64);
                let mut valid_until = wall_ms() + lease;
                loop {
                    tokio::time::sleep(every).await;
                    let held = order.lock().ok().and_then(|o| o.clone());
                    let renewed = events
                        .hub()
                        .events_store()
                        .renew_lease(
                            &event_id,
                            &owner,
                            held.as_ref()
                                .map(|(s, o, w)| (s.as_str(), o.as_str(), w.as_str())),
                            wall_ms() + lease,
                        )
                        .await;
                    match renewed {
                        Ok(true) => valid_until = wall_ms() + lease,
                        Ok(false) => break,
                        // The store is unreachable: keep trying while the lease still holds.
                        Err(err) if wall_ms() < valid_until - every.as_millis() as i64 => {
                            tracing::warn!(event = %event_id, error = %err, "could not renew a lease; retrying");
                        }
                        Err(_) => break,
                    }
                }
                lost.cancel();
            }
        });
        LeaseKeeper { lost, order, task }
    }

    /// Renews the order's lock too from now on.
    fn hold_order(&self, source: &str, order_id: &str, owner: &str) {
        if let Ok(mut o) = self.order.lock() {
            *o = Some((source.to_owned(), order_id.to_owned(), owner.to_owned()));
        }
    }

    fn release_order(&self) {
        if let Ok(mut o) = self.order.lock() {
            *o = None;
        }
    }

    async fn lost(&self) {
        self.lost.cancelled().await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(events: &Events, e: &StoredEvent, worker: &str, lease: &LeaseKeeper) -> Handled {
    let source = match source_of(events, e) {
        Ok(s) => s,
        Err((status, note)) => return Handled::Final(status, note),
    };
    if let Some(h) = check_postback(events, e, &source).await {
        return h;
    }
    if let Some((status, note)) = inadmissible(e, &source) {
        return Handled::Final(status, note);
    }
    let product = match stripe_product(events, &source, e).await {
        Ok(p) => p.or_else(|| e.product_id.clone()),
        Err(handled) => return handled,
    };
    let rule = match judge(events, e, product.as_deref()).await {
        Ok(Verdict::Rule(rule)) => rule,
        Ok(Verdict::Final(status, note)) => return Handled::Final(status, note),
        Ok(Verdict::Refused(why)) => {
            tracing::warn!(event = %e.id, source = %e.source, reason = %why, "payment refused by its rule");
            return Handled::Refused(why);
        }
        Err(err) => return failed_store(err),
    };
    let facts = facts_of(e);
    let order_key = order_key(e);
    let store = events.hub().events_store();
    let lease_until = wall_ms() + lease_ms(events);
    // The lock belongs to this attempt alone: another task of this process working on an
    // event of the same order does not hold it.
    let order_owner = format!("{worker}/{}", e.id);
    match store
        .lock_order(&e.source, &order_key, &order_owner, lease_until)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Handled::Deferred,
        Err(err) => return failed_store(err),
    }
    lease.hold_order(&e.source, &order_key, &order_owner);
    let attempt = Attempt {
        event_owner: worker,
        order_owner: &order_owner,
        order_key: &order_key,
    };
    let result = decide_and_act(events, e, &source, &rule, &facts, &attempt).await;
    lease.release_order();
    if let Err(err) = store
        .unlock_order(&e.source, &order_key, &order_owner)
        .await
    {
        tracing::warn!(error = %err, "could not unlock an order; its lease will expire");
    }
    result
}

/// The source an event arrived through, or why it can no longer be handled.
pub(crate) fn source_of(events: &Events, e: &StoredEvent) -> Result<Source, (EventStatus, String)> {
    events
        .config()
        .sources
        .get(&e.source)
        .cloned()
        .ok_or_else(|| {
            (
                EventStatus::Unmatched,
                format!("source `{}` is no longer configured", e.source),
            )
        })
}

/// Why the event may not be acted on at all (never verified, or received for another
/// school than its source acts on now), if so.
pub(crate) fn inadmissible(e: &StoredEvent, source: &Source) -> Option<(EventStatus, String)> {
    if !e.verified {
        return Some((
            EventStatus::Rejected,
            "the event's authenticity was never established; nothing changed".into(),
        ));
    }
    // An event belongs to the school its source acted on when it arrived: a source moved
    // to another connection since never carries old events over.
    let conn = e
        .connection
        .as_deref()
        .filter(|c| *c != source.connection())?;
    Some((
        EventStatus::Unmatched,
        format!(
            "received for connection `{conn}`, but source `{}` now acts on `{}`: nothing changed",
            source.name,
            source.connection()
        ),
    ))
}

/// What the rules make of an admissible event (its product already looked up) before its
/// order is touched. The workers and [`Events::preview`] both decide through this.
pub(crate) enum Verdict {
    /// Nothing to do: unmatched, or an ignored test event.
    Final(EventStatus, String),
    /// The rule refuses the payment (currency, minimum amount).
    Refused(String),
    /// This rule decides the event.
    Rule(crate::config::Rule),
}

pub(crate) async fn judge(
    events: &Events,
    e: &StoredEvent,
    product: Option<&str>,
) -> Result<Verdict, memberspot_store::StoreError> {
    let rule = match events
        .config()
        .rule_for_event(&e.source, &e.provider, product)
    {
        Some(r) => Some(r.clone()),
        None => match rule_via_order(events, e).await? {
            Some(r) => Some(r),
            None => rule_ending_unknown_order(events, e).await?,
        },
    };
    let Some(rule) = rule else {
        return Ok(Verdict::Final(
            EventStatus::Unmatched,
            unmatched_note(e, product),
        ));
    };
    if e.test && !rule.include_test {
        return Ok(Verdict::Final(
            EventStatus::Ignored,
            format!("test event; rule {} has include_test = false", rule.index),
        ));
    }
    if let Some(why) = payment_refusal(e, &rule) {
        return Ok(Verdict::Refused(why));
    }
    Ok(Verdict::Rule(rule))
}

/// The key an event's order is locked and stored under: events without an order get one
/// of their own, so the decision logic is one.
pub(crate) fn order_key(e: &StoredEvent) -> String {
    e.order_id
        .clone()
        .unwrap_or_else(|| format!("event:{}", e.id))
}

/// Who an attempt is, for the store's fences.
struct Attempt<'a> {
    event_owner: &'a str,
    order_owner: &'a str,
    order_key: &'a str,
}

/// Why `rule` refuses this payment event (another currency, below the minimum), if it does.
fn payment_refusal(e: &StoredEvent, rule: &crate::config::Rule) -> Option<String> {
    if !matches!(e.kind.as_str(), "purchase" | "recurring_payment")
        || (rule.currency.is_none() && rule.min_amount.is_none())
    {
        return None;
    }
    let event: Option<memberspot_webhooks::Event> = serde_json::from_value(e.data.clone()).ok();
    let amount = event
        .as_ref()
        .and_then(memberspot_webhooks::Event::amount_value);
    let currency = event.as_ref().and_then(|ev| ev.currency.as_deref());
    rule.refuses_payment(amount, currency)
}

/// The rule of the offer this event's order was granted under, if the order is known.
async fn rule_via_order(
    events: &Events,
    e: &StoredEvent,
) -> Result<Option<crate::config::Rule>, memberspot_store::StoreError> {
    let Some(order) = &e.order_id else {
        return Ok(None);
    };
    let stored = events
        .hub()
        .events_store()
        .get_order(&e.source, order)
        .await?;
    Ok(stored
        .and_then(|o| o.offer_id)
        .and_then(|offer| events.config().rule_for_offer(&e.source, &offer).cloned()))
}

/// A refund or chargeback that names no product, for an order not seen yet (Stripe's
/// `charge.refunded` arriving before its purchase): decided under the source's first rule
/// that revokes on it, which marks the order ended, so the late purchase grants nothing.
async fn rule_ending_unknown_order(
    events: &Events,
    e: &StoredEvent,
) -> Result<Option<crate::config::Rule>, memberspot_store::StoreError> {
    let Some(order) = &e.order_id else {
        return Ok(None);
    };
    let ending = events
        .config()
        .rules
        .iter()
        .find(|r| r.source == e.source && r.revokes(&e.kind));
    let Some(rule) = ending else {
        return Ok(None);
    };
    let known = events
        .hub()
        .events_store()
        .get_order(&e.source, order)
        .await?;
    Ok(known.is_none().then(|| rule.clone()))
}

async fn decide_and_act(
    events: &Events,
    e: &StoredEvent,
    source: &Source,
    rule: &crate::config::Rule,
    facts: &access::EventFacts,
    attempt: &Attempt<'_>,
) -> Handled {
    let order_key = attempt.order_key;
    let store = events.hub().events_store();
    let planned = match store.event_actions(&e.id).await {
        Ok(p) => p,
        Err(err) => return failed_store(err),
    };
    let current = match store.get_order(&e.source, order_key).await {
        Ok(o) => o,
        Err(err) => return failed_store(err),
    };
    // Decide once; later attempts resume the committed plan.
    let (steps, note) = if planned.is_empty() {
        let (state_now, stored_email) = current
            .as_ref()
            .map_or((state::NONE.to_owned(), None), |o| {
                (o.state.clone(), o.email.clone())
            });
        let decision = access::decide(
            &state_now,
            stored_email.as_deref(),
            facts,
            rule,
            events.now(),
        );
        let order = OrderAccess {
            source: e.source.clone(),
            order_id: order_key.to_owned(),
            state: decision.state.to_owned(),
            offer_id: Some(rule.offer.clone()),
            email: facts.email.clone().or(stored_email),
            reason: Some(e.kind.clone()),
            paid_until: decision.deadline,
            updated_at: ms(events.now()),
        };
        // The order's new state and the calls that carry it out, atomically: a late
        // purchase processed while this event retries already sees the order as ended.
        // Applied only if the order is still as read and both leases still hold.
        let plan: Vec<(&str, &Value)> =
            decision.actions.iter().map(|a| (a.tool, &a.args)).collect();
        let fence = OrderFence {
            event_owner: attempt.event_owner,
            order_owner: attempt.order_owner,
            prior_state: &state_now,
        };
        match store.commit_decision(&order, &fence, &e.id, &plan).await {
            Ok(true) => {}
            Ok(false) => return Handled::Deferred,
            Err(err) => return failed_store(err),
        }
        let steps = decision
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    i as i64,
                    a.tool.to_owned(),
                    a.args.clone(),
                    "planned".to_owned(),
                )
            })
            .collect::<Vec<_>>();
        (steps, decision.note)
    } else {
        // The order may have moved on since this plan was made (a refund decided while
        // this purchase's grant waited for a retry): access is not given back to an order
        // that has ended or been suspended since.
        let mut steps = Vec::with_capacity(planned.len());
        for a in planned {
            if withheld(current.as_ref(), &a) {
                let why = format!(
                    "order {} since this was planned: not giving access back",
                    current.as_ref().map_or("changed", |o| o.state.as_str())
                );
                if let Err(err) = store
                    .finish_action(&e.id, a.step, "skipped", Some(&why), &a.request_id)
                    .await
                {
                    return failed_store(err);
                }
                steps.push((a.step, a.tool, a.arguments, "skipped".to_owned()));
            } else {
                steps.push((a.step, a.tool, a.arguments, a.state));
            }
        }
        (steps, "resumed the planned tool calls".to_owned())
    };
    if steps.iter().all(|(_, _, _, s)| s == "ok" || s == "skipped") {
        return Handled::Done(note);
    }
    // Revoked or not: the hub refuses a revoked persona's call and records the attempt as
    // denied; the event then goes dead, saying how to create the persona again.
    let persona = match events.hub().find_persona(&source.persona).await {
        Ok(p) => p,
        Err(err) => {
            return Handled::Failed {
                error: format!("persona `{}`: {err}", source.persona),
                retryable: false,
            };
        }
    };
    let revoked = persona
        .revoked_at
        .is_some()
        .then(|| memberspot_hub::admin::revoked_message(&persona));
    let who = Principal::Persona(persona);
    let prompt = format!(
        "{} {} event {} (rule {})",
        e.source, e.kind, e.id, rule.index
    );
    for (step, tool, args, state) in &steps {
        if let Err(h) = run_step(events, &who, e, attempt, *step, tool, args, state, &prompt).await
        {
            return match (h, &revoked) {
                (Handled::Failed { .. }, Some(message)) => Handled::Failed {
                    error: message.clone(),
                    retryable: false,
                },
                (h, _) => h,
            };
        }
    }
    Handled::Done(note)
}

/// Whether a resumed plan's call is not made: it would give access back to an order that
/// has ended or been suspended since it was planned.
pub(crate) fn withheld(
    order: Option<&OrderAccess>,
    a: &memberspot_hub::store::EventAction,
) -> bool {
    let closed = order.is_some_and(|o| o.state == state::ENDED || o.state == state::SUSPENDED);
    let open = !matches!(a.state.as_str(), "ok" | "skipped");
    closed && open && gives_access(&a.tool, &a.arguments)
}

/// Whether a planned call gives access (rather than taking it away).
fn gives_access(tool: &str, args: &Value) -> bool {
    match tool {
        "grant_user_offer_by_email" | "set_offer_expiration" => true,
        "set_order_state" | "set_user_offer_state" => {
            args.get("state").and_then(Value::as_str) == Some("active")
        }
        _ => false,
    }
}

/// Runs one planned step: skipped when done, checked against the school when an earlier
/// attempt may have sent it.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    events: &Events,
    who: &Principal,
    e: &StoredEvent,
    attempt: &Attempt<'_>,
    step: i64,
    tool: &str,
    args: &Value,
    state: &str,
    prompt: &str,
) -> Result<(), Handled> {
    let store = events.hub().events_store();
    let mut ctx = CallContext::new(Surface::Events);
    ctx.prompt = Some(prompt.to_owned());
    if matches!(state, "ok" | "skipped") {
        return Ok(());
    }
    // The previous attempt died mid-call: did the call take effect?
    if state == "started" && already_applied(events, who, tool, args).await {
        store
            .finish_action(
                &e.id,
                step,
                "ok",
                Some("confirmed after an interruption"),
                &ctx.request_id,
            )
            .await
            .map_err(failed_store)?;
        return Ok(());
    }
    // Fenced: once another worker has taken the event over, nothing more is sent from here.
    if !store
        .start_action(&e.id, step, &ctx.request_id, attempt.event_owner)
        .await
        .map_err(failed_store)?
    {
        return Err(Handled::LeaseLost);
    }
    let outcome = events.hub().call(who, &ctx, tool, args.clone()).await;
    match outcome.result {
        Ok(_) => {
            store
                .finish_action(&e.id, step, "ok", None, &ctx.request_id)
                .await
                .map_err(failed_store)?;
            Ok(())
        }
        Err(err) if is_not_found(&err) && is_revocation(tool, args) => {
            // Nothing to take away (the grant never reached the school): the goal holds.
            store
                .finish_action(
                    &e.id,
                    step,
                    "skipped",
                    Some(&err.to_string()),
                    &ctx.request_id,
                )
                .await
                .map_err(failed_store)?;
            Ok(())
        }
        Err(err) => {
            let retryable = match &err {
                HubError::Tool(t) => t.retryable(),
                HubError::Unavailable(_) | HubError::Store(_) => true,
                _ => false,
            };
            let _ = store
                .finish_action(
                    &e.id,
                    step,
                    "failed",
                    Some(&err.to_string()),
                    &ctx.request_id,
                )
                .await;
            Err(Handled::Failed {
                error: format!("{tool}: {err}"),
                retryable,
            })
        }
    }
}

/// Reads the member and checks whether `action` already holds.
async fn already_applied(events: &Events, who: &Principal, tool: &str, args: &Value) -> bool {
    let Some(email) = args.get("email").and_then(Value::as_str) else {
        return false;
    };
    let mut ctx = CallContext::new(Surface::Events);
    ctx.prompt = Some(format!("check whether an interrupted {tool} took effect"));
    let user = match events
        .hub()
        .call(who, &ctx, "find_user_by_email", json!({"email": email}))
        .await
        .result
    {
        Ok(u) => u,
        Err(_) => return false,
    };
    let offers = user
        .get("offers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let arg = |k: &str| args.get(k).and_then(Value::as_str);
    let holding = |pred: &dyn Fn(&Value) -> bool| {
        offers
            .iter()
            .filter(|h| pred(h))
            .cloned()
            .collect::<Vec<_>>()
    };
    let field = |h: &Value, k: &str| h.get(k).and_then(Value::as_str).map(str::to_owned);
    let active = |h: &Value| h.get("active").and_then(Value::as_bool).unwrap_or(true);
    match tool {
        "grant_user_offer_by_email" => {
            let offer = arg("offer_id");
            let order = arg("order_id");
            !holding(&|h| {
                field(h, "offerId").as_deref() == offer
                    && (order.is_none() || field(h, "orderId").as_deref() == order)
                    && active(h)
            })
            .is_empty()
        }
        "set_order_state" | "set_user_offer_state" => {
            let want = arg("state") == Some("active");
            let matching = if tool == "set_order_state" {
                holding(&|h| field(h, "orderId").as_deref() == arg("order_id"))
            } else {
                holding(&|h| field(h, "offerId").as_deref() == arg("offer_id"))
            };
            !matching.is_empty() && matching.iter().all(|h| active(h) == want)
        }
        "set_offer_expiration" => {
            let want = arg("expires_at").and_then(parse_time);
            holding(&|h| field(h, "offerId").as_deref() == arg("offer_id"))
                .iter()
                .any(|h| field(h, "expiresAt").as_deref().and_then(parse_time) == want)
        }
        _ => false,
    }
}

fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp())
        })
}

/// The school answered 404 (a hub object that is missing, such as the connection, is
/// not a member that is gone).
fn is_not_found(e: &HubError) -> bool {
    matches!(e, HubError::Tool(t) if t.is_not_found())
}

fn is_revocation(tool: &str, args: &Value) -> bool {
    matches!(tool, "set_order_state" | "set_user_offer_state")
        && args.get("state").and_then(Value::as_str) == Some("inactive")
}

/// PayPal IPN events stored before the receiver verified them first (older versions posted
/// back after acknowledging): confirmed here before anything is done. `None` when the
/// event needs no post-back or PayPal said VERIFIED.
async fn check_postback(events: &Events, e: &StoredEvent, source: &Source) -> Option<Handled> {
    if e.verified {
        return None;
    }
    let delivery_id = e.delivery_id.as_deref()?;
    let store = events.hub().events_store();
    let delivery = match store.get_delivery(delivery_id).await {
        Ok(Some(d)) if d.verification == Verification::Postback => d,
        Ok(_) => return None,
        Err(err) => return Some(failed_store(err)),
    };
    let body = delivery.body.unwrap_or_default();
    let r = memberspot_webhooks::paypal::receiver(&body);
    if !source
        .paypal_receiver
        .accepts(r.email.as_deref(), r.business.as_deref(), r.id.as_deref())
    {
        return Some(Handled::Final(
            EventStatus::Rejected,
            "a payment to another PayPal account than this shop's: nothing changed".into(),
        ));
    }
    match crate::postback::verify(events, source, &body).await {
        Postback::Verified => match store.mark_verified(&e.id).await {
            Ok(()) => None,
            Err(err) => Some(failed_store(err)),
        },
        Postback::Invalid => Some(Handled::Final(
            EventStatus::Rejected,
            "PayPal answered INVALID to the post-back: not a genuine IPN; nothing changed".into(),
        )),
        Postback::Unavailable(error) => Some(Handled::Failed {
            error,
            retryable: true,
        }),
    }
}

/// Suspends orders whose grace period after a missed payment has run out.
pub async fn sweep_grace_periods(events: Events, cancel: CancellationToken) {
    loop {
        if let Err(e) = sweep_once(&events).await {
            tracing::warn!(error = %e, "grace-period sweep failed; will retry");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// One sweep; returns how many orders were suspended.
pub async fn sweep_once(events: &Events) -> Result<usize, HubError> {
    let store = events.hub().events_store();
    let now = ms(events.now());
    let mut suspended = 0;
    for o in store.orders_in_state(state::GRACE).await? {
        if o.paid_until.is_none_or(|d| d > now) {
            continue;
        }
        let Some(source) = events.config().sources.get(&o.source).cloned() else {
            continue;
        };
        let owner = attempt_owner(events.worker_id());
        if !store
            .lock_order(&o.source, &o.order_id, &owner, wall_ms() + lease_ms(events))
            .await?
        {
            continue;
        }
        let result = suspend(events, &source, &o, &owner).await;
        store.unlock_order(&o.source, &o.order_id, &owner).await?;
        if result? {
            suspended += 1;
        }
    }
    Ok(suspended)
}

async fn suspend(
    events: &Events,
    source: &Source,
    o: &OrderAccess,
    owner: &str,
) -> Result<bool, HubError> {
    let store = events.hub().events_store();
    // Re-read under the lock: a payment may have arrived meanwhile.
    let Some(current) = store.get_order(&o.source, &o.order_id).await? else {
        return Ok(false);
    };
    if current.state != state::GRACE {
        return Ok(false);
    }
    let (Some(email), Some(offer)) = (&current.email, &current.offer_id) else {
        return Ok(false);
    };
    // Revoked or not: a revoked persona's call is refused and recorded by the hub.
    let who = Principal::Persona(events.hub().find_persona(&source.persona).await?);
    let action = access::suspend_after_grace(email, &current.order_id, offer);
    let mut ctx = CallContext::new(Surface::Events);
    ctx.prompt = Some(format!(
        "grace period of order {} ended without payment",
        current.order_id
    ));
    match events
        .hub()
        .call(&who, &ctx, action.tool, action.args)
        .await
        .result
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let fence = OrderFence {
        event_owner: owner,
        order_owner: owner,
        prior_state: state::GRACE,
    };
    let written = store
        .put_order_fenced(
            &OrderAccess {
                state: state::SUSPENDED.into(),
                reason: Some("grace_period_over".into()),
                updated_at: ms(events.now()),
                ..current
            },
            &fence,
        )
        .await?;
    Ok(written)
}

fn backoff(events: &Events, attempt: i64) -> Duration {
    let p = &events.config().processing;
    let retry = attempt.clamp(0, i64::from(u32::MAX)) as u32;
    // ±20 % jitter so retries of a burst do not arrive together.
    Backoff::new(p.base_backoff, p.max_backoff).spread(retry, 0.2, rand::random::<f64>())
}

fn failed_store(err: memberspot_store::StoreError) -> Handled {
    Handled::Failed {
        error: format!("store: {err}"),
        retryable: true,
    }
}

fn lease_ms(events: &Events) -> i64 {
    events.config().processing.lease.as_millis() as i64
}

/// Queue timing (leases, retry times) runs on the wall clock, as the store's claims do;
/// [`Events::now`] is business time (decisions, grace periods) and can be pinned in tests.
fn wall_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
