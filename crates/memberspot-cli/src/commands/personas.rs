use std::process::ExitCode;

use memberspot_hub::admin::{PersonaSpec, PersonaView};
use secrecy::ExposeSecret;
use serde_json::json;

use memberspot_hub::SANDBOX_CONNECTION;

use crate::cli::{Global, PersonasCommand};
use crate::connection::{cli_actor, close_hub, hub_settings, open_hub};
use crate::output::{print_json, print_table, table};

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

pub async fn run(cmd: PersonasCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, _) = open_hub(global).await?;
    let json = global.json;
    let result = async {
        match cmd {
            PersonasCommand::Create { name, scopes, offers, per_minute, description, replace_revoked } => {
                let spec = PersonaSpec {
                    name,
                    description,
                    connection: Some(global.connection.clone().unwrap_or_else(|| SANDBOX_CONNECTION.to_string())),
                    scopes,
                    offer_ids: offers,
                    calls_per_minute: per_minute,
                };
                let acting = hub.acting_as(cli_actor());
                let t = if replace_revoked { acting.recreate_persona(spec).await? } else { acting.create_persona(spec).await? };
                if json {
                    let mut v = serde_json::to_value(PersonaView::from(&t.persona))?;
                    v["token"] = json!(t.token.expose_secret());
                    print_json(&v)?;
                } else {
                    println!("persona `{}` created on `{}` with scopes {}", t.persona.name, t.persona.connection, t.persona.scopes.join(", "));
                    println!();
                    println!("  token: {}", t.token.expose_secret());
                    println!();
                    println!("The token is shown only now. Give it to the agent, e.g.:");
                    println!("  MEMBERSPOT_TOKEN=<token> memberspot mcp            (stdio, desktop agents)");
                    println!("  Authorization: Bearer <token>  on http://HOST/mcp  (streamable HTTP) or /v1/tools/...");
                }
            }
            PersonasCommand::List => {
                let ps: Vec<PersonaView> = hub.list_personas().await?.iter().map(PersonaView::from).collect();
                if json {
                    print_json(&ps)?;
                } else {
                    let mut t = table(&["name", "connection", "scopes", "offers", "per minute", "token", "state"]);
                    for p in &ps {
                        t.add_row(vec![
                            p.name.clone(),
                            p.connection.clone(),
                            p.scopes.join(", "),
                            p.offer_ids.as_ref().map(|o| o.join(", ")).unwrap_or_else(|| "any".into()),
                            p.calls_per_minute.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                            format!("{}…", p.token_prefix),
                            p.revoked_at.map(|r| format!("revoked {}", when(r))).unwrap_or_else(|| "active".into()),
                        ]);
                    }
                    print_table(&t);
                }
            }
            PersonasCommand::Show { name } => {
                let p = hub.persona_any(&name).await?;
                let view = PersonaView::from(&p);
                if json {
                    print_json(&view)?;
                } else {
                    // Stored scopes that no longer parse are shown as such, not as "no tools".
                    let tools = match hub.tools_for(&memberspot_hub::Principal::Persona(p.clone())) {
                        Ok(tools) => tools.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
                        Err(e) => format!("none: {e}"),
                    };
                    println!("name:        {}", view.name);
                    println!("description: {}", view.description);
                    println!("connection:  {}", view.connection);
                    println!("scopes:      {}", view.scopes.join(", "));
                    println!("offers:      {}", view.offer_ids.map(|o| o.join(", ")).unwrap_or_else(|| "any".into()));
                    println!("per minute:  {}", view.calls_per_minute.map(|n| n.to_string()).unwrap_or_else(|| "no limit".into()));
                    println!("token:       {}…", view.token_prefix);
                    println!("created:     {}", when(view.created_at));
                    println!("state:       {}", view.revoked_at.map(|r| format!("revoked {}", when(r))).unwrap_or_else(|| "active".into()));
                    println!("tools:       {tools}");
                }
            }
            PersonasCommand::GrantScope { name, scopes, replace } => {
                let p = hub.acting_as(cli_actor()).set_persona_scopes(&name, &scopes, !replace, None, None).await?;
                if json {
                    print_json(&PersonaView::from(&p))?;
                } else {
                    println!("persona `{}` now has scopes {}", p.name, p.scopes.join(", "));
                }
            }
            PersonasCommand::Revoke { name } => {
                let changed = hub.acting_as(cli_actor()).revoke_persona(&name).await?;
                if json {
                    print_json(&json!({ "name": name, "revoked": true, "changed": changed }))?;
                } else if changed {
                    println!("persona `{name}` revoked: its next call is refused; other personas and the school's key are untouched");
                } else {
                    println!("persona `{name}` was already revoked");
                }
            }
            PersonasCommand::RotateToken { name } => {
                let t = hub.acting_as(cli_actor()).rotate_persona_token(&name).await?;
                if json {
                    print_json(&json!({ "name": t.persona.name, "token": t.token.expose_secret() }))?;
                } else {
                    println!("new token for `{}` (the old one no longer works):\n\n  {}\n", t.persona.name, t.token.expose_secret());
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    close_hub(&hub, sandbox).await?;
    result.map(|_| ExitCode::SUCCESS)
}

pub async fn admin_token(global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, file) = open_hub(global).await?;
    let token = hub.issue_admin_token().await;
    close_hub(&hub, sandbox).await?;
    let token = token?;
    // The file `serve` wrote on first start would otherwise hold a token that no longer works.
    let path = hub_settings(global, &file).data_dir.join("admin.token");
    crate::output::write_private(&path, token.expose_secret())?;
    if global.json {
        print_json(&json!({ "admin_token": token.expose_secret(), "file": path }))?;
    } else {
        println!(
            "admin token (replaces any earlier one; also written to {}):\n\n  {}\n",
            path.display(),
            token.expose_secret()
        );
        println!(
            "Use it as `Authorization: Bearer <token>` on /v1/personas, /v1/connections and /v1/audit."
        );
    }
    Ok(ExitCode::SUCCESS)
}
