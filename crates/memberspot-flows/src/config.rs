//! `flows.toml`: the daily summary, delivery targets and user flows.
//!
//! Validated as a whole; every problem names the file, line and column. Secrets (the Slack
//! webhook URL, the SMTP password) come from environment variables or files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use memberspot_notify::{EmailTarget, Security, SlackTarget};
use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use memberspot_hub::schools::{School, SchoolError, Schools, Unresolved, resolve_all};

use crate::schedule::{Missed, Schedule};

/// How the daily summary is named where its school is reported.
pub const DIGEST_ITEM: &str = "the daily summary";

use memberspot_hub::config_file::{self, Checker, parse_toml};
pub use memberspot_hub::config_file::{ConfigError, Problem};

/// Where the daily summary goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Slack,
    Email,
    Stdout,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "slack" => Some(Target::Slack),
            "email" => Some(Target::Email),
            "stdout" => Some(Target::Stdout),
            _ => None,
        }
    }
}

/// The built-in daily summary.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    pub enabled: bool,
    /// The school's time zone: "yesterday" is a day there.
    pub timezone: String,
    pub schedule: Schedule,
    pub missed: Missed,
    /// The connection whose day is summed up: as the file names it, filled in when flows
    /// start (or when the summary is made, while it is off).
    pub connection: Option<String>,
    /// Targets; empty = every configured one.
    pub to: Vec<Target>,
    /// A model from the models file; none = the template summary.
    pub model: Option<String>,
    /// Replaces the built-in prompt.
    pub prompt: Option<String>,
}

/// Delivery settings, shared by the digest and notify steps.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub slack: Option<SlackTarget>,
    pub email: Option<EmailTarget>,
}

/// Immediate alerts: a dead event, an event no rule matched, a refused delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// On unless `enabled = false`, and only with somewhere to send them.
    pub enabled: bool,
    pub to: Vec<Target>,
    /// How often the store is checked.
    pub check: Duration,
    /// At most one alert per this long, across instances: a burst is one message.
    pub quiet: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: false,
            to: Vec::new(),
            check: Duration::from_secs(30),
            quiet: Duration::from_secs(600),
        }
    }
}

/// A step of a flow.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub line: usize,
    pub action: Action,
    /// Run once per item of this list (a template expression, e.g. `steps.list.output.items`).
    pub for_each: Option<String>,
    /// The loop variable's name (default `item`).
    pub item: String,
    pub attempts: u32,
    pub backoff: Duration,
    /// Continue with the next step when this one fails.
    pub continue_on_error: bool,
}

/// What a step does. String values are templates (minijinja) over the run's context.
#[derive(Debug, Clone)]
pub enum Action {
    Tool {
        tool: String,
        args: toml::Value,
    },
    Model {
        model: String,
        prompt: String,
    },
    Notify {
        target: Target,
        subject: String,
        text: String,
    },
    Http {
        method: String,
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        json: Option<toml::Value>,
    },
    /// Renders a template; the output is parsed as JSON when it is JSON.
    Transform {
        template: String,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Tool { .. } => "tool",
            Action::Model { .. } => "model",
            Action::Notify { .. } => "notify",
            Action::Http { .. } => "http",
            Action::Transform { .. } => "transform",
        }
    }
}

/// What starts a flow.
#[derive(Debug, Clone)]
pub enum Trigger {
    Cron {
        schedule: Box<Schedule>,
        missed: Missed,
    },
    /// Stored events of this kind (`course_completed`, `purchase`, …), optionally of one source.
    Event {
        kind: String,
        source: Option<String>,
    },
    Manual,
}

/// A user flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: String,
    pub persona: String,
    /// The school the persona acts on (where it is created when missing): as the file
    /// names it, filled in when flows start.
    pub connection: Option<String>,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    pub line: usize,
}

/// The whole, validated file.
#[derive(Debug, Clone, Default)]
pub struct FlowsConfig {
    /// The file as given to [`FlowsConfig::parse`], for messages.
    pub file: String,
    /// The school of the summary, flows, syncs and exports that name none.
    pub default_connection: Option<String>,
    pub digest: Option<DigestConfig>,
    pub delivery: Delivery,
    /// Immediate alerts on problems (see [`crate::alerts`]).
    pub alerts: AlertsConfig,
    pub flows: Vec<Flow>,
    pub syncs: Vec<crate::sync::SyncSpec>,
    pub exports: Vec<crate::export::ExportSpec>,
    /// The flows file's directory: relative paths (sync CSV files) start here.
    pub base: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl FlowsConfig {
    pub fn load(path: &Path) -> Result<FlowsConfig, ConfigError> {
        let text = config_file::read(path, "the flows file")?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates. `base` resolves relative paths (`password_file`, `prompt_file`).
    /// Every section is checked, so all problems are reported at once.
    pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<FlowsConfig, ConfigError> {
        let raw: RawFile = parse_toml(file, text)?;
        let mut c = Checker::new(text);
        let delivery = delivery(&mut c, &raw.delivery, base);
        let timezone = raw
            .timezone
            .clone()
            .or_else(|| {
                raw.digest
                    .as_ref()
                    .and_then(|d| d.get_ref().timezone.clone())
            })
            .unwrap_or_else(|| "Europe/Berlin".into());
        let digest = digest(&mut c, raw.digest.as_ref(), &timezone, &delivery, base);
        let alerts = alerts(&mut c, raw.alerts.as_ref(), &delivery);
        let mut names = BTreeSet::new();
        let flows = raw
            .flows
            .iter()
            .map(|f| flow(&mut c, f, &mut names, &timezone, &raw.delivery))
            .collect();
        let syncs = raw.syncs.iter().map(|sy| sync(&mut c, sy)).collect();
        let exports = raw.exports.iter().map(|ex| export(&mut c, ex)).collect();
        let warnings = c.finish(file)?;
        Ok(FlowsConfig {
            file: file.to_owned(),
            default_connection: raw.default_connection.clone(),
            digest,
            delivery,
            alerts,
            flows,
            syncs,
            exports,
            base: base.map(Path::to_path_buf),
            warnings,
        })
    }

    /// Decides the school of the daily summary (while it is on), every flow, sync and
    /// export (see [`Schools::resolve`]) and fills it in; every item without one is
    /// reported at once.
    pub fn resolve_connections(
        &mut self,
        schools: &Schools,
    ) -> Result<Vec<(String, School)>, Unresolved> {
        let default = self.default_connection.clone();
        let file = self.file_name();
        let mut items: Vec<(String, &mut Option<String>)> = Vec::new();
        if let Some(d) = self.digest.as_mut().filter(|d| d.enabled) {
            items.push((DIGEST_ITEM.to_owned(), &mut d.connection));
        }
        items.extend(
            self.flows
                .iter_mut()
                .map(|f| (format!("flow `{}`", f.name), &mut f.connection)),
        );
        items.extend(
            self.syncs
                .iter_mut()
                .map(|s| (format!("sync `{}`", s.name), &mut s.connection)),
        );
        items.extend(
            self.exports
                .iter_mut()
                .map(|e| (format!("export `{}`", e.name), &mut e.connection)),
        );
        resolve_all(schools, items, default.as_deref(), &file)
    }

    /// The school of the daily summary, decided now when it was not at start (the summary
    /// is off, or there is no flows file).
    pub fn digest_school(&self, schools: &Schools) -> Result<School, SchoolError> {
        let named = self.digest.as_ref().and_then(|d| d.connection.as_deref());
        schools.resolve(
            DIGEST_ITEM,
            named,
            self.default_connection.as_deref(),
            &self.file_name(),
        )
    }

    fn file_name(&self) -> String {
        config_file::describe("the flows file", &self.file)
    }

    pub fn sync(&self, name: &str) -> Option<&crate::sync::SyncSpec> {
        self.syncs.iter().find(|s| s.name == name)
    }

    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.name == name)
    }
}

/// `p` relative to the flows file's directory.
fn resolve(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// `[delivery.slack]` and `[delivery.email]`.
fn delivery(c: &mut Checker, raw: &RawDelivery, base: Option<&Path>) -> Delivery {
    Delivery {
        slack: raw.slack.as_ref().and_then(|s| slack(c, s, base)),
        email: raw.email.as_ref().map(|e| email(c, e, base)),
    }
}

/// `[delivery.slack]`: off (with a warning) while its webhook URL is not set.
fn slack(c: &mut Checker, raw: &Spanned<RawSlack>, base: Option<&Path>) -> Option<SlackTarget> {
    let s = raw.get_ref();
    let file = s.webhook_url_file.as_deref().map(|p| resolve(base, p));
    match secret_value(
        "delivery.slack",
        "webhook_url",
        s.webhook_url.as_deref(),
        s.webhook_url_env.as_deref(),
        file.as_deref(),
    ) {
        Ok(Some(url)) => {
            let mut t = SlackTarget::new(url);
            if let Some(n) = s.max_attempts {
                t.max_attempts = n.max(1);
            }
            Some(t)
        }
        Ok(None) => {
            c.warn("delivery.slack: the webhook URL is not set (webhook_url_env / webhook_url_file); Slack delivery is off");
            None
        }
        Err(m) => {
            c.problem(raw.span(), m);
            None
        }
    }
}

/// `[delivery.email]`.
fn email(c: &mut Checker, raw: &Spanned<RawEmail>, base: Option<&Path>) -> EmailTarget {
    let span = raw.span();
    let e = raw.get_ref();
    let security = match e.security.as_deref().unwrap_or("starttls") {
        "starttls" => Security::StartTls,
        "tls" => Security::Tls,
        "none" => Security::None,
        other => {
            c.problem(
                span.clone(),
                format!("delivery.email.security: `{other}`; use starttls, tls or none"),
            );
            Security::StartTls
        }
    };
    if e.to.is_empty() {
        c.problem(
            span.clone(),
            "delivery.email.to: give at least one recipient",
        );
    }
    let file = e.password_file.as_deref().map(|p| resolve(base, p));
    let password = match secret_value(
        "delivery.email",
        "password",
        e.password.as_deref(),
        e.password_env.as_deref(),
        file.as_deref(),
    ) {
        Ok(p) => p,
        Err(m) => {
            c.problem(span.clone(), m);
            None
        }
    };
    if e.username.is_some() && password.is_none() {
        c.warn("delivery.email: a username without a password; the server may refuse to send");
    }
    let password_given =
        e.password.is_some() || e.password_env.is_some() || e.password_file.is_some();
    if security == Security::None
        && password_given
        && !memberspot_notify::email::is_loopback(&e.host)
    {
        c.problem(
            span,
            format!(
                "delivery.email: security = \"none\" would send the password unencrypted to {}; \
                 use starttls or tls (none is for a relay on this machine)",
                e.host
            ),
        );
    }
    EmailTarget {
        host: e.host.clone(),
        port: e.port.unwrap_or_else(|| security.default_port()),
        security,
        username: e.username.clone(),
        password: password.map(SecretString::from),
        from: e.from.clone(),
        to: e.to.clone(),
        timeout: Duration::from_secs(e.timeout_secs.unwrap_or(30)),
    }
}

/// `[digest]`: the daily summary, on when a delivery target is configured unless switched
/// off. `None` when its schedule does not parse.
fn digest(
    c: &mut Checker,
    raw: Option<&Spanned<RawDigest>>,
    timezone: &str,
    delivery: &Delivery,
    base: Option<&Path>,
) -> Option<DigestConfig> {
    let d = raw.map(|d| d.get_ref());
    let span = raw.map_or(0..0, |d| d.span());
    let enabled = match d.and_then(|d| d.enabled) {
        Some(v) => v,
        None => delivery.slack.is_some() || delivery.email.is_some(),
    };
    let cron = match d.and_then(|d| d.at.as_deref()) {
        Some(hhmm) => match parse_hhmm(hhmm) {
            Some((h, m)) => format!("{m} {h} * * *"),
            None => {
                c.problem(
                    span.clone(),
                    format!("digest.at: `{hhmm}` is not a time like 07:00"),
                );
                "0 7 * * *".into()
            }
        },
        None => d
            .and_then(|d| d.cron.clone())
            .unwrap_or_else(|| "0 7 * * *".into()),
    };
    let schedule = match Schedule::parse(&cron, timezone) {
        Ok(schedule) => schedule,
        Err(m) => {
            c.problem(span, format!("digest: {m}"));
            return None;
        }
    };
    let to = digest_targets(c, span.clone(), d, delivery);
    let prompt = match d.and_then(|d| d.prompt_file.as_ref()) {
        Some(p) => match std::fs::read_to_string(resolve(base, p)) {
            Ok(t) => Some(t),
            Err(e) => {
                c.problem(span, format!("digest.prompt_file {}: {e}", p.display()));
                None
            }
        },
        None => d.and_then(|d| d.prompt.clone()),
    };
    Some(DigestConfig {
        enabled,
        timezone: timezone.to_owned(),
        schedule,
        missed: d.and_then(|d| d.missed).unwrap_or(Missed::CatchUp),
        connection: d.and_then(|d| d.connection.clone()),
        to,
        model: d.and_then(|d| d.model.clone()),
        prompt,
    })
}

/// `[alerts]`: on by default wherever a delivery target is configured.
fn alerts(c: &mut Checker, raw: Option<&Spanned<RawAlerts>>, delivery: &Delivery) -> AlertsConfig {
    let span = raw.map_or(0..0, |a| a.span());
    let a = raw.map(Spanned::get_ref);
    let mut to = Vec::new();
    for t in a.map(|a| a.to.clone()).unwrap_or_default() {
        match Target::parse(&t) {
            Some(t @ (Target::Slack | Target::Email)) => to.push(t),
            _ => c.problem(
                span.clone(),
                format!("alerts.to: `{t}`; use slack or email"),
            ),
        }
    }
    for t in &to {
        let configured = match t {
            Target::Slack => delivery.slack.is_some(),
            _ => delivery.email.is_some(),
        };
        if !configured {
            c.problem(
                span.clone(),
                format!(
                    "alerts.to names {t:?} but [delivery.{}] is not configured",
                    if *t == Target::Slack {
                        "slack"
                    } else {
                        "email"
                    }
                ),
            );
        }
    }
    if to.is_empty() {
        to.extend(delivery.slack.as_ref().map(|_| Target::Slack));
        to.extend(delivery.email.as_ref().map(|_| Target::Email));
    }
    let check_secs = a.and_then(|a| a.check_secs).unwrap_or(30);
    if !(5..=60).contains(&check_secs) {
        c.problem(
            span.clone(),
            format!("alerts.check_secs: {check_secs}; use 5 to 60 (alerts go out within a minute)"),
        );
    }
    let quiet_minutes = a.and_then(|a| a.quiet_minutes).unwrap_or(10);
    if !(1..=1440).contains(&quiet_minutes) {
        c.problem(
            span,
            format!("alerts.quiet_minutes: {quiet_minutes}; use 1 to 1440"),
        );
    }
    AlertsConfig {
        enabled: a.and_then(|a| a.enabled).unwrap_or(true) && !to.is_empty(),
        to,
        check: Duration::from_secs(check_secs),
        quiet: Duration::from_secs(quiet_minutes * 60),
    }
}

/// `digest.to`: each target must be configured under `[delivery]`.
fn digest_targets(
    c: &mut Checker,
    span: std::ops::Range<usize>,
    d: Option<&RawDigest>,
    delivery: &Delivery,
) -> Vec<Target> {
    let mut to = Vec::new();
    for t in d.map(|d| d.to.clone()).unwrap_or_default() {
        match Target::parse(&t) {
            Some(t) => to.push(t),
            None => c.problem(
                span.clone(),
                format!("digest.to: `{t}`; use slack, email or stdout"),
            ),
        }
    }
    for t in &to {
        if (*t == Target::Slack && delivery.slack.is_none())
            || (*t == Target::Email && delivery.email.is_none())
        {
            c.problem(
                span.clone(),
                format!(
                    "digest.to names {t:?} but [delivery.{}] is not configured",
                    format!("{t:?}").to_lowercase()
                ),
            );
        }
    }
    to
}

/// One `[[flows]]`; `names` holds the flow names seen so far.
fn flow(
    c: &mut Checker,
    spanned: &Spanned<RawFlow>,
    names: &mut BTreeSet<String>,
    timezone: &str,
    delivery: &RawDelivery,
) -> Flow {
    let f = spanned.get_ref();
    let name = f.name.get_ref().clone();
    if !valid_name(&name) {
        c.problem(
            f.name.span(),
            format!("flow name `{name}` must be 1-64 letters, digits, `-` or `_`"),
        );
    }
    if name == "digest" {
        c.problem(
            f.name.span(),
            "`digest` is the built-in daily summary's name; choose another",
        );
    }
    if !names.insert(name.clone()) {
        c.problem(f.name.span(), format!("flow `{name}` is defined twice"));
    }
    let trigger = trigger(c, &name, spanned, timezone);
    if let Trigger::Event { kind, .. } = &trigger {
        check_event_kind(c, &name, kind);
    }
    if f.steps.is_empty() {
        c.problem(spanned.span(), format!("flow `{name}` has no steps"));
    }
    let mut step_names = BTreeSet::new();
    let steps = f
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| step(c, &name, i, s, &mut step_names, delivery))
        .collect();
    Flow {
        description: f.description.clone().unwrap_or_default(),
        persona: f.persona.clone().unwrap_or_else(|| "automation".into()),
        connection: f.connection.clone(),
        trigger,
        steps,
        line: c.line(spanned.span().start),
        name,
    }
}

/// Event kinds the hub stores: payments (every provider) and what the poller observes.
/// Memberspot's own outbound events keep the name Memberspot sends, which no list holds.
const EVENT_KINDS: [&str; 15] = [
    "purchase",
    "recurring_payment",
    "refund",
    "chargeback",
    "cancellation",
    "end_of_term",
    "payment_missed",
    "member_created",
    "member_deleted",
    "offer_granted",
    "offer_revoked",
    "offer_expired",
    "progress_changed",
    "course_completed",
    "auth_test",
];

/// A kind the hub does not produce fires only on a Memberspot event of exactly that
/// name: a warning, with the nearest known kind when it looks like a typo.
fn check_event_kind(c: &mut Checker, flow: &str, kind: &str) {
    if EVENT_KINDS.contains(&kind) {
        return;
    }
    let nearest = EVENT_KINDS
        .iter()
        .map(|k| (strsim::levenshtein(k, kind), *k))
        .min()
        .filter(|(d, _)| *d <= 3);
    let hint = match nearest {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => format!("; the hub's kinds: {}", EVENT_KINDS.join(", ")),
    };
    c.warn(format!(
        "flow `{flow}`: trigger.event `{kind}` is not a kind the hub stores, so it fires only \
         on a Memberspot event of exactly that name{hint}"
    ));
}

/// A flow's `trigger`: one of cron, event or manual (none given: manual).
fn trigger(c: &mut Checker, name: &str, spanned: &Spanned<RawFlow>, timezone: &str) -> Trigger {
    let t = &spanned.get_ref().trigger;
    match (&t.cron, &t.event, t.manual) {
        (Some(cron), None, None | Some(false)) => {
            let tz = t.timezone.as_deref().unwrap_or(timezone);
            match Schedule::parse(cron.get_ref(), tz) {
                Ok(schedule) => Trigger::Cron {
                    schedule: Box::new(schedule),
                    missed: t.missed.unwrap_or_default(),
                },
                Err(m) => {
                    c.problem(cron.span(), format!("flow `{name}`: {m}"));
                    Trigger::Manual
                }
            }
        }
        (None, Some(kind), None | Some(false)) => Trigger::Event {
            kind: kind.clone(),
            source: t.source.clone(),
        },
        (None, None, _) => Trigger::Manual,
        _ => {
            c.problem(
                spanned.span(),
                format!("flow `{name}`: give one trigger: cron, event or manual"),
            );
            Trigger::Manual
        }
    }
}

/// Step `i` of flow `name`: `None` when what it does cannot be made out.
fn step(
    c: &mut Checker,
    name: &str,
    i: usize,
    s: &Spanned<RawStep>,
    step_names: &mut BTreeSet<String>,
    delivery: &RawDelivery,
) -> Option<Step> {
    let st = s.get_ref();
    let step_name = st.name.clone().unwrap_or_else(|| format!("step{}", i + 1));
    if !step_names.insert(step_name.clone()) {
        c.problem(
            s.span(),
            format!("flow `{name}`: step name `{step_name}` is used twice"),
        );
    }
    let action = action(
        c,
        &format!("flow `{name}` step `{step_name}`"),
        name,
        s,
        delivery,
    )?;
    // Templates are checked now, so typos fail at validation, not at 7 am: their syntax,
    // and that what they read exists by then (an earlier step, the run's context).
    let what = format!("flow `{name}` step `{step_name}`");
    let item = st.item.clone().unwrap_or_else(|| "item".into());
    let mut templates = templates_of(&action);
    templates.extend(st.for_each.clone());
    for t in templates {
        match crate::template::variables(&t) {
            Err(e) => c.problem(s.span(), format!("{what}: template: {e}")),
            Ok(vars) => {
                for var in vars {
                    if let Some(m) = unknown_reference(
                        &var,
                        step_names,
                        &step_name,
                        &item,
                        st.for_each.is_some(),
                    ) {
                        c.problem(s.span(), format!("{what}: `{var}`: {m}"));
                    }
                }
            }
        }
    }
    if let Action::Http { url, .. } = &action
        && !url.contains("{{")
    {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => c.problem(
                s.span(),
                format!(
                    "{what}: http.url `{url}`: use http or https, not {}",
                    u.scheme()
                ),
            ),
            Err(e) => c.problem(
                s.span(),
                format!("{what}: http.url `{url}` is not a URL: {e}"),
            ),
        }
    }
    let retry = st.retry.as_ref();
    if let Some(r) = retry {
        if r.attempts == Some(0) || r.attempts.is_some_and(|a| a > 20) {
            c.problem(
                s.span(),
                format!("{what}: retry.attempts must be 1 to 20 (1 = no retry)"),
            );
        }
        if let Some(b) = r.backoff_secs
            && !(b.is_finite() && (0.0..=3600.0).contains(&b))
        {
            c.problem(
                s.span(),
                format!("{what}: retry.backoff_secs {b} must be 0 to 3600 seconds"),
            );
        }
    }
    Some(Step {
        line: c.line(s.span().start),
        action,
        for_each: st.for_each.clone(),
        item: st.item.clone().unwrap_or_else(|| "item".into()),
        attempts: retry.and_then(|r| r.attempts).unwrap_or(1).max(1),
        backoff: Duration::from_secs_f64(
            retry.and_then(|r| r.backoff_secs).unwrap_or(2.0).max(0.0),
        ),
        continue_on_error: st.continue_on_error.unwrap_or(false),
        name: step_name,
    })
}

/// What a step does: exactly one of tool, model, notify, http and transform. `what` names
/// the step in messages.
fn action(
    c: &mut Checker,
    what: &str,
    flow: &str,
    s: &Spanned<RawStep>,
    delivery: &RawDelivery,
) -> Option<Action> {
    let st = s.get_ref();
    let given = [
        st.tool.is_some(),
        st.model.is_some(),
        st.notify.is_some(),
        st.http.is_some(),
        st.transform.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        c.problem(
            s.span(),
            format!("{what}: give exactly one of tool, model, notify, http, transform"),
        );
        return None;
    }
    if let Some(tool) = &st.tool {
        if !is_tool(tool) {
            c.problem(
                s.span(),
                format!("{what}: unknown tool `{tool}` (see `memberspot tools list`)"),
            );
            return None;
        }
        return Some(Action::Tool {
            tool: tool.clone(),
            args: st
                .args
                .clone()
                .unwrap_or(toml::Value::Table(Default::default())),
        });
    }
    if let Some(model) = &st.model {
        let Some(p) = &st.prompt else {
            c.problem(s.span(), format!("{what}: a model step needs `prompt`"));
            return None;
        };
        return Some(Action::Model {
            model: model.clone(),
            prompt: p.clone(),
        });
    }
    if let Some(n) = &st.notify {
        let target = match Target::parse(n) {
            Some(Target::Stdout) | None => {
                c.problem(
                    s.span(),
                    format!("{what}: notify = `{n}`; use slack or email"),
                );
                return None;
            }
            Some(t) => t,
        };
        if (target == Target::Slack && delivery.slack.is_none())
            || (target == Target::Email && delivery.email.is_none())
        {
            c.problem(
                s.span(),
                format!("{what}: notify = `{n}` but [delivery.{n}] is not configured"),
            );
        }
        return Some(Action::Notify {
            target,
            subject: st
                .subject
                .clone()
                .unwrap_or_else(|| format!("Memberspot flow {flow}")),
            text: st.text.clone().unwrap_or_default(),
        });
    }
    if let Some(h) = &st.http {
        let method = h
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            c.problem(s.span(), format!("{what}: http.method `{method}`"));
        }
        if h.body.is_some() && h.json.is_some() {
            c.problem(
                s.span(),
                format!("{what}: http takes `body` or `json`, not both"),
            );
        }
        return Some(Action::Http {
            method,
            url: h.url.clone(),
            headers: h.headers.clone().unwrap_or_default(),
            body: h.body.clone(),
            json: h.json.clone(),
        });
    }
    Some(Action::Transform {
        template: st.transform.clone().unwrap_or_default(),
    })
}

/// One `[[syncs]]`.
fn sync(c: &mut Checker, spanned: &Spanned<crate::sync::SyncSpec>) -> crate::sync::SyncSpec {
    let sy = spanned.get_ref();
    if !valid_name(&sy.name) {
        c.problem(
            spanned.span(),
            format!(
                "sync name `{}` must be 1-64 letters, digits, `-` or `_`",
                sy.name
            ),
        );
    }
    if sy.source.max_bytes == Some(0) {
        c.problem(
            spanned.span(),
            format!("sync `{}`: source.max_bytes must be at least 1", sy.name),
        );
    }
    if let Some(u) = &sy.source.url
        && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        c.problem(
            spanned.span(),
            format!("sync `{}`: source.url `{u}` is not an http(s) URL", sy.name),
        );
    }
    if sy.source.csv.is_none() && sy.source.url.is_none() {
        c.problem(
            spanned.span(),
            format!("sync `{}`: source needs `csv` (a file) or `url`", sy.name),
        );
    }
    let m = &sy.map;
    let mut templates = vec![("email", m.email.clone()), ("offer", m.offer.clone())];
    for (k, v) in [
        ("first_name", &m.first_name),
        ("last_name", &m.last_name),
        ("order_id", &m.order_id),
        ("expires_at", &m.expires_at),
        ("active", &m.active),
    ] {
        if let Some(v) = v {
            templates.push((k, v.clone()));
        }
    }
    templates.extend(m.properties.values().map(|v| ("properties", v.clone())));
    for (k, t) in templates {
        if let Err(e) = crate::template::check(&t) {
            c.problem(spanned.span(), format!("sync `{}` map.{k}: {e}", sy.name));
        }
    }
    sy.clone()
}

/// One `[[exports]]`.
fn export(
    c: &mut Checker,
    spanned: &Spanned<crate::export::ExportSpec>,
) -> crate::export::ExportSpec {
    let ex = spanned.get_ref();
    if ex.file.is_some() == ex.url.is_some() {
        c.problem(
            spanned.span(),
            format!("export `{}`: give exactly one of `file` and `url`", ex.name),
        );
    }
    if let Some(f) = &ex.format
        && !["csv", "json"].contains(&f.as_str())
    {
        c.problem(
            spanned.span(),
            format!("export `{}`: format `{f}`; use csv or json", ex.name),
        );
    }
    ex.clone()
}

/// Whether the catalogue has a tool of this name.
fn is_tool(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            memberspot_tools::Catalogue::standard()
                .iter()
                .map(|e| e.name())
                .collect()
        })
        .contains(&name)
}

/// Why a variable a step's template reads will not exist when the step runs, if it will
/// not: the run's context (see [`crate::runner`]) and the steps before this one.
fn unknown_reference(
    var: &str,
    earlier: &BTreeSet<String>,
    this_step: &str,
    item: &str,
    looping: bool,
) -> Option<String> {
    let mut parts = var.split('.');
    let root = parts.next().unwrap_or_default();
    match root {
        "flow" | "run_id" | "trigger" | "event" | "input" | "now" => None,
        "loop" if looping => None,
        r if looping && r == item => None,
        "steps" => match parts.next() {
            None => None,
            Some(s) if s == this_step => Some(format!(
                "step `{s}` reads its own output, which it has not made yet"
            )),
            // `earlier` holds this step too (it was added before the check).
            Some(s) if earlier.contains(s) => None,
            Some(s) => Some(format!(
                "no step `{s}` before this one (a step reads only earlier steps' output)"
            )),
        },
        r if r == item => Some(format!("`{item}` exists only in a step with for_each")),
        r => Some(format!(
            "`{r}` is not in a step's context; use flow, run_id, trigger, event, input, now, \
             steps.NAME.output{}",
            if looping {
                format!(" or {item}")
            } else {
                String::new()
            }
        )),
    }
}

fn templates_of(a: &Action) -> Vec<String> {
    match a {
        Action::Tool { args, .. } => strings_in(args),
        Action::Model { prompt, .. } => vec![prompt.clone()],
        Action::Notify { subject, text, .. } => vec![subject.clone(), text.clone()],
        Action::Http {
            url,
            headers,
            body,
            json,
            ..
        } => {
            let mut v = vec![url.clone()];
            v.extend(headers.values().cloned());
            v.extend(body.clone());
            if let Some(j) = json {
                v.extend(strings_in(j));
            }
            v
        }
        Action::Transform { template } => vec![template.clone()],
    }
}

fn strings_in(v: &toml::Value) -> Vec<String> {
    match v {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(a) => a.iter().flat_map(strings_in).collect(),
        toml::Value::Table(t) => t.values().flat_map(strings_in).collect(),
        _ => Vec::new(),
    }
}

/// A secret from (exactly one of) an inline value, an environment variable or a file.
fn secret_value(
    table: &str,
    key: &str,
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, String> {
    let given = [inline.is_some(), env.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        return Err(format!(
            "{table}: set only one of `{key}`, `{key}_env`, `{key}_file`"
        ));
    }
    let value = if let Some(v) = inline {
        Some(v.to_owned())
    } else if let Some(var) = env {
        std::env::var(var).ok()
    } else if let Some(path) = file {
        Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{table}.{key}_file {}: {e}", path.display()))?,
        )
    } else {
        None
    };
    Ok(value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
}

fn parse_hhmm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
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
    timezone: Option<String>,
    digest: Option<Spanned<RawDigest>>,
    alerts: Option<Spanned<RawAlerts>>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    flows: Vec<Spanned<RawFlow>>,
    #[serde(default)]
    syncs: Vec<Spanned<crate::sync::SyncSpec>>,
    #[serde(default)]
    exports: Vec<Spanned<crate::export::ExportSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    enabled: Option<bool>,
    timezone: Option<String>,
    at: Option<String>,
    cron: Option<String>,
    missed: Option<Missed>,
    connection: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    model: Option<String>,
    prompt: Option<String>,
    prompt_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    enabled: Option<bool>,
    #[serde(default)]
    to: Vec<String>,
    check_secs: Option<u64>,
    quiet_minutes: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    slack: Option<Spanned<RawSlack>>,
    email: Option<Spanned<RawEmail>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    webhook_url: Option<String>,
    webhook_url_env: Option<String>,
    webhook_url_file: Option<PathBuf>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    from: String,
    #[serde(default)]
    to: Vec<String>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: Spanned<String>,
    description: Option<String>,
    persona: Option<String>,
    connection: Option<String>,
    #[serde(default)]
    trigger: RawTrigger,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    cron: Option<Spanned<String>>,
    timezone: Option<String>,
    missed: Option<Missed>,
    event: Option<String>,
    source: Option<String>,
    manual: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    tool: Option<String>,
    args: Option<toml::Value>,
    model: Option<String>,
    prompt: Option<String>,
    notify: Option<String>,
    subject: Option<String>,
    text: Option<String>,
    http: Option<RawHttp>,
    transform: Option<String>,
    for_each: Option<String>,
    item: Option<String>,
    retry: Option<RawRetry>,
    continue_on_error: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    method: Option<String>,
    url: String,
    headers: Option<BTreeMap<String, String>>,
    body: Option<String>,
    json: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    backoff_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str =
        "[delivery.slack]\nwebhook_url = \"https://hooks.slack.com/services/T/B/X\"\n";

    #[test]
    fn alerts_are_on_with_a_target_and_off_without() {
        let on = FlowsConfig::parse(SLACK, "flows.toml", None).expect("parses");
        assert!(on.alerts.enabled);
        assert_eq!(on.alerts.to, vec![Target::Slack]);
        let off = FlowsConfig::parse("", "flows.toml", None).expect("parses");
        assert!(!off.alerts.enabled, "nowhere to send them");
        let disabled = FlowsConfig::parse(
            &format!("{SLACK}\n[alerts]\nenabled = false\n"),
            "flows.toml",
            None,
        )
        .expect("parses");
        assert!(!disabled.alerts.enabled);
    }

    /// Every problem of a flows file in one pass, each naming the flow, the step and what
    /// to do: references to later or missing steps and unknown names in templates, bad
    /// URLs and retry values, a password sent unencrypted to another machine.
    #[test]
    fn flows_files_are_checked_for_everything_at_once() {
        let text = r#"
[delivery.email]
host = "smtp.example.com"
security = "none"
username = "u"
password = "p"
from = "a@b.de"
to = ["c@d.de"]

[[flows]]
name = "welcome"
trigger.manual = true

[[flows.steps]]
name = "one"
tool = "list_offers"
args = { note = "{{ steps.two.output.email }}" }

[[flows.steps]]
name = "two"
http = { method = "POST", url = "not a url" }
retry = { attempts = 0, backoff_secs = -1 }

[[flows.steps]]
name = "three"
tool = "list_offers"
args = { x = "{{ nope.value }}", y = "{{ steps.three.output }}", z = "{{ item.email }}" }

[[flows.steps]]
name = "four"
for_each = "steps.one.output.offers"
tool = "list_offers"
args = { id = "{{ item.id }}", at = "{{ now }}", who = "{{ input.email }}", n = "{{ loop.index }}" }
"#;
        let e = FlowsConfig::parse(text, "flows.toml", None).expect_err("refused");
        let m = e.to_string();
        for needle in [
            "security = \"none\" would send the password unencrypted to smtp.example.com",
            "step `one`: `steps.two.output.email`: no step `two` before this one",
            "step `two`: http.url `not a url` is not a URL",
            "step `two`: retry.attempts must be 1 to 20",
            "step `two`: retry.backoff_secs -1 must be 0 to 3600 seconds",
            "step `three`: `nope.value`: `nope` is not in a step's context",
            "step `three`: `steps.three.output`: step `three` reads its own output",
            "step `three`: `item.email`: `item` exists only in a step with for_each",
        ] {
            assert!(m.contains(needle), "{needle}: {m}");
        }
        assert!(
            !m.contains("step `four`"),
            "a loop reads item, loop, now, input: {m}"
        );
        assert_eq!(e.problems.len(), 8, "{m}");
    }

    #[test]
    fn an_event_kind_the_hub_does_not_store_is_a_warning_with_the_nearest_kind() {
        let text = "[[flows]]\nname = \"w\"\ntrigger.event = \"purchse\"\n\n[[flows.steps]]\ntool = \"list_offers\"\n";
        let cfg = FlowsConfig::parse(text, "flows.toml", None).expect("a warning, not an error");
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("`purchse`") && w.contains("did you mean `purchase`?")),
            "{:?}",
            cfg.warnings
        );
        let ok = text.replace("purchse", "purchase");
        let cfg = FlowsConfig::parse(&ok, "flows.toml", None).expect("parses");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn bad_alert_settings_are_named_all_at_once() {
        let text = format!(
            "{SLACK}\n[alerts]\nto = [\"email\", \"pager\"]\ncheck_secs = 600\nquiet_minutes = 0\n"
        );
        let e = FlowsConfig::parse(&text, "flows.toml", None).expect_err("refused");
        let m = e.to_string();
        for needle in [
            "alerts.to names Email but [delivery.email] is not configured",
            "alerts.to: `pager`; use slack or email",
            "alerts.check_secs: 600; use 5 to 60",
            "alerts.quiet_minutes: 0; use 1 to 1440",
        ] {
            assert!(m.contains(needle), "{needle}: {m}");
        }
    }
}
