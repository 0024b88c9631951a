//! The overview: the daily summary's numbers for today and yesterday (built by
//! `memberspot_flows::digest`, as the digest is), the tool calls of both days, and
//! what needs attention (dead and unmatched events, refused deliveries, failed flow runs).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Days, TimeZone, Utc};
use maud::{Markup, html};
use memberspot_flows::digest::{Digest, Names};
use memberspot_hub::store::{AuditOutcome, EventFilter, EventStatus};

use crate::Console;
use crate::auth::failure;
use crate::format::{money, number};
use crate::layout::{View, badge, empty};
use crate::session::Signed;

/// Calls of one day.
#[derive(Default)]
struct Day {
    total: i64,
    ok: i64,
    denied: i64,
    failed: i64,
}

/// One line of *needs attention*: what, when, where it leads.
struct Attention {
    text: String,
    at: i64,
    href: String,
    kind: &'static str,
}

/// Midnight of today in the console's time zone, as epoch milliseconds, and the day
/// before.
fn day_starts(console: &Console) -> (i64, i64, i64) {
    let tz = console.settings.time_zone;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let start = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| tz.from_local_datetime(&t).earliest())
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
    };
    let yesterday = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let tomorrow = today.checked_add_days(Days::new(1)).unwrap_or(today);
    (start(yesterday), start(today), start(tomorrow))
}

async fn day(console: &Console, since: i64, until: i64) -> Result<Day, memberspot_hub::HubError> {
    let counts = console.hub.flows_store().audit_counts(since, until).await?;
    let mut d = Day::default();
    for c in counts {
        d.total += c.count;
        match c.outcome {
            AuditOutcome::Ok => d.ok += c.count,
            AuditOutcome::Denied | AuditOutcome::Invalid => d.denied += c.count,
            AuditOutcome::ToolError | AuditOutcome::Cancelled => d.failed += c.count,
        }
    }
    Ok(d)
}

/// Items of each kind shown; when there are more, a link leads to the full list.
const ATTENTION_PER_KIND: usize = 10;

/// What needs attention, newest first: dead and unmatched events and failed flow runs of
/// the last week, and refused deliveries of the last day. Each kind is read on its own
/// (at most [`ATTENTION_PER_KIND`]), so that many of one kind cannot hide another; a kind
/// with more ends in a link to all of them.
async fn attention(
    console: &Console,
    v: &View<'_>,
) -> Result<(Vec<Attention>, Vec<Attention>), memberspot_hub::HubError> {
    let now = Utc::now().timestamp_millis();
    let week = now - 7 * 24 * 3600 * 1000;
    let store = console.hub.flows_store();
    let fetch = u32::try_from(ATTENTION_PER_KIND + 1).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    let mut more = Vec::new();
    for (status, id, kind) in [
        (EventStatus::Dead, "overview-dead-event", "failed"),
        (
            EventStatus::Unmatched,
            "overview-unmatched-event",
            "warning",
        ),
    ] {
        let events = store
            .list_events(&EventFilter {
                statuses: vec![status],
                since: Some(week),
                limit: Some(fetch),
                ..EventFilter::default()
            })
            .await?;
        if events.len() > ATTENTION_PER_KIND {
            more.push(Attention {
                text: v.t(&format!("{id}-more")),
                at: now,
                href: format!("/events?status={}", status.as_str()),
                kind,
            });
        }
        out.extend(
            events
                .into_iter()
                .take(ATTENTION_PER_KIND)
                .map(|e| Attention {
                    text: v.ta(
                        id,
                        &[
                            ("name", e.name.clone().into()),
                            ("source", e.source.clone().into()),
                        ],
                    ),
                    at: e.received_at,
                    href: format!("/events/{}", e.id),
                    kind,
                }),
        );
    }
    let refused = store
        .rejected_deliveries(now - 24 * 3600 * 1000, now)
        .await?;
    out.extend(refused.into_iter().map(|(source, count)| Attention {
        text: v.ta(
            "overview-refused-deliveries",
            &[("count", count.into()), ("source", source.into())],
        ),
        at: now,
        href: "/events#refused".into(),
        kind: "warning",
    }));
    let runs = store.failed_runs_since(week, fetch).await?;
    if runs.len() > ATTENTION_PER_KIND {
        more.push(Attention {
            text: v.t("overview-failed-run-more"),
            at: now,
            href: "/flows#runs".into(),
            kind: "failed",
        });
    }
    out.extend(
        runs.into_iter()
            .take(ATTENTION_PER_KIND)
            .map(|r| Attention {
                text: v.ta("overview-failed-run", &[("flow", r.flow.clone().into())]),
                at: r.started_at,
                href: format!("/flows/runs/{}", r.id),
                kind: "failed",
            }),
    );
    out.sort_by_key(|a| std::cmp::Reverse(a.at));
    Ok((out, more))
}

fn numbers(v: &View<'_>, title: &str, d: &Day) -> Markup {
    html! {
        section.stat {
            h2 { (title) }
            dl {
                div { dt { (v.t("overview-calls")) } dd { (number(v.lang, d.total)) } }
                div.ok { dt { (v.t("overview-calls-ok")) } dd { (number(v.lang, d.ok)) } }
                div.warning { dt { (v.t("overview-calls-denied")) } dd { (number(v.lang, d.denied)) } }
                div.failed { dt { (v.t("overview-calls-failed")) } dd { (number(v.lang, d.failed)) } }
            }
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct OverviewQuery {
    #[serde(default)]
    connection: String,
}

/// The digest's headline rows with their message ids.
fn headline(d: &Digest) -> Vec<(&'static str, i64, i64)> {
    let (n, p) = (&d.numbers, &d.previous);
    vec![
        ("digest-purchases", n.purchases, p.purchases),
        ("digest-renewals", n.renewals, p.renewals),
        ("digest-refunds", n.refunds, p.refunds),
        ("digest-chargebacks", n.chargebacks, p.chargebacks),
        ("digest-cancellations", n.cancellations, p.cancellations),
        (
            "digest-missed-payments",
            n.missed_payments,
            p.missed_payments,
        ),
        ("digest-new-members", n.new_members, p.new_members),
        (
            "digest-deleted-members",
            n.deleted_members,
            p.deleted_members,
        ),
        ("digest-grants", n.grants, p.grants),
        ("digest-revocations", n.revocations, p.revocations),
        ("digest-expirations", n.expirations, p.expirations),
        ("digest-completions", n.completions, p.completions),
        ("digest-tool-calls", n.tool_calls, p.tool_calls),
        ("digest-problems", n.problems, p.problems),
    ]
}

/// A payment kind in words; a kind the catalogue does not know stays as the provider
/// named it.
fn payment_kind(v: &View<'_>, kind: &str) -> String {
    let id = match kind {
        "purchase" => "digest-purchases",
        "recurring_payment" => "digest-renewals",
        "refund" => "digest-refunds",
        "chargeback" => "digest-chargebacks",
        "cancellation" => "digest-cancellations",
        "payment_missed" => "digest-missed-payments",
        "end_of_term" => "digest-ended-terms",
        other => return other.to_owned(),
    };
    v.t(id)
}

/// The school the overview is about: the one asked for, else the first that is not the
/// built-in sandbox, else the sandbox.
fn school(asked: &str, connections: &[memberspot_hub::store::Connection]) -> String {
    if !asked.trim().is_empty() {
        return asked.trim().to_owned();
    }
    connections
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| *n != memberspot_hub::SANDBOX_CONNECTION)
        .unwrap_or(memberspot_hub::SANDBOX_CONNECTION)
        .to_owned()
}

pub async fn page(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/");
    let connections = match c.hub.list_connections().await {
        Ok(cs) => cs,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let connection = school(&q.connection, &connections);
    let tz = c.settings.time_zone;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let digest = memberspot_flows::digest::build(
        c.hub.flows_store(),
        &connection,
        today,
        tz,
        &Names::default(),
        Utc::now(),
    )
    .await
    .map_err(memberspot_hub::HubError::from);
    let (yesterday, today_ms, tomorrow) = day_starts(&c);
    let (t, y, (a, more)) = match (
        day(&c, today_ms, tomorrow).await,
        day(&c, yesterday, today_ms).await,
        attention(&c, &v).await,
    ) {
        (Ok(t), Ok(y), Ok((a, more))) => (t, y, (a, more)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return failure(&c, s.lang, &e),
    };
    let digest = match digest {
        Ok(d) => d,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let rows = headline(&digest);
    let quiet = rows.iter().all(|(_, a, b)| *a == 0 && *b == 0);
    v.page(
        StatusCode::OK,
        &v.t("overview-title"),
        html! {
            @if connections.len() > 1 {
                form.filters method="get" action="/" {
                    div {
                        label for="o-connection" { (v.t("personas-connection")) }
                        select #o-connection name="connection" {
                            @for conn in &connections {
                                option value=(conn.name) selected[conn.name == connection] { (conn.name) }
                            }
                        }
                    }
                    div { button type="submit" { (v.t("overview-show")) } }
                }
            }
            h2 { (v.ta("overview-school", &[("connection", connection.clone().into())])) }
            @if quiet {
                (empty(&v.t("overview-quiet")))
            } @else {
                div.scroll { table.digest {
                    thead { tr {
                        th scope="col" { }
                        th.num scope="col" { (v.t("overview-today")) }
                        th.num scope="col" { (v.t("overview-yesterday")) }
                    } }
                    tbody { @for (id, now, before) in &rows {
                        @if *now != 0 || *before != 0 {
                            tr class=[(*id == "digest-problems" && *now > 0).then_some("failed")] {
                                th scope="row" { (v.t(id)) }
                                td.num { (number(v.lang, *now)) }
                                td.num { (number(v.lang, *before)) }
                            }
                        }
                    } }
                } }
            }
            @if !digest.payments.is_empty() {
                h2 { (v.t("overview-payments")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("overview-payment-provider")) }
                        th scope="col" { (v.t("overview-payment-kind")) }
                        th.num scope="col" { (v.t("overview-payment-count")) }
                        th.num scope="col" { (v.t("overview-payment-amount")) }
                    } }
                    tbody { @for p in &digest.payments { tr {
                        td { (p.provider) }
                        td { (payment_kind(&v, &p.kind)) }
                        td.num {
                            (number(v.lang, p.count))
                            @if p.test > 0 { " " small { (v.ta("overview-payment-tests", &[("count", p.test.into())])) } }
                        }
                        td.num {
                            @for (i, (currency, minor)) in p.amounts.iter().enumerate() {
                                @if i > 0 { br; }
                                (money(v.lang, *minor, currency))
                            }
                        }
                    } } }
                } }
            }
            h2 { (v.t("overview-calls")) }
            div.stats {
                (numbers(&v, &v.t("overview-today"), &t))
                (numbers(&v, &v.t("overview-yesterday"), &y))
            }
            @if t.total + y.total == 0 { (empty(&v.t("overview-no-calls"))) }
            h2 { (v.t("overview-attention")) }
            @if a.is_empty() {
                (empty(&v.t("overview-attention-empty")))
            } @else {
                ul.attention {
                    @for item in &a {
                        li {
                            (badge(item.kind, &v.when(item.at)))
                            " "
                            a href=(item.href) { (item.text) }
                        }
                    }
                    @for item in &more {
                        li { a href=(item.href) { (item.text) } }
                    }
                }
            }
        },
    )
}
