-- The audit trail: one row per download, denial, upload, delete, link change, login, scan
-- result and quota refusal. `at` is in microseconds, increasing within an instance. `file_id` and
-- `owner_id` are kept as they were (no foreign key), so a deleted file's history stays.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    user_id TEXT,
    file_id TEXT,
    owner_id TEXT,
    link_id TEXT,
    route TEXT,
    delivery TEXT,
    status BIGINT,
    byte_range TEXT,
    bytes BIGINT,
    client TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_owner ON audit_events (owner_id, at);
CREATE INDEX audit_events_file ON audit_events (file_id, at);
