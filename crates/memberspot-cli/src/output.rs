//! How results reach people (tables, progress bars, prompts on stderr) and
//! scripts (`--json` on stdout, exit codes).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use memberspot_hub::HubError;
use memberspot_tools::ToolError;
use serde::Serialize;

/// Exit code for bad arguments or usage, as clap uses.
pub const EXIT_USAGE: u8 = 2;

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().copied());
    t
}

pub fn print_table(t: &Table) {
    println!("{t}");
}

/// Asks before something irreversible. Off a terminal, `--yes` is required: without it
/// the command is a usage error (exit 2), since nothing was tried.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Usage(format!(
            "{question} Refusing without confirmation: pass --yes to run this non-interactively"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(
        answer.trim().to_lowercase().as_str(),
        "y" | "yes" | "j" | "ja"
    ) {
        Ok(())
    } else {
        bail!("cancelled; nothing was changed")
    }
}

/// A progress bar on stderr (hidden automatically when stderr is not a terminal).
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bad flag value or argument found after parsing (exit code 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Prints an error (as JSON on stderr with `--json`) and picks the exit code.
pub fn report_error(err: &anyhow::Error, json: bool) -> ExitCode {
    // `memberspot audit tail --json | head`: the reader is gone; stop quietly, like other
    // command-line tools.
    let broken_pipe = err.chain().any(|c| {
        let kind = c
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    let invalid_call = |e: &ToolError| {
        matches!(
            e,
            ToolError::InvalidArguments { .. } | ToolError::UnknownTool { .. }
        )
    };
    let hub_err = err.downcast_ref::<HubError>();
    let tool_err = err.downcast_ref::<ToolError>().or(match hub_err {
        Some(HubError::Tool(e)) => Some(e),
        _ => None,
    });
    let usage = err.downcast_ref::<Usage>().is_some()
        || matches!(hub_err, Some(HubError::Invalid(_)))
        || tool_err.is_some_and(invalid_call);
    if json {
        let body = match (tool_err, hub_err) {
            (Some(e), _) => e.to_json(),
            (None, Some(e)) => e.to_json(),
            (None, None) => flows_json(err)
                .or_else(|| {
                    err.downcast_ref::<memberspot_hub::backup::BackupError>()
                        .map(|e| serde_json::json!({ "code": e.code(), "message": e.to_string() }))
                })
                .unwrap_or_else(
                    || serde_json::json!({ "code": "error", "message": describe(err) }),
                ),
        };
        eprintln!("{}", serde_json::json!({ "error": body }));
    } else {
        eprintln!("error: {}", describe(err));
    }
    ExitCode::from(if usage { EXIT_USAGE } else { 1 })
}

/// The flows' own errors with their codes: a flow, sync or export name the flows file does
/// not have is `not_found`, a failed tool call keeps the hub's code.
fn flows_json(err: &anyhow::Error) -> Option<serde_json::Value> {
    if let Some(e) = err.downcast_ref::<memberspot_flows::FlowsError>() {
        return Some(e.to_json());
    }
    err.downcast_ref::<memberspot_flows::runner::RunError>()
        .map(memberspot_flows::runner::RunError::to_json)
}

/// The error and its causes, joined by ": ", leaving out a cause whose text is already
/// there (many errors name their cause in their own message).
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Writes a file only its owner can read (tokens, keys), replacing any old one.
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)?;
    Ok(())
}
