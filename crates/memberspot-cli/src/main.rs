//! `memberspot`: parse, set up logging, dispatch. Commands live in `commands/`.

use std::process::ExitCode;

use clap::Parser;

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
    let cli = cli::Cli::parse_from(cli::normalize_args(std::env::args_os()));
    let json_logs =
        matches!(&cli.command, cli::Command::Serve(a) if a.log_format == cli::LogFormat::Json);
    let verbose = match &cli.command {
        // A server says what it does unless asked to be quiet.
        cli::Command::Serve(_) => cli.global.verbose.max(1),
        _ => cli.global.verbose,
    };
    init_tracing(verbose, json_logs);
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

/// Logs go to stderr only, so stdout stays clean for `--json`, pipes and MCP over stdio.
fn init_tracing(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info,memberspot=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMBERSPOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
