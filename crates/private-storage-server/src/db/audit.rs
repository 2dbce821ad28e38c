//! The audit trail's rows: written in batches by the domain's audit writer, read with filters.

use std::sync::Arc;

use super::rows::{Columns, FromRow};
use super::{Arg, Db, DbError, DbResult};

/// One audit event. `file_key` is only an input: an event that knows its file by key (a
/// download under `/private-media/`) gets the file's id and owner looked up as it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct AuditRow {
    pub id: String,
    /// Microseconds since the epoch.
    pub at: i64,
    pub kind: String,
    /// `user:<name>`, `link:<id>`, `anonymous`, `cli`, `scanner`.
    pub actor: String,
    pub user_id: Option<String>,
    pub file_id: Option<String>,
    pub owner_id: Option<String>,
    pub link_id: Option<String>,
    pub route: Option<String>,
    pub delivery: Option<String>,
    pub status: Option<i64>,
    pub byte_range: Option<String>,
    pub bytes: Option<i64>,
    pub client: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
    #[serde(skip)]
    pub file_key: Option<String>,
}

impl FromRow for AuditRow {
    fn from_row<C: Columns>(row: &C) -> Result<Self, C::Error> {
        Ok(Self {
            id: row.text("id")?,
            at: row.int("at")?,
            kind: row.text("kind")?,
            actor: row.text("actor")?,
            user_id: row.opt_text("user_id")?,
            file_id: row.opt_text("file_id")?,
            owner_id: row.opt_text("owner_id")?,
            link_id: row.opt_text("link_id")?,
            route: row.opt_text("route")?,
            delivery: row.opt_text("delivery")?,
            status: row.opt_int("status")?,
            byte_range: row.opt_text("byte_range")?,
            bytes: row.opt_int("bytes")?,
            client: row.opt_text("client")?,
            user_agent: row.opt_text("user_agent")?,
            request_id: row.opt_text("request_id")?,
            detail: row.opt_text("detail")?,
            file_key: None,
        })
    }
}

const COLUMNS: [&str; 17] = [
    "id",
    "at",
    "kind",
    "actor",
    "user_id",
    "file_id",
    "owner_id",
    "link_id",
    "route",
    "delivery",
    "status",
    "byte_range",
    "bytes",
    "client",
    "user_agent",
    "request_id",
    "detail",
];

/// `SELECT <every column> FROM audit_events`.
fn select() -> String {
    format!("SELECT {} FROM audit_events", COLUMNS.join(", "))
}

/// SQLite: how long the trail's rows may wait to be indexed by file (see migration 0011). The
/// longer, the more rows of one file share an index page in a batch; a query by file reads
/// the rows not indexed yet one by one, ten seconds of them at most (measured: 2 s batches cost
/// 9 µs more per download than 10 s ones with 100,000 files downloaded at random).
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// SQLite: indexes by file the rows after the mark, sorted (so that a file's rows of the
/// batch land on its page together); then [`MARK_LAST_ROW`]. Run in a write transaction, whose
/// lock makes rowids grow in commit order: no row is passed over.
const INDEX_BY_FILE: &str = "INSERT INTO audit_file_index (file_id, at, id) \
     SELECT file_id, at, id FROM audit_events \
     WHERE rowid > (SELECT last_rowid FROM audit_index_state) AND file_id IS NOT NULL ORDER BY file_id, at, id";
/// SQLite: the mark after the last row (every row up to it is indexed).
const MARK_LAST_ROW: &str =
    "UPDATE audit_index_state SET last_rowid = COALESCE((SELECT MAX(rowid) FROM audit_events), 0)";

/// Parameters per event.
const ARGS: usize = 18;
/// Events per statement, at most: one statement (one round trip to the database) per 64.
const ROWS_PER_INSERT: usize = 64;
/// SQLite: events per statement. A statement opens and closes its cursors (one per B-tree)
/// once for all its rows; its bound texts' buffers are reused from one execution to the next
/// within a transaction, and freed when it goes back to rusqlite's cache: small enough to be
/// executed many times per batch (`bench/instructions.sh`, instructions per download: 1 row
/// 101.9k, 64 rows 100.3k; then, with other changes, 64 rows 98.0k, 16 rows 94.4k, 8 rows
/// 93.0k).
pub(super) const SQLITE_ROWS_PER_INSERT: usize = 8;

/// The statement inserting `rows` events. The file of an event known by key is looked up as
/// it is written; its owner from its id.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_events (id, at, kind, actor, user_id, file_id, owner_id, link_id, route, \
         delivery, status, byte_range, bytes, client, user_agent, request_id, detail) VALUES ",
    );
    for row in 0..rows {
        let n = |i: usize| row * ARGS + i;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, COALESCE(${f}, (SELECT id FROM files WHERE object_key = ${k})), \
             COALESCE(${}, (SELECT owner_id FROM files WHERE id = COALESCE(${f}, (SELECT id FROM files WHERE object_key = ${k})))), \
             ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            n(1), n(2), n(3), n(4), n(5), n(8), n(9), n(10), n(11), n(12), n(13), n(14), n(15), n(16), n(17), n(18),
            f = n(6),
            k = n(7),
        ));
    }
    sql
}

/// One event's parameters, in the order of [`insert_sql`].
fn args(row: &AuditRow) -> [Arg<'_>; ARGS] {
    [
        Arg::Text(&row.id),
        Arg::Int(row.at),
        Arg::Text(&row.kind),
        Arg::Text(&row.actor),
        Arg::OptText(row.user_id.as_deref()),
        Arg::OptText(row.file_id.as_deref()),
        Arg::OptText(row.file_key.as_deref()),
        Arg::OptText(row.owner_id.as_deref()),
        Arg::OptText(row.link_id.as_deref()),
        Arg::OptText(row.route.as_deref()),
        Arg::OptText(row.delivery.as_deref()),
        Arg::OptInt(row.status),
        Arg::OptText(row.byte_range.as_deref()),
        Arg::OptInt(row.bytes),
        Arg::OptText(row.client.as_deref()),
        Arg::OptText(row.user_agent.as_deref()),
        Arg::OptText(row.request_id.as_deref()),
        Arg::OptText(row.detail.as_deref()),
    ]
}

/// Which events to read: every filter is optional; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events on files of this owner (a user's own view).
    pub owner_id: Option<String>,
    /// Only this kind (`download`, `login_failed`...).
    pub kind: Option<String>,
    /// Only this actor (`user:ada`, `link:…`, `anonymous`).
    pub actor: Option<String>,
    /// Only this file.
    pub file_id: Option<String>,
    /// Only this share link.
    pub link_id: Option<String>,
    /// From this time on (µs).
    pub since: Option<i64>,
    /// Before this time (µs).
    pub until: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

impl Db {
    /// Gives the events that name their file by id the file's owner, where its record is held
    /// in memory: the insert then need not look it up (an index search and two cursors per
    /// download). The others are looked up as they are written.
    pub(crate) fn known_owners(&self, rows: &mut [AuditRow]) {
        for row in rows.iter_mut().filter(|row| row.owner_id.is_none()) {
            if let Some(file) = row.file_id.as_deref().and_then(|id| self.caches.held_file(id)) {
                row.owner_id = Some(file.owner_id.clone());
            }
        }
    }

    /// Writes events in one transaction: on SQLite [`SQLITE_ROWS_PER_INSERT`] per prepared
    /// statement (and one row at a time for the rest), on the blocking pool; on PostgreSQL
    /// [`ROWS_PER_INSERT`] per statement.
    pub async fn insert_audit(&self, rows: Arc<Vec<AuditRow>>) -> DbResult<()> {
        let index = !self.postgres && self.audit_index_due();
        if let Some(fast) = self.fast.clone() {
            return tokio::task::spawn_blocking(move || {
                fast.write(|tx| {
                    let chunks = rows.chunks_exact(SQLITE_ROWS_PER_INSERT);
                    let rest = chunks.remainder();
                    if chunks.len() > 0 {
                        static SOME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                        let mut insert = tx.prepare_cached(SOME.get_or_init(|| insert_sql(SQLITE_ROWS_PER_INSERT)))?;
                        for chunk in chunks {
                            insert.execute(rusqlite::params_from_iter(chunk.iter().flat_map(args)))?;
                        }
                    }
                    if !rest.is_empty() {
                        static ONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                        let mut insert = tx.prepare_cached(ONE.get_or_init(|| insert_sql(1)))?;
                        for row in rest {
                            insert.execute(rusqlite::params_from_iter(args(row)))?;
                        }
                    }
                    if index {
                        tx.execute(INDEX_BY_FILE, [])?;
                        tx.execute(MARK_LAST_ROW, [])?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| DbError::Unavailable(e.into()))?;
        }
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let args: Vec<Arg<'_>> = chunk.iter().flat_map(args).collect();
            static FULL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = match chunk.len() {
                ROWS_PER_INSERT => {
                    std::borrow::Cow::Borrowed(FULL.get_or_init(|| insert_sql(ROWS_PER_INSERT)).as_str())
                }
                n => std::borrow::Cow::Owned(insert_sql(n)),
            };
            super::bind(&sql, &args).execute(&mut *tx).await?;
        }
        if index {
            index_by_file(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// SQLite: whether the rows written since the last time should be indexed by file now
    /// (every [`INDEX_EVERY`]; the first batch of a process indexes what an earlier one left).
    fn audit_index_due(&self) -> bool {
        let mut last = self.audit_indexed.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= INDEX_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Events matching `filter`, newest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> DbResult<Vec<AuditRow>> {
        let (sql, args) = self.audit_query(filter);
        self.all(&sql, &args).await
    }

    /// The statement of [`Db::audit_events`] and its parameters.
    pub(super) fn audit_query<'a>(&self, filter: &'a AuditFilter) -> (String, Vec<Arg<'a>>) {
        let mut args = Vec::new();
        let texts = [
            ("owner_id", filter.owner_id.as_deref()),
            ("kind", filter.kind.as_deref()),
            ("actor", filter.actor.as_deref()),
            ("file_id", filter.file_id.as_deref()),
            ("link_id", filter.link_id.as_deref()),
        ];
        let mut clauses = Vec::new();
        for (column, value) in texts {
            if let Some(value) = value {
                args.push(Arg::Text(value));
                clauses.push((column, "=", args.len()));
            }
        }
        for (op, value) in [(">=", filter.since), ("<", filter.until)] {
            if let Some(value) = value {
                args.push(Arg::Int(value));
                clauses.push(("at", op, args.len()));
            }
        }
        args.push(Arg::Int(filter.limit));
        let limit = args.len();
        // `WHERE` with every clause, each column named as `name` gives it, and `extra`.
        let filter_sql = |name: &dyn Fn(&str) -> String, extra: &str| {
            let mut all: Vec<String> = clauses.iter().map(|(c, op, n)| format!("{} {op} ${n}", name(c))).collect();
            all.extend((!extra.is_empty()).then(|| extra.to_owned()));
            if all.is_empty() { String::new() } else { format!(" WHERE {}", all.join(" AND ")) }
        };
        let bare = |c: &str| c.to_owned();
        // `+column`: no index on it is used, so that the rows after the mark are read by rowid
        // (ten seconds of them at most), not the whole trail by time or owner.
        let unindexed = |c: &str| format!("+{c}");
        let sql = if filter.file_id.is_some() && !self.postgres {
            // A file's rows: those indexed by file (see migration 0011), newest first from
            // the index, and those written since, read one by one — in one statement, so one
            // snapshot: a row indexed meanwhile is found once, never missed.
            let in_index = |c: &str| match c {
                "file_id" | "at" => format!("i.{c}"),
                c => format!("e.{c}"),
            };
            // CROSS JOIN: SQLite reads the index first, in its order, and stops at the limit.
            let columns: Vec<String> = COLUMNS.iter().map(|c| format!("e.{c} AS {c}")).collect();
            let indexed = format!(
                "SELECT {} FROM audit_file_index i CROSS JOIN audit_events e ON e.id = i.id{} \
                 ORDER BY i.at DESC, i.id DESC LIMIT ${limit}",
                columns.join(", "),
                filter_sql(&in_index, "")
            );
            let recent = format!(
                "{}{} ORDER BY at DESC, id DESC LIMIT ${limit}",
                select(),
                filter_sql(&unindexed, "rowid > (SELECT last_rowid FROM audit_index_state)")
            );
            format!(
                "SELECT * FROM ({indexed}) UNION ALL SELECT * FROM ({recent}) ORDER BY at DESC, id DESC LIMIT ${limit}"
            )
        } else {
            format!("{}{} ORDER BY at DESC, id DESC LIMIT ${limit}", select(), filter_sql(&bare, ""))
        };
        (sql, args)
    }

    /// Events from `since` (µs) on, oldest first, `limit` at a time after the event `after`
    /// (its time and id), for exports.
    pub async fn audit_page(&self, since: i64, after: Option<(i64, &str)>, limit: i64) -> DbResult<Vec<AuditRow>> {
        let (at, id) = after.unwrap_or((since - 1, ""));
        let sql =
            format!("{} WHERE at >= $1 AND (at > $2 OR (at = $2 AND id > $3)) ORDER BY at, id LIMIT $4", select());
        self.all(&sql, &[Arg::Int(since), Arg::Int(at), Arg::Text(id), Arg::Int(limit)]).await
    }

    /// Forgets audit events from before `cutoff` (µs); returns how many.
    pub async fn purge_audit(&self, cutoff: i64) -> DbResult<u64> {
        if self.postgres {
            return self.execute("DELETE FROM audit_events WHERE at < $1", &[Arg::Int(cutoff)]).await;
        }
        // SQLite: every row indexed first, so that the mark can be set to the last row left
        // (rowids after a purge start again from it: a mark beyond would pass new rows over).
        let mut tx = self.pool.begin().await?;
        index_by_file(&mut tx).await?;
        let purged = super::bind("DELETE FROM audit_events WHERE at < $1", &[Arg::Int(cutoff)])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        super::bind("DELETE FROM audit_file_index WHERE at < $1", &[Arg::Int(cutoff)]).execute(&mut *tx).await?;
        sqlx::query(MARK_LAST_ROW).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(purged)
    }

    /// SQLite: indexes by file every row written so far (the writer does it every
    /// [`INDEX_EVERY`]); PostgreSQL: nothing to do.
    pub async fn index_audit_now(&self) -> DbResult<()> {
        if self.postgres {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        index_by_file(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// [`INDEX_BY_FILE`] and [`MARK_LAST_ROW`] on a sqlx transaction.
async fn index_by_file(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> DbResult<()> {
    for statement in [INDEX_BY_FILE, MARK_LAST_ROW] {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    Ok(())
}
