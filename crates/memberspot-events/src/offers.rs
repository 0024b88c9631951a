//! A rule grants the offer it names. An offer the school does not have makes every
//! matching purchase go dead, so rules are checked against their source's school: by
//! `rules validate` (unless `--offline`) and when `serve` starts (a warning: the school
//! may be briefly unreachable, and the receivers must keep storing deliveries). A rule
//! may name the offer by its name; it is replaced by the id the school gives it.

use std::collections::BTreeMap;
use std::fmt;

use memberspot_hub::{Hub, HubError};

use crate::config::EventsConfig;

/// A rule whose offer the school of its source does not have (or has under the same
/// name more than once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferProblem {
    /// 1-based position of the rule in the file.
    pub rule: usize,
    pub line: usize,
    pub offer: String,
    pub connection: String,
    /// Why: unknown, or the ids sharing the name.
    pub reason: String,
}

impl fmt::Display for OfferProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: rule {}: offer `{}` {} on connection `{}`",
            self.line, self.rule, self.offer, self.reason, self.connection
        )
    }
}

/// Checks every rule's offer against the school of its source, one read per school, and
/// replaces offer names by ids. An unreachable school is an error (nothing was checked).
pub async fn check_rule_offers(
    hub: &Hub,
    config: &mut EventsConfig,
) -> Result<Vec<OfferProblem>, HubError> {
    let mut by_connection: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, rule) in config.rules.iter().enumerate() {
        if let Some(source) = config.sources.get(&rule.source) {
            by_connection
                .entry(source.connection().to_owned())
                .or_default()
                .push(i);
        }
    }
    let mut problems = Vec::new();
    for (connection, rules) in by_connection {
        let offers = hub.offers_of(&connection).await?;
        let listing = || {
            let all: Vec<String> = offers
                .iter()
                .map(|o| format!("{} ({})", o.id, o.name))
                .collect();
            if all.is_empty() {
                "it has none".to_owned()
            } else {
                format!("its offers: {}", all.join(", "))
            }
        };
        for i in rules {
            let rule = &mut config.rules[i];
            let given = rule.offer.trim().to_owned();
            if offers.iter().any(|o| o.id == given) {
                continue;
            }
            let named: Vec<&str> = offers
                .iter()
                .filter(|o| o.name.trim().eq_ignore_ascii_case(&given))
                .map(|o| o.id.as_str())
                .collect();
            let reason = match named.as_slice() {
                [id] => {
                    rule.offer = (*id).to_owned();
                    continue;
                }
                [] => format!("does not exist ({})", listing()),
                ids => format!(
                    "names {} offers ({}); give the id",
                    ids.len(),
                    ids.join(", ")
                ),
            };
            problems.push(OfferProblem {
                rule: rule.index,
                line: rule.line,
                offer: given,
                connection: connection.clone(),
                reason,
            });
        }
    }
    Ok(problems)
}
