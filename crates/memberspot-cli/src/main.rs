//! `memberspot`: parse, set up logging, dispatch. Commands live in `commands/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod config;
mod connection;
mod output;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(cli::normalize_args(std::env::args_os()));
    init_tracing(cli.global.verbose);
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

/// Logs go to stderr only, so stdout stays clean for `--json` and pipes.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,memberspot=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMBERSPOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
