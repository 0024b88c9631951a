//! One file per command family. Commands hold no business logic: they turn
//! arguments into tool calls through the hub (the same path MCP and REST
//! use, so every call is audited) or into hub admin operations, and render.

pub(crate) mod audit;
pub mod chat;
mod check;
mod connections;
mod doctor;
mod events;
mod flows;
mod grant;
mod login_link;
mod mcp;
mod personas;
mod progress;
mod sandbox;
mod school;
mod serve;
mod tools;
mod users;

use std::process::ExitCode;

use clap::CommandFactory;
use memberspot_hub::{CallContext, HubError, Principal, Surface};
use memberspot_tools::Catalogue;
use serde_json::Value;

use crate::cli::{Cli, Command, Global};
use crate::connection::{self, Session};

/// What every tool command gets: the connection, the catalogue and output mode.
pub struct Ctx {
    pub session: Session,
    pub catalogue: Catalogue,
    pub json: bool,
    pub reason: Option<String>,
}

impl Ctx {
    /// Calls a tool through the hub (audited, surface `cli`). A tool failure
    /// stays a [`memberspot_tools::ToolError`] so the exit code and the JSON
    /// error can be derived from it.
    pub async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Value> {
        let mut cx = CallContext::new(Surface::Cli);
        cx.prompt = self.reason.clone();
        cx.end_user = std::env::var("USER").ok();
        let s = &self.session;
        // A persona is re-read on every call, so a revocation applies mid-run; a revoked
        // one's call is refused by the hub, which records the attempt.
        let principal = match &s.principal {
            Principal::Persona(p) => Principal::Persona(s.hub.find_persona(&p.name).await?),
            operator => operator.clone(),
        };
        match s
            .hub
            .call_on(&principal, &cx, tool, args, s.client.clone())
            .await
            .result
        {
            Ok(v) => Ok(v),
            Err(HubError::Tool(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { global, command } = cli;
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "memberspot",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(cmd) => sandbox::run(cmd, &global).await,
        Command::Tools(crate::cli::ToolsCommand::List) => tools::list(global.json),
        Command::Tools(crate::cli::ToolsCommand::Describe { name }) => {
            tools::describe(&name, global.json)
        }
        Command::Serve(args) => serve::run(args, &global).await,
        Command::Mcp(args) => mcp::run(args, &global).await,
        Command::Connections(cmd) => connections::run(cmd, &global).await,
        Command::Personas(cmd) => personas::run(cmd, &global).await,
        Command::Audit(cmd) => audit::run(cmd, &global).await,
        Command::Events(cmd) => events::run(cmd, &global).await,
        Command::Rules(cmd) => events::rules(cmd, &global).await,
        Command::Digest(args) => flows::digest(args, &global).await,
        Command::Flows(cmd) => flows::run(cmd, &global).await,
        Command::Sync(cmd) => flows::sync(cmd, &global).await,
        Command::Chat(args) => chat::run(args, &global).await,
        Command::AdminToken => personas::admin_token(&global).await,
        Command::MasterKey(cmd) => connections::master_key(cmd, &global).await,
        command => with_session(&global, command).await,
    }
}

async fn with_session(global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    let session = connection::open(global).await?;
    let ctx = Ctx {
        session,
        catalogue: Catalogue::standard(),
        json: global.json,
        reason: global.reason.clone(),
    };
    let result = dispatch(&ctx, command).await;
    // Persist the embedded school even when the command failed half-way.
    let closed = ctx.session.close().await;
    let code = result?;
    closed?;
    Ok(code)
}

async fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Tools(cmd) => tools::run(ctx, cmd).await,
        Command::Users(cmd) => users::run(ctx, cmd).await,
        Command::Offers(_) => school::offers(ctx).await,
        Command::Properties(_) => school::properties(ctx).await,
        Command::Exams(crate::cli::ExamsCommand::Results { exam_id }) => {
            school::exam_results(ctx, &exam_id).await
        }
        Command::Progress(args) => progress::run(ctx, args).await,
        Command::LoginLink(args) => login_link::run(ctx, args).await,
        Command::Check => check::run(ctx).await,
        Command::Doctor(args) => doctor::run(ctx, args).await,
        _ => Ok(ExitCode::SUCCESS),
    }
}
