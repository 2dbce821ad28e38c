//! The webhook delivery queue and log.

use super::rows::{Columns, FromRow};
use super::{Arg, Db, DbResult};

/// A delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct DeliveryRow {
    /// Also the idempotency id the receiver sees (`webhook-id`).
    pub id: String,
    /// The webhook's URL.
    pub webhook: String,
    pub event: String,
    pub payload: String,
    /// Milliseconds since the epoch, like every time here.
    pub created: i64,
    pub attempts: i64,
    pub next_attempt: i64,
    pub delivered: Option<i64>,
    pub failed: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

impl FromRow for DeliveryRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            id: row.text("id")?,
            webhook: row.text("webhook")?,
            event: row.text("event")?,
            payload: row.text("payload")?,
            created: row.int("created")?,
            attempts: row.int("attempts")?,
            next_attempt: row.int("next_attempt")?,
            delivered: row.opt_int("delivered")?,
            failed: row.opt_int("failed")?,
            last_status: row.opt_int("last_status")?,
            last_error: row.opt_text("last_error")?,
        })
    }
}

const SELECT: &str = "SELECT id, webhook, event, payload, created, attempts, next_attempt, delivered, failed, \
     last_status, last_error FROM webhook_deliveries";

impl Db {
    /// Queues a delivery, due at once.
    pub async fn queue_delivery(&self, id: &str, webhook: &str, event: &str, payload: &str, now: i64) -> DbResult<()> {
        self.execute(
            "INSERT INTO webhook_deliveries (id, webhook, event, payload, created, attempts, next_attempt, \
             claimed_until) VALUES ($1, $2, $3, $4, $5, 0, $5, 0)",
            &[Arg::Text(id), Arg::Text(webhook), Arg::Text(event), Arg::Text(payload), Arg::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Deliveries due at `now` that no instance has claimed, oldest first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> DbResult<Vec<DeliveryRow>> {
        self.all(
            &format!(
                "{SELECT} WHERE delivered IS NULL AND failed IS NULL AND next_attempt <= $1 AND claimed_until < $1 \
                 ORDER BY next_attempt, created, id LIMIT $2"
            ),
            &[Arg::Int(now), Arg::Int(limit)],
        )
        .await
    }

    /// Claims a due delivery until `until`: `false` when another instance has it.
    pub async fn claim_delivery(&self, id: &str, now: i64, until: i64) -> DbResult<bool> {
        let sql = "UPDATE webhook_deliveries SET claimed_until = $1 WHERE id = $2 AND claimed_until < $3 \
                   AND delivered IS NULL AND failed IS NULL";
        Ok(self.execute(sql, &[Arg::Int(until), Arg::Text(id), Arg::Int(now)]).await? == 1)
    }

    /// Records an attempt: delivered (`Ok`), retried at `retry_at`, or given up (`retry_at`
    /// `None`).
    pub async fn attempted(
        &self,
        id: &str,
        now: i64,
        status: Option<u16>,
        outcome: Result<(), (&str, Option<i64>)>,
    ) -> DbResult<()> {
        let status = status.map(i64::from);
        match outcome {
            Ok(()) => {
                self.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered = $1, claimed_until = 0, \
                     last_status = $2, last_error = NULL WHERE id = $3",
                    &[Arg::Int(now), Arg::OptInt(status), Arg::Text(id)],
                )
                .await?
            }
            Err((error, Some(retry_at))) => {
                self.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt = $1, claimed_until = 0, \
                     last_status = $2, last_error = $3 WHERE id = $4",
                    &[Arg::Int(retry_at), Arg::OptInt(status), Arg::Text(error), Arg::Text(id)],
                )
                .await?
            }
            Err((error, None)) => {
                self.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, failed = $1, claimed_until = 0, \
                     last_status = $2, last_error = $3 WHERE id = $4",
                    &[Arg::Int(now), Arg::OptInt(status), Arg::Text(error), Arg::Text(id)],
                )
                .await?
            }
        };
        Ok(())
    }

    /// A webhook's deliveries, newest first.
    pub async fn deliveries(&self, webhook: &str, limit: i64) -> DbResult<Vec<DeliveryRow>> {
        self.all(
            &format!("{SELECT} WHERE webhook = $1 ORDER BY created DESC, id DESC LIMIT $2"),
            &[Arg::Text(webhook), Arg::Int(limit)],
        )
        .await
    }
}
