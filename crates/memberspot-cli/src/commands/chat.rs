//! `memberspot chat --persona NAME`: talk to a persona's language model in the
//! terminal. The model sees only the persona's tools; every call goes through the hub
//! (audited with your message as the prompt, surface `cli`); destructive calls are
//! asked about first. The model comes from `<data dir>/models.toml` (see
//! `memberspot_agent::config`), or `--model NAME` from the same file.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use memberspot_agent::{
    CallStatus, ChatEvent, ChatSession, Model, ModelsConfig, PendingCall, Turn,
};
use memberspot_hub::Surface;
use tokio::sync::mpsc;

use crate::cli::Global;
use crate::connection::{close_hub, data_dir, open_hub};
use crate::output::print_json;

/// Chat with a persona: a language model calls the persona's tools for you.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The persona comes from the global --persona (or MEMBERSPOT_PERSONA); its model from\n\
    the models file (--models, default <data dir>/models.toml: [personas.NAME] model = \"…\",\n\
    or default_model). Type /quit to leave.\n\n\
    Examples:\n  memberspot chat --persona support-bot\n  \
    memberspot chat --persona support-bot --once \"Which offers do we have?\" --json"
)]
pub struct ChatArgs {
    /// Use this model from the models file instead of the persona's
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Ask one question, print the answer and exit (with --json: the whole turn as JSON)
    #[arg(long, value_name = "QUESTION")]
    pub once: Option<String>,
    /// Run tool calls that wait for confirmation (writes and destructive ones, see `confirm` in
    /// models.toml) without asking; without a terminal they are otherwise declined
    #[arg(long, short)]
    pub yes: bool,
}

pub async fn run(args: ChatArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let Some(persona) = global.persona.clone() else {
        bail!(
            "chat needs a persona: memberspot chat --persona NAME (see `memberspot personas list`)"
        );
    };
    let (hub, sandbox, file) = open_hub(global).await?;
    let result = async {
        // The global --models (MEMBERSPOT_MODELS), shared with the summaries.
        let path = global
            .models
            .clone()
            .unwrap_or_else(|| ModelsConfig::default_path(&data_dir(global, &file)));
        let config = ModelsConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
        let (model_config, settings) = config
            .for_persona(&persona, args.model.as_deref())
            .map_err(anyhow::Error::msg)?;
        let p = hub.persona(&persona).await?;
        let model = Model::new(model_config).context("the chat model")?;
        let c = model.config();
        eprintln!(
            "Chatting as persona `{}` ({}; scopes: {}) with {} `{}` at {}.",
            p.name,
            p.connection,
            p.scopes.join(", "),
            c.provider,
            c.model,
            c.host()
        );
        let session = ChatSession::new(hub.clone(), persona.clone(), model, settings.limits)
            .surface(Surface::Cli)
            .end_user(std::env::var("USER").ok())
            .system_prompt(settings.system_prompt)
            .on_event(show_event);
        converse(session, &args, global.json).await
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result
}

async fn converse(
    mut session: ChatSession,
    args: &ChatArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut lines = Input::default();
    if let Some(question) = &args.once {
        let turn = turn(&mut session, question, &mut lines, args.yes, json).await?;
        if json {
            print_json(&turn)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("Type your request; /quit to leave.");
    loop {
        eprint!("you> ");
        std::io::stderr().flush()?;
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else {
            eprintln!();
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line, "/quit" | "/exit" | "/q") {
            break;
        }
        // A failed turn (model down, time-out) is reported; the conversation goes on.
        match turn(&mut session, line, &mut lines, args.yes, json).await {
            Ok(t) if json => print_json(&t)?,
            Ok(_) => {}
            Err(e) => eprintln!("error: {}", crate::output::describe(&e)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one turn, asking about each call that needs confirmation, and prints the answer (unless
/// `json`: then the caller prints the turn).
async fn turn(
    session: &mut ChatSession,
    text: &str,
    lines: &mut Input,
    yes: bool,
    json: bool,
) -> anyhow::Result<Turn> {
    let mut printed = 0;
    let mut t = session.send(text).await?;
    while let Some(p) = t.pending.clone() {
        if !json && t.answer.len() > printed {
            println!("{}", t.answer[printed..].trim());
            printed = t.answer.len();
        }
        let approve = ask(&p, lines, yes).await?;
        t = session.confirm(&p.id, approve).await?;
    }
    if !json {
        for n in &t.notices {
            eprintln!("note: {n}");
        }
        let rest = t.answer.get(printed..).unwrap_or_default().trim();
        if !rest.is_empty() {
            println!("{rest}");
        }
    }
    Ok(t)
}

/// Asks before a call that needs confirmation; without a terminal (and without `--yes`) the answer is no.
async fn ask(p: &PendingCall, lines: &mut Input, yes: bool) -> anyhow::Result<bool> {
    let call = format!("`{}` {}", p.tool, short(&p.args.to_string(), 300));
    if yes {
        eprintln!("  running {call} (--yes)");
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "  declined {call}: {} (pass --yes to run it without a terminal)",
            p.reason
        );
        return Ok(false);
    }
    eprint!(
        "The model wants to run {call}.\n{}. Run it? [y/N] ",
        p.reason
    );
    std::io::stderr().flush()?;
    let answer = lines.next_line().await?.unwrap_or_default();
    Ok(matches!(
        answer.trim().to_lowercase().as_str(),
        "y" | "yes" | "j" | "ja"
    ))
}

/// Standard input, line by line, read on a thread of its own: tokio's stdin reads on
/// the runtime's blocking pool, which would keep the process from exiting (after
/// Ctrl-C) until Enter is pressed. Started on first use, so `--once` without
/// confirmations never touches stdin.
#[derive(Default)]
struct Input {
    rx: Option<mpsc::Receiver<std::io::Result<String>>>,
}

impl Input {
    async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let rx = self.rx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(1);
            std::thread::spawn(move || {
                let stdin = std::io::stdin();
                loop {
                    let mut line = String::new();
                    match stdin.lock().read_line(&mut line) {
                        // End of input: dropping the sender ends `recv` with None.
                        Ok(0) => break,
                        Ok(_) => {
                            if tx.blocking_send(Ok(line)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            break;
                        }
                    }
                }
            });
            rx
        });
        match rx.recv().await {
            None => Ok(None),
            Some(Ok(line)) => Ok(Some(line.trim_end_matches(['\n', '\r']).to_string())),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("reading standard input")),
        }
    }
}

/// Tool calls as they happen, on stderr.
fn show_event(e: ChatEvent<'_>) {
    match e {
        ChatEvent::Calling { tool, args } => {
            eprintln!("  → {tool} {}", short(&args.to_string(), 200));
        }
        ChatEvent::Called(c) => match c.outcome {
            CallStatus::Ok => eprintln!("  ✓ {}", c.tool),
            _ => eprintln!(
                "  ✗ {}: {}",
                c.tool,
                short(c.error.as_deref().unwrap_or("failed"), 300)
            ),
        },
        ChatEvent::NeedsConfirmation(_) => {}
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
