-- The web console: its users, their sessions and the one-time setup links of a first run.
-- Keep in step with migrations/postgres/0007_console.sql.

-- A person who signs in to the console. The password is kept as an Argon2id hash (PHC
-- string); the role is owner (everything) or viewer (read-only pages).
CREATE TABLE console_users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- A signed-in browser. Only the SHA-256 of the session id (the cookie's value) is kept, so
-- a copy of the database signs nobody in. Shared by every instance on this database.
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES console_users (name) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- The absolute end; the idle end is last_seen_at plus the idle time-out.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_name);

-- First-run setup links (single use, short-lived), kept as the SHA-256 of their token.
CREATE TABLE console_setup_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
