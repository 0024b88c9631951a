//! Sign-in, first-run setup, sign-out and the language switch.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::CookieJar;
use maud::{Markup, html};
use memberspot_hub::HubError;
use secrecy::SecretString;
use serde::Deserialize;

use crate::Console;
use crate::i18n::Lang;
use crate::layout::{View, notice};
use crate::session::{
    LANG_COOKIE, PRE_CSRF_COOKIE, Refusal, SESSION_COOKIE, Signed, Visitor, random_token,
};

/// How long the CSRF cookie of the sign-in and setup forms lives.
const PRE_CSRF_TTL: Duration = Duration::from_secs(3600);

pub(crate) fn view<'a>(console: &'a Console, lang: Lang, path: &'a str) -> View<'a> {
    View {
        console,
        lang,
        user: None,
        path,
    }
}

/// The CSRF token of a form shown before sign-in: the cookie's if the browser has one,
/// else a new one (set with the page).
fn pre_csrf(console: &Console, jar: CookieJar) -> (CookieJar, String) {
    match jar.get(PRE_CSRF_COOKIE).map(|c| c.value().to_owned()) {
        Some(t) if t.len() == 64 => (jar, t),
        _ => {
            let t = random_token();
            let jar = jar.add(console.cookie(PRE_CSRF_COOKIE, t.clone(), PRE_CSRF_TTL));
            (jar, t)
        }
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    bye: Option<String>,
    /// Where to go after signing in (only an OAuth consent page; see [`after_login`]).
    #[serde(default)]
    next: Option<String>,
}

/// Where a sign-in goes: the OAuth consent page it came from, else the overview. Only
/// that one local path is followed, so a crafted link cannot send a fresh sign-in
/// anywhere else.
fn after_login(next: Option<&str>) -> &str {
    match next {
        Some(n)
            // The path is fixed by the prefix; what follows `?` cannot change the origin.
            if n.starts_with("/oauth/authorize?") && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/",
    }
}

pub async fn login_page(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Query(q): Query<LoginQuery>,
) -> Response {
    let (jar, csrf) = pre_csrf(&c, v.jar);
    let first = if q.bye.is_some() {
        Some(notice("ok", &c.i18n.text(v.lang, "logged-out", &[])))
    } else {
        None
    };
    let next = after_login(q.next.as_deref());
    let page = login_form(&c, v.lang, StatusCode::OK, &csrf, "", next, first).await;
    (jar, page).into_response()
}

async fn login_form(
    c: &Console,
    lang: Lang,
    status: StatusCode,
    csrf: &str,
    name: &str,
    next: &str,
    message: Option<Markup>,
) -> Response {
    let v = view(c, lang, "/login");
    let no_users = matches!(c.hub.has_console_users().await, Ok(false));
    v.page(
        status,
        &v.t("login-title"),
        html! {
            @if let Some(m) = message { (m) }
            @if no_users { (notice("warning", &v.t("login-no-users"))) }
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                @if next != "/" { input type="hidden" name="next" value=(next); }
                label for="name" { (v.t("login-name")) }
                input #name type="text" name="name" value=(name) autocomplete="username" required autofocus;
                label for="password" { (v.t("login-password")) }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { (v.t("login-submit")) }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(
    State(c): State<Arc<Console>>,
    v: Visitor,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(r) = c.check_pre(&v.jar, &headers, &f.csrf) {
        return refused(&c, v.lang, r);
    }
    let name = f.name.trim().to_owned();
    let next = after_login(f.next.as_deref());
    let (jar, csrf) = pre_csrf(&c, v.jar);
    // Refused without a word about whether the name exists: over a limit, or the
    // password checks are full (the hub answers busy instead of queueing without end).
    let (status, message, secs) = match c.limits.take(&name, v.address) {
        Err(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            "login-limited",
            wait.as_secs(),
        ),
        Ok(()) => match c.hub.console_login(&name, &f.password).await {
            Ok(user) => return sign_in(&c, v.lang, jar, &user.name, next).await,
            Err(HubError::Unauthenticated(_)) => {
                c.limits.failed(&name);
                let msg = c.i18n.text(v.lang, "login-failed", &[]);
                let page = login_form(
                    &c,
                    v.lang,
                    StatusCode::UNAUTHORIZED,
                    &csrf,
                    &name,
                    next,
                    Some(notice("failed", &msg)),
                )
                .await;
                return (jar, page).into_response();
            }
            Err(HubError::Limited {
                retry_after_secs, ..
            }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "login-busy",
                retry_after_secs,
            ),
            Err(e) => return failure(&c, v.lang, &e),
        },
    };
    let secs = secs.max(1);
    let msg = c.i18n.text(v.lang, message, &[("seconds", secs.into())]);
    let mut page = login_form(
        &c,
        v.lang,
        status,
        &csrf,
        &name,
        next,
        Some(notice("failed", &msg)),
    )
    .await;
    with_retry_after(&mut page, secs);
    (jar, page).into_response()
}

fn with_retry_after(page: &mut Response, secs: u64) {
    if let Ok(h) = axum::http::HeaderValue::from_str(&secs.to_string()) {
        page.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, h);
    }
}

/// Opens a session for `user` and goes to `to` (the overview, or the consent page the
/// sign-in was for).
pub(crate) async fn sign_in(
    c: &Console,
    lang: Lang,
    jar: CookieJar,
    user: &str,
    to: &str,
) -> Response {
    // A session this browser already had ends: one browser, one session.
    if let Some(old) = jar.get(SESSION_COOKIE) {
        let old = SecretString::from(old.value().to_owned());
        if let Err(e) = c.hub.end_console_session(&old).await {
            return failure(c, lang, &e);
        }
    }
    match c
        .hub
        .open_console_session(user, c.settings.absolute_timeout)
        .await
    {
        Ok(id) => {
            use secrecy::ExposeSecret;
            let jar = jar
                .add(c.cookie(
                    SESSION_COOKIE,
                    id.expose_secret().to_owned(),
                    c.settings.absolute_timeout,
                ))
                .add(c.removal(PRE_CSRF_COOKIE));
            (jar, Redirect::to(to)).into_response()
        }
        Err(e) => failure(c, lang, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

pub async fn setup_page(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Query(q): Query<SetupQuery>,
) -> Response {
    let token = SecretString::from(q.token.clone());
    let usable =
        !q.token.is_empty() && matches!(c.hub.console_setup_usable(&token).await, Ok(true));
    if !usable {
        return view(&c, v.lang, "/setup").message(
            StatusCode::NOT_FOUND,
            "setup-title",
            &c.i18n.text(v.lang, "setup-invalid", &[]),
        );
    }
    let (jar, csrf) = pre_csrf(&c, v.jar);
    let page = setup_form(&c, v.lang, StatusCode::OK, &csrf, &q.token, "", None);
    (jar, page).into_response()
}

fn setup_form(
    c: &Console,
    lang: Lang,
    status: StatusCode,
    csrf: &str,
    token: &str,
    name: &str,
    message: Option<Markup>,
) -> Response {
    let v = view(c, lang, "/setup");
    v.page(
        status,
        &v.t("setup-title"),
        html! {
            p { (v.t("setup-intro")) }
            @if let Some(m) = message { (m) }
            form.card method="post" action="/setup" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(token);
                label for="name" { (v.t("login-name")) }
                input #name type="text" name="name" value=(name) autocomplete="username" required autofocus;
                label for="password" { (v.t("login-password")) }
                input #password type="password" name="password" autocomplete="new-password" required minlength="10" aria-describedby="password-hint";
                small #password-hint { (v.t("password-hint")) }
                label for="password2" { (v.t("setup-password-repeat")) }
                input #password2 type="password" name="password2" autocomplete="new-password" required minlength="10";
                button type="submit" { (v.t("setup-submit")) }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    password2: SecretString,
}

pub async fn setup(
    State(c): State<Arc<Console>>,
    v: Visitor,
    headers: HeaderMap,
    Form(f): Form<SetupForm>,
) -> Response {
    use secrecy::ExposeSecret;
    if let Err(r) = c.check_pre(&v.jar, &headers, &f.csrf) {
        return refused(&c, v.lang, r);
    }
    let name = f.name.trim().to_owned();
    let (jar, csrf) = pre_csrf(&c, v.jar);
    let again = |status, text: String| {
        let page = setup_form(
            &c,
            v.lang,
            status,
            &csrf,
            &f.token,
            &name,
            Some(notice("failed", &text)),
        );
        (jar.clone(), page).into_response()
    };
    if f.password.expose_secret() != f.password2.expose_secret() {
        return again(
            StatusCode::BAD_REQUEST,
            c.i18n.text(v.lang, "setup-mismatch", &[]),
        );
    }
    if let Some(problem) = credentials_problem(&c, v.lang, &name, &f.password) {
        return again(StatusCode::BAD_REQUEST, problem);
    }
    let token = SecretString::from(f.token.clone());
    match c.hub.finish_console_setup(&token, &name, &f.password).await {
        Ok(user) => {
            tracing::info!(user = %user.name, "console: first owner created with the setup link");
            sign_in(&c, v.lang, jar, &user.name, "/").await
        }
        Err(HubError::Invalid(m)) if m.starts_with("name:") || m.starts_with("password:") => {
            again(StatusCode::BAD_REQUEST, m)
        }
        Err(HubError::Limited {
            retry_after_secs, ..
        }) => {
            let secs = retry_after_secs.max(1);
            let text = c
                .i18n
                .text(v.lang, "login-busy", &[("seconds", secs.into())]);
            let mut page = again(StatusCode::SERVICE_UNAVAILABLE, text);
            with_retry_after(&mut page, secs);
            page
        }
        Err(
            HubError::Invalid(_) | HubError::Store(memberspot_hub::store::StoreError::Invalid(_)),
        ) => view(&c, v.lang, "/setup").message(
            StatusCode::GONE,
            "setup-title",
            &c.i18n.text(v.lang, "setup-invalid", &[]),
        ),
        Err(e) => failure(&c, v.lang, &e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Signing out needs the origin and CSRF checks (a forged sign-out is a nuisance), not
/// the owner role.
fn check_signed_form(
    c: &Console,
    s: &Signed,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Refusal> {
    match c.check_change(s, headers, csrf) {
        Err(Refusal::Viewer) | Ok(()) => Ok(()),
        Err(r) => Err(r),
    }
}

pub async fn logout(
    State(c): State<Arc<Console>>,
    s: Signed,
    jar: CookieJar,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_signed_form(&c, &s, &headers, &f.csrf) {
        return refused(&c, s.lang, r);
    }
    if let Err(e) = c.hub.end_console_session(&s.session).await {
        return failure(&c, s.lang, &e);
    }
    (
        jar.add(c.removal(SESSION_COOKIE)),
        Redirect::to("/login?bye=1"),
    )
        .into_response()
}

pub async fn logout_everywhere(
    State(c): State<Arc<Console>>,
    s: Signed,
    jar: CookieJar,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_signed_form(&c, &s, &headers, &f.csrf) {
        return refused(&c, s.lang, r);
    }
    if let Err(e) = c.hub.end_console_sessions_of(&s.name).await {
        return failure(&c, s.lang, &e);
    }
    (
        jar.add(c.removal(SESSION_COOKIE)),
        Redirect::to("/login?bye=1"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LangQuery {
    #[serde(default)]
    to: String,
    #[serde(default)]
    back: String,
}

/// Sets the language cookie and goes back to the page (a local path only).
pub async fn switch_language(
    State(c): State<Arc<Console>>,
    jar: CookieJar,
    Query(q): Query<LangQuery>,
) -> Response {
    let back = if is_local_path(&q.back) {
        q.back
    } else {
        "/".to_owned()
    };
    let Some(lang) = Lang::parse(&q.to) else {
        return Redirect::to(&back).into_response();
    };
    let jar = jar.add(c.cookie(
        LANG_COOKIE,
        lang.code().to_owned(),
        Duration::from_secs(365 * 24 * 3600),
    ));
    (jar, Redirect::to(&back)).into_response()
}

/// A path on this site that no browser can read as another origin: it starts with one
/// `/`, and has no backslash, control character or whitespace (browsers drop tabs and
/// newlines from URLs, so `/<TAB>/evil.example` would become `//evil.example`).
fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path
            .chars()
            .any(|ch| ch == '\\' || ch.is_control() || ch.is_whitespace())
}

/// 403 with the reason.
pub fn refused(c: &Console, lang: Lang, r: Refusal) -> Response {
    view(c, lang, "/").message(
        StatusCode::FORBIDDEN,
        "refused-title",
        &c.i18n.text(lang, r.message_id(), &[]),
    )
}

/// What is wrong with a new console user's name or password, in `lang`, by the hub's
/// rules (the hub's own refusal is in English, for the CLI and REST).
pub fn credentials_problem(
    c: &Console,
    lang: Lang,
    name: &str,
    password: &SecretString,
) -> Option<String> {
    use memberspot_hub::console::{
        MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, check_password, check_user_name,
    };
    use secrecy::ExposeSecret;
    if check_user_name(name).is_err() {
        let shown: String = name.chars().take(64).collect();
        return Some(
            c.i18n
                .text(lang, "error-user-name", &[("value", shown.into())]),
        );
    }
    check_password(password).err()?;
    Some(
        if password.expose_secret().chars().count() < MIN_PASSWORD_CHARS {
            c.i18n.text(
                lang,
                "error-password-short",
                &[("min", MIN_PASSWORD_CHARS.into())],
            )
        } else {
            c.i18n.text(
                lang,
                "error-password-long",
                &[("max", MAX_PASSWORD_BYTES.into())],
            )
        },
    )
}

/// The hub's refusal of a new persona's or connection's `name`, in `lang` where the
/// console knows the rule (the name's form, a name taken); anything else as the hub says it.
pub fn name_refusal(c: &Console, lang: Lang, name: &str, e: &HubError) -> String {
    use memberspot_hub::store::StoreError;
    if memberspot_hub::admin::valid_name("", name).is_err() {
        return c
            .i18n
            .text(lang, "error-entity-name", &[("value", name.into())]);
    }
    match e {
        HubError::Store(StoreError::Conflict(_)) => {
            c.i18n
                .text(lang, "error-name-taken", &[("value", name.into())])
        }
        _ => error_text(c, lang, e),
    }
}

/// What a page says about `e`: the error itself where the user can act on it (not found,
/// bad input, a name taken, the school's answer, the hub's own explanations); for a
/// database or key failure, which only the operator can act on (and which is logged), a
/// general sentence, so that no
/// signed-in user, viewers included, reads table names or driver text.
pub fn error_text(c: &Console, lang: Lang, e: &HubError) -> String {
    use memberspot_hub::store::StoreError;
    let internal = match e {
        HubError::Store(
            StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Invalid(_),
        ) => false,
        HubError::Store(_) | HubError::Secret(_) | HubError::WrongMasterKey => true,
        _ => false,
    };
    if internal {
        c.i18n.text(lang, "error-internal", &[])
    } else {
        e.to_string()
    }
}

/// An error page for `e` (logged; shown as [`error_text`] says).
pub fn failure(c: &Console, lang: Lang, e: &HubError) -> Response {
    tracing::error!(error = %e, "console: request failed");
    let status = match e {
        HubError::NotFound(_) => StatusCode::NOT_FOUND,
        HubError::Invalid(_) => StatusCode::BAD_REQUEST,
        HubError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let text = error_text(c, lang, e);
    view(c, lang, "/").message(status, "error-title", &text)
}

crate::form::csrf_forms!(CsrfForm);
