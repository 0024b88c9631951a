//! [`Events`]: the running events subsystem of one hub process — its configuration, the
//! personas it acts as, the wake-up signal between receivers and workers, and the
//! read/replay operations the CLI and REST use.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use chrono::{DateTime, Utc};
use memberspot_hub::admin::{Actor, PersonaSpec};
use memberspot_hub::schools::School;
use memberspot_hub::store::{
    Delivery, EventAction, EventFilter, EventLogEntry, EventPurge, EventStatus, StoredEvent,
};
use memberspot_hub::{CallContext, Hub, HubError, Surface};
use memberspot_store::AuditFilter;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{self, EventFacts};
use crate::config::{EventsConfig, Retention};

/// The tools a source persona may call: exactly what the access rules need.
pub const SOURCE_TOOLS: [&str; 5] = [
    "grant_user_offer_by_email",
    "set_order_state",
    "set_user_offer_state",
    "set_offer_expiration",
    "find_user_by_email",
];

/// Where "now" comes from (tests pin it to a vector's clock).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

/// A delivery refused before it was stored as an event.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RefusedDelivery {
    pub id: String,
    pub source: String,
    pub provider: String,
    /// Epoch milliseconds, like every time in the events API.
    pub received_at: i64,
    /// The body's size as sent.
    pub bytes: i64,
    pub reason: String,
}

/// How long the start waits for the schools' offers before it goes on without the check.
const OFFER_CHECK_TIME: Duration = Duration::from_secs(10);

struct Inner {
    hub: Hub,
    config: EventsConfig,
    /// The school each source and the poller acts on, and how it was chosen.
    schools: Vec<(String, School)>,
    /// What the start found wrong with the rules' offers, for `serve` to print.
    offer_warnings: Vec<String>,
    notify: Notify,
    clock: Clock,
    http: reqwest::Client,
    worker_id: String,
    /// Refused requests recorded per source (see [`crate::receiver::REFUSALS_PER_MINUTE`]).
    refusals: governor::DefaultKeyedRateLimiter<String>,
}

impl FromRef<Events> for Hub {
    fn from_ref(events: &Events) -> Hub {
        events.inner.hub.clone()
    }
}

impl Events {
    /// Sets the events subsystem up on `hub`: decides the school of each source and of the
    /// poller (an error names every one that has none, see
    /// [`EventsConfig::resolve_connections`]) and creates their personas when missing.
    /// Workers start with [`Events::spawn`].
    pub async fn start(hub: Hub, config: EventsConfig) -> Result<Events, HubError> {
        Self::start_with_clock(hub, config, Arc::new(Utc::now)).await
    }

    pub async fn start_with_clock(
        hub: Hub,
        mut config: EventsConfig,
        clock: Clock,
    ) -> Result<Events, HubError> {
        let schools = config.resolve_connections(&hub.schools().await?)?;
        memberspot_hub::schools::log(&schools);
        // Loud, not fatal: the receivers must keep storing deliveries while a rule is
        // fixed (a purchase under a missing offer goes dead and can be replayed).
        let check_ctx = CallContext::new(Surface::Events);
        let check = crate::offers::check_rule_offers(&hub, &check_ctx, &mut config);
        let offer_warnings = match tokio::time::timeout(OFFER_CHECK_TIME, check).await {
            Ok(Ok(problems)) => problems
                .iter()
                .map(|p| format!("the rules file, {p}: its purchases will go dead"))
                .collect(),
            Ok(Err(e)) => vec![format!("the rules' offers were not checked: {e}")],
            Err(_) => vec![format!(
                "the rules' offers were not checked: no answer within {} s",
                OFFER_CHECK_TIME.as_secs()
            )],
        };
        for w in &offer_warnings {
            tracing::warn!("{w}");
        }
        ensure_personas(&hub, &config).await?;
        for source in config.sources.values() {
            let n = hub
                .events_store()
                .backfill_event_connection(&source.name, source.connection())
                .await?;
            if n > 0 {
                tracing::info!(source = %source.name, connection = %source.connection(), events = n, "assigned earlier events to their school");
            }
        }
        Self::build(hub, config, clock, schools, offer_warnings)
    }

    /// For reading, replaying and dry runs: creates no personas, starts nothing and decides
    /// no school (see [`Events::start`]).
    pub fn offline(hub: Hub, config: EventsConfig) -> Result<Events, HubError> {
        Self::build(hub, config, Arc::new(Utc::now), Vec::new(), Vec::new())
    }

    fn build(
        hub: Hub,
        config: EventsConfig,
        clock: Clock,
        schools: Vec<(String, School)>,
        offer_warnings: Vec<String>,
    ) -> Result<Events, HubError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| HubError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Events {
            inner: Arc::new(Inner {
                hub,
                config,
                schools,
                offer_warnings,
                notify: Notify::new(),
                clock,
                http,
                worker_id: memberspot_hub::worker_id(),
                refusals: governor::RateLimiter::keyed(governor::Quota::per_minute(
                    std::num::NonZeroU32::new(crate::receiver::REFUSALS_PER_MINUTE)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                )),
            }),
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn config(&self) -> &EventsConfig {
        &self.inner.config
    }

    /// The school each source (`source \`NAME\``) and the poller acts on, as decided at
    /// start: for `serve` to print.
    pub fn schools(&self) -> &[(String, School)] {
        &self.inner.schools
    }

    /// Rules whose offer the school did not have at start (or could not be checked).
    pub fn offer_warnings(&self) -> &[String] {
        &self.inner.offer_warnings
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// This process's worker identity (lease owner in the queue).
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Whether one more refused request of `source` may be recorded this minute.
    pub(crate) fn admit_refusal(&self, source: &str) -> bool {
        self.inner.refusals.check_key(&source.to_owned()).is_ok()
    }

    /// Wakes the local workers: new events were stored.
    pub(crate) fn wake(&self) {
        self.inner.notify.notify_waiters();
    }

    pub(crate) async fn woken(&self) {
        self.inner.notify.notified().await;
    }

    /// Starts the queue workers, the grace-period sweeper and the poller (if configured).
    pub fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut handles = vec![
            tokio::spawn(crate::worker::run(self.clone(), cancel.clone())),
            tokio::spawn(crate::worker::sweep_grace_periods(
                self.clone(),
                cancel.clone(),
            )),
            tokio::spawn(purge_daily(self.clone(), cancel.clone())),
        ];
        if let Some(cfg) = &self.inner.config.poller {
            let poller = crate::poller::Poller::new(self.inner.hub.clone(), cfg.clone());
            handles.push(tokio::spawn(poller.run(cancel)));
        }
        handles
    }

    // ---------------------------------------------------------------- reading

    /// An event with its delivery, processing history, tool calls and their audit records.
    pub async fn show(&self, id: &str) -> Result<EventDetail, HubError> {
        let store = self.inner.hub.events_store();
        let event = store
            .get_event(id)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("no event with id `{id}`")))?;
        let delivery = match &event.delivery_id {
            Some(d) => store.get_delivery(d).await?,
            None => None,
        };
        let history = store.event_log(id).await?;
        let actions = store.event_actions(id).await?;
        let mut audit = Vec::new();
        for a in &actions {
            let records = self
                .inner
                .hub
                .audit(&AuditFilter {
                    request_id: Some(a.request_id.clone()),
                    limit: Some(10),
                    ..Default::default()
                })
                .await?;
            audit.extend(records.into_iter().map(|r| {
                serde_json::json!({
                    "seq": r.seq, "at": r.at, "request_id": r.request_id, "persona": r.persona,
                    "tool": r.tool, "outcome": r.outcome, "error": r.error,
                })
            }));
        }
        let body = delivery
            .as_ref()
            .and_then(|d| d.body.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        Ok(EventDetail {
            event,
            delivery,
            body,
            history,
            actions,
            audit,
        })
    }

    /// Deletes what the `[retention]` settings no longer keep (see [`Store::purge_events`]).
    ///
    /// [`Store::purge_events`]: memberspot_hub::store::Store::purge_events
    pub async fn purge(&self, retention: Retention) -> Result<EventPurge, HubError> {
        let now = self.now();
        let before = |days: u32| (now - chrono::Duration::days(i64::from(days))).timestamp_millis();
        let purged = self
            .inner
            .hub
            .events_store()
            .purge_events(
                before(retention.events_days),
                before(retention.refused_days),
            )
            .await?;
        Ok(purged)
    }

    /// Deliveries refused at the door (signature or token wrong, body too large, not
    /// meant for this shop), newest first: what was refused, from which source, when and
    /// why; never their headers or body (they were not kept).
    pub async fn refused(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RefusedDelivery>, HubError> {
        let list = self
            .inner
            .hub
            .events_store()
            .refused_deliveries(source, limit)
            .await?;
        Ok(list
            .into_iter()
            .map(|d| RefusedDelivery {
                id: d.id,
                source: d.source,
                provider: d.provider,
                received_at: d.received_at,
                bytes: d.body_bytes,
                reason: d.error.unwrap_or_default(),
            })
            .collect())
    }

    pub async fn list(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, HubError> {
        Ok(self.inner.hub.events_store().list_events(filter).await?)
    }

    /// Queues an event again. Tool calls it already planned are resumed (those that
    /// succeeded are not repeated); an event that planned none is decided afresh under the
    /// current rules (e.g. an unmatched event after its product was mapped).
    /// Recorded in the audit log as `admin.replay_event` under `actor`.
    pub async fn replay(&self, id: &str, actor: &Actor) -> Result<StoredEvent, HubError> {
        let event = replay_event(&self.inner.hub, actor, id).await?;
        self.wake();
        Ok(event)
    }

    /// What processing the stored event `id` would do now: the same checks and rule choice
    /// as the workers ([`crate::worker`]'s `judge`) and the same decision
    /// ([`access::decide`]) from the order's stored state, without locking, writing or
    /// calling anything.
    pub async fn preview(&self, id: &str) -> Result<EventPreview, HubError> {
        use crate::worker::{Verdict, inadmissible, judge, order_key, source_of, withheld};
        let store = self.inner.hub.events_store();
        let e = store
            .get_event(id)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("no event with id `{id}`")))?;
        let mut preview = EventPreview {
            event_id: e.id.clone(),
            rule: None,
            final_status: None,
            note: String::new(),
            order_state: None,
            new_state: None,
            calls: Vec::new(),
            resumes_plan: false,
            caveats: Vec::new(),
        };
        let finished = |mut p: EventPreview, status: EventStatus, note: String| {
            p.final_status = Some(status);
            p.note = note;
            Ok(p)
        };
        let source = match source_of(self, &e) {
            Ok(s) => s,
            Err((status, note)) => return finished(preview, status, note),
        };
        if !e.verified && e.provider == "paypal" {
            preview.caveats.push(
                "the workers would first ask PayPal to confirm this IPN (a post-back); a dry run does not"
                    .into(),
            );
        }
        if let Some((status, note)) = inadmissible(&e, &source) {
            return finished(preview, status, note);
        }
        if source.stripe_api.is_some() && e.product_id.is_none() {
            preview.caveats.push(
                "the workers would ask Stripe for the session's product; a dry run does not, so the rule is chosen without it"
                    .into(),
            );
        }
        let rule = match judge(self, &e, e.product_id.as_deref()).await? {
            Verdict::Rule(rule) => rule,
            Verdict::Final(status, note) => return finished(preview, status, note),
            Verdict::Refused(why) => return finished(preview, EventStatus::RefusedAmount, why),
        };
        let order = store.get_order(&e.source, &order_key(&e)).await?;
        let (state_now, stored_email) = order
            .as_ref()
            .map_or((access::state::NONE.to_owned(), None), |o| {
                (o.state.clone(), o.email.clone())
            });
        preview.order_state = Some(state_now.clone());
        let planned = store.event_actions(&e.id).await?;
        if planned.is_empty() {
            let d = access::decide(
                &state_now,
                stored_email.as_deref(),
                &facts_of(&e),
                &rule,
                self.now(),
            );
            preview.new_state = Some(d.state.to_owned());
            preview.note = d.note;
            preview.calls = d
                .actions
                .into_iter()
                .map(|a| PreviewCall {
                    tool: a.tool.to_owned(),
                    args: a.args,
                    state: None,
                })
                .collect();
        } else {
            preview.resumes_plan = true;
            preview.note = "resumes the planned tool calls".into();
            preview.calls = planned
                .into_iter()
                .map(|a| {
                    let state = if withheld(order.as_ref(), &a) {
                        "skipped".to_owned()
                    } else {
                        a.state
                    };
                    PreviewCall {
                        tool: a.tool,
                        args: a.arguments,
                        state: Some(state),
                    }
                })
                .collect();
        }
        preview.rule = Some(rule);
        Ok(preview)
    }

    /// What each stored event would do under this configuration's rules, replaying them in
    /// arrival order from a blank order state (nothing is written).
    pub async fn dry_run(&self, filter: &EventFilter) -> Result<Vec<DryRunLine>, HubError> {
        let mut filter = filter.clone();
        filter.oldest_first = true;
        let events = self.inner.hub.events_store().list_events(&filter).await?;
        // Simulated order state: (state, email, offer).
        type Sim = (String, Option<String>, Option<String>);
        let mut orders: std::collections::HashMap<(String, String), Sim> = Default::default();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let line = |rule: Option<usize>, note: String, actions: Vec<String>| DryRunLine {
                event_id: e.id.clone(),
                received_at: e.received_at,
                source: e.source.clone(),
                kind: e.kind.clone(),
                order_id: e.order_id.clone(),
                product_id: e.product_id.clone(),
                rule,
                actions,
                note,
            };
            let key = (
                e.source.clone(),
                e.order_id.clone().unwrap_or_else(|| e.id.clone()),
            );
            let config = &self.inner.config;
            let known_offer = orders.get(&key).and_then(|o| o.2.clone());
            let rule = config
                .rule_for_event(&e.source, &e.provider, e.product_id.as_deref())
                .or_else(|| known_offer.and_then(|o| config.rule_for_offer(&e.source, &o)));
            let Some(rule) = rule else {
                out.push(line(
                    None,
                    "no rule matches: nothing would change".into(),
                    vec![],
                ));
                continue;
            };
            if e.test && !rule.include_test {
                out.push(line(
                    Some(rule.index),
                    "test event ignored (include_test = false)".into(),
                    vec![],
                ));
                continue;
            }
            let facts = facts_of(&e);
            let (current, email, _) = orders
                .get(&key)
                .cloned()
                .unwrap_or_else(|| (access::state::NONE.to_owned(), None, None));
            let d = access::decide(&current, email.as_deref(), &facts, rule, self.now());
            let email = facts.email.clone().or(email);
            orders.insert(key, (d.state.to_owned(), email, Some(rule.offer.clone())));
            let actions = d
                .actions
                .iter()
                .map(|a| format!("{} {}", a.tool, a.args))
                .collect();
            out.push(line(Some(rule.index), d.note, actions));
        }
        Ok(out)
    }
}

/// What processing one stored event would do now, under the running rules and its
/// order's stored state (see [`Events::preview`]). Nothing is written or called.
#[derive(Debug, Serialize)]
pub struct EventPreview {
    pub event_id: String,
    /// The rule that would decide it.
    pub rule: Option<crate::config::Rule>,
    /// The status it would end in without calling anything (unmatched, ignored, refused,
    /// rejected); `None` when it would call tools (or had nothing to call: done).
    pub final_status: Option<EventStatus>,
    /// The decision's line for the history, or why nothing would happen.
    pub note: String,
    /// The order's state now and afterwards (with a rule).
    pub order_state: Option<String>,
    pub new_state: Option<String>,
    /// The tool calls, in order: decided now, or the plan a replay resumes.
    pub calls: Vec<PreviewCall>,
    /// The event already has a plan: a replay resumes it instead of deciding afresh.
    pub resumes_plan: bool,
    /// What the dry run did not do that the workers would (a Stripe look-up, a PayPal
    /// post-back).
    pub caveats: Vec<String>,
}

/// One tool call of a preview.
#[derive(Debug, Serialize)]
pub struct PreviewCall {
    pub tool: String,
    pub args: serde_json::Value,
    /// For a resumed plan: the call's state (`ok` and `skipped` calls are not made again).
    pub state: Option<String>,
}

/// Everything known about one event.
#[derive(Debug, Serialize)]
pub struct EventDetail {
    pub event: StoredEvent,
    pub delivery: Option<Delivery>,
    /// The raw body as text (lossy for non-UTF-8 bodies).
    pub body: Option<String>,
    pub history: Vec<EventLogEntry>,
    pub actions: Vec<EventAction>,
    /// The audit records of the tool calls.
    pub audit: Vec<serde_json::Value>,
}

/// One line of a dry run.
#[derive(Debug, Serialize)]
pub struct DryRunLine {
    pub event_id: String,
    pub received_at: i64,
    pub source: String,
    pub kind: String,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub rule: Option<usize>,
    pub actions: Vec<String>,
    pub note: String,
}

/// The decision inputs of a stored event.
pub(crate) fn facts_of(e: &StoredEvent) -> EventFacts {
    let s = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    EventFacts {
        kind: e.kind.clone(),
        email: e.email.clone(),
        first_name: s("first_name"),
        last_name: s("last_name"),
        order_id: e.order_id.clone(),
        access_until: s("access_until"),
    }
}

/// Statuses that end an event's life (used by listings).
pub const FINAL_STATUSES: [EventStatus; 6] = [
    EventStatus::Done,
    EventStatus::Unmatched,
    EventStatus::Ignored,
    EventStatus::Rejected,
    EventStatus::Dead,
    EventStatus::RefusedAmount,
];

/// Applies the retention settings once at start and then once a day.
async fn purge_daily(events: Events, cancel: CancellationToken) {
    loop {
        match events.purge(events.config().retention).await {
            Ok(p) if p.events + p.deliveries + p.refused_deliveries > 0 => {
                tracing::info!(
                    events = p.events,
                    deliveries = p.deliveries,
                    refused = p.refused_deliveries,
                    "purged events past their retention"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging old events failed; will retry"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
    }
}

/// Creates each source's persona (and the poller's) when missing.
async fn ensure_personas(hub: &Hub, config: &EventsConfig) -> Result<(), HubError> {
    for source in config.sources.values() {
        let offers = config.offers_of(&source.name);
        ensure_persona(
                hub,
                &source.persona,
                source.connection(),
                SOURCE_TOOLS.map(str::to_owned).to_vec(),
                format!(
                    "Acts on {} webhooks received at /hooks/{} (offers {}); created by the events subsystem",
                    source.provider,
                    source.name,
                    if offers.is_empty() { "none yet".to_owned() } else { offers.join(", ") }
                ),
            )
            .await?;
    }
    if let Some(p) = &config.poller {
        ensure_persona(
            hub,
            &p.persona,
            p.connection(),
            vec!["read".into()],
            "Reads the school for change detection; created by the events subsystem".into(),
        )
        .await?;
    }
    Ok(())
}

async fn ensure_persona(
    hub: &Hub,
    name: &str,
    connection: &str,
    scopes: Vec<String>,
    description: String,
) -> Result<(), HubError> {
    let existing = match hub.persona_any(name).await {
        Ok(p) => Some(p),
        Err(HubError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    match existing {
        Some(p) if p.revoked_at.is_some() => {
            tracing::warn!(
                persona = name,
                "persona is revoked: the events acting as it will fail until it is re-created"
            );
        }
        Some(_) => {}
        None => {
            // The token is never needed: the hub acts as this persona internally.
            let created = hub
                .create_persona(PersonaSpec {
                    name: name.to_owned(),
                    description,
                    connection: Some(connection.to_owned()),
                    scopes,
                    offer_ids: None,
                    calls_per_minute: None,
                })
                .await;
            match created {
                Ok(_) => tracing::info!(persona = name, connection, "created persona for events"),
                // Another instance created it at the same moment.
                Err(HubError::Store(memberspot_store::StoreError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Queues a stored event again without a running events service (the CLI, the console in
/// tests): the workers of the serving process find it on their next look. Recorded in the
/// audit log as `admin.replay_event` under `actor`, whether it succeeded or not.
pub async fn replay_event(hub: &Hub, actor: &Actor, id: &str) -> Result<StoredEvent, HubError> {
    let started = std::time::Instant::now();
    let result = hub
        .events_store()
        .replay_event(id, &actor.to_string())
        .await
        .map_err(HubError::from);
    let connection = result.as_ref().ok().and_then(|e| e.connection.clone());
    hub.record_admin_action(
        actor,
        "admin.replay_event",
        serde_json::json!({ "id": id }),
        connection,
        result
            .as_ref()
            .map(|e| serde_json::json!({ "id": e.id, "status": e.status.as_str() })),
        started,
    )
    .await;
    result
}
