//! One file per command family. Commands hold no business logic: they turn
//! arguments into tool calls through the hub (the same path MCP and REST
//! use, so every call is audited) or into hub admin operations, and render.

pub(crate) mod audit;
pub mod chat;
mod check;
mod connections;
mod console;
mod doctor;
mod events;
mod flows;
mod grant;
mod login_link;
mod mcp;
mod oauth;
mod personas;
mod progress;
mod sandbox;
mod school;
mod serve;
mod tools;
mod users;

use std::process::ExitCode;

use clap::CommandFactory;
use futures::{Stream, TryStreamExt};
use memberspot_api::wire::{CourseProgress, User};
use memberspot_hub::offer_names::OfferNames;
use memberspot_hub::{CallContext, HubError, ListOptions, Surface};
use memberspot_tools::Catalogue;
use memberspot_tools::tools::{ListProgressInput, ListUsersInput};
use serde_json::Value;

use crate::cli::{
    Cli, Command, ExamsCommand, Global, OffersCommand, PropertiesCommand, ToolsCommand,
};
use crate::connection::{self, Session};

/// What every tool command gets: the connection, the catalogue and output mode.
pub struct Ctx {
    pub session: Session,
    pub catalogue: Catalogue,
    pub json: bool,
    pub reason: Option<String>,
    /// The school's offers, read once for the command (names next to ids, names for ids).
    pub offers: OfferNames,
}

impl Ctx {
    /// Calls a tool through the hub (audited, surface `cli`). A tool failure
    /// stays a [`memberspot_tools::ToolError`] so the exit code and the JSON
    /// error can be derived from it.
    pub async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Value> {
        let cx = self.call_context();
        let s = &self.session;
        // A persona is re-read on every call, so a revocation applies mid-run; a revoked
        // one's call is refused by the hub, which records the attempt.
        let principal = s.hub.current(&s.principal).await?;
        s.hub
            .call_on(&principal, &cx, tool, args, s.client.clone())
            .await
            .result
            .map_err(cli_error)
    }

    /// Every member matching `filter`, page by page through the hub (each page audited
    /// as a `list_users` call; the persona re-read for each).
    pub fn users(
        &self,
        filter: ListUsersInput,
        max_items: Option<usize>,
    ) -> impl Stream<Item = anyhow::Result<User>> + Send + use<> {
        let s = &self.session;
        s.hub
            .users_stream(
                &s.principal,
                &self.call_context(),
                filter,
                self.list_options(max_items),
            )
            .map_err(cli_error)
    }

    /// A member's progress in every course, page by page through the hub.
    pub fn progress(
        &self,
        request: ListProgressInput,
    ) -> impl Stream<Item = anyhow::Result<CourseProgress>> + Send + use<> {
        let s = &self.session;
        s.hub
            .progress_stream(
                &s.principal,
                &self.call_context(),
                request,
                self.list_options(None),
            )
            .map_err(cli_error)
    }

    /// The offer id `--offer` (`flag`) stands for: an id, or an offer's name; an unknown
    /// or ambiguous one is an error listing the candidates.
    pub async fn offer_id(
        &self,
        flag: &str,
        given: Option<String>,
    ) -> anyhow::Result<Option<String>> {
        match given {
            Some(g) => Ok(Some(
                self.offers.resolve(flag, &g).await.map_err(cli_error)?,
            )),
            None => Ok(None),
        }
    }

    fn list_options(&self, max_items: Option<usize>) -> ListOptions {
        ListOptions {
            max_items,
            client: self.session.client.clone(),
            before_page: None,
        }
    }

    fn call_context(&self) -> CallContext {
        call_context(self.reason.clone())
    }
}

/// A CLI call's context: surface `cli`, the `--reason` as its prompt, the local user.
fn call_context(reason: Option<String>) -> CallContext {
    let mut cx = CallContext::new(Surface::Cli);
    cx.prompt = reason;
    cx.end_user = std::env::var("USER").ok();
    cx
}

/// A tool failure stays a [`memberspot_tools::ToolError`] so the exit code and the JSON
/// error can be derived from it.
fn cli_error(e: HubError) -> anyhow::Error {
    match e {
        HubError::Tool(e) => e.into(),
        e => e.into(),
    }
}

/// Every command is routed here, by an exhaustive match: a new command that is parsed
/// but not routed does not compile.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { global, command } = cli;
    let g = &global;
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
        Command::Sandbox(cmd) => sandbox::run(cmd, g).await,
        Command::Tools(ToolsCommand::List) => tools::list(g.json),
        Command::Tools(ToolsCommand::Describe { name }) => tools::describe(&name, g.json),
        Command::Serve(args) => serve::run(args, g).await,
        Command::Mcp(args) => mcp::run(args, g).await,
        Command::Connections(cmd) => connections::run(cmd, g).await,
        Command::Personas(cmd) => personas::run(cmd, g).await,
        Command::Console(cmd) => console::run(cmd, g).await,
        Command::Oauth(cmd) => oauth::run(cmd, g).await,
        Command::Audit(cmd) => audit::run(cmd, g).await,
        Command::Events(cmd) => events::run(cmd, g).await,
        Command::Rules(cmd) => events::rules(cmd, g).await,
        Command::Digest(args) => flows::digest(args, g).await,
        Command::Flows(cmd) => flows::run(cmd, g).await,
        Command::Sync(cmd) => flows::sync(cmd, g).await,
        Command::Chat(args) => chat::run(args, g).await,
        Command::AdminToken => personas::admin_token(g).await,
        Command::MasterKey(cmd) => connections::master_key(cmd, g).await,
        // Commands on a school: a session (connection, catalogue) around the command.
        Command::Tools(ToolsCommand::Call(call)) => {
            with_session(g, async |ctx| tools::call(ctx, call).await).await
        }
        Command::Users(cmd) => with_session(g, async |ctx| users::run(ctx, cmd).await).await,
        Command::Offers(OffersCommand::List) => with_session(g, school::offers).await,
        Command::Properties(PropertiesCommand::List) => with_session(g, school::properties).await,
        Command::Exams(ExamsCommand::Results { exam_id }) => {
            with_session(g, async |ctx| school::exam_results(ctx, &exam_id).await).await
        }
        Command::Progress(args) => {
            with_session(g, async |ctx| progress::run(ctx, args).await).await
        }
        Command::LoginLink(args) => {
            with_session(g, async |ctx| login_link::run(ctx, args).await).await
        }
        Command::Check => with_session(g, check::run).await,
        Command::Doctor(args) => with_session(g, async |ctx| doctor::run(ctx, args).await).await,
    }
}

/// Runs `command` with a session on the school the flags name, and closes the session
/// (persisting the embedded school) whether it succeeded or not.
async fn with_session(
    global: &Global,
    command: impl AsyncFnOnce(&Ctx) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let session = connection::open(global).await?;
    let offers = OfferNames::new(
        &session.hub,
        session.principal.clone(),
        call_context(global.reason.clone()),
    )
    .on_client(session.client.clone());
    let ctx = Ctx {
        session,
        catalogue: Catalogue::standard(),
        json: global.json,
        reason: global.reason.clone(),
        offers,
    };
    let result = command(&ctx).await;
    // Persist the embedded school even when the command failed half-way.
    let closed = ctx.session.close().await;
    let code = result?;
    closed?;
    Ok(code)
}
