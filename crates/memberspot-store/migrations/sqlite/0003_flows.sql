-- Flows: run history, their steps, leases (no overlapping runs; one instance per scheduled
-- fire), and the amount of payment events in minor units for the digest's sums.
-- Keep in step with migrations/postgres/0003_flows.sql.

-- Amounts normalised to minor units (cents) at ingest, so sums need no JSON parsing.
ALTER TABLE events ADD COLUMN amount_minor INTEGER;
ALTER TABLE events ADD COLUMN currency TEXT;

-- One run of a flow. `fire_key` makes a scheduled fire or an event trigger happen once,
-- whichever instance gets there first.
CREATE TABLE flow_runs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    flow        TEXT NOT NULL,
    trigger     TEXT NOT NULL,             -- schedule | event | manual | rerun
    fire_key    TEXT UNIQUE,
    dry_run     INTEGER NOT NULL,
    status      TEXT NOT NULL,             -- running | ok | failed
    input       TEXT NOT NULL,             -- JSON: what triggered it
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    worker      TEXT NOT NULL
);
CREATE INDEX flow_runs_flow_idx ON flow_runs (flow, seq);

-- Each step (and each iteration of a loop) of a run.
CREATE TABLE flow_steps (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    input       TEXT,
    output      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX flow_steps_run_idx ON flow_steps (run_id, seq);

-- Named leases: at most one holder until `until` (epoch ms), across processes.
CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL
);
