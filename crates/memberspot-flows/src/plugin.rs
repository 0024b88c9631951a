//! Flows as a plug-in of the server: `/v1/flows` and the daily summary's routes, the
//! scheduler (the daily summary and cron flows) and the event-trigger loop.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use memberspot_server::Plugin;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::service::Flows;

pub struct FlowsPlugin {
    flows: Flows,
    /// The flows file `flows` was configured from, if any (for the startup summary).
    flows_file: Option<PathBuf>,
}

impl FlowsPlugin {
    pub fn new(flows: Flows, flows_file: Option<PathBuf>) -> FlowsPlugin {
        FlowsPlugin { flows, flows_file }
    }
}

impl Plugin for FlowsPlugin {
    fn name(&self) -> &str {
        "flows"
    }

    fn routes(&self) -> Option<(Router, utoipa::openapi::OpenApi)> {
        Some(crate::rest::routes(self.flows.clone()))
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        self.flows.spawn(cancel)
    }

    fn summary(&self, _addr: SocketAddr) -> Vec<String> {
        let Some(path) = &self.flows_file else {
            return vec![
                "  flows   no flows file (see docs/flows.md); the daily summary is off".into(),
            ];
        };
        let config = self.flows.config();
        let digest = match &config.digest {
            Some(d) if d.enabled => format!(
                "{} {} (next {})",
                d.schedule.expr(),
                d.timezone,
                d.schedule
                    .next_after(chrono::Utc::now())
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
            _ => "off (configure [delivery.slack] or [delivery.email])".into(),
        };
        let mut lines = vec![format!(
            "  flows   {} flow(s) from {}; daily summary {digest}",
            config.flows.len(),
            path.display(),
        )];
        // Which school each item acts on is never left for the operator to guess.
        lines.extend(
            self.flows
                .schools()
                .iter()
                .map(|(item, school)| format!("          {item} acts on {school}")),
        );
        lines
    }
}
