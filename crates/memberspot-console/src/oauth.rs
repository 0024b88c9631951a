//! Remote MCP sign-in in the console: the consent page of `/oauth/authorize` (a hosted
//! assistant asks to act as a persona; an owner picks or creates the persona and allows
//! or denies) and the page of connected apps (`/oauth`: the grants, each revocable).
//!
//! The request is checked by `memberspot-oauth` before the page shows anything and again
//! when the answer comes back, from the form's hidden fields: nothing about the request is
//! kept between the two, so the answer cannot be bound to another request than the one
//! the owner saw.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use memberspot_hub::HubError;
use memberspot_hub::admin::PersonaSpec;
use memberspot_hub::oauth::GrantRequest;
use memberspot_hub::store::OAuthClientKind;
use memberspot_oauth::{AuthorizeError, AuthorizeQuery, CheckedAuthorize};
use serde::Deserialize;

use crate::Console;
use crate::auth::{CsrfForm, failure};
use crate::form::{Change, Owner};
use crate::layout::{View, badge, empty, notice};
use crate::personas::{actor, urlencode};
use crate::session::Signed;

/// The persona field's value for "create a new persona".
const NEW_PERSONA: &str = "";
const CLASSES: [&str; 3] = ["read", "write", "destructive"];

/// The consent form: the request's parameters as hidden fields, the owner's choice.
#[derive(Deserialize, Default)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    request: AuthorizeQuery,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    persona: String,
    #[serde(default)]
    new_name: String,
    #[serde(default)]
    new_connection: String,
    /// Tool classes of a new persona (`scope` is the OAuth request's own parameter).
    #[serde(default)]
    persona_scope: Vec<String>,
}
crate::form::csrf_forms!(ConsentForm);

/// The request checked, or the answer to give instead of a consent page.
async fn checked(
    c: &Console,
    lang: crate::i18n::Lang,
    headers: &HeaderMap,
    q: &AuthorizeQuery,
) -> Result<CheckedAuthorize, Response> {
    let v = crate::auth::view(c, lang, "/oauth/authorize");
    let Some(oauth) = c.oauth.get() else {
        return Err(v.message(
            StatusCode::NOT_FOUND,
            "oauth-error-title",
            &v.t("oauth-off"),
        ));
    };
    let Some(issuer) = oauth.issuer(headers) else {
        return Err(v.message(
            StatusCode::NOT_FOUND,
            "oauth-error-title",
            &v.t("oauth-no-public-url"),
        ));
    };
    oauth
        .check_authorize(q, &issuer)
        .await
        .map_err(|e| refusal(c, lang, &e))
}

fn refusal(c: &Console, lang: crate::i18n::Lang, e: &AuthorizeError) -> Response {
    match e.redirect() {
        Some(to) => Redirect::to(&to).into_response(),
        None => crate::auth::view(c, lang, "/oauth/authorize").message(
            StatusCode::BAD_REQUEST,
            "oauth-error-title",
            e.message(),
        ),
    }
}

/// `GET /oauth/authorize`: sign in first (and come back), then the consent page.
pub async fn authorize_page(
    State(c): State<Arc<Console>>,
    signed: Result<Signed, Response>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let s = match signed {
        Ok(s) => s,
        Err(_) => {
            let back = uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/oauth/authorize".into());
            return Redirect::to(&format!("/login?next={}", urlencode(&back))).into_response();
        }
    };
    // Before the request is checked: checking fetches (and keeps) the client's metadata
    // document, which a viewer, who cannot allow anything, must not make the hub do.
    if !s.is_owner() {
        return crate::auth::view(&c, s.lang, "/oauth/authorize").message(
            StatusCode::FORBIDDEN,
            "oauth-error-title",
            &c.i18n.text(s.lang, "oauth-owners-only", &[]),
        );
    }
    let req = match checked(&c, s.lang, &headers, &q).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    consent_page(&c, &s, &q, &req, StatusCode::OK, None).await
}

async fn consent_page(
    c: &Console,
    s: &Signed,
    q: &AuthorizeQuery,
    req: &CheckedAuthorize,
    status: StatusCode,
    message: Option<Markup>,
) -> Response {
    let v = View::signed(c, s, "/oauth/authorize");
    let redirect_host = url::Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let title = v.ta(
        "oauth-consent-title",
        &[("client", req.client.name.clone().into())],
    );
    let personas = match c.hub.list_personas().await {
        Ok(p) => p
            .into_iter()
            .filter(|p| !p.is_revoked())
            .collect::<Vec<_>>(),
        Err(e) => return failure(c, s.lang, &e),
    };
    let connections = match c.hub.list_connections().await {
        Ok(cs) => cs,
        Err(e) => return failure(c, s.lang, &e),
    };
    let kind = match req.client.kind {
        OAuthClientKind::Dynamic => v.t("oauth-kind-dynamic"),
        OAuthClientKind::MetadataDocument => v.t("oauth-kind-document"),
        OAuthClientKind::Preregistered => v.t("oauth-kind-preregistered"),
    };
    let hidden = |name: &str, value: &Option<String>| {
        html! { @if let Some(x) = value { input type="hidden" name=(name) value=(x); } }
    };
    let mut page = v.page(
        status,
        &title,
        html! {
            @if let Some(m) = message { (m) }
            div.card {
                dl {
                    div { dt { (v.t("oauth-client")) } dd { (req.client.name) " " (badge("warning", &kind)) } }
                    div { dt { (v.t("oauth-redirect-host")) } dd { code { (redirect_host) } } }
                    div { dt { (v.t("oauth-resource")) } dd { code { (req.resource) } } }
                }
                p { (v.t("oauth-consent-explain")) }
            }
            form.card method="post" action="/oauth/authorize" {
                input type="hidden" name="csrf" value=(s.csrf);
                (hidden("response_type", &q.response_type))
                (hidden("client_id", &q.client_id))
                (hidden("redirect_uri", &q.redirect_uri))
                (hidden("code_challenge", &q.code_challenge))
                (hidden("code_challenge_method", &q.code_challenge_method))
                (hidden("state", &q.state))
                (hidden("resource", &q.resource))
                (hidden("scope", &q.scope))
                label for="persona" { (v.t("oauth-persona")) }
                select #persona name="persona" {
                    @for p in &personas {
                        option value=(p.name) { (p.name) " (" (p.scopes.join(", ")) ")" }
                    }
                    option value=(NEW_PERSONA) selected[personas.is_empty()] { (v.t("oauth-persona-new")) }
                }
                fieldset {
                    legend { (v.t("oauth-new-persona")) }
                    label for="new_name" { (v.t("personas-name")) }
                    input #new_name type="text" name="new_name" autocomplete="off"
                        placeholder=(default_persona_name(&req.client.name));
                    label for="new_connection" { (v.t("personas-connection")) }
                    select #new_connection name="new_connection" {
                        @for conn in &connections { option value=(conn.name) { (conn.name) } }
                    }
                    @for class in CLASSES {
                        div.check {
                            input type="checkbox" name="persona_scope" value=(class) id={ "scope-" (class) } checked[class == "read"];
                            label for={ "scope-" (class) } { (v.t(&format!("oauth-scope-{class}"))) }
                        }
                    }
                }
                div.actions {
                    button type="submit" name="decision" value="allow" { (v.t("oauth-allow")) }
                    button.secondary type="submit" name="decision" value="deny" { (v.t("oauth-deny")) }
                }
            }
        },
    );
    // The answer redirects to the client: the page's forms may lead there (CSP
    // `form-action` also governs where a submitted form is redirected).
    if let Ok(origin) = url::Url::parse(&req.redirect_uri).map(|u| u.origin().ascii_serialization())
    {
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
        );
        if let Ok(value) = HeaderValue::from_str(&csp) {
            page.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    page
}

/// A persona name made from the client's name (`claude-web` for "Claude Web").
fn default_persona_name(client: &str) -> String {
    let mut name: String = client
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    name.truncate(40);
    if name.is_empty() {
        "assistant".into()
    } else {
        name
    }
}

/// `POST /oauth/authorize`: the owner's answer.
pub async fn authorize_answer(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Change(s, f): Change<ConsentForm>,
) -> Response {
    let req = match checked(&c, s.lang, &headers, &f.request).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match f.decision.as_str() {
        "allow" => {}
        "deny" => {
            return Redirect::to(&req.answer(&[
                ("error", "access_denied"),
                ("error_description", "the owner denied the request"),
            ]))
            .into_response();
        }
        _ => {
            let m = notice("failed", &c.i18n.text(s.lang, "oauth-decide", &[]));
            return consent_page(&c, &s, &f.request, &req, StatusCode::BAD_REQUEST, Some(m)).await;
        }
    }
    let admin = c.hub.acting_as(actor(&s));
    let persona = if f.persona == NEW_PERSONA {
        let name = match f.new_name.trim() {
            "" => default_persona_name(&req.client.name),
            n => n.to_owned(),
        };
        let spec = PersonaSpec {
            name,
            description: format!("Signed in from {} (OAuth)", req.client.name),
            connection: Some(f.new_connection.clone()).filter(|c| !c.is_empty()),
            scopes: f.persona_scope.clone(),
            offer_ids: None,
            calls_per_minute: None,
        };
        // The persona's own token is not shown: the assistant gets OAuth tokens.
        match admin.create_persona(spec).await {
            Ok(issued) => issued.persona.name,
            Err(e) => {
                let m = notice("failed", &crate::auth::error_text(&c, s.lang, &e));
                return consent_page(&c, &s, &f.request, &req, StatusCode::BAD_REQUEST, Some(m))
                    .await;
            }
        }
    } else {
        f.persona.clone()
    };
    let grant = GrantRequest {
        client: req.client.clone(),
        persona,
        redirect_uri: req.redirect_uri.clone(),
        code_challenge: req.code_challenge.clone(),
        resource: req.resource.clone(),
    };
    match admin.grant_oauth(&grant).await {
        Ok(code) => {
            use secrecy::ExposeSecret;
            Redirect::to(&req.answer(&[("code", code.expose_secret())])).into_response()
        }
        Err(e @ (HubError::Invalid(_) | HubError::Unauthenticated(_) | HubError::NotFound(_))) => {
            let m = notice("failed", &e.to_string());
            consent_page(&c, &s, &f.request, &req, StatusCode::BAD_REQUEST, Some(m)).await
        }
        Err(e) => failure(&c, s.lang, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct AppsQuery {
    #[serde(default)]
    revoked: Option<String>,
}

/// `GET /oauth`: the assistants signed in through OAuth, per persona, and the clients.
pub async fn apps(
    State(c): State<Arc<Console>>,
    s: Signed,
    Query(q): Query<AppsQuery>,
) -> Response {
    let v = View::signed(&c, &s, "/oauth");
    let (grants, clients) = match (
        c.hub.list_oauth_grants(None).await,
        c.hub.list_oauth_clients().await,
    ) {
        (Ok(g), Ok(cl)) => (g, cl),
        (Err(e), _) | (_, Err(e)) => return failure(&c, s.lang, &e),
    };
    v.page(
        StatusCode::OK,
        &v.t("oauth-apps-title"),
        html! {
            @if q.revoked.is_some() { (notice("ok", &v.t("oauth-revoked-done"))) }
            p { (v.t("oauth-apps-explain")) }
            h2 { (v.t("oauth-grants")) }
            @if grants.is_empty() {
                (empty(&v.t("oauth-grants-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("oauth-client")) }
                        th scope="col" { (v.t("oauth-persona")) }
                        th scope="col" { (v.t("oauth-granted-by")) }
                        th scope="col" { (v.t("personas-created")) }
                        th scope="col" { (v.t("oauth-last-used")) }
                        th scope="col" { (v.t("personas-status")) }
                        @if s.is_owner() { th scope="col" { (v.t("personas-actions")) } }
                    } }
                    tbody { @for g in &grants { tr {
                        td { (g.client_name) }
                        td { a href={ "/personas/" (urlencode(&g.persona)) } { (g.persona) } }
                        td { (g.granted_by) }
                        td { (v.when(g.created_at)) }
                        td { (g.last_used_at.map(|t| v.when(t)).unwrap_or_else(|| "—".into())) }
                        td {
                            @match (&g.revoked_at, &g.revoked_why) {
                                (None, _) => (badge("ok", &v.t("personas-active"))),
                                (Some(_), why) => { (badge("failed", &v.t("personas-revoked"))) @if let Some(w) = why { " " small { (w) } } },
                            }
                        }
                        @if s.is_owner() { td {
                            @if g.revoked_at.is_none() {
                                a.button.danger href={ "/oauth/grants/" (g.id) "/revoke" } aria-label=(v.ta("oauth-revoke-label", &[("client", g.client_name.clone().into()), ("persona", g.persona.clone().into())])) { (v.t("personas-revoke")) }
                            }
                        } }
                    } } }
                } }
            }
            h2 { (v.t("oauth-clients")) }
            @if clients.is_empty() {
                (empty(&v.t("oauth-clients-empty")))
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (v.t("oauth-client")) }
                        th scope="col" { (v.t("oauth-client-id")) }
                        th scope="col" { (v.t("oauth-redirect-host")) }
                        th scope="col" { (v.t("personas-created")) }
                    } }
                    tbody { @for cl in &clients { tr {
                        td { (cl.name) }
                        td { code { (cl.client_id) } }
                        td { @for u in &cl.redirect_uris { code { (url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()) } " " } }
                        td { (v.when(cl.created_at)) }
                    } } }
                } }
            }
        },
    )
}

/// `GET /oauth/grants/{id}/revoke`: asks first, as for a persona.
pub async fn confirm_revoke(
    State(c): State<Arc<Console>>,
    Owner(s): Owner,
    Path(id): Path<String>,
) -> Response {
    let grant = match c.hub.list_oauth_grants(None).await {
        Ok(grants) => grants
            .into_iter()
            .find(|g| g.id == id && g.revoked_at.is_none()),
        Err(e) => return failure(&c, s.lang, &e),
    };
    let Some(g) = grant else {
        let missing = HubError::NotFound(format!("no active sign-in with id `{id}`"));
        return failure(&c, s.lang, &missing);
    };
    let v = View::signed(&c, &s, "/oauth");
    let who = [
        ("client", g.client_name.clone().into()),
        ("persona", g.persona.clone().into()),
    ];
    v.page(
        StatusCode::OK,
        &v.ta("oauth-revoke-title", &who),
        html! {
            p { (v.t("oauth-revoke-explain")) }
            form method="post" action={ "/oauth/grants/" (urlencode(&g.id)) "/revoke" } {
                input type="hidden" name="csrf" value=(s.csrf);
                button.danger type="submit" { (v.ta("oauth-revoke-label", &who)) }
            }
            p { a href="/oauth" { (v.t("back")) } }
        },
    )
}

/// `POST /oauth/grants/{id}/revoke`.
pub async fn revoke(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    Change(s, _f): Change<CsrfForm>,
) -> Response {
    match c.hub.acting_as(actor(&s)).revoke_oauth_grant(&id).await {
        Ok(()) => Redirect::to("/oauth?revoked=1").into_response(),
        Err(e) => failure(&c, s.lang, &e),
    }
}
