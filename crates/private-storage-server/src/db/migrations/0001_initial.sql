-- The first schema: users, API tokens, sessions, files, share links and their audit trail.
-- One portable dialect for SQLite and PostgreSQL: TEXT ids, BIGINT numbers and flags.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_staff BIGINT NOT NULL,
    is_superuser BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    expires BIGINT NOT NULL
);
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    object_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE INDEX files_owner ON files (owner_id, created);
CREATE TABLE share_epochs (target TEXT PRIMARY KEY, epoch BIGINT NOT NULL);
CREATE TABLE share_revoked (link_id TEXT PRIMARY KEY, expires BIGINT NOT NULL);
CREATE TABLE share_links (
    link_id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    issued_by TEXT,
    bound_to TEXT,
    expires BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE share_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    link_id TEXT,
    target TEXT,
    detail TEXT NOT NULL
);
