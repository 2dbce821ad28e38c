//! Caches of the reads every request makes — the user of an API token, the user of a session,
//! a file's record — invalidated, never merely left to expire.
//!
//! - **On this instance, exactly**: every write that changes what a cached read answers goes
//!   through [`Db`](super::Db) with the [`Change`] it makes, and the entries it touches are
//!   evicted as soon as it commits, before the write returns. A load that raced with an
//!   eviction is not kept (an epoch counts evictions).
//! - **Across instances and processes, within a bound**: the change is published in the
//!   write's own transaction — on SQLite as a row of `cache_events`, which every serving
//!   process polls every [`POLL_EVERY`]; on PostgreSQL as a `NOTIFY`, delivered in commit order
//!   to every instance's listener. A cache answers only while it holds a *lease*: a poll that
//!   succeeded (SQLite), or its own heartbeat `NOTIFY` received back (PostgreSQL, which proves
//!   every notification committed before it arrived), less than [`LEASE`] ago. A database
//!   that cannot be reached, a lost listener or a stalled watcher end the lease, and reads go
//!   to the database again (and fail closed if it is down). So a change made anywhere is seen
//!   everywhere within [`LEASE`] plus a poll, under a second.
//! - A process that does not watch (the CLI) never uses its caches.
//!
//! Entries are also dropped after [`MAX_AGE`], against writes made outside private-storage
//! (an operator's SQL).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use private_storage::{CachedStorage, ObjectKey, Storage};

use super::rows::{Columns, FromRow, Number};
use super::{Arg, Db, DbResult, FileRow, SessionUser, UserRow, now};

/// How long a successful poll or heartbeat lets the caches answer.
pub(super) const LEASE: Duration = Duration::from_millis(700);
/// How often a SQLite process polls `cache_events` (and a PostgreSQL instance sends its
/// heartbeat).
pub(super) const POLL_EVERY: Duration = Duration::from_millis(100);
/// The oldest an entry may be, whatever the lease.
pub(super) const MAX_AGE: Duration = Duration::from_secs(60);
/// The memory the records of files may take (by [`Footprint`]): ~110,000 records of the usual
/// size, so that downloads spread over 100,000 files read their records from the cache once
/// each has been read (with 65,536 entries, a third of them would read the database forever).
const FILES_BUDGET: u64 = 64 << 20;
/// The memory the users of tokens and of sessions may take, each (~50,000 of them).
const USERS_BUDGET: u64 = 16 << 20;
/// The `NOTIFY` channel on PostgreSQL.
pub(super) const CHANNEL: &str = "private_storage_cache";

/// What a write changed, as the caches need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Some API token was revoked: every cached token lookup goes.
    Tokens,
    /// Some user changed (password, roles, deleted, their sessions ended): every cached token
    /// and session lookup goes.
    Users,
    /// One session ended (by the hash of its id).
    Session(&'a str),
    /// One file's record changed or went (by id).
    File(&'a str),
    /// Records of many files changed (a transfer, a deleted user's files).
    Files,
    /// The bytes stored under a storage key changed or went (a deleted file, a rewrapped one).
    Object(&'a str),
}

impl Change<'_> {
    /// The change as published to other processes.
    pub(super) fn encode(self) -> String {
        match self {
            Change::Tokens => "tokens".into(),
            Change::Users => "users".into(),
            Change::Session(hash) => format!("session:{hash}"),
            Change::File(id) => format!("file:{id}"),
            Change::Files => "files".into(),
            Change::Object(key) => format!("object:{key}"),
        }
    }

    /// A published change; `None` for what this version does not know (all is evicted then).
    pub(super) fn decode(text: &str) -> Option<Change<'_>> {
        Some(match text.split_once(':') {
            None if text == "tokens" => Change::Tokens,
            None if text == "users" => Change::Users,
            None if text == "files" => Change::Files,
            Some(("session", hash)) => Change::Session(hash),
            Some(("file", id)) => Change::File(id),
            Some(("object", key)) => Change::Object(key),
            _ => return None,
        })
    }
}

/// The user of a session, with the session's end.
#[derive(Debug, Clone)]
pub(super) struct CachedSession {
    pub found: SessionUser,
    pub expires: i64,
}

impl FromRow for CachedSession {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { found: SessionUser::from_row(row)?, expires: row.int("expires")? })
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    loaded: Instant,
}

/// What a cached value holds in memory, roughly: its own size and its strings'.
pub(super) trait Footprint {
    fn footprint(&self) -> usize;
}

impl<T: Footprint> Footprint for Arc<T> {
    fn footprint(&self) -> usize {
        2 * std::mem::size_of::<usize>() + T::footprint(self)
    }
}

impl Footprint for UserRow {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + self.id.len() + self.username.len() + self.password_hash.len()
    }
}

impl Footprint for CachedSession {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + self.found.user.footprint() + self.found.csrf.len()
    }
}

impl Footprint for FileRow {
    fn footprint(&self) -> usize {
        let texts = [&self.id, &self.owner_id, &self.object_key, &self.name, &self.content_type, &self.sha256];
        std::mem::size_of::<Self>()
            + texts.iter().map(|t| t.len()).sum::<usize>()
            + self.scan_detail.as_ref().map_or(0, String::len)
    }
}

/// Weighs an entry by its key, its value's [`Footprint`] and the cache's own bookkeeping.
#[derive(Debug, Clone, Copy)]
struct ByFootprint;

/// The cache's own memory per entry (its slot, the key's `String`, the load time), roughly.
const PER_ENTRY: usize = 96;

impl<T: Footprint> quick_cache::Weighter<String, Entry<T>> for ByFootprint {
    fn weight(&self, key: &String, entry: &Entry<T>) -> u64 {
        (PER_ENTRY + key.len() + entry.value.footprint()) as u64
    }
}

type Map<T> = quick_cache::sync::Cache<String, Entry<T>, ByFootprint>;

/// A cache holding at most `budget` bytes (by [`ByFootprint`]).
fn map<T: Footprint + Clone>(budget: u64) -> Map<T> {
    Map::with_weighter((budget / 512) as usize, budget, ByFootprint)
}

/// The caches of one process (see the module's documentation).
#[derive(Debug)]
pub(super) struct Caches {
    tokens: Map<Arc<UserRow>>,
    sessions: Map<Arc<CachedSession>>,
    files: Map<Arc<FileRow>>,
    /// Evictions so far: a load that saw another value before it finished is not kept.
    epoch: AtomicU64,
    /// Until when (ms after `start`) the caches may answer; 0 never.
    lease_until: AtomicU64,
    start: Instant,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The storage's cache of small files, when the server keeps one (see [`Db::cache_objects`]).
    objects: OnceLock<Arc<Objects>>,
}

/// The small files a serving process keeps in memory.
pub(crate) type Objects = CachedStorage<Arc<dyn Storage>>;

impl Default for Caches {
    fn default() -> Self {
        Self {
            tokens: map(USERS_BUDGET),
            sessions: map(USERS_BUDGET),
            files: map(FILES_BUDGET),
            epoch: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            start: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            objects: OnceLock::new(),
        }
    }
}

/// Which cache.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Tokens,
    Sessions,
    Files,
}

impl Caches {
    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Whether the caches may answer now.
    pub(super) fn live(&self) -> bool {
        self.millis(Instant::now()) < self.lease_until.load(Ordering::Acquire)
    }

    /// Extends the lease: every change published before `seen_at` has been applied.
    pub(super) fn renew(&self, seen_at: Instant) {
        self.lease_until.fetch_max(self.millis(seen_at + LEASE), Ordering::AcqRel);
    }

    /// Ends the lease and forgets everything (the watcher lost track of changes).
    pub(super) fn revoke_lease(&self) {
        self.lease_until.store(0, Ordering::Release);
        self.apply(None);
    }

    /// The epoch a load starts in (see `keep_in`).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn get<T: Footprint + Clone>(map: &Map<T>, key: &str) -> Option<T> {
        map.get(key).filter(|e| e.loaded.elapsed() < MAX_AGE).map(|e| e.value)
    }

    fn keep_in<T: Footprint + Clone>(&self, map: &Map<T>, key: &str, value: T, epoch: u64) {
        if self.live() && self.epoch() == epoch {
            map.insert(key.to_owned(), Entry { value, loaded: Instant::now() });
            // An eviction between the check and the insert: undo it.
            if self.epoch() != epoch {
                map.remove(key);
            }
        }
    }

    pub(super) fn token(&self, hash: &str) -> Option<Arc<UserRow>> {
        self.count(self.live().then(|| Self::get(&self.tokens, hash)).flatten())
    }

    pub(super) fn session(&self, hash: &str) -> Option<Arc<CachedSession>> {
        self.count(self.live().then(|| Self::get(&self.sessions, hash)).flatten())
    }

    pub(super) fn file(&self, id: &str) -> Option<Arc<FileRow>> {
        self.count(self.live().then(|| Self::get(&self.files, id)).flatten())
    }

    /// A file's record if held, without counting a hit or a miss (for the audit writer, whose
    /// lookups are not requests').
    pub(super) fn held_file(&self, id: &str) -> Option<Arc<FileRow>> {
        self.live().then(|| Self::get(&self.files, id)).flatten()
    }

    fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(super) fn keep_token(&self, hash: &str, user: Arc<UserRow>, epoch: u64) {
        self.keep_in(&self.tokens, hash, user, epoch);
    }

    pub(super) fn keep_session(&self, hash: &str, session: Arc<CachedSession>, epoch: u64) {
        self.keep_in(&self.sessions, hash, session, epoch);
    }

    pub(super) fn keep_file(&self, id: &str, file: Arc<FileRow>, epoch: u64) {
        self.keep_in(&self.files, id, file, epoch);
    }

    /// Applies a change (`None`: one not understood — everything goes).
    pub(super) fn apply(&self, change: Option<Change<'_>>) {
        // The epoch moves first: a load finishing from here on is not kept.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match change {
            Some(Change::Tokens) => self.tokens.clear(),
            Some(Change::Users) => {
                self.tokens.clear();
                self.sessions.clear();
            }
            Some(Change::Session(hash)) => {
                self.sessions.remove(hash);
            }
            Some(Change::File(id)) => {
                self.files.remove(id);
            }
            Some(Change::Files) => self.files.clear(),
            Some(Change::Object(key)) => {
                if let (Some(objects), Ok(key)) = (self.objects.get(), ObjectKey::new(key)) {
                    objects.invalidate(&key);
                }
            }
            None => {
                self.tokens.clear();
                self.sessions.clear();
                self.files.clear();
                if let Some(objects) = self.objects.get() {
                    objects.clear();
                }
            }
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The storage's cache of small files, if there is one.
    pub(super) fn objects(&self) -> Option<&Objects> {
        self.objects.get().map(|objects| &**objects)
    }

    /// Hits and misses so far.
    pub(super) fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// How many entries one cache holds.
    #[cfg(test)]
    fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Tokens => self.tokens.len(),
            Kind::Sessions => self.sessions.len(),
            Kind::Files => self.files.len(),
        }
    }
}

/// One published change, as SQLite keeps it.
struct Published {
    seq: i64,
    what: String,
}

impl FromRow for Published {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self { seq: row.int("seq")?, what: row.text("what")? })
    }
}

/// Changes read per poll, at most (more are read at once after).
const POLL_BATCH: i64 = 512;

impl Db {
    /// Puts a cache of small files in front of `storage`, within `budget` bytes, kept exact the
    /// way the other caches are: the writes through it forget their key at once; deleting a
    /// file and rewrapping one publish [`Change::Object`], applied by every process that
    /// watches; and it answers only under the lease (so never in a command). One per `Db`: a
    /// second call gets the first one's.
    pub(crate) fn cache_objects(&self, storage: Arc<dyn Storage>, budget: u64) -> Arc<Objects> {
        let caches = self.caches.clone();
        let build = || Arc::new(CachedStorage::new(storage, budget).max_age(MAX_AGE).only_while(move || caches.live()));
        self.caches.objects.get_or_init(build).clone()
    }

    /// Publishes `changes` without another write (what changed is outside the database), and
    /// applies them here.
    pub(crate) async fn announce(&self, changes: &[Change<'_>]) -> DbResult<()> {
        let tx = self.pool.begin().await?;
        self.commit_changing(tx, changes).await
    }

    /// Publishes `change` in `tx`: a `cache_events` row on SQLite, a `NOTIFY` on PostgreSQL.
    pub(super) async fn publish(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, change: Change<'_>) -> DbResult<()> {
        let what = change.encode();
        if self.postgres {
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(what).execute(&mut **tx).await?;
        } else {
            sqlx::query(
                "INSERT INTO cache_events (seq, what, at) SELECT COALESCE(MAX(seq), 0) + 1, $1, $2 FROM cache_events",
            )
            .bind(what)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Follows the changes other processes publish and holds the caches' lease while it can
    /// (see the module's documentation). Runs until dropped; only a serving process runs it,
    /// so only a serving process's caches ever answer.
    pub async fn watch_changes(&self) {
        let _guard = LeaseGuard(self.caches.clone());
        if self.postgres { self.listen().await } else { self.poll().await }
    }

    /// SQLite: reads `cache_events` past the last one seen, every [`POLL_EVERY`].
    async fn poll(&self) {
        let mut last = None;
        let mut failing = false;
        loop {
            let started = Instant::now();
            let result = match last {
                None => self
                    .optional::<Number>("SELECT COALESCE(MAX(seq), 0) AS n FROM cache_events", &[])
                    .await
                    .map(|n| last = Some(n.map_or(0, |n| n.0))),
                Some(seen) => {
                    let sql = "SELECT seq, what FROM cache_events WHERE seq > $1 ORDER BY seq LIMIT $2";
                    match self.all::<Published>(sql, &[Arg::Int(seen), Arg::Int(POLL_BATCH)]).await {
                        Ok(rows) => {
                            for row in &rows {
                                self.caches.apply(Change::decode(&row.what));
                                last = Some(row.seq);
                            }
                            if rows.len() as i64 == POLL_BATCH {
                                continue; // more to read: the lease waits until all is applied
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) => {
                    self.caches.renew(started);
                    if std::mem::take(&mut failing) {
                        tracing::info!("following cache changes again");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read cache changes: caches off until the database answers");
                }
                Err(_) => {}
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// PostgreSQL: `LISTEN`s for changes, and renews the lease with its own heartbeats, which
    /// arrive after every notification committed before them.
    async fn listen(&self) {
        let instance = super::new_id();
        let mut failing = false;
        loop {
            let listening = async {
                let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listening.await {
                Ok(listener) => listener,
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot listen for cache changes: caches off until it can");
                    }
                    tokio::time::sleep(POLL_EVERY * 5).await;
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                tracing::info!("following cache changes again");
            }
            let heartbeats = tokio::spawn(heartbeat(self.clone(), instance.clone()));
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let payload = notification.payload();
                        match payload.strip_prefix("hb:").and_then(|rest| rest.split_once(':')) {
                            Some((from, sent)) if from == instance => {
                                if let Ok(sent) = sent.parse::<u64>() {
                                    self.caches.renew(self.caches.start + Duration::from_millis(sent));
                                }
                            }
                            Some(_) => {} // another instance's heartbeat
                            None => self.caches.apply(Change::decode(payload)),
                        }
                    }
                    // The connection was lost: what was published meanwhile is lost with it.
                    Ok(None) | Err(_) => {
                        self.caches.revoke_lease();
                        break;
                    }
                }
            }
            heartbeats.abort();
        }
    }
}

/// Every [`POLL_EVERY`], a `NOTIFY` to this instance's own listener, stamped with when it was
/// sent.
async fn heartbeat(db: Db, instance: String) {
    loop {
        let sent = db.caches.millis(Instant::now());
        let _ = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("hb:{instance}:{sent}"))
            .execute(&db.pool)
            .await;
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Ends the lease when the watcher stops (a server shutting down, a task aborted).
struct LeaseGuard(Arc<Caches>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.revoke_lease();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str) -> Arc<FileRow> {
        Arc::new(FileRow {
            id: id.into(),
            owner_id: "o".into(),
            object_key: "k".into(),
            name: "n".into(),
            size: 1,
            content_type: "t".into(),
            sha256: "s".into(),
            created: 0,
            scan: super::super::ScanState::Clean,
            scan_detail: None,
        })
    }

    #[test]
    fn nothing_is_answered_or_kept_without_a_lease() {
        let caches = Caches::default();
        caches.keep_file("a", file("a"), caches.epoch());
        assert_eq!(caches.len(Kind::Files), 0, "no lease: not kept");
        caches.renew(Instant::now());
        caches.keep_file("a", file("a"), caches.epoch());
        assert!(caches.file("a").is_some());
        caches.revoke_lease();
        assert!(caches.file("a").is_none(), "the lease ended");
        caches.renew(Instant::now());
        assert!(caches.file("a").is_none(), "and what was cached went with it");
    }

    /// Records of the usual size (a 20-character id, a key in the server's layout, a name,
    /// a SHA-256): a hundred thousand of them fit, and the memory they take stays in budget.
    #[test]
    fn a_hundred_thousand_records_fit_within_the_budget() {
        let caches = Caches::default();
        caches.renew(Instant::now());
        let record = |n: usize| {
            let id = format!("{n:020x}");
            let object_key = format!("files/2026/12/{}/{}/{id}/report-{n}.pdf", "a".repeat(20), &id[18..]);
            Arc::new(FileRow {
                name: format!("report-{n}.pdf"),
                content_type: "application/pdf".into(),
                sha256: "0".repeat(64),
                object_key,
                ..(*file(&id)).clone()
            })
        };
        // (The lease renewed as a watcher would: a debug build takes longer than one to fill.)
        let keep = |range: std::ops::Range<usize>| {
            for n in range {
                caches.renew(Instant::now());
                caches.keep_file(&format!("{n:020x}"), record(n), caches.epoch());
            }
        };
        keep(0..100_000);
        caches.renew(Instant::now());
        let kept = (0..100_000).filter(|n| caches.file(&format!("{n:020x}")).is_some()).count();
        assert!(
            kept >= 99_000,
            "{kept} of 100,000 kept ({} entries, {} bytes)",
            caches.len(Kind::Files),
            caches.files.weight()
        );
        assert!(caches.files.weight() <= FILES_BUDGET);
        keep(100_000..300_000);
        assert!(caches.files.weight() <= FILES_BUDGET, "a larger working set is held to the budget");
        assert!(caches.len(Kind::Files) < 150_000);
    }

    #[test]
    fn the_lease_runs_out_on_its_own() {
        let caches = Caches::default();
        caches.renew(Instant::now() - LEASE - Duration::from_millis(1));
        assert!(!caches.live(), "a poll older than the lease proves nothing now");
        caches.renew(Instant::now());
        assert!(caches.live());
    }

    #[test]
    fn a_load_that_raced_an_eviction_is_not_kept() {
        let caches = Caches::default();
        caches.renew(Instant::now());
        let epoch = caches.epoch();
        caches.apply(Some(Change::File("a"))); // the record changed while it was read
        caches.keep_file("a", file("a"), epoch);
        assert!(caches.file("a").is_none());
        caches.keep_file("a", file("a"), caches.epoch());
        assert!(caches.file("a").is_some());
    }

    #[test]
    fn each_change_evicts_what_it_names() {
        let caches = Caches::default();
        caches.renew(Instant::now());
        let user = Arc::new(UserRow {
            id: "u".into(),
            username: "ada".into(),
            password_hash: String::new(),
            is_staff: false,
            is_superuser: false,
            created: 0,
        });
        let session = Arc::new(CachedSession {
            found: SessionUser { user: (*user).clone(), csrf: "c".into() },
            expires: i64::MAX,
        });
        let fill = |caches: &Caches| {
            for n in ["1", "2"] {
                caches.keep_token(n, user.clone(), caches.epoch());
                caches.keep_session(n, session.clone(), caches.epoch());
                caches.keep_file(n, file(n), caches.epoch());
            }
        };
        let sizes = |caches: &Caches| (caches.len(Kind::Tokens), caches.len(Kind::Sessions), caches.len(Kind::Files));
        let cases: [(Option<Change<'_>>, (usize, usize, usize)); 6] = [
            (Some(Change::Tokens), (0, 2, 2)),
            (Some(Change::Users), (0, 0, 2)),
            (Some(Change::Session("1")), (2, 1, 2)),
            (Some(Change::File("2")), (2, 2, 1)),
            (Some(Change::Files), (2, 2, 0)),
            (None, (0, 0, 0)),
        ];
        for (change, expected) in cases {
            fill(&caches);
            assert_eq!(sizes(&caches), (2, 2, 2));
            caches.apply(change);
            assert_eq!(sizes(&caches), expected, "{change:?}");
            // Published and read back, a change means the same.
            if let Some(change) = change {
                assert_eq!(Change::decode(&change.encode()), Some(change));
            }
        }
        assert_eq!(Change::decode("something:new"), None, "unknown: everything goes");
    }

    #[tokio::test]
    async fn small_files_are_forgotten_by_key_and_kept_only_under_the_lease() {
        use private_storage::{LocalStorage, StorageExt};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        std::fs::create_dir(dir.path().join("media")).unwrap();
        let objects = db.cache_objects(Arc::new(LocalStorage::new(dir.path().join("media")).unwrap()), 1 << 20);
        let inner = objects.inner().clone();
        let keys = [ObjectKey::new("o/1.txt").unwrap(), ObjectKey::new("o/2.txt").unwrap()];
        let fill = || async {
            for key in &keys {
                objects.head_with_bytes(key, 4096).await.unwrap();
            }
            objects.usage().0
        };
        for key in &keys {
            inner.put_bytes(key, "v1").await.unwrap();
        }
        assert_eq!(fill().await, 0, "without a lease nothing is kept");

        db.caches.renew(Instant::now());
        assert_eq!(fill().await, 2);
        let cases: [(Option<Change<'_>>, usize); 4] =
            [(Some(Change::File("1")), 2), (Some(Change::Files), 2), (Some(Change::Object("o/1.txt")), 1), (None, 0)];
        for (change, left) in cases {
            assert_eq!(fill().await, 2);
            db.caches.apply(change);
            assert_eq!(objects.usage().0, left, "{change:?}");
            if let Some(change) = change {
                assert_eq!(Change::decode(&change.encode()), Some(change));
            }
        }

        // Changed behind the cache while the lease runs: seen once announced.
        assert_eq!(fill().await, 2);
        inner.put_bytes(&keys[0], "v2").await.unwrap();
        assert_eq!(objects.read(&keys[0]).await.unwrap(), "v1");
        db.caches.apply(Some(Change::Object("o/1.txt")));
        assert_eq!(objects.read(&keys[0]).await.unwrap(), "v2");
        // Once the lease has run out, the cache does not answer.
        inner.put_bytes(&keys[1], "v2").await.unwrap();
        db.caches.lease_until.store(0, Ordering::Release);
        assert_eq!(objects.head_with_bytes(&keys[1], 4096).await.unwrap().1.as_deref(), Some(&b"v2"[..]));
    }
}
