//! Prometheus metrics: tool calls by tool and outcome, call latency, and
//! 429s received from Memberspot.
//!
//! `/metrics` answers without a token, and tool names come from callers: a name that
//! is not in the catalogue is counted as `unknown` (so callers cannot grow the page
//! with names of their own), and every label value is escaped as the text format
//! requires (prometheus-client writes them verbatim).

use std::collections::BTreeSet;
use std::fmt::Write;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of calls to a tool the catalogue does not have.
pub const UNKNOWN_TOOL: &str = "unknown";

/// A label value, escaped on the way out (`\`, `"` and line feeds).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(String);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(s.to_string())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: Label,
    outcome: Label,
    surface: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    connection: Label,
}

pub struct Metrics {
    registry: Registry,
    tools: BTreeSet<&'static str>,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram>,
    upstream_429: Family<ConnectionLabel, Counter>,
}

impl Metrics {
    /// Metrics for a hub whose catalogue has `tools`; other names count as `unknown`.
    pub fn new(tools: impl IntoIterator<Item = &'static str>) -> Self {
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
            tools: tools.into_iter().collect(),
            calls,
            latency,
            upstream_429,
        }
    }

    /// The tool's label: its name if the catalogue has it.
    fn tool_label(&self, tool: &str) -> Label {
        match self.tools.get(tool) {
            Some(known) => Label::from(*known),
            None => Label::from(UNKNOWN_TOOL),
        }
    }

    pub fn record_call(&self, tool: &str, outcome: &str, surface: &str, seconds: f64) {
        let tool = self.tool_label(tool);
        self.calls
            .get_or_create(&CallLabels {
                tool: tool.clone(),
                outcome: outcome.into(),
                surface: surface.into(),
            })
            .inc();
        self.latency
            .get_or_create(&ToolLabel { tool })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tools_share_one_label_and_values_are_escaped() {
        let m = Metrics::new(["list_offers"]);
        m.record_call("list_offers", "ok", "rest", 0.01);
        let injected = "x\"} 1\nmemberspot_hub_admin_logins_total 99\n# ";
        for i in 0..300 {
            m.record_call(&format!("random_{i}"), "invalid", "rest", 0.0);
        }
        m.record_call(injected, "invalid", "rest", 0.0);
        m.record_upstream_429("a\\b\"c\nd", 1);
        let text = m.render();
        assert!(
            text.contains(
                "memberspot_hub_tool_calls_total{tool=\"unknown\",outcome=\"invalid\",surface=\"rest\"} 301"
            ),
            "{text}"
        );
        assert!(
            text.contains("tool=\"list_offers\",outcome=\"ok\""),
            "{text}"
        );
        assert!(!text.contains("random_"), "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("memberspot_hub_admin")),
            "no line can be injected: {text}"
        );
        assert!(
            text.contains("connection=\"a\\\\b\\\"c\\nd\""),
            "escaped per the exposition format: {text}"
        );
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
    }
}
