-- Webhook deliveries: the queue (in the database, so that a restart loses nothing) and the log
-- of each webhook. Times in milliseconds. A delivery is due while neither delivered nor failed
-- and its next attempt has come, unless an instance has claimed it until later.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL,
    delivered BIGINT,
    failed BIGINT,
    last_status BIGINT,
    last_error TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, created);
