//! Flows: the flows with their trigger and next run, "run now" and "dry run" (owner only),
//! the run history and a run's steps, and the daily summary (preview for a date, send now).
//! Runs go through [`memberspot_flows::Flows`] like `memberspot flows run`; a real run and
//! a sent summary are recorded in the audit log as `console:NAME`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDate, Utc};
use maud::html;
use memberspot_flows::config::Trigger;
use memberspot_flows::runner::RunReport;
use memberspot_hub::HubError;
use memberspot_hub::store::RunStatus;
use serde::Deserialize;

use crate::Console;
use crate::auth::failure;
use crate::form::Change;
use crate::layout::{View, badge, empty, notice};
use crate::personas::actor;
use crate::session::Signed;

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn run_kind(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Ok => "ok",
        RunStatus::Failed => "failed",
        _ => "warning",
    }
}

/// A flow's trigger: the word (a message id) and what it names (a schedule, an event).
struct TriggerText {
    id: &'static str,
    detail: Option<String>,
}

/// A flow's name, its trigger and its next run (epoch ms), for the list.
fn flow_rows(c: &Console) -> Vec<(String, TriggerText, Option<i64>, bool)> {
    let Some(flows) = c.flows.get() else {
        return Vec::new();
    };
    let now = Utc::now();
    let mut rows = Vec::new();
    if let Some(d) = &flows.config().digest {
        rows.push((
            "digest".to_owned(),
            TriggerText {
                id: "flows-trigger-cron",
                detail: Some(format!(
                    "{} {}",
                    d.schedule.expr(),
                    d.schedule.timezone().name()
                )),
            },
            d.enabled
                .then(|| d.schedule.next_after(now).map(|t| t.timestamp_millis()))
                .flatten(),
            false,
        ));
    }
    for f in &flows.config().flows {
        let (trigger, next) = match &f.trigger {
            Trigger::Cron { schedule, .. } => (
                TriggerText {
                    id: "flows-trigger-cron",
                    detail: Some(format!(
                        "{} {}",
                        schedule.expr(),
                        schedule.timezone().name()
                    )),
                },
                schedule.next_after(now).map(|t| t.timestamp_millis()),
            ),
            Trigger::Event { kind, source } => (
                TriggerText {
                    id: "flows-trigger-event",
                    detail: Some(format!(
                        "{kind}{}",
                        source
                            .as_deref()
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    )),
                },
                None,
            ),
            Trigger::Manual => (
                TriggerText {
                    id: "flows-trigger-manual",
                    detail: None,
                },
                None,
            ),
        };
        rows.push((f.name.clone(), trigger, next, true));
    }
    rows
}

/// What the page's forms held when one was refused, to show it again as typed.
#[derive(Default)]
struct Typed<'a> {
    /// The flow picked in "run with input".
    name: &'a str,
    input: &'a str,
    date: &'a str,
}

pub async fn list(State(c): State<Arc<Console>>, s: Signed) -> Response {
    render(&c, &s, StatusCode::OK, None, &Typed::default()).await
}

/// The flows page again, answering a refused form with `problem` and what was typed.
async fn refused(c: &Console, s: &Signed, problem: &str, typed: &Typed<'_>) -> Response {
    let message = Some(notice("failed", problem));
    render(c, s, StatusCode::BAD_REQUEST, message, typed).await
}

async fn render(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    message: Option<maud::Markup>,
    typed: &Typed<'_>,
) -> Response {
    let runs = match c.hub.flows_store().list_runs(None, 50).await {
        Ok(r) => r,
        Err(e) => return failure(c, s.lang, &HubError::from(e)),
    };
    let rows = flow_rows(c);
    let has_digest = c.flows.get().is_some();
    let v = View::signed(c, s, "/flows");
    v.page(
        status,
        &v.t("flows-title"),
        html! {
            @if let Some(m) = message { (m) }
            @if rows.is_empty() {
                (empty(&v.t("flows-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("flows-name")) }
                        th scope="col" { (v.t("flows-trigger")) }
                        th scope="col" { (v.t("flows-next")) }
                        @if s.is_owner() { th scope="col" { (v.t("flows-actions")) } }
                    } }
                    tbody { @for (name, trigger, next, runnable) in &rows {
                        tr {
                            td { (name) }
                            td { (v.t(trigger.id)) @if let Some(d) = &trigger.detail { " " code { (d) } } }
                            td { @match next { Some(t) => (v.when(*t)), None => "—" } }
                            @if s.is_owner() {
                                td { @if *runnable {
                                    form.inline method="post" action={ "/flows/" (urlencode(name)) "/run" } {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        input type="hidden" name="dry_run" value="1";
                                        button.secondary type="submit" { (v.t("flows-dry-run")) }
                                    }
                                    " "
                                    form.inline method="post" action={ "/flows/" (urlencode(name)) "/run" } {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        button type="submit" { (v.t("flows-run-now")) }
                                    }
                                } }
                            }
                        }
                    } }
                } }
                @if s.is_owner() && rows.iter().any(|r| r.3) {
                    h2 { (v.t("flows-with-input")) }
                    form.card method="post" action="/flows/run" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        label for="flow-name" { (v.t("flows-name")) }
                        select id="flow-name" name="name" {
                            @for (name, _, _, runnable) in &rows {
                                @if *runnable { option value=(name) selected[typed.name == name.as_str()] { (name) } }
                            }
                        }
                        label for="flow-input" { (v.t("flows-input-json")) }
                        textarea id="flow-input" name="input" rows="4" placeholder="{}" { (typed.input) }
                        div {
                            button.secondary type="submit" name="dry_run" value="1" { (v.t("flows-dry-run")) }
                            " "
                            button type="submit" { (v.t("flows-run-now")) }
                        }
                    }
                }
            }
            h2 { (v.t("flows-digest")) }
            @if !has_digest {
                (empty(&v.t("flows-digest-off")))
            } @else if s.is_owner() {
                form.filters method="post" action="/flows/digest" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    div {
                        label for="date" { (v.t("flows-digest-date")) }
                        input id="date" name="date" type="date" value=(typed.date);
                    }
                    div { button.secondary type="submit" name="action" value="preview" { (v.t("flows-digest-preview")) } }
                    div { button type="submit" name="action" value="send" { (v.t("flows-digest-send")) } }
                }
            } @else {
                p { (v.t("flows-digest-viewer")) }
            }
            h2 #runs { (v.t("flows-history")) }
            @if runs.is_empty() {
                (empty(&v.t("flows-history-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("audit-time")) }
                        th scope="col" { (v.t("flows-name")) }
                        th scope="col" { (v.t("flows-trigger")) }
                        th scope="col" { (v.t("events-status")) }
                        th scope="col" { (v.t("events-error")) }
                    } }
                    tbody { @for r in &runs {
                        tr {
                            td { a href={ "/flows/runs/" (urlencode(&r.id)) } { (v.when(r.started_at)) } }
                            td { (r.flow) }
                            td { (v.label("run-trigger", &r.trigger)) @if r.dry_run { " (" (v.t("flows-dry")) ")" } }
                            td { (badge(run_kind(r.status), &v.label("run-status", r.status.as_str()))) }
                            td { (r.error.clone().unwrap_or_default()) }
                        }
                    } }
                } }
            }
        },
    )
}

pub async fn run_detail(
    State(c): State<Arc<Console>>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let store = c.hub.flows_store();
    let run = match store.get_run(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return failure(
                &c,
                s.lang,
                &HubError::NotFound(c.i18n.text(
                    s.lang,
                    "flows-run-unknown",
                    &[("id", id.clone().into())],
                )),
            );
        }
        Err(e) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let steps = match store.run_steps(&id).await {
        Ok(x) => x,
        Err(e) => return failure(&c, s.lang, &HubError::from(e)),
    };
    let v = View::signed(&c, &s, "/flows");
    let json = |x: &serde_json::Value| serde_json::to_string_pretty(x).unwrap_or_default();
    v.page(
        StatusCode::OK,
        &v.ta("flows-run-title", &[("flow", run.flow.clone().into())]),
        html! {
            dl.record {
                div { dt { (v.t("field-id")) } dd { code { (run.id) } } }
                div { dt { (v.t("events-status")) } dd { (badge(run_kind(run.status), &v.label("run-status", run.status.as_str()))) } }
                div { dt { (v.t("flows-trigger")) } dd { (v.label("run-trigger", &run.trigger)) @if run.dry_run { " (" (v.t("flows-dry")) ")" } } }
                div { dt { (v.t("audit-time")) } dd { (v.when(run.started_at)) } }
                @if let Some(e) = &run.error { div { dt { (v.t("events-error")) } dd { (e) } } }
                div { dt { (v.t("flows-input")) } dd { code { (run.input.to_string()) } } }
            }
            h2 { (v.t("flows-steps")) }
            @if steps.is_empty() {
                (empty(&v.t("flows-steps-empty")))
            } @else {
                @for st in &steps {
                    section.card {
                        h3 { (st.name) " " small { "(" (v.label("step-kind", &st.kind)) ", " (v.ms(st.duration_ms)) ", " (v.ta("flows-attempts", &[("count", st.attempts.into())])) ")" } }
                        @if let Some(i) = &st.input { p { (v.t("flows-input")) } pre.payload { (json(i)) } }
                        @if let Some(o) = &st.output { p { (v.t("flows-output")) } pre.payload { (json(o)) } }
                        @if let Some(e) = &st.error { (notice("failed", e)) }
                    }
                }
            }
            @if s.is_owner() && c.flows.get().is_some() {
                form.inline method="post" action={ "/flows/runs/" (urlencode(&run.id)) "/rerun" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="dry_run" value="1";
                    button.secondary type="submit" { (v.t("flows-rerun-dry")) }
                }
                " "
                form.inline method="post" action={ "/flows/runs/" (urlencode(&run.id)) "/rerun" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button type="submit" { (v.t("flows-rerun")) }
                }
            }
            p { a href="/flows" { (v.t("back")) } }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct RunForm {
    #[serde(default)]
    csrf: String,
    /// The flow, when the form names it (the "run with input" form).
    #[serde(default)]
    name: String,
    #[serde(default)]
    dry_run: Option<String>,
    #[serde(default)]
    input: Option<String>,
    /// Set by the confirmation page: a real run happens only with it.
    #[serde(default)]
    confirm: Option<String>,
}

/// A real run (or sending the summary) changes the school or reaches people: the first
/// post answers this page, which posts the same form again with `confirm=1`, and offers
/// the dry run instead where there is one.
fn ask_first(
    c: &Console,
    s: &Signed,
    title: &str,
    explain: &str,
    action: &str,
    fields: &[(&str, &str)],
    dry_run: bool,
) -> Response {
    let v = View::signed(c, s, "/flows");
    v.page(
        StatusCode::OK,
        title,
        html! {
            p { (explain) }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(s.csrf);
                @for (k, val) in fields { input type="hidden" name=(k) value=(val); }
                input type="hidden" name="confirm" value="1";
                button.danger type="submit" { (v.t("flows-confirm-run")) }
                @if dry_run {
                    " "
                    button.secondary type="submit" name="dry_run" value="1" { (v.t("flows-dry-run")) }
                }
            }
            p { a href="/flows" { (v.t("back")) } }
        },
    )
}

pub async fn run(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, f): Change<RunForm>,
) -> Response {
    run_named(c, s, name, f).await
}

/// The "run with input" form: the flow is picked in the form.
pub async fn run_with_input(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<RunForm>,
) -> Response {
    let name = f.name.clone();
    run_named(c, s, name, f).await
}

/// Runs a past run's flow again with its input (owners; a dry run when asked).
pub async fn rerun(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    Change(s, f): Change<RunForm>,
) -> Response {
    let Some(flows) = c.flows.get() else {
        return failure(
            &c,
            s.lang,
            &HubError::NotFound(c.i18n.text(s.lang, "flows-not-running", &[])),
        );
    };
    let dry_run = f.dry_run.is_some();
    if !dry_run && f.confirm.is_none() {
        let v = View::signed(&c, &s, "/flows");
        return ask_first(
            &c,
            &s,
            &v.t("flows-rerun-title"),
            &v.t("flows-run-explain"),
            &format!("/flows/runs/{}/rerun", urlencode(&id)),
            &[],
            true,
        );
    }
    let started = std::time::Instant::now();
    let result = flows.rerun(&id, dry_run).await.map_err(run_error);
    if !dry_run {
        c.hub
            .record_admin_action(
                &actor(&s),
                "admin.rerun_flow",
                serde_json::json!({ "run": id }),
                None,
                result.as_ref().map(
                    |r| serde_json::json!({ "run_id": r.run_id, "status": r.status.as_str() }),
                ),
                started,
            )
            .await;
    }
    match result {
        Ok(report) => report_page(&c, &s, &report),
        Err(e) => failure(&c, s.lang, &e),
    }
}

async fn run_named(c: Arc<Console>, s: Signed, name: String, f: RunForm) -> Response {
    let Some(flows) = c.flows.get() else {
        return failure(
            &c,
            s.lang,
            &HubError::NotFound(c.i18n.text(s.lang, "flows-not-running", &[])),
        );
    };
    let input = match f.input.as_deref().map(str::trim).filter(|x| !x.is_empty()) {
        None => serde_json::json!({}),
        Some(text) => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let problem = c.i18n.text(
                    s.lang,
                    "flows-input-not-json",
                    &[("error", e.to_string().into())],
                );
                let typed = Typed {
                    name: &name,
                    input: text,
                    ..Typed::default()
                };
                return refused(&c, &s, &problem, &typed).await;
            }
        },
    };
    let dry_run = f.dry_run.is_some();
    if !dry_run && f.confirm.is_none() {
        let v = View::signed(&c, &s, "/flows");
        let input_text = input.to_string();
        return ask_first(
            &c,
            &s,
            &v.ta("flows-run-confirm-title", &[("flow", name.clone().into())]),
            &v.t("flows-run-explain"),
            "/flows/run",
            &[("name", &name), ("input", &input_text)],
            true,
        );
    }
    let started = std::time::Instant::now();
    // The run's own record names who started it, also if the hub stops before this
    // request records the action.
    let trigger = format!("console:{}", s.name);
    let result = flows
        .run_flow(&name, &trigger, input.clone(), None, dry_run)
        .await
        .map_err(run_error);
    if !dry_run {
        c.hub
            .record_admin_action(
                &actor(&s),
                "admin.run_flow",
                serde_json::json!({ "name": name, "input": input }),
                None,
                result.as_ref().map(
                    |r| serde_json::json!({ "run_id": r.run_id, "status": r.status.as_str() }),
                ),
                started,
            )
            .await;
    }
    match result {
        Ok(report) => report_page(&c, &s, &report),
        Err(e) => failure(&c, s.lang, &e),
    }
}

fn run_error(e: memberspot_flows::runner::RunError) -> HubError {
    use memberspot_flows::runner::RunError;
    match e {
        RunError::UnknownFlow(_) | RunError::UnknownRun(_) => HubError::NotFound(e.to_string()),
        RunError::Busy(_) | RunError::AlreadyFired(_) => HubError::Invalid(e.to_string()),
        RunError::Store(e) => HubError::from(e),
    }
}

fn report_page(c: &Console, s: &Signed, r: &RunReport) -> Response {
    let v = View::signed(c, s, "/flows");
    let title = if r.dry_run {
        v.ta("flows-dry-title", &[("flow", r.flow.clone().into())])
    } else {
        v.ta("flows-run-title", &[("flow", r.flow.clone().into())])
    };
    v.page(
        StatusCode::OK,
        &title,
        html! {
            @if r.status == RunStatus::Ok {
                (notice("ok", &v.t("flows-run-ok")))
            } @else {
                (notice("failed", &r.error.clone().unwrap_or_else(|| v.t("flows-run-failed"))))
            }
            div.scroll { table {
                thead { tr {
                    th scope="col" { (v.t("flows-step")) }
                    th scope="col" { (v.t("flows-kind")) }
                    th scope="col" { (v.t("flows-duration")) }
                    th scope="col" { (v.t("events-attempts")) }
                    th scope="col" { (v.t("flows-output")) }
                } }
                tbody { @for st in &r.steps {
                    tr {
                        td { (st.name) }
                        td { (v.label("step-kind", &st.kind)) }
                        td { (v.ms(st.duration_ms)) }
                        td { (st.attempts) }
                        td {
                            @if let Some(e) = &st.error { (badge("failed", e)) }
                            @else if let Some(o) = &st.output { code { (o.to_string().chars().take(300).collect::<String>()) } }
                        }
                    }
                } }
            } }
            p {
                @if !r.dry_run { a href={ "/flows/runs/" (urlencode(&r.run_id)) } { (v.t("flows-run-open")) } " · " }
                a href="/flows" { (v.t("back")) }
            }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct DigestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn digest(State(c): State<Arc<Console>>, Change(s, f): Change<DigestForm>) -> Response {
    let Some(flows) = c.flows.get() else {
        return failure(
            &c,
            s.lang,
            &HubError::NotFound(c.i18n.text(s.lang, "flows-not-running", &[])),
        );
    };
    let date = match f.date.trim() {
        "" => None,
        d => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                let problem = c.i18n.text(
                    s.lang,
                    "error-not-yyyy-mm-dd",
                    &[("field", "date".into()), ("value", d.into())],
                );
                let typed = Typed {
                    date: d,
                    ..Typed::default()
                };
                return refused(&c, &s, &problem, &typed).await;
            }
        },
    };
    let send = f.action == "send";
    if send && f.confirm.is_none() {
        let v = View::signed(&c, &s, "/flows");
        let day = date.map(|d| d.to_string()).unwrap_or_default();
        return ask_first(
            &c,
            &s,
            &v.t("flows-digest-confirm-title"),
            &v.t("flows-digest-confirm-explain"),
            "/flows/digest",
            &[("date", &day), ("action", "send")],
            false,
        );
    }
    let started = std::time::Instant::now();
    // A preview delivers nowhere; sending goes to the configured targets.
    let result = flows.run_digest(date, &[], !send, None).await;
    if send {
        c.hub
            .record_admin_action(
                &actor(&s),
                "admin.send_digest",
                serde_json::json!({ "date": date.map(|d| d.to_string()) }),
                None,
                result.as_ref().map(|r| {
                    serde_json::json!({
                        "run_id": r.as_ref().and_then(|r| r.run_id.clone()),
                        "deliveries": r.as_ref().map(|r| r.deliveries.iter().filter(|(_, d)| d.is_ok()).count()),
                    })
                }),
                started,
            )
            .await;
    }
    let run = match result {
        Ok(Some(r)) => r,
        Ok(None) => {
            return failure(
                &c,
                s.lang,
                &HubError::Invalid(c.i18n.text(s.lang, "flows-digest-not-produced", &[])),
            );
        }
        Err(e) => return failure(&c, s.lang, &e),
    };
    let v = View::signed(&c, &s, "/flows");
    v.page(
        StatusCode::OK,
        &run.subject,
        html! {
            @if send {
                @for (target, d) in &run.deliveries {
                    @match d {
                        Ok(detail) => (notice("ok", &format!("{}: {detail}", target_name(&v, *target)))),
                        Err(e) => (notice("failed", &format!("{}: {e}", target_name(&v, *target)))),
                    }
                }
                @if run.deliveries.is_empty() { (notice("warning", &v.t("flows-digest-no-targets"))) }
            } @else {
                (notice("warning", &v.t("flows-digest-preview-note")))
            }
            pre.payload { (run.digest.to_text()) }
            p { a href="/flows" { (v.t("back")) } }
        },
    )
}

/// A delivery target as the page's language names it.
fn target_name(v: &View<'_>, t: memberspot_flows::config::Target) -> String {
    use memberspot_flows::config::Target;
    v.t(match t {
        Target::Slack => "flows-target-slack",
        Target::Email => "flows-target-email",
        Target::Stdout => "flows-target-stdout",
    })
}

crate::form::csrf_forms!(RunForm, DigestForm);
