-- Which instance works on a resumable upload now: a lease that the holder renews while its
-- request runs and gives back when it ends. One that ran out (a crashed instance) is taken over.
CREATE TABLE upload_leases (
    upload_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
