-- Remote MCP sign-in (OAuth 2.1): the hub is its own authorization server. Clients are
-- hosted assistants; a grant binds one client to one persona, given by a console owner on
-- the consent page. Codes and tokens are kept only as their SHA-256.
-- Keep in step with migrations/sqlite/0008_oauth.sql.

-- A client: registered dynamically (RFC 7591), known by its metadata document URL, or
-- pre-registered by the owner. `redirect_uris` is a JSON array, matched exactly.
CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    kind          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- One consent: `client_id` may act as `persona` (checked by id, so a persona re-created
-- under the same name does not inherit the grant) on `resource` (this hub's /mcp URL).
CREATE TABLE oauth_grants (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    client_name  TEXT NOT NULL,
    persona      TEXT NOT NULL,
    persona_id   TEXT NOT NULL,
    granted_by   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    revoked_why  TEXT
);
CREATE INDEX oauth_grants_persona_idx ON oauth_grants (persona);

-- Authorization codes: single use, short-lived, bound to the redirect URI and the PKCE
-- challenge (S256) of the request that asked for them.
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    grant_id       TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

-- Access tokens (short-lived) and refresh tokens (rotated on every use: `used_at` marks a
-- rotated one, whose reuse revokes the grant).
CREATE TABLE oauth_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX oauth_tokens_grant_idx ON oauth_tokens (grant_id);

-- The OAuth client a call came through (remote MCP), next to its persona. Part of the
-- record's hash only when present, so older records verify as before.
ALTER TABLE audit_log ADD COLUMN oauth_client TEXT;
