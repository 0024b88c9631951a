//! Appending to the audit chain. Records are hashed in chain order onto the
//! head this process last saw and inserted as multi-row statements; the
//! database refuses a batch whose first record does not link to the real head
//! (migration 0005), and the append then locks the head, reads it and inserts.
//! A statement takes up to 64 records, and absent values are bound as a flag
//! plus a placeholder value (never as NULL, see `args.rs`), so there is one
//! statement text per batch size, prepared once on the writer's connection.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::any::AnyArguments;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Connection as _, Row};

use crate::audit::AUDIT_HEAD_KEY;
use crate::hash::{canonical_json, record_hash};
use crate::sqlite_lane::{LaneError, Param, SqliteLane};
use crate::{AuditRecord, Backend, NewAuditRecord, Store, StoreError};

/// The error the database raises when an append does not link to the chain head.
const AUDIT_HEAD_MOVED: &str = "audit chain head moved";
/// A pinned connection idle for longer than this is checked before its next use.
const PINNED_IDLE_CHECK: Duration = Duration::from_secs(1);

/// Largest chunk (rows per INSERT); chunks are 1, 2, 4, … up to this.
const MAX_CHUNK: usize = 64;
/// Placeholders per row: 10 plain values and 7 optional ones as (flag, value).
const PARAMS_PER_ROW: usize = 26;

impl Store {
    /// Appends a record to the chain and returns it with its seq, id and hashes.
    pub async fn append_audit(&self, r: &NewAuditRecord) -> Result<AuditRecord, StoreError> {
        let mut out = self.append_audit_batch(std::slice::from_ref(r)).await?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("an append returned no record".into()))
    }

    /// Appends records to the chain in order, all or none: one statement for up to
    /// [`audit_chunk_len`] records, else one transaction.
    pub async fn append_audit_batch(
        &self,
        records: &[NewAuditRecord],
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.append_audit_on(&mut conn, records.to_vec()).await
    }

    /// A connection for one long-running task; see [`PinnedConnection`].
    pub fn pinned(&self) -> PinnedConnection {
        PinnedConnection {
            store: self.clone(),
            conn: None,
            lane: None,
        }
    }

    /// The fast path is one autocommit statement chained onto the head this process
    /// last saw. If another writer moved the head meanwhile (or the batch needs several
    /// statements), the append takes the head's lock first, reads it, and inserts in that
    /// transaction, so it cannot lose again however busy the other writers are.
    async fn append_audit_on(
        &self,
        conn: &mut AnyConnection,
        records: Vec<NewAuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if audit_chunks(&records).len() == 1
            && let Some(head) = self.known_audit_head()
        {
            match insert_audit_chunks(conn, &records, &head).await {
                Ok((stamps, new_head)) => return Ok(self.appended(records, stamps, new_head)),
                Err(AppendError::HeadMoved) => {}
                Err(AppendError::Store(e)) => {
                    self.remember_audit_head(None);
                    return Err(e);
                }
            }
        }
        let result = async {
            let mut tx = match self.backend {
                Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres => conn.begin().await?,
            };
            let head = self.locked_audit_head(&mut tx).await?;
            let done = insert_audit_chunks(&mut tx, &records, &head)
                .await
                .map_err(|e| match e {
                    AppendError::HeadMoved => StoreError::Corrupt(
                        "the audit chain head moved while locked; run `memberspot audit verify`"
                            .into(),
                    ),
                    AppendError::Store(e) => e,
                })?;
            tx.commit().await?;
            Ok::<_, StoreError>(done)
        }
        .await;
        match result {
            Ok((stamps, new_head)) => Ok(self.appended(records, stamps, new_head)),
            Err(e) => {
                self.remember_audit_head(None);
                Err(e)
            }
        }
    }

    fn appended(
        &self,
        records: Vec<NewAuditRecord>,
        stamps: Vec<Stamp>,
        new_head: String,
    ) -> Vec<AuditRecord> {
        self.remember_audit_head(Some(new_head));
        records
            .into_iter()
            .zip(stamps)
            .map(|(r, stamp)| stamp.into_record(r))
            .collect()
    }

    /// The head's hash, read in a write transaction that holds it until the end: the
    /// SQLite write lock (BEGIN IMMEDIATE), the head row's lock on PostgreSQL.
    async fn locked_audit_head(&self, tx: &mut AnyConnection) -> Result<String, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT value FROM meta WHERE key = $1",
            Backend::Postgres => "SELECT value FROM meta WHERE key = $1 FOR UPDATE",
        };
        let value: Option<String> = sqlx::query_scalar(sql)
            .bind(AUDIT_HEAD_KEY)
            .fetch_optional(&mut *tx)
            .await?;
        let head = value
            .as_deref()
            .and_then(|v| v.split_once(' '))
            .map(|(_, hash)| hash.to_owned())
            .ok_or_else(|| {
                StoreError::Corrupt(
                    "the audit chain head is missing from the store's metadata; \
                     run `memberspot audit verify`"
                        .into(),
                )
            })?;
        Ok(head)
    }

    /// The head hash this process last saw, if it has seen one.
    fn known_audit_head(&self) -> Option<String> {
        self.audit_head.lock().ok().and_then(|h| h.clone())
    }

    fn remember_audit_head(&self, head: Option<String>) {
        if let Ok(mut known) = self.audit_head.lock() {
            *known = head;
        }
    }
}

/// A pool connection kept by one long-running task (the audit writer, the
/// directory check). Its statements skip the pool's liveness check per
/// acquire, a round trip each; a connection idle for a while is checked before
/// its next use, and one that fails is replaced.
pub struct PinnedConnection {
    store: Store,
    conn: Option<(PoolConnection<Any>, Instant)>,
    /// SQLite: statements driven on this task's thread (see `sqlite_lane.rs`).
    lane: Option<SqliteLane>,
}

impl PinnedConnection {
    async fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        if let Some((conn, last_used)) = self.conn.as_mut()
            && last_used.elapsed() > PINNED_IDLE_CHECK
            && conn.ping().await.is_err()
        {
            self.conn = None;
        }
        let conn = match self.conn.take() {
            Some((conn, _)) => conn,
            None => self.store.pool.acquire().await?,
        };
        let (conn, _) = self.conn.insert((conn, Instant::now()));
        Ok(&mut **conn)
    }

    /// Awaits `next` (the holder's wait for work), giving the connection back if
    /// the store is closed meanwhile: [`Store::close`] waits for every connection.
    pub async fn idle<F: Future>(&mut self, next: F) -> F::Output {
        let mut next = std::pin::pin!(next);
        if self.conn.is_some() || self.lane.is_some() {
            tokio::select! {
                out = &mut next => return out,
                () = self.store.closed() => self.release(),
            }
        }
        next.await
    }

    /// Drops the connection after a failure, so the next use takes a fresh one.
    fn settle<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// As [`Store::append_audit_batch`], on this connection.
    pub async fn append_audit_batch(
        &mut self,
        records: Vec<NewAuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let store = self.store.clone();
        match self.append_on_lane(&records) {
            Ok(Some((stamps, new_head))) => return Ok(store.appended(records, stamps, new_head)),
            Ok(None) => {}
            Err(e) => {
                store.remember_audit_head(None);
                return Err(e);
            }
        }
        let conn = self.conn().await?;
        let result = store.append_audit_on(conn, records).await;
        self.settle(result)
    }

    /// The fast path on the lane: one statement onto the known head. `None` when there
    /// is no lane, no known head, more than one statement's worth, another connection
    /// holding the write lock or a moved head; nothing was written then.
    fn append_on_lane(
        &mut self,
        records: &[NewAuditRecord],
    ) -> Result<Option<(Vec<Stamp>, String)>, StoreError> {
        if audit_chunks(records).len() != 1 {
            return Ok(None);
        }
        let Some(head) = self.store.known_audit_head() else {
            return Ok(None);
        };
        let Some(lane) = self.lane() else {
            return Ok(None);
        };
        let rows = audit_rows(records, &head)?;
        let params = rows.iter().flat_map(AuditRow::params);
        match lane.insert_returning(audit_insert_sql(rows.len()), params) {
            Ok(stored) => Ok(Some(stamp_rows(rows, stored, head)?)),
            Err(LaneError::Busy) => Ok(None),
            Err(LaneError::Failed(m)) if m.contains(AUDIT_HEAD_MOVED) => {
                // Straight to the locked path: the known head is stale.
                self.store.remember_audit_head(None);
                Ok(None)
            }
            Err(e) => {
                self.lane = None;
                Err(e.into())
            }
        }
    }

    /// As [`Store::directory_version`], on this connection.
    pub async fn directory_version(&mut self) -> Result<i64, StoreError> {
        if let Some(v) = self.directory_version_now() {
            return Ok(v);
        }
        let conn = self.conn().await?;
        let result = crate::directory::directory_version(conn).await;
        self.settle(result)
    }

    /// The directory version read on this thread (the lane), if that can be done
    /// without waiting; `None` otherwise (no lane, or a lock in the way).
    pub fn directory_version_now(&mut self) -> Option<i64> {
        let lane = self.lane()?;
        match lane.query_i64(crate::directory::DIRECTORY_VERSION_SQL) {
            Ok(v) => Some(v),
            Err(LaneError::Busy) => None,
            // A read is safe to repeat: the sqlx connection answers, or reports the error.
            Err(_) => {
                self.lane = None;
                None
            }
        }
    }

    /// Gives back the pool connection and closes the lane (the store is closing).
    pub fn release(&mut self) {
        self.conn = None;
        self.lane = None;
    }

    /// This connection's lane, opened on first use where the store allows one; none
    /// once the store is closed.
    fn lane(&mut self) -> Option<&mut SqliteLane> {
        let target = self.store.lane.as_ref()?;
        if target.is_closed() {
            self.lane = None;
            return None;
        }
        if self.lane.is_none() {
            match target.open() {
                Ok(lane) => self.lane = Some(lane),
                Err(e) => {
                    tracing::debug!(error = %e, "SQLite lane unavailable");
                    return None;
                }
            }
        }
        self.lane.as_mut()
    }
}

/// Why an append attempt failed.
enum AppendError {
    /// Another writer moved the chain head first; lock it, read it and insert.
    HeadMoved,
    Store(StoreError),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.message().contains(AUDIT_HEAD_MOVED) => {
                AppendError::HeadMoved
            }
            _ => AppendError::Store(e.into()),
        }
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        AppendError::Store(e)
    }
}

/// Hashes `records` onto `head` and inserts them, a chunk per statement.
/// Returns what the store gave each record and the new head hash.
async fn insert_audit_chunks(
    conn: &mut AnyConnection,
    records: &[NewAuditRecord],
    head: &str,
) -> Result<(Vec<Stamp>, String), AppendError> {
    let mut out = Vec::with_capacity(records.len());
    let mut prev = head.to_owned();
    for chunk in audit_chunks(records) {
        let rows = audit_rows(chunk, &prev)?;
        let mut q = sqlx::query(audit_insert_sql(chunk.len()));
        for row in &rows {
            q = row.bind(q);
        }
        let mut stored = Vec::with_capacity(rows.len());
        for row in q.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("id").map_err(StoreError::from)?;
            let seq: i64 = row.try_get("seq").map_err(StoreError::from)?;
            stored.push((id, seq));
        }
        let (stamps, head) = stamp_rows(rows, stored, prev)?;
        out.extend(stamps);
        prev = head;
    }
    Ok((out, prev))
}

/// `records` hashed in order, the first onto `head`.
fn audit_rows<'a>(
    records: &'a [NewAuditRecord],
    head: &str,
) -> Result<Vec<AuditRow<'a>>, StoreError> {
    let mut rows: Vec<AuditRow<'a>> = Vec::with_capacity(records.len());
    for r in records {
        let prev = rows.last().map_or(head, |row| row.hash.as_str()).to_owned();
        rows.push(AuditRow::new(r, prev)?);
    }
    Ok(rows)
}

/// Each inserted row's stamp, from the `(id, seq)` pairs the INSERT returned, and the
/// new head hash (`head` if there were no rows).
fn stamp_rows(
    rows: Vec<AuditRow<'_>>,
    stored: Vec<(String, i64)>,
    head: String,
) -> Result<(Vec<Stamp>, String), StoreError> {
    let seqs: HashMap<String, i64> = stored.into_iter().collect();
    let new_head = rows.last().map_or(head, |row| row.hash.clone());
    let stamps = rows
        .into_iter()
        .map(|row| {
            let seq = *seqs
                .get(&row.id)
                .ok_or_else(|| StoreError::Corrupt("an appended record got no seq".into()))?;
            Ok(Stamp {
                seq,
                id: row.id,
                prev_hash: row.prev_hash,
                hash: row.hash,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((stamps, new_head))
}

/// What the store gave a record: its place in the chain.
struct Stamp {
    seq: i64,
    id: String,
    prev_hash: String,
    hash: String,
}

impl Stamp {
    fn into_record(self, r: NewAuditRecord) -> AuditRecord {
        AuditRecord {
            seq: self.seq,
            id: self.id,
            at: r.at,
            request_id: r.request_id,
            surface: r.surface,
            connection: r.connection,
            persona: r.persona,
            end_user: r.end_user,
            prompt: r.prompt,
            tool: r.tool,
            arguments: r.arguments,
            outcome: r.outcome,
            response: r.response,
            error: r.error,
            upstream_status: r.upstream_status,
            latency_ms: r.latency_ms,
            oauth_client: r.oauth_client,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// One record, ready to insert: its id, canonical JSON texts and hashes.
struct AuditRow<'a> {
    r: &'a NewAuditRecord,
    id: String,
    hash: String,
    prev_hash: String,
    arguments: String,
    response: Option<String>,
    latency_ms: i64,
    upstream_status: Option<i64>,
}

impl<'a> AuditRow<'a> {
    /// Hashes `r` onto `prev_hash`.
    fn new(r: &'a NewAuditRecord, prev_hash: String) -> Result<Self, StoreError> {
        let latency_ms = i64::try_from(r.latency_ms)
            .map_err(|_| StoreError::Invalid("latency_ms is out of range".into()))?;
        let id = uuid::Uuid::now_v7().to_string();
        // Stored exactly as hashed, so verification never depends on a JSON round trip.
        let arguments = canonical_json(&r.arguments);
        let response = r.response.as_ref().map(canonical_json);
        let upstream_status = r.upstream_status.map(i64::from);
        let hash = record_hash(
            &id,
            r,
            &arguments,
            response.as_deref(),
            latency_ms,
            &prev_hash,
        );
        Ok(AuditRow {
            r,
            id,
            hash,
            prev_hash,
            arguments,
            response,
            latency_ms,
            upstream_status,
        })
    }

    /// This row's placeholders' values, in the order of [`audit_insert_sql`]: an
    /// optional column is a flag and a value.
    fn params(&self) -> [Param<'_>; PARAMS_PER_ROW] {
        fn opt(v: Option<&str>) -> [Param<'_>; 2] {
            [
                Param::Int(i64::from(v.is_some())),
                Param::Text(v.unwrap_or("")),
            ]
        }
        let r = self.r;
        let [c0, c1] = opt(r.connection.as_deref());
        let [p0, p1] = opt(r.persona.as_deref());
        let [u0, u1] = opt(r.end_user.as_deref());
        let [q0, q1] = opt(r.prompt.as_deref());
        let [s0, s1] = opt(self.response.as_deref());
        let [e0, e1] = opt(r.error.as_deref());
        let [o0, o1] = opt(r.oauth_client.as_deref());
        [
            Param::Text(&self.id),
            Param::Int(r.at),
            Param::Text(&r.request_id),
            Param::Text(r.surface.as_str()),
            c0,
            c1,
            p0,
            p1,
            u0,
            u1,
            q0,
            q1,
            Param::Text(&r.tool),
            Param::Text(&self.arguments),
            Param::Text(r.outcome.as_str()),
            s0,
            s1,
            e0,
            e1,
            Param::Int(i64::from(self.upstream_status.is_some())),
            Param::Int(self.upstream_status.unwrap_or(0)),
            Param::Int(self.latency_ms),
            Param::Text(&self.prev_hash),
            Param::Text(&self.hash),
            o0,
            o1,
        ]
    }

    /// Binds this row's placeholders on a sqlx query.
    fn bind<'q>(&'q self, q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        self.params().into_iter().fold(q, |q, p| match p {
            Param::Text(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
        })
    }
}

/// How many of `remaining` records the next statement takes (at most [`MAX_CHUNK`]).
/// A batch of at most this size is appended in one statement.
pub fn audit_chunk_len(remaining: usize) -> usize {
    remaining.min(MAX_CHUNK)
}

/// Splits `rows` into chunks of [`audit_chunk_len`] sizes, in order.
fn audit_chunks<T>(rows: &[T]) -> Vec<&[T]> {
    rows.chunks(MAX_CHUNK).collect()
}

/// The INSERT for `rows` rows (1 to [`MAX_CHUNK`]), returning `seq, id`. One text per
/// size, built when first used; a pinned connection keeps each prepared.
fn audit_insert_sql(rows: usize) -> &'static str {
    static SQL: [OnceLock<String>; MAX_CHUNK] = [const { OnceLock::new() }; MAX_CHUNK];
    let rows = rows.clamp(1, MAX_CHUNK);
    SQL[rows - 1].get_or_init(|| build_insert(rows))
}

fn build_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (id, at, request_id, surface, connection, persona, end_user, \
         prompt, tool, arguments, outcome, response, error, upstream_status, latency_ms, \
         prev_hash, hash, oauth_client) VALUES ",
    );
    // Per column: a plain value (false) or an optional one (true), in column order.
    const OPTIONAL: [bool; 18] = [
        false, false, false, false, true, true, true, true, false, false, false, true, true, true,
        false, false, false, true,
    ];
    let mut n = 0;
    for row in 0..rows {
        let values: Vec<String> = OPTIONAL
            .iter()
            .map(|&optional| {
                n += if optional { 2 } else { 1 };
                if optional {
                    format!("CASE WHEN ${} = 1 THEN ${n} END", n - 1)
                } else {
                    format!("${n}")
                }
            })
            .collect();
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&values.join(", "));
        sql.push(')');
    }
    sql.push_str(" RETURNING seq, id");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditOutcome, Surface};

    fn record(request_id: &str) -> NewAuditRecord {
        NewAuditRecord {
            at: 1,
            request_id: request_id.into(),
            surface: Surface::McpHttp,
            connection: Some("school".into()),
            persona: Some("bot".into()),
            end_user: None,
            prompt: Some("why".into()),
            tool: "list_offers".into(),
            arguments: serde_json::json!({"page": 1}),
            outcome: AuditOutcome::Ok,
            response: None,
            error: None,
            upstream_status: Some(200),
            latency_ms: 3,
            oauth_client: None,
        }
    }

    /// On SQLite a pinned connection appends on its lane; when another writer moved the
    /// head or holds the write lock, it steps aside to its sqlx connection, which waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn the_lane_appends_and_steps_aside_for_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = Store::open(&url).await.unwrap();
        let other = Store::open(&url).await.unwrap();
        let mut pinned = store.pinned();

        // The head is not known yet: the locked path reads it.
        pinned.append_audit_batch(vec![record("a")]).await.unwrap();
        assert!(pinned.lane.is_none());
        // Under MEMBERSPOT_SQLITE_SYNCHRONOUS=FULL there are no lanes; the rest must hold.
        let lanes = store.has_lanes();
        let stored = pinned
            .append_audit_batch(vec![record("b"), record("c")])
            .await
            .unwrap();
        assert_eq!(
            pinned.lane.is_some(),
            lanes,
            "the second batch used the lane"
        );
        assert_eq!(stored[1].prev_hash, stored[0].hash);

        // Another store moved the head: the trigger refuses the lane's statement.
        let theirs = other.append_audit(&record("x")).await.unwrap();
        let mine = pinned.append_audit_batch(vec![record("d")]).await.unwrap();
        assert_eq!(mine[0].prev_hash, theirs.hash);

        // Another connection holds the write lock: the lane does not wait, the append
        // waits on the sqlx connection until the lock is released.
        let mut tx = other.begin_write().await.unwrap();
        sqlx::query("UPDATE meta SET value = value WHERE key = $1")
            .bind(AUDIT_HEAD_KEY)
            .execute(&mut *tx)
            .await
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.commit().await.unwrap();
        });
        let started = Instant::now();
        pinned.append_audit_batch(vec![record("e")]).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.await.unwrap();
        assert_eq!(pinned.lane.is_some(), lanes, "a busy lane is kept");

        let batch: Vec<_> = (0..MAX_CHUNK).map(|i| record(&format!("f{i}"))).collect();
        pinned.append_audit_batch(batch).await.unwrap();
        assert_eq!(
            pinned.directory_version().await.unwrap(),
            other.directory_version().await.unwrap()
        );
        let v = other.verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 6 + MAX_CHUNK as u64);
        pinned.release();
        store.close().await;
        assert_eq!(pinned.directory_version_now(), None, "no lane after close");
        assert!(pinned.lane.is_none());
        other.close().await;
    }

    #[test]
    fn chunks_are_at_most_max_chunk_in_order() {
        let sizes = |n: usize| {
            let items = vec![(); n];
            audit_chunks(&items)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(37), vec![37]);
        assert_eq!(sizes(200), vec![64, 64, 64, 8]);
        assert_eq!(sizes(0), Vec::<usize>::new());
    }

    #[test]
    fn insert_has_one_placeholder_per_bound_value() {
        for rows in [1, 2, 7, 37, MAX_CHUNK] {
            let sql = audit_insert_sql(rows);
            let last = format!("${}", rows * PARAMS_PER_ROW);
            assert!(
                sql.contains(&format!("{last} END)")),
                "{rows} rows end with {last}"
            );
            assert!(!sql.contains(&format!("${}", rows * PARAMS_PER_ROW + 1)));
            assert_eq!(sql.matches("CASE WHEN").count(), rows * 8);
        }
    }
}
