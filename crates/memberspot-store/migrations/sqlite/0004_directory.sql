-- The directory version: a number every change to personas or connections bumps, from any
-- writer (another process, a hand-made UPDATE), because triggers do it. The hub keeps
-- personas and connections in memory and compares this number before each use, so a revoked
-- token is refused on the next call without a lookup per call.
-- Keep in step with migrations/postgres/0004_directory.sql.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE TRIGGER personas_insert_bumps_directory AFTER INSERT ON personas
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER personas_update_bumps_directory AFTER UPDATE ON personas
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER personas_delete_bumps_directory AFTER DELETE ON personas
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER connections_insert_bumps_directory AFTER INSERT ON connections
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER connections_update_bumps_directory AFTER UPDATE ON connections
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER connections_delete_bumps_directory AFTER DELETE ON connections
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
