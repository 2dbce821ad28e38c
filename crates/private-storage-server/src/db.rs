//! The database: SQLite (embedded default) or PostgreSQL (scale-out), through one portable
//! dialect (`$n` placeholders, `BIGINT` numbers and flags, `TEXT` ids).

use std::time::{SystemTime, UNIX_EPOCH};

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
        let options = AnyPoolOptions::new().max_connections(if postgres { 16 } else { 4 }).acquire_timeout(std::time::Duration::from_secs(5));
        let pool = if postgres {
            options.connect(url).await?
        } else {
            // SQLite: one writer at a time; wait for it instead of failing, and enforce foreign keys.
            options
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;").await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?
        };
        Ok(Self { pool, postgres })
    }

    /// Applies the migrations not yet applied. Safe to run from several instances at once on
    /// PostgreSQL (an advisory lock serialises them).
    pub async fn migrate(&self) -> DbResult<Vec<i64>> {
        let mut conn = self.pool.acquire().await?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_lock(7245119)").execute(&mut *conn).await?;
        }
        let result = async {
            sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)").execute(&mut *conn).await?;
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
                sqlx::query("INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)").bind(version).bind(now()).execute(&mut *tx).await?;
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
        self.pool.close().await;
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    // Users.

    /// Creates a user.
    pub async fn create_user(&self, username: &str, password_hash: &str, staff: bool, superuser: bool) -> DbResult<UserRow> {
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
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1")).bind(username).fetch_optional(&self.pool).await?.as_ref().map(user).transpose()
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &str) -> DbResult<Option<UserRow>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?.as_ref().map(user).transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> DbResult<Vec<UserRow>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")).fetch_all(&self.pool).await?.iter().map(user).collect()
    }

    /// Sets a user's password hash and ends their sessions. `false` if no such user.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        let Some(u) = self.user_by_name(username).await? else { return Ok(false) };
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2").bind(password_hash).bind(&u.id).execute(&self.pool).await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(&u.id).execute(&self.pool).await?;
        Ok(true)
    }

    /// Deletes a user with their sessions, tokens and file records. `false` if no such user.
    pub async fn delete_user(&self, username: &str) -> DbResult<bool> {
        Ok(sqlx::query("DELETE FROM users WHERE username = $1").bind(username).execute(&self.pool).await?.rows_affected() > 0)
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
        sqlx::query(sql).bind(token_hash).fetch_optional(&self.pool).await?.as_ref().map(user).transpose()
    }

    /// Revokes a user's token by name, or every token of the user with `None`. Returns how many.
    pub async fn revoke_tokens(&self, user_id: &str, name: Option<&str>) -> DbResult<u64> {
        let done = match name {
            Some(name) => sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND name = $2").bind(user_id).bind(name).execute(&self.pool).await?,
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
        let row = match owner {
            Some(owner) => sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND owner_id = $2")).bind(id).bind(owner).fetch_optional(&self.pool).await?,
            None => sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?,
        };
        row.as_ref().map(file).transpose()
    }

    /// A file by its storage key.
    pub async fn file_by_key(&self, key: &str) -> DbResult<Option<FileRow>> {
        sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE object_key = $1")).bind(key).fetch_optional(&self.pool).await?.as_ref().map(file).transpose()
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
        let files = rows.iter().map(|r| Ok((file(r)?, r.try_get::<String, _>("username")?))).collect::<DbResult<Vec<_>>>()?;
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
        sqlx::query("SELECT link_id, file_id, issued_by, bound_to, expires, created FROM share_links WHERE link_id = $1")
            .bind(link_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(link)
            .transpose()
    }

    /// The epoch of a share target.
    pub async fn epoch(&self, target: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT epoch FROM share_epochs WHERE target = $1").bind(target).fetch_optional(&self.pool).await?;
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
        Ok(sqlx::query("SELECT 1 AS x FROM share_revoked WHERE link_id = $1").bind(link_id).fetch_optional(&self.pool).await?.is_some())
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
    pub async fn share_event(&self, kind: &str, link_id: Option<&str>, target: Option<&str>, detail: &str) -> DbResult<()> {
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
        let rows = sqlx::query("SELECT kind, detail FROM share_events WHERE link_id = $1 ORDER BY at, id").bind(link_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("detail")?))).collect()
    }
}
