//! What a persona may call: tool classes (`read`, `write`, `destructive`)
//! and/or tool names, optionally restricting access changes to some offers.

use std::collections::BTreeSet;

use memberspot_tools::{Catalogue, ToolClass, ToolDescriptor};
use serde_json::Value;

/// Tools that change which offers a member can use. With an offer
/// restriction, these may only touch the listed offers.
const OFFER_TOOLS: &[&str] = &[
    "grant_user_offer_by_email",
    "set_user_offer_state",
    "set_offer_expiration",
];
/// Access changes that cannot be tied to one offer (an order may span several).
const UNBOUNDED_OFFER_TOOLS: &[&str] = &["set_order_state"];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    classes: BTreeSet<ToolClass>,
    tools: BTreeSet<String>,
    offer_ids: Option<BTreeSet<String>>,
}

impl Scopes {
    /// The default for a new persona.
    pub fn read_only() -> Self {
        Scopes {
            classes: [ToolClass::Read].into(),
            ..Default::default()
        }
    }

    /// Parses `read`, `write`, `destructive`, `all` and tool names; an
    /// unknown word is an error that names it.
    pub fn parse<S: AsRef<str>>(items: &[S], catalogue: &Catalogue) -> Result<Self, String> {
        let mut s = Scopes::default();
        for item in items {
            let item = item.as_ref().trim();
            match item {
                "" => continue,
                "read" => {
                    s.classes.insert(ToolClass::Read);
                }
                "write" => {
                    s.classes.insert(ToolClass::Write);
                }
                "destructive" => {
                    s.classes.insert(ToolClass::Destructive);
                }
                "all" => {
                    s.classes
                        .extend([ToolClass::Read, ToolClass::Write, ToolClass::Destructive])
                }
                name if catalogue.get(name).is_some() => {
                    s.tools.insert(name.to_string());
                }
                other => {
                    return Err(format!(
                        "unknown scope `{other}`: use read, write, destructive, all, or a tool name (see `memberspot tools list`)"
                    ));
                }
            }
        }
        if s.classes.is_empty() && s.tools.is_empty() {
            return Err("at least one scope is needed (e.g. read)".into());
        }
        Ok(s)
    }

    pub fn with_offers(mut self, offer_ids: Option<Vec<String>>) -> Self {
        self.offer_ids =
            offer_ids.map(|ids| ids.into_iter().filter(|i| !i.trim().is_empty()).collect());
        self
    }

    pub fn offer_ids(&self) -> Option<Vec<String>> {
        self.offer_ids.as_ref().map(|s| s.iter().cloned().collect())
    }

    /// The stored form.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .classes
            .iter()
            .map(|c| match c {
                ToolClass::Read => "read".to_string(),
                ToolClass::Write => "write".to_string(),
                ToolClass::Destructive => "destructive".to_string(),
            })
            .collect();
        out.extend(self.tools.iter().cloned());
        out
    }

    /// Whether the tool is visible and callable at all.
    pub fn allows(&self, d: &ToolDescriptor) -> bool {
        self.classes.contains(&d.class) || self.tools.contains(d.name)
    }

    /// Checks the offer restriction against the call's arguments.
    pub fn check_call(&self, d: &ToolDescriptor, args: &Value) -> Result<(), String> {
        if !self.allows(d) {
            return Err(format!(
                "this persona may not call `{}` (a {} tool); its scopes are: {}",
                d.name,
                class_word(d.class),
                self.to_strings().join(", ")
            ));
        }
        let Some(allowed) = &self.offer_ids else {
            return Ok(());
        };
        if UNBOUNDED_OFFER_TOOLS.contains(&d.name) {
            return Err(format!(
                "this persona may only change access to offers {}; `{}` switches a whole order and is not allowed",
                list(allowed),
                d.name
            ));
        }
        if OFFER_TOOLS.contains(&d.name) {
            let offer = args
                .get("offer_id")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default();
            if !allowed.contains(offer) {
                return Err(format!(
                    "this persona may only change access to offers {}, not `{offer}`",
                    list(allowed)
                ));
            }
        }
        Ok(())
    }
}

fn class_word(c: ToolClass) -> &'static str {
    match c {
        ToolClass::Read => "read",
        ToolClass::Write => "write",
        ToolClass::Destructive => "destructive",
    }
}

fn list(ids: &BTreeSet<String>) -> String {
    ids.iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classes_names_and_offer_restriction() {
        let c = Catalogue::standard();
        let d = |n: &str| c.get(n).map(|e| e.descriptor.clone()).expect("tool");
        let read = Scopes::read_only();
        assert!(read.allows(&d("list_users")));
        assert!(!read.allows(&d("grant_user_offer_by_email")));
        assert!(read.check_call(&d("delete_users"), &json!({})).is_err());

        let s = Scopes::parse(&["read", "grant_user_offer_by_email"], &c).expect("valid");
        assert!(s.allows(&d("grant_user_offer_by_email")) && !s.allows(&d("set_user_offer_state")));
        assert_eq!(s.to_strings(), vec!["read", "grant_user_offer_by_email"]);

        let support = Scopes::parse(&["read", "write"], &c)
            .expect("valid")
            .with_offers(Some(vec!["trial".into()]));
        let grant = d("grant_user_offer_by_email");
        assert!(
            support
                .check_call(&grant, &json!({"offer_id": "trial"}))
                .is_ok()
        );
        let err = support
            .check_call(&grant, &json!({"offer_id": "premium"}))
            .expect_err("other offer");
        assert!(err.contains("premium"), "{err}");
        assert!(
            support
                .check_call(&d("set_custom_user_properties"), &json!({}))
                .is_ok()
        );

        let err = Scopes::parse(&["reed"], &c).expect_err("typo");
        assert!(err.contains("reed"));
        assert!(Scopes::parse::<&str>(&[], &c).is_err());
    }
}
