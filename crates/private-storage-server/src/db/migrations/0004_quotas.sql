-- Quotas: per-user overrides of the configured defaults (NULL: the default, -1: no limit),
-- and the room that uploads in progress hold until they are recorded or given up.
ALTER TABLE users ADD COLUMN quota_bytes BIGINT;
ALTER TABLE users ADD COLUMN quota_files BIGINT;
CREATE TABLE upload_reservations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    bytes BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
CREATE INDEX upload_reservations_user ON upload_reservations (user_id, expires);
