-- Virus scanning: where each file stands (unscanned, pending, clean, infected, removed: found
-- infected and its bytes deleted, refused: too large for the scanner), what the scanner said,
-- and until when an instance holds the claim to scan it (0: nobody).
ALTER TABLE files ADD COLUMN scan TEXT NOT NULL DEFAULT 'unscanned';
ALTER TABLE files ADD COLUMN scan_detail TEXT;
ALTER TABLE files ADD COLUMN scan_claim BIGINT NOT NULL DEFAULT 0;
CREATE INDEX files_scan ON files (scan, scan_claim);
