//! `memberspot mcp`: MCP over stdio for desktop agents. stdout belongs to
//! the protocol; everything for people goes to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use memberspot_hub::SANDBOX_CONNECTION;
use memberspot_hub::store::Persona;
use memberspot_server::mcp::{McpServer, StdioIdentity, serve_stdio};

use crate::cli::{Global, McpArgs};
use crate::connection::{close_hub, open_hub_as};
use crate::local_school::Role;

/// The persona used when none is given: read-only, on the sandbox, in memory.
fn local_default() -> Persona {
    Persona {
        id: "local".into(),
        name: "local".into(),
        description: "read-only default persona of `memberspot mcp` without --persona/--token"
            .into(),
        connection: SANDBOX_CONNECTION.into(),
        scopes: vec!["read".into()],
        offer_ids: None,
        calls_per_minute: None,
        token_hash: String::new(),
        token_prefix: String::new(),
        created_at: 0,
        updated_at: 0,
        revoked_at: None,
    }
}

pub async fn run(args: McpArgs, global: &Global) -> anyhow::Result<ExitCode> {
    if global.persona.is_some() && args.token.is_some() {
        return Err(crate::output::Usage("give --persona or --token, not both".into()).into());
    }
    let (hub, sandbox, _) = open_hub_as(global, Role::Service).await?;
    let identity = match (&global.persona, &args.token) {
        (Some(name), _) => {
            let p = hub.persona(name).await?;
            eprintln!(
                "memberspot mcp: serving as persona `{}` on `{}` (scopes: {})",
                p.name,
                p.connection,
                p.scopes.join(", ")
            );
            StdioIdentity::Persona(name.clone())
        }
        (None, Some(token)) => {
            let p = hub.authenticate(token).await?;
            eprintln!(
                "memberspot mcp: serving as persona `{}` on `{}` (scopes: {})",
                p.name,
                p.connection,
                p.scopes.join(", ")
            );
            StdioIdentity::Token(Arc::from(token.as_str()))
        }
        (None, None) => {
            eprintln!(
                "memberspot mcp: no --persona or --token given: serving as the local read-only default persona \
                 on the `sandbox` connection. Create a persona with `memberspot personas create NAME` for more."
            );
            StdioIdentity::Fixed(local_default())
        }
    };
    let result = serve_stdio(McpServer::stdio(hub.clone(), identity)).await;
    close_hub(&hub, sandbox).await?;
    result?;
    Ok(ExitCode::SUCCESS)
}
