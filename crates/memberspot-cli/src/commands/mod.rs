//! One file per command family. Commands hold no business logic: they turn
//! arguments into tool calls (the same path MCP and REST use) and render.

mod check;
mod grant;
mod login_link;
mod progress;
mod sandbox;
mod school;
mod tools;
mod users;

use std::process::ExitCode;

use clap::CommandFactory;
use memberspot_tools::Catalogue;
use serde_json::Value;

use crate::cli::{Cli, Command, Global};
use crate::connection::{self, Session};

/// What every command gets: the connection, the catalogue and output mode.
pub struct Ctx {
    pub session: Session,
    pub catalogue: Catalogue,
    pub json: bool,
}

impl Ctx {
    /// Calls a tool by name; a failure keeps its [`memberspot_tools::ToolError`]
    /// so the exit code and JSON error can be derived from it.
    pub async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Value> {
        Ok(self
            .catalogue
            .call(&self.session.client, tool, args)
            .await?)
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
        command => with_session(&global, command).await,
    }
}

async fn with_session(global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    let session = connection::open(global).await?;
    let ctx = Ctx {
        session,
        catalogue: Catalogue::standard(),
        json: global.json,
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
        Command::Completions { .. } | Command::Sandbox(_) => Ok(ExitCode::SUCCESS),
    }
}
