//! Group commit for the audit log. Calls hand their record to one writer
//! task and wait for it to be stored; the writer appends everything queued
//! at that moment in one transaction. Under load many calls share one lock
//! and one commit; alone, a call pays one transaction as before. Every call
//! still returns only after its record is durable.

use memberspot_store::{AuditRecord, NewAuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::HubError;

/// Records per transaction at most.
const BATCH: usize = 256;

type Reply = oneshot::Sender<Result<AuditRecord, String>>;

#[derive(Clone)]
pub(crate) struct AuditWriter {
    queue: mpsc::Sender<(NewAuditRecord, Reply)>,
}

impl AuditWriter {
    /// Starts the writer task; it ends when the last `AuditWriter` is dropped.
    pub(crate) fn spawn(store: Store) -> Self {
        let (queue, mut rx) = mpsc::channel::<(NewAuditRecord, Reply)>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let (records, replies): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut batch).into_iter().unzip();
                match store.append_audit_batch(&records).await {
                    Ok(stored) => {
                        for (reply, record) in replies.into_iter().zip(stored) {
                            let _ = reply.send(Ok(record));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        AuditWriter { queue }
    }

    /// Stores `record` (batched with concurrent ones) and returns it with its hashes.
    pub(crate) async fn append(&self, record: NewAuditRecord) -> Result<AuditRecord, HubError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((record, tx))
            .await
            .map_err(|_| HubError::Unavailable("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| HubError::Unavailable("the audit writer has stopped".into()))?
            .map_err(|m| HubError::Unavailable(format!("audit log: {m}")))
    }
}
