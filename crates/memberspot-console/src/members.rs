//! Members: find one by e-mail or name on a connection; see what they hold (offer names,
//! order ids, expirations) and their progress per course; grant an offer, revoke one
//! (after a confirmation page; progress is kept), restore it, set or clear its end date (a
//! date that ends access at once needs a ticked confirmation), and create a login link
//! (shown once). Every look-up and change is a tool call through the gateway
//! (`Hub::call`) as the operator of that connection, recorded with surface `console` and
//! the signed-in user as `console:NAME`; a login token is fingerprinted in the record.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use maud::{Markup, html};
use memberspot_hub::{CallContext, HubError, ListOptions, Principal, SANDBOX_CONNECTION, Surface};
use memberspot_tools::inputs::Email;
use memberspot_tools::tools::{ListProgressInput, ListUsersInput};
use memberspot_wire::{CourseProgress, Offer, User};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Console;
use crate::auth::failure;
use crate::form::{Change, Owner};
use crate::layout::{View, badge, copy_field, empty, notice};
use crate::personas::urlencode;
use crate::session::Signed;

/// A name search reads at most this many members (the API cannot search by name).
const NAME_SCAN: usize = 1000;
/// …and shows at most this many matches.
const NAME_HITS: usize = 50;
/// Courses of progress read for one member.
const COURSES: usize = 200;

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    connection: String,
    /// An e-mail address or a part of a name.
    #[serde(default)]
    q: String,
    /// The member to show (exact address).
    #[serde(default)]
    email: String,
    #[serde(default)]
    done: Option<String>,
}

fn operator(connection: &str) -> Principal {
    Principal::Operator {
        connection: connection.to_owned(),
    }
}

fn context(s: &Signed) -> CallContext {
    let mut ctx = CallContext::new(Surface::Console);
    ctx.end_user = Some(format!("console:{}", s.name));
    ctx
}

/// A tool call as the operator of `connection`, recorded under the console user.
async fn call(
    c: &Console,
    s: &Signed,
    connection: &str,
    tool: &str,
    args: Value,
) -> Result<Value, HubError> {
    c.hub
        .call(&operator(connection), &context(s), tool, args)
        .await
        .result
}

fn connection_of(q: &str) -> String {
    if q.trim().is_empty() {
        SANDBOX_CONNECTION.to_owned()
    } else {
        q.trim().to_owned()
    }
}

fn members_url(connection: &str, email: &str) -> String {
    format!(
        "/members?connection={}&email={}",
        urlencode(connection),
        urlencode(email)
    )
}

fn full_name(u: &User) -> String {
    [u.firstname.as_deref(), u.name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn page(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<SearchQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/members");
    let connection = connection_of(&q.connection);
    let connections = match c.hub.list_connections().await {
        Ok(cs) => cs,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let text = q.q.trim().to_owned();
    let email = q.email.trim().to_owned();
    let search = html! {
        form.filters method="get" action="/members" {
            div {
                label for="m-connection" { (v.t("personas-connection")) }
                select #m-connection name="connection" {
                    @for conn in &connections {
                        option value=(conn.name) selected[conn.name == connection] { (conn.name) }
                    }
                }
            }
            div {
                label for="m-q" { (v.t("members-query")) }
                input #m-q type="search" name="q" value=(if text.is_empty() { &email } else { &text }) required aria-describedby="m-q-hint";
            }
            div { button type="submit" { (v.t("members-search")) } }
        }
        p #m-q-hint { small { (v.ta("members-query-hint", &[("scan", NAME_SCAN.into()), ("hits", NAME_HITS.into())])) } }
    };
    let done = q
        .done
        .as_deref()
        .map(|d| notice("ok", &v.t(&format!("members-done-{d}"))));
    if !email.is_empty() {
        return member(&c, &s, &v, &connection, &email, search, done).await;
    }
    if text.contains('@') {
        return member(&c, &s, &v, &connection, &text, search, done).await;
    }
    if text.is_empty() {
        return v.page(
            StatusCode::OK,
            &v.t("members-title"),
            html! { (search) (empty(&v.t("members-empty"))) },
        );
    }
    by_name(&c, &s, &v, &connection, &text, search).await
}

/// Members whose names (or addresses) contain every word of `text`, from the first
/// [`NAME_SCAN`] members of the school.
async fn by_name(
    c: &Console,
    s: &Signed,
    v: &View<'_>,
    connection: &str,
    text: &str,
    search: Markup,
) -> Response {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    let users = c.hub.users_stream(
        &operator(connection),
        &context(s),
        ListUsersInput::default(),
        ListOptions {
            max_items: Some(NAME_SCAN),
            ..ListOptions::default()
        },
    );
    futures::pin_mut!(users);
    let (mut read, mut hits, mut more) = (0usize, Vec::new(), false);
    while let Some(u) = users.next().await {
        let u = match u {
            Ok(u) => u,
            Err(e) => {
                return v.page(
                    StatusCode::BAD_GATEWAY,
                    &v.t("members-title"),
                    html! { (search) (notice("failed", &crate::auth::error_text(c, s.lang, &e))) },
                );
            }
        };
        read += 1;
        let hay = format!("{} {}", full_name(&u), u.email).to_lowercase();
        if words.iter().all(|w| hay.contains(w.as_str())) {
            if hits.len() == NAME_HITS {
                more = true;
                break;
            }
            hits.push(u);
        }
    }
    let status = if hits.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    v.page(
        status,
        &v.t("members-title"),
        html! {
            (search)
            @if read >= NAME_SCAN {
                (notice("warning", &v.ta("members-scan-capped", &[("scan", NAME_SCAN.into())])))
            }
            @if hits.is_empty() {
                (notice("warning", &v.ta("members-no-match", &[("text", text.to_owned().into()), ("read", read.into())])))
            } @else {
                h2 { (v.ta("members-matches", &[("count", hits.len().into()), ("read", read.into())])) }
                @if more { (notice("warning", &v.ta("members-more-matches", &[("hits", NAME_HITS.into())]))) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("personas-name")) }
                        th scope="col" { (v.t("members-email")) }
                        th scope="col" { (v.t("members-holdings")) }
                    } }
                    tbody { @for u in &hits {
                        tr {
                            td { a href=(members_url(connection, &u.email)) { @let n = full_name(u); @if n.is_empty() { "—" } @else { (n) } } }
                            td { (u.email) }
                            td.num { (u.offers.iter().filter(|h| h.active).count()) " / " (u.offers.len()) }
                        }
                    } }
                } }
            }
        },
    )
}

/// One member: holdings, progress per course and (for owners) the changes.
async fn member(
    c: &Console,
    s: &Signed,
    v: &View<'_>,
    connection: &str,
    email: &str,
    search: Markup,
    done: Option<Markup>,
) -> Response {
    let member = match call(
        c,
        s,
        connection,
        "find_user_by_email",
        json!({ "email": email }),
    )
    .await
    {
        Ok(m) => serde_json::from_value::<User>(m).map_err(|e| e.to_string()),
        Err(HubError::Tool(e)) if e.code() == "not_found" => {
            return v.page(
                StatusCode::NOT_FOUND,
                &v.t("members-title"),
                html! { (search) (notice("warning", &v.ta("members-not-found", &[("email", email.to_owned().into())]))) },
            );
        }
        Err(HubError::Tool(e)) if e.code() == "invalid_arguments" => {
            return v.page(
                StatusCode::BAD_REQUEST,
                &v.t("members-title"),
                html! { (search) (notice("failed", &e.to_string())) },
            );
        }
        Err(e) => Err(crate::auth::error_text(c, s.lang, &e)),
    };
    let member = match member {
        Ok(m) => m,
        Err(e) => {
            return v.page(
                StatusCode::BAD_GATEWAY,
                &v.t("members-title"),
                html! { (search) (notice("failed", &e)) },
            );
        }
    };
    let mut warnings = Vec::new();
    // Offer names for the holdings, the courses and the grant form; without them, ids.
    let offers: Vec<Offer> = match call(c, s, connection, "list_offers", json!({})).await {
        Ok(v) => v
            .get("offers")
            .cloned()
            .and_then(|o| serde_json::from_value(o).ok())
            .unwrap_or_default(),
        Err(e) => {
            warnings.push(crate::auth::error_text(c, s.lang, &e));
            Vec::new()
        }
    };
    let progress = match progress(c, s, connection, &member.email).await {
        Ok(p) => p,
        Err(e) => {
            warnings.push(crate::auth::error_text(c, s.lang, &e));
            Vec::new()
        }
    };
    let names: BTreeMap<&str, &str> = offers
        .iter()
        .map(|o| (o.id.as_str(), o.name.as_str()))
        .collect();
    let name = full_name(&member);
    let holding_link = |path: &str, offer_id: &str| {
        format!(
            "/members/{path}?connection={}&email={}&offer_id={}",
            urlencode(connection),
            urlencode(&member.email),
            urlencode(offer_id)
        )
    };
    v.page(
        StatusCode::OK,
        &v.t("members-title"),
        html! {
            (search)
            @if let Some(m) = done { (m) }
            @for w in &warnings { (notice("warning", w)) }
            h2 { (if name.is_empty() { member.email.clone() } else { format!("{name} <{}>", member.email) }) }
            dl.record {
                div { dt { (v.t("members-uid")) } dd { code { (member.uid) } } }
                @if let Some(t) = &member.created_at { div { dt { (v.t("personas-created")) } dd { (v.when(t.0.timestamp_millis())) } } }
            }
            h2 { (v.t("members-holdings")) }
            @if member.offers.is_empty() {
                (empty(&v.t(if s.is_owner() && !offers.is_empty() { "members-no-holdings" } else { "members-no-holdings-plain" })))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("members-offer")) }
                        th scope="col" { (v.t("personas-status")) }
                        th scope="col" { (v.t("members-order")) }
                        th scope="col" { (v.t("members-expires")) }
                        @if s.is_owner() { th scope="col" { (v.t("personas-actions")) } }
                    } }
                    tbody { @for h in &member.offers {
                        tr {
                            td { (names.get(h.offer_id.as_str()).copied().unwrap_or("")) " " small { code { (h.offer_id) } } }
                            td { @if h.active { (badge("ok", &v.t("personas-active"))) } @else { (badge("warning", &v.t("members-inactive"))) } }
                            td { (h.order_id.as_deref().unwrap_or("—")) }
                            td { (h.expires_at.as_ref().map(|t| v.when(t.0.timestamp_millis())).unwrap_or_else(|| "—".into())) }
                            @if s.is_owner() {
                                td.actions {
                                    @if h.active {
                                        a.button.danger href=(holding_link("revoke", &h.offer_id)) { (v.t("members-revoke")) }
                                    } @else {
                                        (state_form(s, connection, &member.email, &h.offer_id, &v.t("members-restore")))
                                    }
                                    a.button.secondary href=(holding_link("expiration", &h.offer_id)) { (v.t("members-expiration")) }
                                }
                            }
                        }
                    } }
                } }
            }
            h2 { (v.t("members-progress")) }
            @if progress.is_empty() {
                (empty(&v.t("members-no-progress")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("members-course")) }
                        th scope="col" { (v.t("members-course-offers")) }
                        th scope="col" { (v.t("members-completed")) }
                        th scope="col" { (v.t("members-started")) }
                    } }
                    tbody { @for p in &progress {
                        tr {
                            td { code { (p.course_id) } }
                            td { (offers.iter().filter(|o| o.course_ids.contains(&p.course_id)).map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")) }
                            td.num { (p.completed_posts.count()) }
                            td.num { (p.active_posts.count()) }
                        }
                    } }
                } }
                @if progress.len() >= COURSES { p { small { (v.ta("members-progress-capped", &[("count", COURSES.into())])) } } }
            }
            @if s.is_owner() {
                @if !offers.is_empty() {
                    h2 { (v.t("members-grant")) }
                    form.card method="post" action="/members/grant" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="connection" value=(connection);
                        input type="hidden" name="email" value=(member.email);
                        label for="offer_id" { (v.t("members-offer")) }
                        select #offer_id name="offer_id" {
                            @for o in &offers { option value=(o.id) { (o.name) } }
                        }
                        button type="submit" { (v.t("members-grant")) }
                    }
                }
                h2 { (v.t("members-login-link")) }
                form.card method="post" action="/members/login-link" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="connection" value=(connection);
                    input type="hidden" name="email" value=(member.email);
                    input type="hidden" name="uid" value=(member.uid);
                    p { (v.t("members-login-link-explain")) }
                    button type="submit" { (v.t("members-login-link-create")) }
                }
            }
        },
    )
}

/// The member's progress in every course (at most [`COURSES`]).
async fn progress(
    c: &Console,
    s: &Signed,
    connection: &str,
    email: &str,
) -> Result<Vec<CourseProgress>, HubError> {
    let email = Email::parse(email).map_err(|e| HubError::Invalid(format!("email: {e}")))?;
    let pages = c.hub.progress_stream(
        &operator(connection),
        &context(s),
        ListProgressInput {
            email,
            page_length: None,
            cursor: None,
        },
        ListOptions {
            max_items: Some(COURSES),
            ..ListOptions::default()
        },
    );
    futures::pin_mut!(pages);
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        out.push(p?);
    }
    Ok(out)
}

fn state_form(s: &Signed, connection: &str, email: &str, offer_id: &str, label: &str) -> Markup {
    html! {
        form method="post" action="/members/state" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="connection" value=(connection);
            input type="hidden" name="email" value=(email);
            input type="hidden" name="offer_id" value=(offer_id);
            input type="hidden" name="state" value="active";
            button.secondary type="submit" { (label) }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct HoldingQuery {
    #[serde(default)]
    connection: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    offer_id: String,
}

/// The hidden fields that name a holding, in every form about one.
fn holding_fields(s: &Signed, connection: &str, email: &str, offer_id: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(s.csrf);
        input type="hidden" name="connection" value=(connection);
        input type="hidden" name="email" value=(email);
        input type="hidden" name="offer_id" value=(offer_id);
    }
}

/// An offer as the confirmation pages name it: `Name (id)` when the school (read at most
/// once a minute, shared with the audit log's views) knows it, else the id.
async fn offer_label(c: &Console, s: &Signed, connection: &str, offer_id: &str) -> String {
    let name = match crate::audit::offer_names(c, s).of(connection).await {
        Some(names) => names.name_of(offer_id).await,
        None => None,
    };
    memberspot_hub::offer_names::label(offer_id, name.as_deref())
}

pub async fn confirm_revoke(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Query(q): Query<HoldingQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/members");
    let connection = connection_of(&q.connection);
    let offer = offer_label(&c, &s, &connection, &q.offer_id).await;
    v.page(
        StatusCode::OK,
        &v.ta(
            "members-revoke-title",
            &[("offer", offer.into()), ("email", q.email.clone().into())],
        ),
        html! {
            p { (v.t("members-revoke-explain")) }
            form method="post" action="/members/state" {
                (holding_fields(&s, &connection, &q.email, &q.offer_id))
                input type="hidden" name="state" value="inactive";
                button.danger type="submit" { (v.t("members-revoke-confirm")) }
            }
            p { a href=(members_url(&connection, &q.email)) { (v.t("back")) } }
        },
    )
}

/// The end-date page of one holding: set a date, or clear it.
pub async fn expiration_page(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Query(q): Query<HoldingQuery>,
) -> Response {
    let h = HoldingQuery {
        connection: connection_of(&q.connection),
        ..q
    };
    let offer = offer_label(&c, &s, &h.connection, &h.offer_id).await;
    expiration_form(&c, &s, &h, &offer, "", None)
}

/// The end-date form of the holding `h`, with the date typed and what was wrong with it.
fn expiration_form(
    c: &Console,
    s: &Signed,
    h: &HoldingQuery,
    offer: &str,
    date: &str,
    failed: Option<String>,
) -> Response {
    let (connection, email, offer_id) = (h.connection.as_str(), h.email.as_str(), &h.offer_id);
    let status = if failed.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let v = View::signed(c, s, "/members");
    v.page(
        status,
        &v.ta(
            "members-expiration-title",
            &[
                ("offer", offer.to_owned().into()),
                ("email", email.to_owned().into()),
            ],
        ),
        html! {
            @if let Some(m) = &failed { (notice("failed", m)) }
            form.card method="post" action="/members/expiration" {
                (holding_fields(s, connection, email, offer_id))
                label for="expires_on" { (v.t("members-expires-on")) }
                input #expires_on type="date" name="expires_on" value=(date) aria-describedby="expires-hint";
                small #expires-hint { (v.ta("members-expires-hint", &[("zone", c.settings.time_zone.name().into())])) }
                div.check {
                    input #confirm type="checkbox" name="confirm" value="1";
                    label for="confirm" { (v.t("members-expires-confirm")) }
                }
                div {
                    button type="submit" name="action" value="set" { (v.t("members-expires-set")) }
                    " "
                    button.secondary type="submit" name="action" value="clear" { (v.t("members-expires-clear")) }
                }
            }
            p { a href=(members_url(connection, email)) { (v.t("back")) } }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    offer_id: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    uid: String,
}

/// The answer to a change: back to the member with `done` shown, or the error on a page.
fn after(
    c: &Console,
    s: &Signed,
    connection: &str,
    email: &str,
    done: &str,
    r: Result<Value, HubError>,
) -> Response {
    match r {
        Ok(_) => {
            Redirect::to(&format!("{}&done={done}", members_url(connection, email))).into_response()
        }
        Err(e) => change_failed(c, s, connection, email, &e),
    }
}

fn change_failed(c: &Console, s: &Signed, connection: &str, email: &str, e: &HubError) -> Response {
    let v = View::signed(c, s, "/members");
    let status = match e {
        HubError::Tool(t) if t.code() == "invalid_arguments" => StatusCode::BAD_REQUEST,
        HubError::Tool(t) if t.code() == "not_found" => StatusCode::NOT_FOUND,
        HubError::Tool(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    v.page(
        status,
        &v.t("members-title"),
        html! {
            (notice("failed", &crate::auth::error_text(c, s.lang, e)))
            p { a href=(members_url(connection, email)) { (v.t("back")) } }
        },
    )
}

pub async fn grant(State(c): State<Arc<Console>>, Change(s, f): Change<ChangeForm>) -> Response {
    let connection = connection_of(&f.connection);
    let r = call(
        &c,
        &s,
        &connection,
        "grant_user_offer_by_email",
        json!({ "email": f.email, "offer_id": f.offer_id }),
    )
    .await;
    after(&c, &s, &connection, &f.email, "grant", r)
}

pub async fn set_state(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<ChangeForm>,
) -> Response {
    // Only the reversible states: removing a holding is for the CLI and agents with the
    // destructive scope.
    let done = match f.state.as_str() {
        "inactive" => "revoke",
        "active" => "restore",
        other => {
            let v = View::signed(&c, &s, "/members");
            let m = v.ta(
                "error-use-either",
                &[
                    ("field", "state".into()),
                    ("value", other.into()),
                    ("first", "active".into()),
                    ("second", "inactive".into()),
                ],
            );
            return v.message(StatusCode::BAD_REQUEST, "error-title", &m);
        }
    };
    let connection = connection_of(&f.connection);
    let r = call(
        &c,
        &s,
        &connection,
        "set_user_offer_state",
        json!({ "email": f.email, "offer_id": f.offer_id, "state": f.state }),
    )
    .await;
    after(&c, &s, &connection, &f.email, done, r)
}

/// The end of `date` in the school's time zone (the last second of that day), as UTC.
fn end_of_day(tz: chrono_tz::Tz, date: NaiveDate) -> Option<chrono::DateTime<Utc>> {
    let last = date.and_hms_opt(23, 59, 59)?;
    tz.from_local_datetime(&last)
        .latest()
        .map(|t| t.with_timezone(&Utc))
}

pub async fn set_expiration(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<ChangeForm>,
) -> Response {
    let connection = connection_of(&f.connection);
    let holding = HoldingQuery {
        connection: connection.clone(),
        email: f.email.clone(),
        offer_id: f.offer_id.clone(),
    };
    let again = |text: String| async {
        let offer = offer_label(&c, &s, &holding.connection, &holding.offer_id).await;
        expiration_form(&c, &s, &holding, &offer, &f.expires_on, Some(text))
    };
    let (args, done) = match f.action.as_str() {
        "clear" => (
            json!({ "email": f.email, "offer_id": f.offer_id }),
            "expiration-cleared",
        ),
        _ => {
            let text = f.expires_on.trim();
            let end = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| end_of_day(c.settings.time_zone, d));
            let Some(end) = end else {
                return again(c.i18n.text(
                    s.lang,
                    "error-not-a-date",
                    &[("field", "expires_on".into()), ("value", text.into())],
                ))
                .await;
            };
            // A date that has passed ends access at once: as destructive as a revocation,
            // so it needs the ticked confirmation.
            if end <= Utc::now() && f.confirm.is_none() {
                return again(c.i18n.text(
                    s.lang,
                    "members-expires-needs-confirm",
                    &[("date", text.to_owned().into())],
                ))
                .await;
            }
            (
                json!({
                    "email": f.email,
                    "offer_id": f.offer_id,
                    "expires_at": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
                "expiration",
            )
        }
    };
    let r = call(&c, &s, &connection, "set_offer_expiration", args).await;
    after(&c, &s, &connection, &f.email, done, r)
}

/// Creates a login token for the member and shows it (and Memberspot's link, when it
/// gives one) once. The audit record keeps only its fingerprint.
pub async fn login_link(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<ChangeForm>,
) -> Response {
    let connection = connection_of(&f.connection);
    let out = match call(
        &c,
        &s,
        &connection,
        "create_login_token",
        json!({ "uid": f.uid }),
    )
    .await
    {
        Ok(out) => out,
        Err(e) => return change_failed(&c, &s, &connection, &f.email, &e),
    };
    let Some(token) = out["token"].as_str().filter(|t| !t.is_empty()) else {
        let e = HubError::Invalid("create_login_token: the answer holds no token".into());
        return change_failed(&c, &s, &connection, &f.email, &e);
    };
    let url = out["login_url"].as_str();
    let v = View::signed(&c, &s, "/members");
    v.page(
        StatusCode::OK,
        &v.ta(
            "members-login-link-title",
            &[("email", f.email.clone().into())],
        ),
        html! {
            (notice("warning", &v.t("members-login-link-once")))
            div.card {
                @if let Some(url) = url {
                    (copy_field(&v, "login-url", &v.t("members-login-link-url"), url, false))
                } @else {
                    p { (v.t("members-login-link-no-url")) }
                }
                (copy_field(&v, "login-token", &v.t("members-login-link-token"), token, false))
            }
            p { a href=(members_url(&connection, &f.email)) { (v.t("back")) } }
        },
    )
}

crate::form::csrf_forms!(ChangeForm);
