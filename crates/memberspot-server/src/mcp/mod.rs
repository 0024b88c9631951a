//! The MCP server (official Rust SDK, `rmcp`): the catalogue's tools,
//! filtered by the persona's scopes, over stdio and streamable HTTP; resources,
//! prompts, completion, logging, progress and confirmations (elicitation) in the
//! modules below.
//!
//! Identity is resolved on every request: over HTTP from the bearer token
//! (checked by [`bearer_auth`] before rmcp sees the request), over stdio by
//! looking the configured persona up again (both checked against the store),
//! so a revocation applies to the next call. MCP sessions are only a transport detail: a session carries no
//! identity of its own.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use memberspot_hub::store::Persona;
use memberspot_hub::{CallContext, Hub, HubError, Principal, Surface};
use memberspot_tools::ToolDescriptor;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation, JsonObject,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
// MCP marks logging deprecated in its newest revision; the revisions we negotiate have it.
#[allow(deprecated)]
use rmcp::model::SetLevelRequestParams;
use rmcp::service::RequestContext;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::mcp_guard::{AllowedOrigins, BoundedSessions, Gate, SessionBook};

mod completion;
mod confirm;
mod connector;
mod logging;
mod prompts;
mod resources;

/// Text content longer than this is shortened (the full result is in structuredContent).
const TEXT_LIMIT: usize = 4000;
const INSTRUCTIONS: &str = "Tools for one Memberspot school (online courses): members, offers (access \
products), course progress, login tokens. Destructive tools delete data for good; prefer reversible ones. \
Send the user's request as `_meta.prompt` and who they are as `_meta.end_user`: both are recorded in the \
audit log with every call.";

/// How a stdio server knows who it is.
// One value per process: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum StdioIdentity {
    /// A stored persona, re-read on every call.
    Persona(String),
    /// The persona owning this token, re-authenticated on every call.
    Token(Arc<str>),
    /// An in-memory persona (the read-only local default on a fresh install).
    Fixed(Persona),
}

#[derive(Clone)]
pub struct McpServer {
    hub: Hub,
    stdio: Option<StdioIdentity>,
    /// The level this session's client asked for (`logging/setLevel`); none until it asks.
    log: logging::LogLevel,
}

impl McpServer {
    pub fn stdio(hub: Hub, identity: StdioIdentity) -> Self {
        McpServer {
            hub,
            stdio: Some(identity),
            log: Default::default(),
        }
    }

    fn http(hub: Hub) -> Self {
        McpServer {
            hub,
            stdio: None,
            log: Default::default(),
        }
    }

    /// The call context of an MCP request: surface, and the caller's `_meta` text.
    /// The context of a call of this request: over HTTP under the HTTP request's id, with
    /// the OAuth client its token belongs to.
    fn call_context(&self, ctx: &RequestContext<RoleServer>) -> CallContext {
        let parts = ctx.extensions.get::<axum::http::request::Parts>();
        let id = parts.and_then(|p| p.extensions.get::<crate::request::RequestId>());
        let mut call = crate::request::call_context(self.surface(), id);
        call.prompt = meta_text(ctx, "prompt");
        call.end_user = meta_text(ctx, "end_user");
        call.oauth_client = parts
            .and_then(|p| p.extensions.get::<OAuthClientLabel>())
            .map(|c| c.0.clone());
        call
    }

    async fn principal(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, HubError> {
        if let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() {
            return parts
                .extensions
                .get::<Persona>()
                .cloned()
                .map(Principal::Persona)
                .ok_or_else(|| HubError::Unauthenticated("no persona on this request".into()));
        }
        match &self.stdio {
            Some(StdioIdentity::Persona(name)) => {
                Ok(Principal::Persona(self.hub.persona(name).await?))
            }
            Some(StdioIdentity::Token(t)) => {
                Ok(Principal::Persona(self.hub.authenticate(t).await?))
            }
            Some(StdioIdentity::Fixed(p)) => Ok(Principal::Persona(p.clone())),
            None => Err(HubError::Unauthenticated("no identity".into())),
        }
    }

    /// Who a tool call comes from: as [`McpServer::principal`], but a revoked stdio persona
    /// is returned, so that [`Hub::call`] refuses the call and records the attempt.
    async fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, HubError> {
        match &self.stdio {
            Some(StdioIdentity::Persona(name)) => {
                Ok(Principal::Persona(self.hub.find_persona(name).await?))
            }
            Some(StdioIdentity::Token(t)) => Ok(Principal::Persona(self.hub.identify(t).await?)),
            _ => self.principal(ctx).await,
        }
    }

    fn surface(&self) -> Surface {
        if self.stdio.is_some() {
            Surface::McpStdio
        } else {
            Surface::McpHttp
        }
    }
}

fn to_tool(d: &ToolDescriptor) -> Tool {
    let input: JsonObject = d.input_schema.as_object().cloned().unwrap_or_default();
    let output: JsonObject = d.output_schema.as_object().cloned().unwrap_or_default();
    let a = d.annotations;
    Tool::new(d.name, d.description, Arc::new(input))
        .with_title(d.title)
        .with_raw_output_schema(Arc::new(output))
        .with_annotations(
            ToolAnnotations::new()
                .read_only(a.read_only)
                .destructive(a.destructive)
                .idempotent(a.idempotent)
                .open_world(a.open_world),
        )
}

/// `_meta` values may be strings or objects; we record text.
fn meta_text(ctx: &RequestContext<RoleServer>, key: &str) -> Option<String> {
    as_text(ctx.meta.get(key)?)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn short_text(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    if text.len() <= TEXT_LIMIT {
        return text;
    }
    let cut: String = text.chars().take(TEXT_LIMIT).collect();
    format!("{cut}\n… (shortened; the full result is in structuredContent)")
}

impl ServerHandler for McpServer {
    #[allow(deprecated)] // logging: see the import above
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(
            Implementation::new("memberspot-hub", env!("CARGO_PKG_VERSION"))
                .with_title("Memberspot Hub"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let who = self
            .principal(&ctx)
            .await
            .map_err(|e| McpError::invalid_request(e.to_string(), None))?;
        let tools = self
            .hub
            .tools_for(&who)
            .map_err(|e| McpError::invalid_request(e.to_string(), None))?;
        let mut tools: Vec<Tool> = tools.into_iter().map(to_tool).collect();
        if connector::offered(&self.hub, &who) {
            tools.extend(connector::tools());
        }
        // Under twenty tools fit one page: no cursor is needed.
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.principal(&ctx).await.map_err(resources::hub_error)?;
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.principal(&ctx).await.map_err(resources::hub_error)?;
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let who = self.caller(&ctx).await.map_err(resources::hub_error)?;
        let call = self.call_context(&ctx);
        let uri = request.uri.as_str();
        let read = logging::with_progress(&ctx, call, |call| async move {
            resources::read(&self.hub, &who, &call, uri).await
        })
        .await;
        read.map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let who = self.principal(&ctx).await.map_err(resources::hub_error)?;
        Ok(ListPromptsResult::with_all_items(prompts::list(
            &self.hub, &who,
        )))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let who = self.caller(&ctx).await.map_err(resources::hub_error)?;
        let call = self.call_context(&ctx);
        prompts::get(
            &self.hub,
            &who,
            &call,
            &request.name,
            request.arguments.as_ref(),
        )
        .await
        .map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let who = self.caller(&ctx).await.map_err(resources::hub_error)?;
        let call = self.call_context(&ctx);
        completion::complete(&self.hub, &who, &call, &request)
            .await
            .map(CompleteResult::new)
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.principal(&ctx).await.map_err(resources::hub_error)?;
        self.log.set(request.level);
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.hub
            .catalogue()
            .get(name)
            .map(|e| to_tool(&e.descriptor))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let who = match self.caller(&ctx).await {
            Ok(w) => w,
            Err(e) => return Ok(error_result(&e).into()),
        };
        let mut call = self.call_context(&ctx);
        let args = request
            .arguments
            .map(Value::Object)
            .unwrap_or(Value::Object(Default::default()));
        let name = request.name.as_ref();
        if connector::is_connector_tool(name) && self.hub.catalogue().get(name).is_none() {
            return Ok(connector::call(&self.hub, &who, &call, name, &args)
                .await
                .into());
        }
        match confirm::ask(&self.hub, &who, &call, &ctx, name, &args).await {
            Ok(confirm::Answer::NotNeeded) => {}
            Ok(confirm::Answer::Confirmed(note)) => {
                call.prompt = Some(match call.prompt.take() {
                    Some(p) => format!("{p}\n{note}"),
                    None => note,
                });
            }
            Err(refusal) => return Ok(error_result(&refusal).into()),
        }
        let outcome = logging::with_progress(&ctx, call, |call| async move {
            self.hub.call(&who, &call, name, args).await
        })
        .await;
        self.log.after_call(&ctx.peer, name, &outcome).await;
        Ok(match outcome.result {
            Ok(v) => {
                let text = short_text(&v);
                let mut r = CallToolResult::structured(v);
                r.content = vec![ContentBlock::text(text)];
                r.into()
            }
            Err(e) => error_result(&e).into(),
        })
    }
}

/// A tool error the model can read and act on, never a broken session.
fn error_result(e: &HubError) -> CallToolResult {
    let mut r = CallToolResult::structured_error(json!({ "error": e.to_json() }));
    r.content = vec![ContentBlock::text(e.to_string())];
    r
}

/// Serves MCP over stdin/stdout until the client closes the stream.
pub async fn serve_stdio(server: McpServer) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// What `/mcp`'s authentication needs besides the hub.
#[derive(Clone)]
struct McpAuth {
    hub: Hub,
    public_url: Option<url::Url>,
    /// The OAuth endpoints are served: a `401` points clients to them (RFC 9728).
    oauth: bool,
}

/// The OAuth client a request's access token belongs to (`name (client id)`), for the
/// audit record of its calls.
#[derive(Clone, Debug)]
pub struct OAuthClientLabel(pub String);

/// Authenticates the bearer token of each MCP HTTP request: a persona token, or an OAuth
/// access token bound to this hub's `/mcp` URL.
async fn bearer_auth(State(auth): State<McpAuth>, mut req: Request, next: Next) -> Response {
    let hub = &auth.hub;
    let base = crate::public_url::base_url(auth.public_url.as_ref(), req.headers());
    let token = crate::http::auth::bearer(req.headers())
        .ok()
        .map(str::to_string);
    let result = match token {
        Some(t) if memberspot_hub::oauth::is_access_token(&t) => match &base {
            Some(base) => hub
                .authenticate_oauth(&t, &crate::public_url::mcp_resource(base))
                .await
                .map(|caller| {
                    req.extensions_mut()
                        .insert(OAuthClientLabel(caller.client));
                    caller.persona
                }),
            None => Err(HubError::Unauthenticated(
                "this hub has no public URL (`--public-url`), so it cannot check which resource the access token is for".into(),
            )),
        },
        Some(t) => hub.identify(&t).await,
        None => Err(HubError::Unauthenticated(
            "send `Authorization: Bearer <persona token>`, or sign in with OAuth".into(),
        )),
    };
    let refusal = match result {
        Ok(persona) if persona.revoked_at.is_none() => {
            req.extensions_mut().insert(persona);
            return next.run(req).await;
        }
        Ok(revoked) => {
            // Refused at the door like an unknown token, but a tool call is audited:
            // the hub refuses it and records who tried what.
            let id = req.extensions().get::<crate::request::RequestId>().cloned();
            let client = req.extensions().get::<OAuthClientLabel>().cloned();
            let body = axum::body::to_bytes(req.into_body(), crate::http::BODY_LIMIT)
                .await
                .unwrap_or_default();
            let name = revoked.name.clone();
            let mut calls = attempted_tool_calls(&body, id.as_ref()).into_iter();
            let refusal = match calls.next() {
                // One record per request, however many calls a batch carries.
                Some((tool, args, mut ctx)) => {
                    ctx.oauth_client = client.map(|c| c.0);
                    Some(
                        hub.record_revoked_request(revoked, &ctx, &tool, args, calls.len())
                            .await,
                    )
                }
                None => None,
            };
            refusal.unwrap_or_else(|| {
                HubError::Unauthenticated(format!("persona `{name}` has been revoked"))
            })
        }
        Err(e) => e,
    };
    // RFC 6750 §3 with RFC 9728 §5.1: where an OAuth client learns how to sign in.
    let challenge = match (&base, auth.oauth) {
        (Some(base), true) => format!(
            "Bearer resource_metadata=\"{}\", error=\"invalid_token\"",
            crate::public_url::resource_metadata_url(base)
        ),
        _ => "Bearer".to_string(),
    };
    let challenge = header::HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| header::HeaderValue::from_static("Bearer"));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        Json(json!({ "error": { "code": "unauthenticated", "message": refusal.to_string() } })),
    )
        .into_response()
}

/// The `tools/call` requests in a JSON-RPC body (one message or a batch): tool name,
/// arguments and the call context from `_meta`.
fn attempted_tool_calls(
    body: &[u8],
    id: Option<&crate::request::RequestId>,
) -> Vec<(String, Value, CallContext)> {
    let messages = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batch)) => batch,
        Ok(one) => vec![one],
        Err(_) => return Vec::new(),
    };
    messages
        .into_iter()
        .filter(|m| m["method"] == "tools/call")
        .filter_map(|m| {
            let params = &m["params"];
            let tool = params["name"].as_str()?.to_string();
            let mut ctx = crate::request::call_context(Surface::McpHttp, id);
            ctx.prompt = as_text(&params["_meta"]["prompt"]);
            ctx.end_user = as_text(&params["_meta"]["end_user"]);
            Some((tool, params["arguments"].clone(), ctx))
        })
        .collect()
}

/// `/mcp`: MCP over streamable HTTP. In order: the Origin check, bearer authentication,
/// the gate (body, JSON-RPC shape, session limits; see [`crate::mcp_guard`]), rmcp.
pub fn http_router(
    hub: Hub,
    settings: &crate::server::ServerSettings,
    cancel: CancellationToken,
) -> Router {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    hosts.extend(settings.allowed_hosts.iter().cloned());
    let origins = match AllowedOrigins::new(&settings.allowed_origins) {
        Ok(o) => o,
        Err(e) => {
            // The flag parser checked them; never fall open.
            tracing::error!(error = %e, "invalid allowed origin; only loopback origins are allowed");
            AllowedOrigins::new(&[]).unwrap_or_else(|_| unreachable!("loopback origins parse"))
        }
    };
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel.child_token())
        .with_allowed_hosts(hosts)
        // Checked first by `origin_guard`; rmcp checks again.
        .with_allowed_origins(origins.to_rmcp());
    config.max_request_body_bytes = crate::http::BODY_LIMIT;
    let book = SessionBook::new(settings.mcp_sessions);
    let sessions = Arc::new(BoundedSessions::new(book.clone()));
    let factory_hub = hub.clone();
    let service = StreamableHttpService::new(
        move || Ok(McpServer::http(factory_hub.clone())),
        sessions.clone(),
        config,
    );
    let gate = Gate {
        hub: hub.clone(),
        book,
        sessions,
        body_limit: crate::http::BODY_LIMIT,
    };
    Router::new()
        .route_service("/mcp", service)
        .route_layer(middleware::from_fn_with_state(gate, crate::mcp_guard::gate))
        .route_layer(middleware::from_fn_with_state(
            McpAuth {
                hub,
                public_url: settings.public_url.clone(),
                oauth: settings.oauth,
            },
            bearer_auth,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(origins),
            crate::mcp_guard::origin_guard,
        ))
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
}
