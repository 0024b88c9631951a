-- The console's Events page finds events by order id alone and by e-mail (any case);
-- without these both read every event (24 and 40 ms at 200,000 events on SQLite,
-- docs/benchmarks.md). The (source, order_id) index serves lookups within one source.
CREATE INDEX events_order_id_idx ON events (order_id, seq);
CREATE INDEX events_email_lower_idx ON events (LOWER(email), seq);
