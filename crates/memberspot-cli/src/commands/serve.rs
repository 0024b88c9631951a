use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, ServeArgs};
use crate::connection::{close_hub, hub_settings, open_hub_as};
use crate::local_school::Role;

pub async fn run(args: ServeArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let (hub, sandbox, file) = open_hub_as(global, Role::Service).await?;
    let settings = hub_settings(global, &file);

    // First start: an admin token for the REST admin routes, in a file only the owner can read.
    if let Some(token) = hub.issue_first_admin_token().await? {
        let path = settings.data_dir.join("admin.token");
        crate::output::write_private(&path, token.expose_secret())?;
        eprintln!(
            "admin token written to {} (for /v1/personas, /v1/connections, /v1/audit)",
            path.display()
        );
    }
    if hub.store().list_personas().await?.is_empty() {
        eprintln!("no personas yet: create one for your agent with");
        eprintln!("  memberspot personas create my-agent --scopes read");
    }

    let cancel = CancellationToken::new();
    if let Some(days) = file.retention_days()? {
        eprintln!("  audit records are kept {days} days (purged hourly)");
        spawn_retention(hub.clone(), days, cancel.clone());
    }
    let (rules, rules_file) = crate::commands::events::load_rules(global, &file)?;
    for w in &rules.warnings {
        eprintln!("warning: {w}");
    }
    let events = memberspot_events::Events::start(hub.clone(), rules).await?;
    let mut workers = events.spawn(cancel.clone());
    let (flows, flows_file) = crate::commands::flows::open_flows(&hub, global, &file).await?;
    workers.extend(flows.spawn(cancel.clone()));
    let models = crate::commands::flows::load_models(global, &file)?;
    let chat = memberspot_agent::rest::AgentState::new(hub.clone(), models);
    let server = server_settings(&args);
    let app = memberspot_hub::server::app_configured(
        hub.clone(),
        &server,
        cancel.clone(),
        vec![
            memberspot_events::rest::routes(events.clone()),
            memberspot_flows::rest::routes(flows.clone()),
            memberspot_agent::rest::routes(chat),
        ],
        Some(memberspot_events::receiver::router(events.clone())),
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("memberspot hub listening on http://{addr}");
    eprintln!("  REST    http://{addr}/v1/tools        (OpenAPI: http://{addr}/openapi.json)");
    eprintln!(
        "  MCP     http://{addr}/mcp             (streamable HTTP, Authorization: Bearer <persona token>)"
    );
    eprintln!("  health  http://{addr}/healthz  /readyz  /metrics");
    match &rules_file {
        Some(path) => {
            let cfg = events.config();
            eprintln!(
                "  events  {} source(s), {} rule(s) from {}{}",
                cfg.sources.len(),
                cfg.rules.len(),
                path.display(),
                if cfg.poller.is_some() {
                    "; poller on"
                } else {
                    ""
                }
            );
            for s in cfg.sources.values() {
                eprintln!(
                    "          POST http://{addr}/hooks/{}  ({})",
                    s.name, s.provider
                );
            }
        }
        None => {
            eprintln!("  events  no rules file (see docs/events.md); webhook receivers are off")
        }
    }
    match &flows_file {
        Some(path) => eprintln!(
            "  flows   {} flow(s) from {}; daily summary {}",
            flows.config().flows.len(),
            path.display(),
            match &flows.config().digest {
                Some(d) if d.enabled => format!(
                    "{} {} (next {})",
                    d.schedule.expr(),
                    d.timezone,
                    d.schedule
                        .next_after(chrono::Utc::now())
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
                _ => "off (configure [delivery.slack] or [delivery.email])".into(),
            }
        ),
        None => eprintln!("  flows   no flows file (see docs/flows.md); the daily summary is off"),
    }
    eprintln!(
        "  store   {}",
        if settings.database_url.is_some() {
            "PostgreSQL/custom URL"
        } else {
            "SQLite in the data directory"
        }
    );

    let shutdown = {
        let cancel = cancel.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight calls");
            cancel.cancel();
        }
    };
    memberspot_hub::server::serve(listener, app, &server, shutdown)
        .await
        .context("HTTP server")?;
    for w in workers {
        // Workers stop at the next step boundary; an interrupted event is re-checked on start.
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    close_hub(&hub, sandbox).await?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn server_settings(args: &ServeArgs) -> memberspot_hub::server::ServerSettings {
    memberspot_hub::server::ServerSettings {
        request_timeout: Duration::from_secs(args.request_timeout),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        max_connections: args.max_connections as usize,
        allowed_hosts: args.allowed_hosts.clone(),
        allowed_origins: args.allowed_origins.clone(),
        mcp_sessions: memberspot_hub::mcp_guard::SessionLimits {
            max_total: args.mcp_max_sessions as usize,
            max_per_persona: args.mcp_max_sessions_per_persona as usize,
            idle_timeout: Duration::from_secs(args.mcp_session_idle_timeout),
        },
    }
}

/// Deletes audit records past the retention period, hourly.
fn spawn_retention(hub: memberspot_hub::Hub, days: u32, cancel: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let before = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
            match hub.store().purge_audit_before(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, days, "audit retention"),
                Err(e) => tracing::warn!(error = %e, "audit retention failed; will retry"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
