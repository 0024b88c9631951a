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
    if ctx.json {
        print_json(
            &json!({ "uid": uid, "token": out["token"], "expires_in_seconds": out["expires_in_seconds"] }),
        )?;
    } else {
        println!("{}", out["token"].as_str().unwrap_or_default());
        eprintln!("one-time login token for {uid}, valid for 1 hour; send it only to the member");
    }
    Ok(ExitCode::SUCCESS)
}
