//! `memberspot console …`: the web console's users, over the hub's console operations.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};
use memberspot_hub::console::ConsoleRole;
use secrecy::SecretString;
use serde_json::json;

use crate::cli::{ConsoleCommand, ConsoleRoleArg, Global};
use crate::connection::{close_hub, open_hub};
use crate::output::{print_json, print_table, table};

/// The password: the first line of stdin with `--password-stdin`, else asked twice on a
/// terminal (not echoed). Never an argument: arguments show up in `ps` and shell history.
fn read_password(stdin: bool) -> anyhow::Result<SecretString> {
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\n', '\r']).to_owned();
        if p.is_empty() {
            bail!("the password on stdin is empty");
        }
        return Ok(SecretString::from(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: pass --password-stdin, or run on a terminal to be asked");
    }
    let a =
        rpassword::prompt_password("Password (input hidden): ").context("reading the password")?;
    let b = rpassword::prompt_password("Repeat it: ").context("reading the password")?;
    if a != b {
        bail!("the two passwords differ");
    }
    Ok(SecretString::from(a))
}

fn role(r: ConsoleRoleArg) -> ConsoleRole {
    match r {
        ConsoleRoleArg::Owner => ConsoleRole::Owner,
        ConsoleRoleArg::Viewer => ConsoleRole::Viewer,
    }
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

pub async fn run(cmd: ConsoleCommand, global: &Global) -> anyhow::Result<ExitCode> {
    // Read the password before opening the hub: a wrong invocation changes nothing.
    let password = match &cmd {
        ConsoleCommand::AddUser { password_stdin, .. }
        | ConsoleCommand::ResetPassword { password_stdin, .. } => {
            Some(read_password(*password_stdin)?)
        }
        _ => None,
    };
    let (hub, sandbox, _) = open_hub(global).await?;
    let json = global.json;
    let result = async {
        match cmd {
            ConsoleCommand::AddUser { name, role: r, .. } => {
                let p = password.unwrap_or_default();
                let u = hub.add_console_user(&name, &p, role(r)).await?;
                if json {
                    print_json(&json!({ "name": u.name, "role": u.role, "created_at": u.created_at }))?;
                } else {
                    println!("console user `{}` added ({})", u.name, u.role);
                }
            }
            ConsoleCommand::ListUsers => {
                let users = hub.list_console_users().await?;
                if json {
                    let v: Vec<_> = users
                        .iter()
                        .map(|u| json!({ "name": u.name, "role": u.role, "created_at": u.created_at, "updated_at": u.updated_at }))
                        .collect();
                    print_json(&v)?;
                } else if users.is_empty() {
                    println!("no console users yet: `memberspot serve` prints a setup link, or add one with");
                    println!("  memberspot console add-user NAME --role owner --password-stdin");
                } else {
                    let mut t = table(&["name", "role", "created", "password changed"]);
                    for u in &users {
                        t.add_row(vec![u.name.clone(), u.role.to_string(), when(u.created_at), when(u.updated_at)]);
                    }
                    print_table(&t);
                }
            }
            ConsoleCommand::RemoveUser { name } => {
                hub.remove_console_user(&name).await?;
                if json {
                    print_json(&json!({ "name": name, "removed": true }))?;
                } else {
                    println!("console user `{name}` removed; their sessions ended");
                }
            }
            ConsoleCommand::ResetPassword { name, .. } => {
                let p = password.unwrap_or_default();
                hub.reset_console_password(&name, &p).await?;
                if json {
                    print_json(&json!({ "name": name, "password_reset": true }))?;
                } else {
                    println!("password of `{name}` changed; their sessions ended");
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result?;
    Ok(ExitCode::SUCCESS)
}
