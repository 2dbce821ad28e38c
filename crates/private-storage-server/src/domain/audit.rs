//! The audit trail: one event for every download and every denial on every route and in every
//! delivery mode (recorded by the HTTP front-end, which sees the answer), and for every upload,
//! refused upload, delete, link issued or revoked, login, scan result and quota refusal
//! (recorded here, where they happen).
//!
//! Nothing waits on it: [`AuditLog::record`] queues the event (a bounded queue) and a writer
//! task stores what is queued in batches, one transaction each. Its cost is bounded under
//! floods: forged share tokens and invalid API tokens are never written (only counted in the
//! metrics), events of anonymous clients pass a rate limit, and a full queue drops the event
//! and counts it (`private_storage_audit_dropped_total`). Every event carries the request's
//! context — route, client address, user agent, request id — from [`REQUEST`], which the HTTP
//! front-end sets around each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::{Actor, Domain, Result};
use crate::db::{AuditFilter, AuditRow, Db, FileRow};
use crate::metrics::Metrics;

/// Events waiting to be written, at most.
const QUEUE: usize = 65_536;
/// Events written in one transaction, at most.
const BATCH: usize = 2048;
/// Events of anonymous clients per second, at most (a burst of as many is allowed).
const ANONYMOUS_PER_SECOND: f64 = 200.0;
/// The pause after each batch written (events wait at most this before their transaction).
const PACE: Duration = Duration::from_millis(50);
/// The most of a `Range` header or a user agent kept.
const MAX_TEXT: usize = 256;

tokio::task_local! {
    /// The request an event happens in (set by the HTTP front-end around each request).
    pub static REQUEST: Arc<RequestContext>;
}

/// Where an event comes from: the request's route, client and ids.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `METHOD /path` (share-link tokens shown as `/s/<token>`).
    pub route: String,
    /// The client's address (behind trusted proxies: theirs).
    pub client: Option<String>,
    /// The `User-Agent`, cut to 256 characters.
    pub user_agent: Option<String>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
}

/// Cuts `text` to [`MAX_TEXT`] characters.
pub(crate) fn bounded(text: &str) -> String {
    // No more bytes than MAX_TEXT: no more characters either (the usual case, not walked).
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// Microseconds since the epoch, increasing within this process: events keep their order.
fn monotonic_now() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// An event's id: its time (µs, hex) then 32 random bits. Ids grow with time, so the trail's
/// primary key is appended to rather than written all over (a random key dirties a page of
/// the index per event: most of the cost of an event, measured).
fn event_id(at: i64) -> String {
    let mut bytes = [0; 11];
    // 14 hex digits of microseconds: until the year 4253.
    bytes[..7].copy_from_slice(&at.to_be_bytes()[1..]);
    // Unique, not secret: a thread's generator (randomly seeded), no system call per event.
    bytes[7..].copy_from_slice(&fastrand::u32(..).to_be_bytes());
    crate::db::hex(&bytes)
}

/// An event, built up before it is recorded.
#[derive(Debug, Clone)]
pub struct Event(AuditRow);

impl Event {
    /// An event of `kind` by `actor` (`user:<name>`, `link:<id>`, `anonymous`, `cli`, `scanner`).
    pub fn new(kind: &str, actor: impl Into<String>) -> Self {
        Event(AuditRow { kind: kind.to_owned(), actor: actor.into(), ..AuditRow::default() })
    }

    /// An event of `kind` by a domain actor.
    pub fn by(kind: &str, actor: &Actor) -> Self {
        let mut event = Self::new(kind, actor_name(actor));
        if let Actor::User(user) = actor {
            event.0.user_id = Some(user.id.clone());
        }
        event
    }

    /// The user behind the event, by id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.0.user_id = Some(id.into());
        self
    }

    /// The file, by record.
    pub fn file(mut self, file: &FileRow) -> Self {
        self.0.file_id = Some(file.id.clone());
        self.0.owner_id = Some(file.owner_id.clone());
        self
    }

    /// The file, by id (its owner looked up as it is written).
    pub fn file_id(mut self, id: impl Into<String>) -> Self {
        self.0.file_id = Some(id.into());
        self
    }

    /// The file, by storage key (its id and owner looked up as it is written).
    pub fn file_key(mut self, key: impl Into<String>) -> Self {
        self.0.file_key = Some(key.into());
        self
    }

    /// The share link.
    pub fn link(mut self, link_id: impl Into<String>) -> Self {
        self.0.link_id = Some(link_id.into());
        self
    }

    /// The HTTP status answered.
    pub fn status(mut self, status: u16) -> Self {
        self.0.status = Some(i64::from(status));
        self
    }

    /// How the bytes travelled (`stream`, `nginx`, `apache`, `s3-redirect`).
    pub fn delivery(mut self, delivery: &str) -> Self {
        self.0.delivery = Some(delivery.to_owned());
        self
    }

    /// The `Range` asked for.
    pub fn range(mut self, range: Option<&str>) -> Self {
        self.0.byte_range = range.map(bounded);
        self
    }

    /// The bytes planned (a response's `Content-Length`, an upload's size).
    pub fn bytes(mut self, bytes: Option<u64>) -> Self {
        self.0.bytes = bytes.map(|b| b as i64);
        self
    }

    /// What else is worth keeping (a reason, a signature, a name).
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(bounded(&detail.into()));
        self
    }

    /// The route, client, user agent and request id of `context`.
    pub fn context(mut self, context: &RequestContext) -> Self {
        self.0.route = Some(context.route.clone());
        self.0.client = context.client.clone();
        self.0.user_agent = context.user_agent.clone();
        self.0.request_id = context.request_id.clone();
        self
    }

    /// [`Event::context`], taking the context's strings when nothing else holds it (the end of
    /// a request: no copies).
    pub fn into_context(mut self, context: Arc<RequestContext>) -> Self {
        match Arc::try_unwrap(context) {
            Ok(context) => {
                self.0.route = Some(context.route);
                self.0.client = context.client;
                self.0.user_agent = context.user_agent;
                self.0.request_id = context.request_id;
                self
            }
            Err(context) => self.context(&context),
        }
    }
}

/// How an actor is named in the trail.
pub(crate) fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::User(user) => format!("user:{}", user.username),
        Actor::Operator => "cli".into(),
    }
}

enum Message {
    Event(Box<AuditRow>),
    Flush(oneshot::Sender<()>),
}

/// The queue in front of the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Message>,
    anonymous: Arc<std::sync::Mutex<Bucket>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Event(_) => "Event",
            Message::Flush(_) => "Flush",
        })
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AuditLog {
    /// Starts the writer task over `db`.
    pub(crate) fn start(db: Db, metrics: Arc<Metrics>) -> Self {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(db, events, metrics.clone()));
        let anonymous = Bucket { tokens: ANONYMOUS_PER_SECOND, at: Instant::now() };
        Self { queue, anonymous: Arc::new(std::sync::Mutex::new(anonymous)), metrics }
    }

    /// Queues `event`, with the current request's context if there is one. Never waits: a full
    /// queue, or an anonymous client past the rate limit, drops it (counted).
    pub fn record(&self, event: Event) {
        let mut row = match REQUEST.try_with(Arc::clone) {
            Ok(context) => event.context(&context).0,
            Err(_) => event.0,
        };
        if row.actor == "anonymous" && !self.anonymous_allowed() {
            self.metrics.audit_dropped("anonymous_rate");
            return;
        }
        row.at = monotonic_now();
        row.id = event_id(row.at);
        if self.queue.try_send(Message::Event(Box::new(row))).is_err() {
            self.metrics.audit_dropped("queue_full");
        }
    }

    fn anonymous_allowed(&self) -> bool {
        let mut bucket = self.anonymous.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * ANONYMOUS_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(ANONYMOUS_PER_SECOND);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits until every event queued before the call is written (or given up on).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The writer: takes what is queued, up to [`BATCH`] events, and writes them in one
/// transaction; a database that fails is retried (a few times, backing off) before the batch is
/// given up (logged and counted). Ends when every [`AuditLog`] is gone.
async fn write_events(db: Db, mut events: mpsc::Receiver<Message>, metrics: Arc<Metrics>) {
    let mut messages = Vec::with_capacity(BATCH);
    loop {
        let received = events.recv_many(&mut messages, BATCH).await;
        if received == 0 {
            return;
        }
        let mut rows = Vec::with_capacity(messages.len());
        let mut flushes = Vec::new();
        for message in messages.drain(..) {
            match message {
                Message::Event(row) => rows.push(*row),
                Message::Flush(done) => flushes.push(done),
            }
        }
        let rows_written = rows.len();
        if !rows.is_empty() {
            db.known_owners(&mut rows);
            let rows = Arc::new(rows);
            let mut attempt = 0;
            while let Err(e) = db.insert_audit(rows.clone()).await {
                attempt += 1;
                if attempt == 5 {
                    tracing::error!(error = %e, events = rows.len(), "audit events could not be written: dropped");
                    for _ in rows.iter() {
                        metrics.audit_dropped("database");
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
        let flushed = !flushes.is_empty();
        for done in flushes {
            let _ = done.send(());
        }
        // After a write, a moment for events to gather: fewer, larger transactions (one per
        // request at a few thousand requests a second cost more than the requests; each commit
        // also rewrites the last page of every index). A full batch is followed at once: the
        // pause never limits how many events a second are written. A flush is answered first,
        // and one asked meanwhile waits at most this.
        if !flushed && rows_written > 0 && received < BATCH {
            tokio::time::sleep(PACE).await;
        }
    }
}

impl Domain {
    /// The audit trail's queue.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Audit events the actor may read: staff everything, users the events on their own
    /// files. `filter.owner_id` is set from the actor.
    ///
    /// # Errors
    /// The database's.
    pub async fn audit_events(&self, actor: &Actor, mut filter: AuditFilter) -> Result<Vec<AuditRow>> {
        filter.owner_id = actor.scope().map(str::to_owned);
        filter.limit = filter.limit.clamp(1, 1000);
        Ok(self.db.audit_events(&filter).await?)
    }

    /// Every audit event from `since` (µs), oldest first, handed to `each` a page at a time.
    ///
    /// # Errors
    /// The database's, or `each`'s.
    pub async fn export_audit(
        &self,
        since: i64,
        mut each: impl FnMut(&AuditRow) -> std::io::Result<()>,
    ) -> Result<u64> {
        let mut after: Option<(i64, String)> = None;
        let mut n = 0;
        loop {
            let page = self.db.audit_page(since, after.as_ref().map(|(at, id)| (*at, id.as_str())), 1000).await?;
            let Some(last) = page.last() else { return Ok(n) };
            after = Some((last.at, last.id.clone()));
            for row in &page {
                each(row).map_err(|e| super::Error::Internal(e.into()))?;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_the_time_in_hex_then_random_bits() {
        for at in [0, 1, 0xabc, 1_764_000_000_000_000, (1 << 56) - 1] {
            let id = event_id(at);
            assert_eq!(id.len(), 22, "{id}");
            assert_eq!(id[..14], format!("{at:014x}"), "the time first: ids sort as their times");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        }
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| event_id(7)).collect();
        assert!(ids.len() > 990, "the same microsecond, told apart by the random part");
    }

    #[test]
    fn texts_are_cut_to_their_first_characters() {
        assert_eq!(bounded("curl/8.5"), "curl/8.5");
        let ascii = "a".repeat(MAX_TEXT + 10);
        assert_eq!(bounded(&ascii), "a".repeat(MAX_TEXT));
        assert_eq!(bounded(&ascii[..MAX_TEXT]), ascii[..MAX_TEXT]);
        // Characters, not bytes: 300 two-byte characters keep 256 of them (512 bytes).
        let wide = "é".repeat(MAX_TEXT + 44);
        assert_eq!(bounded(&wide), "é".repeat(MAX_TEXT));
        // Over MAX_TEXT bytes but not characters: kept whole.
        let short = "é".repeat(MAX_TEXT / 2 + 1);
        assert_eq!(bounded(&short), short);
    }
}
