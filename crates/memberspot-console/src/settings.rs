//! Settings: the language, this hub (version, store, time zone, sessions), your own
//! password (viewers too: it is the one thing of theirs they change) and, for owners, the
//! console users (add, change a role, set a password, remove after a confirmation page).
//! Every change goes through [`memberspot_hub::admin::ActingAdmin`] as the signed-in user.

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
use crate::form::{Change, OwnChange, Owner};
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
    /// A user an owner just gave another role.
    #[serde(default)]
    changed: Option<String>,
    /// A user whose password an owner just set.
    #[serde(default)]
    reset: Option<String>,
    /// Set after you changed your own password.
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

/// A new password, and for your own the current one.
#[derive(Deserialize, Default)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: SecretString,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    password2: SecretString,
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
    let done = [
        ("settings-user-added", q.added),
        ("settings-user-removed", q.removed),
        ("settings-user-changed", q.changed),
        ("settings-user-password-reset", q.reset),
        ("settings-password-changed", q.password),
    ];
    let message = done.into_iter().find_map(|(id, name)| {
        let name = name?;
        Some(notice(
            "ok",
            &c.i18n.text(s.lang, id, &[("name", name.into())]),
        ))
    });
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
            h2 { (v.t("settings-you")) }
            p {
                (v.ta("settings-you-are", &[("name", s.name.clone().into()), ("role", v.t(&format!("role-{}", s.role)).into())]))
                " "
                a href="/settings/password" { (v.t("settings-password-own")) }
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
                    tbody { @for (i, u) in users.iter().enumerate() {
                        tr {
                            td { (u.name) }
                            td { (badge(if u.role == ConsoleRole::Owner { "ok" } else { "warning" }, &v.t(&format!("role-{}", u.role)))) }
                            td { (v.when(u.created_at)) }
                            td.actions {
                                @if u.name == s.name {
                                    a href="/settings/password" { (v.t("settings-password-own")) }
                                } @else {
                                    @let id = format!("role-of-{i}");
                                    form.inline method="post" action={ "/settings/users/" (urlencode(&u.name)) "/role" } {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        label.sr-only for=(id) { (v.ta("settings-role-of", &[("name", u.name.clone().into())])) }
                                        select id=(id) name="role" {
                                            option value="viewer" selected[u.role == ConsoleRole::Viewer] { (v.t("role-viewer")) }
                                            option value="owner" selected[u.role == ConsoleRole::Owner] { (v.t("role-owner")) }
                                        }
                                        " "
                                        button.secondary type="submit" { (v.t("settings-role-save")) }
                                    }
                                    a.button.secondary href={ "/settings/users/" (urlencode(&u.name)) "/password" } { (v.t("settings-password-set")) }
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
            let m = use_either_role(&c, &s, other);
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
                .unwrap_or_else(|| match &e {
                    HubError::Store(StoreError::Conflict(_)) => c.i18n.text(
                        s.lang,
                        "error-name-taken",
                        &[("value", name.clone().into())],
                    ),
                    _ => crate::auth::error_text(&c, s.lang, &e),
                });
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
        Err(HubError::Store(StoreError::Conflict(_))) => last_owner(&c, &s, name).await,
        Err(e) => failure(&c, s.lang, &e),
    }
}

/// An owner gives another user another role.
pub async fn set_role(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, f): Change<RoleForm>,
) -> Response {
    if name == s.name {
        return not_yourself(&c, &s, "settings-role-not-yourself");
    }
    let role = match f.role.as_str() {
        "owner" => ConsoleRole::Owner,
        "viewer" => ConsoleRole::Viewer,
        other => {
            let m = use_either_role(&c, &s, other);
            return render(
                &c,
                &s,
                StatusCode::BAD_REQUEST,
                Some(notice("failed", &m)),
                &NewUserForm::default(),
            )
            .await;
        }
    };
    match c
        .hub
        .acting_as(actor(&s))
        .set_console_role(&name, role)
        .await
    {
        Ok(u) => Redirect::to(&format!("/settings?changed={}", urlencode(&u.name))).into_response(),
        Err(HubError::Store(StoreError::Conflict(_))) => last_owner(&c, &s, name).await,
        Err(e) => failure(&c, s.lang, &e),
    }
}

/// The settings page saying that `name` is the last owner (the store refused the change).
async fn last_owner(c: &Console, s: &Signed, name: String) -> Response {
    let m = c
        .i18n
        .text(s.lang, "settings-last-owner", &[("name", name.into())]);
    let message = Some(notice("failed", &m));
    render(c, s, StatusCode::CONFLICT, message, &NewUserForm::default()).await
}

fn use_either_role(c: &Console, s: &Signed, other: &str) -> String {
    c.i18n.text(
        s.lang,
        "error-use-either",
        &[
            ("field", "role".into()),
            ("value", other.to_owned().into()),
            ("first", "owner".into()),
            ("second", "viewer".into()),
        ],
    )
}

fn not_yourself(c: &Console, s: &Signed, message: &str) -> Response {
    let v = View::signed(c, s, "/settings");
    v.message(StatusCode::BAD_REQUEST, "refused-title", &v.t(message))
}

/// The password form: your own (with the current password) when `of` is None, else
/// another user's (owners only).
fn password_page(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    of: Option<&str>,
    message: Option<Markup>,
) -> Response {
    let v = View::signed(c, s, "/settings");
    let (title, action) = match of {
        None => (
            v.t("settings-password-own-title"),
            "/settings/password".to_owned(),
        ),
        Some(name) => (
            v.ta(
                "settings-password-of-title",
                &[("name", name.to_owned().into())],
            ),
            format!("/settings/users/{}/password", urlencode(name)),
        ),
    };
    v.page(
        status,
        &title,
        html! {
            @if let Some(m) = message { (m) }
            p { (v.t(if of.is_some() { "settings-password-of-explain" } else { "settings-password-own-explain" })) }
            form.card method="post" action=(action) autocomplete="off" {
                input type="hidden" name="csrf" value=(s.csrf);
                @if of.is_none() {
                    label for="current" { (v.t("settings-password-current")) }
                    input #current type="password" name="current" autocomplete="current-password" required;
                }
                label for="password" { (v.t("settings-password-new")) }
                input #password type="password" name="password" autocomplete="new-password" required minlength="10" aria-describedby="password-hint";
                small #password-hint { (v.t("password-hint")) }
                label for="password2" { (v.t("setup-password-repeat")) }
                input #password2 type="password" name="password2" autocomplete="new-password" required minlength="10";
                button type="submit" { (v.t("settings-password-submit")) }
            }
            p { a href="/settings" { (v.t("back")) } }
        },
    )
}

/// The new password of `f`, or the page's words for what is wrong with it.
fn new_password<'f>(
    c: &Console,
    s: &Signed,
    name: &str,
    f: &'f PasswordForm,
) -> Result<&'f SecretString, String> {
    if f.password.expose_secret() != f.password2.expose_secret() {
        return Err(c.i18n.text(s.lang, "setup-mismatch", &[]));
    }
    match crate::auth::credentials_problem(c, s.lang, name, &f.password) {
        Some(problem) => Err(problem),
        None => Ok(&f.password),
    }
}

pub async fn own_password_page(State(c): State<Arc<Console>>, s: Signed) -> Response {
    password_page(&c, &s, StatusCode::OK, None, None)
}

/// You change your own password: the current one must be right. All your sessions end,
/// this one is opened again, so you stay signed in here only.
pub async fn change_own_password(
    State(c): State<Arc<Console>>,
    jar: axum_extra::extract::CookieJar,
    OwnChange(s, f): OwnChange<PasswordForm>,
) -> Response {
    let again =
        |status, text: String| password_page(&c, &s, status, None, Some(notice("failed", &text)));
    let new = match new_password(&c, &s, &s.name, &f) {
        Ok(p) => p,
        Err(text) => return again(StatusCode::BAD_REQUEST, text),
    };
    // A wrong current password counts as a failed sign-in for this name.
    if let Err(wait) = c.limits.failures_wait(&s.name) {
        let secs = wait.as_secs().max(1);
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            c.i18n
                .text(s.lang, "login-limited", &[("seconds", secs.into())]),
        );
    }
    match c
        .hub
        .acting_as(actor(&s))
        .change_own_console_password(&f.current, new)
        .await
    {
        Ok(()) => crate::auth::sign_in(&c, s.lang, jar, &s.name, "/settings?password=1").await,
        Err(HubError::Unauthenticated(_)) => {
            c.limits.failed(&s.name);
            again(
                StatusCode::UNAUTHORIZED,
                c.i18n.text(s.lang, "settings-password-current-wrong", &[]),
            )
        }
        Err(HubError::Limited { .. }) => again(
            StatusCode::SERVICE_UNAVAILABLE,
            c.i18n.text(s.lang, "login-busy", &[("seconds", 1.into())]),
        ),
        Err(e) => failure(&c, s.lang, &e),
    }
}

pub async fn user_password_page(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(name): Path<String>,
) -> Response {
    if name == s.name {
        return Redirect::to("/settings/password").into_response();
    }
    password_page(&c, &s, StatusCode::OK, Some(&name), None)
}

/// An owner sets another user's password (they forgot theirs); that user's sessions end.
pub async fn set_user_password(
    State(c): State<Arc<Console>>,
    Path(name): Path<String>,
    Change(s, f): Change<PasswordForm>,
) -> Response {
    if name == s.name {
        return Redirect::to("/settings/password").into_response();
    }
    let new = match new_password(&c, &s, &name, &f) {
        Ok(p) => p,
        Err(text) => {
            return password_page(
                &c,
                &s,
                StatusCode::BAD_REQUEST,
                Some(&name),
                Some(notice("failed", &text)),
            );
        }
    };
    match c
        .hub
        .acting_as(actor(&s))
        .reset_console_password(&name, new)
        .await
    {
        Ok(()) => Redirect::to(&format!("/settings?reset={}", urlencode(&name))).into_response(),
        Err(e) => failure(&c, s.lang, &e),
    }
}

crate::form::csrf_forms!(NewUserForm, RoleForm, PasswordForm);
