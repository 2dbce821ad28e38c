//! The database: SQLite (embedded default) or PostgreSQL (scale-out), through one portable
//! dialect (`$n` placeholders, `BIGINT` numbers and flags, `TEXT` ids).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::OptionalExtension;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// A database error, logged by the caller; never shown to clients as is.
pub type DbResult<T> = Result<T, sqlx::Error>;

/// The migrations, in order. Each runs once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE users (
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
    );",
)];

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A random id (80 bits) in lower-case hex: safe in URLs, and never taken for a flag on a
/// command line (a base64 id may start with `-`).
pub fn new_id() -> String {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub created: i64,
}

/// A stored file's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct FileRow {
    pub id: String,
    pub owner_id: String,
    #[serde(skip)]
    pub object_key: String,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub sha256: String,
    pub created: i64,
}

/// A live share link of a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct LinkRow {
    pub link_id: String,
    pub file_id: String,
    pub issued_by: Option<String>,
    pub bound_to: Option<String>,
    pub expires: i64,
    pub created: i64,
}

/// The database handle.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    postgres: bool,
    /// SQLite only: read connections for the per-request lookups (see [`FastReads`]).
    fast: Option<Arc<FastReads>>,
}

/// Per-request lookups on SQLite (token, session, record), answered on the calling thread.
///
/// sqlx runs each SQLite connection on a worker thread: a query is two thread hops (~40 µs
/// here), twice per download. These three indexed reads go through a few read-only rusqlite
/// connections instead (a few µs; WAL readers do not wait for the writer). Writes and
/// everything else stay on sqlx. Closing the [`Db`] closes this path too.
#[derive(Debug)]
pub struct FastReads {
    connections: Vec<Mutex<rusqlite::Connection>>,
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
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self { connections, next: AtomicUsize::new(0), closed: AtomicBool::new(false) })
    }

    /// Runs `f` on a free connection (or waits for one: queries take microseconds).
    fn with<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> DbResult<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.connections.len();
        let guard = (0..n)
            .find_map(|i| self.connections[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.connections[start % n].lock().unwrap_or_else(|e| e.into_inner()));
        f(&guard).map_err(|e| sqlx::Error::Protocol(format!("sqlite: {e}")))
    }
}

fn user_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: row.get("id")?,
        username: row.get("username")?,
        password_hash: row.get("password_hash")?,
        is_staff: row.get::<_, i64>("is_staff")? != 0,
        is_superuser: row.get::<_, i64>("is_superuser")? != 0,
        created: row.get("created")?,
    })
}

fn file_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        object_key: row.get("object_key")?,
        name: row.get("name")?,
        size: row.get("size")?,
        content_type: row.get("content_type")?,
        sha256: row.get("sha256")?,
        created: row.get("created")?,
    })
}

/// The file of a `sqlite:` URL (`sqlite://./data/x.db?mode=rwc` → `./data/x.db`).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

fn user(row: &AnyRow) -> DbResult<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        is_staff: row.try_get::<i64, _>("is_staff")? != 0,
        is_superuser: row.try_get::<i64, _>("is_superuser")? != 0,
        created: row.try_get("created")?,
    })
}

fn file(row: &AnyRow) -> DbResult<FileRow> {
    Ok(FileRow {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        object_key: row.try_get("object_key")?,
        name: row.try_get("name")?,
        size: row.try_get("size")?,
        content_type: row.try_get("content_type")?,
        sha256: row.try_get("sha256")?,
        created: row.try_get("created")?,
    })
}

fn link(row: &AnyRow) -> DbResult<LinkRow> {
    Ok(LinkRow {
        link_id: row.try_get("link_id")?,
        file_id: row.try_get("file_id")?,
        issued_by: row.try_get("issued_by")?,
        bound_to: row.try_get("bound_to")?,
        expires: row.try_get("expires")?,
        created: row.try_get("created")?,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, is_staff, is_superuser, created";
const FILE_COLUMNS: &str = "id, owner_id, object_key, name, size, content_type, sha256, created";

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
        Ok(Self { pool, postgres, fast: None })
    }

    /// Opens the fast read path (SQLite files only; see [`FastReads`]). Called after the
    /// migrations, so the file and its tables exist.
    fn open_fast_reads(&mut self, url: &str) {
        if self.postgres {
            return;
        }
        if let Some(path) = sqlite_path(url) {
            match FastReads::open(&path, 4) {
                Ok(fast) => self.fast = Some(Arc::new(fast)),
                Err(e) => tracing::warn!(error = %e, "SQLite fast reads unavailable; using sqlx for every query"),
            }
        }
    }

    /// Connects, applies the migrations, and opens the fast read path on SQLite.
    pub async fn open(url: &str) -> DbResult<Self> {
        let mut db = Self::connect(url).await?;
        db.migrate().await?;
        db.open_fast_reads(url);
        Ok(db)
    }

    /// Applies the migrations not yet applied. Safe to run from several instances at once on
    /// PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> DbResult<Vec<i64>> {
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
                .collect::<DbResult<_>>()?;
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
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
        result
    }

    /// A trivial query: the database answers.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Closes every connection; later queries fail (used at shutdown, and by tests of a
    /// database that went away).
    pub async fn close(&self) {
        if let Some(fast) = &self.fast {
            fast.closed.store(true, Ordering::Release);
        }
        self.pool.close().await;
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    // Users.

    /// Creates a user.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        staff: bool,
        superuser: bool,
    ) -> DbResult<UserRow> {
        let row = UserRow {
            id: new_id(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            is_staff: staff || superuser,
            is_superuser: superuser,
            created: now(),
        };
        sqlx::query("INSERT INTO users (id, username, password_hash, is_staff, is_superuser, created) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&row.id)
            .bind(&row.username)
            .bind(&row.password_hash)
            .bind(row.is_staff as i64)
            .bind(row.is_superuser as i64)
            .bind(row.created)
            .execute(&self.pool)
            .await?;
        Ok(row)
    }

    /// A user by name.
    pub async fn user_by_name(&self, username: &str) -> DbResult<Option<UserRow>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &str) -> DbResult<Option<UserRow>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> DbResult<Vec<UserRow>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user)
            .collect()
    }

    /// Sets a user's password hash and ends their sessions. `false` if no such user.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        let Some(u) = self.user_by_name(username).await? else { return Ok(false) };
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(&u.id)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(&u.id).execute(&self.pool).await?;
        Ok(true)
    }

    /// Deletes a user with their sessions, tokens and file records. `false` if no such user.
    pub async fn delete_user(&self, username: &str) -> DbResult<bool> {
        Ok(sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    // API tokens (only their SHA-256 is stored).

    /// Stores a token's hash for a user.
    pub async fn create_token(&self, user_id: &str, name: &str, token_hash: &str) -> DbResult<String> {
        let id = new_id();
        sqlx::query("INSERT INTO tokens (id, user_id, name, token_hash, created) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(user_id)
            .bind(name)
            .bind(token_hash)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// The user a token hash belongs to.
    pub async fn user_by_token(&self, token_hash: &str) -> DbResult<Option<UserRow>> {
        let sql = "SELECT u.id, u.username, u.password_hash, u.is_staff, u.is_superuser, u.created FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1";
        if let Some(fast) = &self.fast {
            return fast.with(|c| c.prepare_cached(sql)?.query_row([token_hash], user_of).optional());
        }
        sqlx::query(sql).bind(token_hash).fetch_optional(&self.pool).await?.as_ref().map(user).transpose()
    }

    /// Revokes a user's token by name, or every token of the user with `None`. Returns how many.
    pub async fn revoke_tokens(&self, user_id: &str, name: Option<&str>) -> DbResult<u64> {
        let done = match name {
            Some(name) => {
                sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND name = $2")
                    .bind(user_id)
                    .bind(name)
                    .execute(&self.pool)
                    .await?
            }
            None => sqlx::query("DELETE FROM tokens WHERE user_id = $1").bind(user_id).execute(&self.pool).await?,
        };
        Ok(done.rows_affected())
    }

    // Sessions (only the id's SHA-256 is stored).

    /// Stores a session.
    pub async fn create_session(&self, id_hash: &str, user_id: &str, csrf: &str, expires: i64) -> DbResult<()> {
        sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf, expires) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(user_id)
            .bind(csrf)
            .bind(expires)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// The user and CSRF token of a live session.
    pub async fn session(&self, id_hash: &str) -> DbResult<Option<(UserRow, String)>> {
        let sql = "SELECT u.id, u.username, u.password_hash, u.is_staff, u.is_superuser, u.created, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires > $2";
        if let Some(fast) = &self.fast {
            return fast.with(|c| {
                c.prepare_cached(sql)?
                    .query_row(rusqlite::params![id_hash, now()], |row| {
                        Ok((user_of(row)?, row.get::<_, String>("csrf")?))
                    })
                    .optional()
            });
        }
        match sqlx::query(sql).bind(id_hash).bind(now()).fetch_optional(&self.pool).await? {
            Some(row) => Ok(Some((user(&row)?, row.try_get("csrf")?))),
            None => Ok(None),
        }
    }

    /// Ends a session.
    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await.map(|_| ())
    }

    /// Forgets expired sessions and revocations.
    pub async fn purge_expired(&self) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE expires <= $1").bind(now()).execute(&self.pool).await?;
        sqlx::query("DELETE FROM share_revoked WHERE expires <= $1").bind(now()).execute(&self.pool).await?;
        Ok(())
    }

    // Files.

    /// Records a stored file.
    pub async fn insert_file(&self, row: &FileRow) -> DbResult<()> {
        sqlx::query("INSERT INTO files (id, owner_id, object_key, name, size, content_type, sha256, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&row.id)
            .bind(&row.owner_id)
            .bind(&row.object_key)
            .bind(&row.name)
            .bind(row.size)
            .bind(&row.content_type)
            .bind(&row.sha256)
            .bind(row.created)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// A file by id, within the scope of `owner` (`None`: any owner, for staff).
    pub async fn file(&self, id: &str, owner: Option<&str>) -> DbResult<Option<FileRow>> {
        if let Some(fast) = &self.fast {
            return fast.with(|c| match owner {
                Some(owner) => c
                    .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1 AND owner_id = ?2"))?
                    .query_row([id, owner], file_of)
                    .optional(),
                None => c
                    .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))?
                    .query_row([id], file_of)
                    .optional(),
            });
        }
        let row = match owner {
            Some(owner) => {
                sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND owner_id = $2"))
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(file).transpose()
    }

    /// A file by its storage key.
    pub async fn file_by_key(&self, key: &str) -> DbResult<Option<FileRow>> {
        sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE object_key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(file)
            .transpose()
    }

    /// Files newest first, of `owner` (`None`: everyone's), with owners' names; and the total.
    pub async fn files(&self, owner: Option<&str>, limit: i64, offset: i64) -> DbResult<(Vec<(FileRow, String)>, i64)> {
        let (filter, total_sql) = match owner {
            Some(_) => ("WHERE f.owner_id = $1", "SELECT COUNT(*) AS n FROM files WHERE owner_id = $1"),
            None => ("WHERE $1 = $1", "SELECT COUNT(*) AS n FROM files WHERE $1 = $1"),
        };
        let scope = owner.unwrap_or("");
        let sql = format!(
            "SELECT f.id, f.owner_id, f.object_key, f.name, f.size, f.content_type, f.sha256, f.created, u.username FROM files f JOIN users u ON u.id = f.owner_id {filter} ORDER BY f.created DESC, f.id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql).bind(scope).bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let files =
            rows.iter().map(|r| Ok((file(r)?, r.try_get::<String, _>("username")?))).collect::<DbResult<Vec<_>>>()?;
        let total: i64 = sqlx::query(total_sql).bind(scope).fetch_one(&self.pool).await?.try_get("n")?;
        Ok((files, total))
    }

    /// Deletes a file's record.
    pub async fn delete_file(&self, id: &str) -> DbResult<bool> {
        Ok(sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    // Share links.

    /// Records an issued link.
    pub async fn insert_link(&self, row: &LinkRow) -> DbResult<()> {
        sqlx::query("INSERT INTO share_links (link_id, file_id, issued_by, bound_to, expires, created) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&row.link_id)
            .bind(&row.file_id)
            .bind(&row.issued_by)
            .bind(&row.bound_to)
            .bind(row.expires)
            .bind(row.created)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// The live (unexpired, unrevoked) links of a file.
    pub async fn live_links(&self, file_id: &str) -> DbResult<Vec<LinkRow>> {
        let sql = "SELECT link_id, file_id, issued_by, bound_to, expires, created FROM share_links l
                   WHERE file_id = $1 AND expires > $2 AND NOT EXISTS (SELECT 1 FROM share_revoked r WHERE r.link_id = l.link_id)
                   ORDER BY created DESC";
        sqlx::query(sql).bind(file_id).bind(now()).fetch_all(&self.pool).await?.iter().map(link).collect()
    }

    /// A link by id.
    pub async fn link(&self, link_id: &str) -> DbResult<Option<LinkRow>> {
        sqlx::query(
            "SELECT link_id, file_id, issued_by, bound_to, expires, created FROM share_links WHERE link_id = $1",
        )
        .bind(link_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link)
        .transpose()
    }

    /// The epoch of a share target.
    pub async fn epoch(&self, target: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT epoch FROM share_epochs WHERE target = $1")
            .bind(target)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("epoch")).transpose().map(|e| e.unwrap_or(0))
    }

    /// Bumps the epoch of a share target; returns the new one.
    pub async fn bump_epoch(&self, target: &str) -> DbResult<i64> {
        sqlx::query("INSERT INTO share_epochs (target, epoch) VALUES ($1, 1) ON CONFLICT (target) DO UPDATE SET epoch = share_epochs.epoch + 1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        self.epoch(target).await
    }

    /// Whether a link was revoked.
    pub async fn is_revoked(&self, link_id: &str) -> DbResult<bool> {
        Ok(sqlx::query("SELECT 1 AS x FROM share_revoked WHERE link_id = $1")
            .bind(link_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Revokes a link.
    pub async fn revoke_link(&self, link_id: &str, expires: i64) -> DbResult<()> {
        sqlx::query("INSERT INTO share_revoked (link_id, expires) VALUES ($1, $2) ON CONFLICT (link_id) DO NOTHING")
            .bind(link_id)
            .bind(expires)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Appends an audit event.
    pub async fn share_event(
        &self,
        kind: &str,
        link_id: Option<&str>,
        target: Option<&str>,
        detail: &str,
    ) -> DbResult<()> {
        sqlx::query("INSERT INTO share_events (id, at, kind, link_id, target, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(new_id())
            .bind(now())
            .bind(kind)
            .bind(link_id)
            .bind(target)
            .bind(detail)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// The audit events of a link, oldest first: (kind, detail).
    pub async fn share_events(&self, link_id: &str) -> DbResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT kind, detail FROM share_events WHERE link_id = $1 ORDER BY at, id")
            .bind(link_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("detail")?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_lookups_take_the_fast_path_and_agree_with_sqlx() {
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
        };
        db.insert_file(&file).await.unwrap();

        let slow = Db { fast: None, ..db.clone() };
        for d in [&db, &slow] {
            assert_eq!(d.user_by_token("tokenhash").await.unwrap().as_ref(), Some(&user));
            assert_eq!(d.user_by_token("other").await.unwrap(), None);
            assert_eq!(d.session("sessionhash").await.unwrap(), Some((user.clone(), "csrf".to_owned())));
            assert_eq!(d.session("expiredhash").await.unwrap(), None, "expired sessions are not found");
            assert_eq!(d.file(&file.id, Some(&user.id)).await.unwrap().as_ref(), Some(&file));
            assert_eq!(d.file(&file.id, Some("someone else")).await.unwrap(), None);
            assert_eq!(d.file(&file.id, None).await.unwrap().as_ref(), Some(&file));
        }
        db.close().await;
        assert!(db.user_by_token("tokenhash").await.is_err(), "a closed database answers nothing, fast path included");
    }
}
