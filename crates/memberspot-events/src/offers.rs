//! A rule grants the offer it names. An offer the school does not have makes every
//! matching purchase go dead, so rules are checked against their source's school: by
//! `rules validate` (unless `--offline`) and when `serve` starts (a warning: the school
//! may be briefly unreachable, and the receivers must keep storing deliveries). A rule
//! may name the offer by its name; it is replaced by the id the school gives it.

use std::collections::BTreeMap;
use std::fmt;

use memberspot_hub::offer_names::{OfferNameError, OfferNames};
use memberspot_hub::{CallContext, Hub, HubError, Principal};

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

/// Checks every rule's offer against the school of its source, one read of its offers per
/// school (as the school's operator, with `ctx`: an audited `list_offers` call), and
/// replaces offer names by ids. An unreachable school is an error (nothing was checked).
pub async fn check_rule_offers(
    hub: &Hub,
    ctx: &CallContext,
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
        let who = Principal::Operator {
            connection: connection.clone(),
        };
        let offers = OfferNames::new(hub, who, ctx.clone());
        for i in rules {
            let rule = &mut config.rules[i];
            let problem = match offers.find(&rule.offer).await? {
                Ok(id) => {
                    rule.offer = id;
                    continue;
                }
                Err(problem) => problem,
            };
            let reason = match &problem {
                OfferNameError::Unknown { candidates, .. } if candidates.is_empty() => {
                    "does not exist (it has none)".to_owned()
                }
                OfferNameError::Unknown { .. } => {
                    format!("does not exist (its offers: {})", problem.listing())
                }
                OfferNameError::Ambiguous { candidates, .. } => format!(
                    "names {} offers ({}); give the id",
                    candidates.len(),
                    problem.listing()
                ),
            };
            problems.push(OfferProblem {
                rule: rule.index,
                line: rule.line,
                offer: problem.given().to_owned(),
                connection: connection.clone(),
                reason,
            });
        }
    }
    Ok(problems)
}
