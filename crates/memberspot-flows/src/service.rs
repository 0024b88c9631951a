//! [`Flows`]: the running flows subsystem — the daily summary, the scheduler for cron and
//! event triggers, and what the CLI and REST call.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use memberspot_agent::config::ModelsConfig;
use memberspot_agent::model::{ChatMessage, ChatRequest, Model};
use memberspot_api::retry::Backoff;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::schools::School;
use memberspot_hub::store::{EventFilter, EventStatus, FlowStep, NewRun, RunStatus, Trusted};
use memberspot_hub::{CallContext, Hub, HubError};
use memberspot_notify::Message;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::FlowsError;
use crate::config::{DIGEST_ITEM, FlowsConfig, Target, Trigger};
use crate::digest::{self, Digest, Names};
use crate::personas::{CallError, call_as};
use crate::schedule::{self, Schedule};

/// The built-in prompt of the daily summary (`digest.prompt` / `prompt_file` replace it).
pub const DEFAULT_DIGEST_PROMPT: &str = "You write the morning summary of an online course \
school for its owner. Below is yesterday's activity as JSON: payments by provider and kind \
(amounts in minor units), members and access changes, course completions, problems that need \
attention, and tool calls by AI personas, with the day before for comparison. Write 3 to 5 \
short sentences in plain language: lead with anything that needs attention (failed or dead \
events, refused deliveries, chargebacks), then the notable numbers and changes against the day \
before. Use only numbers from the data; do not invent any. No greeting, no markdown headings.";

/// The persona the digest reads the school as.
pub const DIGEST_PERSONA: &str = "digest";

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct Flows {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    config: FlowsConfig,
    /// The school of each item, as decided by [`Flows::start`].
    schools: Vec<(String, School)>,
    models: ModelsConfig,
    http: reqwest::Client,
    /// For sync sources and export targets: redirects only on the same origin.
    fetch: reqwest::Client,
    worker_id: String,
}

/// The outcome of one digest run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DigestRun {
    pub run_id: Option<String>,
    pub digest: Digest,
    pub subject: String,
    /// Per target: `Ok(detail)` or `Err(error)`.
    pub deliveries: Vec<(Target, Result<String, String>)>,
}

impl Flows {
    /// Sets flows up on `hub`: decides the school of the daily summary (while it is on) and
    /// of each flow, sync and export (an error names every one that has none, see
    /// [`FlowsConfig::resolve_connections`]), and creates their personas when missing.
    /// Scheduling starts with [`Flows::spawn`].
    pub async fn start(
        hub: Hub,
        mut config: FlowsConfig,
        models: ModelsConfig,
    ) -> Result<Flows, HubError> {
        let schools = config.resolve_connections(&hub.schools().await?)?;
        memberspot_hub::schools::log(&schools);
        let flows = Self::build(hub, config, models, schools)?;
        flows.ensure_personas().await?;
        Ok(flows)
    }

    /// For commands that only read or run on demand: decides no school up front (the
    /// summary decides its own when made) and creates no personas.
    pub fn new(hub: Hub, config: FlowsConfig, models: ModelsConfig) -> Result<Flows, HubError> {
        Self::build(hub, config, models, Vec::new())
    }

    fn build(
        hub: Hub,
        config: FlowsConfig,
        models: ModelsConfig,
        schools: Vec<(String, School)>,
    ) -> Result<Flows, HubError> {
        // Flow http steps and Slack carry credentials in headers: a redirect to another
        // origin is not followed (reqwest would drop Authorization, not X-Api-Key).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(crate::sync::same_origin_redirects())
            .build()
            .map_err(|e| HubError::Unavailable(format!("HTTP client: {e}")))?;
        let fetch = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(crate::sync::same_origin_redirects())
            .build()
            .map_err(|e| HubError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Flows {
            inner: Arc::new(Inner {
                hub,
                config,
                schools,
                models,
                http,
                fetch,
                worker_id: memberspot_hub::worker_id(),
            }),
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn config(&self) -> &FlowsConfig {
        &self.inner.config
    }

    /// The school each item (`the daily summary`, `flow \`NAME\``, `sync …`, `export …`)
    /// acts on, as decided at start: for `serve` to print.
    pub fn schools(&self) -> &[(String, School)] {
        &self.inner.schools
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Creates the personas flows act as when missing, on their items' schools, with the
    /// scopes [`crate::personas::wanted`] gives them. Only items whose school is decided
    /// ([`Flows::start`]) have one.
    async fn ensure_personas(&self) -> Result<(), HubError> {
        for w in crate::personas::wanted(&self.inner.config) {
            if let Some(connection) = &w.connection {
                self.ensure_persona(&w.name, connection, w.scopes).await?;
            }
        }
        Ok(())
    }

    /// Creates the persona `name` when it does not exist. A revoked one stays revoked: what
    /// runs as it fails, saying how to create it again (see [`crate::personas`]).
    async fn ensure_persona(
        &self,
        name: &str,
        connection: &str,
        scopes: Vec<String>,
    ) -> Result<(), HubError> {
        let existing = match self.hub().persona_any(name).await {
            Ok(p) => Some(p),
            Err(HubError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match existing {
            Some(p) if p.revoked_at.is_some() => {
                tracing::warn!(persona = name, "{}", crate::personas::revoked_message(&p));
                return Ok(());
            }
            Some(_) => return Ok(()),
            None => {}
        }
        let created = self
            .hub()
            .create_persona(PersonaSpec {
                name: name.to_owned(),
                description: "Acts for flows; created by the flows subsystem".into(),
                connection: Some(connection.to_owned()),
                scopes,
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => tracing::info!(persona = %name, "created persona for flows"),
            // Another instance created it at the same moment.
            Err(HubError::Store(memberspot_hub::store::StoreError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Asks a model (by name in the models file, else its default) one question.
    pub async fn ask_model(
        &self,
        name: &str,
        system: Option<&str>,
        prompt: &str,
    ) -> Result<String, FlowsError> {
        let cfg = self.inner.models.models.get(name).cloned().ok_or_else(|| {
            FlowsError::UnknownModel {
                name: name.to_owned(),
                file: self.models_file(),
            }
        })?;
        let model = Model::new(cfg)?;
        let req = ChatRequest {
            system: system.map(str::to_owned),
            messages: vec![ChatMessage::user(prompt)],
            tools: Vec::new(),
        };
        let answer = model.complete(&req).await?;
        answer
            .text
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| FlowsError::NoAnswer(name.to_owned()))
    }

    fn models_file(&self) -> String {
        if self.inner.models.file.is_empty() {
            "the models file (models.toml)".into()
        } else {
            self.inner.models.file.clone()
        }
    }

    // ---------------------------------------------------------------- digest

    /// Offer and course names from the school, read as the digest persona (best effort:
    /// ids are shown when the school cannot be read). A digest persona that cannot act
    /// (revoked) is an error: the digest never reads the school as anyone else.
    async fn names(&self) -> Result<Names, FlowsError> {
        let mut names = Names::default();
        let mut ctx = CallContext::new(memberspot_hub::Surface::Flow);
        ctx.prompt = Some("daily summary: offer names".into());
        match call_as(self.hub(), DIGEST_PERSONA, &ctx, "list_offers", json!({})).await {
            Ok(v) => {
                for o in v["offers"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(name)) = (o["id"].as_str(), o["name"].as_str()) {
                        names.offers.insert(id.to_owned(), name.to_owned());
                    }
                }
            }
            Err(e @ CallError::Persona(_)) => return Err(FlowsError::call("list_offers", e)),
            Err(CallError::Call(e)) => {
                tracing::warn!(error = %e, "daily summary: offer names unavailable; ids shown");
            }
        }
        Ok(names)
    }

    /// Builds the digest of `date` (default: yesterday in the school's time zone),
    /// summarises it with the configured model (falling back to the template summary),
    /// and delivers it to `targets` (default: the configured ones). With `dry_run`, nothing
    /// is sent and no run is recorded. `fire_key` makes a scheduled digest happen once.
    pub async fn run_digest(
        &self,
        date: Option<NaiveDate>,
        targets: &[Target],
        dry_run: bool,
        fire_key: Option<String>,
    ) -> Result<Option<DigestRun>, HubError> {
        let cfg = self.inner.config.digest.clone();
        let tz: Tz = cfg
            .as_ref()
            .map(|d| d.schedule.timezone())
            .unwrap_or(chrono_tz::Europe::Berlin);
        let now = Utc::now();
        let date = date.unwrap_or_else(|| yesterday(now, tz));
        let store = self.hub().flows_store();
        let connection = match cfg.as_ref().and_then(|d| d.connection.clone()) {
            Some(c) => c,
            None => {
                let school = self
                    .inner
                    .config
                    .digest_school(&self.hub().schools().await?)
                    .map_err(|e| HubError::Invalid(e.to_string()))?;
                memberspot_hub::schools::log(&[(DIGEST_ITEM.to_owned(), school.clone())]);
                school.connection
            }
        };
        // The digest reads the school as its own persona, created here when missing.
        self.ensure_persona(DIGEST_PERSONA, &connection, vec!["read".into()])
            .await?;
        let run = if dry_run {
            None
        } else {
            let inserted = store
                .insert_run(&NewRun {
                    flow: "digest".into(),
                    trigger: if fire_key.is_some() {
                        "schedule"
                    } else {
                        "manual"
                    }
                    .into(),
                    fire_key,
                    dry_run,
                    input: json!({"date": date.to_string(), "timezone": tz.name()}),
                    worker: self.worker_id().to_owned(),
                })
                .await?;
            match inserted {
                Some(r) => Some(r),
                None => return Ok(None), // another instance sent this one
            }
        };
        let started = std::time::Instant::now();
        let names = match self.names().await {
            Ok(n) => n,
            Err(e) => {
                // On record as failed, with the reason; the refused call is in the audit log.
                self.record_step(
                    run.as_ref().map(|r| r.id.as_str()),
                    "names",
                    "tool",
                    json!({"tool": "list_offers", "persona": DIGEST_PERSONA}),
                    Err(&e),
                    started,
                )
                .await;
                let e = e.to_string();
                if let Some(r) = &run
                    && let Err(f) = store.finish_run(&r.id, RunStatus::Failed, Some(&e)).await
                {
                    tracing::error!(run = %r.id, error = %f, "could not mark the digest run failed");
                }
                return Err(HubError::Denied(e));
            }
        };
        let mut d = match digest::build(store, &connection, date, tz, &names, now).await {
            Ok(d) => d,
            Err(e) => {
                // The run is on record as started: it must not stay "running".
                if let Some(r) = &run
                    && let Err(f) = store
                        .finish_run(
                            &r.id,
                            RunStatus::Failed,
                            Some(&format!("collecting the day: {e}")),
                        )
                        .await
                {
                    tracing::error!(run = %r.id, error = %f, "could not mark the digest run failed");
                }
                return Err(e.into());
            }
        };
        self.record_step(
            run.as_ref().map(|r| r.id.as_str()),
            "collect",
            "digest",
            json!({"date": date.to_string()}),
            Ok(json!(d.numbers)),
            started,
        )
        .await;

        if let Some(model) = cfg.as_ref().and_then(|c| c.model.clone()) {
            let t = std::time::Instant::now();
            let prompt = format!(
                "{}\n\n{}",
                cfg.as_ref().and_then(|c| c.prompt.clone()).unwrap_or_else(|| DEFAULT_DIGEST_PROMPT.to_owned()),
                serde_json::to_string_pretty(&json!({
                    "date": d.date, "timezone": d.timezone, "numbers": d.numbers, "day_before": d.previous,
                    "payments": d.payments, "offers": d.offers, "completions": d.completions,
                    "problems": d.problems, "tool_calls_by_persona": d.personas,
                }))
                .unwrap_or_default()
            );
            if dry_run {
                d.summary_note = Some(format!(
                    "dry run: model `{model}` was not asked; template summary shown"
                ));
            } else {
                let answer = self.ask_model(&model, None, &prompt).await;
                match &answer {
                    Ok(text) => d.summary = Some(text.trim().to_owned()),
                    Err(e) => {
                        tracing::warn!(model = %model, error = %e, "digest model call failed; sending the template summary");
                        d.summary_note = Some(format!(
                            "model `{model}` unavailable: {e}; template summary shown"
                        ));
                    }
                }
                self.record_step(
                    run.as_ref().map(|r| r.id.as_str()),
                    "summarise",
                    "model",
                    json!({"model": model}),
                    answer.as_ref().map(|text| json!(text)),
                    t,
                )
                .await;
            }
        }

        let msg = Message {
            subject: d.subject(),
            text: d.to_text(),
            html: Some(d.to_html()),
            slack_blocks: Some(d.to_slack_blocks()),
        };
        let targets: Vec<Target> = if !targets.is_empty() {
            targets.to_vec()
        } else if let Some(c) = cfg.as_ref().filter(|c| !c.to.is_empty()) {
            c.to.clone()
        } else {
            let mut v = Vec::new();
            if self.inner.config.delivery.slack.is_some() {
                v.push(Target::Slack);
            }
            if self.inner.config.delivery.email.is_some() {
                v.push(Target::Email);
            }
            v
        };
        let mut deliveries = Vec::new();
        for target in targets {
            let t = std::time::Instant::now();
            let result = if dry_run && target != Target::Stdout {
                Ok(format!("dry run: not sent to {target:?}"))
            } else {
                self.deliver_with_retry(target, &msg).await
            };
            self.record_step(
                run.as_ref().map(|r| r.id.as_str()),
                &format!("{target:?}").to_lowercase(),
                "notify",
                json!({"subject": msg.subject}),
                result.as_ref().map(|detail| json!(detail)),
                t,
            )
            .await;
            deliveries.push((target, result.map_err(|e| e.to_string())));
        }
        if let Some(r) = &run {
            let failed: Vec<String> = deliveries
                .iter()
                .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{t:?}: {e}")))
                .collect();
            let (status, error) = if failed.is_empty() {
                (RunStatus::Ok, None)
            } else {
                (RunStatus::Failed, Some(failed.join("; ")))
            };
            store.finish_run(&r.id, status, error.as_deref()).await?;
        }
        Ok(Some(DigestRun {
            run_id: run.map(|r| r.id),
            subject: msg.subject,
            digest: d,
            deliveries,
        }))
    }

    /// E-mail gets three tries, 2 s and 4 s apart, while the failure may pass (Slack
    /// retries inside its client, per Slack's answers).
    pub(crate) async fn deliver_with_retry(
        &self,
        target: Target,
        msg: &Message,
    ) -> Result<String, FlowsError> {
        let tries = if target == Target::Email { 3 } else { 1 };
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(4));
        let mut attempt = 1;
        loop {
            match self.deliver(target, msg).await {
                Ok(d) => return Ok(d),
                Err(e) if attempt >= tries || !delivery_may_pass(&e) => return Err(e),
                Err(_) => {}
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
            attempt += 1;
        }
    }

    pub(crate) async fn record_step(
        &self,
        run_id: Option<&str>,
        name: &str,
        kind: &str,
        input: Value,
        result: Result<Value, &FlowsError>,
        started: std::time::Instant,
    ) {
        let Some(run_id) = run_id else { return };
        let ms = started.elapsed().as_millis() as i64;
        let (output, error) = match result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let s = FlowStep {
            name: name.into(),
            kind: kind.into(),
            input: Some(input),
            output,
            error,
            attempts: 1,
            started_at: Utc::now().timestamp_millis() - ms,
            duration_ms: ms,
        };
        if let Err(e) = self.hub().flows_store().add_step(run_id, &s).await {
            tracing::warn!(error = %e, "could not record a digest step");
        }
    }

    /// Runs the sync `name` (plans only, with `dry_run`).
    pub async fn run_sync(
        &self,
        name: &str,
        dry_run: bool,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<crate::sync::SyncReport, FlowsError> {
        let spec = self
            .inner
            .config
            .sync(name)
            .ok_or_else(|| FlowsError::NotFound {
                kind: "sync",
                name: name.to_owned(),
            })?;
        crate::sync::run(
            self.hub(),
            &self.inner.fetch,
            spec,
            self.inner.config.base.as_deref(),
            dry_run,
            progress,
        )
        .await
    }

    /// Runs the export `name`.
    pub async fn run_export(&self, name: &str) -> Result<crate::export::ExportReport, FlowsError> {
        let spec = self
            .inner
            .config
            .exports
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| FlowsError::NotFound {
                kind: "export",
                name: name.to_owned(),
            })?;
        crate::export::run(
            self.hub(),
            &self.inner.fetch,
            spec,
            self.inner.config.base.as_deref(),
        )
        .await
    }

    // ---------------------------------------------------------------- scheduler

    /// Starts the scheduler (digest and cron flows) and the event-trigger loop.
    pub fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(scheduler(self.clone(), cancel.clone())),
            tokio::spawn(event_triggers(self.clone(), cancel.clone())),
        ];
        if self.config().alerts.enabled {
            tasks.push(tokio::spawn(crate::alerts::watch(self.clone(), cancel)));
        }
        tasks
    }

    /// Fires one scheduled occurrence (once across instances).
    pub async fn fire(&self, name: &str, at: DateTime<Utc>) {
        let key = schedule::fire_key(name, at);
        let input = json!({"scheduled_for": at.to_rfc3339()});
        if name == "digest" {
            match self.run_digest(None, &[], false, Some(key)).await {
                Ok(Some(r)) => tracing::info!(subject = %r.subject, "daily summary sent"),
                Ok(None) => tracing::debug!("daily summary already sent by another instance"),
                Err(e) => tracing::error!(error = %e, "daily summary failed"),
            }
            return;
        }
        match self
            .run_flow(name, "schedule", input, Some(key), false)
            .await
        {
            Ok(r) => tracing::info!(flow = name, status = %r.status, "scheduled flow ran"),
            Err(crate::runner::RunError::AlreadyFired(_)) => {}
            Err(e) => tracing::warn!(flow = name, error = %e, "scheduled flow did not run"),
        }
    }

    /// The schedules this hub fires: `(name, schedule, missed policy)`.
    pub fn schedules(&self) -> Vec<(String, Schedule, schedule::Missed)> {
        let mut v = Vec::new();
        if let Some(d) = self.inner.config.digest.as_ref().filter(|d| d.enabled) {
            v.push(("digest".to_owned(), d.schedule.clone(), d.missed));
        }
        for f in &self.inner.config.flows {
            if let Trigger::Cron { schedule, missed } = &f.trigger {
                v.push((f.name.clone(), (**schedule).clone(), *missed));
            }
        }
        v
    }
}

/// Whether sending again later may work: an outage or a 4xx SMTP reply, not missing
/// settings or a refused message.
fn delivery_may_pass(e: &FlowsError) -> bool {
    match e {
        FlowsError::Delivery(n) => n.is_temporary(),
        _ => false,
    }
}

/// Yesterday in `tz`, seen from `now`.
pub fn yesterday(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    today.pred_opt().unwrap_or(today)
}

async fn scheduler(flows: Flows, cancel: CancellationToken) {
    let schedules = flows.schedules();
    if schedules.is_empty() {
        return;
    }
    let now = Utc::now();
    let mut next: Vec<(String, Schedule, Option<DateTime<Utc>>)> = Vec::new();
    for (name, s, missed) in schedules {
        // A fire missed while the hub was down: caught up once, or skipped, per policy.
        if let Some(at) = s.missed(now, missed) {
            let fired = flows
                .hub()
                .flows_store()
                .run_fired(&schedule::fire_key(&name, at))
                .await
                .unwrap_or(true);
            if !fired {
                tracing::info!(flow = %name, at = %at, "running a fire missed while the hub was down");
                flows.fire(&name, at).await;
            }
        }
        let n = s.next_after(now);
        next.push((name, s, n));
    }
    loop {
        let now = Utc::now();
        for (name, s, at) in next.iter_mut() {
            while let Some(t) = *at {
                if t > now {
                    break;
                }
                flows.fire(name, t).await;
                *at = s.next_after(t);
            }
        }
        let wait = next
            .iter()
            .filter_map(|(_, _, at)| *at)
            .min()
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(30));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs event-triggered flows for new stored events of their kind, once per event.
async fn event_triggers(flows: Flows, cancel: CancellationToken) {
    let triggers: Vec<(String, String, Option<String>)> = flows
        .config()
        .flows
        .iter()
        .filter_map(|f| match &f.trigger {
            Trigger::Event { kind, source } => Some((f.name.clone(), kind.clone(), source.clone())),
            _ => None,
        })
        .collect();
    if triggers.is_empty() {
        return;
    }
    loop {
        for (name, kind, source) in &triggers {
            if let Err(e) = trigger_once(&flows, name, kind, source.as_deref()).await {
                tracing::warn!(flow = %name, error = %e, "event trigger failed; will retry");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// One pass for one event-triggered flow. The checkpoint starts at the newest event when
/// the flow is first seen, so adding a flow does not replay history.
///
/// A flow fires only on events the hub trusts ([`Trusted`]: verified, not refused, of the
/// flow's own school, not test traffic) and only once the queue has decided them: a payment
/// its rule will refuse must not start a welcome flow first. The checkpoint never passes an
/// undecided event; decided ones after it fire at once (each event fires a flow once).
pub async fn trigger_once(
    flows: &Flows,
    name: &str,
    kind: &str,
    source: Option<&str>,
) -> Result<usize, HubError> {
    /// Events read per page; a pass reads at most this many pages.
    const PAGE: u32 = 200;
    const PAGES: usize = 10;
    let store = flows.hub().flows_store();
    let flow = flows
        .config()
        .flows
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| HubError::NotFound(format!("no flow named `{name}`")))?;
    // Only `Flows::start` decides a flow's school; without one nothing is trusted.
    let connection = flow.connection.clone().ok_or_else(|| {
        HubError::Invalid(format!(
            "flow `{name}` has no school yet: flows are started with Flows::start"
        ))
    })?;
    let trusted = Trusted::live(connection);
    let key = format!("flow.{name}.after_seq");
    let checkpoint = match store.get_meta(&key).await? {
        Some(v) => v.parse::<i64>().unwrap_or(0),
        None => {
            let newest = store
                .list_events(&EventFilter {
                    limit: Some(1),
                    ..Default::default()
                })
                .await?
                .first()
                .map_or(0, |e| e.seq);
            store.set_meta(&key, &newest.to_string()).await?;
            newest
        }
    };
    let mut ran = 0;
    let mut cursor = checkpoint;
    // Where the checkpoint may move: just before the first event still undecided.
    let mut settled_upto: Option<i64> = None;
    let mut blocked = false;
    'pages: for _ in 0..PAGES {
        let events = store
            .list_events(&EventFilter {
                kind: Some(kind.to_owned()),
                source: source.map(str::to_owned),
                after_seq: Some(cursor),
                oldest_first: true,
                limit: Some(PAGE),
                ..Default::default()
            })
            .await?;
        for e in &events {
            cursor = e.seq;
            let undecided = matches!(
                e.status,
                EventStatus::Pending | EventStatus::Processing | EventStatus::Retry
            );
            if undecided {
                blocked = true;
                continue;
            }
            if trusted.admits(e) {
                let input = json!({"event": e});
                match flows
                    .run_flow(
                        name,
                        "event",
                        input,
                        Some(format!("{name}#{}", e.id)),
                        false,
                    )
                    .await
                {
                    Ok(_) => ran += 1,
                    Err(crate::runner::RunError::AlreadyFired(_)) => {}
                    Err(crate::runner::RunError::Busy(_)) => break 'pages, // from here next pass
                    Err(err) => {
                        tracing::warn!(flow = name, event = %e.id, error = %err, "event-triggered run failed to start")
                    }
                }
            }
            if !blocked {
                settled_upto = Some(e.seq);
            }
        }
        if events.len() < PAGE as usize {
            break;
        }
    }
    if let Some(upto) = settled_upto.filter(|s| *s > checkpoint) {
        store.set_meta(&key, &upto.to_string()).await?;
    }
    Ok(ran)
}
