//! What a persona may call: tool classes (`read`, `write`, `destructive`)
//! and/or tool names, optionally restricted to some offers.
//!
//! An offer restriction fails closed: a tool that changes the school is allowed only
//! when its call is shown to stay within the offers, by the rule the tool declares
//! ([`OfferScope`]). Some rules need a look at the school (which courses the offers
//! unlock, which offers a member holds); [`Scopes::check_call`] says what remains to be
//! shown and [`Scopes::prove`] looks it up, on the connection the call itself will use.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use memberspot_api::actions::{FindUserByEmail, ListOffers, ListUsers};
use memberspot_api::wire::User;
use memberspot_api::{ApiError, Client, paged_stream};
use memberspot_tools::inputs::{Email, Id};
use memberspot_tools::{Catalogue, MemberKey, OfferScope, ToolClass, ToolDescriptor, ToolError};
use serde_json::Value;

use crate::HubError;

/// Members per page when looking a member up by uid among an offer's holders.
const LOOKUP_PAGE: u32 = 100;

/// What remains to be shown before a call of an offer-restricted persona may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferProof {
    /// Nothing: no restriction, a read, or the call names one of the offers.
    Proven,
    /// The course must be one that the offers unlock.
    Course(Id),
    /// The member must hold one of the offers.
    Member(MemberRef),
}

/// A member as a call names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRef {
    Email(Email),
    Uid(Id),
}

impl std::fmt::Display for MemberRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberRef::Email(e) => write!(f, "`{e}`"),
            MemberRef::Uid(u) => write!(f, "the member with uid `{u}`"),
        }
    }
}

/// Why scopes could not be read, or why they refuse a call (before anything is looked up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "unknown scope `{0}`: use read, write, destructive, all, a tool name (see `memberspot tools list`), confirm:CLASS, confirm:none or connector"
    )]
    Unknown(String),
    #[error("at least one scope is needed (e.g. read)")]
    Empty,
    /// Neither the tool's class nor its name is among the scopes.
    #[error("this persona may not call `{tool}` (a {class} tool); its scopes are: {scopes}")]
    NotAllowed {
        tool: String,
        class: &'static str,
        scopes: String,
    },
    /// Offer-restricted, and the tool is not tied to one offer.
    #[error(
        "this persona may only act within offers {offers}; `{tool}` can reach beyond them (it is not tied to one offer) and is not allowed"
    )]
    NotTiedToAnOffer { tool: String, offers: String },
    /// Offer-restricted, and the argument that would show the call stays within them is
    /// missing or invalid.
    #[error(
        "this persona may only act within offers {offers}; `{tool}` needs a valid `{argument}` to show that"
    )]
    Unproven {
        tool: String,
        offers: String,
        argument: String,
    },
    /// Offer-restricted, and the call names another offer.
    #[error("this persona may only change access to offers {offers}, not `{offer}`")]
    OtherOffer { offer: String, offers: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    classes: BTreeSet<ToolClass>,
    tools: BTreeSet<String>,
    offer_ids: Option<BTreeSet<String>>,
    /// Tool classes an interactive surface (MCP) asks the user to confirm before a call;
    /// `None` when the persona names no policy (personas stored before there was one).
    confirm: Option<BTreeSet<ToolClass>>,
    /// Offers the read-only `search` and `fetch` tools of chat connectors.
    connector: bool,
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
    pub fn parse<S: AsRef<str>>(items: &[S], catalogue: &Catalogue) -> Result<Self, ScopeError> {
        let mut s = Scopes::default();
        // `confirm:none` wins over confirm classes, so adding it turns confirmation off.
        let mut confirm_none = false;
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
                "connector" => s.connector = true,
                "confirm:none" => confirm_none = true,
                other => match other.strip_prefix("confirm:").and_then(class_of_word) {
                    Some(class) => {
                        s.confirm.get_or_insert_with(BTreeSet::new).insert(class);
                    }
                    None => return Err(ScopeError::Unknown(other.to_owned())),
                },
            }
        }
        if confirm_none {
            s.confirm = Some(BTreeSet::new());
        }
        if s.classes.is_empty() && s.tools.is_empty() {
            return Err(ScopeError::Empty);
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
        match &self.confirm {
            Some(classes) if classes.is_empty() => out.push("confirm:none".to_string()),
            Some(classes) => out.extend(
                classes
                    .iter()
                    .map(|c| format!("confirm:{}", class_word(*c))),
            ),
            None => {}
        }
        if self.connector {
            out.push("connector".to_string());
        }
        out
    }

    /// A new persona that can reach a destructive tool and names no confirmation policy
    /// gets `confirm:destructive`. Personas stored before the policy existed keep none,
    /// so their clients keep working after an upgrade.
    pub fn with_default_confirmation(mut self, catalogue: &Catalogue) -> Self {
        let reaches_destructive = catalogue
            .descriptors()
            .any(|d| d.class == ToolClass::Destructive && self.allows(d));
        if self.confirm.is_none() && reaches_destructive {
            self.confirm = Some([ToolClass::Destructive].into());
        }
        self
    }

    /// Whether an interactive surface must ask the user before calling a tool of `class`.
    pub fn needs_confirmation(&self, class: ToolClass) -> bool {
        self.confirm.as_ref().is_some_and(|c| c.contains(&class))
    }

    /// Whether the persona opted into the `search` and `fetch` connector tools.
    pub fn connector(&self) -> bool {
        self.connector
    }

    /// Whether the tool is visible and callable at all.
    pub fn allows(&self, d: &ToolDescriptor) -> bool {
        self.classes.contains(&d.class) || self.tools.contains(d.name)
    }

    /// Whether the tool is callable at all, as a refusal that names the scopes.
    pub fn check_allowed(&self, d: &ToolDescriptor) -> Result<(), ScopeError> {
        if self.allows(d) {
            return Ok(());
        }
        Err(ScopeError::NotAllowed {
            tool: d.name.to_owned(),
            class: class_word(d.class),
            scopes: self.to_strings().join(", "),
        })
    }

    /// Checks that the persona may call the tool with these arguments, as far as the
    /// arguments alone tell; says what remains to be looked up (see [`Scopes::prove`]).
    pub fn check_call(&self, d: &ToolDescriptor, args: &Value) -> Result<OfferProof, ScopeError> {
        self.check_allowed(d)?;
        let Some(allowed) = &self.offer_ids else {
            return Ok(OfferProof::Proven);
        };
        let missing = |argument: &str| ScopeError::Unproven {
            tool: d.name.to_owned(),
            offers: list(allowed),
            argument: argument.to_owned(),
        };
        match d.offer_scope {
            OfferScope::NotApplicable => Ok(OfferProof::Proven),
            OfferScope::Never => Err(ScopeError::NotTiedToAnOffer {
                tool: d.name.to_owned(),
                offers: list(allowed),
            }),
            OfferScope::NamesOffer { argument } => {
                let offer = Id::from_argument(args, argument).ok_or_else(|| missing(argument))?;
                if allowed.contains(offer.as_str()) {
                    Ok(OfferProof::Proven)
                } else {
                    Err(ScopeError::OtherOffer {
                        offer: offer.to_string(),
                        offers: list(allowed),
                    })
                }
            }
            OfferScope::CourseOfOffers { argument } => Id::from_argument(args, argument)
                .map(OfferProof::Course)
                .ok_or_else(|| missing(argument)),
            OfferScope::MemberHoldsOffer { argument, by } => match by {
                MemberKey::Email => Email::from_argument(args, argument).map(MemberRef::Email),
                MemberKey::Uid => Id::from_argument(args, argument).map(MemberRef::Uid),
            }
            .map(OfferProof::Member)
            .ok_or_else(|| missing(argument)),
        }
    }

    /// Looks up what [`Scopes::check_call`] left open, through `client` (the connection
    /// the call will use, within its rate limit). Refusals say why without telling
    /// anything about members outside the offers: a member who does not exist and one
    /// who holds other offers get the same answer.
    pub async fn prove(
        &self,
        client: &Client,
        tool: &str,
        proof: &OfferProof,
    ) -> Result<(), HubError> {
        let Some(allowed) = &self.offer_ids else {
            return Ok(());
        };
        match proof {
            OfferProof::Proven => Ok(()),
            OfferProof::Course(course) => {
                let offers = client.execute(&ListOffers).await.map_err(lookup_failed)?;
                let unlocked = offers
                    .0
                    .iter()
                    .filter(|o| allowed.contains(&o.id))
                    .any(|o| o.course_ids.iter().any(|c| c == course.as_str()));
                if unlocked {
                    Ok(())
                } else {
                    Err(HubError::Denied(format!(
                        "this persona may only act within offers {}; course `{course}` is not a course of those offers, so `{tool}` was not run",
                        list(allowed)
                    )))
                }
            }
            OfferProof::Member(member) => {
                if member_holds_one(client, member, allowed).await? {
                    Ok(())
                } else {
                    Err(HubError::Denied(format!(
                        "this persona may only act on members who hold one of offers {}; {member} is not shown to hold one, so `{tool}` was not run",
                        list(allowed)
                    )))
                }
            }
        }
    }
}

/// Whether the member currently holds one of `allowed`. By uid the API has no lookup:
/// the member is searched among each offer's active holders.
async fn member_holds_one(
    client: &Client,
    member: &MemberRef,
    allowed: &BTreeSet<String>,
) -> Result<bool, HubError> {
    match member {
        MemberRef::Email(email) => {
            match client.execute(&FindUserByEmail::new(email.as_str())).await {
                Ok(user) => Ok(holds_one(&user, allowed)),
                Err(ApiError::NotFound { .. }) => Ok(false),
                Err(e) => Err(lookup_failed(e)),
            }
        }
        MemberRef::Uid(uid) => {
            for offer in allowed {
                let first = ListUsers::new()
                    .offer(offer.as_str())
                    .active(true)
                    .page_length(LOOKUP_PAGE);
                let mut holders = std::pin::pin!(paged_stream(client, first, None));
                while let Some(user) = holders.try_next().await.map_err(lookup_failed)? {
                    if user.uid == uid.as_str() {
                        // The listing's filter is the API's; the holding is checked here.
                        return Ok(holds_one(&user, allowed));
                    }
                }
            }
            Ok(false)
        }
    }
}

/// Holds one of `allowed` now: active and not past its end date.
fn holds_one(user: &User, allowed: &BTreeSet<String>) -> bool {
    let now = chrono::Utc::now();
    user.offers.iter().any(|h| {
        allowed.contains(&h.offer_id) && h.active && h.expires_at.as_ref().is_none_or(|t| t.0 > now)
    })
}

/// A lookup that failed (Memberspot down, rate limited): the call is not run, and the
/// error is Memberspot's, so that a transient one is retried like any other.
fn lookup_failed(e: ApiError) -> HubError {
    HubError::Tool(ToolError::Api(e))
}

fn class_of_word(word: &str) -> Option<ToolClass> {
    match word {
        "read" => Some(ToolClass::Read),
        "write" => Some(ToolClass::Write),
        "destructive" => Some(ToolClass::Destructive),
        _ => None,
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

        let support = Scopes::parse(&["all"], &c)
            .expect("valid")
            .with_offers(Some(vec!["trial".into()]));
        let check = |tool: &str, args: Value| support.check_call(&d(tool), &args);
        let grant = json!({"email": "a@b.de", "offer_id": " trial "});
        assert_eq!(
            check("grant_user_offer_by_email", grant),
            Ok(OfferProof::Proven)
        );
        let err = check(
            "grant_user_offer_by_email",
            json!({"email": "a@b.de", "offer_id": "premium"}),
        )
        .expect_err("other offer");
        assert!(
            matches!(&err, ScopeError::OtherOffer { offer, .. } if offer == "premium"),
            "{err}"
        );
        assert!(err.to_string().contains("premium"), "{err}");
        // Read as the tool reads it: a numeric id is the offer `7`, not an absent one.
        assert!(check("set_offer_expiration", json!({"offer_id": 7})).is_err());
        assert_eq!(check("list_users", json!({})), Ok(OfferProof::Proven));
        for never in ["delete_users", "delete_users_post", "set_order_state"] {
            let err = check(never, json!({"emails": ["a@b.de"]})).expect_err(never);
            assert!(matches!(err, ScopeError::NotTiedToAnOffer { .. }), "{err}");
            assert!(err.to_string().contains("not allowed"), "{err}");
        }
        assert_eq!(
            check("enable_chapter_access", json!({"course_id": "c1"})),
            Ok(OfferProof::Course(Id::parse("c1").expect("id")))
        );
        assert_eq!(
            check("set_custom_user_properties", json!({"email": " A@b.de"})),
            Ok(OfferProof::Member(MemberRef::Email(
                Email::parse("A@b.de").expect("email")
            )))
        );
        assert_eq!(
            check("create_login_token", json!({"uid": "u1"})),
            Ok(OfferProof::Member(MemberRef::Uid(
                Id::parse("u1").expect("id")
            )))
        );
        // Without the argument the rule cannot be shown to hold.
        assert!(matches!(
            check("create_login_token", json!({})),
            Err(ScopeError::Unproven { argument, .. }) if argument == "uid"
        ));
        // Without a restriction, nothing is left to look up.
        let unrestricted = Scopes::parse(&["all"], &c).expect("valid");
        for e in c.iter() {
            assert_eq!(
                unrestricted.check_call(&e.descriptor, &json!({})),
                Ok(OfferProof::Proven),
                "{}",
                e.name()
            );
        }

        let err = Scopes::parse(&["reed"], &c).expect_err("typo");
        assert_eq!(err, ScopeError::Unknown("reed".into()));
        assert!(err.to_string().contains("`reed`"), "{err}");
        assert_eq!(Scopes::parse::<&str>(&[], &c), Err(ScopeError::Empty));
    }

    #[test]
    fn confirmation_policy_and_connector_words() {
        let c = Catalogue::standard();
        let parse = |items: &[&str]| Scopes::parse(items, &c).expect("valid");
        // Stored before the policy existed: never asks.
        let old = parse(&["all"]);
        assert!(!old.needs_confirmation(ToolClass::Destructive));
        // New personas that can delete ask for destructive calls, and keep saying so.
        let new = parse(&["all"]).with_default_confirmation(&c);
        assert!(new.needs_confirmation(ToolClass::Destructive));
        assert!(!new.needs_confirmation(ToolClass::Write));
        assert!(
            new.to_strings()
                .contains(&"confirm:destructive".to_string())
        );
        let stored = new.to_strings();
        assert_eq!(
            Scopes::parse(&stored, &c),
            Ok(new.clone()),
            "the stored form reads back"
        );
        let by_name = parse(&["read", "delete_users"]).with_default_confirmation(&c);
        assert!(by_name.needs_confirmation(ToolClass::Destructive));
        let reader = parse(&["read", "write"]).with_default_confirmation(&c);
        assert!(
            !reader
                .to_strings()
                .iter()
                .any(|s| s.starts_with("confirm:"))
        );
        // An explicit policy is kept; `confirm:none` wins, so adding it turns asking off.
        let off = parse(&["all", "confirm:none"]).with_default_confirmation(&c);
        assert!(!off.needs_confirmation(ToolClass::Destructive));
        assert_eq!(
            off.to_strings(),
            vec!["read", "write", "destructive", "confirm:none"]
        );
        let both = parse(&["all", "confirm:destructive", "confirm:none"]);
        assert!(!both.needs_confirmation(ToolClass::Destructive));
        let writes = parse(&["write", "confirm:write"]);
        assert!(writes.needs_confirmation(ToolClass::Write));
        // Policy words alone allow nothing; unknown classes are unknown scopes.
        assert_eq!(Scopes::parse(&["confirm:none"], &c), Err(ScopeError::Empty));
        assert_eq!(
            Scopes::parse(&["read", "confirm:everything"], &c),
            Err(ScopeError::Unknown("confirm:everything".into()))
        );
        assert!(parse(&["read", "connector"]).connector());
        assert!(!parse(&["read"]).connector());
    }
}
