use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use memberspot_hub::{Hub, Principal, Surface};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, PersonaAuth};
use super::{HttpError, body::ApiJson};
use crate::request::{RequestId, call_context};

pub fn routes() -> OpenApiRouter<Hub> {
    OpenApiRouter::new()
        .routes(routes!(list_tools))
        .routes(routes!(get_tool))
        .routes(routes!(call_tool))
}

/// A tool as the persona sees it.
#[derive(Serialize, ToSchema)]
pub struct ToolView {
    name: String,
    title: String,
    description: String,
    /// read, write or destructive
    class: String,
    #[schema(value_type = Object)]
    input_schema: Value,
    #[schema(value_type = Object)]
    output_schema: Value,
    #[schema(value_type = Object)]
    annotations: Value,
}

fn view(d: &memberspot_tools::ToolDescriptor) -> ToolView {
    ToolView {
        name: d.name.into(),
        title: d.title.into(),
        description: d.description.into(),
        class: serde_json::to_value(d.class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        input_schema: d.input_schema.clone(),
        output_schema: d.output_schema.clone(),
        annotations: serde_json::to_value(d.annotations).unwrap_or_default(),
    }
}

/// The tools this persona may call.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", security(("persona" = [])),
    responses((status = 200, body = [ToolView]), (status = 401, description = "missing, unknown or revoked token"), (status = 403, description = "the persona's stored scopes no longer parse")))]
async fn list_tools(
    State(hub): State<Hub>,
    PersonaAuth(p): PersonaAuth,
) -> Result<Json<Vec<ToolView>>, HttpError> {
    Ok(Json(
        hub.tools_for(&Principal::Persona(p))?
            .into_iter()
            .map(view)
            .collect(),
    ))
}

/// One tool, if it is in this persona's scopes.
#[utoipa::path(get, path = "/v1/tools/{name}", tag = "tools", security(("persona" = [])),
    params(("name" = String, Path, description = "tool name")),
    responses((status = 200, body = ToolView), (status = 403, description = "not in the persona's scopes"), (status = 404, description = "no such tool")))]
async fn get_tool(
    State(hub): State<Hub>,
    PersonaAuth(p): PersonaAuth,
    Path(name): Path<String>,
) -> Result<Json<ToolView>, HttpError> {
    let entry = hub.catalogue().get(&name).ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!("no tool named `{name}`"),
        )
    })?;
    if !hub.scopes_of(&p)?.allows(&entry.descriptor) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!("`{name}` is not in the scopes of persona `{}`", p.name),
        ));
    }
    Ok(Json(view(&entry.descriptor)))
}

/// A tool call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The tool's arguments (see its input_schema).
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: Value,
    /// Why the call is made (the model's prompt or the user's request); recorded in the audit log.
    #[serde(default)]
    prompt: Option<String>,
    /// The human on whose behalf the call is made; recorded in the audit log.
    #[serde(default)]
    end_user: Option<String>,
}

/// The result of a call.
#[derive(Serialize, ToSchema)]
pub struct CallResponse {
    #[schema(value_type = Object)]
    result: Value,
    request_id: String,
    /// Id of the audit record of this call.
    audit_id: Option<String>,
}

/// Calls a tool as this persona. Every call, refused or not, is audited.
#[utoipa::path(post, path = "/v1/tools/{name}/call", tag = "tools", security(("persona" = [])),
    params(("name" = String, Path, description = "tool name")),
    request_body = CallRequest,
    responses(
        (status = 200, body = CallResponse),
        (status = 400, description = "invalid arguments; `field` names the argument"),
        (status = 401, description = "missing, unknown or revoked token"),
        (status = 403, description = "outside the persona's scopes"),
        (status = 404, description = "no such tool, or Memberspot found no such member/offer"),
        (status = 422, description = "Memberspot rejected the request"),
        (status = 429, description = "the persona's calls-per-minute limit (see `Retry-After`), or Memberspot's rate limit persisted"),
        (status = 502, description = "Memberspot failed"),
    ))]
async fn call_tool(
    State(hub): State<Hub>,
    Caller(p): Caller,
    Path(name): Path<String>,
    id: Option<Extension<RequestId>>,
    ApiJson(req): ApiJson<CallRequest>,
) -> Result<Json<CallResponse>, HttpError> {
    let mut ctx = call_context(Surface::Rest, id.as_deref());
    ctx.prompt = req.prompt;
    ctx.end_user = req.end_user;
    let outcome = hub
        .call(&Principal::Persona(p), &ctx, &name, req.arguments)
        .await;
    let result = outcome.result?;
    Ok(Json(CallResponse {
        result,
        request_id: ctx.request_id,
        audit_id: outcome.audit.map(|a| a.id),
    }))
}
