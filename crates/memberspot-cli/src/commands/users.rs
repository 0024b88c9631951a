use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;
use memberspot_tools::ToolError;
use memberspot_tools::tools::ListUsersInput;
use memberspot_wire::User;
use serde_json::{Value, json};

use super::{Ctx, grant};
use crate::cli::{AccessTarget, ActiveFilter, UsersCommand};
use crate::output::{confirm, print_json, print_table, progress, table};

pub async fn run(ctx: &Ctx, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCommand::List {
            offer,
            course,
            active,
            all,
            limit,
            page_length,
            cursor,
        } => {
            let mut args = json!({});
            if let Some(o) = ctx.offer_id("--offer", offer).await? {
                args["offer_id"] = json!(o);
            }
            if let Some(c) = course {
                args["course_id"] = json!(c);
            }
            if let Some(a) = active {
                args["active"] = json!(matches!(a, ActiveFilter::True));
            }
            if let Some(n) = page_length {
                args["page_length"] = json!(n);
            }
            if let Some(c) = cursor {
                args["cursor"] = json!(c);
            }
            list(ctx, args, all, limit).await
        }
        UsersCommand::Find { email } => {
            let user = ctx
                .call("find_user_by_email", json!({ "email": email }))
                .await?;
            render_users(ctx, std::slice::from_ref(&user)).await?;
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Grant(args) => grant::run(ctx, args).await,
        UsersCommand::Revoke(target) => set_state(ctx, target, "inactive").await,
        UsersCommand::Restore(target) => set_state(ctx, target, "active").await,
        UsersCommand::RemoveAccess { target, yes } => {
            let what = match (&target.offer, &target.order) {
                (Some(o), _) => format!("offer {o}"),
                (_, Some(o)) => format!("every offer of order {o}"),
                _ => "access".to_string(),
            };
            confirm(
                &format!(
                    "Remove {what} from {} and permanently delete the related course progress?",
                    target.email
                ),
                yes,
            )?;
            set_state(ctx, target, "remove").await
        }
        UsersCommand::Expire {
            email,
            offer,
            at,
            clear,
        } => {
            let offer = ctx.offer_id("--offer", Some(offer)).await?;
            let mut args = json!({ "email": email, "offer_id": offer });
            if let (Some(at), false) = (at, clear) {
                args["expires_at"] = json!(at);
            }
            let out = ctx.call("set_offer_expiration", args).await?;
            render_change(ctx, &out).await
        }
        UsersCommand::Delete { emails, yes } => {
            ctx.catalogue
                .validate("delete_users", &json!({ "emails": emails }))?;
            confirm(
                &format!(
                    "Permanently delete {} member(s) with all their data ({})?",
                    emails.len(),
                    emails.join(", ")
                ),
                yes,
            )?;
            let out = ctx
                .call("delete_users", json!({ "emails": emails }))
                .await?;
            if ctx.json {
                print_json(&out)?;
            } else {
                let deleted = out
                    .pointer("/result/deleted")
                    .and_then(Value::as_array)
                    .map(Vec::len);
                let count = out.pointer("/result/deletedCount").and_then(Value::as_u64);
                let said = out.pointer("/result/message").and_then(Value::as_str);
                match (count.map(|c| c as usize).or(deleted), said) {
                    (Some(n), _) => println!("deleted: {n}"),
                    // A text answer: the call succeeded, but who was deleted is not said.
                    (None, Some(text)) => println!("deleted (Memberspot answered: {text})"),
                    (None, None) => println!("deleted: ?"),
                }
                if let Some(missing) = out
                    .get("not_found")
                    .and_then(Value::as_array)
                    .filter(|m| !m.is_empty())
                {
                    let list: Vec<&str> = missing.iter().filter_map(Value::as_str).collect();
                    println!("not found (ignored): {}", list.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::SetProperty { email, values } => {
            let mut properties = Vec::new();
            for pair in &values {
                let (id, value) = pair.split_once('=').ok_or_else(|| {
                    ToolError::invalid(
                        "--set",
                        format!("`{pair}` must look like PROPERTY_ID=VALUE"),
                    )
                })?;
                properties.push(json!({ "id": id.trim(), "value": value }));
            }
            let out = ctx
                .call(
                    "set_custom_user_properties",
                    json!({ "email": email, "properties": properties }),
                )
                .await?;
            render_change(ctx, &out).await
        }
        UsersCommand::UnlockChapter {
            email,
            course,
            chapter,
        } => {
            let out = ctx
                .call(
                    "enable_chapter_access",
                    json!({ "email": email, "course_id": course, "chapter_id": chapter }),
                )
                .await?;
            if ctx.json {
                print_json(&out)?;
            } else {
                println!("chapter {chapter} of course {course} unlocked for {email}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn set_state(ctx: &Ctx, target: AccessTarget, state: &str) -> anyhow::Result<ExitCode> {
    let offer = ctx.offer_id("--offer", target.offer).await?;
    let out = match (offer, target.order) {
        (Some(offer), _) => {
            ctx.call(
                "set_user_offer_state",
                json!({ "email": target.email, "offer_id": offer, "state": state }),
            )
            .await?
        }
        (_, Some(order)) => {
            ctx.call(
                "set_order_state",
                json!({ "email": target.email, "order_id": order, "state": state }),
            )
            .await?
        }
        (None, None) => return Err(ToolError::invalid("--offer", "give --offer or --order").into()),
    };
    render_change(ctx, &out).await
}

/// Lists one page, or every page with `--all` (progress on stderr).
async fn list(ctx: &Ctx, args: Value, all: bool, limit: Option<usize>) -> anyhow::Result<ExitCode> {
    if !all {
        let page = ctx.call("list_users", args).await?;
        let users: Vec<Value> = page["users"].as_array().cloned().unwrap_or_default();
        if ctx.json {
            return print_page(&users, page["next_cursor"].as_str()).map(|()| ExitCode::SUCCESS);
        }
        render_users(ctx, &users).await?;
        if let Some(next) = page["next_cursor"].as_str() {
            eprintln!(
                "more members: add --cursor {next} for the next page, or --all for everything"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Checked as the tool checks it, so a bad flag names its field.
    ctx.catalogue.validate("list_users", &args)?;
    let filter: ListUsersInput =
        serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments {
            field: None,
            message: e.to_string(),
        })?;
    let bar = progress(None, "members");
    let mut members = std::pin::pin!(ctx.users(filter, limit));
    let mut users = Vec::new();
    while let Some(user) = members.try_next().await.inspect_err(|_| bar.abandon())? {
        bar.inc(1);
        users.push(serde_json::to_value(user).context("encode a member")?);
    }
    bar.finish_and_clear();
    if ctx.json {
        return print_page(&users, None).map(|()| ExitCode::SUCCESS);
    }
    render_users(ctx, &users).await?;
    eprintln!("{} member(s)", users.len());
    Ok(ExitCode::SUCCESS)
}

/// `users list --json`: the `list_users` tool's shape, `{"users": [...], "next_cursor"}`;
/// the cursor is null when there is no next page (always with `--all`).
fn print_page(users: &[Value], next_cursor: Option<&str>) -> anyhow::Result<()> {
    print_json(&json!({ "users": users, "next_cursor": next_cursor }))
}

/// Members as a table, each holding with its offer's name next to the id (the command's
/// one read of the school's offers), or as JSON (Memberspot's fields, ids only).
pub async fn render_users(ctx: &Ctx, users: &[Value]) -> anyhow::Result<()> {
    if ctx.json {
        return print_json(users);
    }
    let mut t = table(&["email", "name", "uid", "offers"]);
    for v in users {
        let u: User = serde_json::from_value(v.clone()).context("unexpected member shape")?;
        let name = [u.firstname.as_deref(), u.name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let mut holdings = Vec::with_capacity(u.offers.len());
        for h in &u.offers {
            let mut s = format!(
                "{} {}",
                ctx.offers.label(&h.offer_id).await,
                if h.active { "active" } else { "inactive" }
            );
            if let Some(order) = &h.order_id {
                s.push_str(&format!(" order {order}"));
            }
            if let Some(exp) = &h.expires_at {
                s.push_str(&format!(" until {}", exp.0.format("%Y-%m-%d")));
            }
            holdings.push(s);
        }
        let offers = holdings.join("\n");
        t.add_row(vec![u.email, name, u.uid, offers]);
    }
    print_table(&t);
    Ok(())
}

async fn render_change(ctx: &Ctx, out: &Value) -> anyhow::Result<ExitCode> {
    match out.get("user").filter(|u| !u.is_null()) {
        Some(user) if !ctx.json => render_users(ctx, std::slice::from_ref(user)).await?,
        _ => print_json(out)?,
    }
    Ok(ExitCode::SUCCESS)
}
