//! The checks of an authorization request (`GET /oauth/authorize`), used by the console's
//! consent page before it shows anything and again when the owner answers.
//!
//! RFC 6749 §4.1.2.1: while the client or its redirect URI is unknown, the hub must not
//! redirect (that would send the browser, and possibly a code, wherever the link says), so
//! those are shown as an error page ([`AuthorizeError::NoRedirect`]). Every later problem
//! goes back to the client's redirect URI with `error`, `state` and `iss`
//! ([`AuthorizeError::Redirect`]).

use memberspot_hub::oauth::{canonical_resource, check_code_challenge};
use memberspot_hub::store::OAuthClient;
use memberspot_server::public_url;
use serde::{Deserialize, Serialize};

use crate::OAuth;
use crate::client_metadata::is_metadata_url;

/// The parameters of an authorization request, as sent (the consent form carries them
/// back unchanged in hidden fields).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthorizeQuery {
    #[serde(default)]
    pub response_type: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// A request that passed every check: show the consent page for it.
#[derive(Debug, Clone)]
pub struct CheckedAuthorize {
    pub client: OAuthClient,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub state: Option<String>,
    /// This hub's `/mcp` URL, which the request named.
    pub resource: String,
    /// The issuer, for the `iss` parameter of the answer (RFC 9207).
    pub issuer: String,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// Shown to the person in the browser; nothing is sent to the client.
    NoRedirect(String),
    /// Sent back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
        issuer: String,
    },
}

/// Longest `state` passed through.
const MAX_STATE: usize = 1024;

impl CheckedAuthorize {
    /// The redirect that answers the client: `code` on success, else `error`.
    pub fn answer(&self, params: &[(&str, &str)]) -> String {
        answer_url(
            &self.redirect_uri,
            params,
            self.state.as_deref(),
            &self.issuer,
        )
    }
}

impl AuthorizeError {
    /// Where a refusal sends the browser, if anywhere.
    pub fn redirect(&self) -> Option<String> {
        match self {
            AuthorizeError::NoRedirect(_) => None,
            AuthorizeError::Redirect {
                redirect_uri,
                error,
                description,
                state,
                issuer,
            } => Some(answer_url(
                redirect_uri,
                &[("error", error), ("error_description", description)],
                state.as_deref(),
                issuer,
            )),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AuthorizeError::NoRedirect(m) => m,
            AuthorizeError::Redirect { description, .. } => description,
        }
    }
}

fn answer_url(
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
    iss: &str,
) -> String {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return redirect_uri.to_string();
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", iss);
    }
    url.to_string()
}

impl OAuth {
    /// Checks an authorization request for the hub at `issuer`.
    pub async fn check_authorize(
        &self,
        q: &AuthorizeQuery,
        issuer: &str,
    ) -> Result<CheckedAuthorize, AuthorizeError> {
        let no = |m: &str| AuthorizeError::NoRedirect(m.to_string());
        let client_id = q
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                no("client_id is missing: the link did not come from an OAuth client")
            })?;
        let client = self
            .client(client_id)
            .await
            .map_err(AuthorizeError::NoRedirect)?;
        let redirect_uri = match q.redirect_uri.as_deref() {
            Some(r) if client.redirect_uris.iter().any(|u| u == r) => r.to_string(),
            Some(r) => {
                return Err(AuthorizeError::NoRedirect(format!(
                    "redirect_uri `{}` is not one that client `{}` registered",
                    r.chars().take(200).collect::<String>(),
                    client.name
                )));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(no("redirect_uri is missing")),
        };
        let state = q.state.clone();
        let back = |error: &'static str, description: String| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description,
            state: state.clone(),
            issuer: issuer.to_string(),
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
            return Err(back(
                "invalid_request",
                format!("state is longer than {MAX_STATE} bytes"),
            ));
        }
        if q.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is offered".into(),
            ));
        }
        let challenge = q.code_challenge.as_deref().unwrap_or_default();
        if challenge.is_empty() {
            return Err(back(
                "invalid_request",
                "code_challenge is required (PKCE, S256)".into(),
            ));
        }
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256".into(),
            ));
        }
        check_code_challenge(challenge).map_err(|m| back("invalid_request", m))?;
        let ours = public_url::mcp_resource(issuer);
        let resource = match q.resource.as_deref() {
            None | Some("") => {
                return Err(back(
                    "invalid_target",
                    format!("resource is required: this server's is {ours}"),
                ));
            }
            Some(r) => r,
        };
        if canonical_resource(resource).as_deref() != canonical_resource(&ours).as_deref() {
            return Err(back(
                "invalid_target",
                format!(
                    "resource `{}` is not this server; its MCP endpoint is {ours}",
                    resource.chars().take(200).collect::<String>()
                ),
            ));
        }
        Ok(CheckedAuthorize {
            client,
            redirect_uri,
            code_challenge: challenge.to_string(),
            state,
            resource: ours,
            issuer: issuer.to_string(),
        })
    }

    /// The client behind a `client_id`: registered (dynamically or by the owner), or the
    /// metadata document at that URL, fetched now and remembered.
    async fn client(&self, client_id: &str) -> Result<OAuthClient, String> {
        if is_metadata_url(client_id) {
            let client = self
                .fetcher
                .fetch(client_id)
                .await
                .map_err(|e| e.to_string())?;
            self.hub
                .remember_metadata_client(&client)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(client);
        }
        match self.hub.oauth_client(client_id).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(format!(
                "unknown client_id `{}`: the client is not registered with this hub (it may have been removed; connect again from the assistant)",
                client_id.chars().take(100).collect::<String>()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}
