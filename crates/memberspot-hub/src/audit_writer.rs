//! Group commit for the audit log. Calls hand their record to one writer
//! task and wait for it to be stored; the writer appends what is queued at
//! that moment in as few statements as the store allows (each one statement
//! and commit for many calls). Alone, a call pays one statement. Every call
//! still returns only after its record is durable.

use memberspot_store::{
    AuditRecord, NewAuditRecord, PinnedConnection, Store, StoreError, audit_chunk_len,
};
use tokio::sync::{mpsc, oneshot};

use crate::HubError;

/// Records taken from the queue at once.
const BATCH: usize = 256;

type Reply = oneshot::Sender<Result<AuditRecord, StoreError>>;

#[derive(Clone)]
pub(crate) struct AuditWriter {
    queue: mpsc::Sender<(NewAuditRecord, Reply)>,
}

impl AuditWriter {
    /// Starts the writer task; it ends when the last `AuditWriter` is dropped.
    pub(crate) fn spawn(store: Store) -> Self {
        let (queue, mut rx) = mpsc::channel::<(NewAuditRecord, Reply)>(4 * BATCH);
        tokio::spawn(async move {
            let mut conn = store.pinned();
            let mut queued = Vec::with_capacity(BATCH);
            while conn.idle(rx.recv_many(&mut queued, BATCH)).await > 0 {
                let (mut records, mut replies): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut queued).into_iter().unzip();
                while !records.is_empty() {
                    let take = audit_chunk_len(records.len());
                    let rest_records = records.split_off(take);
                    let rest_replies = replies.split_off(take);
                    append(&mut conn, records, replies).await;
                    records = rest_records;
                    replies = rest_replies;
                }
            }
        });
        AuditWriter { queue }
    }

    /// Stores the record in `slot` (batched with concurrent ones) and returns it with its
    /// hashes. The record leaves `slot` only once the writer has it, so if this future
    /// is dropped while waiting for room in the queue, the caller still holds it.
    pub(crate) async fn append(
        &self,
        slot: &mut Option<NewAuditRecord>,
    ) -> Result<AuditRecord, HubError> {
        let stopped = || HubError::Unavailable("the audit writer has stopped".into());
        let permit = self.queue.reserve().await.map_err(|_| stopped())?;
        let record = slot
            .take()
            .ok_or_else(|| HubError::Unavailable("no audit record to append".into()))?;
        let (tx, rx) = oneshot::channel();
        permit.send((record, tx));
        rx.await
            .map_err(|_| stopped())?
            .map_err(|m| HubError::Unavailable(format!("audit log: {m}")))
    }

    /// Stores `record` without waiting for it (from `Drop`, where nothing can wait).
    pub(crate) fn append_detached(&self, record: NewAuditRecord) {
        let (tx, _) = oneshot::channel();
        let lost = |why: &str| tracing::error!(why, "an audit record was lost");
        match self.queue.try_send((record, tx)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return lost("no async runtime to queue it on");
                };
                let queue = self.queue.clone();
                rt.spawn(async move {
                    if queue.send(item).await.is_err() {
                        lost("the audit writer has stopped");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => lost("the audit writer has stopped"),
        }
    }
}

/// Appends one statement's worth of records and answers their callers.
async fn append(conn: &mut PinnedConnection, records: Vec<NewAuditRecord>, replies: Vec<Reply>) {
    match conn.append_audit_batch(records).await {
        Ok(stored) => {
            for (reply, record) in replies.into_iter().zip(stored) {
                let _ = reply.send(Ok(record));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
