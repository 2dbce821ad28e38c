//! Webhooks: events other systems act on, delivered to each `[[webhook]]` that subscribes.
//!
//! An event is queued in the database (`webhook_deliveries`) when it happens — one delivery per
//! subscribed webhook, so a restart loses nothing — and delivered by each instance's delivery
//! loop: a `POST` of the JSON payload, signed as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com>): `webhook-id` (the delivery's id: the receiver's
//! idempotency key), `webhook-timestamp` (seconds), and `webhook-signature: v1,<base64 of
//! HMAC-SHA256(secret, id "." timestamp "." body)>`. A `2xx` answer acknowledges it; anything
//! else (or no answer within 10 s) is retried with exponential backoff from `webhook_backoff`
//! (capped at an hour), [`MAX_ATTEMPTS`] times in all. Each instance claims a delivery before
//! sending it, so instances do not send one delivery twice at once; a receiver should still
//! deduplicate by `webhook-id` (delivery is at least once: an acknowledgement lost with an
//! instance is sent again).
//!
//! `file.created` is sent once the file is durable and servable — with scanning on, once it
//! was found clean —, so a receiver that fetches the file inside its handler gets it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{KeyInit, Mac};
use tokio::sync::Notify;

use super::{Actor, Domain, Error, Result};
use crate::config::{WebhookConfig, WebhookEvent};
use crate::db::{DeliveryRow, FileRow, new_id};

/// Attempts per delivery, at most.
pub(crate) const MAX_ATTEMPTS: i64 = 15;
/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long an instance's claim on a delivery lasts (more than [`TIMEOUT`]).
const CLAIM: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries sent per round.
const BATCH: i64 = 32;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The configured webhooks and the delivery loop's state.
#[derive(Debug)]
pub(crate) struct Webhooks {
    hooks: Vec<WebhookConfig>,
    backoff: Duration,
    http: reqwest::Client,
    wake: Notify,
}

impl Webhooks {
    pub(super) fn new(hooks: Vec<WebhookConfig>, backoff: Duration) -> Option<Arc<Self>> {
        if hooks.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Some(Arc::new(Self { hooks, backoff, http, wake: Notify::new() }))
    }

    /// When to try again after `attempts` failed ones, `None` once they are used up.
    fn retry_at(&self, attempts: i64, now: i64) -> Option<i64> {
        if attempts >= MAX_ATTEMPTS {
            return None;
        }
        let factor = 1u32 << (attempts - 1).clamp(0, 20);
        let wait = self.backoff.saturating_mul(factor).min(MAX_BACKOFF);
        Some(now + wait.as_millis() as i64)
    }
}

/// The signature of a delivery (Standard Webhooks, v1): `secret` is the configured one (a
/// `whsec_` prefix means base64 follows, as the specification's secrets are written).
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// A file as events show it.
pub(super) fn file_data(file: &FileRow) -> serde_json::Value {
    serde_json::json!({
        "id": file.id, "name": file.name, "size": file.size, "content_type": file.content_type,
        "sha256": file.sha256, "owner_id": file.owner_id, "scan": file.scan.as_str(),
        "url": format!("/files/{}/download", file.id),
    })
}

impl Domain {
    /// Queues `event` for every webhook that subscribes to it. Failing to queue is logged, not
    /// the operation's failure (what happened, happened).
    pub(super) async fn emit(&self, event: WebhookEvent, data: serde_json::Value) {
        let Some(webhooks) = &self.webhooks else { return };
        let now = now_ms();
        let payload = serde_json::json!({
            "type": event.as_str(),
            "timestamp": chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().to_rfc3339(),
            "data": data,
        })
        .to_string();
        let mut queued = false;
        for hook in webhooks.hooks.iter().filter(|h| h.events.contains(&event)) {
            let id = format!("msg_{}", new_id());
            match self.db.queue_delivery(&id, &hook.url, event.as_str(), &payload, now).await {
                Ok(()) => queued = true,
                Err(e) => {
                    tracing::error!(error = %e, event = event.as_str(), url = %hook.url, "could not queue a webhook delivery")
                }
            }
        }
        if queued {
            webhooks.wake.notify_one();
        }
    }

    /// [`Domain::emit`] without waiting (from a download's path).
    pub(crate) fn emit_later(&self, event: WebhookEvent, data: serde_json::Value) {
        if self.webhooks.as_ref().is_some_and(|w| w.hooks.iter().any(|h| h.events.contains(&event))) {
            let domain = self.clone();
            tokio::spawn(async move { domain.emit(event, data).await });
        }
    }

    /// Sends one round of the deliveries that are due; returns how many were acknowledged.
    ///
    /// # Errors
    /// The database's.
    pub async fn deliver_due(&self) -> Result<usize> {
        let Some(webhooks) = &self.webhooks else { return Ok(0) };
        let now = now_ms();
        let mut acknowledged = 0;
        let due = self.db.due_deliveries(now, BATCH).await?;
        for delivery in due {
            if !self.db.claim_delivery(&delivery.id, now_ms(), now_ms() + CLAIM.as_millis() as i64).await? {
                continue;
            }
            let Some(hook) = webhooks.hooks.iter().find(|h| h.url == delivery.webhook) else {
                let outcome = Err(("the webhook is no longer configured", None));
                self.db.attempted(&delivery.id, now_ms(), None, outcome).await?;
                continue;
            };
            let (status, outcome) = self.send(webhooks, hook, &delivery).await;
            let attempts = delivery.attempts + 1;
            match outcome {
                Ok(()) => {
                    acknowledged += 1;
                    self.db.attempted(&delivery.id, now_ms(), status, Ok(())).await?;
                }
                Err(error) => {
                    let retry_at = webhooks.retry_at(attempts, now_ms());
                    if retry_at.is_none() {
                        tracing::error!(id = %delivery.id, url = %hook.url, attempts, %error, "webhook delivery given up");
                    } else {
                        tracing::warn!(id = %delivery.id, url = %hook.url, attempts, %error, "webhook delivery failed: will retry");
                    }
                    self.db.attempted(&delivery.id, now_ms(), status, Err((&error, retry_at))).await?;
                }
            }
        }
        Ok(acknowledged)
    }

    async fn send(
        &self,
        webhooks: &Webhooks,
        hook: &WebhookConfig,
        delivery: &DeliveryRow,
    ) -> (Option<u16>, std::result::Result<(), String>) {
        let timestamp = now_ms() / 1000;
        let sent = webhooks
            .http
            .post(&hook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("private-storage/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(&hook.secret, &delivery.id, timestamp, &delivery.payload))
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), Ok(())),
            Ok(response) => (Some(response.status().as_u16()), Err(format!("answered {}", response.status()))),
            Err(e) => (None, Err(format!("no answer: {e}"))),
        }
    }

    /// Delivers as events come, and retries what is due, until the task is dropped.
    pub async fn deliver_forever(self) {
        let Some(webhooks) = self.webhooks.clone() else { return };
        let pause = webhooks.backoff.min(Duration::from_secs(5));
        loop {
            match self.deliver_due().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for webhook deliveries"),
            }
            let _ = tokio::time::timeout(pause, webhooks.wake.notified()).await;
        }
    }

    /// The configured webhooks (their URLs and events, never their secrets) with their latest
    /// deliveries: staff only.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for others; the database's.
    pub async fn webhook_log(&self, actor: &Actor, limit: i64) -> Result<Vec<(String, Vec<String>, Vec<DeliveryRow>)>> {
        if !actor.sees_everything() {
            return Err(Error::Forbidden("Only staff see the webhooks.".into()));
        }
        let mut log = Vec::new();
        for hook in self.webhooks.as_ref().map_or(&[][..], |w| &w.hooks[..]) {
            let events = hook.events.iter().map(|e| e.as_str().to_owned()).collect();
            log.push((hook.url.clone(), events, self.db.deliveries(&hook.url, limit.clamp(1, 1000)).await?));
        }
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example (its reference libraries' test vector).
    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        let secret = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
