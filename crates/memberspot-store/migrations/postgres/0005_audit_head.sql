-- The audit chain is enforced by the database: a record is stored only if its prev_hash is
-- the hash of the chain head, and storing it moves the head, in the same statement. So an
-- append is one statement (no explicit transaction, no separate head read and write), and
-- two writers (instances) can never fork the chain: the head row is locked by the first,
-- and the second, once it gets the lock, sees the moved head, fails with "audit chain head
-- moved", re-reads the head and tries again.
-- Keep in step with migrations/sqlite/0005_audit_head.sql.

-- The head always exists; "0 <zero hash>" is the head of an empty log.
INSERT INTO meta (key, value) VALUES ('store.audit_head', '0 0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (key) DO NOTHING;

-- One BEFORE trigger checks and moves the head (AFTER ROW triggers would only run at the end
-- of a multi-row statement). NEW.seq already holds the identity value here.
CREATE FUNCTION audit_log_link_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head TEXT;
BEGIN
    SELECT value INTO head FROM meta WHERE key = 'store.audit_head' FOR UPDATE;
    IF head IS NULL OR NEW.prev_hash IS DISTINCT FROM split_part(head, ' ', 2) THEN
        RAISE EXCEPTION 'audit chain head moved' USING ERRCODE = 'serialization_failure';
    END IF;
    UPDATE meta SET value = NEW.seq || ' ' || NEW.hash WHERE key = 'store.audit_head';
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_links_head BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_link_head();
