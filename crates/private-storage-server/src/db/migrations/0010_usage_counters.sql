-- What each user holds, kept beside their row: every write that adds, removes, moves or
-- removes-as-infected a file record updates it in the same transaction (db/files.rs, quotas.rs).
-- A million files are then not summed for a page or an upload's quota check.
ALTER TABLE users ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN used_files BIGINT NOT NULL DEFAULT 0;
UPDATE users SET
    used_bytes = (SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_id = users.id AND scan <> 'removed'),
    used_files = (SELECT COUNT(*) FROM files WHERE owner_id = users.id AND scan <> 'removed')
