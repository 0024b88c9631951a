//! Prometheus metrics: tool calls by tool and outcome, call latency, and
//! 429s received from Memberspot.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: String,
    surface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    connection: String,
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram>,
    upstream_429: Family<ConnectionLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("memberspot_hub");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<ToolLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let upstream_429 = Family::<ConnectionLabel, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool, outcome and surface",
            calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency including Memberspot",
            latency.clone(),
        );
        registry.register(
            "upstream_rate_limited",
            "429 answers received from Memberspot",
            upstream_429.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            upstream_429,
        }
    }
}

impl Metrics {
    pub fn record_call(&self, tool: &str, outcome: &str, surface: &str, seconds: f64) {
        self.calls
            .get_or_create(&CallLabels {
                tool: tool.into(),
                outcome: outcome.into(),
                surface: surface.into(),
            })
            .inc();
        self.latency
            .get_or_create(&ToolLabel { tool: tool.into() })
            .observe(seconds);
    }

    pub fn record_upstream_429(&self, connection: &str, n: u64) {
        if n > 0 {
            self.upstream_429
                .get_or_create(&ConnectionLabel {
                    connection: connection.into(),
                })
                .inc_by(n);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
