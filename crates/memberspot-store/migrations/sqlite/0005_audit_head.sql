-- The audit chain is enforced by the database: a record is stored only if its prev_hash is
-- the hash of the chain head, and storing it moves the head, in the same statement. So an
-- append is one statement (no explicit transaction, no separate head read and write), and
-- two writers (processes, instances) can never fork the chain: the loser's statement fails
-- with "audit chain head moved", and it re-reads the head and tries again.
-- Keep in step with migrations/postgres/0005_audit_head.sql.

-- The head always exists; "0 <zero hash>" is the head of an empty log.
INSERT INTO meta (key, value) VALUES ('store.audit_head', '0 0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (key) DO NOTHING;

-- SQLite runs a row's AFTER trigger before the next row of the same statement is inserted,
-- so a multi-row INSERT links row by row.
CREATE TRIGGER audit_log_links_head BEFORE INSERT ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit chain head moved')
    WHERE NEW.prev_hash IS NOT (
        SELECT substr(value, instr(value, ' ') + 1) FROM meta WHERE key = 'store.audit_head'
    );
END;
CREATE TRIGGER audit_log_moves_head AFTER INSERT ON audit_log
BEGIN
    UPDATE meta SET value = NEW.seq || ' ' || NEW.hash WHERE key = 'store.audit_head';
END;
