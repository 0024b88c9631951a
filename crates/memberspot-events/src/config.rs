//! The rules file: webhook sources, access rules, processing and poller settings.
//!
//! ```toml
//! [sources.ds24]                      # receiver URL: POST /hooks/ds24
//! provider = "digistore24"
//! secret_env = "DS24_IPN_PASSPHRASE"  # or secret_file = "…", or secret = "…"
//! connection = "akademie"             # the school the rules act on (see below)
//!
//! [[rules]]
//! source = "ds24"
//! product = "12345"                   # the provider's product id; "*" = any
//! offer = "offer_abc"                 # the Memberspot offer to grant
//! access_days = 365                   # optional fixed term
//! currency = "EUR"                    # optional: refuse payments in another currency
//! min_amount = "49.00"                # optional: refuse payments below this amount
//!
//! [retention]                         # optional
//! events_days = 400                   # verified events and their deliveries
//! refused_days = 30                   # refused delivery attempts
//! ```
//!
//! A source (and the poller) acts on the connection it names, else on the file's top-level
//! `default_connection`, else on the embedded sandbox while that is the hub's only
//! connection; once a real school is connected, naming none is an error at start (see
//! [`memberspot_hub::schools`]).
//!
//! Errors carry the file's line and column so `memberspot rules validate` can point at
//! them; all problems are reported at once, not only the first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memberspot_webhooks::Provider;
use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use memberspot_hub::schools::{School, Schools, Unresolved, resolve_all};

use crate::poller::PollerConfig;

/// Largest body a receiver accepts unless the source says otherwise.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// Where PayPal IPN messages are verified.
pub const PAYPAL_POSTBACK_URL: &str = "https://ipnpb.paypal.com/cgi-bin/webscr";
/// Event kinds that end an order's access unless a rule says otherwise.
pub const DEFAULT_REVOKE_ON: [&str; 3] = ["refund", "chargeback", "end_of_term"];
const REVOCABLE: [&str; 3] = ["refund", "chargeback", "end_of_term"];

use memberspot_hub::config_file::{self, Checker, parse_toml};
pub use memberspot_hub::config_file::{ConfigError, Problem};

/// A webhook source: one receiver URL, one provider, one secret, one persona.
#[derive(Clone)]
pub struct Source {
    pub name: String,
    pub provider: Provider,
    /// `None` when not configured (or its variable/file is missing): the receiver fails closed.
    pub secret: Option<SecretString>,
    /// Where the secret should come from, for messages (`env DS24_PASS`, `file …`, `inline`).
    pub secret_origin: String,
    /// The connection (school) the rules act on, as the file names it; filled in when the
    /// events subsystem starts ([`EventsConfig::resolve_connections`]).
    pub connection: Option<String>,
    /// The persona the actions run as.
    pub persona: String,
    /// Signature age window for Stripe and COPE.
    pub tolerance: Duration,
    pub max_body: usize,
    /// PayPal only: where IPN messages are posted back for verification.
    pub postback_url: String,
    /// PayPal only: the shop's own account. A notification is acted on only when its
    /// `receiver_email` / `business` is one of these or its `receiver_id` matches.
    pub paypal_receiver: PaypalReceiver,
    /// Stripe only: reads the product of a Checkout session that names none (see
    /// [`crate::stripe_lookup`]).
    pub stripe_api: Option<StripeApi>,
}

/// A Stripe API key and where Stripe's API is (a stand-in in tests).
#[derive(Clone)]
pub struct StripeApi {
    pub key: SecretString,
    pub url: String,
}

impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeApi")
            .field("key", &"[redacted]")
            .field("url", &self.url)
            .finish()
    }
}

/// Stripe's API.
pub const STRIPE_API_URL: &str = "https://api.stripe.com";

/// Who a PayPal payment must have been made to (PayPal's `VERIFIED` only proves that PayPal
/// sent the message, not that it paid this shop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaypalReceiver {
    /// Lower-cased e-mail addresses of the shop's PayPal account.
    pub emails: Vec<String>,
    /// The account's merchant id (`receiver_id`).
    pub id: Option<String>,
}

impl PaypalReceiver {
    pub fn is_configured(&self) -> bool {
        !self.emails.is_empty() || self.id.is_some()
    }

    /// Whether a notification's receiver fields name this shop.
    pub fn accepts(
        &self,
        receiver_email: Option<&str>,
        business: Option<&str>,
        receiver_id: Option<&str>,
    ) -> bool {
        let email_ok = |v: Option<&str>| {
            v.map(|e| e.trim().to_ascii_lowercase())
                .is_some_and(|e| self.emails.contains(&e))
        };
        let id_ok = match (&self.id, receiver_id) {
            (Some(mine), Some(theirs)) => mine.eq_ignore_ascii_case(theirs.trim()),
            _ => false,
        };
        id_ok || email_ok(receiver_email) || email_ok(business)
    }
}

impl Source {
    /// The school the rules act on once resolved; empty (no school, so nothing can act)
    /// before.
    pub fn connection(&self) -> &str {
        self.connection.as_deref().unwrap_or_default()
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_origin", &self.secret_origin)
            .field("connection", &self.connection)
            .field("persona", &self.persona)
            .finish_non_exhaustive()
    }
}

/// Maps a source's product to an offer, with its access semantics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// 1-based position in the file, for messages.
    pub index: usize,
    pub line: usize,
    pub source: String,
    /// Provider product id, or `*` for any.
    pub product: String,
    pub offer: String,
    /// Fixed-term access: the holding expires this many days after the purchase.
    pub access_days: Option<u32>,
    /// Subscription semantics: missed payments suspend (after `grace_days`), later
    /// payments lift the suspension.
    pub subscription: bool,
    pub grace_days: u32,
    /// Event kinds that end access (subset of refund, chargeback, end_of_term).
    pub revoke_on: Vec<String>,
    /// Act on the provider's test purchases too.
    pub include_test: bool,
    /// Payments in another currency (ISO 4217, upper case) grant nothing.
    pub currency: Option<String>,
    /// Payments below this amount (in the currency's units) grant nothing.
    pub min_amount: Option<Amount>,
}

impl Rule {
    pub fn revokes(&self, kind: &str) -> bool {
        self.revoke_on.iter().any(|k| k == kind)
    }

    /// Why this rule refuses a payment of `amount` in `currency`, if it does. A rule with
    /// a minimum refuses a payment that carries no amount (fail closed).
    pub fn refuses_payment(
        &self,
        amount: Option<Amount>,
        currency: Option<&str>,
    ) -> Option<String> {
        let currency = currency.map(|c| c.trim().to_ascii_uppercase());
        if let Some(want) = &self.currency {
            match currency.as_deref() {
                Some(c) if c == want => {}
                Some(c) => {
                    return Some(format!(
                        "paid in {c}, rule {} accepts only {want}: nothing granted",
                        self.index
                    ));
                }
                None => {
                    return Some(format!(
                        "the payment names no currency, rule {} accepts only {want}: nothing granted",
                        self.index
                    ));
                }
            }
        }
        if let Some(min) = self.min_amount {
            let unit = currency.as_deref().unwrap_or("");
            match amount {
                Some(a) if a >= min => {}
                Some(a) => {
                    return Some(format!(
                        "paid {a} {unit}, below rule {}'s minimum of {min} {unit}: nothing granted",
                        self.index
                    ));
                }
                None => {
                    return Some(format!(
                        "the payment carries no amount, rule {} requires at least {min} {unit}: nothing granted",
                        self.index
                    ));
                }
            }
        }
        None
    }
}

pub use memberspot_webhooks::Amount;

/// How long deliveries and events are kept (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Verified events (and their deliveries, history and tool-call records).
    pub events_days: u32,
    /// Refused delivery attempts (reason, size, source, time).
    pub refused_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            events_days: 400,
            refused_days: 30,
        }
    }
}

/// How the queue is worked.
#[derive(Debug, Clone, PartialEq)]
pub struct Processing {
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Events processed at once by one hub.
    pub concurrency: usize,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a claimed event (and its order) stays reserved for one worker; after a
    /// crash, its events are taken up again once this has passed.
    pub lease: Duration,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            max_attempts: 8,
            concurrency: 4,
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
        }
    }
}

/// The whole, validated rules file.
#[derive(Debug, Clone, Default)]
pub struct EventsConfig {
    /// The file as given to [`EventsConfig::parse`], for messages.
    pub file: String,
    /// The school of sources (and the poller) that name none.
    pub default_connection: Option<String>,
    pub sources: BTreeMap<String, Source>,
    pub rules: Vec<Rule>,
    pub processing: Processing,
    pub poller: Option<PollerConfig>,
    pub retention: Retention,
    /// Problems that do not stop the hub (e.g. a secret variable that is not set).
    pub warnings: Vec<String>,
}

impl EventsConfig {
    /// Reads and validates a rules file.
    pub fn load(path: &Path) -> Result<EventsConfig, ConfigError> {
        let text = config_file::read(path, "the rules file")?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates rules text. `base` resolves relative `secret_file` paths.
    /// Every section is checked, so all problems are reported at once.
    pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<EventsConfig, ConfigError> {
        let raw: RawFile = parse_toml(file, text)?;
        let mut c = Checker::new(text);
        let mut sources = BTreeMap::new();
        for (name, raw_source) in &raw.sources {
            if let Some(source) = source(&mut c, base, name, raw_source) {
                sources.insert(name.clone(), source);
            }
        }
        let mut seen = BTreeMap::new();
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(&mut c, i + 1, r, &raw.sources, &mut seen))
            .collect();
        let processing = processing(&mut c, raw.processing.as_ref());
        let poller = poller(&mut c, raw.poller.as_ref());
        let retention = retention(&mut c, raw.retention.as_ref());
        let warnings = c.finish(file)?;
        Ok(EventsConfig {
            file: file.to_owned(),
            default_connection: raw.default_connection.clone(),
            sources,
            rules,
            processing,
            poller,
            retention,
            warnings,
        })
    }

    /// Decides the school of every source and of the poller (see [`Schools::resolve`]) and
    /// fills it in; every item without one is reported at once.
    pub fn resolve_connections(
        &mut self,
        schools: &Schools,
    ) -> Result<Vec<(String, School)>, Unresolved> {
        let default = self.default_connection.clone();
        let mut items: Vec<(String, &mut Option<String>)> = self
            .sources
            .values_mut()
            .map(|s| (format!("source `{}`", s.name), &mut s.connection))
            .collect();
        if let Some(p) = self.poller.as_mut() {
            items.push(("the poller".to_owned(), &mut p.connection));
        }
        let file = config_file::describe("the rules file", &self.file);
        resolve_all(schools, items, default.as_deref(), &file)
    }

    /// The rule for a source's product: an exact product match, else the source's `*` rule.
    pub fn rule_for(&self, source: &str, product: Option<&str>) -> Option<&Rule> {
        let product = product.map(str::trim).unwrap_or_default();
        self.rules
            .iter()
            .find(|r| r.source == source && !product.is_empty() && r.product == product)
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| r.source == source && r.product == "*")
            })
    }

    /// The rule for an event of `provider`: its product's rule; for Stripe, where the product
    /// may be the offer id the seller put in `metadata.memberspot_offer_id` (Checkout
    /// sessions carry no line items), also the rule that grants that offer; else the
    /// source's `*` rule.
    pub fn rule_for_event(
        &self,
        source: &str,
        provider: &str,
        product: Option<&str>,
    ) -> Option<&Rule> {
        let named = product.map(str::trim).filter(|p| !p.is_empty());
        named
            .and_then(|p| {
                self.rules
                    .iter()
                    .find(|r| r.source == source && r.product == p)
            })
            .or_else(|| {
                named
                    .filter(|_| provider == "stripe")
                    .and_then(|offer| self.rule_for_offer(source, offer))
            })
            .or_else(|| self.rule_for(source, None))
    }

    /// The rule that granted `offer` for a source: refunds and cancellations often carry no
    /// product id, so they are matched through the order's stored offer.
    pub fn rule_for_offer(&self, source: &str, offer: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.source == source && r.offer == offer)
    }

    /// The offers a source's rules may grant (for its persona's description).
    pub fn offers_of(&self, source: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.source == source)
            .map(|r| r.offer.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `[sources.NAME]`: `None` when its provider is unknown (the rest cannot be checked).
fn source(
    c: &mut Checker,
    base: Option<&Path>,
    name: &str,
    raw: &Spanned<RawSource>,
) -> Option<Source> {
    let span = raw.span();
    let s = raw.get_ref();
    if !valid_name(name) {
        c.problem(
            span.clone(),
            format!(
                "source name `{name}` must be 1-64 letters, digits, `-` or `_` (it becomes the URL /hooks/{name})"
            ),
        );
    }
    let Ok(provider) = s.provider.get_ref().parse::<Provider>() else {
        c.problem(
            s.provider.span(),
            format!(
                "source `{name}`: unknown provider `{}`; expected one of {}",
                s.provider.get_ref(),
                Provider::ALL.map(|p| p.as_str()).join(", ")
            ),
        );
        return None;
    };
    let given = [
        s.secret.is_some(),
        s.secret_env.is_some(),
        s.secret_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        c.problem(
            span.clone(),
            format!("source `{name}`: set only one of `secret`, `secret_env`, `secret_file`"),
        );
    }
    let (secret, origin) = resolve_secret(s, base, c, name);
    if given == 0 && provider != Provider::PaypalIpn {
        c.warn(format!(
            "source `{name}`: no secret configured; its receiver rejects every delivery until one is set (`secret_env`, `secret_file` or `secret`)"
        ));
    }
    if let Some(url) = &s.postback_url
        && !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
    {
        c.problem(
            url.span(),
            format!("source `{name}`: `postback_url` must be an http(s) URL"),
        );
    }
    if s.postback_url.is_some() && provider != Provider::PaypalIpn {
        c.warn(format!(
            "source `{name}`: `postback_url` only applies to PayPal IPN sources"
        ));
    }
    let paypal_receiver = paypal_receiver(c, span.clone(), name, s, provider);
    let stripe_api = stripe_api(c, span.clone(), base, name, s, provider);
    if s.max_body_kb == Some(0) {
        c.problem(
            span,
            format!("source `{name}`: `max_body_kb` must be at least 1"),
        );
    }
    Some(Source {
        name: name.to_owned(),
        provider,
        secret,
        secret_origin: origin,
        connection: s.connection.clone(),
        persona: s.persona.clone().unwrap_or_else(|| format!("hook-{name}")),
        tolerance: Duration::from_secs(s.tolerance_secs.unwrap_or(300)),
        max_body: s
            .max_body_kb
            .map_or(DEFAULT_MAX_BODY, |kb| (kb as usize).saturating_mul(1024)),
        postback_url: s
            .postback_url
            .as_ref()
            .map_or_else(|| PAYPAL_POSTBACK_URL.to_owned(), |u| u.get_ref().clone()),
        paypal_receiver,
        stripe_api,
    })
}

/// A Stripe source's `stripe_api_key_env` / `stripe_api_key_file` and `stripe_api_url`.
fn stripe_api(
    c: &mut Checker,
    span: std::ops::Range<usize>,
    base: Option<&Path>,
    name: &str,
    s: &RawSource,
    provider: Provider,
) -> Option<StripeApi> {
    let given = s.stripe_api_key_env.is_some() || s.stripe_api_key_file.is_some();
    if !given {
        if s.stripe_api_url.is_some() {
            c.warn(format!(
                "source `{name}`: `stripe_api_url` does nothing without `stripe_api_key_env` or `stripe_api_key_file`"
            ));
        }
        return None;
    }
    if provider != Provider::Stripe {
        c.problem(
            span,
            format!("source `{name}`: a Stripe API key only applies to Stripe sources"),
        );
        return None;
    }
    if s.stripe_api_key_env.is_some() && s.stripe_api_key_file.is_some() {
        c.problem(
            span.clone(),
            format!("source `{name}`: set only one of `stripe_api_key_env`, `stripe_api_key_file`"),
        );
    }
    let url = s.stripe_api_url.as_ref().map_or_else(
        || STRIPE_API_URL.to_owned(),
        |u| u.get_ref().trim().to_owned(),
    );
    // The key goes there: HTTPS, or plain HTTP to this machine (a stand-in).
    let loopback_http = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    if !(url.starts_with("https://") || loopback_http) {
        c.problem(
            span.clone(),
            format!("source `{name}`: `stripe_api_url` must be https (or http to this machine)"),
        );
        return None;
    }
    let key = if let Some(var) = &s.stripe_api_key_env {
        std::env::var(var.get_ref()).ok()
    } else if let Some(file) = &s.stripe_api_key_file {
        let path = match base {
            Some(b) if file.get_ref().is_relative() => b.join(file.get_ref()),
            _ => file.get_ref().clone(),
        };
        std::fs::read_to_string(path).ok()
    } else {
        None
    };
    match key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()) {
        Some(k) => Some(StripeApi {
            key: SecretString::from(k),
            url,
        }),
        None => {
            c.warn(format!(
                "source `{name}`: the Stripe API key is not set (or its file cannot be read); \
                 Checkout sessions without line items stay unmatched"
            ));
            None
        }
    }
}

/// A source's `receiver_email` / `receiver_id`: required for PayPal, meaningless elsewhere.
fn paypal_receiver(
    c: &mut Checker,
    span: std::ops::Range<usize>,
    name: &str,
    s: &RawSource,
    provider: Provider,
) -> PaypalReceiver {
    let receiver = PaypalReceiver {
        emails: s
            .receiver_email
            .as_ref()
            .map(|v| v.get_ref().clone().into_vec())
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect(),
        id: s
            .receiver_id
            .as_ref()
            .map(|v| v.get_ref().trim().to_owned())
            .filter(|v| !v.is_empty()),
    };
    if let Some(list) = &s.receiver_email
        && let Some(bad) = receiver.emails.iter().find(|e| !e.contains('@'))
    {
        c.problem(
            list.span(),
            format!("source `{name}`: `receiver_email` `{bad}` is not an e-mail address"),
        );
    }
    if provider == Provider::PaypalIpn && !receiver.is_configured() {
        c.problem(
            span,
            format!(
                "source `{name}`: a PayPal source needs `receiver_email` (your PayPal account's address, or a list of them) and/or `receiver_id` (your merchant id): PayPal confirms that it sent a notification, not that the payment went to you"
            ),
        );
    }
    if provider != Provider::PaypalIpn && (s.receiver_email.is_some() || s.receiver_id.is_some()) {
        c.warn(format!(
            "source `{name}`: `receiver_email` and `receiver_id` only apply to PayPal IPN sources"
        ));
    }
    receiver
}

/// `[[rules]]` number `index`; `seen` maps each (source, product) to the rule that took it.
fn rule(
    c: &mut Checker,
    index: usize,
    spanned: &Spanned<RawRule>,
    sources: &BTreeMap<String, Spanned<RawSource>>,
    seen: &mut BTreeMap<(String, String), usize>,
) -> Rule {
    let r = spanned.get_ref();
    let source = r.source.get_ref().clone();
    if !sources.contains_key(&source) {
        let known: Vec<&str> = sources.keys().map(String::as_str).collect();
        c.problem(
            r.source.span(),
            format!(
                "rule {index}: unknown source `{source}`{}",
                if known.is_empty() {
                    " (no [sources.NAME] table is defined)".to_owned()
                } else {
                    format!("; defined sources: {}", known.join(", "))
                }
            ),
        );
    }
    let product = r.product.get_ref().trim().to_owned();
    if product.is_empty() {
        c.problem(
            r.product.span(),
            format!("rule {index}: `product` must not be empty (use \"*\" for any product)"),
        );
    }
    let offer = r.offer.get_ref().trim().to_owned();
    if offer.is_empty() {
        c.problem(
            r.offer.span(),
            format!("rule {index}: `offer` must not be empty"),
        );
    }
    if let Some(d) = &r.access_days
        && *d.get_ref() == 0
    {
        c.problem(
            d.span(),
            format!(
                "rule {index}: `access_days` must be at least 1 (leave it out for unlimited access)"
            ),
        );
    }
    let revoke_on = revoke_on(c, index, r);
    if r.grace_days.is_some() && !r.subscription.unwrap_or(false) {
        c.problem(
            spanned.span(),
            format!("rule {index}: `grace_days` needs `subscription = true`"),
        );
    }
    if let Some(first) = seen.insert((source.clone(), product.clone()), index) {
        c.problem(
            r.product.span(),
            format!(
                "rule {index}: source `{source}` product `{product}` is already mapped by rule {first}"
            ),
        );
    }
    let (currency, min_amount) = price(c, index, spanned);
    Rule {
        index,
        line: c.line(spanned.span().start),
        source,
        product,
        offer,
        access_days: r.access_days.as_ref().map(|d| *d.get_ref()),
        subscription: r.subscription.unwrap_or(false),
        grace_days: r.grace_days.unwrap_or(0),
        revoke_on,
        include_test: r.include_test.unwrap_or(true),
        currency,
        min_amount,
    }
}

/// A rule's `revoke_on`: the event kinds that end access.
fn revoke_on(c: &mut Checker, index: usize, r: &RawRule) -> Vec<String> {
    let Some(list) = &r.revoke_on else {
        return DEFAULT_REVOKE_ON.map(str::to_owned).to_vec();
    };
    for k in list.get_ref() {
        if !REVOCABLE.contains(&k.as_str()) {
            c.problem(
                list.span(),
                format!(
                    "rule {index}: `revoke_on` has `{k}`; allowed: {}",
                    REVOCABLE.join(", ")
                ),
            );
        }
    }
    list.get_ref().clone()
}

/// A rule's `currency` and `min_amount`: the price a payment must have to grant.
fn price(
    c: &mut Checker,
    index: usize,
    spanned: &Spanned<RawRule>,
) -> (Option<String>, Option<Amount>) {
    let r = spanned.get_ref();
    let currency = r.currency.as_ref().and_then(|cur| {
        let v = cur.get_ref().trim().to_ascii_uppercase();
        if v.len() == 3 && v.chars().all(|ch| ch.is_ascii_alphabetic()) {
            Some(v)
        } else {
            c.problem(
                cur.span(),
                format!(
                    "rule {index}: `currency` must be a three-letter ISO 4217 code such as \"EUR\", not `{}`",
                    cur.get_ref()
                ),
            );
            None
        }
    });
    let min_amount = r
        .min_amount
        .as_ref()
        .and_then(|m| match m.get_ref().parse_amount() {
            Ok(a) if a.is_positive() => Some(a),
            Ok(_) => {
                c.problem(
                    m.span(),
                    format!(
                        "rule {index}: `min_amount` must be above 0 (leave it out to accept any amount)"
                    ),
                );
                None
            }
            Err(e) => {
                c.problem(m.span(), format!("rule {index}: `min_amount` {e}"));
                None
            }
        });
    if r.min_amount.is_some() && r.currency.is_none() {
        c.problem(
            spanned.span(),
            format!(
                "rule {index}: `min_amount` needs `currency` (an amount means nothing without its currency)"
            ),
        );
    }
    (currency, min_amount)
}

/// `[processing]`.
fn processing(c: &mut Checker, raw: Option<&RawProcessing>) -> Processing {
    let mut processing = Processing::default();
    let Some(p) = raw else {
        return processing;
    };
    if let Some(n) = &p.max_attempts {
        if *n.get_ref() == 0 {
            c.problem(n.span(), "`processing.max_attempts` must be at least 1");
        }
        processing.max_attempts = *n.get_ref();
    }
    if let Some(n) = &p.concurrency {
        if *n.get_ref() == 0 || *n.get_ref() > 64 {
            c.problem(n.span(), "`processing.concurrency` must be 1 to 64");
        }
        processing.concurrency = *n.get_ref() as usize;
    }
    if let Some(s) = p.base_backoff_secs {
        processing.base_backoff = Duration::from_secs_f64(s.max(0.01));
    }
    if let Some(s) = p.max_backoff_secs {
        processing.max_backoff = Duration::from_secs_f64(s.max(0.01));
    }
    if let Some(s) = &p.lease_secs {
        if *s.get_ref() < 2 {
            c.problem(s.span(), "`processing.lease_secs` must be at least 2");
        }
        processing.lease = Duration::from_secs(*s.get_ref());
    }
    processing
}

/// `[poller]`: `None` when absent or switched off.
fn poller(c: &mut Checker, raw: Option<&Spanned<RawPoller>>) -> Option<PollerConfig> {
    let p = raw?.get_ref();
    if p.enabled == Some(false) {
        return None;
    }
    let mut cfg = PollerConfig {
        connection: p.connection.clone(),
        ..PollerConfig::default()
    };
    if let Some(n) = &p.persona {
        cfg.persona = n.clone();
    }
    if let Some(s) = &p.interval_secs {
        if *s.get_ref() < 10 {
            c.problem(s.span(), "`poller.interval_secs` must be at least 10");
        }
        cfg.interval = Duration::from_secs(*s.get_ref());
    }
    if let Some(s) = &p.rate_share {
        let v = *s.get_ref();
        if !(v > 0.0 && v <= 1.0) {
            c.problem(
                s.span(),
                format!("`poller.rate_share` must be above 0 and at most 1, got {v}"),
            );
        }
        cfg.rate_share = v;
    }
    cfg.courses = p.courses.clone().unwrap_or_default();
    Some(cfg)
}

/// `[retention]`.
fn retention(c: &mut Checker, raw: Option<&RawRetention>) -> Retention {
    let mut retention = Retention::default();
    let Some(r) = raw else {
        return retention;
    };
    for (value, field, slot) in [
        (&r.events_days, "events_days", &mut retention.events_days),
        (&r.refused_days, "refused_days", &mut retention.refused_days),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                c.problem(v.span(), format!("`retention.{field}` must be at least 1"));
            }
            *slot = *v.get_ref();
        }
    }
    retention
}

fn resolve_secret(
    s: &RawSource,
    base: Option<&Path>,
    c: &mut Checker,
    name: &str,
) -> (Option<SecretString>, String) {
    let non_empty = |v: String| {
        let v = v.trim().to_owned();
        (!v.is_empty()).then(|| SecretString::from(v))
    };
    if let Some(v) = &s.secret {
        return (non_empty(v.clone()), "inline".into());
    }
    if let Some(var) = &s.secret_env {
        let var = var.get_ref();
        let value = std::env::var(var).ok().and_then(non_empty);
        if value.is_none() {
            c.warn(format!(
                "source `{name}`: environment variable {var} is not set; its receiver rejects every delivery"
            ));
        }
        return (value, format!("env {var}"));
    }
    if let Some(file) = &s.secret_file {
        let path = match base {
            Some(b) if file.get_ref().is_relative() => b.join(file.get_ref()),
            _ => file.get_ref().clone(),
        };
        let value = match std::fs::read_to_string(&path) {
            Ok(t) => non_empty(t),
            Err(e) => {
                c.warn(format!(
                    "source `{name}`: cannot read secret file {}: {e}; its receiver rejects every delivery",
                    path.display()
                ));
                None
            }
        };
        return (value, format!("file {}", path.display()));
    }
    (None, "none".into())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default_connection: Option<String>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    processing: Option<RawProcessing>,
    poller: Option<Spanned<RawPoller>>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    events_days: Option<Spanned<u32>>,
    refused_days: Option<Spanned<u32>>,
}

/// One value or a list (`receiver_email = "a@x"` or `["a@x", "b@x"]`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A money amount written as a string (`"49.00"`) or a whole number (`49`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawAmount {
    Text(String),
    Whole(i64),
    Float(f64),
}

impl RawAmount {
    fn parse_amount(&self) -> Result<Amount, String> {
        match self {
            RawAmount::Text(t) => t.parse::<Amount>().map_err(|e| format!("`{t}`: {e}")),
            RawAmount::Whole(n) => Ok(Amount::from_units(*n)),
            RawAmount::Float(f) => Err(format!(
                "must be written as a string, e.g. \"{f:.2}\" (TOML decimals are inexact)"
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    provider: Spanned<String>,
    secret: Option<String>,
    secret_env: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
    connection: Option<String>,
    persona: Option<String>,
    tolerance_secs: Option<u64>,
    max_body_kb: Option<u64>,
    postback_url: Option<Spanned<String>>,
    receiver_email: Option<Spanned<OneOrMany>>,
    receiver_id: Option<Spanned<String>>,
    stripe_api_key_env: Option<Spanned<String>>,
    stripe_api_key_file: Option<Spanned<PathBuf>>,
    stripe_api_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source: Spanned<String>,
    product: Spanned<String>,
    offer: Spanned<String>,
    access_days: Option<Spanned<u32>>,
    subscription: Option<bool>,
    grace_days: Option<u32>,
    revoke_on: Option<Spanned<Vec<String>>>,
    include_test: Option<bool>,
    currency: Option<Spanned<String>>,
    min_amount: Option<Spanned<RawAmount>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessing {
    max_attempts: Option<Spanned<u32>>,
    concurrency: Option<Spanned<u32>>,
    base_backoff_secs: Option<f64>,
    max_backoff_secs: Option<f64>,
    lease_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoller {
    enabled: Option<bool>,
    connection: Option<String>,
    persona: Option<String>,
    interval_secs: Option<Spanned<u64>>,
    rate_share: Option<Spanned<f64>>,
    courses: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
[sources.ds24]
provider = "digistore24"
secret = "pass"

[sources.shop]
provider = "stripe"
secret = "whsec_x"

[[rules]]
source = "ds24"
product = "12345"
offer = "offer_a"
access_days = 30

[[rules]]
source = "ds24"
product = "*"
offer = "offer_b"
subscription = true
grace_days = 3
"#;

    #[test]
    fn parses_a_good_file() {
        let c = EventsConfig::parse(GOOD, "rules.toml", None).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources["ds24"].persona, "hook-ds24");
        // No school is assumed: it is decided at start, against the hub's connections.
        assert_eq!(c.sources["ds24"].connection, None);
        assert_eq!(c.default_connection, None);
        assert_eq!(c.rule_for("ds24", Some("12345")).unwrap().offer, "offer_a");
        assert_eq!(c.rule_for("ds24", Some("999")).unwrap().offer, "offer_b");
        assert!(c.rule_for("shop", Some("12345")).is_none());
        assert_eq!(
            c.rules[0].revoke_on,
            DEFAULT_REVOKE_ON.map(str::to_owned).to_vec()
        );
        assert_eq!(c.rules[0].line, 10);
    }

    #[test]
    fn problems_name_line_and_field() {
        let text = "[sources.a]\nprovider = \"stripe\"\nsecret = \"x\"\n\n[[rules]]\nsource = \"b\"\nproduct = \"\"\noffer = \"o\"\nrevoke_on = [\"refund\", \"payday\"]\n";
        let e = EventsConfig::parse(text, "r.toml", None).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("r.toml:6:10: rule 1: unknown source `b`; defined sources: a"),
            "{s}"
        );
        assert!(
            s.contains("r.toml:7:11: rule 1: `product` must not be empty"),
            "{s}"
        );
        assert!(
            s.contains("r.toml:9:13: rule 1: `revoke_on` has `payday`"),
            "{s}"
        );
    }

    #[test]
    fn syntax_and_unknown_keys_have_lines() {
        let e = EventsConfig::parse(
            "[sources.a]\nprovider = \"stripe\"\nsecert = \"x\"\n",
            "r",
            None,
        )
        .unwrap_err();
        assert_eq!(e.problems[0].line, 3, "{e}");
        assert!(e.to_string().contains("secert"), "{e}");
        let e = EventsConfig::parse("[sources.a\n", "r", None).unwrap_err();
        assert_eq!(e.problems[0].line, 1, "{e}");
        let e =
            EventsConfig::parse("[sources.a]\nprovider = \"paypall\"\n", "r", None).unwrap_err();
        assert!(e.to_string().contains("unknown provider `paypall`"), "{e}");
    }

    #[test]
    fn missing_secret_is_a_warning_and_fails_closed() {
        let c = EventsConfig::parse(
            "[sources.a]\nprovider = \"stripe\"\nsecret_env = \"MEMBERSPOT_TEST_UNSET_VAR_X\"\n",
            "r",
            None,
        )
        .unwrap();
        assert!(c.sources["a"].secret.is_none());
        assert!(
            c.warnings[0].contains("MEMBERSPOT_TEST_UNSET_VAR_X"),
            "{:?}",
            c.warnings
        );
        assert!(!format!("{:?}", c.sources["a"]).contains("secret\": Some"));
    }

    #[test]
    fn duplicate_mapping_is_refused() {
        let text = "[sources.a]\nprovider = \"stripe\"\nsecret = \"x\"\n[[rules]]\nsource = \"a\"\nproduct = \"p\"\noffer = \"o\"\n[[rules]]\nsource = \"a\"\nproduct = \"p\"\noffer = \"o2\"\n";
        let e = EventsConfig::parse(text, "r", None).unwrap_err();
        assert!(e.to_string().contains("already mapped by rule 1"), "{e}");
    }
}
