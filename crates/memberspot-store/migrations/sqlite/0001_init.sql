-- Memberspot Hub store, SQLite flavour. Keep in step with migrations/postgres/0001_init.sql:
-- same tables, same columns, same meaning. Times are INTEGER epoch milliseconds, JSON is TEXT.

-- Small settings (e.g. the master-key check value) and the audit chain's head/anchor.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- A Memberspot school: where to call and the API key, sealed by the caller.
CREATE TABLE connections (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    base_url   TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    key_hint   TEXT NOT NULL,
    rate_limit REAL NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- An AI agent identity. Deleting a connection takes its (revoked) personas with it;
-- the store refuses while an active persona still uses it.
CREATE TABLE personas (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL UNIQUE,
    description      TEXT NOT NULL,
    connection_id    TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    scopes           TEXT NOT NULL,  -- JSON array of strings
    offer_ids        TEXT,           -- JSON array of strings, NULL = every offer
    calls_per_minute INTEGER,        -- NULL = no per-persona limit
    token_hash       TEXT NOT NULL UNIQUE,
    token_prefix     TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    revoked_at       INTEGER
);
CREATE INDEX personas_connection_idx ON personas (connection_id);

-- Append-only, hash-chained record of every tool call. Names (not ids) of connection and
-- persona are kept as plain text so the record outlives them.
-- AUTOINCREMENT: a purged or deleted seq is never handed out again.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    at              INTEGER NOT NULL,
    request_id      TEXT NOT NULL,
    surface         TEXT NOT NULL,
    connection      TEXT,
    persona         TEXT,
    end_user        TEXT,
    prompt          TEXT,
    tool            TEXT NOT NULL,
    arguments       TEXT NOT NULL,  -- canonical JSON, exactly as hashed
    outcome         TEXT NOT NULL,
    response        TEXT,           -- canonical JSON, exactly as hashed
    error           TEXT,
    upstream_status INTEGER,
    latency_ms      INTEGER NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_persona_idx ON audit_log (persona, seq);
CREATE INDEX audit_log_tool_idx ON audit_log (tool, seq);
