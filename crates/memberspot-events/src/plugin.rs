//! The events subsystem as a plug-in of the server: `/v1/events`, the webhook receivers
//! at `/hooks/{source}`, and the workers, the grace-period sweeper, the daily purge and
//! the poller.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use memberspot_server::Plugin;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::service::Events;

pub struct EventsPlugin {
    events: Events,
    /// The rules file `events` was configured from, if any (for the startup summary).
    rules_file: Option<PathBuf>,
}

impl EventsPlugin {
    pub fn new(events: Events, rules_file: Option<PathBuf>) -> EventsPlugin {
        EventsPlugin { events, rules_file }
    }
}

impl Plugin for EventsPlugin {
    fn name(&self) -> &str {
        "events"
    }

    fn routes(&self) -> Option<(Router, utoipa::openapi::OpenApi)> {
        Some(crate::rest::routes(self.events.clone()))
    }

    fn raw_routes(&self) -> Option<Router> {
        Some(crate::receiver::router(self.events.clone()))
    }

    fn needs_https(&self) -> Vec<String> {
        if self.events.config().sources.is_empty() {
            return Vec::new();
        }
        vec!["the webhook receivers (/hooks/*)".into()]
    }

    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        self.events.spawn(cancel)
    }

    fn summary(&self, addr: SocketAddr) -> Vec<String> {
        let Some(path) = &self.rules_file else {
            return vec![
                "  events  no rules file (see docs/events.md); webhook receivers are off".into(),
            ];
        };
        let cfg = self.events.config();
        let mut lines = vec![format!(
            "  events  {} source(s), {} rule(s) from {}{}",
            cfg.sources.len(),
            cfg.rules.len(),
            path.display(),
            if cfg.poller.is_some() {
                "; poller on"
            } else {
                ""
            }
        )];
        for s in cfg.sources.values() {
            lines.push(format!(
                "          POST http://{addr}/hooks/{}  ({})",
                s.name, s.provider
            ));
        }
        // Which school each item acts on is never left for the operator to guess.
        lines.extend(
            self.events
                .schools()
                .iter()
                .map(|(item, school)| format!("          {item} acts on {school}")),
        );
        lines.extend(
            self.events
                .offer_warnings()
                .iter()
                .map(|w| format!("  WARNING {w}")),
        );
        lines
    }
}
