//! Command-line grammar. Each subcommand's behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "memberspot",
    version,
    about = "Work with a Memberspot school from the terminal, scripts and AI agents",
    long_about = "Work with a Memberspot school from the terminal, scripts and AI agents.\n\n\
        With no API key configured, every command talks to an embedded sandbox school \
        that runs offline, so you can try everything safely. Set MEMBERSPOT_API_KEY (or \
        --api-key, or a config file) to work with your real school.",
    after_help = "Examples:\n  memberspot users list\n  memberspot users grant anna@example.com --offer OFFER_ID\n  memberspot tools list\n  memberspot tools call find_user_by_email --arg email=anna@example.com\n  memberspot sandbox serve --port 8080"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Memberspot API key (Settings > Integrations > API Keys). Without one, the embedded sandbox is used.
    #[arg(
        long,
        global = true,
        env = "MEMBERSPOT_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// API base URL [default: https://api.memberspot.de/v1]
    #[arg(long, global = true, env = "MEMBERSPOT_BASE_URL", value_parser = base_url)]
    pub base_url: Option<String>,
    /// Config file [default: <config dir>/memberspot/config.toml]
    #[arg(long, global = true, env = "MEMBERSPOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where local state lives (the embedded sandbox school) [default: <data dir>/memberspot]
    #[arg(long, global = true, env = "MEMBERSPOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Requests per second sent to Memberspot (0 = no pacing) [default: 4]
    #[arg(long, global = true, env = "MEMBERSPOT_RATE_LIMIT", value_parser = non_negative)]
    pub rate_limit: Option<f64>,
    /// Seconds to wait for one answer [default: 30]
    #[arg(long, global = true, env = "MEMBERSPOT_TIMEOUT", value_parser = positive_seconds)]
    pub timeout: Option<f64>,
    /// Use the embedded sandbox school even when an API key is configured
    #[arg(long, global = true)]
    pub sandbox: bool,
    /// Act on this stored connection (see `memberspot connections list`)
    #[arg(long, global = true, env = "MEMBERSPOT_CONNECTION")]
    pub connection: Option<String>,
    /// Database URL: postgres://… to share state between hub instances [default: SQLite in the data directory]
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Rules file for webhooks, access rules and the poller [default: <data dir>/rules.toml if present]
    #[arg(long, global = true, env = "MEMBERSPOT_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Flows file: the daily summary, delivery targets, flows [default: <data dir>/flows.toml if present]
    #[arg(long, global = true, env = "MEMBERSPOT_FLOWS", value_name = "FILE")]
    pub flows: Option<PathBuf>,
    /// Models file for summaries and persona chat [default: <data dir>/models.toml if present]
    #[arg(long, global = true, env = "MEMBERSPOT_MODELS", value_name = "FILE")]
    pub models: Option<PathBuf>,
    /// Act as this persona: its connection, scopes and limits apply, and calls are audited under its name
    #[arg(long, global = true, env = "MEMBERSPOT_PERSONA")]
    pub persona: Option<String>,
    /// Why you make this call; recorded in the audit log with each tool call
    #[arg(long, global = true, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v, -vv); MEMBERSPOT_LOG takes a filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The typed tools shared with MCP and REST: list, describe, call
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Members: list, find, grant (one or from CSV), revoke, restore, expire, delete
    #[command(subcommand)]
    Users(UsersCommand),
    /// Offers (products that unlock courses)
    #[command(subcommand)]
    Offers(OffersCommand),
    /// A member's course progress
    ///
    /// Each course by its id, with the offers that unlock it, and the numbers of completed
    /// and started posts. There is no percentage: Memberspot's API tells no course's size.
    Progress(ProgressArgs),
    /// Create a one-hour passwordless login token for a member (by uid or e-mail)
    LoginLink(LoginLinkArgs),
    /// Custom member property definitions
    #[command(subcommand)]
    Properties(PropertiesCommand),
    /// Exam results
    #[command(subcommand)]
    Exams(ExamsCommand),
    /// Check that the API key is accepted
    Check,
    /// Read each read-only endpoint once and report how the school's answers compare with
    /// what this version reads (never changes anything)
    Doctor(DoctorArgs),
    /// Run the hub: REST API, MCP over streamable HTTP at /mcp, health and metrics
    Serve(ServeArgs),
    /// Serve MCP over stdio for a desktop agent, as one persona
    Mcp(McpArgs),
    /// Memberspot schools the hub can act on (API keys encrypted at rest)
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// AI agents and automations, each with its own token, scopes and limits
    #[command(subcommand)]
    Personas(PersonasCommand),
    /// The web console's users (the console is served at / by `memberspot serve`)
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Sign-in of hosted AI assistants to /mcp (OAuth): their clients and grants
    #[command(subcommand)]
    Oauth(OauthCommand),
    /// The audit record of every tool call
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Webhook and poller events: list, show, replay, dead letters
    #[command(subcommand)]
    Events(EventsCommand),
    /// The rules file: validate it, or dry-run it over the stored events
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The daily summary of a day: render it, or send it now
    Digest(DigestArgs),
    /// Flows: validate, list, run, history
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Sync records from another app (CSV, JSON URL, paginated API) into the school
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Chat with a persona: its model, only the tools in its scope
    Chat(crate::commands::chat::ChatArgs),
    /// Mint a new admin token for the REST admin routes (replaces the old one)
    AdminToken,
    /// Re-encrypt every stored API key under a new master key
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
    /// Write an encrypted backup of the hub (database, master key, rules, flows, models,
    /// config), also while `serve` runs
    Backup(BackupArgs),
    /// Restore a backup into a new or empty data directory
    Restore(RestoreArgs),
    /// Apply the database's pending migrations, or (`--check`) say which would run
    Migrate(MigrateArgs),
    /// The hub at a glance: version, store and schema, master key, pending events, dead
    /// letters, last daily summary, last poll, audit head (exit 1 when something needs attention)
    Status,
    /// Run the local Memberspot emulator
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Print shell completions (bash, zsh, fish, powershell, elvish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (must not exist)
    pub file: PathBuf,
    /// Read the passphrase from this environment variable [default: ask on the terminal]
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Leave the master key out of the backup (keep it separately, e.g. in a password manager)
    #[arg(long)]
    pub without_master_key: bool,
    /// PostgreSQL store: back up only the hub's files; the database goes with pg_dump
    #[arg(long)]
    pub files_only: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file
    pub file: PathBuf,
    /// Read the passphrase from this environment variable [default: ask on the terminal]
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// The directory to restore into: new or empty [default: the data directory]
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes with --check: 0 nothing to apply; 3 migrations would run \
    (or no database yet); 4 the database is newer than this binary; 1 the database cannot be \
    read or an applied migration differs from this binary's."
)]
pub struct MigrateArgs {
    /// Only say which migrations would run; change nothing
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on
    #[arg(long, default_value = "127.0.0.1:8787", env = "MEMBERSPOT_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Seconds a request may take before it is answered 503
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Log format on stderr
    #[arg(
        long,
        value_enum,
        default_value = "human",
        env = "MEMBERSPOT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Also accept these Host headers on /mcp (needed when not bound to loopback; the host
    /// of --public-url is always accepted)
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Also accept requests to /mcp from browser pages of this origin
    /// (`https://app.example.com`, `…:8443`, `…:*`); loopback origins are always accepted
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = origin)]
    pub allowed_origins: Vec<String>,
    /// Seconds a client has to send a request's headers before the connection is closed
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Longest pause, in seconds, while a request body arrives before the request is refused
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout: u64,
    /// Connections served at once; more wait until one closes
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Open MCP sessions over HTTP, in all
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub mcp_max_sessions: u32,
    /// Open MCP sessions over HTTP of one persona
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub mcp_max_sessions_per_persona: u32,
    /// Seconds after which an unused MCP session ends
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_session_idle_timeout: u64,
    /// Where browsers reach the hub (e.g. `https://hub.example.com`, behind a reverse
    /// proxy): the console's setup link uses it, its forms must come from this origin, and
    /// with `https://` its cookies are `Secure`
    #[arg(long, value_name = "URL", env = "MEMBERSPOT_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<url::Url>,
    /// Let OAuth clients identified by a metadata document URL (`client_id` = URL) be
    /// fetched from private and loopback addresses too. Off: a client id must not make the
    /// hub reach into its own network
    #[arg(long, env = "MEMBERSPOT_OAUTH_ALLOW_PRIVATE_CLIENT_METADATA")]
    pub oauth_allow_private_client_metadata: bool,
    /// `/readyz` also checks that every school accepts its API key (one request per
    /// school at most every 30 s)
    #[arg(long, env = "MEMBERSPOT_READY_CHECKS_SCHOOLS")]
    pub ready_checks_schools: bool,
    /// The school's time zone: the console shows every time in it
    #[arg(long, value_name = "TZ", default_value = "Europe/Berlin", env = "MEMBERSPOT_TIME_ZONE", value_parser = time_zone)]
    pub time_zone: chrono_tz::Tz,
    /// A reverse proxy (address or CIDR range, repeatable) whose forwarding header names the
    /// client for sign-in limits and logs; from any other peer the header is ignored
    /// [default: `trusted_proxies` in the config file, else none]
    #[arg(
        long = "trusted-proxy",
        value_name = "CIDR",
        env = "MEMBERSPOT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = proxy_range
    )]
    pub trusted_proxies: Vec<String>,
    /// The header trusted proxies name the client in [default: `trusted_proxy_header` in
    /// the config file, else x-forwarded-for]
    #[arg(
        long,
        value_enum,
        value_name = "HEADER",
        env = "MEMBERSPOT_TRUSTED_PROXY_HEADER"
    )]
    pub trusted_proxy_header: Option<ProxyHeaderArg>,
    /// Serve the console's sign-in and the webhook receivers over plain HTTP on a
    /// non-loopback address (only on a private, trusted network: without it, `serve`
    /// refuses unless --public-url is https://)
    #[arg(long)]
    pub insecure_http: bool,
}

/// `--trusted-proxy-header`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeaderArg {
    /// `X-Forwarded-For: client, proxy, …` (Caddy, nginx)
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy`
    Forwarded,
}

impl From<ProxyHeaderArg> for memberspot_server::ProxyHeader {
    fn from(h: ProxyHeaderArg) -> Self {
        match h {
            ProxyHeaderArg::XForwardedFor => memberspot_server::ProxyHeader::XForwardedFor,
            ProxyHeaderArg::Forwarded => memberspot_server::ProxyHeader::Forwarded,
        }
    }
}

/// `--trusted-proxy`: an IP address or CIDR range.
pub fn proxy_range(s: &str) -> Result<String, String> {
    memberspot_server::TrustedProxies::parse(&[s], Default::default())
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// `--public-url`: an absolute http(s) URL without query or fragment.
fn public_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("`{s}`: use http://HOST or https://HOST"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{s}`: leave out the query and fragment"));
    }
    Ok(u)
}

/// `--time-zone`: an IANA name such as `Europe/Berlin`.
fn time_zone(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IANA time zone (e.g. Europe/Berlin)"))
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ConsoleRoleArg {
    /// Everything
    Owner,
    /// Read-only pages
    Viewer,
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Add a console user (the password is read from stdin or asked for, never an argument)
    AddUser {
        name: String,
        #[arg(long, value_enum)]
        role: ConsoleRoleArg,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// The console users and their roles (`--json` for JSON)
    ListUsers,
    /// Remove a console user and end their sessions
    RemoveUser { name: String },
    /// Set a new password for a console user and end their sessions
    ResetPassword {
        name: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// The apps that registered or were added (`--json` for JSON)
    #[command(subcommand)]
    Clients(OauthClientsCommand),
    /// The sign-ins: which app acts as which persona (`--json` for JSON)
    #[command(subcommand)]
    Grants(OauthGrantsCommand),
}

#[derive(Debug, Subcommand)]
pub enum OauthClientsCommand {
    /// Pre-register an app: prints its client id (for assistants without dynamic registration)
    Add {
        /// The name shown on the consent page
        name: String,
        /// Where the app receives its sign-in code; `https`, or `http` on localhost only.
        /// Repeat for several (Claude uses https://claude.ai/api/mcp/auth_callback and
        /// https://claude.com/api/mcp/auth_callback)
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
    },
    /// The registered apps
    List,
    /// Remove an app and revoke its sign-ins
    Remove { client_id: String },
}

#[derive(Debug, Subcommand)]
pub enum OauthGrantsCommand {
    /// The sign-ins, newest first
    List {
        /// Only this persona's
        #[arg(long)]
        persona: Option<String>,
    },
    /// Revoke a sign-in: its tokens stop at their next use
    Revoke { id: String },
}

/// A browser origin for `--allowed-origin`.
fn origin(s: &str) -> Result<String, String> {
    memberspot_server::mcp_guard::check_origin(s)
}

/// The sandbox's answer shapes (`memberspot_sandbox::Shapes`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ShapesArg {
    Documented,
    Alternate,
}

impl From<ShapesArg> for memberspot_sandbox::Shapes {
    fn from(s: ShapesArg) -> Self {
        match s {
            ShapesArg::Documented => memberspot_sandbox::Shapes::Documented,
            ShapesArg::Alternate => memberspot_sandbox::Shapes::Alternate,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Act as the persona owning this token (or give the persona's name with --persona)
    #[arg(long, env = "MEMBERSPOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Add a school; the API key comes from --api-key / MEMBERSPOT_API_KEY, --api-key-stdin, or a prompt.
    /// The URL is checked by listing the offers there (a read); `/v1` is added when the API
    /// answers there, and a URL where it answers neither way is refused
    Add {
        name: String,
        /// The API's base URL; http:// only for loopback addresses
        #[arg(long = "url", default_value = "https://api.memberspot.de/v1", value_parser = base_url)]
        url: String,
        /// Read the API key from standard input
        #[arg(long)]
        api_key_stdin: bool,
        /// Requests per second sent to this school
        #[arg(long = "rps", default_value_t = memberspot_api::DEFAULT_RATE_LIMIT, value_parser = non_negative)]
        rps: f64,
    },
    /// List connections (never their keys)
    List,
    /// Check a connection's key against Memberspot
    Test { name: String },
    /// Replace a connection's API key (read like `add`)
    RotateKey {
        name: String,
        #[arg(long)]
        api_key_stdin: bool,
    },
    /// Rename a connection, point it at another URL or change its rate; its key is re-sealed
    /// for the new name and URL
    Update {
        name: String,
        /// Another base URL (e.g. after Memberspot moved the API)
        #[arg(long)]
        url: Option<String>,
        /// A new name (personas follow; rules and flows files that name it must be changed)
        #[arg(long, value_name = "NEW_NAME")]
        rename: Option<String>,
        /// Requests per second sent to this school
        #[arg(long = "rps", value_parser = non_negative)]
        rps: Option<f64>,
    },
    /// Remove a connection (refused while a persona uses it)
    Remove {
        name: String,
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PersonasCommand {
    /// Create a persona and print its token (shown once); `--connection C` picks the school [default: sandbox]
    Create {
        name: String,
        /// read, write, destructive, all, or tool names (comma-separated); also confirm:CLASS or confirm:none (MCP confirmations; a persona that can delete gets confirm:destructive unless it names one) and connector (MCP search and fetch)
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
        /// Restrict changes to these offers (ids checked against the school): only calls shown to stay within them are allowed (see docs/hub.md)
        #[arg(long = "offers", value_delimiter = ',', value_parser = offer_id)]
        offers: Option<Vec<String>>,
        /// Calls per minute allowed
        #[arg(long = "per-minute", value_parser = clap::value_parser!(u32).range(1..))]
        per_minute: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
        /// Create it again if a persona of this name was revoked (e.g. a built-in one: `digest`,
        /// a flow's, a sync's); an active one is never replaced
        #[arg(long)]
        replace_revoked: bool,
    },
    /// List personas
    List,
    /// Show one persona
    Show { name: String },
    /// Add scopes to a persona (or replace them with --replace)
    GrantScope {
        name: String,
        #[arg(value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        replace: bool,
    },
    /// Revoke a persona: its next call is refused
    Revoke { name: String },
    /// Replace a persona's token and print the new one (the old stops working)
    RotateToken { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The latest records
    ///
    /// An offer id in a record's arguments is shown with the offer's name (with --json:
    /// `offer_names`, id to name), from one read of each school's offers.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new records
        #[arg(long, short)]
        follow: bool,
    },
    /// Records matching filters
    ///
    /// An offer id in a record's arguments is shown with the offer's name (with --json:
    /// `offer_names`, id to name), from one read of each school's offers.
    Search(AuditFilterArgs),
    /// Write records as JSON lines or CSV
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Re-compute the hash chain; fails if a record was edited or deleted, or no longer
    /// matches an anchor kept outside the database
    Verify {
        /// SEQ:HASH from `audit anchor` or the daily summary: the record at SEQ must still have
        /// this hash (catches a chain rewritten with valid hashes from that record or before)
        #[arg(long, value_name = "SEQ:HASH", value_parser = chain_anchor)]
        anchor: Option<memberspot_hub::store::ChainHead>,
    },
    /// Print the chain head as SEQ:HASH: keep it outside the database, and check the chain
    /// against it later with `audit verify --anchor`
    Anchor,
    /// Delete records older than the retention period
    Purge {
        /// Keep this many days [default: the configured audit_retention_days]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: Option<u32>,
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Stored events, newest first
    List(EventFilterArgs),
    /// One event: its delivery, processing history, tool calls and their audit records
    Show {
        id: String,
        /// Also print the raw body as received
        #[arg(long)]
        body: bool,
    },
    /// Queue events again (dead, unmatched, done, ...); a running `memberspot serve` processes them
    Replay {
        /// Event ids
        #[arg(required_unless_present = "all_dead")]
        ids: Vec<String>,
        /// Every dead-lettered event
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
    /// Dead-lettered events (gave up after the last attempt)
    Dead {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Delete events and deliveries past their retention ([retention] in the rules file;
    /// `serve` also does this once a day)
    Purge {
        /// Keep verified events (and their deliveries) for this many days [default: the
        /// rules file's retention.events_days, else 400]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: Option<u32>,
        /// Keep refused delivery attempts for this many days [default: the rules file's
        /// retention.refused_days, else 30]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        refused_days: Option<u32>,
    },
}

#[derive(Debug, Args, Default)]
pub struct EventFilterArgs {
    /// pending, processing, retry, done, unmatched, ignored, rejected, dead, refused_amount
    /// (comma-separated)
    #[arg(long, value_delimiter = ',', value_parser = [
        "pending", "processing", "retry", "done", "unmatched", "ignored", "rejected", "dead",
        "refused_amount",
    ])]
    pub status: Vec<String>,
    /// Only events no rule matched (same as --status unmatched)
    #[arg(long)]
    pub unmatched: bool,
    /// Deliveries refused before they became events (bad signature or token, too large,
    /// another shop): source, time, size and reason
    #[arg(long, conflicts_with_all = ["status", "unmatched", "kind", "email", "order_id", "since"])]
    pub refused: bool,
    /// Webhook source name (or poll:<connection> for poller events)
    #[arg(long)]
    pub source: Option<String>,
    /// purchase, refund, chargeback, member_created, offer_granted, ...
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long = "order")]
    pub order_id: Option<String>,
    /// RFC 3339 time, or a duration ago such as 2h, 3d or 1h30m
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The day to summarise [default: yesterday in the digest's time zone]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// Render and show, send nothing, record nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Where to send it (repeatable) [default: the configured targets, else stdout]
    #[arg(long, value_enum)]
    pub to: Vec<DigestTarget>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DigestTarget {
    Slack,
    Email,
    Stdout,
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Check the flows file; errors name the line and column. With the hub's database, also
    /// each item's school and whether its persona's scopes allow the tools it calls
    Validate {
        /// The file [default: --flows, else <data dir>/flows.toml]
        file: Option<PathBuf>,
    },
    /// The configured flows, their triggers and next scheduled runs
    List,
    /// Run a flow now
    Run {
        name: String,
        /// Show what would be written without writing (read-only tools still run)
        #[arg(long)]
        dry_run: bool,
        /// JSON available to templates as `input`
        #[arg(long, value_name = "JSON", value_parser = json_text)]
        input: Option<String>,
    },
    /// Past runs, newest first
    History {
        /// Only this flow (`digest` for the daily summary)
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: every step's input, output, duration and error
    Show { run: String },
    /// Run a flow again with the input of an earlier run (e.g. a failed event-triggered run)
    Rerun {
        run: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// The syncs in the flows file
    List,
    /// Export members with their offers to a file or another app (only changes since the last run)
    Export { name: String },
    /// Run a sync: read the records, write only the differences, report per record
    Run {
        name: String,
        /// Show the plan (created/updated/unchanged/failed per record) without writing
        #[arg(long)]
        dry_run: bool,
        /// Also write the per-record report as CSV to this file
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check a rules file; errors name the line and column
    Validate {
        /// The file [default: --rules, else <data dir>/rules.toml]
        file: Option<PathBuf>,
        /// Do not read the schools' offers to check the rules' offers exist
        #[arg(long)]
        offline: bool,
    },
    /// Show what each stored event would do under the rules (nothing is written)
    DryRun(EventFilterArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args, Default)]
pub struct AuditFilterArgs {
    #[arg(long)]
    pub persona: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    /// The calls of one request: an HTTP request's `X-Request-Id` (REST, MCP), an event's
    /// tool call or a chat conversation
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// ok, tool_error, denied, invalid or cancelled
    #[arg(long, value_parser = ["ok", "tool_error", "denied", "invalid", "cancelled"])]
    pub outcome: Option<String>,
    /// cli, mcp-stdio, mcp-http, rest, flow, events or poller
    #[arg(long, value_parser = ["cli", "mcp-stdio", "mcp-http", "rest", "flow", "events", "poller"])]
    pub surface: Option<String>,
    /// RFC 3339 time, a date, or a duration ago like 2h, 7d or 1h30m
    #[arg(long, value_parser = audit_since)]
    pub since: Option<String>,
    /// At most this many records: `search` shows the newest matches, oldest first
    /// [default: 100]; `export` writes the oldest matches [default: every one]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Generate a new master key, re-encrypt every stored key, and write it to the key file
    Rotate {
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List every tool with its class (read, write, destructive)
    List,
    /// Show a tool's description, arguments and annotations
    Describe { name: String },
    /// Call a tool with JSON arguments and print its JSON result
    #[command(
        after_help = "Arguments come from --json, --args-file and --arg, merged in that order.\n\
        An --arg value is read as JSON when it parses (numbers, true/false, [..], {..}), else as text.\n\n\
        Examples:\n  memberspot tools call list_users --arg page_length=5\n  \
        memberspot tools call delete_users --json '{\"emails\":[\"a@example.com\"]}' --yes"
    )]
    Call(CallArgs),
}

#[derive(Debug, Args)]
pub struct CallArgs {
    pub name: String,
    /// Arguments as a JSON object (may also be written `--json OBJECT`)
    #[arg(long = "input", value_name = "OBJECT")]
    pub json_args: Option<String>,
    /// Read arguments from a JSON file ("-" for stdin)
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
    /// One argument as key=value (repeatable)
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// Do not ask before destructive tools
    #[arg(long, short)]
    pub yes: bool,
}

/// `tools call NAME --json '{..}'` passes arguments, while `--json` alone is
/// the global output flag. clap cannot give one long name both meanings, so
/// after `tools call` a `--json` followed by a value becomes `--input`.
/// An API base URL the client accepts: https://, or http:// to a loopback address.
fn base_url(s: &str) -> Result<String, String> {
    memberspot_api::check_base_url(s)
        .map(|()| s.trim().to_string())
        .map_err(|e| match e {
            memberspot_api::ApiError::Config(m) => m,
            other => other.to_string(),
        })
}

/// A number >= 0 (requests per second; 0 means no pacing).
fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("must be a number >= 0, got `{s}`")),
    }
}

/// `SEQ:HASH` as `audit anchor` prints it.
fn chain_anchor(s: &str) -> Result<memberspot_hub::store::ChainHead, String> {
    s.parse()
}

/// A number of seconds > 0.
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("must be a number of seconds > 0, got `{s}`")),
    }
}

/// An offer id: not blank (a blank one would match no offer and lock the persona out).
fn offer_id(s: &str) -> Result<String, String> {
    let id = s.trim();
    if id.is_empty() {
        return Err("an offer id must not be empty".into());
    }
    Ok(id.to_string())
}

/// Text that parses as JSON (kept as text; the command parses it again).
fn json_text(s: &str) -> Result<String, String> {
    serde_json::from_str::<serde_json::Value>(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not JSON: {e}"))
}

/// Checked now, resolved when the command runs (a duration counts back from then).
fn audit_since(s: &str) -> Result<String, String> {
    crate::commands::audit::parse_since(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Where a subcommand's help points for the options every command understands.
const GLOBALS_HINT: &str = "Global options (--api-key, --connection, --json, -v, …) work here too: \
                            see `memberspot --help`.";

impl Cli {
    /// Parses the command line (exiting with clap's message and code 2 on bad usage), with
    /// the global options listed once, under `memberspot --help`: every subcommand's help
    /// points there instead of repeating them.
    pub fn parse_args(args: Vec<std::ffi::OsString>) -> Cli {
        match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
                let long = !args.iter().any(|a| a == "-h");
                print!("{}", Cli::help_text(&args, long));
                std::process::exit(0);
            }
            Err(e) => e.exit(),
        }
    }

    /// The help of the (sub)command the words of `args` name, as `--help` (`long`) or
    /// `-h` show it, without the global options below the top level. Parsing keeps
    /// clap's own tree: this one only renders.
    pub fn help_text(args: &[std::ffi::OsString], long: bool) -> String {
        let mut cmd = Cli::help_command();
        let mut path: Vec<&str> = Vec::new();
        let mut named = &cmd;
        for word in args.iter().skip(1).filter_map(|a| a.to_str()) {
            if word == "help" {
                continue;
            }
            if let Some(sub) = named.find_subcommand(word) {
                path.push(word);
                named = sub;
            }
        }
        render_help(&mut cmd, &path, long)
    }

    /// The command tree whose subcommands' help leaves out the global options (for
    /// rendering help only).
    pub fn help_command() -> clap::Command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        let globals: Vec<clap::Id> = cmd
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().clone())
            .collect();
        for sub in cmd.get_subcommands_mut() {
            hide_globals(sub, &globals);
        }
        cmd
    }
}

fn render_help(cmd: &mut clap::Command, path: &[&str], long: bool) -> String {
    if let Some((first, rest)) = path.split_first()
        && let Some(sub) = cmd.find_subcommand_mut(first)
    {
        return render_help(sub, rest, long);
    }
    if long {
        cmd.render_long_help().to_string()
    } else {
        cmd.render_help().to_string()
    }
}

fn hide_globals(cmd: &mut clap::Command, globals: &[clap::Id]) {
    let mut c = std::mem::take(cmd);
    for id in globals {
        if c.get_arguments().any(|a| a.get_id() == id) {
            c = c.mut_arg(id, |a| a.hide(true));
        }
    }
    let after = match c.get_after_help() {
        Some(text) => format!("{text}\n\n{GLOBALS_HINT}"),
        None => GLOBALS_HINT.to_owned(),
    };
    c = c.after_help(after);
    for sub in c.get_subcommands_mut() {
        hide_globals(sub, globals);
    }
    *cmd = c;
}

pub fn normalize_args<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let Some(call_at) = args
        .windows(2)
        .position(|w| w[0] == "tools" && w[1] == "call")
    else {
        return args;
    };
    for i in call_at + 2..args.len() {
        let Some(text) = args[i].to_str() else {
            continue;
        };
        if let Some(value) = text.strip_prefix("--json=") {
            args[i] = format!("--input={value}").into();
        } else if text == "--json"
            && args
                .get(i + 1)
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with("--"))
        {
            args[i] = "--input".into();
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
        Cli::help_command().debug_assert();
    }

    #[test]
    fn global_options_are_listed_once() {
        let mut top = Cli::help_command();
        let top_help = top.render_long_help().to_string();
        assert!(top_help.contains("--api-key"), "{top_help}");
        let users = top.find_subcommand_mut("users").expect("users");
        let list = users.find_subcommand_mut("list").expect("users list");
        let help = list.render_long_help().to_string();
        assert!(!help.contains("--api-key <API_KEY>"), "{help}");
        assert!(
            help.contains("--offer") && help.contains(GLOBALS_HINT),
            "{help}"
        );
        // Still understood after the subcommand, and the rest of the grammar is clap's own.
        let cli = Cli::parse_args(
            ["m", "users", "list", "--json", "--api-key", "k"]
                .map(std::ffi::OsString::from)
                .to_vec(),
        );
        assert!(cli.global.json);
        let cli = Cli::parse_args(
            ["m", "offers", "list"]
                .map(std::ffi::OsString::from)
                .to_vec(),
        );
        assert!(cli.global.reason.is_none());
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let short = Cli::help_text(&args(&["m", "users", "list", "-h"]), false);
        assert!(short.contains("Usage: memberspot users list") && !short.contains("--api-key <"));
        let via_help = Cli::help_text(&args(&["m", "help", "users", "list"]), true);
        assert!(
            via_help.contains("Usage: memberspot users list"),
            "{via_help}"
        );
    }

    #[test]
    fn access_commands_need_an_email_and_exactly_one_target() {
        let parse = |v: &[&str]| Cli::try_parse_from(v.iter().copied());
        assert!(parse(&["m", "users", "revoke", "a@b.de", "--offer", "o"]).is_ok());
        assert!(parse(&["m", "users", "revoke", "a@b.de", "--order", "x"]).is_ok());
        assert!(
            parse(&["m", "users", "revoke", "--offer", "o"]).is_err(),
            "e-mail missing"
        );
        assert!(
            parse(&["m", "users", "revoke", "a@b.de"]).is_err(),
            "target missing"
        );
        assert!(
            parse(&[
                "m", "users", "revoke", "a@b.de", "--offer", "o", "--order", "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn json_after_tools_call_carries_arguments() {
        let norm = |v: &[&str]| -> Vec<String> {
            normalize_args(v.iter().map(std::ffi::OsString::from))
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            norm(&["m", "tools", "call", "x", "--json", "{}"]),
            ["m", "tools", "call", "x", "--input", "{}"]
        );
        assert_eq!(
            norm(&["m", "-v", "tools", "call", "x", "--json={}"]),
            ["m", "-v", "tools", "call", "x", "--input={}"]
        );
        assert_eq!(
            norm(&["m", "tools", "call", "x", "--json", "--yes"]),
            ["m", "tools", "call", "x", "--json", "--yes"]
        );
        assert_eq!(
            norm(&["m", "users", "list", "--json"]),
            ["m", "users", "list", "--json"]
        );
        let cli = Cli::try_parse_from(normalize_args(
            ["m", "tools", "call", "x", "--json", "{\"a\":1}"].map(Into::into),
        ))
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Tools(ToolsCommand::Call(CallArgs {
                json_args: Some(_),
                ..
            }))
        ));
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActiveFilter {
    True,
    False,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List members (one page, or --all)
    List {
        /// Only members holding this offer (its id or name)
        #[arg(long)]
        offer: Option<String>,
        /// Only members with access to this course
        #[arg(long)]
        course: Option<String>,
        /// Only members with (true) or without (false) active access
        #[arg(long, value_enum)]
        active: Option<ActiveFilter>,
        /// Follow every page
        #[arg(long)]
        all: bool,
        /// Stop after this many members (with --all)
        #[arg(long)]
        limit: Option<usize>,
        /// Members per request, 1-100
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        page_length: Option<u32>,
        /// Continue after this cursor (printed by the previous page)
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one member by e-mail
    Find { email: String },
    /// Grant an offer to one member, or to every row of a CSV file
    #[command(
        after_help = "CSV columns (header required; ',' or ';'): email, first_name, last_name, offer_id, order_id.\n\
        German headers (E-Mail, Vorname, Nachname, Zugang, Bestellung) work too. Rows that fail are written\n\
        to a retry file you can pass back to --csv."
    )]
    Grant(GrantArgs),
    /// Revoke access (keeps progress; reversible with `restore`)
    Revoke(AccessTarget),
    /// Restore revoked access
    Restore(AccessTarget),
    /// Remove access completely and DELETE the related course progress
    RemoveAccess {
        #[command(flatten)]
        target: AccessTarget,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Set or clear the date an offer ends for a member
    Expire {
        email: String,
        /// The offer (its id or name)
        #[arg(long)]
        offer: String,
        /// End of access, ISO-8601 (2026-12-31 or 2026-12-31T23:59:59Z)
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        at: Option<String>,
        /// Remove the end date
        #[arg(long)]
        clear: bool,
    },
    /// Delete members permanently, with all their data
    Delete {
        #[arg(required = true)]
        emails: Vec<String>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Set custom property values on a member
    SetProperty {
        email: String,
        /// PROPERTY_ID=VALUE (repeatable)
        #[arg(long = "set", required = true, value_name = "ID=VALUE")]
        values: Vec<String>,
    },
    /// Unlock one chapter of a course for a member
    UnlockChapter {
        email: String,
        #[arg(long)]
        course: String,
        #[arg(long)]
        chapter: String,
    },
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The member's e-mail (omit with --csv)
    #[arg(required_unless_present = "csv", conflicts_with = "csv")]
    pub email: Option<String>,
    /// Offer to grant, by id or name (with --csv: the default for rows without one); checked against the school
    #[arg(long)]
    pub offer: Option<String>,
    /// First name for a new member
    #[arg(long)]
    pub first: Option<String>,
    /// Last name for a new member
    #[arg(long)]
    pub last: Option<String>,
    /// Order id to tie the access to
    #[arg(long)]
    pub order: Option<String>,
    /// Grant every row of this CSV file
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Check the file and show what would be granted, without granting
    #[arg(long, requires = "csv")]
    pub dry_run: bool,
    /// Grants in flight at once (pacing still applies)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Where to write rows that failed [default: <FILE>.failed.csv]
    #[arg(long, value_name = "FILE", requires = "csv")]
    pub failed_out: Option<PathBuf>,
}

/// Which access to change: one offer, or everything from one order.
#[derive(Debug, Args)]
#[group(skip)]
pub struct AccessTarget {
    /// The member's e-mail
    pub email: String,
    /// The offer (its id or name)
    #[arg(long, required_unless_present = "order", conflicts_with = "order")]
    pub offer: Option<String>,
    /// An order id: applies to every offer granted with it
    #[arg(long)]
    pub order: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// List every offer
    List,
}

#[derive(Debug, Subcommand)]
pub enum PropertiesCommand {
    /// List custom property definitions
    List,
}

#[derive(Debug, Subcommand)]
pub enum ExamsCommand {
    /// List the results of one exam
    Results { exam_id: String },
}

#[derive(Debug, Args)]
pub struct ProgressArgs {
    pub email: String,
    /// Only this course
    #[arg(long)]
    pub course: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginLinkArgs {
    /// The member's uid, or their e-mail address
    pub member: String,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also write the findings to FILE as JSON: field names, JSON types and lengths only,
    /// no value from the school, to attach to a bug report
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Serve the emulated Memberspot API over HTTP until Ctrl-C
    Serve(SandboxServeArgs),
}

#[derive(Debug, Args)]
pub struct SandboxServeArgs {
    /// Port to listen on (0 = any free port)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// API key clients must send in X-API-KEY
    #[arg(long, default_value = "sk_sandbox_demo_key")]
    pub api_key: String,
    /// Seed of the generated school (same seed, same school)
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of members to generate
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Number of offers to generate
    #[arg(long, default_value_t = 4)]
    pub offers: usize,
    /// Number of courses to generate
    #[arg(long, default_value_t = 3)]
    pub courses: usize,
    /// Requests per second allowed per API key (0 = unlimited)
    #[arg(long, default_value_t = memberspot_api::DEFAULT_RATE_LIMIT)]
    pub rate_limit: f64,
    /// Keep the school in this JSON file across restarts
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Answer shapes: documented (the canonical ones) or alternate (every alternative
    /// public material reports, at once; see docs/api-shapes.md)
    #[arg(
        long,
        value_enum,
        default_value = "documented",
        env = "MEMBERSPOT_SANDBOX_SHAPES",
        ignore_case = true
    )]
    pub shapes: ShapesArg,
    /// Added latency per request, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Share of requests answered with a 5xx (0-1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Share of requests that start a burst of 429 answers (0-1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_429_rate: f64,
    /// Length of each 429 burst
    #[arg(long, default_value_t = 3)]
    pub fault_429_burst: u32,
    /// Share of requests that hang, then time out (0-1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_timeout_rate: f64,
    /// How long a hanging request hangs, in milliseconds
    #[arg(long, default_value_t = 30_000)]
    pub fault_timeout_ms: u64,
}
