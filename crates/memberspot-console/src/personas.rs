//! Personas: the list, creating one (scopes, connection, per-minute limit; its token shown
//! once), a new token, revoking (after a confirmation page). Changes go through
//! [`memberspot_hub::admin::ActingAdmin`] as the signed-in user.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use memberspot_hub::admin::{Actor, IssuedToken, PersonaSpec};
use memberspot_hub::store::StoreError;
use memberspot_hub::{HubError, Surface};
use memberspot_wire::Offer;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure};
use crate::form::{Change, Owner};
use crate::i18n::Lang;
use crate::layout::{View, badge, copy_field, empty, notice};
use crate::session::Signed;

const CLASSES: [&str; 4] = ["read", "write", "destructive", "all"];

pub(crate) fn actor(s: &Signed) -> Actor {
    Actor {
        surface: Surface::Console,
        name: s.name.clone(),
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    revoked: Option<String>,
}

/// What the create form held, to show it again with an error.
#[derive(Deserialize, Default)]
pub struct NewPersonaForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    per_minute: String,
    /// Offer ids typed by hand (when a school's offers could not be listed).
    #[serde(default)]
    offers: String,
    /// Offers picked by name: `CONNECTION/OFFER_ID`.
    #[serde(default)]
    offer: Vec<String>,
    /// The classes whose calls wait for a click in chat (`write`, `destructive`).
    #[serde(default)]
    confirm: Vec<String>,
    /// Present when the form showed the confirmation choices: then none ticked means
    /// none asked (`confirm:none`); without it the hub's default applies.
    #[serde(default)]
    confirm_set: String,
}

impl NewPersonaForm {
    /// Whether this form came back from the browser (an error shown with what was
    /// sent) rather than being shown for the first time.
    fn sent(&self) -> bool {
        !self.csrf.is_empty()
    }

    /// The scopes to ask the hub for: the ticked classes and tools (and `connector`) and
    /// the confirmation choice.
    fn scopes(&self) -> Vec<String> {
        let mut scopes = self.scope.clone();
        if !self.confirm_set.is_empty() {
            if self.confirm.is_empty() {
                scopes.push("confirm:none".to_owned());
            }
            scopes.extend(self.confirm.iter().map(|c| format!("confirm:{c}")));
        }
        scopes
    }

    /// The form showing persona `p` as it is (`offers`: the school's, to tell picked
    /// offers from ids typed by hand).
    fn of(p: &memberspot_hub::store::Persona, offers: &[Offer]) -> NewPersonaForm {
        let (confirm, scope): (Vec<String>, Vec<String>) = p
            .scopes
            .iter()
            .cloned()
            .partition(|x| x.starts_with("confirm:"));
        let confirm = confirm
            .iter()
            .filter_map(|x| x.strip_prefix("confirm:"))
            .filter(|x| *x != "none")
            .map(str::to_owned)
            .collect();
        let ids = p.offer_ids.clone().unwrap_or_default();
        let (listed, typed): (Vec<String>, Vec<String>) = ids
            .into_iter()
            .partition(|id| offers.iter().any(|o| &o.id == id));
        NewPersonaForm {
            name: p.name.clone(),
            description: p.description.clone(),
            connection: p.connection.clone(),
            scope,
            per_minute: p
                .calls_per_minute
                .map(|n| n.to_string())
                .unwrap_or_default(),
            offers: typed.join(", "),
            offer: listed
                .iter()
                .map(|id| format!("{}/{id}", p.connection))
                .collect(),
            confirm,
            confirm_set: "1".to_owned(),
            ..NewPersonaForm::default()
        }
    }
}

pub async fn list(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<ListQuery>,
) -> Response {
    let first = q.revoked.map(|name| {
        notice(
            "ok",
            &c.i18n
                .text(s.lang, "personas-revoked-done", &[("name", name.into())]),
        )
    });
    render(&c, &s, StatusCode::OK, first, &NewPersonaForm::default()).await
}

async fn render(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    message: Option<Markup>,
    form: &NewPersonaForm,
) -> Response {
    let v = View::signed(c, s, "/personas");
    let personas = match c.hub.list_personas().await {
        Ok(p) => p,
        Err(e) => return failure(c, s.lang, &e),
    };
    let connections = match c.hub.list_connections().await {
        Ok(cs) => cs,
        Err(e) => return failure(c, s.lang, &e),
    };
    // The offers to pick a restriction from, per school (only for the form).
    let offers = if s.is_owner() {
        futures::future::join_all(
            connections
                .iter()
                .map(|conn| offers_of(c, s.lang, &conn.name)),
        )
        .await
    } else {
        Vec::new()
    };
    let schools: Vec<(&str, &Result<Vec<Offer>, String>)> = connections
        .iter()
        .map(|conn| conn.name.as_str())
        .zip(&offers)
        .collect();
    let mut names = std::collections::BTreeMap::new();
    for (conn, list) in connections.iter().zip(&offers) {
        for o in list.iter().flatten() {
            names.insert((conn.name.as_str(), o.id.as_str()), o.name.as_str());
        }
    }
    v.page(
        status,
        &v.t("personas-title"),
        html! {
            @if let Some(m) = message { (m) }
            @if personas.is_empty() {
                (empty(&v.t(if s.is_owner() { "personas-empty" } else { "personas-empty-viewer" })))
            } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { (v.t("personas-name")) }
                            th scope="col" { (v.t("personas-connection")) }
                            th scope="col" { (v.t("personas-scopes")) }
                            th scope="col" { (v.t("personas-limit")) }
                            th scope="col" { (v.t("personas-token")) }
                            th scope="col" { (v.t("personas-created")) }
                            th scope="col" { (v.t("personas-status")) }
                            @if s.is_owner() { th scope="col" { (v.t("personas-actions")) } }
                        } }
                        tbody {
                            @for p in &personas {
                                tr {
                                    td { a href={ "/personas/" (urlencode(&p.name)) } { (p.name) } }
                                    td { (p.connection) }
                                    td {
                                        (p.scopes.join(", "))
                                        @if let Some(o) = &p.offer_ids { br; small { (v.t("personas-offers-only")) " " (offer_list(o, |id| names.get(&(p.connection.as_str(), id)).map(|n| n.to_string()))) } }
                                    }
                                    td { @match p.calls_per_minute { Some(n) => (n), None => (v.t("personas-unlimited")) } }
                                    td { code { (p.token_prefix) "…" } }
                                    td { (v.when(p.created_at)) }
                                    td {
                                        @if p.revoked_at.is_some() { (badge("failed", &v.t("personas-revoked"))) }
                                        @else { (badge("ok", &v.t("personas-active"))) }
                                    }
                                    @if s.is_owner() {
                                        td.actions {
                                            @if p.revoked_at.is_none() {
                                                a.button.secondary href={ "/personas/" (urlencode(&p.name)) "/edit" } { (v.t("personas-edit")) }
                                                a.button.secondary href={ "/personas/" (urlencode(&p.name)) "/rotate" } { (v.t("personas-rotate")) }
                                                a.button.danger href={ "/personas/" (urlencode(&p.name)) "/revoke" } { (v.t("personas-revoke")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if s.is_owner() {
                h2 #new { (v.t("personas-new")) }
                form.card method="post" action="/personas" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="name" { (v.t("personas-name")) }
                    input #name type="text" name="name" value=(form.name) required maxlength="64";
                    label for="description" { (v.t("personas-description")) }
                    input #description type="text" name="description" value=(form.description);
                    label for="connection" { (v.t("personas-connection")) }
                    select #connection name="connection" {
                        @for conn in &connections {
                            option value=(conn.name) selected[form.connection == conn.name] { (conn.name) }
                        }
                    }
                    (persona_fields(&v, form, &schools))
                    button type="submit" { (v.t("personas-create")) }
                }
            } @else {
                (notice("warning", &v.t("personas-viewer-note")))
            }
        },
    )
}

/// What a persona may do, as form fields (shared by the create and the change form):
/// tool classes and single tools, chat confirmations, the offer restriction picked by
/// name from `schools` (a connection's offers, or why they could not be read), and the
/// per-minute limit.
fn persona_fields(
    v: &View<'_>,
    form: &NewPersonaForm,
    schools: &[(&str, &Result<Vec<Offer>, String>)],
) -> Markup {
    let unlisted = schools.iter().any(|(_, o)| o.is_err()) || !form.offers.trim().is_empty();
    let fresh = !form.sent() && form.confirm_set.is_empty();
    html! {
        fieldset {
            legend { (v.t("personas-scope-classes")) }
            @for class in CLASSES {
                @let id = format!("scope-{class}");
                // A new form starts with read; one sent back shows exactly what was sent.
                @let checked = form.scope.iter().any(|x| x == class) || (fresh && form.scope.is_empty() && class == "read");
                div.check {
                    input id=(id) type="checkbox" name="scope" value=(class) checked[checked];
                    label for=(id) { (v.t(&format!("scope-{class}"))) }
                }
            }
        }
        details open[form.scope.iter().any(|x| !CLASSES.contains(&x.as_str()) && x != "connector")] {
            summary { (v.t("personas-scope-tools")) }
            fieldset {
                legend { (v.t("personas-scope-tools")) }
                @for tool in v.console.hub.catalogue().descriptors() {
                    @let id = format!("tool-{}", tool.name);
                    div.check {
                        input id=(id) type="checkbox" name="scope" value=(tool.name) checked[form.scope.iter().any(|x| x == tool.name)];
                        label for=(id) { code { (tool.name) } " — " (tool_title(v, tool)) }
                    }
                }
                div.check {
                    input #scope-connector type="checkbox" name="scope" value="connector" checked[form.scope.iter().any(|x| x == "connector")];
                    label for="scope-connector" { (v.t("personas-connector")) }
                }
            }
        }
        fieldset {
            legend { (v.t("personas-confirm")) }
            input type="hidden" name="confirm_set" value="1";
            @for class in ["write", "destructive"] {
                @let id = format!("confirm-{class}");
                @let checked = form.confirm.iter().any(|x| x == class) || (fresh && class == "destructive");
                div.check {
                    input id=(id) type="checkbox" name="confirm" value=(class) checked[checked];
                    label for=(id) { (v.t(&format!("personas-confirm-{class}"))) }
                }
            }
        }
        label for="offer" { (v.t("personas-offers")) }
        select #offer name="offer" multiple size="6" aria-describedby="offers-hint" {
            @for (conn, list) in schools {
                @match list {
                    Ok(list) => optgroup label=(conn) {
                        @for o in list {
                            @let value = format!("{conn}/{}", o.id);
                            option value=(value) selected[form.offer.contains(&value)] { (o.name) " (" (o.id) ")" }
                        }
                    },
                    Err(e) => optgroup label={ (conn) ": " (e) } disabled {},
                }
            }
        }
        small #offers-hint { (v.t("personas-offers-hint")) }
        @if unlisted {
            label for="offers" { (v.t("personas-offer-ids")) }
            input #offers type="text" name="offers" value=(form.offers);
        }
        label for="per_minute" { (v.t("personas-limit")) }
        input #per_minute type="number" name="per_minute" min="1" max="100000" value=(form.per_minute) inputmode="numeric" aria-describedby="per-minute-hint";
        small #per-minute-hint { (v.t("personas-limit-hint")) }
    }
}

/// At least one class or tool must be ticked (`connector` alone reaches nothing).
fn some_scope(c: &Console, lang: Lang, f: &NewPersonaForm) -> Result<(), String> {
    if f.scope.iter().any(|x| x != "connector") {
        Ok(())
    } else {
        Err(c.i18n.text(lang, "personas-scope-empty", &[]))
    }
}

/// The per-minute limit of the form: empty for none.
fn per_minute(c: &Console, lang: Lang, text: &str) -> Result<Option<u32>, String> {
    match text.trim() {
        "" => Ok(None),
        n => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(c
                .i18n
                .text(lang, "personas-per-minute-invalid", &[("value", n.into())])),
        },
    }
}

/// A tool's title in the page's language: the message `tool-title-NAME`, else the
/// catalogue's (English) title.
fn tool_title(v: &View<'_>, tool: &memberspot_tools::ToolDescriptor) -> String {
    v.console
        .i18n
        .lookup(v.lang, &format!("tool-title-{}", tool.name), &[])
        .unwrap_or_else(|| tool.title.to_owned())
}

/// Offer ids as "Name (id)" where the name is known.
fn offer_list(ids: &[String], name: impl Fn(&str) -> Option<String>) -> String {
    ids.iter()
        .map(|id| match name(id) {
            Some(n) => format!("{n} ({id})"),
            None => id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long the personas page waits for a school's offers before it offers the ids field.
const OFFERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A school's offers for the restriction picker (a configuration read, not audited), or
/// why they could not be read.
async fn offers_of(c: &Console, lang: Lang, connection: &str) -> Result<Vec<Offer>, String> {
    match tokio::time::timeout(OFFERS_WAIT, c.hub.offers_of(connection)).await {
        Ok(Ok(list)) => Ok(list),
        Ok(Err(e)) => Err(crate::auth::error_text(c, lang, &e)),
        Err(_) => Err(c.i18n.text(
            lang,
            "personas-offers-timeout",
            &[("seconds", OFFERS_WAIT.as_secs().to_string().into())],
        )),
    }
}

/// The offer restriction of the form: the offers picked by name (they must belong to the
/// persona's connection) and any ids typed by hand (comma- or space-separated). None
/// means no restriction; the hub checks the ids against the school.
fn offer_ids(c: &Console, lang: Lang, f: &NewPersonaForm) -> Result<Option<Vec<String>>, String> {
    let mut ids: Vec<String> = Vec::new();
    for picked in &f.offer {
        let Some((conn, id)) = picked.split_once('/') else {
            return Err(c.i18n.text(
                lang,
                "personas-offer-malformed",
                &[("value", picked.as_str().into())],
            ));
        };
        if conn != f.connection {
            return Err(c.i18n.text(
                lang,
                "personas-offer-other-connection",
                &[
                    ("offer", id.into()),
                    ("connection", conn.into()),
                    ("acts_on", f.connection.as_str().into()),
                ],
            ));
        }
        ids.push(id.to_owned());
    }
    ids.extend(
        f.offers
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
    Ok((!ids.is_empty()).then_some(ids))
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The token page, shown once after creating a persona or rotating its token.
fn token_page(c: &Console, s: &Signed, issued: &IssuedToken) -> Response {
    let v = View::signed(c, s, "/personas");
    let name = issued.persona.name.clone();
    v.page(
        StatusCode::OK,
        &v.ta("personas-token-title", &[("name", name.into())]),
        html! {
            (notice("warning", &v.t("personas-token-once")))
            div.card {
                (copy_field(&v, "token", &v.t("personas-token-label"), issued.token.expose_secret(), false))
            }
            p { a href="/personas" { (v.t("back")) } }
        },
    )
}

pub async fn create(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<NewPersonaForm>,
) -> Response {
    let parsed = some_scope(&c, s.lang, &f)
        .and_then(|()| per_minute(&c, s.lang, &f.per_minute))
        .and_then(|n| Ok((n, offer_ids(&c, s.lang, &f)?)));
    let (per_minute, offers) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            let message = Some(notice("failed", &msg));
            return render(&c, &s, StatusCode::BAD_REQUEST, message, &f).await;
        }
    };
    let spec = PersonaSpec {
        name: f.name.trim().to_owned(),
        description: f.description.trim().to_owned(),
        connection: Some(f.connection.clone()).filter(|c| !c.is_empty()),
        scopes: f.scopes(),
        offer_ids: offers,
        calls_per_minute: per_minute,
    };
    match c.hub.acting_as(actor(&s)).create_persona(spec).await {
        Ok(issued) => token_page(&c, &s, &issued),
        Err(
            e @ (HubError::Invalid(_)
            | HubError::NotFound(_)
            | HubError::Store(
                StoreError::Conflict(_) | StoreError::Invalid(_) | StoreError::NotFound(_),
            )),
        ) => {
            let status = match &e {
                HubError::NotFound(_) => StatusCode::NOT_FOUND,
                HubError::Store(memberspot_hub::store::StoreError::Conflict(_)) => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let text = crate::auth::name_refusal(&c, s.lang, f.name.trim(), &e);
            render(&c, &s, status, Some(notice("failed", &text)), &f).await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

pub async fn confirm_revoke(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    confirm(&c, &s, &name, "revoke").await
}

/// The confirmation page of `action` (`revoke`, `rotate`) on persona `name`: its
/// `personas-{action}-title`, `-explain` and `-confirm` messages, and a form posting to
/// `/personas/{name}/{action}`.
async fn confirm(c: &Console, s: &Signed, name: &str, action: &str) -> Response {
    if let Err(e) = c.hub.persona_any(name).await {
        return failure(c, s.lang, &e);
    }
    let v = View::signed(c, s, "/personas");
    let who = [("name", name.to_owned().into())];
    v.page(
        StatusCode::OK,
        &v.ta(&format!("personas-{action}-title"), &who),
        html! {
            p { (v.t(&format!("personas-{action}-explain"))) }
            form method="post" action={ "/personas/" (urlencode(name)) "/" (action) } {
                input type="hidden" name="csrf" value=(s.csrf);
                button.danger type="submit" { (v.ta(&format!("personas-{action}-confirm"), &who)) }
            }
            p { a href="/personas" { (v.t("back")) } }
        },
    )
}

pub async fn revoke(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    match c.hub.acting_as(actor(&s)).revoke_persona(&name).await {
        Ok(_) => Redirect::to(&format!("/personas?revoked={}", urlencode(&name))).into_response(),
        Err(e) => failure(&c, s.lang, &e),
    }
}

/// A new token ends the current one at once, and the agent that holds it stops working
/// until it gets the new one: asked first, like a revocation.
pub async fn confirm_rotate(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    confirm(&c, &s, &name, "rotate").await
}

pub async fn rotate(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    match c.hub.acting_as(actor(&s)).rotate_persona_token(&name).await {
        Ok(issued) => token_page(&c, &s, &issued),
        Err(e) => failure(&c, s.lang, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    changed: Option<String>,
}

/// One persona: its settings and its 20 most recent calls.
pub async fn show(
    State(c): State<Arc<Console>>,
    s: Signed,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let p = match c.hub.persona_any(&name).await {
        Ok(p) => p,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let filter = memberspot_hub::store::AuditFilter {
        persona: Some(p.name.clone()),
        limit: Some(20),
        newest_first: true,
        ..memberspot_hub::store::AuditFilter::default()
    };
    let calls = match c.hub.audit(&filter).await {
        Ok(r) => r,
        Err(e) => return failure(&c, s.lang, &e),
    };
    // Names for the offer restriction; ids alone when the school does not answer.
    let offers = match &p.offer_ids {
        Some(_) => offers_of(&c, s.lang, &p.connection)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let signed_in_apps = match c.hub.list_oauth_grants(Some(&p.name)).await {
        Ok(g) => g,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let v = View::signed(&c, &s, "/personas");
    v.page(
        StatusCode::OK,
        &p.name,
        html! {
            @if q.changed.is_some() { (notice("ok", &v.t("personas-changed"))) }
            dl.record {
                div { dt { (v.t("personas-status")) } dd {
                    @if p.revoked_at.is_some() { (badge("failed", &v.t("personas-revoked"))) } @else { (badge("ok", &v.t("personas-active"))) }
                } }
                @if !p.description.is_empty() { div { dt { (v.t("personas-description")) } dd { (p.description) } } }
                div { dt { (v.t("personas-connection")) } dd { (p.connection) } }
                div { dt { (v.t("personas-scopes")) } dd { (p.scopes.join(", ")) } }
                div { dt { (v.t("personas-offers")) } dd { @match &p.offer_ids {
                    Some(o) => (offer_list(o, |id| offers.iter().find(|x| x.id == id).map(|x| x.name.clone()))),
                    None => "—",
                } } }
                div { dt { (v.t("personas-limit")) } dd { @match p.calls_per_minute { Some(n) => (n), None => (v.t("personas-unlimited")) } } }
                div { dt { (v.t("personas-token")) } dd { code { (p.token_prefix) "…" } } }
                div { dt { (v.t("personas-created")) } dd { (v.when(p.created_at)) } }
                div { dt { (v.t("personas-apps")) } dd {
                    @let active: Vec<_> = signed_in_apps.iter().filter(|g| g.revoked_at.is_none()).collect();
                    @if active.is_empty() { "—" } @else {
                        @for (i, g) in active.iter().enumerate() {
                            @if i > 0 { ", " }
                            (g.client_name)
                        }
                    }
                    " · " a href="/oauth" { (v.t("nav-apps")) }
                } }
            }
            h2 { (v.t("personas-recent")) }
            @if calls.is_empty() {
                (empty(&v.t("personas-no-calls")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (v.t("audit-time")) }
                        th scope="col" { (v.t("audit-surface")) }
                        th scope="col" { (v.t("audit-tool")) }
                        th scope="col" { (v.t("audit-outcome")) }
                    } }
                    tbody { @for r in &calls {
                        tr {
                            td { a href={ "/audit/" (r.seq) } { (r.seq) } }
                            td { (v.when(r.at)) }
                            td { (v.label("surface", r.surface.as_str())) }
                            td { code { (r.tool) } }
                            td { (badge(crate::audit::outcome_kind(r.outcome), &v.label("outcome", r.outcome.as_str()))) }
                        }
                    } }
                } }
            }
            @if s.is_owner() && p.revoked_at.is_none() {
                p { a.button.secondary href={ "/personas/" (urlencode(&p.name)) "/edit" } { (v.t("personas-edit")) } }
            }
            p { a href={ "/audit?persona=" (urlencode(&p.name)) } { (v.t("personas-all-calls")) } " · " a href="/personas" { (v.t("back")) } }
        },
    )
}

/// The form that changes what an active persona may do (owners).
pub async fn edit_page(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    let p = match c.hub.persona_any(&name).await {
        Ok(p) => p,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let offers = offers_of(&c, s.lang, &p.connection).await;
    let form = NewPersonaForm::of(&p, offers.as_deref().unwrap_or_default());
    edit_form(&c, &s, StatusCode::OK, &p, &offers, &form, None)
}

fn edit_form(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    p: &memberspot_hub::store::Persona,
    offers: &Result<Vec<Offer>, String>,
    form: &NewPersonaForm,
    message: Option<Markup>,
) -> Response {
    let v = View::signed(c, s, "/personas");
    let who = [("name", p.name.clone().into())];
    if p.revoked_at.is_some() {
        return v.message(
            StatusCode::CONFLICT,
            "refused-title",
            &v.ta("personas-edit-revoked", &who),
        );
    }
    v.page(
        status,
        &v.ta("personas-edit-title", &who),
        html! {
            @if let Some(m) = message { (m) }
            p { (v.t("personas-edit-explain")) }
            form.card method="post" action={ "/personas/" (urlencode(&p.name)) "/edit" } {
                input type="hidden" name="csrf" value=(s.csrf);
                p { strong { (v.t("personas-connection")) } ": " (p.connection) }
                (persona_fields(&v, form, &[(p.connection.as_str(), offers)]))
                button type="submit" { (v.t("personas-save")) }
            }
            p { a href={ "/personas/" (urlencode(&p.name)) } { (v.t("back")) } }
        },
    )
}

/// Saves what a persona may do: all of it, as the form shows it (an empty limit is no
/// limit, no offer picked is every offer). The token stays the same.
pub async fn edit(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, mut f): Change<NewPersonaForm>,
) -> Response {
    let p = match c.hub.persona_any(&name).await {
        Ok(p) => p,
        Err(e) => return failure(&c, s.lang, &e),
    };
    f.connection = p.connection.clone();
    f.name = p.name.clone();
    let parsed = some_scope(&c, s.lang, &f)
        .and_then(|()| per_minute(&c, s.lang, &f.per_minute))
        .and_then(|n| Ok((n, offer_ids(&c, s.lang, &f)?)));

    let (calls_per_minute, offer_ids) = match parsed {
        Ok(x) => x,
        Err(text) => return edit_refused(&c, &s, StatusCode::BAD_REQUEST, &text, &f, &p).await,
    };
    let change = memberspot_hub::admin::PersonaChange {
        scopes: f.scopes(),
        offer_ids,
        calls_per_minute,
    };
    match c.hub.acting_as(actor(&s)).edit_persona(&name, change).await {
        Ok(p) => {
            Redirect::to(&format!("/personas/{}?changed=1", urlencode(&p.name))).into_response()
        }
        Err(
            e @ (HubError::Invalid(_)
            | HubError::Store(StoreError::Conflict(_) | StoreError::Invalid(_))),
        ) => {
            let status = match &e {
                HubError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            let text = crate::auth::error_text(&c, s.lang, &e);
            edit_refused(&c, &s, status, &text, &f, &p).await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

/// The change form again, with what was sent and why it was refused.
async fn edit_refused(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    text: &str,
    f: &NewPersonaForm,
    p: &memberspot_hub::store::Persona,
) -> Response {
    let offers = offers_of(c, s.lang, &p.connection).await;
    edit_form(c, s, status, p, &offers, f, Some(notice("failed", text)))
}

crate::form::csrf_forms!(NewPersonaForm);
