use std::process::ExitCode;

use memberspot_api::actions::CheckApiKey;

use super::Ctx;
use crate::output::print_json;

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let client = &ctx.session.client().await?;
    client.execute(&CheckApiKey).await?;
    if ctx.json {
        print_json(
            &serde_json::json!({ "ok": true, "base_url": client.base_url(), "sandbox": ctx.session.is_sandbox() }),
        )?;
    } else {
        println!("ok: the API key is accepted by {}", client.base_url());
    }
    Ok(ExitCode::SUCCESS)
}
