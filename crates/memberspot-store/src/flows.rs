//! Flow runs and their steps, named leases, and the aggregate reads the daily digest
//! needs (counts and sums over a time window, computed by the database).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::args::Args;
use crate::error::is_unique_violation;
use crate::kinds::parse_stored;
use crate::{
    AuditOutcome, ChainHead, EventFilter, EventStatus, RunStatus, Store, StoreError, StoredEvent,
    Surface, Trusted, now_ms,
};

/// Events in a window, grouped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventCount {
    pub source: String,
    pub provider: String,
    pub kind: String,
    pub status: EventStatus,
    pub test: bool,
    pub currency: Option<String>,
    /// The offer or course (poller events) or product (payments).
    pub product_id: Option<String>,
    pub count: i64,
    /// Sum of `amount_minor` over the group (0 when no amounts).
    pub amount_minor: i64,
}

/// Tool calls in a window, grouped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditCount {
    pub persona: Option<String>,
    pub surface: Surface,
    pub tool: String,
    pub outcome: AuditOutcome,
    pub count: i64,
}

/// A run to record. `fire_key`, when set, makes the run happen once across instances.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub flow: String,
    pub trigger: String,
    pub fire_key: Option<String>,
    pub dry_run: bool,
    pub input: serde_json::Value,
    pub worker: String,
}

/// A recorded run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowRun {
    pub seq: i64,
    pub id: String,
    pub flow: String,
    pub trigger: String,
    pub fire_key: Option<String>,
    pub dry_run: bool,
    pub status: RunStatus,
    pub input: serde_json::Value,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub worker: String,
}

/// One step (or loop iteration) of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowStep {
    pub name: String,
    pub kind: String,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub attempts: i64,
    pub started_at: i64,
    pub duration_ms: i64,
}

const RUN_COLUMNS: &str = "seq, id, flow, trigger, fire_key, dry_run, status, input, started_at, finished_at, error, worker";

/// What flows keep in the store: runs and their steps, leases, and the reads the daily
/// digest, event-triggered flows and exports need (grouped counts, events read only,
/// the audit chain head, their own settings). A view of a [`Store`] ([`Store::flows`]).
#[derive(Debug, Clone, Copy)]
pub struct FlowStore<'a> {
    store: &'a Store,
}

impl Store {
    pub fn flows(&self) -> FlowStore<'_> {
        FlowStore { store: self }
    }
}

impl FlowStore<'_> {
    /// A setting of flows (an export's or trigger's checkpoint), see [`Store::get_meta`].
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.get_meta(key).await
    }

    /// See [`Store::set_meta`].
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.set_meta(key, value).await
    }

    /// Stored events, read only: see [`EventStore::list_events`](crate::EventStore::list_events).
    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        self.store.events().list_events(f).await
    }

    /// Refused delivery attempts per source: see [`EventStore::rejected_deliveries`](crate::EventStore::rejected_deliveries).
    pub async fn rejected_deliveries(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.store.events().rejected_deliveries(since, until).await
    }

    /// The audit chain head (the digest shows it as an anchor): see [`Store::audit_head`].
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.store.audit_head().await
    }
}

impl FlowStore<'_> {
    // ---------------------------------------------------------------- digest reads

    /// Events received in `[since, until)` that `trusted` admits (PostgreSQL sums to
    /// NUMERIC, hence the cast), grouped by source, provider, kind, status, test flag,
    /// currency and product, with counts and summed amounts.
    pub async fn event_counts(
        &self,
        since: i64,
        until: i64,
        trusted: &Trusted,
    ) -> Result<Vec<EventCount>, StoreError> {
        let mut a = Args::default();
        let sql = format!(
            "SELECT source, provider, kind, status, test, currency, product_id, COUNT(*) AS n, \
             CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS amount FROM events \
             WHERE received_at >= {} AND received_at < {} AND {} \
             GROUP BY source, provider, kind, status, test, currency, product_id \
             ORDER BY source, kind, product_id",
            a.int(since),
            a.int(until),
            trusted.sql(&mut a),
        );
        self.event_count_rows(a, &sql).await
    }

    /// Events of `connection` received in `[since, until)` that were refused (rejected
    /// forgeries, payments the rules refused), grouped like [`FlowStore::event_counts`]: the
    /// digest's problems.
    pub async fn refused_event_counts(
        &self,
        since: i64,
        until: i64,
        connection: &str,
    ) -> Result<Vec<EventCount>, StoreError> {
        let mut a = Args::default();
        let sql = format!(
            "SELECT source, provider, kind, status, test, currency, product_id, COUNT(*) AS n, \
             CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS amount FROM events \
             WHERE received_at >= {} AND received_at < {} AND connection = {} \
             AND status IN ('rejected', 'refused_amount') \
             GROUP BY source, provider, kind, status, test, currency, product_id \
             ORDER BY source, kind, product_id",
            a.int(since),
            a.int(until),
            a.text(connection),
        );
        self.event_count_rows(a, &sql).await
    }

    async fn event_count_rows(
        &self,
        a: Args<'_>,
        sql: &str,
    ) -> Result<Vec<EventCount>, StoreError> {
        let rows = a.bind(sqlx::query(sql)).fetch_all(&self.store.pool).await?;
        rows.iter()
            .map(|r| {
                let test: i64 = r.try_get("test")?;
                let status: String = r.try_get("status")?;
                Ok(EventCount {
                    source: r.try_get("source")?,
                    provider: r.try_get("provider")?,
                    kind: r.try_get("kind")?,
                    status: parse_stored(&status, "events")?,
                    test: test != 0,
                    currency: r.try_get("currency")?,
                    product_id: r.try_get("product_id")?,
                    count: r.try_get("n")?,
                    amount_minor: r.try_get("amount")?,
                })
            })
            .collect()
    }

    /// Tool calls recorded in `[since, until)`, grouped by persona, surface, tool and outcome.
    pub async fn audit_counts(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<AuditCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT persona, surface, tool, outcome, COUNT(*) AS n FROM audit_log \
             WHERE at >= $1 AND at < $2 GROUP BY persona, surface, tool, outcome \
             ORDER BY persona, tool, outcome",
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let surface: String = r.try_get("surface")?;
                let outcome: String = r.try_get("outcome")?;
                Ok(AuditCount {
                    persona: r.try_get("persona")?,
                    surface: parse_stored(&surface, "audit log")?,
                    tool: r.try_get("tool")?,
                    outcome: parse_stored(&outcome, "audit log")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- leases

    /// Takes the named lease for `holder` until `until` (epoch ms) if it is free, expired or
    /// already theirs. Across processes: the row's primary key arbitrates.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .execute(&self.store.pool)
        .await?;
        if inserted.rows_affected() > 0 {
            return Ok(true);
        }
        let taken = sqlx::query(
            "UPDATE leases SET holder = $1, until = $2 \
             WHERE name = $3 AND (holder = $1 OR until < $4)",
        )
        .bind(holder)
        .bind(until)
        .bind(name)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        Ok(taken.rows_affected() > 0)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------- runs

    /// Records a run as `running`. `Ok(None)` when its `fire_key` was taken: another
    /// instance (or an earlier start) already ran this fire.
    pub async fn insert_run(&self, r: &NewRun) -> Result<Option<FlowRun>, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let input = r.input.to_string();
        let mut a = Args::default();
        let sql = format!(
            "INSERT INTO flow_runs (id, flow, trigger, fire_key, dry_run, status, input, \
             started_at, worker) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}) \
             RETURNING {RUN_COLUMNS}",
            a.text(&id),
            a.text(&r.flow),
            a.text(&r.trigger),
            a.opt_text(r.fire_key.as_deref()),
            a.int(i64::from(r.dry_run)),
            a.text(RunStatus::Running.as_str()),
            a.text(&input),
            a.int(now),
            a.text(&r.worker),
        );
        match a.bind(sqlx::query(&sql)).fetch_one(&self.store.pool).await {
            Ok(row) => run_from_row(&row).map(Some),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a fire already happened (by its key).
    pub async fn run_fired(&self, fire_key: &str) -> Result<bool, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT seq FROM flow_runs WHERE fire_key = $1")
            .bind(fire_key)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(v.is_some())
    }

    pub async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut a = Args::default();
        let sql = format!(
            "UPDATE flow_runs SET status = {}, error = {}, finished_at = {} WHERE id = {}",
            a.text(status.as_str()),
            a.opt_text(error),
            a.int(now_ms()),
            a.text(id),
        );
        a.bind(sqlx::query(&sql)).execute(&self.store.pool).await?;
        Ok(())
    }

    pub async fn add_step(&self, run_id: &str, s: &FlowStep) -> Result<(), StoreError> {
        let input = s.input.as_ref().map(|v| v.to_string());
        let output = s.output.as_ref().map(|v| v.to_string());
        let mut a = Args::default();
        let sql = format!(
            "INSERT INTO flow_steps (run_id, name, kind, input, output, error, attempts, \
             started_at, duration_ms) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
            a.text(run_id),
            a.text(&s.name),
            a.text(&s.kind),
            a.opt_text(input.as_deref()),
            a.opt_text(output.as_deref()),
            a.opt_text(s.error.as_deref()),
            a.int(s.attempts),
            a.int(s.started_at),
            a.int(s.duration_ms),
        );
        a.bind(sqlx::query(&sql)).execute(&self.store.pool).await?;
        Ok(())
    }

    /// Runs, newest first; of one flow when given.
    pub async fn list_runs(
        &self,
        flow: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FlowRun>, StoreError> {
        let mut a = Args::default();
        let filter = match flow {
            Some(f) => format!(" WHERE flow = {}", a.text(f)),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs{filter} ORDER BY seq DESC LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = a
            .bind(sqlx::query(&sql))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Failed runs that started at or after `since`, newest first, at most `limit`.
    pub async fn failed_runs_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<Vec<FlowRun>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs WHERE status = $1 AND started_at >= $2 \
             ORDER BY seq DESC LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = sqlx::query(&sql)
            .bind(crate::RunStatus::Failed.as_str())
            .bind(since)
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<FlowRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    pub async fn run_steps(&self, run_id: &str) -> Result<Vec<FlowStep>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, input, output, error, attempts, started_at, duration_ms \
             FROM flow_steps WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let input: Option<String> = r.try_get("input")?;
                let output: Option<String> = r.try_get("output")?;
                Ok(FlowStep {
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    input: input.map(|t| parse_json(&t)),
                    output: output.map(|t| parse_json(&t)),
                    error: r.try_get("error")?,
                    attempts: r.try_get("attempts")?,
                    started_at: r.try_get("started_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }
}

/// Stored JSON, or the text itself when it is not JSON.
fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

fn run_from_row(r: &AnyRow) -> Result<FlowRun, StoreError> {
    let dry: i64 = r.try_get("dry_run")?;
    let input: String = r.try_get("input")?;
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    Ok(FlowRun {
        status: parse_stored(&status, &format!("flow run {id}"))?,
        seq: r.try_get("seq")?,
        id,
        flow: r.try_get("flow")?,
        trigger: r.try_get("trigger")?,
        fire_key: r.try_get("fire_key")?,
        dry_run: dry != 0,
        input: parse_json(&input),
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        error: r.try_get("error")?,
        worker: r.try_get("worker")?,
    })
}
