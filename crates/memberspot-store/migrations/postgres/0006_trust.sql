-- Trust: which stored events may act or be reported on, and refused requests kept as a
-- reason without their contents. Keep in step with migrations/sqlite/0006_trust.sql.

-- The school (connection) an event belongs to: a webhook source's connection when it was
-- received, the poller's connection for its events. Consumers only see their own school's.
ALTER TABLE events ADD COLUMN connection TEXT;
-- 1 once the event's authenticity is established (signature, token, PayPal post-back).
ALTER TABLE events ADD COLUMN verified BIGINT NOT NULL DEFAULT 1;
-- Why an event was refused (e.g. amount below the rule's minimum), for listings.
ALTER TABLE events ADD COLUMN refusal TEXT;

-- PayPal events stored before their post-back, and those it rejected, are not verified.
UPDATE events SET verified = 0 WHERE status = 'rejected'
    OR (status IN ('pending', 'retry', 'processing')
        AND delivery_id IN (SELECT id FROM deliveries WHERE verification = 'postback'));
-- A rejected event gives its idempotency key up: the genuine delivery with that key must
-- be processed, not counted as a redelivery of a forgery.
UPDATE events SET dedupe_key = 'rejected:' || id || ':' || dedupe_key WHERE status = 'rejected';
UPDATE events SET connection = substr(source, 6) WHERE source LIKE 'poll:%';
-- Refused deliveries keep the reason, size, source and time, not the request's headers.
UPDATE deliveries SET headers = '{}' WHERE verification = 'rejected';

CREATE INDEX events_connection_idx ON events (connection, seq);
CREATE INDEX deliveries_verification_idx ON deliveries (verification, received_at);
