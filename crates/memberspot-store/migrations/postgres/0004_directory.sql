-- The directory version: a number every change to personas or connections bumps, from any
-- writer (another instance, a hand-made UPDATE), because triggers do it. The hub keeps
-- personas and connections in memory and compares this number before each use, so a revoked
-- token is refused on the next call without a lookup per call.
-- Keep in step with migrations/sqlite/0004_directory.sql.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_directory_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER personas_bump_directory
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personas
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
CREATE TRIGGER connections_bump_directory
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON connections
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
