//! The gateway every surface calls through: authenticate, check scopes and
//! limits, run the tool on the persona's connection, audit the call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memberspot_api::progress::ProgressSink;
use memberspot_api::{ApiKey, Client};
use memberspot_store::{
    AuditOutcome, AuditRecord, Connection, EventStore, FlowStore, NewAuditRecord, NewConnection,
    Persona, Store, StoreError,
};
use memberspot_tools::{Catalogue, Tool, ToolDescriptor, ToolEntry, ToolError};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::audit_writer::AuditWriter;
use crate::directory::{Directory, Freshness};
use crate::limits::PersonaLimiter;
use crate::metrics::Metrics;
use crate::scopes::{OfferProof, Scopes};
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
/// Prompts and end users longer than this are cut in the audit log, with a marker.
pub const AUDIT_TEXT_CAP: usize = 8 * 1024;
/// Arguments of a call that never ran (refused, invalid) longer than this are stored as a
/// preview: anyone holding a token could otherwise fill the log with them.
const AUDIT_REFUSED_ARGUMENTS_CAP: usize = 8 * 1024;

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
    /// The OAuth client the call came through (remote MCP), as `name (client id)`.
    pub oauth_client: Option<String>,
    /// Receives the call's progress (items of a bulk tool, waits for the school's rate
    /// limit), for surfaces that show it; not recorded.
    pub progress: Option<ProgressSink>,
}

impl CallContext {
    pub fn new(surface: Surface) -> Self {
        CallContext {
            surface,
            request_id: uuid::Uuid::now_v7().to_string(),
            prompt: None,
            end_user: None,
            oauth_client: None,
            progress: None,
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
    /// Offers read for views, reused by the next views for a minute.
    recent_offers: crate::offer_names::RecentOffers,
    /// Console password checks, in line (anyone can post a sign-in).
    password_work: crate::console::PasswordWork,
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
                        rate_limit: memberspot_api::DEFAULT_RATE_LIMIT,
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
        let catalogue = Catalogue::standard();
        let metrics = Metrics::new(catalogue.iter().map(ToolEntry::name));
        Ok(Hub {
            inner: Arc::new(Inner {
                store,
                key,
                catalogue,
                embedded,
                clients: Mutex::new(HashMap::new()),
                limiter: PersonaLimiter::default(),
                client_timeout: Duration::from_secs(30),
                metrics,
                audit,
                directory,
                recent_offers: Default::default(),
                password_work: crate::console::PasswordWork::for_this_machine(),
            }),
        })
    }

    pub(crate) fn password_work(&self) -> &crate::console::PasswordWork {
        &self.inner.password_work
    }

    pub(crate) fn recent_offers(&self) -> &crate::offer_names::RecentOffers {
        &self.inner.recent_offers
    }

    /// The whole store, for the hub's own operations. Subsystems use their own views
    /// ([`Hub::events_store`], [`Hub::flows_store`]) and every surface the operations.
    #[cfg(not(feature = "test-support"))]
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The whole store, for tests that write what no operation would (a row as an older
    /// version left it). Only with the `test-support` feature, never in the binary.
    #[cfg(feature = "test-support")]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Which database holds the hub (shown in the console's settings).
    pub fn store_backend(&self) -> crate::store::Backend {
        self.inner.store.backend()
    }

    /// What the events subsystem keeps in the store (deliveries, the queue, orders, the
    /// poller's snapshots), and nothing else.
    pub fn events_store(&self) -> EventStore<'_> {
        self.inner.store.events()
    }

    /// What flows keep in the store (runs, steps, leases, the digest's reads), and
    /// nothing else.
    pub fn flows_store(&self) -> FlowStore<'_> {
        self.inner.store.flows()
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

    /// `who` as stored now: a persona read again (so a revocation or a change applies to
    /// the next call of a long-running command), the operator as it is.
    pub async fn current(&self, who: &Principal) -> Result<Principal, HubError> {
        Ok(match who {
            Principal::Persona(p) => Principal::Persona(self.find_persona(&p.name).await?),
            operator => operator.clone(),
        })
    }

    /// The persona's scopes. Stored scopes that no longer parse (a tool was renamed, the
    /// row was edited) are an error, logged and refused, never "no permissions".
    pub fn scopes_of(&self, p: &Persona) -> Result<Scopes, HubError> {
        match Scopes::parse(&p.scopes, &self.inner.catalogue) {
            Ok(s) => Ok(s.with_offers(p.offer_ids.clone())),
            Err(e) => {
                tracing::error!(persona = %p.name, error = %e, "the persona's stored scopes do not parse; its calls are refused");
                Err(HubError::Denied(format!(
                    "the stored scopes of persona `{}` no longer parse ({e}); nothing is allowed until they are fixed with `memberspot personas grant-scope {} SCOPES --replace`",
                    p.name, p.name
                )))
            }
        }
    }

    /// The tools a principal may see.
    pub fn tools_for(&self, who: &Principal) -> Result<Vec<&ToolDescriptor>, HubError> {
        Ok(match who {
            Principal::Operator { .. } => self.inner.catalogue.descriptors().collect(),
            Principal::Persona(p) => {
                let scopes = self.scopes_of(p)?;
                self.inner
                    .catalogue
                    .descriptors()
                    .filter(|d| scopes.allows(d))
                    .collect()
            }
        })
    }

    /// Checks offer ids against the offers of `connection`: a restriction to an offer
    /// that does not exist would be a typo that allows nothing, or the wrong school.
    /// Returns them trimmed, without duplicates.
    pub async fn check_offer_ids(
        &self,
        connection: &str,
        ids: &[String],
    ) -> Result<Vec<String>, HubError> {
        let mut wanted: Vec<String> = Vec::new();
        for id in ids.iter().map(|i| i.trim()) {
            if id.is_empty() {
                return Err(HubError::Invalid("an offer id must not be empty".into()));
            }
            if !wanted.iter().any(|w| w == id) {
                wanted.push(id.to_string());
            }
        }
        if wanted.is_empty() {
            return Err(HubError::Invalid(
                "an offer restriction needs at least one offer id (or none at all)".into(),
            ));
        }
        let offers = self.offers_of(connection).await?;
        let unknown: Vec<String> = wanted
            .iter()
            .filter(|w| !offers.iter().any(|o| &o.id == *w))
            .map(|w| format!("`{w}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(HubError::Invalid(format!(
                "no offer {} on connection `{connection}`; `memberspot offers list` shows its offers",
                unknown.join(", ")
            )));
        }
        Ok(wanted)
    }

    /// The offers of `connection`, read now (one read call, not audited: it checks
    /// configuration, like `connections test`).
    pub async fn offers_of(
        &self,
        connection: &str,
    ) -> Result<Vec<memberspot_api::wire::Offer>, HubError> {
        let client = self.client_for(connection).await?;
        client
            .execute(&memberspot_api::actions::ListOffers)
            .await
            .map(|list| list.0)
            .map_err(|e| {
                HubError::Unavailable(format!(
                    "could not read the offers of connection `{connection}`: {e}"
                ))
            })
    }

    /// Takes one call from the persona's per-minute budget: every call does, before any
    /// other check, and so does other work a persona asks for that costs like a call
    /// (opening an MCP session). The error is the one a call over the limit gets.
    pub fn take_call_budget(&self, p: &Persona) -> Result<(), HubError> {
        let Some(limit) = p.calls_per_minute else {
            return Ok(());
        };
        self.inner.limiter.try_take(&p.id, limit).map_err(|wait| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            HubError::Limited {
                message: format!(
                    "persona `{}` exceeded its limit of {limit} calls per minute; try again in {secs}s",
                    p.name
                ),
                retry_after_secs: secs,
            }
        })
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

    /// A typed call of the tool `T`: its input becomes the JSON arguments of
    /// [`Hub::call`] (absent options left out, as a JSON caller would), so it is
    /// authenticated, limited, scoped, offer-checked and audited by the same path, and the
    /// JSON result is read back as `T::Output`.
    pub async fn run<T: Tool>(
        &self,
        who: &Principal,
        ctx: &CallContext,
        input: T::Input,
    ) -> Result<T::Output, HubError> {
        self.run_on::<T>(who, ctx, input, None).await
    }

    /// As [`Hub::run`], on `client` instead of the principal's stored connection (as
    /// [`Hub::call_on`]).
    pub async fn run_on<T: Tool>(
        &self,
        who: &Principal,
        ctx: &CallContext,
        input: T::Input,
        client: Option<Client>,
    ) -> Result<T::Output, HubError> {
        // Encoding plain structs of strings, numbers and options cannot fail; were it to,
        // the call is still made with the reason as its (non-object) arguments, which the
        // gateway refuses as invalid and records.
        let args = serde_json::to_value(&input)
            .unwrap_or_else(|e| json!(format!("the arguments could not be encoded: {e}")));
        let value = self.call_on(who, ctx, T::NAME, args, client).await.result?;
        serde_json::from_value(value).map_err(|e| {
            HubError::Unavailable(format!(
                "the result of `{}` could not be read as its type: {e}",
                T::NAME
            ))
        })
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
        self.call_noted(who, ctx, tool, args, client, None).await
    }

    /// As [`Hub::call_on`]; `note` is added to the record's error.
    async fn call_noted(
        &self,
        who: &Principal,
        ctx: &CallContext,
        tool: &str,
        args: Value,
        client: Option<Client>,
        note: Option<String>,
    ) -> CallOutcome {
        let started = Instant::now();
        let entry = self.inner.catalogue.get(tool);
        // Written as "cancelled" if this future is dropped before the record is handed
        // to the audit writer (a client that disconnects, an MCP cancellation): the call
        // may have reached the school, so it must be on record all the same.
        let mut pending = PendingAudit {
            hub: self.clone(),
            started,
            record: Some(NewAuditRecord {
                at: 0,
                request_id: ctx.request_id.clone(),
                surface: ctx.surface,
                connection: Some(who.connection().to_string()),
                persona: who.persona_name().map(str::to_string),
                end_user: ctx.end_user.as_deref().map(cap_text),
                prompt: ctx.prompt.as_deref().map(cap_text),
                tool: tool.to_string(),
                arguments: args.clone(),
                outcome: AuditOutcome::Cancelled,
                response: None,
                error: Some(CANCELLED_ERROR.to_string()),
                upstream_status: None,
                latency_ms: 0,
                oauth_client: ctx.oauth_client.as_deref().map(cap_text),
            }),
        };
        let (result, upstream_status) = memberspot_api::progress::scope(
            ctx.progress.clone(),
            self.dispatch(who, tool, entry, args, client),
        )
        .await;
        let outcome = match &result {
            Ok(_) => AuditOutcome::Ok,
            Err(e) => e.outcome(),
        };
        if let Some(record) = pending.record.as_mut() {
            record.at = chrono::Utc::now().timestamp_millis();
            record.outcome = outcome;
            (record.response, record.error) = match (&result, entry) {
                // The caller gets secrets (a login token); the record keeps a fingerprint.
                (Ok(v), Some(entry)) => (Some(cap(&entry.redact_for_record(v))), None),
                (Ok(v), None) => (Some(cap(v)), None),
                (Err(e), _) => (None, Some(e.to_string())),
            };
            if let (Some(error), Some(note)) = (record.error.as_mut(), &note) {
                error.push_str(note);
            }
            if matches!(outcome, AuditOutcome::Denied | AuditOutcome::Invalid) {
                record.arguments = cap_to(&record.arguments, AUDIT_REFUSED_ARGUMENTS_CAP);
            }
            record.upstream_status = upstream_status.or_else(|| result.as_ref().ok().map(|_| 200));
            record.latency_ms = started.elapsed().as_millis() as u64;
        }
        self.inner.metrics.record_call(
            tool,
            outcome.as_str(),
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

    async fn dispatch(
        &self,
        who: &Principal,
        tool: &str,
        entry: Option<&ToolEntry>,
        args: Value,
        client: Option<Client>,
    ) -> (Result<Value, HubError>, Option<u16>) {
        let scopes = match who {
            Principal::Persona(p) => {
                if let Err(e) = refuse_revoked(p) {
                    return (Err(e), None);
                }
                // The limit comes before everything else: refused, unknown and invalid
                // calls count too, so a limited persona cannot write records (or cause
                // look-ups) faster than its limit.
                if let Err(e) = self.take_call_budget(p) {
                    return (Err(e), None);
                }
                match self.scopes_of(p) {
                    Ok(s) => Some(s),
                    Err(e) => return (Err(e), None),
                }
            }
            Principal::Operator { .. } => None,
        };
        let Some(entry) = entry else {
            return (
                Err(HubError::Tool(ToolError::UnknownTool {
                    name: tool.to_string(),
                })),
                None,
            );
        };
        if let Some(scopes) = &scopes
            && let Err(e) = scopes.check_allowed(&entry.descriptor)
        {
            return (Err(HubError::Denied(e.to_string())), None);
        }
        if let Err(e) = entry.validate(&args) {
            return (Err(HubError::Tool(e)), None);
        }
        let proof = match &scopes {
            Some(scopes) => match scopes.check_call(&entry.descriptor, &args) {
                Ok(proof) => proof,
                Err(e) => return (Err(HubError::Denied(e.to_string())), None),
            },
            None => OfferProof::Proven,
        };
        let client = match client {
            Some(c) => c,
            None => match self.client_of(who).await {
                Ok(c) => c,
                Err(e) => return (Err(e), None),
            },
        };
        let throttled_before = client.stats().rate_limited;
        // Look-ups that show the call stays within the persona's offers are part of the
        // call: on its connection and rate limit, under its one audit record.
        let proven = match &scopes {
            Some(scopes) => scopes.prove(&client, tool, &proof).await,
            None => Ok(()),
        };
        let result = match proven {
            Ok(()) => entry.call(&client, args).await.map_err(HubError::Tool),
            Err(e) => Err(e),
        };
        self.inner.metrics.record_upstream_429(
            who.connection(),
            client.stats().rate_limited.saturating_sub(throttled_before),
        );
        match result {
            Ok(v) => (Ok(v), Some(200)),
            Err(e) => {
                let status = match &e {
                    HubError::Tool(ToolError::Api(api)) => api.status(),
                    _ => None,
                };
                (Err(e), status)
            }
        }
    }

    /// Records the tool calls of one request made with a revoked persona's token as one
    /// `denied` record (the first call, with the number of the others), whatever the
    /// request carried: a batch must not be a way to fill the log.
    pub async fn record_revoked_request(
        &self,
        persona: Persona,
        ctx: &CallContext,
        tool: &str,
        args: Value,
        others: usize,
    ) -> HubError {
        let who = Principal::Persona(persona);
        let note = (others > 0).then(|| {
            format!(
                " (the same request carried {others} more tool call(s), refused without records of their own)"
            )
        });
        let outcome = self.call_noted(&who, ctx, tool, args, None, note).await;
        outcome.result.err().unwrap_or_else(|| {
            HubError::Unauthenticated("this persona's token has been revoked".into())
        })
    }

    /// Records a call a surface refused before it reached the gateway (persona chat: a
    /// declined confirmation, a disabled destructive tool) as `denied` under `persona`,
    /// with the same caps on caller text as every other record.
    pub async fn record_refused_call(
        &self,
        persona: &str,
        connection: Option<String>,
        ctx: &CallContext,
        tool: &str,
        args: &Value,
        reason: &str,
    ) -> Option<AuditRecord> {
        let mut record = Some(NewAuditRecord {
            at: chrono::Utc::now().timestamp_millis(),
            request_id: ctx.request_id.clone(),
            surface: ctx.surface,
            connection,
            persona: Some(persona.to_string()),
            end_user: ctx.end_user.as_deref().map(cap_text),
            prompt: ctx.prompt.as_deref().map(cap_text),
            tool: tool.to_string(),
            arguments: cap_to(args, AUDIT_REFUSED_ARGUMENTS_CAP),
            outcome: AuditOutcome::Denied,
            response: None,
            error: Some(cap_text(reason)),
            upstream_status: None,
            latency_ms: 0,
            oauth_client: ctx.oauth_client.as_deref().map(cap_text),
        });
        match self.inner.audit.append(&mut record).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(tool, error = %e, "could not write the audit record");
                None
            }
        }
    }

    /// Records an admin operation (a persona created, a token rotated) done by `actor` as
    /// one audit record: surface and actor from `actor` (the actor in `end_user`, e.g.
    /// `console:anna`), the operation as the tool (`admin.create_persona`), its outcome
    /// from `result`. Never holds a secret: callers pass the persona's view, not its token.
    pub async fn record_admin_action(
        &self,
        actor: &crate::admin::Actor,
        action: &str,
        arguments: Value,
        connection: Option<String>,
        result: Result<Value, &HubError>,
        started: Instant,
    ) -> Option<AuditRecord> {
        let (outcome, response, error) = match result {
            Ok(v) => (AuditOutcome::Ok, Some(v), None),
            Err(e) => (e.outcome(), None, Some(cap_text(&e.to_string()))),
        };
        let mut record = Some(NewAuditRecord {
            at: chrono::Utc::now().timestamp_millis(),
            request_id: uuid::Uuid::now_v7().to_string(),
            surface: actor.surface,
            connection,
            persona: None,
            end_user: Some(cap_text(&actor.to_string())),
            prompt: None,
            tool: action.to_string(),
            arguments: cap_to(&arguments, AUDIT_REFUSED_ARGUMENTS_CAP),
            outcome,
            response,
            error,
            upstream_status: None,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            oauth_client: None,
        });
        match self.inner.audit.append(&mut record).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(action, error = %e, "could not write the audit record");
                None
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

/// What the record of a call whose caller went away before it finished says.
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
        if record.outcome == AuditOutcome::Cancelled {
            record.at = chrono::Utc::now().timestamp_millis();
            record.latency_ms = self.started.elapsed().as_millis() as u64;
            self.hub.inner.metrics.record_call(
                &record.tool,
                AuditOutcome::Cancelled.as_str(),
                record.surface.as_str(),
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
    cap_to(v, AUDIT_RESPONSE_CAP)
}

/// `v`, or a preview of it when its JSON text is longer than `limit` bytes.
fn cap_to(v: &Value, limit: usize) -> Value {
    let bytes = json_len(v);
    if bytes <= limit {
        return v.clone();
    }
    let preview: String = v.to_string().chars().take(limit.min(4096)).collect();
    json!({ "truncated": true, "bytes": bytes, "preview": preview })
}

/// Caller-supplied text for the audit log, cut at [`AUDIT_TEXT_CAP`] bytes with a marker.
fn cap_text(s: &str) -> String {
    if s.len() <= AUDIT_TEXT_CAP {
        return s.to_string();
    }
    let mut end = AUDIT_TEXT_CAP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &s[..end], s.len())
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
    fn caller_text_is_cut_with_a_marker() {
        assert_eq!(cap_text("short"), "short");
        let exact = "p".repeat(AUDIT_TEXT_CAP);
        assert_eq!(cap_text(&exact), exact);
        // Multi-byte characters are never split.
        let long = "ü".repeat(200_000);
        let cut = cap_text(&long);
        assert!(cut.len() <= AUDIT_TEXT_CAP + 64, "{}", cut.len());
        assert!(
            cut.ends_with("… [cut: 400000 bytes in all]"),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.starts_with("üüü"));
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
