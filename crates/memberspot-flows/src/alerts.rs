//! Immediate alerts. An event that went dead, an event no rule matched and deliveries
//! refused at the door are told to the owner within a minute (Slack and/or e-mail), not the
//! next morning: a purchase nobody granted is a customer waiting.
//!
//! One message per burst. Each check (every `check_secs`) gathers what happened since the
//! last alert; at most one alert goes out per quiet period, across every instance: the
//! period's run (`alerts`, fire key `alerts:<period>`) is claimed in the flow-run table like
//! a scheduled run, and only its claimant sends. What happens during a quiet period goes
//! into the next period's message.

use std::time::Instant;

use chrono::{DateTime, Utc};
use memberspot_hub::HubError;
use memberspot_hub::store::{EventFilter, EventStatus, FlowStore, NewRun, RunStatus, StoredEvent};
use memberspot_notify::Message;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Flows;

/// Where the last alert left off (epoch ms).
const WATERMARK: &str = "alerts.after_ms";
/// Lines per section of a message; the rest are counted.
const LINES: usize = 10;

/// What went wrong in `[since, until)`.
#[derive(Debug, Default)]
pub struct Burst {
    pub since: i64,
    pub until: i64,
    pub dead: Vec<StoredEvent>,
    pub unmatched: Vec<StoredEvent>,
    /// Refused deliveries per source.
    pub refused: Vec<(String, i64)>,
}

impl Burst {
    pub fn is_empty(&self) -> bool {
        self.dead.is_empty() && self.unmatched.is_empty() && self.refused.is_empty()
    }

    fn problems(&self) -> usize {
        self.dead.len()
            + self.unmatched.len()
            + self.refused.iter().map(|(_, n)| *n as usize).sum::<usize>()
    }

    /// The alert: what happened and the command that shows or fixes each.
    pub fn message(&self) -> Message {
        let since = DateTime::<Utc>::from_timestamp_millis(self.since)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let mut text = format!("Since {since}:\n");
        section(
            &mut text,
            "DEAD EVENTS: gave up after their retries (see `memberspot events show ID`, then `memberspot events replay ID`)",
            &self.dead,
            |e| {
                format!(
                    "{}  {} {}  order {}  {}",
                    e.id,
                    e.source,
                    e.kind,
                    e.order_id.as_deref().unwrap_or("-"),
                    e.last_error.as_deref().unwrap_or("")
                )
            },
        );
        section(
            &mut text,
            "NO RULE MATCHED: stored, but nothing was granted (add a rule for the product, then `memberspot events replay ID`)",
            &self.unmatched,
            |e| {
                format!(
                    "{}  {} {}  product {}  order {}",
                    e.id,
                    e.source,
                    e.kind,
                    e.product_id.as_deref().unwrap_or("-"),
                    e.order_id.as_deref().unwrap_or("-")
                )
            },
        );
        if !self.refused.is_empty() {
            text.push_str(
                "\nREFUSED DELIVERIES: wrong signature or token, too large, or another shop \
                 (`memberspot events list --refused --source NAME`)\n",
            );
            for (source, n) in &self.refused {
                text.push_str(&format!("  /hooks/{source}: {n}\n"));
            }
        }
        let n = self.problems();
        let subject = format!(
            "Memberspot Hub: {n} problem{} need{} attention",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        );
        // Slack shows the text alone: it starts with the subject.
        Message::new(subject.clone(), format!("{subject}\n{text}"))
    }
}

fn section(
    text: &mut String,
    title: &str,
    events: &[StoredEvent],
    line: impl Fn(&StoredEvent) -> String,
) {
    if events.is_empty() {
        return;
    }
    text.push_str(&format!("\n{title}\n"));
    for e in events.iter().take(LINES) {
        text.push_str(&format!("  {}\n", line(e)));
    }
    if events.len() > LINES {
        text.push_str(&format!("  … and {} more\n", events.len() - LINES));
    }
}

/// What went wrong in `[since, until)`: events that reached `dead` or `unmatched`, and
/// deliveries refused.
pub async fn collect(store: FlowStore<'_>, since: i64, until: i64) -> Result<Burst, HubError> {
    let finished = |status: EventStatus| EventFilter {
        statuses: vec![status],
        finished_since: Some(since),
        oldest_first: true,
        limit: Some(200),
        ..Default::default()
    };
    let before = |list: Vec<StoredEvent>| -> Vec<StoredEvent> {
        list.into_iter()
            .filter(|e| e.finished_at.is_some_and(|t| t < until))
            .collect()
    };
    Ok(Burst {
        since,
        until,
        dead: before(store.list_events(&finished(EventStatus::Dead)).await?),
        unmatched: before(store.list_events(&finished(EventStatus::Unmatched)).await?),
        refused: store.rejected_deliveries(since, until).await?,
    })
}

/// One check at `now`: sends the alert when there is something to tell and this quiet
/// period has none yet. Returns the alert's run id when this call sent it.
pub async fn check(flows: &Flows, now: DateTime<Utc>) -> Result<Option<String>, HubError> {
    let cfg = &flows.config().alerts;
    let store = flows.hub().flows_store();
    let now_ms = now.timestamp_millis();
    let since = match store.get_meta(WATERMARK).await? {
        Some(v) => v.parse::<i64>().unwrap_or(now_ms),
        None => {
            // First check ever: what happened before alerts existed is the digest's.
            store.set_meta(WATERMARK, &now_ms.to_string()).await?;
            return Ok(None);
        }
    };
    let burst = collect(store, since, now_ms).await?;
    if burst.is_empty() {
        return Ok(None);
    }
    let quiet_ms = i64::try_from(cfg.quiet.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let period = now_ms / quiet_ms;
    let Some(run) = store
        .insert_run(&NewRun {
            flow: "alerts".into(),
            trigger: "problems".into(),
            fire_key: Some(format!("alerts:{period}")),
            dry_run: false,
            input: json!({"since": burst.since, "until": burst.until, "problems": burst.problems()}),
            worker: flows.worker_id().to_owned(),
        })
        .await?
    else {
        return Ok(None); // this quiet period has had its alert
    };
    let msg = burst.message();
    let mut delivered = 0;
    for target in &cfg.to {
        let started = Instant::now();
        let result = flows.deliver_with_retry(*target, &msg).await;
        delivered += usize::from(result.is_ok());
        let name = format!("{target:?}").to_lowercase();
        flows
            .record_step(
                Some(&run.id),
                &name,
                "deliver",
                json!({"subject": msg.subject}),
                result.as_ref().map(|d| json!(d)),
                started,
            )
            .await;
    }
    let (status, error) = if delivered > 0 {
        // Told: the next alert starts here.
        store.set_meta(WATERMARK, &now_ms.to_string()).await?;
        (RunStatus::Ok, None)
    } else {
        (
            RunStatus::Failed,
            Some("no target took the alert; it is tried again next period"),
        )
    };
    store.finish_run(&run.id, status, error).await?;
    Ok(Some(run.id))
}

/// Checks every `check_secs` until cancelled.
pub(crate) async fn watch(flows: Flows, cancel: CancellationToken) {
    let every = flows.config().alerts.check;
    loop {
        match check(&flows, Utc::now()).await {
            Ok(Some(run)) => tracing::info!(run = %run, "alert sent"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "alert check failed; will retry"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
