//! The gateway every surface calls through: authenticate, check scopes and
//! limits, run the tool on the persona's connection, audit the call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memberspot_api::{ApiKey, Client};
use memberspot_store::{
    AuditRecord, Connection, NewAuditRecord, NewConnection, Persona, Store, StoreError,
};
use memberspot_tools::{Catalogue, ToolDescriptor, ToolError};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::audit_writer::AuditWriter;
use crate::directory::{Directory, Freshness};
use crate::limits::PersonaLimiter;
use crate::metrics::Metrics;
use crate::scopes::Scopes;
use crate::secrets::{CHECK_META_KEY, MasterKey};
use crate::tokens;
use crate::{HubError, Surface};

/// Base URL stored for the built-in connection to the embedded sandbox; the
/// running process supplies the real address.
pub const EMBEDDED_BASE_URL: &str = "embedded:sandbox";
/// Name of the built-in sandbox connection.
pub const SANDBOX_CONNECTION: &str = "sandbox";
/// Responses larger than this are stored in the audit log as a preview.
const AUDIT_RESPONSE_CAP: usize = 16 * 1024;

/// Where the embedded sandbox of this process listens.
#[derive(Clone)]
pub struct EmbeddedSandbox {
    pub base_url: String,
    pub api_key: ApiKey,
}

/// Who is calling.
// One value per request: its size does not matter, and boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Principal {
    /// A persona, authenticated by its token on every call.
    Persona(Persona),
    /// The local operator (CLI on the hub's machine) acting on a connection
    /// with every scope.
    Operator { connection: String },
}

impl Principal {
    pub fn persona_name(&self) -> Option<&str> {
        match self {
            Principal::Persona(p) => Some(&p.name),
            Principal::Operator { .. } => None,
        }
    }

    pub fn connection(&self) -> &str {
        match self {
            Principal::Persona(p) => &p.connection,
            Principal::Operator { connection } => connection,
        }
    }
}

/// What the caller says about the call, recorded in the audit log.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub surface: Surface,
    pub request_id: String,
    /// The prompt or reason behind the call, when the caller sends one.
    pub prompt: Option<String>,
    /// The human on whose behalf the agent acts, when known.
    pub end_user: Option<String>,
}

impl CallContext {
    pub fn new(surface: Surface) -> Self {
        CallContext {
            surface,
            request_id: uuid::Uuid::now_v7().to_string(),
            prompt: None,
            end_user: None,
        }
    }
}

/// The result of an audited call.
#[derive(Debug)]
pub struct CallOutcome {
    pub result: Result<Value, HubError>,
    /// The audit record, when it could be written.
    pub audit: Option<AuditRecord>,
}

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    key: MasterKey,
    catalogue: Catalogue,
    embedded: Option<EmbeddedSandbox>,
    clients: Mutex<HashMap<String, (i64, Client)>>,
    limiter: PersonaLimiter,
    client_timeout: Duration,
    metrics: Metrics,
    audit: AuditWriter,
    directory: Directory,
}

impl Hub {
    /// Opens the hub on `store`: checks the master key against the stored
    /// check value (setting it on first use) and creates the built-in
    /// sandbox connection once.
    pub async fn open(
        store: Store,
        key: MasterKey,
        embedded: Option<EmbeddedSandbox>,
    ) -> Result<Hub, HubError> {
        // Instances may start together on a fresh database: the first check value
        // stored wins, and every instance compares its key against that one.
        let check = match store.get_meta(CHECK_META_KEY).await? {
            Some(check) => check,
            None => {
                store
                    .set_meta_if_absent(CHECK_META_KEY, &key.check_value())
                    .await?
            }
        };
        if !key.matches_check(&check) {
            return Err(HubError::WrongMasterKey);
        }
        let bound = crate::secrets::bind_stored_keys(&store, &key).await?;
        if bound > 0 {
            tracing::info!(
                keys = bound,
                "stored API keys bound to their connections (name and base URL)"
            );
        }
        if store
            .get_meta("sandbox_connection_created")
            .await?
            .is_none()
        {
            if store.get_connection(SANDBOX_CONNECTION).await?.is_none() {
                let created = store
                    .insert_connection(&NewConnection {
                        name: SANDBOX_CONNECTION.into(),
                        base_url: EMBEDDED_BASE_URL.into(),
                        sealed_key: key.seal_connection_key(
                            SANDBOX_CONNECTION,
                            EMBEDDED_BASE_URL,
                            "embedded",
                        ),
                        key_hint: "…".into(),
                        rate_limit: 4.0,
                    })
                    .await;
                match created {
                    // Another instance created it between the look and the insert.
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            store.set_meta("sandbox_connection_created", "1").await?;
        }
        let audit = AuditWriter::spawn(store.clone());
        let directory = Directory::spawn(store.clone());
        Ok(Hub {
            inner: Arc::new(Inner {
                store,
                key,
                catalogue: Catalogue::standard(),
                embedded,
                clients: Mutex::new(HashMap::new()),
                limiter: PersonaLimiter::default(),
                client_timeout: Duration::from_secs(30),
                metrics: Metrics::default(),
                audit,
                directory,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// Looks a bearer token up. Checked against the directory version on every
    /// call, so a revocation takes effect on the next call without a restart.
    pub async fn authenticate(&self, token: &str) -> Result<Persona, HubError> {
        let persona = self.identify(token).await?;
        refuse_revoked(&persona)?;
        Ok(persona)
    }

    /// The persona a token belongs to, revoked or not: a tool call with a revoked
    /// token is refused by [`Hub::call`], which records the attempt.
    pub async fn identify(&self, token: &str) -> Result<Persona, HubError> {
        let token = token.trim();
        if !tokens::looks_like_token(token) {
            return Err(HubError::Unauthenticated(
                "the token is not a Memberspot Hub persona token".into(),
            ));
        }
        let hash = tokens::hash(token);
        let persona = self
            .inner
            .directory
            .persona_by_token_hash(&hash)
            .await?
            .filter(|p| tokens::verify(token, &p.token_hash))
            .ok_or_else(|| HubError::Unauthenticated("unknown or rotated token".into()))?;
        Ok(persona)
    }

    /// A persona by name (stdio MCP, flows), checked against the store on every
    /// call: revocation applies on the next call.
    pub async fn persona(&self, name: &str) -> Result<Persona, HubError> {
        let p = self.find_persona(name).await?;
        refuse_revoked(&p)?;
        Ok(p)
    }

    /// As [`Hub::persona`], revoked or not (for a tool call, which [`Hub::call`]
    /// refuses and records).
    pub async fn find_persona(&self, name: &str) -> Result<Persona, HubError> {
        self.inner
            .directory
            .persona(name)
            .await?
            .ok_or_else(|| HubError::Unauthenticated(format!("no persona named `{name}`")))
    }

    pub fn scopes_of(&self, p: &Persona) -> Scopes {
        Scopes::parse(&p.scopes, &self.inner.catalogue)
            .unwrap_or_default()
            .with_offers(p.offer_ids.clone())
    }

    /// The tools a principal may see.
    pub fn tools_for(&self, who: &Principal) -> Vec<&ToolDescriptor> {
        match who {
            Principal::Operator { .. } => self.inner.catalogue.descriptors().collect(),
            Principal::Persona(p) => {
                let scopes = self.scopes_of(p);
                self.inner
                    .catalogue
                    .descriptors()
                    .filter(|d| scopes.allows(d))
                    .collect()
            }
        }
    }

    /// Calls a tool and writes exactly one audit record, whatever happens.
    pub async fn call(
        &self,
        who: &Principal,
        ctx: &CallContext,
        tool: &str,
        args: Value,
    ) -> CallOutcome {
        self.call_on(who, ctx, tool, args, None).await
    }

    /// As [`Hub::call`], on `client` instead of the principal's stored
    /// connection (the CLI with a key from the environment).
    pub async fn call_on(
        &self,
        who: &Principal,
        ctx: &CallContext,
        tool: &str,
        args: Value,
        client: Option<Client>,
    ) -> CallOutcome {
        let started = Instant::now();
        // Written as "cancelled" if this future is dropped before the record is handed
        // to the audit writer (a client that disconnects, an MCP cancellation): the call
        // may have reached the school, so it must be on record all the same.
        let mut pending = PendingAudit {
            hub: self.clone(),
            started,
            record: Some(NewAuditRecord {
                at: 0,
                request_id: ctx.request_id.clone(),
                surface: ctx.surface.as_str().to_string(),
                connection: Some(who.connection().to_string()),
                persona: who.persona_name().map(str::to_string),
                end_user: ctx.end_user.clone(),
                prompt: ctx.prompt.clone(),
                tool: tool.to_string(),
                arguments: args.clone(),
                outcome: CANCELLED.to_string(),
                response: None,
                error: Some(CANCELLED_ERROR.to_string()),
                upstream_status: None,
                latency_ms: 0,
            }),
        };
        let (result, upstream_status) = self.run(who, tool, args, client).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        if let Some(record) = pending.record.as_mut() {
            record.at = chrono::Utc::now().timestamp_millis();
            record.outcome = outcome.to_string();
            (record.response, record.error) = match &result {
                Ok(v) => (Some(cap(v)), None),
                Err(e) => (None, Some(e.to_string())),
            };
            record.upstream_status = upstream_status.or_else(|| result.as_ref().ok().map(|_| 200));
            record.latency_ms = started.elapsed().as_millis() as u64;
        }
        self.inner.metrics.record_call(
            tool,
            outcome,
            ctx.surface.as_str(),
            started.elapsed().as_secs_f64(),
        );
        let audit = match self.inner.audit.append(&mut pending.record).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(tool, error = %e, "could not write the audit record");
                None
            }
        };
        CallOutcome { result, audit }
    }

    async fn run(
        &self,
        who: &Principal,
        tool: &str,
        args: Value,
        client: Option<Client>,
    ) -> (Result<Value, HubError>, Option<u16>) {
        if let Principal::Persona(p) = who
            && let Err(e) = refuse_revoked(p)
        {
            return (Err(e), None);
        }
        let Some(entry) = self.inner.catalogue.get(tool) else {
            return (
                Err(HubError::Tool(ToolError::UnknownTool {
                    name: tool.to_string(),
                })),
                None,
            );
        };
        if let Principal::Persona(p) = who {
            if let Err(msg) = self.scopes_of(p).check_call(&entry.descriptor, &args) {
                return (Err(HubError::Denied(msg)), None);
            }
            if let Some(limit) = p.calls_per_minute
                && let Err(wait) = self.inner.limiter.try_take(&p.id, limit)
            {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return (
                    Err(HubError::Limited {
                        message: format!(
                            "persona `{}` exceeded its limit of {limit} calls per minute; try again in {secs}s",
                            p.name
                        ),
                        retry_after_secs: secs,
                    }),
                    None,
                );
            }
        }
        if let Err(e) = entry.validate(&args) {
            return (Err(HubError::Tool(e)), None);
        }
        let client = match client {
            Some(c) => c,
            None => match self.client_of(who).await {
                Ok(c) => c,
                Err(e) => return (Err(e), None),
            },
        };
        let throttled_before = client.stats().rate_limited;
        let result = entry.call(&client, args).await;
        self.inner.metrics.record_upstream_429(
            who.connection(),
            client.stats().rate_limited.saturating_sub(throttled_before),
        );
        match result {
            Ok(v) => (Ok(v), Some(200)),
            Err(e) => {
                let status = match &e {
                    ToolError::Api(api) => api.status(),
                    _ => None,
                };
                (Err(HubError::Tool(e)), status)
            }
        }
    }

    /// The client of a connection, rebuilt when the connection changed.
    pub async fn client_for(&self, name: &str) -> Result<Client, HubError> {
        self.client_at(name, Freshness::Check).await
    }

    /// The client `who` calls through. A persona was authenticated for this
    /// call, by a directory check that started after the call arrived, so the
    /// directory as of the latest check is fresh enough: one check per call.
    async fn client_of(&self, who: &Principal) -> Result<Client, HubError> {
        let freshness = match who {
            Principal::Persona(_) => Freshness::LatestCheck,
            Principal::Operator { .. } => Freshness::Check,
        };
        self.client_at(who.connection(), freshness).await
    }

    async fn client_at(&self, name: &str, freshness: Freshness) -> Result<Client, HubError> {
        let conn = self
            .inner
            .directory
            .connection(name, freshness)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("no connection named `{name}`")))?;
        if let Ok(cache) = self.inner.clients.lock()
            && let Some((updated, client)) = cache.get(name)
            && *updated == conn.updated_at
        {
            return Ok(client.clone());
        }
        let client = self.build_client(&conn)?;
        if let Ok(mut cache) = self.inner.clients.lock() {
            cache.insert(name.to_string(), (conn.updated_at, client.clone()));
        }
        Ok(client)
    }

    fn build_client(&self, conn: &Connection) -> Result<Client, HubError> {
        let (base_url, key) = if conn.base_url == EMBEDDED_BASE_URL {
            let e = self.inner.embedded.as_ref().ok_or_else(|| {
                HubError::Unavailable("the embedded sandbox is not running in this process".into())
            })?;
            (e.base_url.clone(), e.api_key.clone())
        } else {
            let key = self.inner.key.open_connection_key(conn)?;
            (conn.base_url.clone(), ApiKey::new(key.expose_secret()))
        };
        Client::builder(base_url)
            .api_key(key)
            .rate_limit(conn.rate_limit)
            .timeout(self.inner.client_timeout)
            .build()
            .map_err(|e| HubError::Unavailable(format!("connection `{}`: {e}", conn.name)))
    }
}

/// The outcome of a call whose caller went away before it finished.
const CANCELLED: &str = "cancelled";
const CANCELLED_ERROR: &str =
    "the caller went away before the call finished; it may or may not have reached the school";

/// A call's audit record until the audit writer has it: dropped before that, it
/// is handed over from `Drop` (a call that was in flight is never left off the log).
struct PendingAudit {
    hub: Hub,
    started: Instant,
    record: Option<NewAuditRecord>,
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        if record.outcome == CANCELLED {
            record.at = chrono::Utc::now().timestamp_millis();
            record.latency_ms = self.started.elapsed().as_millis() as u64;
            self.hub.inner.metrics.record_call(
                &record.tool,
                CANCELLED,
                &record.surface,
                self.started.elapsed().as_secs_f64(),
            );
        }
        self.hub.inner.audit.append_detached(record);
    }
}

/// A revoked persona may not act; the error says so (and is audited as `denied`).
fn refuse_revoked(p: &Persona) -> Result<(), HubError> {
    match p.revoked_at {
        Some(_) => Err(HubError::Unauthenticated(format!(
            "persona `{}` has been revoked",
            p.name
        ))),
        None => Ok(()),
    }
}

/// Caps a response for the audit log.
fn cap(v: &Value) -> Value {
    let bytes = json_len(v);
    if bytes <= AUDIT_RESPONSE_CAP {
        return v.clone();
    }
    let preview: String = v.to_string().chars().take(4096).collect();
    json!({ "truncated": true, "bytes": bytes, "preview": preview })
}

/// The length of `v` as compact JSON, without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_is_the_compact_text_length() {
        for v in [
            json!(null),
            json!({"a": [1, 2.5, "ü\"x"], "b": {"c": true}}),
            json!("x".repeat(5000)),
        ] {
            assert_eq!(json_len(&v), v.to_string().len());
        }
    }

    #[test]
    fn large_responses_are_stored_as_a_preview() {
        let small = json!({"items": [1, 2, 3]});
        assert_eq!(cap(&small), small);
        let big = json!({"blob": "y".repeat(AUDIT_RESPONSE_CAP)});
        let capped = cap(&big);
        assert_eq!(capped["truncated"], true);
        assert_eq!(capped["bytes"], big.to_string().len());
        assert_eq!(
            capped["preview"].as_str().map(|p| p.chars().count()),
            Some(4096)
        );
    }
}
