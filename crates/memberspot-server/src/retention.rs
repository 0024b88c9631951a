//! Audit retention while the hub runs: records older than the retention period are
//! deleted hourly (`audit_retention_days`; `memberspot audit purge` does it once).

use std::net::SocketAddr;
use std::time::Duration;

use memberspot_hub::Hub;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::plugin::{Plugin, spawn_periodic};

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
        let (hub, days) = (self.hub.clone(), self.days);
        vec![spawn_periodic(
            "audit retention",
            EVERY,
            cancel,
            move || {
                let hub = hub.clone();
                async move {
                    let n = hub.purge_audit_older_than(days).await?;
                    if n > 0 {
                        tracing::info!(purged = n, days, "audit retention");
                    }
                    Ok::<_, memberspot_hub::HubError>(())
                }
            },
        )]
    }

    fn summary(&self, _addr: SocketAddr) -> Vec<String> {
        vec![format!(
            "  audit records are kept {} days (purged hourly)",
            self.days
        )]
    }
}
