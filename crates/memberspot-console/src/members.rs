//! Members: find one by e-mail on a connection, see what they hold (offer names, order
//! ids, expirations), grant an offer, revoke one (after a confirmation page; progress is
//! kept) or restore it. Every look-up and change is a tool call through the gateway
//! (`Hub::call`) as the operator of that connection, recorded with surface `console` and
//! the signed-in user as `console:NAME`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use maud::{Markup, html};
use memberspot_hub::{CallContext, HubError, Principal, SANDBOX_CONNECTION, Surface};
use memberspot_wire::{Offer, User};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Console;
use crate::auth::{failure, refused};
use crate::layout::{View, badge, empty, notice};
use crate::personas::urlencode;
use crate::session::{Refusal, Signed};

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    connection: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    done: Option<String>,
}

/// A tool call as the operator of `connection`, recorded under the console user.
async fn call(
    c: &Console,
    s: &Signed,
    connection: &str,
    tool: &str,
    args: Value,
) -> Result<Value, HubError> {
    let who = Principal::Operator {
        connection: connection.to_owned(),
    };
    let mut ctx = CallContext::new(Surface::Console);
    ctx.end_user = Some(format!("console:{}", s.name));
    c.hub.call(&who, &ctx, tool, args).await.result
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
                label for="m-email" { (v.t("members-email")) }
                input #m-email type="email" name="email" value=(email) required;
            }
            div { button type="submit" { (v.t("members-search")) } }
        }
    };
    let mut first = q
        .done
        .map(|d| notice("ok", &v.t(&format!("members-done-{d}"))));
    if email.is_empty() {
        return v.page(
            StatusCode::OK,
            &v.t("members-title"),
            html! { (search) (empty(&v.t("members-empty"))) },
        );
    }
    let member = match call(
        &c,
        &s,
        &connection,
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
                html! { (search) (notice("warning", &v.ta("members-not-found", &[("email", email.clone().into())]))) },
            );
        }
        Err(e) => Err(e.to_string()),
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
    // Offer names for the holdings and the grant form; without them, ids are shown.
    let offers: Vec<Offer> = match call(&c, &s, &connection, "list_offers", json!({})).await {
        Ok(v) => v
            .get("offers")
            .cloned()
            .and_then(|o| serde_json::from_value(o).ok())
            .unwrap_or_default(),
        Err(e) => {
            first = Some(notice("warning", &e.to_string()));
            Vec::new()
        }
    };
    let names: BTreeMap<&str, &str> = offers
        .iter()
        .map(|o| (o.id.as_str(), o.name.as_str()))
        .collect();
    let full_name = [member.firstname.as_deref(), member.name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    v.page(
        StatusCode::OK,
        &v.t("members-title"),
        html! {
            (search)
            @if let Some(m) = first { (m) }
            h2 { (if full_name.is_empty() { member.email.clone() } else { format!("{full_name} <{}>", member.email) }) }
            dl.record {
                div { dt { "uid" } dd { code { (member.uid) } } }
                @if let Some(t) = &member.created_at { div { dt { (v.t("personas-created")) } dd { (v.when(t.0.timestamp_millis())) } } }
            }
            h2 { (v.t("members-holdings")) }
            @if member.offers.is_empty() {
                (empty(&v.t("members-no-holdings")))
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
                                        a.button.danger href={ "/members/revoke?connection=" (urlencode(&connection)) "&email=" (urlencode(&member.email)) "&offer_id=" (urlencode(&h.offer_id)) } { (v.t("members-revoke")) }
                                    } @else {
                                        (state_form(&s, &connection, &member.email, &h.offer_id, "active", &v.t("members-restore")))
                                    }
                                }
                            }
                        }
                    } }
                } }
            }
            @if s.is_owner() && !offers.is_empty() {
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
        },
    )
}

fn state_form(
    s: &Signed,
    connection: &str,
    email: &str,
    offer_id: &str,
    state: &str,
    label: &str,
) -> Markup {
    html! {
        form method="post" action="/members/state" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="connection" value=(connection);
            input type="hidden" name="email" value=(email);
            input type="hidden" name="offer_id" value=(offer_id);
            input type="hidden" name="state" value=(state);
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

pub async fn confirm_revoke(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<HoldingQuery>,
) -> Response {
    if !s.is_owner() {
        return refused(&c, s.lang, Refusal::Viewer);
    }
    let v = View::signed(&c, &s, "/members");
    let connection = connection_of(&q.connection);
    v.page(
        StatusCode::OK,
        &v.ta(
            "members-revoke-title",
            &[
                ("offer", q.offer_id.clone().into()),
                ("email", q.email.clone().into()),
            ],
        ),
        html! {
            p { (v.t("members-revoke-explain")) }
            form method="post" action="/members/state" {
                input type="hidden" name="csrf" value=(s.csrf);
                input type="hidden" name="connection" value=(connection);
                input type="hidden" name="email" value=(q.email);
                input type="hidden" name="offer_id" value=(q.offer_id);
                input type="hidden" name="state" value="inactive";
                button.danger type="submit" { (v.t("members-revoke-confirm")) }
            }
            p { a href=(members_url(&connection, &q.email)) { (v.t("back")) } }
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
}

/// The answer to a change: back to the member, or the error on a page.
async fn after(
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
        Err(e) => {
            let v = View::signed(c, s, "/members");
            let status = match &e {
                HubError::Tool(t) if t.code() == "invalid_arguments" => StatusCode::BAD_REQUEST,
                HubError::Tool(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            };
            v.page(
                status,
                &v.t("members-title"),
                html! {
                    (notice("failed", &e.to_string()))
                    p { a href=(members_url(connection, email)) { (v.t("back")) } }
                },
            )
        }
    }
}

pub async fn grant(
    State(c): State<Arc<Console>>,
    s: Signed,
    headers: HeaderMap,
    Form(f): Form<ChangeForm>,
) -> Response {
    if let Err(r) = c.check_change(&s, &headers, &f.csrf) {
        return refused(&c, s.lang, r);
    }
    let connection = connection_of(&f.connection);
    let r = call(
        &c,
        &s,
        &connection,
        "grant_user_offer_by_email",
        json!({ "email": f.email, "offer_id": f.offer_id }),
    )
    .await;
    after(&c, &s, &connection, &f.email, "grant", r).await
}

pub async fn set_state(
    State(c): State<Arc<Console>>,
    s: Signed,
    headers: HeaderMap,
    Form(f): Form<ChangeForm>,
) -> Response {
    if let Err(r) = c.check_change(&s, &headers, &f.csrf) {
        return refused(&c, s.lang, r);
    }
    // Only the reversible states: removing a holding is for the CLI and agents with the
    // destructive scope.
    let done = match f.state.as_str() {
        "inactive" => "revoke",
        "active" => "restore",
        other => {
            let v = View::signed(&c, &s, "/members");
            let m = format!("state: `{other}`: use active or inactive");
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
    after(&c, &s, &connection, &f.email, done, r).await
}
