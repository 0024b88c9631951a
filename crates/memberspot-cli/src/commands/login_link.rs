use std::process::ExitCode;

use serde_json::json;

use super::Ctx;
use crate::cli::LoginLinkArgs;
use crate::output::print_json;

pub async fn run(ctx: &Ctx, args: LoginLinkArgs) -> anyhow::Result<ExitCode> {
    // Accept an e-mail for convenience: the API needs the uid.
    let uid = if args.member.contains('@') {
        let user = ctx
            .call("find_user_by_email", json!({ "email": args.member }))
            .await?;
        user["uid"].as_str().unwrap_or_default().to_string()
    } else {
        args.member.clone()
    };
    let out = ctx
        .call("create_login_token", json!({ "uid": uid }))
        .await?;
    let link = out["login_url"].as_str().filter(|u| !u.trim().is_empty());
    if ctx.json {
        let mut v = json!({ "uid": uid, "token": out["token"], "expires_in_seconds": out["expires_in_seconds"] });
        if let Some(link) = link {
            v["login_url"] = json!(link);
        }
        print_json(&v)?;
    } else if let Some(link) = link {
        println!("{link}");
        eprintln!(
            "one-time login link for {uid}, valid for 1 hour; it logs the member in: send it only to them"
        );
    } else {
        println!("{}", out["token"].as_str().unwrap_or_default());
        eprintln!("one-time login token for {uid}, valid for 1 hour; send it only to the member");
    }
    Ok(ExitCode::SUCCESS)
}
