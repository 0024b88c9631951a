//! The daily summary: what happened in the school on one local day.
//!
//! Numbers come from the hub's own records — the event store (payments, the poller's
//! observations, Memberspot's events), the queue's problems and the audit log — with
//! grouped queries, so a day with 100,000 events builds in well under a second. Offer and
//! course names come from the school (one `list_offers` call). Rendering is plain text,
//! HTML and Slack Block Kit from the same [`Digest`] value; a model, when configured,
//! adds a short written summary on top. Every rendering ends with the audit chain head,
//! so the owner's inbox keeps anchors the database cannot rewrite.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use memberspot_hub::store::{
    AuditCount, AuditOutcome, ChainHead, EventCount, EventStatus, FlowStore, Trusted,
};
use serde::Serialize;

/// Payment event kinds, in the order they are shown.
pub const PAYMENT_KINDS: [(&str, &str); 7] = [
    ("purchase", "purchases"),
    ("recurring_payment", "renewals"),
    ("refund", "refunds"),
    ("chargeback", "chargebacks"),
    ("cancellation", "cancellations"),
    ("payment_missed", "missed payments"),
    ("end_of_term", "ended terms"),
];

/// The headline numbers of one day (also computed for the day before, for comparison).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Numbers {
    pub purchases: i64,
    pub renewals: i64,
    pub refunds: i64,
    pub chargebacks: i64,
    pub cancellations: i64,
    pub missed_payments: i64,
    pub new_members: i64,
    pub deleted_members: i64,
    pub grants: i64,
    pub revocations: i64,
    pub expirations: i64,
    pub completions: i64,
    pub tool_calls: i64,
    /// Failed deliveries and tool calls, dead and retrying events, rejected signatures.
    pub problems: i64,
    /// Whether the poller observed the day: without it, grants and revocations are those
    /// the hub made for verified payments, and members, expirations and completions are
    /// not known (shown as not observed, never as 0).
    pub observed: bool,
}

/// Payments of one provider and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentLine {
    pub provider: String,
    pub kind: String,
    pub count: i64,
    /// Of which provider test traffic.
    pub test: i64,
    /// Sum per currency in minor units (live traffic only).
    pub amounts: BTreeMap<String, i64>,
}

/// Access changes of one offer, as the poller observed them in the school.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OfferLine {
    pub offer_id: String,
    pub name: String,
    pub granted: i64,
    pub revoked: i64,
    pub expired: i64,
}

/// One persona's tool calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PersonaLine {
    pub persona: String,
    pub calls: i64,
    pub errors: i64,
    pub denied: i64,
}

/// Things someone should look at, first in every rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Problems {
    /// Events that gave up (dead letters) among the day's events.
    pub dead: i64,
    /// Still retrying.
    pub retrying: i64,
    /// Stored but matched by no rule (unknown product or event).
    pub unmatched: i64,
    /// Deliveries refused for a bad signature or missing secret, per source.
    pub rejected: BTreeMap<String, i64>,
    /// Genuine payments their rule refused (another currency, below the minimum), per
    /// source: nothing was granted for them.
    pub refused_payments: BTreeMap<String, i64>,
    /// Tool calls that failed (not denied), per tool.
    pub failed_calls: BTreeMap<String, i64>,
}

/// Everything the summary says about one day.
#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    pub date: NaiveDate,
    pub timezone: String,
    /// `[start, end)` of the local day in UTC (23 or 25 hours on a daylight-saving change).
    /// Epoch milliseconds in JSON, like every time the hub records.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub start: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub end: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub generated_at: DateTime<Utc>,
    pub numbers: Numbers,
    pub previous: Numbers,
    pub payments: Vec<PaymentLine>,
    pub offers: Vec<OfferLine>,
    /// Course id → (name, completions).
    pub completions: BTreeMap<String, (String, i64)>,
    pub progress_changes: i64,
    pub personas: Vec<PersonaLine>,
    pub problems: Problems,
    /// Whether the poller observed this day (else access changes are unknown).
    pub poller_active: bool,
    /// Any provider test traffic in the day.
    pub has_test_traffic: bool,
    /// A model's written summary, when one was asked for and answered.
    pub summary: Option<String>,
    /// Why there is no model summary, when one was configured.
    pub summary_note: Option<String>,
    /// The audit chain head when the summary was made: kept in the message, an anchor for
    /// `memberspot audit verify --anchor SEQ:HASH`.
    pub audit_head: ChainHead,
}

/// `[start, end)` in UTC of `date` in `tz`. A day that starts in a gap (no local midnight)
/// starts at the first valid local time.
pub fn day_window(date: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let start_of = |d: NaiveDate| -> DateTime<Utc> {
        let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        let mut t = midnight;
        // Some zones skip midnight itself on a change: walk forward to the first valid time.
        for _ in 0..180 {
            if let Some(local) = tz.from_local_datetime(&t).earliest() {
                return local.with_timezone(&Utc);
            }
            t += Duration::minutes(1);
        }
        Utc.from_utc_datetime(&midnight)
    };
    let next = date.succ_opt().unwrap_or(date);
    (start_of(date), start_of(next))
}

/// Offer and course names, for display; ids are shown when a name is unknown.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub offers: BTreeMap<String, String>,
    pub courses: BTreeMap<String, String>,
}

/// Builds the digest of `date` in `tz` for the school of `connection` from the store. Only
/// events the hub trusts count as facts ([`Trusted`]: verified, not refused, of this
/// school; test traffic is reported apart); refused ones are problems.
pub async fn build(
    store: FlowStore<'_>,
    connection: &str,
    date: NaiveDate,
    tz: Tz,
    names: &Names,
    now: DateTime<Utc>,
) -> Result<Digest, memberspot_hub::store::StoreError> {
    let (start, end) = day_window(date, tz);
    let (ps, pe) = day_window(date.pred_opt().unwrap_or(date), tz);
    let (s, e) = (start.timestamp_millis(), end.timestamp_millis());
    let (p_s, p_e) = (ps.timestamp_millis(), pe.timestamp_millis());
    let trusted = Trusted::live(connection).with_test();
    let (events, prev_events, calls, prev_calls, rejected, refused, audit_head) = tokio::try_join!(
        store.event_counts(s, e, &trusted),
        store.event_counts(p_s, p_e, &trusted),
        store.audit_counts(s, e),
        store.audit_counts(p_s, p_e),
        store.rejected_deliveries(s, e),
        store.refused_event_counts(s, e, connection),
        store.audit_head(),
    )?;
    let (prev_rejected, prev_refused) = tokio::try_join!(
        store.rejected_deliveries(p_s, p_e),
        store.refused_event_counts(p_s, p_e, connection),
    )?;
    let rejected = with_refused(rejected, &refused);
    let prev_rejected = with_refused(prev_rejected, &prev_refused);
    let mut d = Digest {
        date,
        timezone: tz.name().to_owned(),
        start,
        end,
        generated_at: now,
        numbers: numbers(&events, &calls, &rejected),
        previous: numbers(&prev_events, &prev_calls, &prev_rejected),
        payments: payments(&events),
        offers: offers(&events, names),
        completions: BTreeMap::new(),
        progress_changes: 0,
        personas: personas(&calls),
        problems: problems(&events, &calls, &rejected, &refused),
        poller_active: events.iter().any(|c| c.provider == "poller"),
        has_test_traffic: events.iter().any(|c| c.test),
        summary: None,
        summary_note: None,
        audit_head,
    };
    for c in events.iter().filter(|c| c.provider == "poller") {
        match c.kind.as_str() {
            "course_completed" => {
                let id = c.product_id.clone().unwrap_or_default();
                let name = names
                    .courses
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| id.clone());
                d.completions.entry(id).or_insert((name, 0)).1 += c.count;
            }
            "progress_changed" => d.progress_changes += c.count,
            _ => {}
        }
    }
    Ok(d)
}

/// Refused deliveries plus the events refused after they were stored (PayPal post-backs
/// that said INVALID, payments refused by their rule), per source: every refusal counts as
/// one problem.
fn with_refused(mut rejected: Vec<(String, i64)>, refused: &[EventCount]) -> Vec<(String, i64)> {
    for c in refused {
        match rejected.iter_mut().find(|(s, _)| *s == c.source) {
            Some((_, n)) => *n += c.count,
            None => rejected.push((c.source.clone(), c.count)),
        }
    }
    rejected
}

fn is_payment(c: &EventCount) -> bool {
    c.provider != "poller" && PAYMENT_KINDS.iter().any(|(k, _)| *k == c.kind)
}

fn numbers(events: &[EventCount], calls: &[AuditCount], rejected: &[(String, i64)]) -> Numbers {
    let mut n = Numbers {
        observed: events.iter().any(|c| c.provider == "poller"),
        ..Numbers::default()
    };
    for c in events {
        // No poller: what the event store knows, the access the hub itself granted and
        // ended for verified payments.
        if !n.observed && is_payment(c) && !c.test && c.status == EventStatus::Done {
            match c.kind.as_str() {
                "purchase" => n.grants += c.count,
                "refund" | "chargeback" | "end_of_term" => n.revocations += c.count,
                _ => {}
            }
        }
        // Provider test traffic is reported on its own, not in the headline numbers.
        if is_payment(c) && !c.test {
            match c.kind.as_str() {
                "purchase" => n.purchases += c.count,
                "recurring_payment" => n.renewals += c.count,
                "refund" => n.refunds += c.count,
                "chargeback" => n.chargebacks += c.count,
                "cancellation" => n.cancellations += c.count,
                "payment_missed" => n.missed_payments += c.count,
                _ => {}
            }
        }
        if c.provider == "poller" {
            match c.kind.as_str() {
                "member_created" => n.new_members += c.count,
                "member_deleted" => n.deleted_members += c.count,
                "offer_granted" => n.grants += c.count,
                "offer_revoked" => n.revocations += c.count,
                "offer_expired" => n.expirations += c.count,
                "course_completed" => n.completions += c.count,
                _ => {}
            }
        }
        if matches!(c.status, EventStatus::Dead | EventStatus::Retry) {
            n.problems += c.count;
        }
    }
    for c in calls {
        n.tool_calls += c.count;
        if c.outcome == AuditOutcome::ToolError {
            n.problems += c.count;
        }
    }
    n.problems += rejected.iter().map(|(_, k)| k).sum::<i64>();
    n
}

fn payments(events: &[EventCount]) -> Vec<PaymentLine> {
    let mut lines: BTreeMap<(usize, String), PaymentLine> = BTreeMap::new();
    for c in events.iter().filter(|c| is_payment(c)) {
        let order = PAYMENT_KINDS
            .iter()
            .position(|(k, _)| *k == c.kind)
            .unwrap_or(usize::MAX);
        let line = lines
            .entry((order, c.provider.clone()))
            .or_insert_with(|| PaymentLine {
                provider: c.provider.clone(),
                kind: c.kind.clone(),
                count: 0,
                test: 0,
                amounts: BTreeMap::new(),
            });
        line.count += c.count;
        if c.test {
            line.test += c.count;
        } else if let Some(cur) = &c.currency {
            *line.amounts.entry(cur.clone()).or_insert(0) += c.amount_minor;
        }
    }
    lines.into_values().collect()
}

fn offers(events: &[EventCount], names: &Names) -> Vec<OfferLine> {
    let mut by: BTreeMap<String, OfferLine> = BTreeMap::new();
    for c in events.iter().filter(|c| c.provider == "poller") {
        let field = match c.kind.as_str() {
            "offer_granted" => 0,
            "offer_revoked" => 1,
            "offer_expired" => 2,
            _ => continue,
        };
        let id = c.product_id.clone().unwrap_or_default();
        let line = by.entry(id.clone()).or_insert_with(|| OfferLine {
            name: names.offers.get(&id).cloned().unwrap_or_else(|| id.clone()),
            offer_id: id,
            ..Default::default()
        });
        match field {
            0 => line.granted += c.count,
            1 => line.revoked += c.count,
            _ => line.expired += c.count,
        }
    }
    by.into_values().collect()
}

fn personas(calls: &[AuditCount]) -> Vec<PersonaLine> {
    let mut by: BTreeMap<String, PersonaLine> = BTreeMap::new();
    for c in calls {
        let name = c.persona.clone().unwrap_or_else(|| "(operator)".into());
        let line = by.entry(name.clone()).or_insert_with(|| PersonaLine {
            persona: name,
            ..Default::default()
        });
        line.calls += c.count;
        match c.outcome {
            AuditOutcome::ToolError | AuditOutcome::Invalid | AuditOutcome::Cancelled => {
                line.errors += c.count
            }
            AuditOutcome::Denied => line.denied += c.count,
            AuditOutcome::Ok => {}
        }
    }
    let mut v: Vec<PersonaLine> = by.into_values().collect();
    v.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.persona.cmp(&b.persona)));
    v
}

fn problems(
    events: &[EventCount],
    calls: &[AuditCount],
    rejected: &[(String, i64)],
    refused: &[EventCount],
) -> Problems {
    let mut p = Problems::default();
    for c in refused
        .iter()
        .filter(|c| c.status == EventStatus::RefusedAmount)
    {
        *p.refused_payments.entry(c.source.clone()).or_insert(0) += c.count;
    }
    for c in events {
        match c.status {
            EventStatus::Dead => p.dead += c.count,
            EventStatus::Retry => p.retrying += c.count,
            EventStatus::Unmatched => p.unmatched += c.count,
            _ => {}
        }
    }
    for c in calls
        .iter()
        .filter(|c| c.outcome == AuditOutcome::ToolError)
    {
        *p.failed_calls.entry(c.tool.clone()).or_insert(0) += c.count;
    }
    for (source, n) in rejected {
        let payments = p.refused_payments.get(source).copied().unwrap_or(0);
        if n - payments > 0 {
            *p.rejected.entry(source.clone()).or_insert(0) += n - payments;
        }
    }
    p
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.dead == 0
            && self.retrying == 0
            && self.unmatched == 0
            && self.rejected.is_empty()
            && self.refused_payments.is_empty()
            && self.failed_calls.is_empty()
    }

    /// One line per problem, most urgent first.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.dead > 0 {
            out.push(format!(
                "{} event(s) gave up after retrying (memberspot events dead)",
                self.dead
            ));
        }
        for (tool, n) in &self.failed_calls {
            out.push(format!("{n} failed {tool} call(s)"));
        }
        for (source, n) in &self.rejected {
            out.push(format!(
                "{n} delivery(ies) to /hooks/{source} refused (not genuine, not for this shop, or no secret)"
            ));
        }
        for (source, n) in &self.refused_payments {
            out.push(format!(
                "{n} payment(s) to /hooks/{source} refused by their rule (currency or minimum amount): nothing granted (memberspot events list --status refused_amount)"
            ));
        }
        if self.retrying > 0 {
            out.push(format!("{} event(s) still retrying", self.retrying));
        }
        if self.unmatched > 0 {
            out.push(format!(
                "{} event(s) matched no rule (memberspot events list --unmatched)",
                self.unmatched
            ));
        }
        out
    }
}

/// `4700` → `47.00 EUR`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.abs();
    format!("{sign}{}.{:02} {currency}", m / 100, m % 100)
}

/// Said under the headline when the poller did not observe the day.
const NOT_OBSERVED: &str =
    "— not observed: enable the poller to see new and deleted members, expirations and completions";

/// A headline number, or `—` where nothing observed it.
fn cell(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// The change against the day before, when both days were observed.
fn change(now: Option<i64>, before: Option<i64>) -> String {
    match (now, before) {
        (Some(a), Some(b)) => delta(a, b),
        _ => String::new(),
    }
}

/// `+3`, `-1`, `±0` against the day before.
pub fn delta(now: i64, before: i64) -> String {
    match now - before {
        0 => "±0".into(),
        d if d > 0 => format!("+{d}"),
        d => d.to_string(),
    }
}

impl Digest {
    /// E-mail subject / Slack header: period and headline numbers.
    pub fn subject(&self) -> String {
        let n = &self.numbers;
        let mut parts = vec![plural(n.purchases, "purchase", "purchases")];
        for (v, one, many) in [
            (n.renewals, "renewal", "renewals"),
            (n.refunds, "refund", "refunds"),
            (n.chargebacks, "chargeback", "chargebacks"),
            (n.new_members, "new member", "new members"),
            (n.completions, "completion", "completions"),
            (n.problems, "problem", "problems"),
        ] {
            if v > 0 {
                parts.push(plural(v, one, many));
            }
        }
        format!(
            "Memberspot – {}: {}",
            self.date.format("%-d %b %Y"),
            parts.join(", ")
        )
    }

    /// The rows of the headline table: label, today, day before; `None` where nothing
    /// observed the number (members, expirations and completions need the poller).
    pub fn headline(&self) -> Vec<(&'static str, Option<i64>, Option<i64>)> {
        let (n, p) = (&self.numbers, &self.previous);
        let both = |a: i64, b: i64| (Some(a), Some(b));
        let polled = |a: i64, b: i64| (n.observed.then_some(a), p.observed.then_some(b));
        let access = if n.observed {
            ("Offers granted", "Offers revoked")
        } else {
            ("Offers granted (webhooks)", "Offers revoked (webhooks)")
        };
        [
            ("Purchases", both(n.purchases, p.purchases)),
            ("Renewals", both(n.renewals, p.renewals)),
            ("Refunds", both(n.refunds, p.refunds)),
            ("Chargebacks", both(n.chargebacks, p.chargebacks)),
            ("Cancellations", both(n.cancellations, p.cancellations)),
            (
                "Missed payments",
                both(n.missed_payments, p.missed_payments),
            ),
            ("New members", polled(n.new_members, p.new_members)),
            (
                "Deleted members",
                polled(n.deleted_members, p.deleted_members),
            ),
            (access.0, both(n.grants, p.grants)),
            (access.1, both(n.revocations, p.revocations)),
            ("Offers expired", polled(n.expirations, p.expirations)),
            ("Course completions", polled(n.completions, p.completions)),
            ("Tool calls", both(n.tool_calls, p.tool_calls)),
            ("Problems", both(n.problems, p.problems)),
        ]
        .into_iter()
        .map(|(label, (now, before))| (label, now, before))
        .collect()
    }

    /// The template summary used without a model (and as the model's fallback).
    pub fn plain_summary(&self) -> String {
        let n = &self.numbers;
        let mut s = format!(
            "{} purchase(s), {} renewal(s), {} refund(s) and {} chargeback(s); ",
            n.purchases, n.renewals, n.refunds, n.chargebacks
        );
        if n.observed {
            s.push_str(&format!(
                "{} new member(s), {} course completion(s).",
                n.new_members, n.completions
            ));
        } else {
            s.push_str(&format!(
                "{} offer(s) granted for payments (members and completions not observed).",
                n.grants
            ));
        }
        if n.problems > 0 {
            s.push_str(&format!(" {} problem(s) need attention.", n.problems));
        } else {
            s.push_str(" Nothing needs attention.");
        }
        s
    }

    /// `Audit chain head: #SEQ HASH`, the line every rendering ends with.
    pub fn audit_head_line(&self) -> String {
        format!(
            "Audit chain head: #{} {}",
            self.audit_head.seq, self.audit_head.hash
        )
    }

    fn period(&self) -> String {
        format!(
            "{} ({}, {} to {} UTC)",
            self.date.format("%A, %-d %B %Y"),
            self.timezone,
            self.start.format("%Y-%m-%d %H:%M"),
            self.end.format("%Y-%m-%d %H:%M")
        )
    }

    /// Plain text, lines of at most 78 characters where tabular.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!("{}\n\n", self.subject()));
        t.push_str(&format!(
            "{}\n",
            self.summary.clone().unwrap_or_else(|| self.plain_summary())
        ));
        if let Some(note) = &self.summary_note {
            t.push_str(&format!("({note})\n"));
        }
        t.push('\n');
        let problems = self.problems.lines();
        t.push_str("NEEDS ATTENTION\n");
        if problems.is_empty() {
            t.push_str("  nothing\n");
        }
        for p in problems {
            t.push_str(&wrap(&p, "  - ", "    ", 78));
        }
        t.push_str(&format!(
            "\n{:<28}{:>10}{:>12}{:>10}\n",
            "",
            self.date.format("%-d %b").to_string(),
            self.date
                .pred_opt()
                .unwrap_or(self.date)
                .format("%-d %b")
                .to_string(),
            "change"
        ));
        for (label, now, before) in self.headline() {
            t.push_str(&format!(
                "{label:<28}{:>10}{:>12}{:>10}\n",
                cell(now),
                cell(before),
                change(now, before)
            ));
        }
        if !self.numbers.observed {
            t.push_str(&format!("{NOT_OBSERVED}\n"));
        }
        t.push_str("\nPAYMENTS\n");
        if self.payments.is_empty() {
            t.push_str("  no payment events\n");
        }
        for p in &self.payments {
            let amounts: Vec<String> = p.amounts.iter().map(|(c, m)| money(*m, c)).collect();
            let test = if p.test > 0 {
                format!(" ({} test)", p.test)
            } else {
                String::new()
            };
            t.push_str(&format!(
                "  {:<14}{:<20}{:>5}{test}  {}\n",
                p.provider,
                kind_label(&p.kind),
                p.count,
                amounts.join(", ")
            ));
        }
        t.push_str("\nACCESS BY OFFER (observed in the school)\n");
        if !self.poller_active {
            t.push_str("  not observed: enable the poller to see access changes\n");
        } else if self.offers.is_empty() {
            t.push_str("  no changes\n");
        }
        for o in &self.offers {
            t.push_str(&format!(
                "  {:<40} +{} granted  -{} revoked  {} expired\n",
                truncate(&o.name, 40),
                o.granted,
                o.revoked,
                o.expired
            ));
        }
        if !self.completions.is_empty() || self.progress_changes > 0 {
            t.push_str(&format!(
                "\nLEARNING\n  {} progress update(s)\n",
                self.progress_changes
            ));
            for (name, n) in self.completions.values() {
                t.push_str(&format!("  {:<50}{n:>5} completed\n", truncate(name, 50)));
            }
        }
        t.push_str("\nTOOL CALLS BY PERSONA\n");
        if self.personas.is_empty() {
            t.push_str("  none\n");
        }
        for p in &self.personas {
            t.push_str(&format!(
                "  {:<30}{:>6} calls{:>6} errors{:>6} denied\n",
                truncate(&p.persona, 30),
                p.calls,
                p.errors,
                p.denied
            ));
        }
        t.push_str(&format!("\nPeriod: {}\n", self.period()));
        t.push_str(&format!(
            "Generated {} UTC by Memberspot Hub.{}\n",
            self.generated_at.format("%Y-%m-%d %H:%M"),
            if self.has_test_traffic {
                " Test purchases are counted separately, not in the totals."
            } else {
                ""
            }
        ));
        t.push_str("Change recipients and time in flows.toml ([digest], [delivery]).\n");
        t.push_str(&format!(
            "\n{}\n(keep it: `memberspot audit verify --anchor {}` shows whether any record up to it\nwas changed since)\n",
            self.audit_head_line(),
            self.audit_head
        ));
        t
    }

    /// HTML e-mail body: table layout, inline CSS, ~600 px, every value escaped.
    pub fn to_html(&self) -> String {
        let e = html_escape;
        let mut h = String::from(
            "<!doctype html><html><body style=\"margin:0;padding:16px;background:#f6f6f6;font-family:Arial,Helvetica,sans-serif;color:#222\">\
             <table role=\"presentation\" width=\"600\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:600px;background:#fff;border:1px solid #ddd\">",
        );
        h.push_str(&format!(
            "<tr><td style=\"padding:16px 20px;font-size:18px;font-weight:bold\">{}</td></tr>",
            e(&self.subject())
        ));
        h.push_str(&format!(
            "<tr><td style=\"padding:0 20px 12px\">{}{}</td></tr>",
            e(&self.summary.clone().unwrap_or_else(|| self.plain_summary())),
            self.summary_note
                .as_ref()
                .map(|n| format!("<br><small style=\"color:#777\">({})</small>", e(n)))
                .unwrap_or_default()
        ));
        let problems = self.problems.lines();
        h.push_str(
            "<tr><td style=\"padding:8px 20px\"><b>Needs attention</b><ul style=\"margin:4px 0\">",
        );
        if problems.is_empty() {
            h.push_str("<li>nothing</li>");
        }
        for p in problems {
            h.push_str(&format!("<li style=\"color:#b00\">{}</li>", e(&p)));
        }
        h.push_str("</ul></td></tr>");
        h.push_str("<tr><td style=\"padding:8px 20px\"><table width=\"100%\" cellpadding=\"4\" cellspacing=\"0\" style=\"border-collapse:collapse;font-size:14px\">\
            <tr style=\"background:#eee\"><th align=\"left\"></th><th align=\"right\">this day</th><th align=\"right\">day before</th><th align=\"right\">change</th></tr>");
        for (label, now, before) in self.headline() {
            h.push_str(&format!(
                "<tr><td>{label}</td><td align=\"right\">{}</td><td align=\"right\">{}</td><td align=\"right\">{}</td></tr>",
                e(&cell(now)),
                e(&cell(before)),
                e(&change(now, before))
            ));
        }
        if !self.numbers.observed {
            h.push_str(&format!(
                "<tr><td colspan=\"4\" style=\"color:#666\">{}</td></tr>",
                e(NOT_OBSERVED)
            ));
        }
        h.push_str("</table></td></tr>");
        h.push_str("<tr><td style=\"padding:8px 20px\"><b>Payments</b><table width=\"100%\" cellpadding=\"4\" cellspacing=\"0\" style=\"font-size:14px\">");
        if self.payments.is_empty() {
            h.push_str("<tr><td>no payment events</td></tr>");
        }
        for p in &self.payments {
            let amounts: Vec<String> = p.amounts.iter().map(|(c, m)| money(*m, c)).collect();
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td align=\"right\">{}{}</td><td align=\"right\">{}</td></tr>",
                e(&p.provider),
                e(kind_label(&p.kind)),
                p.count,
                if p.test > 0 {
                    format!(" ({} test)", p.test)
                } else {
                    String::new()
                },
                e(&amounts.join(", "))
            ));
        }
        h.push_str("</table></td></tr>");
        h.push_str("<tr><td style=\"padding:8px 20px\"><b>Access by offer</b><table width=\"100%\" cellpadding=\"4\" cellspacing=\"0\" style=\"font-size:14px\">");
        if !self.poller_active {
            h.push_str("<tr><td>not observed: enable the poller to see access changes</td></tr>");
        } else if self.offers.is_empty() {
            h.push_str("<tr><td>no changes</td></tr>");
        }
        for o in &self.offers {
            h.push_str(&format!(
                "<tr><td>{}</td><td align=\"right\">+{} granted</td><td align=\"right\">-{} revoked</td><td align=\"right\">{} expired</td></tr>",
                e(&o.name), o.granted, o.revoked, o.expired
            ));
        }
        h.push_str("</table></td></tr>");
        if !self.completions.is_empty() {
            h.push_str("<tr><td style=\"padding:8px 20px\"><b>Course completions</b><ul style=\"margin:4px 0\">");
            for (name, n) in self.completions.values() {
                h.push_str(&format!("<li>{}: {n}</li>", e(name)));
            }
            h.push_str("</ul></td></tr>");
        }
        h.push_str("<tr><td style=\"padding:8px 20px\"><b>Tool calls by persona</b><table width=\"100%\" cellpadding=\"4\" cellspacing=\"0\" style=\"font-size:14px\">");
        if self.personas.is_empty() {
            h.push_str("<tr><td>none</td></tr>");
        }
        for p in &self.personas {
            h.push_str(&format!(
                "<tr><td>{}</td><td align=\"right\">{} calls</td><td align=\"right\">{} errors</td><td align=\"right\">{} denied</td></tr>",
                e(&p.persona), p.calls, p.errors, p.denied
            ));
        }
        h.push_str("</table></td></tr>");
        h.push_str(&format!(
            "<tr><td style=\"padding:12px 20px;color:#777;font-size:12px\">Period: {}<br>Generated {} UTC by Memberspot Hub.{}<br>Change recipients and time in flows.toml ([digest], [delivery]).<br>{}</td></tr>",
            e(&self.period()),
            self.generated_at.format("%Y-%m-%d %H:%M"),
            if self.has_test_traffic { " Test purchases are counted separately." } else { "" },
            e(&self.audit_head_line())
        ));
        h.push_str("</table></body></html>");
        h
    }

    /// Slack Block Kit blocks (the caller fits them to Slack's limits).
    pub fn to_slack_blocks(&self) -> serde_json::Value {
        let esc = slack_escape;
        let mut blocks = vec![
            serde_json::json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&self.subject(), 150)}}),
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": esc(&self.summary.clone().unwrap_or_else(|| self.plain_summary()))}}),
        ];
        let problems = self.problems.lines();
        if !problems.is_empty() {
            let text = problems
                .iter()
                .map(|p| format!("• {}", esc(p)))
                .collect::<Vec<_>>()
                .join("\n");
            blocks.push(serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Needs attention*\n{text}")}}));
        }
        let fields: Vec<serde_json::Value> = self
            .headline()
            .into_iter()
            .filter(|(_, now, before)| now.unwrap_or(0) != 0 || before.unwrap_or(0) != 0)
            .take(10)
            .map(|(label, now, before)| {
                serde_json::json!({"type": "mrkdwn", "text": format!("*{label}*\n{} ({})", cell(now), change(now, before))})
            })
            .collect();
        if !fields.is_empty() {
            blocks.push(serde_json::json!({"type": "section", "fields": fields}));
        }
        if !self.payments.is_empty() {
            let text = self
                .payments
                .iter()
                .map(|p| {
                    let amounts: Vec<String> =
                        p.amounts.iter().map(|(c, m)| money(*m, c)).collect();
                    format!(
                        "• {} {}: {}{} {}",
                        esc(&p.provider),
                        kind_label(&p.kind),
                        p.count,
                        if p.test > 0 {
                            format!(" ({} test)", p.test)
                        } else {
                            String::new()
                        },
                        amounts.join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            blocks.push(serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Payments*\n{text}")}}));
        }
        blocks.push(serde_json::json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": esc(&format!("Period: {}", self.period()))},
            {"type": "mrkdwn", "text": esc(&self.audit_head_line())},
        ]}));
        serde_json::Value::Array(blocks)
    }
}

/// Word-wraps `text` to `width` columns, the first line after `first`, the rest after `rest`.
fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn kind_label(kind: &str) -> &str {
    PAYMENT_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind, |(_, l)| l)
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Escapes for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Escapes user text for Slack mrkdwn (`<…>` would become links or mentions).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn day_windows_follow_daylight_saving() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let (s, e) = day_window(NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), tz);
        assert_eq!((e - s).num_hours(), 23, "spring forward");
        assert_eq!(s.to_rfc3339(), "2026-03-28T23:00:00+00:00");
        let (s, e) = day_window(NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(), tz);
        assert_eq!((e - s).num_hours(), 25, "fall back");
        assert_eq!(s.to_rfc3339(), "2026-10-24T22:00:00+00:00");
        let (s, e) = day_window(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(), tz);
        assert_eq!((e - s).num_hours(), 24);
        assert_eq!(s.to_rfc3339(), "2026-06-30T22:00:00+00:00");
    }

    #[test]
    fn money_and_deltas() {
        assert_eq!(money(4700, "EUR"), "47.00 EUR");
        assert_eq!(money(-5, "USD"), "-0.05 USD");
        assert_eq!(delta(3, 1), "+2");
        assert_eq!(delta(1, 3), "-2");
        assert_eq!(delta(2, 2), "±0");
    }

    #[test]
    fn wrapping() {
        let w = wrap("one two three four", "  - ", "    ", 12);
        assert_eq!(w, "  - one two\n    three\n    four\n");
    }

    #[test]
    fn escaping() {
        assert_eq!(html_escape("<b>A&B</b>"), "&lt;b&gt;A&amp;B&lt;/b&gt;");
        assert_eq!(slack_escape("<@U123> & co"), "&lt;@U123&gt; &amp; co");
    }
}
