//! Webhook deliveries, the event store and its processing queue, per-order access state
//! and the poller's snapshots.
//!
//! The queue is the `events` table itself. Workers claim due rows with a lease
//! (`locked_by`, `locked_until`); on PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`, so
//! workers in several processes never take the same row, and on SQLite the claim runs in
//! an IMMEDIATE transaction, which serialises claimers. A worker that dies loses its lease
//! and the row becomes due again: delivery to handlers is at-least-once, and the handlers
//! make it exactly-once in effect (see `event_actions`).

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::args::Args;
use crate::kinds::parse_stored;
use crate::model::Backend;
use crate::{Store, StoreError, Verification, now_ms};

/// Maximum number of rows [`EventStore::list_events`] returns.
pub const MAX_EVENT_LIMIT: u32 = 10_000;

const EVENT_COLUMNS: &str = "seq, id, dedupe_key, delivery_id, source, provider, kind, name, \
     order_id, product_id, email, test, data, received_at, redeliveries, status, attempts, \
     next_attempt_at, locked_by, locked_until, last_error, finished_at, connection, verified, \
     refusal";

crate::kinds::stored_text! {
    /// Where an event is in its life.
    pub enum EventStatus("event status") {
        /// Waiting for a worker.
        Pending = "pending",
        /// Claimed by a worker (see `locked_by`).
        Processing = "processing",
        /// Failed, waiting for its next attempt.
        Retry = "retry",
        /// Handled; its actions ran.
        Done = "done",
        /// Stored and acknowledged, but no rule matches it: nothing was changed.
        Unmatched = "unmatched",
        /// Stored for the record; nothing to do (test pings, informational events).
        Ignored = "ignored",
        /// Failed authenticity checks after acknowledgement (PayPal post-back said INVALID).
        Rejected = "rejected",
        /// Gave up after the maximum number of attempts; replayable.
        Dead = "dead",
        /// Genuine, but its rule refuses it (another currency, or below the minimum amount):
        /// nothing was granted. `refusal` says why.
        RefusedAmount = "refused_amount",
    }
}

impl EventStatus {
    /// Refused for what it is (a forgery, a payment the rules do not accept): never acted
    /// on, never reported as a fact.
    pub fn is_refusal(self) -> bool {
        matches!(self, Self::Rejected | Self::RefusedAmount)
    }
}

/// Which stored events a consumer may act on or report as facts: **verified** (signature,
/// URL token or PayPal post-back), **not refused** (no rejected forgery, no payment the rules
/// refused), of the consumer's **own school** (connection) and, unless asked for, **live**
/// (not the provider's test traffic). The one definition every consumer uses: the digest,
/// event-triggered flows, the export, the readers of the poller's events. In SQL through
/// [`EventFilter::trusted`], in memory through [`Trusted::admits`]; a test keeps both equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub connection: String,
    pub include_test: bool,
}

impl Trusted {
    /// Live events of `connection`.
    pub fn live(connection: impl Into<String>) -> Self {
        Trusted {
            connection: connection.into(),
            include_test: false,
        }
    }

    /// Test traffic included (reported apart by the caller).
    pub fn with_test(mut self) -> Self {
        self.include_test = true;
        self
    }

    pub fn admits(&self, e: &StoredEvent) -> bool {
        e.verified
            && !e.status.is_refusal()
            && e.connection.as_deref() == Some(self.connection.as_str())
            && (self.include_test || !e.test)
    }

    /// The predicate as SQL over `events`, its values bound through `a`.
    pub(crate) fn sql<'a>(&'a self, a: &mut Args<'a>) -> String {
        format!(
            "(verified = 1 AND status NOT IN ('rejected', 'refused_amount') AND connection = {}{})",
            a.text(&self.connection),
            if self.include_test {
                ""
            } else {
                " AND test = 0"
            }
        )
    }
}

/// A received HTTP request to be recorded.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub source: String,
    pub provider: String,
    pub received_at: i64,
    /// Header pairs, credentials already redacted by the caller.
    pub headers: Vec<(String, String)>,
    /// Raw body; `None` for rejected deliveries (not kept).
    pub body: Option<Vec<u8>>,
    pub body_bytes: usize,
    /// `Verified`, or `Rejected` (kept without headers and body: the reason, size, source
    /// and time only). Older rows may say `Postback` (PayPal, checked after acknowledging).
    pub verification: Verification,
    pub error: Option<String>,
}

/// A stored delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    pub id: String,
    pub source: String,
    pub provider: String,
    pub received_at: i64,
    pub headers: serde_json::Value,
    /// Raw body bytes, when kept.
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
    pub body_bytes: i64,
    pub verification: Verification,
    pub error: Option<String>,
}

/// An event to be stored (and queued when its status is `Pending`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique per real-world event: a second insert with the same key is a redelivery.
    pub dedupe_key: String,
    pub source: String,
    pub provider: String,
    pub kind: String,
    pub name: String,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub email: Option<String>,
    pub test: bool,
    /// Amount in minor units (cents), when the event carries money.
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub data: serde_json::Value,
    pub status: EventStatus,
    /// The school the event belongs to (see [`Trusted`]).
    pub connection: Option<String>,
    /// Authenticity established before storing (every receiver verifies first).
    pub verified: bool,
}

/// The result of storing one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new event with this id.
    New(String),
    /// Already stored under this id (a redelivery); counted, nothing queued.
    Duplicate(String),
}

impl Inserted {
    pub fn id(&self) -> &str {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) => id,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub dedupe_key: String,
    pub delivery_id: Option<String>,
    pub source: String,
    pub provider: String,
    pub kind: String,
    pub name: String,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub email: Option<String>,
    pub test: bool,
    pub data: serde_json::Value,
    pub received_at: i64,
    pub redeliveries: i64,
    pub status: EventStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub last_error: Option<String>,
    pub finished_at: Option<i64>,
    /// The school the event belongs to.
    pub connection: Option<String>,
    pub verified: bool,
    /// Why the rules refused it (status `refused_amount`).
    pub refusal: Option<String>,
}

/// Which events [`EventStore::list_events`] returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub statuses: Vec<EventStatus>,
    pub source: Option<String>,
    pub kind: Option<String>,
    pub email: Option<String>,
    pub order_id: Option<String>,
    /// Received at or after (epoch ms).
    pub since: Option<i64>,
    /// Received before (epoch ms).
    pub until: Option<i64>,
    /// Reached a final status at or after (epoch ms).
    pub finished_since: Option<i64>,
    /// Only events with seq below this (paging backwards).
    pub before_seq: Option<i64>,
    /// Only events with seq above this (following the stream).
    pub after_seq: Option<i64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    pub limit: Option<u32>,
    /// Only events a consumer may act on (see [`Trusted`]).
    pub trusted: Option<Trusted>,
}

/// How an attempt ended, as recorded by [`EventStore::finish_event`].
#[derive(Debug, Clone)]
pub struct EventFinish {
    pub status: EventStatus,
    pub error: Option<String>,
    /// When a `Retry` becomes due (epoch ms).
    pub next_attempt_at: Option<i64>,
    /// One line for the history.
    pub detail: String,
    /// Why the event was refused (with [`EventStatus::RefusedAmount`]).
    pub refusal: Option<String>,
}

/// One line of an event's processing history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventLogEntry {
    pub at: i64,
    pub worker: String,
    pub attempt: i64,
    pub outcome: String,
    pub detail: String,
}

/// A tool call an event caused (or was about to cause).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventAction {
    pub event_id: String,
    pub step: i64,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// The audit record's request id.
    pub request_id: String,
    /// `planned`, `started` (sent; outcome unknown), `ok`, `failed` or `skipped`.
    pub state: String,
    pub detail: Option<String>,
    pub at: i64,
}

/// What the hub knows about one order's access.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderAccess {
    pub source: String,
    pub order_id: String,
    /// `none` (never granted), `active`, `suspended` or `ended`.
    pub state: String,
    pub offer_id: Option<String>,
    pub email: Option<String>,
    /// Why it is in this state (the event kind that put it there).
    pub reason: Option<String>,
    /// For subscriptions: access is paid until (epoch ms).
    pub paid_until: Option<i64>,
    pub updated_at: i64,
}

/// What a decision about an order was made under: who holds the order's lock and the
/// event's lease, and the state the order was read in.
#[derive(Debug, Clone, Copy)]
pub struct OrderFence<'a> {
    pub event_owner: &'a str,
    pub order_owner: &'a str,
    pub prior_state: &'a str,
}

/// What [`EventStore::purge_events`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventPurge {
    pub events: u64,
    pub deliveries: u64,
    pub refused_deliveries: u64,
}

/// Counts of events per status (for metrics and the digest).
pub type StatusCounts = HashMap<String, i64>;

/// What the events subsystem keeps in the store: deliveries, the event queue, per-order
/// access state and the poller's snapshots and settings. A view of a [`Store`]
/// ([`Store::events`]), so the subsystem reaches nothing else (personas, connections and
/// the audit log are the hub's).
#[derive(Debug, Clone, Copy)]
pub struct EventStore<'a> {
    store: &'a Store,
}

impl Store {
    pub fn events(&self) -> EventStore<'_> {
        EventStore { store: self }
    }
}

impl EventStore<'_> {
    /// A setting of the events subsystem (the poller's state), see [`Store::get_meta`].
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.get_meta(key).await
    }

    /// See [`Store::set_meta`].
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.set_meta(key, value).await
    }
}

impl EventStore<'_> {
    // ---------------------------------------------------------------- ingest

    /// Records a delivery and the events it carries in one transaction: when this returns
    /// `Ok`, the delivery may be acknowledged. Events whose `dedupe_key` is already stored
    /// are counted as redeliveries and not queued again.
    pub async fn record_delivery(
        &self,
        d: &NewDelivery,
        events: &[NewEvent],
    ) -> Result<Vec<Inserted>, StoreError> {
        let headers: serde_json::Map<String, serde_json::Value> = d
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone())))
            .collect();
        let headers = serde_json::Value::Object(headers).to_string();
        let (body, base64) = match &d.body {
            None => (None, false),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text.to_owned()), false),
                Err(_) => (Some(encode_base64(bytes)), true),
            },
        };
        let mut tx = self.store.begin_write().await?;
        let mut a = Args::default();
        let sql = format!(
            "INSERT INTO deliveries (id, source, provider, received_at, headers, body, \
             body_base64, body_bytes, verification, error) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            a.text(&d.id),
            a.text(&d.source),
            a.text(&d.provider),
            a.int(d.received_at),
            a.text(&headers),
            a.opt_text(body.as_deref()),
            a.int(i64::from(base64)),
            a.int(d.body_bytes as i64),
            a.text(d.verification.as_str()),
            a.opt_text(d.error.as_deref()),
        );
        a.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(insert_event(&mut tx, Some(&d.id), e, d.received_at).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Stores events that came from no delivery (the poller), in one transaction.
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Inserted>, StoreError> {
        self.insert_events_at(events, now_ms()).await
    }

    /// As [`EventStore::insert_events`], received at `received_at` (epoch ms): imports and tests.
    pub async fn insert_events_at(
        &self,
        events: &[NewEvent],
        received_at: i64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let now = received_at;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(insert_event(&mut tx, None, e, now).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT id, source, provider, received_at, headers, body, body_base64, body_bytes, \
             verification, error FROM deliveries WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// Counts of rejected deliveries received in `[since, until)` per source.
    pub async fn rejected_deliveries(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, COUNT(*) AS n FROM deliveries WHERE verification = 'rejected' \
             AND received_at >= $1 AND received_at < $2 GROUP BY source ORDER BY source",
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("source")?, r.try_get("n")?)))
            .collect()
    }

    /// Deletes, for retention: events received before `settled_before` that are finished
    /// (with their history, tool-call records and deliveries), and refused deliveries
    /// received before `refused_before` (epoch ms). Events still queued are never purged;
    /// per-order access state is kept (it decides later events).
    pub async fn purge_events(
        &self,
        settled_before: i64,
        refused_before: i64,
    ) -> Result<EventPurge, StoreError> {
        const DONE: &str = "status NOT IN ('pending', 'processing', 'retry')";
        let mut tx = self.store.begin_write().await?;
        for table in ["event_log", "event_actions"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE event_id IN \
                 (SELECT id FROM events WHERE received_at < $1 AND {DONE})"
            ))
            .bind(settled_before)
            .execute(&mut *tx)
            .await?;
        }
        let events = sqlx::query(&format!(
            "DELETE FROM events WHERE received_at < $1 AND {DONE}"
        ))
        .bind(settled_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let deliveries = sqlx::query(
            "DELETE FROM deliveries WHERE received_at < $1 AND verification <> 'rejected' \
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = deliveries.id)",
        )
        .bind(settled_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let refused = sqlx::query(
            "DELETE FROM deliveries WHERE received_at < $1 AND verification = 'rejected'",
        )
        .bind(refused_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(EventPurge {
            events,
            deliveries,
            refused_deliveries: refused,
        })
    }

    /// Refused deliveries, newest first (at most `limit`).
    pub async fn refused_deliveries(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self
            .refused_deliveries_before(source, None, limit)
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// One page of refused deliveries, newest first, each with its `seq`: those before
    /// `before_seq` when given (keyset paging).
    pub async fn refused_deliveries_before(
        &self,
        source: Option<&str>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Delivery)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, source, provider, received_at, headers, body, body_base64, \
             body_bytes, verification, error FROM deliveries WHERE verification = 'rejected' \
             AND ($1 IS NULL OR source = $1) AND ($2 IS NULL OR seq < $2) \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(source)
        .bind(before_seq)
        .bind(i64::from(limit.clamp(1, MAX_EVENT_LIMIT)))
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, delivery_from_row(r)?)))
            .collect()
    }

    // ---------------------------------------------------------------- queue

    /// Claims up to `limit` due events for `worker`, leasing them until `lease_until`
    /// (epoch ms). Due: pending, retry whose time has come, or processing whose lease
    /// expired (its worker died).
    pub async fn claim_events(
        &self,
        worker: &str,
        limit: u32,
        lease_until: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let now = now_ms();
        let skip_locked = match self.store.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE events SET status = 'processing', locked_by = $1, locked_until = $2 \
             WHERE seq IN (SELECT seq FROM events WHERE \
               (status IN ('pending', 'retry') AND next_attempt_at <= $3) \
               OR (status = 'processing' AND locked_until < $3) \
             ORDER BY next_attempt_at, seq LIMIT $4{skip_locked}) \
             RETURNING {EVENT_COLUMNS}"
        );
        let mut tx = self.store.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|e| (e.next_attempt_at, e.seq));
        Ok(events)
    }

    /// Earliest time (epoch ms) any queued event becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN status = 'processing' THEN locked_until ELSE next_attempt_at END) \
             FROM events WHERE status IN ('pending', 'retry', 'processing')",
        )
        .fetch_one(&self.store.pool)
        .await?;
        Ok(v)
    }

    /// Counts an attempt on a claimed event; `false` if the lease was lost.
    pub async fn start_attempt(&self, id: &str, worker: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE events SET attempts = attempts + 1 \
             WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.store.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ends an attempt: sets the status, releases the lease and appends to the history.
    /// Only the lease holder may finish (`false` if the lease was lost meanwhile).
    pub async fn finish_event(
        &self,
        id: &str,
        worker: &str,
        f: &EventFinish,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let finished = match f.status {
            EventStatus::Pending | EventStatus::Processing | EventStatus::Retry => None,
            _ => Some(now),
        };
        let mut tx = self.store.begin_write().await?;
        let mut a = Args::default();
        // A rejected event is not verified and gives its idempotency key up, so a genuine
        // delivery with the same key is processed instead of counted as a redelivery.
        let rejected = f.status == EventStatus::Rejected;
        let sql = format!(
            "UPDATE events SET status = {}, last_error = {}, next_attempt_at = {}, \
             finished_at = {}, locked_by = NULL, locked_until = NULL, refusal = {}{} \
             WHERE id = {} AND locked_by = {} AND status = 'processing'",
            a.text(f.status.as_str()),
            a.opt_text(f.error.as_deref()),
            a.int(f.next_attempt_at.unwrap_or(now)),
            a.opt_int(finished),
            a.opt_text(f.refusal.as_deref()),
            if rejected {
                ", verified = 0, dedupe_key = 'rejected:' || id || ':' || dedupe_key"
            } else {
                ""
            },
            a.text(id),
            a.text(worker),
        );
        let res = a.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        let attempt: i64 = sqlx::query_scalar("SELECT attempts FROM events WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        log_entry(
            &mut tx,
            id,
            now,
            worker,
            attempt,
            f.status.as_str(),
            &f.detail,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Assigns events of `source` stored before events carried their school (migration
    /// 0006) to `connection`. Returns how many rows changed.
    pub async fn backfill_event_connection(
        &self,
        source: &str,
        connection: &str,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE events SET connection = $1 WHERE source = $2 AND connection IS NULL",
        )
        .bind(connection)
        .bind(source)
        .execute(&self.store.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Marks an event verified (its PayPal post-back said VERIFIED).
    pub async fn mark_verified(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE events SET verified = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Extends the lease `owner` holds on a claimed event (and on the order it works on, if
    /// any) until `until` (epoch ms). `false` if the event's lease was lost: the work must
    /// stop, another worker may take it over.
    pub async fn renew_lease(
        &self,
        id: &str,
        owner: &str,
        order: Option<(&str, &str, &str)>,
        until: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE events SET locked_until = $1 \
             WHERE id = $2 AND locked_by = $3 AND status = 'processing'",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .execute(&self.store.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some((source, order_id, order_owner)) = order {
            let r = sqlx::query(
                "UPDATE order_access SET locked_until = $1 \
                 WHERE source = $2 AND order_id = $3 AND locked_by = $4",
            )
            .bind(until)
            .bind(source)
            .bind(order_id)
            .bind(order_owner)
            .execute(&self.store.pool)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Puts a claimed event back (e.g. its order is busy), taking back the attempt
    /// [`EventStore::start_attempt`] counted.
    pub async fn defer_event(
        &self,
        id: &str,
        worker: &str,
        due_at: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE events SET status = 'pending', next_attempt_at = $1, locked_by = NULL, \
             locked_until = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE id = $2 AND locked_by = $3 AND status = 'processing'",
        )
        .bind(due_at)
        .bind(id)
        .bind(worker)
        .execute(&self.store.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Queues an event again from scratch (attempts reset). Refused while it is being
    /// processed. Returns the updated event.
    pub async fn replay_event(&self, id: &str, by: &str) -> Result<StoredEvent, StoreError> {
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let res = sqlx::query(
            "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             last_error = NULL, finished_at = NULL WHERE id = $2 AND status <> 'processing'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT status FROM events WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match exists {
                None => StoreError::NotFound(format!("no event with id '{id}'")),
                Some(_) => StoreError::Conflict(format!(
                    "event '{id}' is being processed right now; replay it when it has finished"
                )),
            });
        }
        log_entry(&mut tx, id, now, by, 0, "replay", "queued again").await?;
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        event_from_row(&row)
    }

    // ---------------------------------------------------------------- reading

    pub async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let mut a = Args::default();
        let mut clauses: Vec<String> = Vec::new();
        if !f.statuses.is_empty() {
            let list: Vec<String> = f.statuses.iter().map(|s| a.text(s.as_str())).collect();
            clauses.push(format!("status IN ({})", list.join(", ")));
        }
        if let Some(v) = &f.source {
            clauses.push(format!("source = {}", a.text(v)));
        }
        if let Some(v) = &f.kind {
            clauses.push(format!("kind = {}", a.text(v)));
        }
        if let Some(v) = &f.email {
            clauses.push(format!("LOWER(email) = LOWER({})", a.text(v)));
        }
        if let Some(v) = &f.order_id {
            clauses.push(format!("order_id = {}", a.text(v)));
        }
        if let Some(v) = f.since {
            clauses.push(format!("received_at >= {}", a.int(v)));
        }
        if let Some(v) = f.until {
            clauses.push(format!("received_at < {}", a.int(v)));
        }
        if let Some(v) = f.finished_since {
            clauses.push(format!("finished_at >= {}", a.int(v)));
        }
        if let Some(v) = f.before_seq {
            clauses.push(format!("seq < {}", a.int(v)));
        }
        if let Some(v) = f.after_seq {
            clauses.push(format!("seq > {}", a.int(v)));
        }
        if let Some(t) = &f.trusted {
            clauses.push(t.sql(&mut a));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let order = if f.oldest_first { "ASC" } else { "DESC" };
        let limit = f.limit.unwrap_or(100).clamp(1, MAX_EVENT_LIMIT);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events{filter} ORDER BY seq {order} LIMIT {limit}"
        );
        let rows = a
            .bind(sqlx::query(&sql))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Number of events per status.
    pub async fn event_status_counts(&self) -> Result<StatusCounts, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM events GROUP BY status")
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn event_log(&self, id: &str) -> Result<Vec<EventLogEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, worker, attempt, outcome, detail FROM event_log \
             WHERE event_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventLogEntry {
                    at: r.try_get("at")?,
                    worker: r.try_get("worker")?,
                    attempt: r.try_get("attempt")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- actions

    pub async fn event_actions(&self, event_id: &str) -> Result<Vec<EventAction>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, step, tool, arguments, request_id, state, detail, at \
             FROM event_actions WHERE event_id = $1 ORDER BY step",
        )
        .bind(event_id)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(action_from_row).collect()
    }

    /// Commits a decision atomically: the order's new state and the tool calls that carry
    /// it out (as `planned` steps). Later attempts resume these steps instead of deciding
    /// again, so a retry never sees its own state change as "nothing to do".
    ///
    /// Fenced: it applies only while `fence.order_owner` holds the order's lock, the order is
    /// still in the state the decision was made from, and `fence.event_owner` still holds
    /// the event's lease. `false` (nothing written) otherwise: the caller decides again.
    pub async fn commit_decision(
        &self,
        order: &OrderAccess,
        fence: &OrderFence<'_>,
        event_id: &str,
        actions: &[(&str, &serde_json::Value)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let leased: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM events WHERE id = $1 AND locked_by = $2 AND status = 'processing'",
        )
        .bind(event_id)
        .bind(fence.event_owner)
        .fetch_optional(&mut *tx)
        .await?;
        if leased.is_none() || !update_order_fenced(&mut tx, order, fence).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let now = now_ms();
        for (step, (tool, args)) in actions.iter().enumerate() {
            sqlx::query(
                "INSERT INTO event_actions (event_id, step, tool, arguments, request_id, state, at) \
                 VALUES ($1, $2, $3, $4, '', 'planned', $5)",
            )
            .bind(event_id)
            .bind(step as i64)
            .bind(*tool)
            .bind(args.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a step as sent under `request_id` (its audit record's request id), before the
    /// call is made: a step found `started` later was interrupted and must be checked.
    /// Fenced by the event's lease: `false` (nothing written, nothing may be sent) when
    /// `owner` no longer holds it.
    pub async fn start_action(
        &self,
        event_id: &str,
        step: i64,
        request_id: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE event_actions SET state = 'started', request_id = $1, at = $2 \
             WHERE event_id = $3 AND step = $4 AND EXISTS (SELECT 1 FROM events e \
               WHERE e.id = $3 AND e.locked_by = $5 AND e.status = 'processing')",
        )
        .bind(request_id)
        .bind(now_ms())
        .bind(event_id)
        .bind(step)
        .bind(owner)
        .execute(&self.store.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records how a step ended; a new `request_id` when it was re-run.
    pub async fn finish_action(
        &self,
        event_id: &str,
        step: i64,
        state: &str,
        detail: Option<&str>,
        request_id: &str,
    ) -> Result<(), StoreError> {
        let mut a = Args::default();
        let sql = format!(
            "UPDATE event_actions SET state = {}, detail = {}, request_id = {}, at = {} \
             WHERE event_id = {} AND step = {}",
            a.text(state),
            a.opt_text(detail),
            a.text(request_id),
            a.int(now_ms()),
            a.text(event_id),
            a.int(step),
        );
        a.bind(sqlx::query(&sql)).execute(&self.store.pool).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- order access

    /// Takes the order's lock for `worker` until `until` (epoch ms); `false` if another
    /// worker holds it. Creates the order (state `none`) if it is new.
    pub async fn lock_order(
        &self,
        source: &str,
        order_id: &str,
        worker: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO order_access (source, order_id, state, updated_at) \
             VALUES ($1, $2, 'none', $3) ON CONFLICT (source, order_id) DO NOTHING",
        )
        .bind(source)
        .bind(order_id)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        let r = sqlx::query(
            "UPDATE order_access SET locked_by = $1, locked_until = $2 \
             WHERE source = $3 AND order_id = $4 \
             AND (locked_by IS NULL OR locked_by = $1 OR locked_until < $5)",
        )
        .bind(worker)
        .bind(until)
        .bind(source)
        .bind(order_id)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn unlock_order(
        &self,
        source: &str,
        order_id: &str,
        worker: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE order_access SET locked_by = NULL, locked_until = NULL \
             WHERE source = $1 AND order_id = $2 AND locked_by = $3",
        )
        .bind(source)
        .bind(order_id)
        .bind(worker)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    pub async fn get_order(
        &self,
        source: &str,
        order_id: &str,
    ) -> Result<Option<OrderAccess>, StoreError> {
        let row = sqlx::query(
            "SELECT source, order_id, state, offer_id, email, reason, paid_until, updated_at \
             FROM order_access WHERE source = $1 AND order_id = $2",
        )
        .bind(source)
        .bind(order_id)
        .fetch_optional(&self.store.pool)
        .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Orders in `state` (e.g. `suspended`), for expiry sweeps.
    pub async fn orders_in_state(&self, state: &str) -> Result<Vec<OrderAccess>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, order_id, state, offer_id, email, reason, paid_until, updated_at \
             FROM order_access WHERE state = $1 ORDER BY updated_at",
        )
        .bind(state)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Writes an order's state.
    pub async fn put_order(&self, o: &OrderAccess) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        upsert_order(&mut tx, o).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes an order's state if `fence` still holds (see [`EventStore::commit_decision`]; the
    /// event lease is not checked here). `false` when nothing was written.
    pub async fn put_order_fenced(
        &self,
        o: &OrderAccess,
        fence: &OrderFence<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let written = update_order_fenced(&mut tx, o, fence).await?;
        tx.commit().await?;
        Ok(written)
    }

    // ---------------------------------------------------------------- poller

    /// The poller's last snapshot of a connection: key → JSON text.
    pub async fn load_snapshot(
        &self,
        connection: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM poll_snapshots WHERE connection = $1")
            .bind(connection)
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect()
    }

    /// Applies a diff to the snapshot and stores the events it produced, atomically: after
    /// a crash either both happened or neither, so no change is reported twice or lost.
    /// `changes`: key → new value (`None` deletes). `meta` is set in the same transaction.
    pub async fn apply_poll(
        &self,
        connection: &str,
        changes: &[(String, Option<String>)],
        events: &[NewEvent],
        meta: &[(String, String)],
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        for (key, value) in changes {
            match value {
                Some(v) => {
                    sqlx::query(
                        "INSERT INTO poll_snapshots (connection, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (connection, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(connection)
                    .bind(key)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM poll_snapshots WHERE connection = $1 AND key = $2")
                        .bind(connection)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(insert_event(&mut tx, None, e, now).await?);
        }
        for (k, v) in meta {
            crate::meta::check_meta_key(k)?;
            crate::meta::put_meta(&mut *tx, k, v).await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    delivery_id: Option<&str>,
    e: &NewEvent,
    received_at: i64,
) -> Result<Inserted, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    let data = e.data.to_string();
    let mut a = Args::default();
    let sql = format!(
        "INSERT INTO events (id, dedupe_key, delivery_id, source, provider, kind, name, \
         order_id, product_id, email, test, data, received_at, redeliveries, status, attempts, \
         next_attempt_at, finished_at, amount_minor, currency, connection, verified) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 0, {}, 0, {}, {}, {}, {}, {}, {}) \
         ON CONFLICT (dedupe_key) DO NOTHING",
        a.text(&id),
        a.text(&e.dedupe_key),
        a.opt_text(delivery_id),
        a.text(&e.source),
        a.text(&e.provider),
        a.text(&e.kind),
        a.text(&e.name),
        a.opt_text(e.order_id.as_deref()),
        a.opt_text(e.product_id.as_deref()),
        a.opt_text(e.email.as_deref()),
        a.int(i64::from(e.test)),
        a.text(&data),
        a.int(received_at),
        a.text(e.status.as_str()),
        // Due now by the store's clock (the one claims compare with), whatever the
        // receiver's clock said about `received_at`.
        a.int(now_ms()),
        a.opt_int(match e.status {
            EventStatus::Pending => None,
            _ => Some(received_at),
        }),
        a.opt_int(e.amount_minor),
        a.opt_text(e.currency.as_deref()),
        a.opt_text(e.connection.as_deref()),
        a.int(i64::from(e.verified)),
    );
    let res = a.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
    if res.rows_affected() > 0 {
        return Ok(Inserted::New(id));
    }
    let existing: String = sqlx::query_scalar(
        "UPDATE events SET redeliveries = redeliveries + 1 WHERE dedupe_key = $1 RETURNING id",
    )
    .bind(&e.dedupe_key)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Inserted::Duplicate(existing))
}

/// Updates an order only while `fence.order_owner` holds its lock and it is still in
/// `fence.prior_state`: a decision made from a state that has moved on is never applied.
async fn update_order_fenced(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    o: &OrderAccess,
    fence: &OrderFence<'_>,
) -> Result<bool, StoreError> {
    let mut a = Args::default();
    let sql = format!(
        "UPDATE order_access SET state = {}, offer_id = {}, email = {}, reason = {}, \
         paid_until = {}, updated_at = {} \
         WHERE source = {} AND order_id = {} AND locked_by = {} AND state = {}",
        a.text(&o.state),
        a.opt_text(o.offer_id.as_deref()),
        a.opt_text(o.email.as_deref()),
        a.opt_text(o.reason.as_deref()),
        a.opt_int(o.paid_until),
        a.int(o.updated_at),
        a.text(&o.source),
        a.text(&o.order_id),
        a.text(fence.order_owner),
        a.text(fence.prior_state),
    );
    let r = a.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
    Ok(r.rows_affected() > 0)
}

async fn upsert_order(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    o: &OrderAccess,
) -> Result<(), StoreError> {
    let mut a = Args::default();
    let sql = format!(
        "INSERT INTO order_access (source, order_id, state, offer_id, email, reason, \
         paid_until, updated_at) VALUES ({}, {}, {}, {}, {}, {}, {}, {}) \
         ON CONFLICT (source, order_id) DO UPDATE SET state = excluded.state, \
         offer_id = excluded.offer_id, email = excluded.email, reason = excluded.reason, \
         paid_until = excluded.paid_until, updated_at = excluded.updated_at",
        a.text(&o.source),
        a.text(&o.order_id),
        a.text(&o.state),
        a.opt_text(o.offer_id.as_deref()),
        a.opt_text(o.email.as_deref()),
        a.opt_text(o.reason.as_deref()),
        a.opt_int(o.paid_until),
        a.int(o.updated_at),
    );
    a.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
    Ok(())
}

async fn log_entry(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event_id: &str,
    at: i64,
    worker: &str,
    attempt: i64,
    outcome: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO event_log (event_id, at, worker, attempt, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event_id)
    .bind(at)
    .bind(worker)
    .bind(attempt)
    .bind(outcome)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn event_from_row(r: &AnyRow) -> Result<StoredEvent, StoreError> {
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    let data: String = r.try_get("data")?;
    let test: i64 = r.try_get("test")?;
    Ok(StoredEvent {
        seq: r.try_get("seq")?,
        dedupe_key: r.try_get("dedupe_key")?,
        delivery_id: r.try_get("delivery_id")?,
        source: r.try_get("source")?,
        provider: r.try_get("provider")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        order_id: r.try_get("order_id")?,
        product_id: r.try_get("product_id")?,
        email: r.try_get("email")?,
        test: test != 0,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("event {id}: data is not JSON: {e}")))?,
        received_at: r.try_get("received_at")?,
        redeliveries: r.try_get("redeliveries")?,
        status: parse_stored(&status, &format!("event {id}"))?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        locked_by: r.try_get("locked_by")?,
        locked_until: r.try_get("locked_until")?,
        last_error: r.try_get("last_error")?,
        finished_at: r.try_get("finished_at")?,
        connection: r.try_get("connection")?,
        verified: r.try_get::<i64, _>("verified")? != 0,
        refusal: r.try_get("refusal")?,
        id,
    })
}

fn delivery_from_row(r: &AnyRow) -> Result<Delivery, StoreError> {
    let id: String = r.try_get("id")?;
    let headers: String = r.try_get("headers")?;
    let body: Option<String> = r.try_get("body")?;
    let base64: i64 = r.try_get("body_base64")?;
    let verification: String = r.try_get("verification")?;
    let body = match body {
        None => None,
        Some(t) if base64 != 0 => Some(decode_base64(&t).ok_or_else(|| {
            StoreError::Corrupt(format!("delivery {id}: body is not valid base64"))
        })?),
        Some(t) => Some(t.into_bytes()),
    };
    Ok(Delivery {
        source: r.try_get("source")?,
        provider: r.try_get("provider")?,
        received_at: r.try_get("received_at")?,
        headers: serde_json::from_str(&headers)
            .map_err(|e| StoreError::Corrupt(format!("delivery {id}: headers: {e}")))?,
        body,
        body_bytes: r.try_get("body_bytes")?,
        verification: parse_stored(&verification, &format!("delivery {id}"))?,
        error: r.try_get("error")?,
        id,
    })
}

fn action_from_row(r: &AnyRow) -> Result<EventAction, StoreError> {
    let args: String = r.try_get("arguments")?;
    Ok(EventAction {
        event_id: r.try_get("event_id")?,
        step: r.try_get("step")?,
        tool: r.try_get("tool")?,
        arguments: serde_json::from_str(&args)
            .map_err(|e| StoreError::Corrupt(format!("event action arguments: {e}")))?,
        request_id: r.try_get("request_id")?,
        state: r.try_get("state")?,
        detail: r.try_get("detail")?,
        at: r.try_get("at")?,
    })
}

fn order_from_row(r: &AnyRow) -> Result<OrderAccess, StoreError> {
    Ok(OrderAccess {
        source: r.try_get("source")?,
        order_id: r.try_get("order_id")?,
        state: r.try_get("state")?,
        offer_id: r.try_get("offer_id")?,
        email: r.try_get("email")?,
        reason: r.try_get("reason")?,
        paid_until: r.try_get("paid_until")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            &[0xff, 0xfe, 0x00, 0x80],
        ] {
            let enc = encode_base64(s);
            assert_eq!(decode_base64(&enc).as_deref(), Some(s), "{enc}");
        }
        assert_eq!(encode_base64(b"hello"), "aGVsbG8=");
    }
}
