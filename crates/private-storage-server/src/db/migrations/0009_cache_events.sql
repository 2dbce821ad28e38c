-- Changes to what the serving processes cache, for the processes that poll (SQLite: the CLI
-- and the server share the file). `seq` grows by one per change, in commit order (SQLite has
-- one writer at a time). PostgreSQL publishes changes by NOTIFY instead and leaves this empty.
CREATE TABLE cache_events (
    seq BIGINT PRIMARY KEY,
    what TEXT NOT NULL,
    at BIGINT NOT NULL
)
;
-- Listing a million files: newest first by (created, id), per owner and for everyone, straight
-- from an index.
DROP INDEX files_owner;
CREATE INDEX files_owner_recent ON files (owner_id, created, id);
CREATE INDEX files_recent ON files (created, id)
