-- Events: webhook deliveries, the normalised events they carry (also the poller's), the
-- processing queue, each event's history and tool calls, per-order access state and the
-- poller's snapshots. Keep in step with migrations/postgres/0002_events.sql.

-- Every request to a /hooks receiver, accepted or not. Rejected ones keep no body.
CREATE TABLE deliveries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    source       TEXT NOT NULL,
    provider     TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    headers      TEXT NOT NULL,            -- JSON object, credentials redacted
    body         TEXT,                     -- raw body; base64 when body_base64 = 1
    body_base64  INTEGER NOT NULL,
    body_bytes   INTEGER NOT NULL,
    verification TEXT NOT NULL,            -- verified | postback | rejected
    error        TEXT
);
CREATE INDEX deliveries_received_idx ON deliveries (received_at);

-- One normalised event; also the queue entry. `dedupe_key` makes redeliveries harmless.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    dedupe_key      TEXT NOT NULL UNIQUE,
    delivery_id     TEXT,                  -- NULL for poller events
    source          TEXT NOT NULL,
    provider        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    order_id        TEXT,
    product_id      TEXT,
    email           TEXT,
    test            INTEGER NOT NULL,
    data            TEXT NOT NULL,         -- the normalised event as JSON
    received_at     INTEGER NOT NULL,
    redeliveries    INTEGER NOT NULL,
    status          TEXT NOT NULL,         -- pending | processing | retry | done | unmatched | ignored | rejected | dead
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    locked_by       TEXT,
    locked_until    INTEGER,
    last_error      TEXT,
    finished_at     INTEGER
);
CREATE INDEX events_queue_idx ON events (status, next_attempt_at);
CREATE INDEX events_received_idx ON events (received_at);
CREATE INDEX events_order_idx ON events (source, order_id);

-- Processing history: one row per attempt (or deferral) of an event.
CREATE TABLE event_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    at          INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX event_log_event_idx ON event_log (event_id, seq);

-- The tool calls an event causes, written before each call so that a crash in the middle
-- is noticed and checked rather than blindly repeated. `request_id` links to audit_log.
CREATE TABLE event_actions (
    event_id   TEXT NOT NULL,
    step       INTEGER NOT NULL,
    tool       TEXT NOT NULL,
    arguments  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state      TEXT NOT NULL,              -- started | ok | failed | skipped
    detail     TEXT,
    at         INTEGER NOT NULL,
    PRIMARY KEY (event_id, step)
);

-- Access state per order: decisions are made from here, never from arrival order.
-- The lock columns serialise work on one order across workers and instances.
CREATE TABLE order_access (
    source       TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    state        TEXT NOT NULL,            -- none | active | suspended | ended
    offer_id     TEXT,
    email        TEXT,
    reason       TEXT,
    paid_until   INTEGER,
    updated_at   INTEGER NOT NULL,
    locked_by    TEXT,
    locked_until INTEGER,
    PRIMARY KEY (source, order_id)
);

-- The poller's last view of the school, one row per member.
CREATE TABLE poll_snapshots (
    connection TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (connection, key)
);

-- The tool calls of one request (an event's actions link here).
CREATE INDEX audit_log_request_idx ON audit_log (request_id);
