//! `memberspot serve`: settings from the flags and files, then the server crate's [`App`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use memberspot_server::mcp_guard::SessionLimits;
use memberspot_server::retention::AuditRetention;
use memberspot_server::{App, Plugin, ServerSettings, TrustedProxies};
use secrecy::ExposeSecret;

use crate::cli::{Global, ServeArgs};
use crate::config::ConfigFile;
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
    if hub.list_personas().await?.is_empty() {
        eprintln!("no personas yet: create one for your agent with");
        eprintln!("  memberspot personas create my-agent --scopes read");
    }

    let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
    if let Some(days) = file.retention_days()? {
        plugins.push(Box::new(AuditRetention::new(hub.clone(), days)));
    }
    let (rules, rules_file) = crate::commands::events::load_rules(global, &file)?;
    for w in &rules.warnings {
        eprintln!("warning: {w}");
    }
    let events = memberspot_events::Events::start(hub.clone(), rules).await?;
    let console_events = events.clone();
    plugins.push(Box::new(memberspot_events::EventsPlugin::new(
        events, rules_file,
    )));
    let (flows, flows_file) = crate::commands::flows::open_flows(&hub, global, &file).await?;
    let console_flows = flows.clone();
    plugins.push(Box::new(memberspot_flows::FlowsPlugin::new(
        flows, flows_file,
    )));
    let models = crate::commands::flows::load_models(global, &file)?;
    plugins.push(Box::new(memberspot_agent::rest::AgentState::new(
        hub.clone(),
        models.clone(),
    )));
    // OAuth for hosted assistants: refuses to start on a plain-http public URL.
    let oauth = memberspot_oauth::OAuthPlugin::new(
        hub.clone(),
        memberspot_oauth::OAuthSettings {
            public_url: args.public_url.clone(),
            allow_private_client_metadata: args.oauth_allow_private_client_metadata,
        },
    )?;
    let console = memberspot_console::ConsolePlugin::new(
        hub.clone(),
        memberspot_console::ConsoleSettings {
            public_url: args.public_url.clone(),
            time_zone: args.time_zone,
            data_dir: Some(crate::connection::data_dir(global, &file)),
            ..memberspot_console::ConsoleSettings::default()
        },
    )?
    .with_events(console_events)
    .with_flows(console_flows)
    .with_models(models)
    .with_oauth(oauth.oauth());
    plugins.push(Box::new(oauth));
    // The console stays at hand for its setup link, which needs the address listened on.
    plugins.push(Box::new(console.clone()));
    let app = App::build(hub.clone(), server_settings(&args, &file)?, plugins);
    // Before anything listens: no credential-carrying route in clear over a network.
    app.check_exposure(args.listen, args.public_url.as_ref(), args.insecure_http)
        .map_err(|e| crate::output::Usage(e.to_string()))?;
    if args.insecure_http && !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "--insecure-http: sign-in, cookies and webhook deliveries travel unencrypted"
        );
    }
    // Bound before the setup link is made: the link names the address really listened on.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let setup_link = console.first_run_link(listener.local_addr()?).await?;

    for line in app.summary(listener.local_addr()?) {
        eprintln!("{line}");
    }
    eprintln!(
        "  store   {}",
        if settings.database_url.is_some() {
            "PostgreSQL/custom URL"
        } else {
            "SQLite in the data directory"
        }
    );
    if let Some(link) = setup_link {
        eprintln!();
        eprintln!("no console user yet: open this link to choose the owner's name and password");
        eprintln!("(valid for one hour, once):");
        eprintln!("  {link}");
        eprintln!();
    }
    app.serve_until_signal(listener)
        .await
        .context("HTTP server")?;
    close_hub(&hub, sandbox).await?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The server's settings from the flags; the trusted proxies from the flag or environment,
/// else the config file.
fn server_settings(args: &ServeArgs, file: &ConfigFile) -> anyhow::Result<ServerSettings> {
    let ranges = if args.trusted_proxies.is_empty() {
        &file.trusted_proxies
    } else {
        &args.trusted_proxies
    };
    let header = args
        .trusted_proxy_header
        .or(file.trusted_proxy_header)
        .map(Into::into)
        .unwrap_or_default();
    // Behind a proxy, clients reach /mcp under the public URL's host.
    let mut allowed_hosts = args.allowed_hosts.clone();
    if let Some(host) = args.public_url.as_ref().and_then(|u| u.host_str()) {
        allowed_hosts.push(host.to_owned());
    }
    let trusted_proxies = TrustedProxies::parse(ranges, header)
        .map_err(|e| crate::output::Usage(format!("trusted proxies: {e}")))?;
    Ok(ServerSettings {
        request_timeout: Duration::from_secs(args.request_timeout),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        max_connections: args.max_connections as usize,
        allowed_hosts,
        allowed_origins: args.allowed_origins.clone(),
        mcp_sessions: SessionLimits {
            max_total: args.mcp_max_sessions as usize,
            max_per_persona: args.mcp_max_sessions_per_persona as usize,
            idle_timeout: Duration::from_secs(args.mcp_session_idle_timeout),
        },
        public_url: args.public_url.clone(),
        oauth: true,
        ready_checks_schools: args.ready_checks_schools,
        trusted_proxies,
    })
}
