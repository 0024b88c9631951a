//! Audit retention while the hub runs: records older than the retention period are
//! deleted hourly (`audit_retention_days`; `memberspot audit purge` does it once).

use std::net::SocketAddr;
use std::time::Duration;

use memberspot_hub::Hub;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::plugin::Plugin;

const EVERY: Duration = Duration::from_secs(3600);

pub struct AuditRetention {
    hub: Hub,
    days: u32,
}

impl AuditRetention {
    pub fn new(hub: Hub, days: u32) -> AuditRetention {
        AuditRetention { hub, days }
    }
}

impl Plugin for AuditRetention {
    fn name(&self) -> &str {
        "audit-retention"
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        vec![tokio::spawn(purge_hourly(
            self.hub.clone(),
            self.days,
            cancel,
        ))]
    }

    fn summary(&self, _addr: SocketAddr) -> Vec<String> {
        vec![format!(
            "  audit records are kept {} days (purged hourly)",
            self.days
        )]
    }
}

async fn purge_hourly(hub: Hub, days: u32, cancel: CancellationToken) {
    loop {
        match hub.purge_audit_older_than(days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, days, "audit retention"),
            Err(e) => tracing::warn!(error = %e, "audit retention failed; will retry"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
