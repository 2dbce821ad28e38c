-- Share links done right: a password (argon2id), a download limit and its count, the effective
-- expiry (extendable up to what the token allows), and the runs of range requests that count as
-- one download, and the browsers that gave the password. File requests: upload-only links, and
-- who uploaded what through them.
ALTER TABLE share_links ADD COLUMN password_hash TEXT;
ALTER TABLE share_links ADD COLUMN max_downloads BIGINT;
ALTER TABLE share_links ADD COLUMN downloads BIGINT NOT NULL DEFAULT 0;
ALTER TABLE share_links ADD COLUMN token_expires BIGINT;
CREATE TABLE share_runs (
    link_id TEXT NOT NULL REFERENCES share_links(link_id) ON DELETE CASCADE,
    client TEXT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (link_id, client)
);
CREATE TABLE file_requests (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    password_hash TEXT,
    expires BIGINT NOT NULL,
    max_files BIGINT,
    max_bytes BIGINT,
    content_types TEXT NOT NULL,
    files BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    revoked BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);
CREATE INDEX file_requests_owner ON file_requests (owner_id, created);
CREATE TABLE request_uploads (
    file_id TEXT PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    request_id TEXT NOT NULL REFERENCES file_requests(id) ON DELETE CASCADE,
    uploader_name TEXT NOT NULL,
    uploader_email TEXT NOT NULL,
    client TEXT,
    created BIGINT NOT NULL
);
CREATE INDEX request_uploads_request ON request_uploads (request_id, created);
CREATE TABLE link_unlocks (
    id_hash TEXT PRIMARY KEY,
    link_id TEXT NOT NULL REFERENCES share_links(link_id) ON DELETE CASCADE,
    expires BIGINT NOT NULL
);
