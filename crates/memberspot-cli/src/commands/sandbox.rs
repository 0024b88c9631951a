use std::process::ExitCode;

use anyhow::Context;
use memberspot_sandbox::{Faults, Sandbox, SandboxConfig, SeedSize};

use crate::cli::{Global, SandboxCommand, SandboxServeArgs};
use crate::output::{Usage, print_json};

pub async fn run(cmd: SandboxCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let SandboxCommand::Serve(args) = cmd;
    serve(args, global.json).await
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(Usage(format!("--{name} must be between 0 and 1, got {v}")).into())
    }
}

async fn serve(args: SandboxServeArgs, json: bool) -> anyhow::Result<ExitCode> {
    if !(args.rate_limit >= 0.0 && args.rate_limit.is_finite()) {
        return Err(Usage(format!(
            "--rate-limit must be a number >= 0 (0 lifts the limit), got {}",
            args.rate_limit
        ))
        .into());
    }
    if args.api_key.trim().is_empty() {
        return Err(Usage("--api-key must not be empty".into()).into());
    }
    let faults = Faults {
        latency_ms: args.fault_latency_ms,
        error_rate: share("fault-error-rate", args.fault_error_rate)?,
        rate_limit_rate: share("fault-429-rate", args.fault_429_rate)?,
        rate_limit_burst: args.fault_429_burst,
        timeout_rate: share("fault-timeout-rate", args.fault_timeout_rate)?,
        timeout_ms: args.fault_timeout_ms,
        seed: None,
        repeat_cursor: false,
    };
    let config = SandboxConfig {
        api_key: args.api_key.clone(),
        seed: args.seed,
        size: SeedSize {
            users: args.users,
            offers: args.offers,
            courses: args.courses,
        },
        rate_limit: args.rate_limit,
        faults,
        state_file: args.state_file.clone(),
        shapes: args.shapes.into(),
    };
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let sandbox = Sandbox::spawn(config, listener).await?;
    if json {
        print_json(&serde_json::json!({
            "base_url": sandbox.base_url(),
            "api_key": sandbox.api_key(),
            "admin_url": format!("{}/_sandbox/state", sandbox.root_url()),
            "shapes": sandbox.state().shapes(),
        }))?;
    } else {
        println!("Memberspot sandbox listening");
        println!("  base URL: {}", sandbox.base_url());
        println!("  API key:  {}", sandbox.api_key());
        println!(
            "  admin:    {}/_sandbox/state (send the same X-API-KEY)",
            sandbox.root_url()
        );
        println!("  shapes:   {}", sandbox.state().shapes());
        println!(
            "  rate limit: {} requests/s per key",
            if args.rate_limit == 0.0 {
                "unlimited".to_string()
            } else {
                args.rate_limit.to_string()
            }
        );
        println!();
        println!(
            "Try:  MEMBERSPOT_BASE_URL={} MEMBERSPOT_API_KEY={} memberspot users list",
            sandbox.base_url(),
            sandbox.api_key()
        );
        println!("Stop with Ctrl-C.");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("shutting down");
    sandbox.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
