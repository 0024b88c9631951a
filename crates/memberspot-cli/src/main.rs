//! `memberspot`: parse, set up logging, dispatch. Commands live in `commands/`.

use std::process::ExitCode;

mod cli;
mod commands;
mod config;
mod connection;
mod local_school;
mod output;

// Calls hand buffers between threads (HTTP, the store's workers); glibc's allocator
// pays for that in arena locks, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    end_quietly_on_a_closed_pipe();
    let cli = cli::Cli::parse_args(cli::normalize_args(std::env::args_os()));
    let json_logs =
        matches!(&cli.command, cli::Command::Serve(a) if a.log_format == cli::LogFormat::Json);
    let level = match (&cli.command, cli.global.verbose) {
        // A server says what it does (info, no debug lines) unless asked otherwise.
        (cli::Command::Serve(_), 0) => "info",
        (_, 0) => "warn",
        (_, 1) => "info,memberspot=debug",
        _ => "debug",
    };
    init_tracing(level, json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.global.json;
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => output::report_error(&err, json),
    }
}

/// `memberspot completions zsh | head -1`: the reader has gone. Rust's printing macros
/// panic on a closed pipe; end quietly with success instead, as other command-line tools
/// do (errors returned as values are handled in `output::report_error`).
fn end_quietly_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("Broken pipe") || text.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Logs go to stderr only, so stdout stays clean for `--json`, pipes and MCP over stdio.
fn init_tracing(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMBERSPOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        // One object per line; a request's id and client address come with its span.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
