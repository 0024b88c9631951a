//! Settings: the language, this hub (version, store, time zone, sessions) and, for owners,
//! the console users (add; remove after a confirmation page). User changes go through
//! [`memberspot_hub::admin::ActingAdmin`] as the signed-in user.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use memberspot_hub::HubError;
use memberspot_hub::console::ConsoleRole;
use memberspot_hub::store::Backend;
use memberspot_hub::store::StoreError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure};
use crate::form::{Change, Owner};
use crate::i18n::Lang;
use crate::layout::{View, badge, notice};
use crate::personas::{actor, urlencode};
use crate::session::Signed;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    added: Option<String>,
    #[serde(default)]
    removed: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    password2: SecretString,
}

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs() / 60
}

pub async fn page(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<PageQuery>,
) -> Response {
    let message = if let Some(n) = q.added {
        Some(notice(
            "ok",
            &c.i18n
                .text(s.lang, "settings-user-added", &[("name", n.into())]),
        ))
    } else {
        q.removed.map(|n| {
            notice(
                "ok",
                &c.i18n
                    .text(s.lang, "settings-user-removed", &[("name", n.into())]),
            )
        })
    };
    render(&c, &s, StatusCode::OK, message, &NewUserForm::default()).await
}

async fn render(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    message: Option<Markup>,
    form: &NewUserForm,
) -> Response {
    let v = View::signed(c, s, "/settings");
    let users = if s.is_owner() {
        match c.hub.list_console_users().await {
            Ok(u) => u,
            Err(e) => return failure(c, s.lang, &e),
        }
    } else {
        Vec::new()
    };
    let store = match c.hub.store_backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let settings = &c.settings;
    v.page(
        status,
        &v.t("settings-title"),
        html! {
            @if let Some(m) = message { (m) }
            h2 { (v.t("settings-language")) }
            p {
                @for lang in Lang::ALL {
                    @if lang == s.lang { strong { (lang_name(lang)) } }
                    @else { a href={ "/lang?to=" (lang.code()) "&back=/settings" } hreflang=(lang.code()) { (lang_name(lang)) } }
                    " "
                }
            }
            h2 { (v.t("settings-hub")) }
            dl.record {
                div { dt { (v.t("settings-version")) } dd { (env!("CARGO_PKG_VERSION")) } }
                div { dt { (v.t("settings-store")) } dd { (store) } }
                div { dt { (v.t("settings-data-dir")) } dd { (settings.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "—".into())) } }
                div { dt { (v.t("settings-time-zone")) } dd { (settings.time_zone.name()) } }
                div { dt { (v.t("settings-public-url")) } dd { (settings.public_url.as_ref().map(|u| u.to_string()).unwrap_or_else(|| "—".into())) } }
                div { dt { (v.t("settings-sessions")) } dd {
                    (v.ta("settings-sessions-value", &[
                        ("idle", minutes(settings.idle_timeout).into()),
                        ("absolute", (minutes(settings.absolute_timeout) / 60).into()),
                    ]))
                } }
            }
            @if s.is_owner() {
                h2 { (v.t("settings-users")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("personas-name")) }
                        th scope="col" { (v.t("settings-role")) }
                        th scope="col" { (v.t("personas-created")) }
                        th scope="col" { (v.t("personas-actions")) }
                    } }
                    tbody { @for u in &users {
                        tr {
                            td { (u.name) }
                            td { (badge(if u.role == ConsoleRole::Owner { "ok" } else { "warning" }, &v.t(&format!("role-{}", u.role)))) }
                            td { (v.when(u.created_at)) }
                            td.actions {
                                @if u.name != s.name {
                                    a.button.danger href={ "/settings/users/" (urlencode(&u.name)) "/remove" } { (v.t("settings-remove")) }
                                }
                            }
                        }
                    } }
                } }
                h2 { (v.t("settings-add-user")) }
                form.card method="post" action="/settings/users" autocomplete="off" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="name" { (v.t("login-name")) }
                    input #name type="text" name="name" value=(form.name) required maxlength="64";
                    label for="role" { (v.t("settings-role")) }
                    select #role name="role" {
                        option value="viewer" selected[form.role != "owner"] { (v.t("role-viewer")) }
                        option value="owner" selected[form.role == "owner"] { (v.t("role-owner")) }
                    }
                    label for="password" { (v.t("login-password")) }
                    input #password type="password" name="password" autocomplete="new-password" required minlength="10" aria-describedby="password-hint";
                    small #password-hint { (v.t("password-hint")) }
                    label for="password2" { (v.t("setup-password-repeat")) }
                    input #password2 type="password" name="password2" autocomplete="new-password" required minlength="10";
                    button type="submit" { (v.t("settings-add-user")) }
                }
            }
        },
    )
}

fn lang_name(l: Lang) -> &'static str {
    match l {
        Lang::En => "English",
        Lang::De => "Deutsch",
    }
}

pub async fn add_user(
    State(c): State<Arc<Console>>,
    Change(s, f): Change<NewUserForm>,
) -> Response {
    let keep = NewUserForm {
        name: f.name.clone(),
        role: f.role.clone(),
        ..NewUserForm::default()
    };
    let fail = |text: String| notice("failed", &text);
    let role = match f.role.as_str() {
        "owner" => ConsoleRole::Owner,
        "viewer" => ConsoleRole::Viewer,
        other => {
            let m = c.i18n.text(
                s.lang,
                "error-use-either",
                &[
                    ("field", "role".into()),
                    ("value", other.into()),
                    ("first", "owner".into()),
                    ("second", "viewer".into()),
                ],
            );
            return render(&c, &s, StatusCode::BAD_REQUEST, Some(fail(m)), &keep).await;
        }
    };
    if f.password.expose_secret() != f.password2.expose_secret() {
        let m = c.i18n.text(s.lang, "setup-mismatch", &[]);
        return render(&c, &s, StatusCode::BAD_REQUEST, Some(fail(m)), &keep).await;
    }
    let name = f.name.trim().to_owned();
    match c
        .hub
        .acting_as(actor(&s))
        .add_console_user(&name, &f.password, role)
        .await
    {
        Ok(u) => Redirect::to(&format!("/settings?added={}", urlencode(&u.name))).into_response(),
        Err(
            e @ (HubError::Invalid(_)
            | HubError::Store(
                StoreError::Conflict(_) | StoreError::Invalid(_) | StoreError::NotFound(_),
            )),
        ) => {
            // The hub refused (and recorded) it; its field errors in the page's language.
            let text = crate::auth::credentials_problem(&c, s.lang, &name, &f.password)
                .unwrap_or_else(|| e.to_string());
            render(&c, &s, StatusCode::BAD_REQUEST, Some(fail(text)), &keep).await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

pub async fn confirm_remove(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    let v = View::signed(&c, &s, "/settings");
    if name == s.name {
        return v.message(
            StatusCode::BAD_REQUEST,
            "refused-title",
            &v.t("settings-not-yourself"),
        );
    }
    v.page(
        StatusCode::OK,
        &v.ta("settings-remove-title", &[("name", name.clone().into())]),
        html! {
            p { (v.t("settings-remove-explain")) }
            form method="post" action={ "/settings/users/" (urlencode(&name)) "/remove" } {
                input type="hidden" name="csrf" value=(s.csrf);
                button.danger type="submit" { (v.ta("settings-remove-confirm", &[("name", name.clone().into())])) }
            }
            p { a href="/settings" { (v.t("back")) } }
        },
    )
}

pub async fn remove(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    // Removing yourself would also sign you out with no owner to undo it.
    if name == s.name {
        let v = View::signed(&c, &s, "/settings");
        return v.message(
            StatusCode::BAD_REQUEST,
            "refused-title",
            &v.t("settings-not-yourself"),
        );
    }
    match c.hub.acting_as(actor(&s)).remove_console_user(&name).await {
        Ok(()) => Redirect::to(&format!("/settings?removed={}", urlencode(&name))).into_response(),
        Err(e) => failure(&c, s.lang, &e),
    }
}

crate::form::csrf_forms!(NewUserForm);
