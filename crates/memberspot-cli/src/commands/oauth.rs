//! `memberspot oauth …`: the apps that sign in to `/mcp` with OAuth and their grants, over
//! the hub's OAuth operations (changes recorded in the audit log as `cli:$USER`).

use std::process::ExitCode;

use memberspot_hub::store::{OAuthClient, OAuthGrant};
use serde_json::{Value, json};

use crate::cli::{Global, OauthClientsCommand, OauthCommand, OauthGrantsCommand};
use crate::connection::{cli_actor, close_hub, open_hub};
use crate::output::{print_json, print_table, table};

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn client_json(c: &OAuthClient) -> Value {
    json!({
        "client_id": c.client_id, "name": c.name, "kind": c.kind,
        "redirect_uris": c.redirect_uris, "created_at": c.created_at,
    })
}

fn grant_json(g: &OAuthGrant) -> Value {
    json!({
        "id": g.id, "client_id": g.client_id, "client_name": g.client_name,
        "persona": g.persona, "granted_by": g.granted_by, "resource": g.resource,
        "created_at": g.created_at, "last_used_at": g.last_used_at,
        "revoked_at": g.revoked_at, "revoked_why": g.revoked_why,
    })
}

pub async fn run(cmd: OauthCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, _) = open_hub(global).await?;
    let json = global.json;
    let result = async {
        match cmd {
            OauthCommand::Clients(OauthClientsCommand::Add {
                name,
                redirect_uris,
            }) => {
                let c = hub
                    .acting_as(cli_actor())
                    .add_oauth_client(&name, &redirect_uris)
                    .await?;
                if json {
                    print_json(&client_json(&c))?;
                } else {
                    println!("app `{}` added; its client id:", c.name);
                    println!("  {}", c.client_id);
                }
            }
            OauthCommand::Clients(OauthClientsCommand::List) => {
                let clients = hub.list_oauth_clients().await?;
                if json {
                    print_json(&clients.iter().map(client_json).collect::<Vec<_>>())?;
                } else if clients.is_empty() {
                    println!("no apps yet: an assistant registers itself when it connects to /mcp");
                } else {
                    let mut t = table(&["name", "client id", "kind", "redirect URIs", "created"]);
                    for c in &clients {
                        t.add_row(vec![
                            c.name.clone(),
                            c.client_id.clone(),
                            c.kind.to_string(),
                            c.redirect_uris.join("\n"),
                            when(c.created_at),
                        ]);
                    }
                    print_table(&t);
                }
            }
            OauthCommand::Clients(OauthClientsCommand::Remove { client_id }) => {
                hub.acting_as(cli_actor())
                    .remove_oauth_client(&client_id)
                    .await?;
                if json {
                    print_json(&json!({ "client_id": client_id, "removed": true }))?;
                } else {
                    println!("app `{client_id}` removed; its sign-ins are revoked");
                }
            }
            OauthCommand::Grants(OauthGrantsCommand::List { persona }) => {
                let grants = hub.list_oauth_grants(persona.as_deref()).await?;
                if json {
                    print_json(&grants.iter().map(grant_json).collect::<Vec<_>>())?;
                } else if grants.is_empty() {
                    println!("no sign-ins yet");
                } else {
                    let mut t = table(&[
                        "id",
                        "app",
                        "persona",
                        "allowed by",
                        "created",
                        "last used",
                        "status",
                    ]);
                    for g in &grants {
                        let status = match (&g.revoked_at, &g.revoked_why) {
                            (None, _) => "active".to_string(),
                            (Some(_), Some(why)) => format!("revoked ({why})"),
                            (Some(_), None) => "revoked".to_string(),
                        };
                        t.add_row(vec![
                            g.id.clone(),
                            g.client_name.clone(),
                            g.persona.clone(),
                            g.granted_by.clone(),
                            when(g.created_at),
                            g.last_used_at.map(when).unwrap_or_else(|| "—".into()),
                            status,
                        ]);
                    }
                    print_table(&t);
                }
            }
            OauthCommand::Grants(OauthGrantsCommand::Revoke { id }) => {
                hub.acting_as(cli_actor()).revoke_oauth_grant(&id).await?;
                if json {
                    print_json(&json!({ "id": id, "revoked": true }))?;
                } else {
                    println!("sign-in `{id}` revoked; its tokens stop at their next use");
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
