//! `--offer` takes an offer's id or its name ("Online-Kurs Basis"), checked against the
//! school: an unknown or ambiguous one is an error listing the candidates, never an empty
//! table or a grant that Memberspot refuses row by row.

use memberspot_tools::ToolError;
use serde_json::{Value, json};

use super::Ctx;

/// The school's offers, read once per command.
pub struct Offers {
    /// `(id, name)` in the school's order.
    offers: Vec<(String, String)>,
}

impl Offers {
    pub async fn read(ctx: &Ctx) -> anyhow::Result<Offers> {
        let out = ctx.call("list_offers", json!({})).await?;
        Ok(Offers::from_list(&out))
    }

    /// From the `list_offers` tool's answer.
    pub fn from_list(out: &Value) -> Offers {
        let offers = out["offers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|o| {
                let id = o["id"].as_str()?.to_owned();
                let name = o["name"].as_str().unwrap_or_default().to_owned();
                Some((id, name))
            })
            .collect();
        Offers { offers }
    }

    /// The id `given` stands for: an offer's id, else the one offer whose name it is
    /// (case and surrounding spaces aside). `flag` names the argument in errors.
    pub fn resolve(&self, flag: &str, given: &str) -> Result<String, ToolError> {
        let given = given.trim();
        if self.offers.iter().any(|(id, _)| id == given) {
            return Ok(given.to_owned());
        }
        let named: Vec<&(String, String)> = self
            .offers
            .iter()
            .filter(|(_, name)| name.trim().to_lowercase() == given.to_lowercase())
            .collect();
        match named.as_slice() {
            [(id, _)] => Ok(id.clone()),
            [] => Err(ToolError::invalid(
                flag,
                format!(
                    "no offer has the id or name `{given}`; the school's offers: {}",
                    self.listing(&self.offers.iter().collect::<Vec<_>>())
                ),
            )),
            several => Err(ToolError::invalid(
                flag,
                format!(
                    "`{given}` is the name of {} offers: {}; give the id",
                    several.len(),
                    self.listing(several)
                ),
            )),
        }
    }

    /// The name of offer `id`, when the school has it.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.offers
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, name)| name.as_str())
            .filter(|name| !name.is_empty())
    }

    fn listing(&self, offers: &[&(String, String)]) -> String {
        if offers.is_empty() {
            return "none".to_owned();
        }
        offers
            .iter()
            .map(|(id, name)| format!("{id} ({name})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The school's offers for showing names next to ids; none when they cannot be read (the
/// ids are shown alone then: a table must not fail for want of names).
pub async fn for_display(ctx: &Ctx) -> Offers {
    match Offers::read(ctx).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %e, "offer names unavailable; ids shown");
            Offers { offers: Vec::new() }
        }
    }
}

/// Resolves an optional `--offer` with one read of the school's offers.
pub async fn resolve_flag(ctx: &Ctx, given: Option<String>) -> anyhow::Result<Option<String>> {
    match given {
        Some(g) => Ok(Some(Offers::read(ctx).await?.resolve("--offer", &g)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers() -> Offers {
        Offers::from_list(&json!({"offers": [
            {"id": "o1", "name": "Online-Kurs Basis"},
            {"id": "o2", "name": "Premium"},
            {"id": "o3", "name": "premium "},
        ]}))
    }

    #[test]
    fn ids_and_names_resolve_and_the_rest_lists_candidates() {
        let o = offers();
        assert_eq!(o.resolve("--offer", "o2").ok().as_deref(), Some("o2"));
        assert_eq!(
            o.resolve("--offer", " online-kurs basis ").ok().as_deref(),
            Some("o1")
        );
        let unknown = o
            .resolve("--offer", "Basis")
            .expect_err("unknown")
            .to_string();
        assert!(
            unknown.contains("--offer")
                && unknown.contains("`Basis`")
                && unknown.contains("o1 (Online-Kurs Basis)"),
            "{unknown}"
        );
        assert_eq!(o.name_of("o2"), Some("Premium"));
        assert_eq!(o.name_of("o9"), None);
        let ambiguous = o
            .resolve("--offer", "PREMIUM")
            .expect_err("ambiguous")
            .to_string();
        assert!(
            ambiguous.contains("2 offers") && ambiguous.contains("o2 (Premium)"),
            "{ambiguous}"
        );
    }
}
