//! Reading, verifying and purging the audit chain (appending is in `audit_append.rs`).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::hash::HashInput;
use crate::kinds::parse_stored;
use crate::meta::{meta_value, put_meta};
use crate::{AuditFilter, AuditRecord, AuditVerification, ChainHead, Store, StoreError, ZERO_HASH};

/// Default and maximum number of records [`Store::query_audit`] returns.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
pub const MAX_AUDIT_LIMIT: u32 = 10_000;

/// `"<seq> <hash>"` of the newest audit record. Appends chain onto it, and verification uses
/// it to notice records deleted from the end of the log.
pub(crate) const AUDIT_HEAD_KEY: &str = "store.audit_head";
/// `"<seq> <hash>"` of the newest purged audit record: the first kept record chains onto it.
const AUDIT_ANCHOR_KEY: &str = "store.audit_anchor";
/// Records read per round trip while verifying the chain.
const VERIFY_PAGE: i64 = 1000;
const AUDIT_COLUMNS: &str = "seq, id, at, request_id, surface, connection, persona, end_user, \
     prompt, tool, arguments, outcome, response, error, upstream_status, latency_ms, prev_hash, hash, \
     oauth_client";

impl Store {
    /// Records matching every set condition of `f`, by seq ascending (descending with
    /// `newest_first`), at most `f.limit` (default 100, capped at 10000).
    pub async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        enum Arg<'a> {
            Text(&'a str),
            Int(i64),
        }
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg<'_>> = Vec::new();
        let texts = [
            ("persona =", &f.persona),
            ("request_id =", &f.request_id),
            ("tool =", &f.tool),
            ("outcome =", &f.outcome),
            ("surface =", &f.surface),
        ];
        for (cond, value) in texts {
            if let Some(v) = value {
                args.push(Arg::Text(v));
                conds.push(format!("{cond} ${}", args.len()));
            }
        }
        let ints = [
            ("at >=", f.since_ms),
            ("at <", f.until_ms),
            ("seq >", f.after_seq),
            ("seq <", f.before_seq),
        ];
        for (cond, value) in ints {
            if let Some(v) = value {
                args.push(Arg::Int(v));
                conds.push(format!("{cond} ${}", args.len()));
            }
        }
        let limit = f.limit.unwrap_or(DEFAULT_AUDIT_LIMIT).min(MAX_AUDIT_LIMIT);
        // Bound, not inlined: every distinct SQL text is another cached prepared statement.
        args.push(Arg::Int(i64::from(limit)));
        let limit_param = args.len();
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(if f.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq ASC"
        });
        sql.push_str(&format!(" LIMIT ${limit_param}"));

        let mut q = sqlx::query(&sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// Walks the whole chain in seq order (one consistent snapshot), recomputing every hash
    /// from the stored columns and checking every link; also checks that the newest record
    /// is the recorded chain head (records deleted from the end) and that the oldest one
    /// links to the purge anchor (records deleted from the start).
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        self.verify_chain(None).await
    }

    /// [`Store::verify_audit`], and the record at `anchor.seq` must still be in the chain
    /// with `anchor.hash`. Someone who can write the database can rewrite the chain from
    /// some record on with valid hashes, which the walk alone cannot tell; but every hash
    /// covers all records before it, so a rewrite that starts at or before the anchored
    /// record changes that record's hash. An anchor whose record was purged cannot be
    /// checked, and fails (use a newer one).
    pub async fn verify_audit_anchor(
        &self,
        anchor: &ChainHead,
    ) -> Result<AuditVerification, StoreError> {
        self.verify_chain(Some(anchor)).await
    }

    /// The chain head: the newest record's seq and hash (`0` and the zero hash when the log
    /// has never had a record). Kept outside the database, it is an anchor for
    /// [`Store::verify_audit_anchor`].
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(head_or_start(chain_pos(&self.pool, AUDIT_HEAD_KEY).await?))
    }

    async fn verify_chain(
        &self,
        wanted: Option<&ChainHead>,
    ) -> Result<AuditVerification, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let anchor = chain_pos(&mut *tx, AUDIT_ANCHOR_KEY).await?;
        let head = chain_pos(&mut *tx, AUDIT_HEAD_KEY).await?;
        // The stored hash of the record `wanted` names, once the walk passes it.
        let mut wanted_found: Option<String> = None;

        let mut expected_prev = anchor
            .as_ref()
            .map_or_else(|| ZERO_HASH.to_owned(), |a| a.hash.clone());
        let mut prev_seq: Option<i64> = None;
        let mut records: u64 = 0;
        let mut bad: Option<(Option<i64>, String)> = None;
        let mut cursor = i64::MIN;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(cursor)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                cursor = seq;
                records += 1;
                let stored = StoredAudit::from_row(row);
                if wanted.is_some_and(|w| w.seq == seq) {
                    wanted_found = Some(
                        stored
                            .as_ref()
                            .map_or_else(|_| String::new(), |s| s.hash.clone()),
                    );
                }
                if bad.is_none() {
                    bad = check_link(
                        seq,
                        stored.as_ref().ok(),
                        &expected_prev,
                        prev_seq,
                        anchor.as_ref(),
                    )
                    .map(|problem| (Some(seq), problem));
                }
                // Keep walking after a problem to count every record.
                expected_prev = match stored {
                    Ok(s) => s.hash,
                    Err(_) => String::new(),
                };
                prev_seq = Some(seq);
            }
            if (rows.len() as i64) < VERIFY_PAGE {
                break;
            }
        }
        tx.commit().await?;

        if bad.is_none() {
            bad = check_head(head.as_ref(), &expected_prev, prev_seq, records);
        }
        if bad.is_none()
            && let Some(w) = wanted
        {
            bad = check_anchor(w, wanted_found.as_deref(), anchor.as_ref(), head.as_ref())
                .map(|problem| (Some(w.seq), problem));
        }
        let head = head_or_start(head);
        Ok(match bad {
            None => AuditVerification {
                records,
                ok: true,
                first_bad_seq: None,
                problem: None,
                head,
            },
            Some((seq, problem)) => AuditVerification {
                records,
                ok: false,
                first_bad_seq: seq,
                problem: Some(problem),
                head,
            },
        })
    }

    /// Deletes the oldest records, those with `at < before_ms`, and returns how many.
    /// Only a prefix of the chain is removed (it stops at the first record, in seq order,
    /// that is not older), and the last deleted record's hash becomes the anchor the first
    /// kept record is verified against, so verification stays ok.
    pub async fn purge_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_audit_write().await?;
        let first_kept: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at >= $1")
                .bind(before_ms)
                .fetch_one(&mut *tx)
                .await?;
        let last_deleted = match first_kept {
            Some(k) => {
                sqlx::query(
                    "SELECT seq, hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(k)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(last) = last_deleted else {
            return Ok(0);
        };
        let seq: i64 = last.try_get("seq")?;
        let hash: String = last.try_get("hash")?;
        let res = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        put_meta(&mut *tx, AUDIT_ANCHOR_KEY, &format!("{seq} {hash}")).await?;
        tx.commit().await?;
        tracing::info!(
            deleted = res.rows_affected(),
            anchor_seq = seq,
            "audit log purged"
        );
        Ok(res.rows_affected())
    }
}

/// A position in the audit chain, kept in meta as `"<seq> <hash>"`.
struct ChainPos {
    seq: i64,
    hash: String,
}

async fn chain_pos<'e, E>(e: E, key: &str) -> Result<Option<ChainPos>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let Some(v) = meta_value(e, key).await? else {
        return Ok(None);
    };
    v.split_once(' ')
        .and_then(|(seq, hash)| {
            Some(ChainPos {
                seq: seq.parse().ok()?,
                hash: hash.to_owned(),
            })
        })
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt(format!("meta '{key}' is not '<seq> <hash>'")))
}

/// The first problem with record `seq`, if any: its own hash, then its link to the previous.
fn check_link(
    seq: i64,
    stored: Option<&StoredAudit>,
    expected_prev: &str,
    prev_seq: Option<i64>,
    anchor: Option<&ChainPos>,
) -> Option<String> {
    let Some(s) = stored else {
        return Some(format!("record {seq}: columns cannot be read (edited)"));
    };
    if s.recompute_hash() != s.hash {
        return Some(format!(
            "record {seq}: hash does not match its contents (edited)"
        ));
    }
    if s.prev_hash != expected_prev {
        return Some(match (prev_seq, anchor) {
            (Some(p), _) => format!(
                "record {seq}: previous hash does not match record {p} (a record was deleted)"
            ),
            (None, Some(a)) => format!(
                "record {seq}: previous hash does not match the purge anchor (record {}) \
                 (a record was deleted)",
                a.seq
            ),
            (None, None) => format!(
                "record {seq}: previous hash does not match the start of the chain \
                 (a record was deleted)"
            ),
        });
    }
    None
}

/// After a clean walk: does the chain end at the recorded head?
fn check_head(
    head: Option<&ChainPos>,
    last_hash: &str,
    last_seq: Option<i64>,
    records: u64,
) -> Option<(Option<i64>, String)> {
    match head {
        Some(h) if h.hash != last_hash => {
            let end = match last_seq {
                Some(s) => format!("the log ends at record {s}"),
                None => "the log is empty".to_owned(),
            };
            Some((
                Some(h.seq),
                format!(
                    "record {}: missing; it is the newest record but {end} \
                     (records were deleted from the end)",
                    h.seq
                ),
            ))
        }
        None if records > 0 => Some((
            None,
            "the chain head is missing from the store's metadata".to_owned(),
        )),
        _ => None,
    }
}

/// After a clean walk: is the anchored record still there, with the anchored hash?
/// `found` is the stored hash of the record at `wanted.seq`, if the walk met one.
fn check_anchor(
    wanted: &ChainHead,
    found: Option<&str>,
    purged: Option<&ChainPos>,
    head: Option<&ChainPos>,
) -> Option<String> {
    let short = |h: &str| h.chars().take(12).collect::<String>();
    let mismatch = |stored: &str| {
        format!(
            "record {}: its hash is now {}…, not {}… as anchored (the chain was rewritten \
             from this record or an earlier one)",
            wanted.seq,
            short(stored),
            short(&wanted.hash)
        )
    };
    if let Some(stored) = found {
        return (stored != wanted.hash).then(|| mismatch(stored));
    }
    // The anchor of an empty log, or the last purged record: both are still known.
    let start = purged.map_or((0, ZERO_HASH), |p| (p.seq, p.hash.as_str()));
    if wanted.seq == start.0 {
        return (start.1 != wanted.hash).then(|| mismatch(start.1));
    }
    if wanted.seq < start.0 {
        return Some(format!(
            "record {}: purged (the log now starts after record {}), so this anchor cannot be \
             checked; use a newer anchor",
            wanted.seq, start.0
        ));
    }
    let head_seq = head.map_or(0, |h| h.seq);
    Some(if wanted.seq > head_seq {
        format!(
            "record {}: missing; the chain ends at record {head_seq} (records were removed, \
             or the anchor is from another database)",
            wanted.seq
        )
    } else {
        format!(
            "record {}: missing from the chain (records were removed and the chain rewritten)",
            wanted.seq
        )
    })
}

fn head_or_start(head: Option<ChainPos>) -> ChainHead {
    head.map_or_else(
        || ChainHead {
            seq: 0,
            hash: ZERO_HASH.to_owned(),
        },
        |h| ChainHead {
            seq: h.seq,
            hash: h.hash,
        },
    )
}

/// An audit row as stored (JSON still as text), for verification.
struct StoredAudit {
    id: String,
    at: i64,
    request_id: String,
    surface: String,
    connection: Option<String>,
    persona: Option<String>,
    end_user: Option<String>,
    prompt: Option<String>,
    tool: String,
    arguments: String,
    outcome: String,
    response: Option<String>,
    error: Option<String>,
    upstream_status: Option<i64>,
    latency_ms: i64,
    prev_hash: String,
    hash: String,
    oauth_client: Option<String>,
}

impl StoredAudit {
    fn from_row(row: &AnyRow) -> Result<StoredAudit, sqlx::Error> {
        Ok(StoredAudit {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            request_id: row.try_get("request_id")?,
            surface: row.try_get("surface")?,
            connection: row.try_get("connection")?,
            persona: row.try_get("persona")?,
            end_user: row.try_get("end_user")?,
            prompt: row.try_get("prompt")?,
            tool: row.try_get("tool")?,
            arguments: row.try_get("arguments")?,
            outcome: row.try_get("outcome")?,
            response: row.try_get("response")?,
            error: row.try_get("error")?,
            upstream_status: row.try_get("upstream_status")?,
            latency_ms: row.try_get("latency_ms")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            oauth_client: row.try_get("oauth_client")?,
        })
    }

    fn recompute_hash(&self) -> String {
        HashInput {
            id: &self.id,
            at: self.at,
            request_id: &self.request_id,
            surface: &self.surface,
            connection: self.connection.as_deref(),
            persona: self.persona.as_deref(),
            end_user: self.end_user.as_deref(),
            prompt: self.prompt.as_deref(),
            tool: &self.tool,
            arguments: &self.arguments,
            outcome: &self.outcome,
            response: self.response.as_deref(),
            error: self.error.as_deref(),
            upstream_status: self.upstream_status,
            latency_ms: self.latency_ms,
            prev_hash: &self.prev_hash,
            oauth_client: self.oauth_client.as_deref(),
        }
        .hash_after(&self.prev_hash)
    }
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let seq: i64 = row.try_get("seq")?;
    let s = StoredAudit::from_row(row)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit record {seq}: {what}"));
    let owner = format!("audit record {seq}");
    Ok(AuditRecord {
        seq,
        surface: parse_stored(&s.surface, &owner)?,
        outcome: parse_stored(&s.outcome, &owner)?,
        arguments: serde_json::from_str(&s.arguments)
            .map_err(|_| corrupt("arguments are not valid JSON"))?,
        response: s
            .response
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt("response is not valid JSON"))?,
        upstream_status: s
            .upstream_status
            .map(u16::try_from)
            .transpose()
            .map_err(|_| corrupt("upstream status is out of range"))?,
        latency_ms: u64::try_from(s.latency_ms).map_err(|_| corrupt("latency is negative"))?,
        id: s.id,
        at: s.at,
        request_id: s.request_id,
        connection: s.connection,
        persona: s.persona,
        end_user: s.end_user,
        prompt: s.prompt,
        tool: s.tool,
        error: s.error,
        oauth_client: s.oauth_client,
        prev_hash: s.prev_hash,
        hash: s.hash,
    })
}
