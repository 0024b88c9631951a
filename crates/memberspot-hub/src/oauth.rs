//! Remote MCP sign-in: the hub as its own OAuth 2.1 authorization server. A console owner
//! grants a client (a hosted assistant) the right to act as one persona; the client then
//! holds short-lived access tokens that resolve to that persona on every call, and a
//! refresh token that rotates on every use. No HTTP here: the endpoints are in
//! `memberspot-oauth`, the consent page in `memberspot-console`.
//!
//! Tokens are opaque (256 random bits) and stored as their SHA-256, like persona tokens.
//! An access token works only for the resource it was granted for (this hub's `/mcp` URL,
//! RFC 8707), only while its grant and its persona stand: revoking either stops it at the
//! next call. A refresh token used twice means one of the two users stole it, so the whole
//! grant is revoked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::ActingAdmin;
use crate::store::{
    NewOAuthCode, OAuthClient, OAuthClientKind, OAuthGrant, OAuthTokenKind, Persona, Redemption,
};
use crate::{Hub, HubError, tokens};

/// How long an access token works.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a refresh token works if it is not used (each use gives a new one).
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an authorization code can be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(120);
/// Dynamically registered clients that never got a grant are forgotten after this.
pub const UNUSED_CLIENT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The most redirect URIs a client may register.
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest client name kept (longer ones are cut).
pub const MAX_CLIENT_NAME_CHARS: usize = 100;

const ACCESS_PREFIX: &str = "msh_at_";
const REFRESH_PREFIX: &str = "msh_rt_";
const CODE_PREFIX: &str = "msh_ac_";
/// A grant's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Why a token request is refused, as RFC 6749 §5.2 names it.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The code or refresh token is unknown, used, expired, revoked, or bound to something
    /// else (another client, redirect URI, verifier or resource).
    #[error("{0}")]
    InvalidGrant(String),
    /// The client is unknown (a client that registered dynamically should register again).
    #[error("{0}")]
    InvalidClient(String),
    /// A parameter is missing or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The `resource` is not this hub's MCP endpoint (RFC 8707).
    #[error("{0}")]
    InvalidTarget(String),
    /// A registration's redirect URI is not allowed (RFC 7591 §3.2.2).
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// A registration's other metadata is not usable (RFC 7591 §3.2.2).
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error(transparent)]
    Hub(#[from] HubError),
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        OAuthError::Hub(e.into())
    }
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata(_) => "invalid_client_metadata",
            OAuthError::Hub(_) => "server_error",
        }
    }
}

/// A freshly issued access and refresh token pair: shown to the client once.
pub struct IssuedTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_in: Duration,
}

/// Who an access token acts as: the persona (revoked or not: a tool call by a revoked
/// persona is refused and recorded by the hub) and the client, for the audit record.
#[derive(Debug, Clone)]
pub struct OAuthCaller {
    pub persona: Persona,
    /// `name (client id)`, as audit records show it.
    pub client: String,
    pub grant_id: String,
}

/// What a client asks for on the consent page, checked.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub client: OAuthClient,
    pub persona: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn mint(prefix: &str) -> (SecretString, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = tokens::hash(&token);
    (SecretString::from(token), hash)
}

/// True for tokens this module issues as access tokens (so a bearer check knows where to
/// look without touching the store).
pub fn is_access_token(token: &str) -> bool {
    token.starts_with(ACCESS_PREFIX)
}

/// `name (client id)`: how a client appears in audit records and logs.
pub fn client_label(name: &str, client_id: &str) -> String {
    format!("{name} ({client_id})")
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier)) == challenge`, compared in constant time.
/// The verifier must be 43–128 characters of the unreserved set.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// A PKCE S256 challenge as a client sends it: 43 characters of base64url.
pub fn check_code_challenge(challenge: &str) -> Result<(), String> {
    if challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        Ok(())
    } else {
        Err(
            "code_challenge: expected the base64url SHA-256 of the code verifier (43 characters)"
                .into(),
        )
    }
}

/// A redirect URI a client may register: absolute, no fragment, and `https`, or `http` on
/// a loopback host only (a native app's local listener). Anything else could send the
/// code to someone who can read plain traffic.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let u = url::Url::parse(uri).map_err(|e| format!("redirect_uri `{uri}`: {e}"))?;
    if u.fragment().is_some() {
        return Err(format!("redirect_uri `{uri}`: must not have a fragment"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("redirect_uri `{uri}`: must not carry credentials"));
    }
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if is_loopback_host(&u) => Ok(()),
        "http" => Err(format!(
            "redirect_uri `{uri}`: plain http is allowed only for localhost, 127.0.0.1 or [::1]; use https"
        )),
        other => Err(format!(
            "redirect_uri `{uri}`: scheme `{other}` is not allowed; use https"
        )),
    }
}

fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A resource URL in the form compared with the granted one: parsed, without a trailing
/// slash. `None` if it is not an absolute URL without a fragment (RFC 8707 §2).
pub fn canonical_resource(resource: &str) -> Option<String> {
    let u = url::Url::parse(resource.trim()).ok()?;
    if u.fragment().is_some() || u.cannot_be_a_base() {
        return None;
    }
    Some(u.as_str().trim_end_matches('/').to_string())
}

/// A client's name as shown: control characters dropped, at most
/// [`MAX_CLIENT_NAME_CHARS`] characters, never empty.
pub fn clean_client_name(name: Option<&str>) -> String {
    let cleaned: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CLIENT_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "unnamed client".into()
    } else {
        cleaned.to_string()
    }
}

impl Hub {
    /// Registers a client (dynamic registration or the owner's pre-registration) with
    /// checked redirect URIs; returns it with its new client id.
    pub async fn register_oauth_client(
        &self,
        name: Option<&str>,
        redirect_uris: &[String],
        kind: OAuthClientKind,
    ) -> Result<OAuthClient, OAuthError> {
        if redirect_uris.is_empty() {
            return Err(OAuthError::InvalidClientMetadata(
                "redirect_uris: at least one redirect URI is required".into(),
            ));
        }
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::InvalidClientMetadata(format!(
                "redirect_uris: at most {MAX_REDIRECT_URIS} are allowed"
            )));
        }
        for uri in redirect_uris {
            check_redirect_uri(uri).map_err(OAuthError::InvalidRedirectUri)?;
        }
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let client = OAuthClient {
            client_id: format!("mshc_{}", URL_SAFE_NO_PAD.encode(id)),
            name: clean_client_name(name),
            redirect_uris: redirect_uris.to_vec(),
            kind,
            created_at: now_ms(),
        };
        self.store().upsert_oauth_client(&client).await?;
        Ok(client)
    }

    /// Stores (or refreshes) a client known by its metadata document, already fetched and
    /// checked by the caller.
    pub async fn remember_metadata_client(&self, client: &OAuthClient) -> Result<(), HubError> {
        Ok(self.store().upsert_oauth_client(client).await?)
    }

    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>, HubError> {
        Ok(self.store().oauth_client(client_id).await?)
    }

    pub async fn list_oauth_clients(&self) -> Result<Vec<OAuthClient>, HubError> {
        Ok(self.store().list_oauth_clients().await?)
    }

    pub async fn list_oauth_grants(
        &self,
        persona: Option<&str>,
    ) -> Result<Vec<OAuthGrant>, HubError> {
        Ok(self.store().list_oauth_grants(persona).await?)
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3 with PKCE): the code must be
    /// unused and unexpired, issued to `client_id` for `redirect_uri` and `resource`, and
    /// `verifier` must match its challenge. A code is used up by the first attempt, right
    /// or wrong; a second use revokes the grant (the code leaked).
    pub async fn exchange_oauth_code(
        &self,
        client_id: &str,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        resource: Option<&str>,
    ) -> Result<IssuedTokens, OAuthError> {
        let now = now_ms();
        let redeemed = match self
            .store()
            .redeem_oauth_code(&tokens::hash(code), now)
            .await?
        {
            Redemption::First(r) => r,
            Redemption::Reused { grant_id } => {
                self.revoke_leaked_grant(&grant_id, "authorization code used twice")
                    .await?;
                return Err(OAuthError::InvalidGrant(
                    "the authorization code was used already".into(),
                ));
            }
            Redemption::Unknown => {
                return Err(OAuthError::InvalidGrant(
                    "unknown authorization code".into(),
                ));
            }
        };
        let grant = &redeemed.grant;
        if redeemed.expired {
            return Err(OAuthError::InvalidGrant(
                "the authorization code has expired".into(),
            ));
        }
        if grant.client_id != client_id {
            return Err(OAuthError::InvalidGrant(
                "the authorization code was issued to another client".into(),
            ));
        }
        if redeemed.redirect_uri != redirect_uri {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri differs from the authorization request's".into(),
            ));
        }
        if !pkce_s256_matches(verifier, &redeemed.code_challenge) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier does not match the code challenge".into(),
            ));
        }
        check_resource(grant, resource)?;
        self.issue_tokens(grant, now).await
    }

    /// Rotates a refresh token: the old one is used up, a new pair is issued. A refresh
    /// token used a second time revokes the grant (RFC 9700 §4.14.2).
    pub async fn refresh_oauth(
        &self,
        client_id: &str,
        refresh_token: &str,
        resource: Option<&str>,
    ) -> Result<IssuedTokens, OAuthError> {
        let now = now_ms();
        let t = match self
            .store()
            .redeem_oauth_refresh(&tokens::hash(refresh_token), now)
            .await?
        {
            Redemption::First(t) => t,
            Redemption::Reused { grant_id } => {
                self.revoke_leaked_grant(&grant_id, "refresh token used twice")
                    .await?;
                return Err(OAuthError::InvalidGrant(
                    "the refresh token was used already; the grant is revoked, sign in again"
                        .into(),
                ));
            }
            Redemption::Unknown => {
                return Err(OAuthError::InvalidGrant("unknown refresh token".into()));
            }
        };
        if t.expires_at <= now {
            return Err(OAuthError::InvalidGrant(
                "the refresh token has expired".into(),
            ));
        }
        if t.grant.client_id != client_id {
            return Err(OAuthError::InvalidGrant(
                "the refresh token was issued to another client".into(),
            ));
        }
        if t.grant.revoked_at.is_some() {
            return Err(OAuthError::InvalidGrant(
                "the grant has been revoked".into(),
            ));
        }
        check_resource(&t.grant, resource)?;
        self.issue_tokens(&t.grant, now).await
    }

    async fn issue_tokens(&self, grant: &OAuthGrant, now: i64) -> Result<IssuedTokens, OAuthError> {
        if grant.revoked_at.is_some() {
            return Err(OAuthError::InvalidGrant(
                "the grant has been revoked".into(),
            ));
        }
        // A revoked or re-created persona ends the grant's use now, not at the first call.
        self.grant_persona(grant).await.map_err(|e| match e {
            HubError::Unauthenticated(m) => OAuthError::InvalidGrant(m),
            other => OAuthError::Hub(other),
        })?;
        let (access, access_hash) = mint(ACCESS_PREFIX);
        let (refresh, refresh_hash) = mint(REFRESH_PREFIX);
        let store = self.store();
        store
            .insert_oauth_token(
                &access_hash,
                &grant.id,
                OAuthTokenKind::Access,
                now + ms(ACCESS_TOKEN_LIFETIME),
            )
            .await?;
        store
            .insert_oauth_token(
                &refresh_hash,
                &grant.id,
                OAuthTokenKind::Refresh,
                now + ms(REFRESH_TOKEN_LIFETIME),
            )
            .await?;
        store.touch_oauth_grant(&grant.id, now, 0).await?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ACCESS_TOKEN_LIFETIME,
        })
    }

    async fn revoke_leaked_grant(&self, grant_id: &str, why: &str) -> Result<(), HubError> {
        if self
            .store()
            .revoke_oauth_grant(grant_id, why, now_ms())
            .await?
        {
            tracing::warn!(
                grant = grant_id,
                reason = why,
                "OAuth grant revoked: a credential was replayed"
            );
        }
        Ok(())
    }

    /// The persona a grant acts as, as stored now: the same one (by id) that was granted,
    /// revoked or not.
    async fn grant_persona(&self, grant: &OAuthGrant) -> Result<Persona, HubError> {
        let persona = self.find_persona(&grant.persona).await?;
        if persona.id != grant.persona_id {
            return Err(HubError::Unauthenticated(format!(
                "persona `{}` was re-created after this sign-in; sign in again",
                grant.persona
            )));
        }
        if persona.is_revoked() {
            return Err(HubError::Unauthenticated(format!(
                "persona `{}` has been revoked",
                grant.persona
            )));
        }
        Ok(persona)
    }

    /// Resolves an access token presented to `resource` (this hub's `/mcp` URL). Refused
    /// when unknown, expired, for another resource, or its grant is revoked; a revoked
    /// persona is returned (its tool calls are refused and recorded by [`Hub::call`]).
    pub async fn authenticate_oauth(
        &self,
        token: &str,
        resource: &str,
    ) -> Result<OAuthCaller, HubError> {
        let refused = |m: &str| HubError::Unauthenticated(m.to_string());
        let t = self
            .store()
            .oauth_token_grant(&tokens::hash(token), OAuthTokenKind::Access)
            .await?
            .ok_or_else(|| refused("unknown access token"))?;
        let now = now_ms();
        if t.expires_at <= now {
            return Err(refused("the access token has expired; refresh it"));
        }
        let g = t.grant;
        if g.revoked_at.is_some() {
            return Err(refused(
                "the sign-in for this access token has been revoked",
            ));
        }
        if canonical_resource(resource).as_deref() != Some(g.resource.as_str()) {
            return Err(refused("the access token was issued for another resource"));
        }
        let persona = self.find_persona(&g.persona).await?;
        if persona.id != g.persona_id {
            return Err(refused(
                "the persona of this sign-in was re-created; sign in again",
            ));
        }
        if g.last_used_at.is_none_or(|t| t < now - TOUCH_EVERY_MS)
            && let Err(e) = self
                .store()
                .touch_oauth_grant(&g.id, now, TOUCH_EVERY_MS)
                .await
        {
            tracing::warn!(error = %e, "could not note the OAuth grant's last use");
        }
        Ok(OAuthCaller {
            persona,
            client: client_label(&g.client_name, &g.client_id),
            grant_id: g.id,
        })
    }
}

/// The `resource` of a token request, if given, must be the granted one.
fn check_resource(grant: &OAuthGrant, resource: Option<&str>) -> Result<(), OAuthError> {
    match resource {
        None => Ok(()),
        Some(r) if canonical_resource(r).as_deref() == Some(grant.resource.as_str()) => Ok(()),
        Some(r) => Err(OAuthError::InvalidTarget(format!(
            "resource `{r}` is not the one this grant was given for"
        ))),
    }
}

/// A stored grant with its first code.
struct StoredGrant {
    id: String,
    persona: Persona,
    code: SecretString,
}

impl Hub {
    async fn store_grant(&self, req: &GrantRequest, by: &str) -> Result<StoredGrant, HubError> {
        let persona = self.persona(&req.persona).await?;
        check_code_challenge(&req.code_challenge).map_err(HubError::Invalid)?;
        if !req.client.redirect_uris.contains(&req.redirect_uri) {
            return Err(HubError::Invalid(
                "redirect_uri: not one the client registered".into(),
            ));
        }
        let resource = canonical_resource(&req.resource)
            .ok_or_else(|| HubError::Invalid("resource: not an absolute URL".into()))?;
        let now = now_ms();
        let grant = OAuthGrant {
            id: uuid::Uuid::now_v7().to_string(),
            client_id: req.client.client_id.clone(),
            client_name: req.client.name.clone(),
            persona: persona.name.clone(),
            persona_id: persona.id.clone(),
            granted_by: by.to_string(),
            resource,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            revoked_why: None,
        };
        let (code, code_hash) = mint(CODE_PREFIX);
        let new_code = NewOAuthCode {
            code_hash,
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            expires_at: now + ms(CODE_LIFETIME),
        };
        self.store().insert_oauth_grant(&grant, &new_code).await?;
        Ok(StoredGrant {
            id: grant.id,
            persona,
            code,
        })
    }
}

impl ActingAdmin<'_> {
    /// A console owner allows `req.client` to act as `req.persona`: stores the grant and
    /// returns a single-use authorization code for the client's redirect. Recorded as
    /// `admin.oauth_grant` (without the code).
    pub async fn grant_oauth(&self, req: &GrantRequest) -> Result<SecretString, HubError> {
        let started = std::time::Instant::now();
        let args = serde_json::json!({
            "client_id": req.client.client_id, "client_name": req.client.name,
            "persona": req.persona, "redirect_uri": req.redirect_uri, "resource": req.resource,
        });
        let r = self.hub().store_grant(req, &self.actor().name).await;
        let connection = r.as_ref().ok().map(|g| g.persona.connection.clone());
        let result = r
            .as_ref()
            .map(|g| serde_json::json!({ "grant": g.id, "persona": g.persona.name }));
        self.hub()
            .record_admin_action(
                self.actor(),
                "admin.oauth_grant",
                args,
                connection,
                result,
                started,
            )
            .await;
        r.map(|g| g.code)
    }

    /// Revokes a grant; its tokens stop at their next use. Recorded as
    /// `admin.oauth_revoke_grant`.
    pub async fn revoke_oauth_grant(&self, id: &str) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let hub = self.hub();
        let r = async {
            let g = hub
                .store()
                .oauth_grant(id)
                .await?
                .ok_or_else(|| HubError::NotFound(format!("no OAuth grant `{id}`")))?;
            let by = format!("revoked by {}", self.actor());
            hub.store().revoke_oauth_grant(id, &by, now_ms()).await?;
            Ok::<_, HubError>(g)
        }
        .await;
        let result = r.as_ref().map(
            |g| serde_json::json!({ "grant": g.id, "client": g.client_name, "persona": g.persona }),
        );
        hub.record_admin_action(
            self.actor(),
            "admin.oauth_revoke_grant",
            serde_json::json!({ "grant": id }),
            None,
            result,
            started,
        )
        .await;
        r.map(|_| ())
    }

    /// Adds a pre-registered client. Recorded as `admin.oauth_add_client`.
    pub async fn add_oauth_client(
        &self,
        name: &str,
        redirect_uris: &[String],
    ) -> Result<OAuthClient, HubError> {
        let started = std::time::Instant::now();
        let r = self
            .hub()
            .register_oauth_client(Some(name), redirect_uris, OAuthClientKind::Preregistered)
            .await
            .map_err(|e| match e {
                OAuthError::Hub(h) => h,
                other => HubError::Invalid(other.to_string()),
            });
        let result = r
            .as_ref()
            .map(|c| serde_json::json!({ "client_id": c.client_id, "name": c.name }));
        self.hub()
            .record_admin_action(
                self.actor(),
                "admin.oauth_add_client",
                serde_json::json!({ "name": name, "redirect_uris": redirect_uris }),
                None,
                result,
                started,
            )
            .await;
        r
    }

    /// Removes a client and revokes its grants. Recorded as `admin.oauth_remove_client`.
    pub async fn remove_oauth_client(&self, client_id: &str) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let r = match self
            .hub()
            .store()
            .remove_oauth_client(client_id, now_ms())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(HubError::NotFound(format!("no OAuth client `{client_id}`"))),
            Err(e) => Err(e.into()),
        };
        self.hub()
            .record_admin_action(
                self.actor(),
                "admin.oauth_remove_client",
                serde_json::json!({ "client_id": client_id }),
                None,
                r.as_ref()
                    .map(|_| serde_json::json!({ "removed": client_id })),
                started,
            )
            .await;
        r
    }
}

impl Hub {
    /// Drops ended codes and tokens, and dynamic clients that never got a grant.
    pub async fn purge_oauth(&self) -> Result<u64, HubError> {
        let now = now_ms();
        let tokens = self.store().purge_ended_oauth_tokens(now).await?;
        let clients = self
            .store()
            .purge_unused_oauth_clients(now - ms(UNUSED_CLIENT_LIFETIME))
            .await?;
        Ok(tokens + clients)
    }
}
