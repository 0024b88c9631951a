//! Progress of a long call, for surfaces that can show it (MCP progress notifications).
//!
//! The caller installs a [`ProgressSink`] around a call with [`scope`]; code deep in the
//! call (a bulk tool after each item, the pacer before a long wait) reports with
//! [`report`] without every signature in between carrying it. Without a sink, reports
//! go nowhere.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One report.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// `done` of `total` items are finished.
    Step {
        done: u64,
        total: u64,
        message: String,
    },
    /// The call waits this long for the school's rate limit before its next request.
    Waiting(Duration),
}

/// Where reports go. Cheap to clone.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressSink {
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(f))
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

tokio::task_local! {
    static SINK: ProgressSink;
}

/// Runs `fut` with `sink` receiving its reports (none when `sink` is `None`).
pub async fn scope<F: Future>(sink: Option<ProgressSink>, fut: F) -> F::Output {
    match sink {
        Some(sink) => SINK.scope(sink, fut).await,
        None => fut.await,
    }
}

/// Reports to the sink of the current call, if it has one.
pub fn report(p: Progress) {
    let _ = SINK.try_with(|sink| (sink.0)(p));
}

/// Waits shorter than this are not worth a report.
pub(crate) const WAIT_WORTH_REPORTING: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn reports_reach_the_sink_of_their_scope_only() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = ProgressSink::new(move |p| s.lock().expect("lock").push(p));
        report(Progress::Waiting(Duration::from_secs(1)));
        scope(Some(sink), async {
            report(Progress::Waiting(Duration::from_secs(2)));
        })
        .await;
        scope(None, async {
            report(Progress::Waiting(Duration::from_secs(3)))
        })
        .await;
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![Progress::Waiting(Duration::from_secs(2))]
        );
    }
}
