//! Admin routes (admin token): personas, connections, the audit log.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use memberspot_hub::Hub;
use memberspot_hub::admin::{
    AuditExportFormat, ConnectionView, PersonaSpec, PersonaView, audit_export_pages,
};
use memberspot_hub::store::AuditFilter;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::HttpError;
use super::auth::AdminAuth;
use super::body::ApiJson;

pub fn routes() -> OpenApiRouter<Hub> {
    OpenApiRouter::new()
        .routes(routes!(list_personas, create_persona))
        .routes(routes!(show_persona))
        .routes(routes!(revoke_persona))
        .routes(routes!(rotate_persona_token))
        .routes(routes!(set_persona_scopes))
        .routes(routes!(list_connections, add_connection))
        .routes(routes!(remove_connection, update_connection))
        .routes(routes!(test_connection))
        .routes(routes!(search_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(export_audit))
}

/// A new persona.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPersonaBody {
    name: String,
    #[serde(default)]
    description: String,
    /// Connection it acts on (default `sandbox`).
    #[serde(default)]
    connection: Option<String>,
    /// `read`, `write`, `destructive`, `all` or tool names (default `read`).
    #[serde(default)]
    scopes: Vec<String>,
    /// Restrict access changes to these offers.
    #[serde(default)]
    offer_ids: Option<Vec<String>>,
    #[serde(default)]
    calls_per_minute: Option<u32>,
    /// Create it again if a persona of this name was revoked (an active one is never
    /// replaced).
    #[serde(default)]
    replace_revoked: bool,
}

/// A persona with its token, shown once.
#[derive(Serialize, ToSchema)]
pub struct IssuedBody {
    #[schema(value_type = Object)]
    persona: Value,
    name: String,
    /// The bearer token. It is not stored and cannot be shown again.
    token: String,
}

fn issued(t: memberspot_hub::admin::IssuedToken) -> IssuedBody {
    IssuedBody {
        name: t.persona.name.clone(),
        persona: serde_json::to_value(PersonaView::from(&t.persona)).unwrap_or_default(),
        token: t.token.expose_secret().to_string(),
    }
}

fn persona_json(p: &memberspot_hub::store::Persona) -> Value {
    serde_json::to_value(PersonaView::from(p)).unwrap_or_default()
}

#[utoipa::path(get, path = "/v1/personas", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "every persona (tokens never shown)")))]
async fn list_personas(
    State(hub): State<Hub>,
    _: AdminAuth,
) -> Result<Json<Vec<Value>>, HttpError> {
    let ps = hub.list_personas().await?;
    Ok(Json(ps.iter().map(persona_json).collect()))
}

#[utoipa::path(post, path = "/v1/personas", tag = "admin", security(("admin" = [])), request_body = NewPersonaBody,
    responses((status = 201, body = IssuedBody), (status = 400, description = "bad scopes or name"), (status = 409, description = "name taken")))]
async fn create_persona(
    State(hub): State<Hub>,
    admin: AdminAuth,
    ApiJson(b): ApiJson<NewPersonaBody>,
) -> Result<Response, HttpError> {
    let spec = PersonaSpec {
        name: b.name,
        description: b.description,
        connection: b.connection,
        scopes: b.scopes,
        offer_ids: b.offer_ids,
        calls_per_minute: b.calls_per_minute,
    };
    let acting = hub.acting_as(admin.actor());
    let t = if b.replace_revoked {
        acting.recreate_persona(spec).await?
    } else {
        acting.create_persona(spec).await?
    };
    Ok((StatusCode::CREATED, Json(issued(t))).into_response())
}

#[utoipa::path(get, path = "/v1/personas/{name}", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), responses((status = 200, description = "the persona"), (status = 404)))]
async fn show_persona(
    State(hub): State<Hub>,
    _: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(persona_json(&hub.persona_any(&name).await?)))
}

#[utoipa::path(post, path = "/v1/personas/{name}/revoke", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), responses((status = 200, description = "revoked; effective on the persona's next call"), (status = 404)))]
async fn revoke_persona(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let changed = hub.acting_as(admin.actor()).revoke_persona(&name).await?;
    Ok(Json(
        json!({ "name": name, "revoked": true, "changed": changed }),
    ))
}

#[utoipa::path(post, path = "/v1/personas/{name}/rotate-token", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), responses((status = 200, body = IssuedBody), (status = 404)))]
async fn rotate_persona_token(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<IssuedBody>, HttpError> {
    Ok(Json(issued(
        hub.acting_as(admin.actor())
            .rotate_persona_token(&name)
            .await?,
    )))
}

/// New scopes for a persona.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesBody {
    scopes: Vec<String>,
    /// Add to the current scopes instead of replacing them.
    #[serde(default)]
    add: bool,
    #[serde(default)]
    offer_ids: Option<Vec<String>>,
    #[serde(default)]
    calls_per_minute: Option<u32>,
}

#[utoipa::path(put, path = "/v1/personas/{name}/scopes", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), request_body = ScopesBody, responses((status = 200, description = "the updated persona"), (status = 400), (status = 404)))]
async fn set_persona_scopes(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
    ApiJson(b): ApiJson<ScopesBody>,
) -> Result<Json<Value>, HttpError> {
    let p = hub
        .acting_as(admin.actor())
        .set_persona_scopes(&name, &b.scopes, b.add, b.offer_ids, b.calls_per_minute)
        .await?;
    Ok(Json(persona_json(&p)))
}

/// A new connection (a Memberspot school).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConnectionBody {
    name: String,
    #[serde(default = "default_base_url")]
    base_url: String,
    /// Encrypted at rest; never returned.
    api_key: String,
    #[serde(default = "default_rate")]
    rate_limit: f64,
}

fn default_base_url() -> String {
    memberspot_api::DEFAULT_BASE_URL.to_string()
}

fn default_rate() -> f64 {
    memberspot_api::DEFAULT_RATE_LIMIT
}

#[utoipa::path(get, path = "/v1/connections", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "connections (keys never shown)")))]
async fn list_connections(
    State(hub): State<Hub>,
    _: AdminAuth,
) -> Result<Json<Vec<ConnectionView>>, HttpError> {
    let cs = hub.list_connections().await?;
    Ok(Json(cs.iter().map(ConnectionView::from).collect()))
}

#[utoipa::path(post, path = "/v1/connections", tag = "admin", security(("admin" = [])), request_body = NewConnectionBody,
    responses((status = 201, description = "created"), (status = 400), (status = 409, description = "name taken")))]
async fn add_connection(
    State(hub): State<Hub>,
    admin: AdminAuth,
    ApiJson(b): ApiJson<NewConnectionBody>,
) -> Result<Response, HttpError> {
    let key = SecretString::from(b.api_key);
    let c = hub
        .acting_as(admin.actor())
        .add_connection(&b.name, &b.base_url, &key, b.rate_limit)
        .await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

#[utoipa::path(delete, path = "/v1/connections/{name}", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), responses((status = 200), (status = 404), (status = 409, description = "still used by a persona")))]
async fn remove_connection(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<Value>, HttpError> {
    hub.acting_as(admin.actor())
        .remove_connection(&name)
        .await?;
    Ok(Json(json!({ "name": name, "removed": true })))
}

/// Changes to a connection; what is left out stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionChangeBody {
    /// A new name (personas follow; files that name the connection do not).
    #[serde(default)]
    name: Option<String>,
    /// Another base URL. The key is re-sealed for the new name and URL.
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    rate_limit: Option<f64>,
}

#[utoipa::path(patch, path = "/v1/connections/{name}", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), request_body = ConnectionChangeBody,
    responses((status = 200, description = "the connection as changed"), (status = 400, description = "nothing to change, a bad value, or a key that does not open for the connection"), (status = 404), (status = 409, description = "name taken")))]
async fn update_connection(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
    ApiJson(b): ApiJson<ConnectionChangeBody>,
) -> Result<Json<ConnectionView>, HttpError> {
    let c = hub
        .acting_as(admin.actor())
        .update_connection(
            &name,
            memberspot_hub::store::ConnectionUpdate {
                name: b.name,
                base_url: b.base_url,
                rate_limit: b.rate_limit,
            },
        )
        .await?;
    Ok(Json(c))
}

#[utoipa::path(post, path = "/v1/connections/{name}/test", tag = "admin", security(("admin" = [])),
    params(("name" = String, Path)), responses((status = 200, description = "the key is accepted"), (status = 404), (status = 502, description = "Memberspot refused the key")))]
async fn test_connection(
    State(hub): State<Hub>,
    admin: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<Value>, HttpError> {
    hub.acting_as(admin.actor()).test_connection(&name).await?;
    Ok(Json(json!({ "name": name, "ok": true })))
}

/// Audit search filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    persona: Option<String>,
    /// The calls of one request (an event's tool calls share its action's request id)
    request_id: Option<String>,
    tool: Option<String>,
    /// ok, tool_error, denied, invalid or cancelled
    outcome: Option<String>,
    surface: Option<String>,
    /// RFC 3339 time or epoch milliseconds
    since: Option<String>,
    until: Option<String>,
    /// Only records after this sequence number (for tailing)
    after_seq: Option<i64>,
    /// At most this many records (default 100, max 10000)
    limit: Option<u32>,
    /// jsonl or csv (export only)
    format: Option<String>,
}

fn parse_time(field: &str, v: &Option<String>) -> Result<Option<i64>, HttpError> {
    super::query_time(field, v.as_deref())
}

fn filter(q: &AuditQuery) -> Result<AuditFilter, HttpError> {
    if let Some(o) = &q.outcome
        && !["ok", "tool_error", "denied", "invalid", "cancelled"].contains(&o.as_str())
    {
        return Err(HttpError::field(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "outcome",
            "use ok, tool_error, denied, invalid or cancelled",
        ));
    }
    Ok(AuditFilter {
        persona: q.persona.clone(),
        request_id: q.request_id.clone(),
        tool: q.tool.clone(),
        outcome: q.outcome.clone(),
        surface: q.surface.clone(),
        since_ms: parse_time("since", &q.since)?,
        until_ms: parse_time("until", &q.until)?,
        after_seq: q.after_seq,
        limit: q.limit,
        before_seq: None,
        newest_first: false,
    })
}

#[utoipa::path(get, path = "/v1/audit", tag = "admin", security(("admin" = [])), params(AuditQuery),
    responses((status = 200, description = "matching audit records, oldest first"), (status = 400)))]
async fn search_audit(
    State(hub): State<Hub>,
    _: AdminAuth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, HttpError> {
    let records = hub.audit(&filter(&q)?).await?;
    Ok(Json(serde_json::to_value(records).unwrap_or_default()))
}

/// What to check the chain against.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// `SEQ:HASH` kept from `memberspot audit anchor` or the daily summary: the record at
    /// SEQ must still be in the chain with that hash
    anchor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "admin", security(("admin" = [])), params(VerifyQuery),
    responses((status = 200, description = "the result of re-computing the hash chain (and checking it against the anchor), with the chain head"), (status = 400, description = "the anchor is not SEQ:HASH")))]
async fn verify_audit(
    State(hub): State<Hub>,
    _: AdminAuth,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<Value>, HttpError> {
    let anchor = q
        .anchor
        .as_deref()
        .map(str::parse::<memberspot_hub::store::ChainHead>)
        .transpose()
        .map_err(|e| HttpError::field(StatusCode::BAD_REQUEST, "invalid_query", "anchor", e))?;
    let v = hub.verify_audit(anchor.as_ref()).await?;
    Ok(Json(json!({
        "records": v.records, "ok": v.ok, "first_bad_seq": v.first_bad_seq, "problem": v.problem,
        "head": v.head, "anchor": anchor.map(|a| a.to_string()),
    })))
}

#[utoipa::path(get, path = "/v1/audit/export", tag = "admin", security(("admin" = [])), params(AuditQuery),
    responses((status = 200, description = "JSON lines or CSV", content_type = "application/x-ndjson")))]
async fn export_audit(
    State(hub): State<Hub>,
    _: AdminAuth,
    Query(q): Query<AuditQuery>,
) -> Result<Response, HttpError> {
    let name = q.format.as_deref().unwrap_or("jsonl");
    let format = AuditExportFormat::parse(name).ok_or_else(|| {
        HttpError::field(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "format",
            format!("`{name}`: use jsonl or csv"),
        )
    })?;
    let mut f = filter(&q)?;
    // `limit` caps the export; without it every matching record is sent, page by page.
    let limit = f.limit.take().map(u64::from);
    let pages = audit_export_pages(hub, f, limit, format).await?;
    let pages = futures::TryStreamExt::inspect_err(pages, |e| {
        tracing::warn!(error = %e, "audit export stopped");
    });
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}
