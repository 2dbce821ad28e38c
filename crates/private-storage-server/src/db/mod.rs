//! The database: SQLite (embedded default) or PostgreSQL (scale-out), through one portable
//! dialect (`$n` placeholders, `BIGINT` numbers and flags, `TEXT` ids).
//!
//! Queries are grouped by concern (`users`: accounts, tokens, sessions; `files`; `links`: share
//! links, revocations, audit), each written once: a row type maps itself through `FromRow` from
//! either driver, and every query
//! goes through the helpers here, which pick the driver. Errors are a [`DbError`] that tells
//! an unavailable database from a conflict and a bug.

mod audit;
mod cache;
mod files;
mod links;
mod quotas;
mod requests;
mod rows;
mod sso;
mod users;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyPool};

pub use audit::{AuditFilter, AuditRow};
use cache::Caches;
pub use cache::Change;
pub use files::COUNTED_UP_TO;
pub use quotas::{Admission, Limits, Usage};
pub use requests::{RequestRow, RequestUpload};
use rows::FromRow;
pub use rows::{FileRow, LinkRow, OwnedFile, OwnedLink, ScanState, SessionUser, ShareEvent, UserRow};
pub use sso::PendingSignIn;
pub use webhooks::DeliveryRow;

/// A database result.
pub type DbResult<T> = Result<T, DbError>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in the database, as the callers need to tell it apart. The cause is for
/// the log, never for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database cannot answer now (closed, unreachable, busy, restarting): retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A uniqueness rule refused the write (a name or key that exists).
    #[error("the row exists already: {0}")]
    Conflict(#[source] BoxError),
    /// A query failed for another reason (a bug, a schema that does not match).
    #[error("database query failed: {0}")]
    Query(#[source] BoxError),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed | E::Protocol(_) => {
                DbError::Unavailable(e.into())
            }
            E::Database(ref d) if d.is_unique_violation() => DbError::Conflict(e.into()),
            // PostgreSQL classes 08 (connection), 53 (resources), 57 (operator intervention);
            // SQLite 5 and 6 (busy, locked).
            E::Database(ref d)
                if d.code()
                    .is_some_and(|c| ["08", "53", "57"].iter().any(|p| c.starts_with(p)) || c == "5" || c == "6") =>
            {
                DbError::Unavailable(e.into())
            }
            other => DbError::Query(other.into()),
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::SystemIoFailure | C::OutOfMemory) => {
                DbError::Unavailable(e.into())
            }
            Some(C::ConstraintViolation) => DbError::Conflict(e.into()),
            _ => DbError::Query(e.into()),
        }
    }
}

/// The migrations, in order. Each runs once, in a transaction.
const MIGRATIONS: &[(i64, Migration)] = &[
    (1, Migration::Both(include_str!("migrations/0001_initial.sql"))),
    (2, Migration::Both(include_str!("migrations/0002_upload_leases.sql"))),
    (3, Migration::Both(include_str!("migrations/0003_single_sign_on.sql"))),
    (4, Migration::Both(include_str!("migrations/0004_quotas.sql"))),
    (5, Migration::Both(include_str!("migrations/0005_scanning.sql"))),
    (6, Migration::Both(include_str!("migrations/0006_audit.sql"))),
    (7, Migration::Both(include_str!("migrations/0007_webhooks.sql"))),
    (8, Migration::Both(include_str!("migrations/0008_links.sql"))),
    (9, Migration::Both(include_str!("migrations/0009_cache_events.sql"))),
    (10, Migration::Both(include_str!("migrations/0010_usage_counters.sql"))),
    (
        11,
        Migration::Each {
            sqlite: include_str!("migrations/0011_audit_file_index.sql"),
            postgres: include_str!("migrations/0011_audit_file_index.postgres.sql"),
        },
    ),
];

/// A migration's statements (separated by `;`): the same for both databases, or one text each.
enum Migration {
    Both(&'static str),
    Each { sqlite: &'static str, postgres: &'static str },
}

impl Migration {
    fn sql(&self, postgres: bool) -> &'static str {
        match *self {
            Migration::Both(sql) => sql,
            Migration::Each { sqlite, postgres: pg } => {
                if postgres {
                    pg
                } else {
                    sqlite
                }
            }
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A random id (80 bits) in lower-case hex: safe in URLs, and never taken for a flag on a
/// command line (a base64 id may start with `-`).
pub fn new_id() -> String {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex(&bytes)
}

/// Bytes in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

/// A query parameter, bound the same way by both drivers.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::OptText(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
            Arg::OptInt(i) => i.to_sql(),
        }
    }
}

fn bind<'q>(sql: &'q str, args: &[Arg<'q>]) -> Query<'q, Any, AnyArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Text(s) => query.bind(s),
        Arg::OptText(s) => query.bind(s),
        Arg::Int(i) => query.bind(i),
        Arg::OptInt(i) => query.bind(i),
    })
}

/// The database handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    postgres: bool,
    /// SQLite only: read connections for the reads (see [`FastReads`]).
    fast: Option<Arc<FastReads>>,
    /// The per-request reads, while [`Db::watch_changes`] runs (see [`cache`]).
    caches: Arc<Caches>,
    /// PostgreSQL only: where the change listener connects.
    url: Arc<str>,
    /// SQLite only: when this process last indexed the audit trail by file.
    audit_indexed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// Reads on SQLite, answered on the calling thread, and the audit trail's writes.
///
/// sqlx runs each SQLite connection on a worker thread: a query is two thread hops (~40 µs
/// here), twice per download. Reads go through a few read-only rusqlite connections instead
/// (a few µs; WAL readers do not wait for the writer); writes stay on sqlx — except the audit
/// trail's batches, one per few hundred downloads, which one read-write rusqlite connection
/// writes on the blocking pool (sqlx binds `$n` parameters by name, in time quadratic in
/// their number). Closing the [`Db`] closes this path too.
#[derive(Debug)]
struct FastReads {
    connections: Vec<std::sync::Mutex<rusqlite::Connection>>,
    writer: std::sync::Mutex<rusqlite::Connection>,
    next: AtomicUsize,
    closed: AtomicBool,
}

impl FastReads {
    fn open(path: &std::path::Path, count: usize) -> rusqlite::Result<Self> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..count)
            .map(|_| {
                let conn = rusqlite::Connection::open_with_flags(path, flags)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(std::sync::Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let writer = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        // The audit trail's batches: durable once written as far as the process goes (WAL);
        // a power cut may lose the last moments, not the database.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        let writer = std::sync::Mutex::new(writer);
        Ok(Self { connections, writer, next: AtomicUsize::new(0), closed: AtomicBool::new(false) })
    }

    /// Runs `f` in a transaction of the read-write connection (blocking: call it on the
    /// blocking pool).
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>) -> DbResult<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DbError::Unavailable("the database is closed".into()));
        }
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` on a free connection (or waits for one: queries take microseconds).
    fn with<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> DbResult<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DbError::Unavailable("the database is closed".into()));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.connections.len();
        let guard = (0..n)
            .find_map(|i| self.connections[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.connections[start % n].lock().unwrap_or_else(|e| e.into_inner()));
        Ok(f(&guard)?)
    }
}

/// The file of a `sqlite:` URL (`sqlite://./data/x.db?mode=rwc` → `./data/x.db`).
pub(crate) fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

impl Db {
    /// Connects (SQLite files are created; their folder must exist).
    pub async fn connect(url: &str) -> DbResult<Self> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        let options = AnyPoolOptions::new()
            .max_connections(if postgres { 16 } else { 4 })
            .acquire_timeout(std::time::Duration::from_secs(5));
        let pool = if postgres {
            options.connect(url).await?
        } else {
            // SQLite: one writer at a time; wait for it instead of failing, and enforce foreign keys.
            options
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?
        };
        // The schema must exist before read-only connections prepare statements: opened lazily.
        Ok(Self { pool, postgres, fast: None, caches: Arc::default(), url: url.into(), audit_indexed: Arc::default() })
    }

    /// Connects, applies the migrations, and opens the fast read path on SQLite.
    pub async fn open(url: &str) -> DbResult<Self> {
        let mut db = Self::connect(url).await?;
        db.migrate().await?;
        if let Some(path) = sqlite_path(url).filter(|_| !db.postgres) {
            match FastReads::open(&path, 4) {
                Ok(fast) => db.fast = Some(Arc::new(fast)),
                Err(e) => tracing::warn!(error = %e, "SQLite fast reads unavailable; using sqlx for every query"),
            }
        }
        Ok(db)
    }

    /// Applies the migrations not yet applied; returns their versions. Safe to run from several
    /// instances at once on PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> DbResult<Vec<i64>> {
        self.migrate_through(i64::MAX).await
    }

    /// [`Db::migrate`], up to version `last` (tests of a migration's backfill start before it).
    async fn migrate_through(&self, last: i64) -> DbResult<Vec<i64>> {
        use sqlx::Row;
        let mut conn = self.pool.acquire().await?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_lock(7245119)").execute(&mut *conn).await?;
        }
        let result = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            let done: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>("version"))
                .collect::<Result<_, _>>()?;
            let mut applied = Vec::new();
            for (version, migration) in MIGRATIONS {
                if done.contains(version) || *version > last {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in migration.sql(self.postgres).split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                applied.push(*version);
            }
            Ok::<_, sqlx::Error>(applied)
        }
        .await;
        if self.postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock(7245119)").execute(&mut *conn).await;
        }
        Ok(result?)
    }

    /// A trivial query: the database answers.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; later queries fail with [`DbError::Unavailable`] (used at
    /// shutdown, and by tests of a database that went away).
    pub async fn close(&self) {
        if let Some(fast) = &self.fast {
            fast.closed.store(true, Ordering::Release);
        }
        self.pool.close().await;
    }

    /// Cached reads answered from the caches, and not (see [`cache`]).
    pub fn cache_stats(&self) -> (u64, u64) {
        self.caches.stats()
    }

    /// How many small files, and how many bytes, the storage's cache holds (`None`: no cache).
    pub fn file_cache_usage(&self) -> Option<(usize, u64)> {
        self.caches.objects().map(|objects| objects.usage())
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Runs a write; returns how many rows it touched.
    async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<u64> {
        Ok(bind(sql, args).execute(&self.pool).await?.rows_affected())
    }

    /// Runs a write that changes what the caches answer: each change is published in the same
    /// transaction (when a row was touched) and applied to this process's caches once it
    /// commits. Returns how many rows it touched.
    async fn execute_changing(&self, sql: &str, args: &[Arg<'_>], changes: &[Change<'_>]) -> DbResult<u64> {
        let mut tx = self.pool.begin().await?;
        let touched = bind(sql, args).execute(&mut *tx).await?.rows_affected();
        self.commit_changing(tx, if touched > 0 { changes } else { &[] }).await?;
        Ok(touched)
    }

    /// Publishes `changes` in `tx`, commits it, and applies them to this process's caches.
    async fn commit_changing(&self, mut tx: sqlx::Transaction<'_, Any>, changes: &[Change<'_>]) -> DbResult<()> {
        for change in changes {
            self.publish(&mut tx, *change).await?;
        }
        tx.commit().await?;
        for change in changes {
            self.caches.apply(Some(*change));
        }
        Ok(())
    }

    /// The first row of a read, if any.
    async fn optional<T: FromRow>(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<Option<T>> {
        if let Some(fast) = &self.fast {
            use rusqlite::OptionalExtension;
            return fast.with(|c| {
                c.prepare_cached(sql)?.query_row(rusqlite::params_from_iter(args), |row| T::from_row(row)).optional()
            });
        }
        Ok(bind(sql, args).fetch_optional(&self.pool).await?.as_ref().map(T::from_row).transpose()?)
    }

    /// Every row of a read.
    async fn all<T: FromRow>(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<Vec<T>> {
        if let Some(fast) = &self.fast {
            return fast.with(|c| {
                c.prepare_cached(sql)?.query_map(rusqlite::params_from_iter(args), |row| T::from_row(row))?.collect()
            });
        }
        Ok(bind(sql, args).fetch_all(&self.pool).await?.iter().map(T::from_row).collect::<Result<_, _>>()?)
    }

    /// The same database with every read on sqlx (tests compare both paths).
    #[cfg(test)]
    fn without_fast_reads(&self) -> Self {
        Self { fast: None, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of `sql` with `args`: one line per step.
    async fn query_plan(db: &Db, sql: &str, args: &[Arg<'_>]) -> Vec<String> {
        let rows = bind(&format!("EXPLAIN QUERY PLAN {sql}"), args).fetch_all(&db.pool).await.unwrap();
        rows.iter().map(|r| sqlx::Row::get::<String, _>(r, "detail")).collect()
    }

    #[tokio::test]
    async fn sqlite_reads_take_the_fast_path_and_agree_with_sqlx() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        assert!(db.fast.is_some(), "SQLite files get the fast read path");
        let user = db.create_user("ada", "hash", false, false).await.unwrap();
        db.create_token(&user.id, "t", "tokenhash").await.unwrap();
        db.create_session("sessionhash", &user.id, "csrf", now() + 60).await.unwrap();
        db.create_session("expiredhash", &user.id, "csrf", now() - 1).await.unwrap();
        let file = FileRow {
            id: new_id(),
            owner_id: user.id.clone(),
            object_key: "k".into(),
            name: "n".into(),
            size: 1,
            content_type: "t".into(),
            sha256: "s".into(),
            created: now(),
            scan: ScanState::Pending,
            scan_detail: None,
        };
        db.insert_file(&file).await.unwrap();

        let slow = db.without_fast_reads();
        for d in [&db, &slow] {
            assert_eq!(d.user_by_token("tokenhash").await.unwrap().as_deref(), Some(&user));
            assert_eq!(d.user_by_token("other").await.unwrap(), None);
            let session = d.session("sessionhash").await.unwrap().unwrap();
            assert_eq!((session.user, session.csrf.as_str()), (user.clone(), "csrf"));
            assert!(d.session("expiredhash").await.unwrap().is_none(), "expired sessions are not found");
            assert_eq!(d.file(&file.id, Some(&user.id)).await.unwrap().as_deref(), Some(&file));
            assert_eq!(d.file(&file.id, Some("someone else")).await.unwrap(), None);
            assert_eq!(d.file(&file.id, None).await.unwrap().as_deref(), Some(&file));
            let (files, total) = d.files(Some(&user.id), 10, 0).await.unwrap();
            assert_eq!((files.len(), total, files[0].owner.as_str()), (1, 1, "ada"));
        }
        assert!(
            matches!(db.create_user("ada", "hash", false, false).await, Err(DbError::Conflict(_))),
            "names are unique"
        );
        // The usage counters move with the records: insert, transfer, delete.
        let held = |u: Usage| (u.bytes, u.files);
        assert_eq!(held(db.usage(&user.id).await.unwrap()), (1, 1));
        let heir = db.create_user("bea", "hash", false, false).await.unwrap();
        assert_eq!(db.transfer_files(&user.id, &heir.id).await.unwrap(), 1);
        assert_eq!(held(db.usage(&user.id).await.unwrap()), (0, 0));
        assert_eq!(held(db.usage(&heir.id).await.unwrap()), (1, 1));
        assert!(db.delete_file(&file.id).await.unwrap());
        assert_eq!(held(db.usage(&heir.id).await.unwrap()), (0, 0));
        assert!(!db.delete_file(&file.id).await.unwrap(), "gone once");
        db.close().await;
        assert!(
            matches!(db.user_by_token("tokenhash").await, Err(DbError::Unavailable(_))),
            "a closed database answers nothing, fast path included"
        );
        assert!(matches!(slow.ping().await, Err(DbError::Unavailable(_))));
    }

    /// A batch of events is written whole and as given, whatever its size: in statements of
    /// several rows and one at a time for the rest (SQLite), or 64 per statement (sqlx).
    #[tokio::test]
    async fn every_event_of_a_batch_is_written_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        let event = |n: usize| AuditRow {
            id: format!("{n:014x}00000000"),
            at: n as i64,
            kind: "download".into(),
            actor: format!("user:u{n}"),
            user_id: Some(format!("u{n}")),
            owner_id: Some(format!("o{n}")),
            link_id: n.is_multiple_of(3).then(|| format!("l{n}")),
            route: Some(format!("GET /files/f{n}/download")),
            delivery: Some("stream".into()),
            status: Some(200 + n as i64),
            byte_range: n.is_multiple_of(2).then(|| format!("bytes={n}-")),
            bytes: Some(n as i64 * 10),
            client: Some("192.0.2.1".into()),
            user_agent: Some(format!("agent {n}")),
            request_id: Some(format!("r{n}")),
            detail: None,
            ..AuditRow::default()
        };
        for d in [db.clone(), db.without_fast_reads()] {
            let first = if d.fast.is_some() { 0 } else { 1000 };
            let rows: Vec<AuditRow> = (first..first + 2 * audit::SQLITE_ROWS_PER_INSERT + 3).map(event).collect();
            d.insert_audit(Arc::new(rows.clone())).await.unwrap();
            let filter = AuditFilter {
                since: Some(first as i64),
                until: Some(first as i64 + 100),
                limit: 100,
                ..AuditFilter::default()
            };
            let mut written = d.audit_events(&filter).await.unwrap();
            written.reverse(); // they come newest first
            assert_eq!(written, rows);
        }
    }

    /// The audit writer takes a download's owner from the record held in memory, and the
    /// insert looks up the others: the trail names the owner either way, and a file given to
    /// another user is written with its new owner (the transfer clears the held records).
    #[tokio::test]
    async fn audit_rows_get_their_files_owner_from_the_held_record_or_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        db.caches.renew(std::time::Instant::now()); // as the change watcher does while it runs
        let ada = db.create_user("ada", "hash", false, false).await.unwrap();
        let bea = db.create_user("bea", "hash", false, false).await.unwrap();
        let file = |id: &str| FileRow {
            id: id.into(),
            owner_id: ada.id.clone(),
            object_key: id.into(),
            name: "n".into(),
            size: 1,
            content_type: "t".into(),
            sha256: "s".into(),
            created: now(),
            scan: ScanState::Clean,
            scan_detail: None,
        };
        for id in ["held", "not-held"] {
            db.insert_file(&file(id)).await.unwrap();
        }
        db.file("held", None).await.unwrap().expect("read once: held from now on");
        let event = |n: u8, file: &str| AuditRow {
            id: format!("e{n}"),
            at: i64::from(n),
            kind: "download".into(),
            actor: "user:ada".into(),
            file_id: Some(file.into()),
            ..AuditRow::default()
        };
        let mut rows = vec![event(1, "held"), event(2, "not-held"), event(3, "gone")];
        db.known_owners(&mut rows);
        let owners: Vec<_> = rows.iter().map(|r| r.owner_id.as_deref()).collect();
        assert_eq!(owners, [Some(ada.id.as_str()), None, None], "only the held record answers here");
        db.insert_audit(Arc::new(rows)).await.unwrap();
        let written = |n: &str| {
            let db = db.clone();
            let id = n.to_owned();
            async move {
                let all = db.audit_events(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.unwrap();
                all.into_iter().find(|e| e.id == id).unwrap().owner_id
            }
        };
        assert_eq!(written("e1").await.as_deref(), Some(ada.id.as_str()), "from memory");
        assert_eq!(written("e2").await.as_deref(), Some(ada.id.as_str()), "looked up as it was written");
        assert_eq!(written("e3").await, None, "no such file: no owner");

        db.transfer_files(&ada.id, &bea.id).await.unwrap();
        db.file("held", None).await.unwrap().expect("held again, with its new owner");
        let mut rows = vec![event(4, "held")];
        db.known_owners(&mut rows);
        assert_eq!(rows[0].owner_id.as_deref(), Some(bea.id.as_str()));
    }

    /// Counting the files in a scan state reads the index on `scan`, whatever `ANALYZE` saw:
    /// with statistics of a million files in one state, SQLite's planner would read every row.
    #[tokio::test]
    async fn sqlite_counts_scan_states_by_the_index_whatever_the_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        for statement in [
            "ANALYZE",
            "DELETE FROM sqlite_stat1",
            "INSERT INTO sqlite_stat1 VALUES ('files', 'files_scan', '1000000 1000000 1000000'), ('files', NULL, '1000000')",
        ] {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        db.close().await;
        let db = Db::open(&url).await.unwrap();
        let pending = [Arg::Text("pending")];
        let unnamed = query_plan(&db, "SELECT COUNT(*) AS n FROM files WHERE scan = $1", &pending).await;
        assert!(unnamed.iter().any(|s| s.starts_with("SCAN files")), "the planner's own choice: {unnamed:?}");
        let ours = query_plan(&db, db.scan_count_sql(), &pending).await;
        assert!(ours.iter().any(|s| s.contains("INDEX files_scan (scan=?)")), "{ours:?}");
        assert_eq!(db.scan_count(ScanState::Pending).await.unwrap(), 0);
    }

    /// A database with data at version 9, migrated: 0010 sums what each user holds (removed
    /// files not counted), 0011 indexes the trail's rows by file and marks them all indexed.
    #[tokio::test]
    async fn migrations_backfill_usage_and_the_audit_file_index_from_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(db.migrate_through(9).await.unwrap(), (1..=9).collect::<Vec<_>>());
        let run = |sql: &'static str| {
            let pool = db.pool.clone();
            async move { sqlx::query(sql).execute(&pool).await.unwrap() }
        };
        run("INSERT INTO users (id, username, password_hash, is_staff, is_superuser, created) VALUES \
             ('u1', 'ada', 'h', 0, 0, 0), ('u2', 'bob', 'h', 0, 0, 0), ('u3', 'cy', 'h', 0, 0, 0)")
        .await;
        run("INSERT INTO files (id, owner_id, object_key, name, size, content_type, sha256, created, scan) VALUES \
             ('f1', 'u1', 'k1', 'a', 100, 't', 's', 0, 'clean'), ('f2', 'u1', 'k2', 'b', 20, 't', 's', 0, 'pending'), \
             ('f3', 'u1', 'k3', 'c', 5000, 't', 's', 0, 'removed'), ('f4', 'u2', 'k4', 'd', 7, 't', 's', 0, 'unscanned')")
        .await;
        assert_eq!(db.migrate_through(10).await.unwrap(), [10]);
        for (id, bytes, files) in [("u1", 120, 2), ("u2", 7, 1), ("u3", 0, 0)] {
            let row = sqlx::query("SELECT used_bytes, used_files FROM users WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            let held: (i64, i64) = (sqlx::Row::get(&row, "used_bytes"), sqlx::Row::get(&row, "used_files"));
            assert_eq!(held, (bytes, files), "{id}");
        }
        run("INSERT INTO audit_events (id, at, kind, actor, file_id) VALUES \
             ('e1', 1, 'download', 'anonymous', 'f1'), ('e2', 2, 'login', 'user:ada', NULL), \
             ('e3', 3, 'download', 'anonymous', 'f2'), ('e4', 4, 'download', 'anonymous', 'f1')")
        .await;
        assert_eq!(db.migrate().await.unwrap(), [11]);
        let rows = sqlx::query("SELECT file_id, at, id FROM audit_file_index ORDER BY file_id, at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        let index: Vec<(String, i64, String)> = rows
            .iter()
            .map(|r| (sqlx::Row::get(r, "file_id"), sqlx::Row::get(r, "at"), sqlx::Row::get(r, "id")))
            .collect();
        let expected = [("f1", 1, "e1"), ("f1", 4, "e4"), ("f2", 3, "e3")];
        assert_eq!(index, expected.map(|(f, at, id)| (f.to_owned(), at, id.to_owned())));
        let row =
            sqlx::query("SELECT last_rowid, (SELECT MAX(rowid) FROM audit_events) AS last FROM audit_index_state")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let (mark, last): (i64, i64) = (sqlx::Row::get(&row, "last_rowid"), sqlx::Row::get(&row, "last"));
        assert_eq!(mark, last, "every existing row counts as indexed");
        let filter = AuditFilter { file_id: Some("f1".into()), limit: 10, ..AuditFilter::default() };
        let found: Vec<String> = db.audit_events(&filter).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(found, ["e4", "e1"], "found once each, through the index");
    }

    /// SQLite indexes the trail by file in batches (migration 0011): a query by file finds
    /// every row of the file, indexed or not yet, newest first, through the index — and after
    /// a purge, whose new rowids start again from the last row left.
    #[tokio::test]
    async fn sqlite_finds_a_files_audit_rows_before_and_after_they_are_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        let event = |at: i64, file: &str| AuditRow {
            id: format!("{at:014x}0000000{}", &file[..1]),
            at,
            kind: "download".into(),
            actor: "anonymous".into(),
            file_id: Some(file.into()),
            owner_id: Some("owner".into()),
            ..AuditRow::default()
        };
        let batch = |ats: &[i64]| Arc::new(ats.iter().flat_map(|&at| [event(at, "a"), event(at, "b")]).collect());
        let indexed = || async {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_file_index").fetch_one(&db.pool).await.unwrap();
            sqlx::Row::get::<i64, _>(&row, "n")
        };
        let by_file = |d: &Db, file: &str, limit: i64| {
            let (d, file) = (d.clone(), file.to_owned());
            async move {
                let filter = AuditFilter { file_id: Some(file), limit, ..AuditFilter::default() };
                d.audit_events(&filter)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| (e.at, e.file_id.clone().unwrap()))
                    .collect::<Vec<_>>()
            }
        };
        let of = |file: &str, ats: &[i64]| ats.iter().map(|&at| (at, file.to_owned())).collect::<Vec<_>>();

        // The first batch of a process is indexed as it is written; the next, not yet.
        db.insert_audit(batch(&[1, 2, 3])).await.unwrap();
        assert_eq!(indexed().await, 6);
        db.insert_audit(batch(&[4, 5])).await.unwrap();
        assert_eq!(indexed().await, 6, "rows wait for the next batch indexing");
        let slow = db.without_fast_reads();
        for d in [&db, &slow] {
            assert_eq!(by_file(d, "a", 100).await, of("a", &[5, 4, 3, 2, 1]), "indexed and not yet, newest first");
            assert_eq!(by_file(d, "b", 3).await, of("b", &[5, 4, 3]), "the limit across both");
            assert_eq!(by_file(d, "c", 100).await, of("c", &[]));
        }
        db.index_audit_now().await.unwrap();
        assert_eq!(indexed().await, 10);
        assert_eq!(by_file(&db, "a", 100).await, of("a", &[5, 4, 3, 2, 1]), "found once each");
        let since = AuditFilter {
            file_id: Some("a".into()),
            since: Some(2),
            until: Some(5),
            limit: 100,
            ..AuditFilter::default()
        };
        assert_eq!(db.audit_events(&since).await.unwrap().iter().map(|e| e.at).collect::<Vec<_>>(), [4, 3, 2]);

        // Read through the index and the rows after the mark, not by reading the trail.
        let (sql, args) = db.audit_query(&since);
        let plan = query_plan(&db, &sql, &args).await;
        let has = |what: &str| plan.iter().any(|step| step.starts_with(what));
        assert!(has("SEARCH i USING PRIMARY KEY (file_id=? AND at>? AND at<?)"), "{plan:?}");
        assert!(has("SEARCH audit_events USING INTEGER PRIMARY KEY (rowid>?)"), "{plan:?}");
        assert!(!has("SCAN audit_events") && !has("SCAN e"), "{plan:?}");

        // A purge of every row: the rowids of new rows start again, and are still found.
        db.purge_audit(100).await.unwrap();
        assert_eq!((by_file(&db, "a", 100).await, indexed().await), (of("a", &[]), 0));
        db.insert_audit(batch(&[200])).await.unwrap();
        assert_eq!(by_file(&db, "a", 100).await, of("a", &[200]), "not yet indexed");
        db.index_audit_now().await.unwrap();
        assert_eq!((by_file(&db, "a", 100).await, indexed().await), (of("a", &[200]), 2), "indexed");
    }
}
