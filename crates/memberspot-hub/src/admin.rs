//! Operations on connections, personas and the audit log, shared by the
//! CLI and the REST admin endpoints so both behave the same.

use memberspot_api::actions::CheckApiKey;
use memberspot_api::{ApiKey, Client};
use memberspot_store::{
    AuditFilter, AuditRecord, AuditVerification, ChainHead, Connection, ConnectionUpdate,
    NewConnection, NewPersona, Persona,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::scopes::{ScopeError, Scopes};
use crate::secrets::{CHECK_META_KEY, MasterKey};
use crate::{EMBEDDED_BASE_URL, Hub, HubError, tokens};

/// A connection as shown to people: never the key, only a hint.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub name: String,
    pub base_url: String,
    pub key_hint: String,
    pub rate_limit: f64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&Connection> for ConnectionView {
    fn from(c: &Connection) -> Self {
        ConnectionView {
            name: c.name.clone(),
            base_url: c.base_url.clone(),
            key_hint: c.key_hint.clone(),
            rate_limit: c.rate_limit,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A persona as shown to people: never the token or its hash.
#[derive(Debug, Clone, Serialize)]
pub struct PersonaView {
    pub name: String,
    pub description: String,
    pub connection: String,
    pub scopes: Vec<String>,
    pub offer_ids: Option<Vec<String>>,
    pub calls_per_minute: Option<u32>,
    pub token_prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl From<&Persona> for PersonaView {
    fn from(p: &Persona) -> Self {
        PersonaView {
            name: p.name.clone(),
            description: p.description.clone(),
            connection: p.connection.clone(),
            scopes: p.scopes.clone(),
            offer_ids: p.offer_ids.clone(),
            calls_per_minute: p.calls_per_minute,
            token_prefix: p.token_prefix.clone(),
            created_at: p.created_at,
            revoked_at: p.revoked_at,
        }
    }
}

/// What creating a persona (or rotating its token) returns: the token, once.
pub struct IssuedToken {
    pub persona: Persona,
    pub token: SecretString,
}

/// Options of a new persona.
#[derive(Debug, Clone, Default)]
pub struct PersonaSpec {
    pub name: String,
    pub description: String,
    pub connection: Option<String>,
    pub scopes: Vec<String>,
    pub offer_ids: Option<Vec<String>>,
    pub calls_per_minute: Option<u32>,
}

/// The whole of what a persona may do, as [`Hub::edit_persona`] sets it.
#[derive(Debug, Clone, Default)]
pub struct PersonaChange {
    /// Classes, tool names and `confirm:…`/`connector` settings, as in [`PersonaSpec`]
    /// (at least one class or tool).
    pub scopes: Vec<String>,
    pub offer_ids: Option<Vec<String>>,
    pub calls_per_minute: Option<u32>,
}

/// A persona's or connection's name: 1–64 ASCII letters, digits, `-`, `_` or `.`.
pub fn valid_name(kind: &str, name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HubError::Invalid(format!(
            "{kind} name `{name}` must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Hub {
    pub async fn create_persona(&self, spec: PersonaSpec) -> Result<IssuedToken, HubError> {
        let (new, token) = self.new_persona(spec).await?;
        let persona = self.store().insert_persona(&new).await?;
        Ok(IssuedToken {
            persona,
            token: token.secret,
        })
    }

    /// Creates a persona again after it was revoked (or for the first time): a revoked
    /// persona of that name is replaced, with a new token and the given settings, in one
    /// transaction. Its audit records stay. An active persona of that name is refused.
    /// This is how a built-in persona (the digest's, a flow's, a source's) comes back.
    pub async fn recreate_persona(&self, spec: PersonaSpec) -> Result<IssuedToken, HubError> {
        let (new, token) = self.new_persona(spec).await?;
        let persona = self.store().replace_revoked_persona(&new).await?;
        Ok(IssuedToken {
            persona,
            token: token.secret,
        })
    }

    /// A checked persona to store, and its token.
    async fn new_persona(
        &self,
        spec: PersonaSpec,
    ) -> Result<(NewPersona, tokens::NewToken), HubError> {
        valid_name("persona", &spec.name)?;
        let scopes = if spec.scopes.is_empty() {
            Scopes::read_only()
        } else {
            Scopes::parse(&spec.scopes, self.catalogue()).map_err(invalid_scopes)?
        }
        .with_default_confirmation(self.catalogue());
        if let Some(n) = spec.calls_per_minute
            && n == 0
        {
            return Err(HubError::Invalid(
                "calls per minute must be at least 1".into(),
            ));
        }
        let connection = spec
            .connection
            .unwrap_or_else(|| crate::SANDBOX_CONNECTION.to_string());
        if self.store().get_connection(&connection).await?.is_none() {
            return Err(HubError::NotFound(format!(
                "no connection named `{connection}`; see `memberspot connections list`"
            )));
        }
        let offer_ids = match &spec.offer_ids {
            Some(ids) => Some(self.check_offer_ids(&connection, ids).await?),
            None => None,
        };
        let token = tokens::mint();
        let new = NewPersona {
            name: spec.name,
            description: spec.description,
            connection,
            scopes: scopes.to_strings(),
            offer_ids,
            calls_per_minute: spec.calls_per_minute,
            token_hash: token.hash.clone(),
            token_prefix: token.display_prefix.clone(),
        };
        Ok((new, token))
    }

    pub async fn rotate_persona_token(&self, name: &str) -> Result<IssuedToken, HubError> {
        let token = tokens::mint();
        self.store()
            .set_persona_token(name, &token.hash, &token.display_prefix)
            .await?;
        let persona = self.persona_any(name).await?;
        Ok(IssuedToken {
            persona,
            token: token.secret,
        })
    }

    /// Replaces (or with `add`, extends) a persona's scopes.
    pub async fn set_persona_scopes(
        &self,
        name: &str,
        scopes: &[String],
        add: bool,
        offer_ids: Option<Vec<String>>,
        calls_per_minute: Option<u32>,
    ) -> Result<Persona, HubError> {
        let current = self.persona_any(name).await?;
        let mut wanted: Vec<String> = if add {
            current.scopes.clone()
        } else {
            Vec::new()
        };
        wanted.extend(scopes.iter().cloned());
        let parsed = Scopes::parse(&wanted, self.catalogue()).map_err(invalid_scopes)?;
        let offer_ids = match &offer_ids {
            Some(ids) => Some(self.check_offer_ids(&current.connection, ids).await?),
            None => None,
        };
        let offers = offer_ids.or(current.offer_ids.clone());
        let limit = calls_per_minute.or(current.calls_per_minute);
        Ok(self
            .store()
            .update_persona_scopes(name, &parsed.to_strings(), offers.as_deref(), limit)
            .await?)
    }

    /// Replaces what an active persona may do: its scopes, offer restriction (`None`:
    /// every offer) and per-minute limit (`None`: none), as one change. Unlike
    /// [`Hub::set_persona_scopes`], nothing is kept from before. A revoked persona is
    /// refused (conflict): it comes back through [`Hub::recreate_persona`].
    pub async fn edit_persona(
        &self,
        name: &str,
        change: PersonaChange,
    ) -> Result<Persona, HubError> {
        let current = self.persona_any(name).await?;
        if current.revoked_at.is_some() {
            return Err(HubError::Store(crate::store::StoreError::Conflict(
                format!("persona `{name}` is revoked; create it again to use it"),
            )));
        }
        let scopes = Scopes::parse(&change.scopes, self.catalogue())
            .map_err(invalid_scopes)?
            .with_default_confirmation(self.catalogue());
        if change.calls_per_minute == Some(0) {
            return Err(HubError::Invalid(
                "calls per minute must be at least 1".into(),
            ));
        }
        let offer_ids = match &change.offer_ids {
            Some(ids) => Some(self.check_offer_ids(&current.connection, ids).await?),
            None => None,
        };
        Ok(self
            .store()
            .update_persona_scopes(
                name,
                &scopes.to_strings(),
                offer_ids.as_deref(),
                change.calls_per_minute,
            )
            .await?)
    }

    pub async fn revoke_persona(&self, name: &str) -> Result<bool, HubError> {
        self.persona_any(name).await?;
        Ok(self.store().revoke_persona(name).await?)
    }

    /// Every persona, revoked ones included, by name.
    pub async fn list_personas(&self) -> Result<Vec<Persona>, HubError> {
        Ok(self.store().list_personas().await?)
    }

    /// A persona by name, revoked or not.
    pub async fn persona_any(&self, name: &str) -> Result<Persona, HubError> {
        self.store()
            .get_persona(name)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("no persona named `{name}`")))
    }

    pub async fn add_connection(
        &self,
        name: &str,
        base_url: &str,
        api_key: &SecretString,
        rate_limit: f64,
    ) -> Result<ConnectionView, HubError> {
        valid_name("connection", name)?;
        check_connection_settings(base_url, api_key, rate_limit)?;
        let key = api_key.expose_secret().trim();
        let base_url = base_url.trim();
        let c = self
            .store()
            .insert_connection(&NewConnection {
                name: name.to_string(),
                base_url: base_url.to_string(),
                sealed_key: self.master_key().seal_connection_key(name, base_url, key),
                key_hint: ApiKey::new(key).hint(),
                rate_limit,
            })
            .await?;
        Ok(ConnectionView::from(&c))
    }

    pub async fn rotate_connection_key(
        &self,
        name: &str,
        api_key: &SecretString,
    ) -> Result<(), HubError> {
        let key = api_key.expose_secret().trim();
        if key.is_empty() {
            return Err(HubError::Invalid(
                "api_key: the new API key is empty".into(),
            ));
        }
        let conn = self.connection(name).await?;
        if conn.base_url == EMBEDDED_BASE_URL {
            return Err(HubError::Invalid(
                "the built-in sandbox connection has no key to rotate".into(),
            ));
        }
        // Bound to the connection as it is now: after a change made outside memberspot,
        // check its URL first (`connections list`), this binds the key to it.
        let sealed = self
            .master_key()
            .seal_connection_key(&conn.name, &conn.base_url, key);
        Ok(self
            .store()
            .update_connection_key(name, &sealed, &ApiKey::new(key).hint())
            .await?)
    }

    /// Renames a connection, points it at another base URL and/or changes its rate limit.
    /// Its key is sealed for its name and base URL, so a new name or URL re-seals it in the
    /// same transaction. Personas follow a renamed connection; files that name it (rules,
    /// flows) must be changed by hand.
    pub async fn update_connection(
        &self,
        name: &str,
        change: ConnectionUpdate,
    ) -> Result<ConnectionView, HubError> {
        let change = ConnectionUpdate {
            name: change.name.map(|n| n.trim().to_string()),
            base_url: change.base_url.map(|u| u.trim().to_string()),
            rate_limit: change.rate_limit,
        };
        if change == ConnectionUpdate::default() {
            return Err(HubError::Invalid(
                "nothing to change: give a new name, base URL or rate limit".into(),
            ));
        }
        if let Some(n) = &change.name {
            valid_name("connection", n)?;
        }
        if let Some(u) = &change.base_url {
            check_base_url(u)?;
        }
        if let Some(r) = change.rate_limit {
            check_rate_limit(r)?;
        }
        let current = self.connection(name).await?;
        if current.base_url == EMBEDDED_BASE_URL
            && (change.name.is_some() || change.base_url.is_some())
        {
            return Err(HubError::Invalid(
                "the built-in sandbox connection keeps its name and address; add a connection \
                 for another school with `memberspot connections add`"
                    .into(),
            ));
        }
        let key = self.master_key();
        let updated = self
            .store()
            .update_connection(name, &change, |before, after| {
                match key.open_connection_key(before) {
                    Ok(plain) => Ok(key.seal_connection_key(
                        &after.name,
                        &after.base_url,
                        plain.expose_secret(),
                    )),
                    // Sealed for the new name and URL already: the change puts back what
                    // was changed outside memberspot.
                    Err(e) => match key.open_connection_key(&Connection {
                        sealed_key: before.sealed_key.clone(),
                        ..after.clone()
                    }) {
                        Ok(_) => Ok(before.sealed_key.clone()),
                        Err(_) => Err(e.to_string()),
                    },
                }
            })
            .await
            .map_err(|e| match e {
                // The message already names the connection and says what to do.
                memberspot_store::StoreError::Reseal { message, .. } => HubError::Invalid(message),
                other => other.into(),
            })?;
        Ok(ConnectionView::from(&updated))
    }

    /// Every connection, by name.
    pub async fn list_connections(&self) -> Result<Vec<Connection>, HubError> {
        Ok(self.store().list_connections().await?)
    }

    /// Removes a connection; refused (conflict) while a persona acts on it.
    pub async fn remove_connection(&self, name: &str) -> Result<(), HubError> {
        if self.store().delete_connection(name).await? {
            Ok(())
        } else {
            Err(HubError::NotFound(format!("no connection named `{name}`")))
        }
    }

    pub async fn connection(&self, name: &str) -> Result<Connection, HubError> {
        self.store()
            .get_connection(name)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("no connection named `{name}`")))
    }

    /// Checks the connection's key against Memberspot's key-check route.
    pub async fn test_connection(&self, name: &str) -> Result<(), HubError> {
        let client: Client = self.client_for(name).await?;
        client
            .execute(&CheckApiKey)
            .await
            .map_err(|e| HubError::Tool(e.into()))?;
        Ok(())
    }

    /// Re-encrypts every stored API key under `new_key` in one transaction,
    /// then updates the check value. The caller stores the new key.
    pub async fn rotate_master_key(&self, new_key: &MasterKey) -> Result<usize, HubError> {
        let old = self.master_key();
        // Keys and check value change in one transaction: a crash leaves either all old or all new.
        let n = self
            .store()
            .reseal_all_connections_and_set_meta(
                |c| {
                    let plain = old.open_connection_key(c).map_err(|e| e.to_string())?;
                    Ok(new_key.seal_connection_key(&c.name, &c.base_url, plain.expose_secret()))
                },
                CHECK_META_KEY,
                &new_key.check_value(),
            )
            .await?;
        Ok(n)
    }

    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, HubError> {
        Ok(self.store().query_audit(filter).await?)
    }

    /// Re-computes the audit chain and, given an anchor kept elsewhere, checks that the
    /// anchored record is still in it with that hash.
    pub async fn verify_audit(
        &self,
        anchor: Option<&ChainHead>,
    ) -> Result<AuditVerification, HubError> {
        Ok(match anchor {
            Some(a) => self.store().verify_audit_anchor(a).await?,
            None => self.store().verify_audit().await?,
        })
    }

    /// The last record of the audit chain, to keep as an anchor.
    pub async fn audit_head(&self) -> Result<ChainHead, HubError> {
        Ok(self.store().audit_head().await?)
    }

    /// Deletes the audit records older than `days` days; the rest of the chain still
    /// verifies. Returns how many were deleted.
    pub async fn purge_audit_older_than(&self, days: u32) -> Result<u64, HubError> {
        let before = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
        Ok(self.store().purge_audit_before(before).await?)
    }

    /// The store answers, and its schema is not newer than this binary's (another
    /// instance, upgraded, migrated it): readiness.
    pub async fn check_ready(&self) -> Result<(), HubError> {
        self.store().get_meta(CHECK_META_KEY).await?;
        let schema = self.store().schema().await?;
        if schema.is_newer_than_binary() {
            return Err(memberspot_store::StoreError::TooNew {
                database: schema.database_version.unwrap_or_default(),
                binary: schema.binary_version,
            }
            .into());
        }
        Ok(())
    }

    /// Checks the key of every school the hub acts on against Memberspot (one request
    /// each): the stored connections, the embedded sandbox only when it is the only one.
    pub async fn check_schools(&self) -> Result<Vec<(String, Result<(), HubError>)>, HubError> {
        let connections = self.store().list_connections().await?;
        let real: Vec<_> = connections
            .iter()
            .filter(|c| c.name != crate::SANDBOX_CONNECTION)
            .collect();
        let names: Vec<String> = if real.is_empty() {
            connections.iter().map(|c| c.name.clone()).collect()
        } else {
            real.iter().map(|c| c.name.clone()).collect()
        };
        let checks = names.iter().map(|n| self.test_connection(n));
        let results = futures::future::join_all(checks).await;
        Ok(names.into_iter().zip(results).collect())
    }

    /// Closes the store's connections (after the last call).
    pub async fn close(&self) {
        self.store().close().await;
    }
}

fn invalid_scopes(e: ScopeError) -> HubError {
    HubError::Invalid(e.to_string())
}

fn check_connection_settings(
    base_url: &str,
    api_key: &SecretString,
    rate_limit: f64,
) -> Result<(), HubError> {
    if api_key.expose_secret().trim().is_empty() {
        return Err(HubError::Invalid("api_key: the API key is empty".into()));
    }
    check_rate_limit(rate_limit)?;
    // Building a client validates the URL and the key's header syntax.
    check_base_url(base_url.trim())?;
    Client::builder(base_url.trim())
        .api_key(ApiKey::new(api_key.expose_secret().trim()))
        .build()
        .map(|_| ())
        .map_err(|e| HubError::Invalid(format!("api_key: {e}")))
}

fn check_rate_limit(rate_limit: f64) -> Result<(), HubError> {
    if !(rate_limit >= 0.0 && rate_limit.is_finite()) {
        return Err(HubError::Invalid(format!(
            "rate_limit: must be a number >= 0, got {rate_limit}"
        )));
    }
    Ok(())
}

fn check_base_url(base_url: &str) -> Result<(), HubError> {
    // A placeholder key: only the URL is being checked.
    Client::builder(base_url)
        .api_key(ApiKey::new("placeholder"))
        .build()
        .map(|_| ())
        .map_err(|e| HubError::Invalid(format!("base_url: {e}")))
}

pub use crate::audit_export::{
    AuditExportFormat, audit_csv, audit_csv_rows, audit_export_pages, audit_jsonl,
};

/// Meta key of the admin token's hash.
const ADMIN_TOKEN_META: &str = "admin_token_hash";

impl Hub {
    /// Mints a new admin token (replacing any previous one) and returns it once.
    pub async fn issue_admin_token(&self) -> Result<SecretString, HubError> {
        let t = tokens::mint();
        self.store().set_meta(ADMIN_TOKEN_META, &t.hash).await?;
        Ok(t.secret)
    }

    /// Mints the first admin token if there is none yet and returns it once; `None`
    /// when one exists, including one another instance starting at the same time
    /// stored first (the token is then in that instance's data directory).
    pub async fn issue_first_admin_token(&self) -> Result<Option<SecretString>, HubError> {
        if self.has_admin_token().await? {
            return Ok(None);
        }
        let t = tokens::mint();
        let stored = self
            .store()
            .set_meta_if_absent(ADMIN_TOKEN_META, &t.hash)
            .await?;
        Ok((stored == t.hash).then_some(t.secret))
    }

    pub async fn has_admin_token(&self) -> Result<bool, HubError> {
        Ok(self.store().get_meta(ADMIN_TOKEN_META).await?.is_some())
    }

    /// Constant-time check of a presented admin token.
    pub async fn check_admin_token(&self, token: &str) -> Result<bool, HubError> {
        Ok(match self.store().get_meta(ADMIN_TOKEN_META).await? {
            Some(hash) => tokens::verify(token, &hash),
            None => false,
        })
    }
}

/// `persona `NAME` is revoked; re-create it with `…``: for the subsystems that act as a
/// persona of their own (events, flows), whose runs stop when it is revoked. The command
/// gives it back its connection, scopes, offers and limit as they were.
pub fn revoked_message(p: &Persona) -> String {
    format!(
        "persona `{}` is revoked; re-create it with `{}`",
        p.name,
        recreate_command(p)
    )
}

fn recreate_command(p: &Persona) -> String {
    let mut cmd = format!(
        "memberspot --connection {} personas create {} --scopes {}",
        p.connection,
        p.name,
        p.scopes.join(",")
    );
    if let Some(offers) = &p.offer_ids {
        cmd.push_str(&format!(" --offers {}", offers.join(",")));
    }
    if let Some(n) = p.calls_per_minute {
        cmd.push_str(&format!(" --per-minute {n}"));
    }
    cmd.push_str(" --replace-revoked");
    cmd
}

/// Who does an admin operation, for its audit record: the surface and a name, shown as
/// `surface:name` (`console:anna`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub surface: crate::Surface,
    pub name: String,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.surface, self.name)
    }
}

/// The admin operations of [`Hub`] done by a known [`Actor`]: each runs the same operation
/// and writes one audit record of it, whether it succeeded or not.
pub struct ActingAdmin<'a> {
    hub: &'a Hub,
    actor: Actor,
}

impl Hub {
    /// Admin operations recorded in the audit log under `actor`.
    pub fn acting_as(&self, actor: Actor) -> ActingAdmin<'_> {
        ActingAdmin { hub: self, actor }
    }
}

fn persona_value(p: &Persona) -> serde_json::Value {
    serde_json::to_value(PersonaView::from(p)).unwrap_or_default()
}

impl ActingAdmin<'_> {
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub(crate) fn hub(&self) -> &Hub {
        self.hub
    }

    pub(crate) async fn record<T>(
        &self,
        action: &str,
        arguments: serde_json::Value,
        connection: Option<String>,
        result: &Result<T, HubError>,
        view: impl FnOnce(&T) -> serde_json::Value,
        started: std::time::Instant,
    ) {
        let result = result.as_ref().map(view);
        self.hub
            .record_admin_action(&self.actor, action, arguments, connection, result, started)
            .await;
    }

    /// [`Hub::create_persona`], recorded as `admin.create_persona` (the token is not).
    pub async fn create_persona(&self, spec: PersonaSpec) -> Result<IssuedToken, HubError> {
        self.issue_persona(spec, false).await
    }

    /// [`Hub::recreate_persona`], recorded as `admin.recreate_persona` (the token is not).
    pub async fn recreate_persona(&self, spec: PersonaSpec) -> Result<IssuedToken, HubError> {
        self.issue_persona(spec, true).await
    }

    async fn issue_persona(
        &self,
        spec: PersonaSpec,
        replace_revoked: bool,
    ) -> Result<IssuedToken, HubError> {
        let started = std::time::Instant::now();
        let args = serde_json::json!({
            "name": spec.name, "description": spec.description, "connection": spec.connection,
            "scopes": spec.scopes, "offer_ids": spec.offer_ids,
            "calls_per_minute": spec.calls_per_minute,
        });
        let (action, r) = if replace_revoked {
            (
                "admin.recreate_persona",
                self.hub.recreate_persona(spec).await,
            )
        } else {
            ("admin.create_persona", self.hub.create_persona(spec).await)
        };
        let conn = r.as_ref().ok().map(|t| t.persona.connection.clone());
        self.record(
            action,
            args,
            conn,
            &r,
            |t| persona_value(&t.persona),
            started,
        )
        .await;
        r
    }

    /// [`Hub::set_persona_scopes`], recorded as `admin.set_persona_scopes`.
    pub async fn set_persona_scopes(
        &self,
        name: &str,
        scopes: &[String],
        add: bool,
        offer_ids: Option<Vec<String>>,
        calls_per_minute: Option<u32>,
    ) -> Result<Persona, HubError> {
        let started = std::time::Instant::now();
        let args = serde_json::json!({
            "name": name, "scopes": scopes, "add": add, "offer_ids": offer_ids,
            "calls_per_minute": calls_per_minute,
        });
        let r = self
            .hub
            .set_persona_scopes(name, scopes, add, offer_ids, calls_per_minute)
            .await;
        let conn = r.as_ref().ok().map(|p| p.connection.clone());
        self.record(
            "admin.set_persona_scopes",
            args,
            conn,
            &r,
            persona_value,
            started,
        )
        .await;
        r
    }

    /// [`Hub::edit_persona`], recorded as `admin.edit_persona`.
    pub async fn edit_persona(
        &self,
        name: &str,
        change: PersonaChange,
    ) -> Result<Persona, HubError> {
        let started = std::time::Instant::now();
        let args = serde_json::json!({
            "name": name, "scopes": change.scopes, "offer_ids": change.offer_ids,
            "calls_per_minute": change.calls_per_minute,
        });
        let r = self.hub.edit_persona(name, change).await;
        let conn = r.as_ref().ok().map(|p| p.connection.clone());
        self.record("admin.edit_persona", args, conn, &r, persona_value, started)
            .await;
        r
    }

    /// [`Hub::remove_connection`], recorded as `admin.remove_connection`.
    pub async fn remove_connection(&self, name: &str) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.remove_connection(name).await;
        self.record(
            "admin.remove_connection",
            serde_json::json!({ "name": name }),
            Some(name.to_string()),
            &r,
            |_| serde_json::json!({ "name": name, "removed": true }),
            started,
        )
        .await;
        r
    }

    /// [`Hub::purge_audit_older_than`], recorded as `admin.purge_audit` (the record of
    /// the purge is newer than what it deletes, so it stays).
    pub async fn purge_audit_older_than(&self, days: u32) -> Result<u64, HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.purge_audit_older_than(days).await;
        self.record(
            "admin.purge_audit",
            serde_json::json!({ "older_than_days": days }),
            None,
            &r,
            |n| serde_json::json!({ "deleted": n }),
            started,
        )
        .await;
        r
    }

    /// [`Hub::revoke_persona`], recorded as `admin.revoke_persona`.
    pub async fn revoke_persona(&self, name: &str) -> Result<bool, HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.revoke_persona(name).await;
        self.record(
            "admin.revoke_persona",
            serde_json::json!({ "name": name }),
            None,
            &r,
            |changed| serde_json::json!({ "name": name, "revoked": true, "changed": changed }),
            started,
        )
        .await;
        r
    }

    /// [`Hub::rotate_persona_token`], recorded as `admin.rotate_persona_token` (the new
    /// token is not).
    pub async fn rotate_persona_token(&self, name: &str) -> Result<IssuedToken, HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.rotate_persona_token(name).await;
        let conn = r.as_ref().ok().map(|t| t.persona.connection.clone());
        self.record(
            "admin.rotate_persona_token",
            serde_json::json!({ "name": name }),
            conn,
            &r,
            |t| persona_value(&t.persona),
            started,
        )
        .await;
        r
    }

    /// [`Hub::add_connection`], recorded as `admin.add_connection` (the key is not).
    pub async fn add_connection(
        &self,
        name: &str,
        base_url: &str,
        api_key: &SecretString,
        rate_limit: f64,
    ) -> Result<ConnectionView, HubError> {
        let started = std::time::Instant::now();
        let r = self
            .hub
            .add_connection(name, base_url, api_key, rate_limit)
            .await;
        let args =
            serde_json::json!({ "name": name, "base_url": base_url, "rate_limit": rate_limit });
        self.record(
            "admin.add_connection",
            args,
            Some(name.to_string()),
            &r,
            |c| serde_json::to_value(c).unwrap_or_default(),
            started,
        )
        .await;
        r
    }

    /// [`Hub::update_connection`], recorded as `admin.update_connection`.
    pub async fn update_connection(
        &self,
        name: &str,
        change: ConnectionUpdate,
    ) -> Result<ConnectionView, HubError> {
        let started = std::time::Instant::now();
        let args = serde_json::json!({
            "name": name, "new_name": change.name, "base_url": change.base_url,
            "rate_limit": change.rate_limit,
        });
        let r = self.hub.update_connection(name, change).await;
        self.record(
            "admin.update_connection",
            args,
            Some(name.to_string()),
            &r,
            |c| serde_json::to_value(c).unwrap_or_default(),
            started,
        )
        .await;
        r
    }

    /// [`Hub::rotate_connection_key`], recorded as `admin.rotate_connection_key` (the key
    /// is not).
    pub async fn rotate_connection_key(
        &self,
        name: &str,
        api_key: &SecretString,
    ) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.rotate_connection_key(name, api_key).await;
        self.record(
            "admin.rotate_connection_key",
            serde_json::json!({ "name": name }),
            Some(name.to_string()),
            &r,
            |_| serde_json::json!({ "name": name, "rotated": true }),
            started,
        )
        .await;
        r
    }

    /// [`Hub::test_connection`], recorded as `admin.test_connection`.
    pub async fn test_connection(&self, name: &str) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = self.hub.test_connection(name).await;
        self.record(
            "admin.test_connection",
            serde_json::json!({ "name": name }),
            Some(name.to_string()),
            &r,
            |_| serde_json::json!({ "name": name, "ok": true }),
            started,
        )
        .await;
        r
    }
}
