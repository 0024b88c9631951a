//! Log notifications (`logging/setLevel`) and progress notifications (a request's
//! `_meta.progressToken`).
//!
//! MCP marks logging as deprecated in its newest revision; clients of the revisions
//! this server negotiates still use it, so it stays until they stop.
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use memberspot_api::progress::{Progress, ProgressSink};
use std::future::Future;

use memberspot_hub::{CallContext, CallOutcome};
use rmcp::RoleServer;
use rmcp::model::{
    LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{Peer, RequestContext};
use serde_json::json;

/// The least severe level this session's client wants; `None` until it sets one.
#[derive(Clone, Default)]
pub(super) struct LogLevel(Arc<Mutex<Option<LoggingLevel>>>);

impl LogLevel {
    pub(super) fn set(&self, level: LoggingLevel) {
        if let Ok(mut l) = self.0.lock() {
            *l = Some(level);
        }
    }

    fn wants(&self, level: LoggingLevel) -> bool {
        let min = self.0.lock().ok().and_then(|l| *l);
        min.is_some_and(|min| rank(level) >= rank(min))
    }

    /// One line per tool call: the tool, its outcome and its audit record.
    pub(super) async fn after_call(
        &self,
        peer: &Peer<RoleServer>,
        tool: &str,
        outcome: &CallOutcome,
    ) {
        let (level, data) = match &outcome.result {
            Ok(_) => (LoggingLevel::Info, json!({ "tool": tool, "outcome": "ok" })),
            Err(e) => (
                LoggingLevel::Warning,
                json!({ "tool": tool, "outcome": e.outcome().as_str(), "error": e.to_string() }),
            ),
        };
        let mut data = data;
        if let Some(record) = &outcome.audit {
            data["audit_id"] = json!(record.id);
        }
        self.send(peer, level, data).await;
    }

    pub(super) async fn send(
        &self,
        peer: &Peer<RoleServer>,
        level: LoggingLevel,
        data: serde_json::Value,
    ) {
        if !self.wants(level) {
            return;
        }
        let mut param = LoggingMessageNotificationParam::new(level, data);
        param.logger = Some("memberspot".to_string());
        // A client that went away misses a log line; the call itself is unaffected.
        let _ = peer.notify_logging_message(param).await;
    }
}

fn rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Runs `f` with `call` carrying the request's progress sink (when the client sent a
/// progress token), and returns once every notification is sent, so that they reach the
/// client before the answer.
pub(super) async fn with_progress<T, F, Fut>(
    ctx: &RequestContext<RoleServer>,
    mut call: CallContext,
    f: F,
) -> T
where
    F: FnOnce(CallContext) -> Fut,
    Fut: Future<Output = T>,
{
    let progress = RequestProgress::start(ctx);
    call.progress = progress.as_ref().map(|p| p.sink.clone());
    // `f` owns the context: the sink's last clone is gone when it returns.
    let out = f(call).await;
    if let Some(p) = progress {
        p.finish().await;
    }
    out
}

/// The progress notifications of one request, when its client sent a progress token.
struct RequestProgress {
    sink: ProgressSink,
    sender: tokio::task::JoinHandle<()>,
}

impl RequestProgress {
    /// A sink that turns the call's reports into notifications for the request's progress
    /// token, sent in order by one task; none without a token.
    fn start(ctx: &RequestContext<RoleServer>) -> Option<RequestProgress> {
        let token = ctx.meta.get_progress_token()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
        let peer = ctx.peer.clone();
        let sender = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if peer.notify_progress(p).await.is_err() {
                    break;
                }
            }
        });
        let last = Mutex::new(0.0_f64);
        let sink = ProgressSink::new(move |p| {
            let Ok(mut last) = last.lock() else { return };
            let note = notification(&token, &mut last, p);
            let _ = tx.send(note);
        });
        Some(RequestProgress { sink, sender })
    }

    /// Waits until every notification is sent, so they reach the client before the
    /// answer. Call it once the call (and its context) holds no clone of the sink.
    async fn finish(self) {
        drop(self.sink);
        let _ = self.sender.await;
    }
}

/// The notification for one report. MCP wants `progress` to grow with every
/// notification: a wait between items moves it by a hair.
fn notification(token: &ProgressToken, last: &mut f64, p: Progress) -> ProgressNotificationParam {
    let (value, total, message) = match p {
        Progress::Step {
            done,
            total,
            message,
        } => (done as f64, Some(total as f64), message),
        Progress::Waiting(d) => (
            *last + 0.001,
            None,
            format!(
                "waiting {:.1}s for the school's rate limit",
                d.as_secs_f64()
            ),
        ),
    };
    *last = value.max(*last + 0.001);
    let mut n = ProgressNotificationParam::new(token.clone(), *last);
    n.total = total;
    n.message = Some(message);
    n
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::model::NumberOrString;

    use super::*;

    #[test]
    fn progress_grows_with_every_notification() {
        let token = ProgressToken(NumberOrString::Number(1));
        let mut last = 0.0;
        let reports = [
            Progress::Waiting(Duration::from_secs(1)),
            Progress::Step {
                done: 1,
                total: 3,
                message: "a".into(),
            },
            Progress::Waiting(Duration::from_secs(1)),
            Progress::Waiting(Duration::from_secs(1)),
            Progress::Step {
                done: 2,
                total: 3,
                message: "b".into(),
            },
        ];
        let mut seen = Vec::new();
        for r in reports {
            seen.push(notification(&token, &mut last, r).progress);
        }
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        assert_eq!(seen[4], 2.0);
    }
}
