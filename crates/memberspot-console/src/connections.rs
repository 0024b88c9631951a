//! Connections (schools): the list with the personas using each, adding one (the API key
//! entered once, never shown again), testing, a new rate limit, a new key, removing one
//! (after a confirmation page that says what uses it). Changes go through
//! [`memberspot_hub::admin::ActingAdmin`] as the signed-in user.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use memberspot_hub::HubError;
use memberspot_hub::store::ConnectionUpdate;
use memberspot_hub::store::StoreError;
use secrecy::SecretString;
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure};
use crate::form::{Change, Owner};
use crate::i18n::Lang;
use crate::layout::{View, empty, notice};
use crate::personas::{actor, urlencode};
use crate::session::Signed;

const DEFAULT_URL: &str = "https://api.memberspot.de/v1";

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    added: Option<String>,
    #[serde(default)]
    changed: Option<String>,
    #[serde(default)]
    removed: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NewConnectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    api_key: SecretString,
    #[serde(default)]
    rate_limit: String,
}

/// A school's API address: `http(s)://host…`; an error names the field.
fn base_url(c: &Console, lang: Lang, v: &str) -> Result<(), String> {
    let v = v.trim();
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(c.i18n.text(
            lang,
            "connections-url-invalid",
            &[("value", v.to_owned().into())],
        )),
    }
}

/// An API key must be given (it is never shown again, so an empty one cannot be fixed by
/// looking); an error names the field.
fn key_given(c: &Console, lang: Lang, key: &SecretString) -> Result<(), String> {
    use secrecy::ExposeSecret;
    if key.expose_secret().trim().is_empty() {
        Err(c.i18n.text(lang, "connections-key-empty", &[]))
    } else {
        Ok(())
    }
}

/// A rate limit in requests per second; an error names the field.
fn rate(c: &Console, lang: Lang, v: &str) -> Result<f64, String> {
    let v = v.trim().replace(',', ".");
    match v.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(c
            .i18n
            .text(lang, "connections-rate-invalid", &[("value", v.into())])),
    }
}

pub async fn list(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<ListQuery>,
) -> Response {
    let done = [
        ("connections-added", q.added),
        ("connections-changed", q.changed),
        ("connections-removed", q.removed),
    ];
    let message = done.into_iter().find_map(|(id, name)| {
        let name = name?;
        Some(notice(
            "ok",
            &c.i18n.text(s.lang, id, &[("name", name.into())]),
        ))
    });
    render(
        &c,
        &s,
        StatusCode::OK,
        message,
        &NewConnectionForm::default(),
    )
    .await
}

async fn render(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    message: Option<Markup>,
    form: &NewConnectionForm,
) -> Response {
    let v = View::signed(c, s, "/connections");
    let (connections, personas) =
        match (c.hub.list_connections().await, c.hub.list_personas().await) {
            (Ok(cs), Ok(ps)) => (cs, ps),
            (Err(e), _) | (_, Err(e)) => return failure(c, s.lang, &e),
        };
    let base_url = if form.base_url.is_empty() {
        DEFAULT_URL
    } else {
        &form.base_url
    };
    let rate_limit = if form.rate_limit.is_empty() {
        "4"
    } else {
        &form.rate_limit
    };
    v.page(
        status,
        &v.t("connections-title"),
        html! {
            @if let Some(m) = message { (m) }
            @if connections.is_empty() {
                (empty(&v.t("connections-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("personas-name")) }
                        th scope="col" { (v.t("connections-url")) }
                        th scope="col" { (v.t("connections-key")) }
                        th scope="col" { (v.t("connections-rate")) }
                        th scope="col" { (v.t("connections-used-by")) }
                        th scope="col" { (v.t("connections-used-by-files")) }
                        @if s.is_owner() { th scope="col" { (v.t("personas-actions")) } }
                    } }
                    tbody { @for conn in &connections {
                        @let users: Vec<&str> = personas.iter()
                            .filter(|p| p.connection == conn.name && p.revoked_at.is_none())
                            .map(|p| p.name.as_str()).collect();
                        tr {
                            td { (conn.name) }
                            td { code { (conn.base_url) } }
                            td { code { (conn.key_hint) } }
                            td.num { (v.decimal(conn.rate_limit)) }
                            td { @if users.is_empty() { "—" } @else { (users.join(", ")) } }
                            td {
                                @let uses = file_users(c, &v, &conn.name);
                                @if uses.is_empty() { "—" } @else { @for u in &uses { (u) br; } }
                            }
                            @if s.is_owner() {
                                td.actions {
                                    form method="post" action={ "/connections/" (urlencode(&conn.name)) "/test" } {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        button.secondary type="submit" { (v.t("connections-test")) }
                                    }
                                    a.button.secondary href={ "/connections/" (urlencode(&conn.name)) } { (v.t("connections-edit")) }
                                }
                            }
                        }
                    } }
                } }
            }
            @if c.events.get().is_none() && c.flows.get().is_none() {
                p { small { (v.t("connections-files-off")) } }
            }
            @if s.is_owner() {
                h2 { (v.t("connections-new")) }
                form.card method="post" action="/connections" autocomplete="off" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="name" { (v.t("personas-name")) }
                    input #name type="text" name="name" value=(form.name) required maxlength="64";
                    label for="base_url" { (v.t("connections-url")) }
                    input #base_url type="text" name="base_url" value=(base_url) required inputmode="url";
                    label for="api_key" { (v.t("connections-key-new")) }
                    input #api_key type="password" name="api_key" required autocomplete="off" aria-describedby="api-key-hint";
                    small #api-key-hint { (v.t("connections-key-hint")) }
                    label for="rate_limit" { (v.t("connections-rate")) }
                    input #rate_limit type="text" name="rate_limit" value=(rate_limit) inputmode="decimal";
                    button type="submit" { (v.t("connections-add")) }
                }
            }
        },
    )
}

/// What in the rules file (sources and their rules) and the flows file (the daily summary,
/// flows, syncs, exports) acts on `connection`, as the running services decided it.
fn file_users(c: &Console, v: &View<'_>, connection: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(events) = c.events.get() {
        let config = events.config();
        for src in config
            .sources
            .values()
            .filter(|s| s.connection() == connection)
        {
            let rules = config.rules.iter().filter(|r| r.source == src.name).count();
            out.push(v.ta(
                "connections-use-source",
                &[("name", src.name.clone().into()), ("rules", rules.into())],
            ));
        }
        if config
            .poller
            .as_ref()
            .is_some_and(|p| p.connection.as_deref() == Some(connection))
        {
            out.push(v.t("connections-use-poller"));
        }
    }
    if let Some(flows) = c.flows.get() {
        let config = flows.config();
        let acts_on = |named: Option<&str>| {
            named.or(config.default_connection.as_deref()) == Some(connection)
        };
        if config
            .digest
            .as_ref()
            .is_some_and(|d| d.enabled && acts_on(d.connection.as_deref()))
        {
            out.push(v.t("connections-use-digest"));
        }
        let mut named = |id: &str, name: &str| {
            out.push(v.ta(id, &[("name", name.to_owned().into())]));
        };
        for f in config
            .flows
            .iter()
            .filter(|f| acts_on(f.connection.as_deref()))
        {
            named("connections-use-flow", &f.name);
        }
        for sy in config
            .syncs
            .iter()
            .filter(|s| acts_on(s.connection.as_deref()))
        {
            named("connections-use-sync", &sy.name);
        }
        for ex in config
            .exports
            .iter()
            .filter(|e| acts_on(e.connection.as_deref()))
        {
            named("connections-use-export", &ex.name);
        }
    }
    out
}

pub async fn add(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<NewConnectionForm>,
) -> Response {
    let again = |status, text: String| {
        let c = c.clone();
        let s = &s;
        let f = NewConnectionForm {
            csrf: String::new(),
            name: f.name.clone(),
            base_url: f.base_url.clone(),
            api_key: SecretString::default(),
            rate_limit: f.rate_limit.clone(),
        };
        async move { render(&c, s, status, Some(notice("failed", &text)), &f).await }
    };
    let limit = match rate(
        &c,
        s.lang,
        if f.rate_limit.trim().is_empty() {
            "4"
        } else {
            &f.rate_limit
        },
    )
    .and_then(|r| {
        base_url(&c, s.lang, &f.base_url)?;
        key_given(&c, s.lang, &f.api_key)?;
        Ok(r)
    }) {
        Ok(r) => r,
        Err(m) => return again(StatusCode::BAD_REQUEST, m).await,
    };
    let name = f.name.trim().to_owned();
    match c
        .hub
        .acting_as(actor(&s))
        .add_connection(&name, f.base_url.trim(), &f.api_key, limit)
        .await
    {
        Ok(conn) => {
            Redirect::to(&format!("/connections?added={}", urlencode(&conn.name))).into_response()
        }
        Err(
            e @ (HubError::Invalid(_)
            | HubError::Store(
                StoreError::Conflict(_) | StoreError::Invalid(_) | StoreError::NotFound(_),
            )),
        ) => {
            let text = crate::auth::name_refusal(&c, s.lang, &name, &e);
            again(StatusCode::BAD_REQUEST, text).await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

pub async fn test(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    let message = match c.hub.acting_as(actor(&s)).test_connection(&name).await {
        Ok(()) => notice(
            "ok",
            &c.i18n.text(
                s.lang,
                "connections-test-ok",
                &[("name", name.clone().into())],
            ),
        ),
        Err(HubError::NotFound(m)) => notice("failed", &m),
        Err(e) => notice(
            "failed",
            &c.i18n.text(
                s.lang,
                "connections-test-failed",
                &[
                    ("name", name.clone().into()),
                    ("error", crate::auth::error_text(&c, s.lang, &e).into()),
                ],
            ),
        ),
    };
    render(
        &c,
        &s,
        StatusCode::OK,
        Some(message),
        &NewConnectionForm::default(),
    )
    .await
}

pub async fn edit_page(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    edit(&c, &s, &name, StatusCode::OK, None, None).await
}

/// The change page of connection `name`; `typed_rate`: a refused rate limit to show again
/// as it was typed.
async fn edit(
    c: &Console,
    s: &Signed,
    name: &str,
    status: StatusCode,
    message: Option<Markup>,
    typed_rate: Option<&str>,
) -> Response {
    let conn = match c.hub.connection(name).await {
        Ok(conn) => conn,
        Err(e) => return failure(c, s.lang, &e),
    };
    let v = View::signed(c, s, "/connections");
    v.page(
        status,
        &v.ta("connections-edit-title", &[("name", name.to_owned().into())]),
        html! {
            @if let Some(m) = message { (m) }
            form.card method="post" action={ "/connections/" (urlencode(name)) "/rate" } {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="rate_limit" { (v.t("connections-rate")) }
                input #rate_limit type="text" name="rate_limit" value=(typed_rate.map(str::to_owned).unwrap_or_else(|| v.decimal(conn.rate_limit))) inputmode="decimal" required;
                button type="submit" { (v.t("connections-save-rate")) }
            }
            h2 { (v.t("connections-rotate")) }
            form.card method="post" action={ "/connections/" (urlencode(name)) "/key" } autocomplete="off" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="api_key" { (v.t("connections-key-new")) }
                input #api_key type="password" name="api_key" required autocomplete="off" aria-describedby="api-key-hint";
                small #api-key-hint { (v.t("connections-key-hint")) }
                button type="submit" { (v.t("connections-rotate")) }
            }
            h2 { (v.t("connections-remove")) }
            p {
                (v.t("connections-remove-hint")) " "
                a.button.danger href={ "/connections/" (urlencode(name)) "/remove" } { (v.t("connections-remove")) }
            }
            p { a href="/connections" { (v.t("back")) } }
        },
    )
}

#[derive(Deserialize, Default)]
pub struct RateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rate_limit: String,
}

pub async fn set_rate(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, f): Change<RateForm>,
) -> Response {
    let limit = match rate(&c, s.lang, &f.rate_limit) {
        Ok(r) => r,
        Err(m) => {
            return edit(
                &c,
                &s,
                &name,
                StatusCode::BAD_REQUEST,
                Some(notice("failed", &m)),
                Some(&f.rate_limit),
            )
            .await;
        }
    };
    let change = ConnectionUpdate {
        rate_limit: Some(limit),
        ..ConnectionUpdate::default()
    };
    match c
        .hub
        .acting_as(actor(&s))
        .update_connection(&name, change)
        .await
    {
        Ok(_) => {
            Redirect::to(&format!("/connections?changed={}", urlencode(&name))).into_response()
        }
        Err(e @ HubError::Invalid(_)) => {
            let m = e.to_string();
            edit(
                &c,
                &s,
                &name,
                StatusCode::BAD_REQUEST,
                Some(notice("failed", &m)),
                Some(&f.rate_limit),
            )
            .await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    api_key: SecretString,
}

pub async fn rotate_key(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, f): Change<KeyForm>,
) -> Response {
    if let Err(m) = key_given(&c, s.lang, &f.api_key) {
        let message = Some(notice("failed", &m));
        return edit(&c, &s, &name, StatusCode::BAD_REQUEST, message, None).await;
    }
    match c
        .hub
        .acting_as(actor(&s))
        .rotate_connection_key(&name, &f.api_key)
        .await
    {
        Ok(()) => {
            Redirect::to(&format!("/connections?changed={}", urlencode(&name))).into_response()
        }
        Err(e @ HubError::Invalid(_)) => {
            let m = e.to_string();
            edit(
                &c,
                &s,
                &name,
                StatusCode::BAD_REQUEST,
                Some(notice("failed", &m)),
                None,
            )
            .await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

pub async fn confirm_remove(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    remove_page(&c, &s, &name, StatusCode::OK, None).await
}

/// What removing `name` means: the personas acting on it (they must be revoked first; the
/// hub refuses otherwise) and what the rules and flows files name it for (they fail until
/// they name another connection). No button while a persona is active.
async fn remove_page(
    c: &Console,
    s: &Signed,
    name: &str,
    status: StatusCode,
    message: Option<Markup>,
) -> Response {
    let (conn, personas) = match (c.hub.connection(name).await, c.hub.list_personas().await) {
        (Ok(conn), Ok(ps)) => (conn, ps),
        (Err(e), _) | (_, Err(e)) => return failure(c, s.lang, &e),
    };
    let active: Vec<&str> = personas
        .iter()
        .filter(|p| p.connection == conn.name && p.revoked_at.is_none())
        .map(|p| p.name.as_str())
        .collect();
    let v = View::signed(c, s, "/connections");
    let files = file_users(c, &v, &conn.name);
    let who = [("name", conn.name.clone().into())];
    v.page(
        status,
        &v.ta("connections-remove-title", &who),
        html! {
            @if let Some(m) = message { (m) }
            p { (v.t("connections-remove-explain")) }
            @if !files.is_empty() {
                (notice("warning", &v.t("connections-remove-files")))
                ul { @for f in &files { li { (f) } } }
            }
            @if active.is_empty() {
                form method="post" action={ "/connections/" (urlencode(&conn.name)) "/remove" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button.danger type="submit" { (v.ta("connections-remove-confirm", &who)) }
                }
            } @else {
                (notice("failed", &v.t("connections-remove-personas")))
                ul { @for p in &active { li { a href={ "/personas/" (urlencode(p)) } { (p) } } } }
            }
            p { a href={ "/connections/" (urlencode(&conn.name)) } { (v.t("back")) } }
        },
    )
}

pub async fn remove(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    match c.hub.acting_as(actor(&s)).remove_connection(&name).await {
        Ok(()) => {
            Redirect::to(&format!("/connections?removed={}", urlencode(&name))).into_response()
        }
        // A persona was created on it since the page was shown: the page says which.
        Err(HubError::Store(StoreError::Conflict(_))) => {
            let m = c.i18n.text(s.lang, "connections-remove-personas", &[]);
            remove_page(
                &c,
                &s,
                &name,
                StatusCode::CONFLICT,
                Some(notice("failed", &m)),
            )
            .await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

crate::form::csrf_forms!(NewConnectionForm, RateForm, KeyForm);
