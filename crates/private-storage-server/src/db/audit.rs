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

const SELECT: &str = "SELECT id, at, kind, actor, user_id, file_id, owner_id, link_id, route, delivery, status, \
     byte_range, bytes, client, user_agent, request_id, detail FROM audit_events";

/// Parameters per event.
const ARGS: usize = 18;
/// Events per statement, at most: one statement (one round trip to the database) per 64.
const ROWS_PER_INSERT: usize = 64;

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
    /// Writes events in one transaction: on SQLite one prepared statement per event, on the
    /// blocking pool; on PostgreSQL [`ROWS_PER_INSERT`] per statement.
    pub async fn insert_audit(&self, rows: Arc<Vec<AuditRow>>) -> DbResult<()> {
        if let Some(fast) = self.fast.clone() {
            return tokio::task::spawn_blocking(move || {
                fast.write(|tx| {
                    let mut insert = tx.prepare_cached(&insert_sql(1))?;
                    for row in rows.iter() {
                        insert.execute(rusqlite::params_from_iter(args(row)))?;
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
        tx.commit().await?;
        Ok(())
    }

    /// Events matching `filter`, newest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> DbResult<Vec<AuditRow>> {
        let mut clauses = Vec::new();
        let mut args = Vec::new();
        let texts = [
            ("owner_id", filter.owner_id.as_deref()),
            ("kind", filter.kind.as_deref()),
            ("actor", filter.actor.as_deref()),
            ("file_id", filter.file_id.as_deref()),
            ("link_id", filter.link_id.as_deref()),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                args.push(Arg::Text(value));
                clauses.push(format!("{column} = ${}", args.len()));
            }
        }
        for (op, value) in [(">=", filter.since), ("<", filter.until)] {
            if let Some(value) = value {
                args.push(Arg::Int(value));
                clauses.push(format!("at {op} ${}", args.len()));
            }
        }
        args.push(Arg::Int(filter.limit));
        let filter_sql = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let sql = format!("{SELECT}{filter_sql} ORDER BY at DESC, id DESC LIMIT ${}", args.len());
        self.all(&sql, &args).await
    }

    /// Events from `since` (µs) on, oldest first, `limit` at a time after the event `after`
    /// (its time and id), for exports.
    pub async fn audit_page(&self, since: i64, after: Option<(i64, &str)>, limit: i64) -> DbResult<Vec<AuditRow>> {
        let (at, id) = after.unwrap_or((since - 1, ""));
        let sql = format!("{SELECT} WHERE at >= $1 AND (at > $2 OR (at = $2 AND id > $3)) ORDER BY at, id LIMIT $4");
        self.all(&sql, &[Arg::Int(since), Arg::Int(at), Arg::Text(id), Arg::Int(limit)]).await
    }

    /// Forgets audit events from before `cutoff` (µs); returns how many.
    pub async fn purge_audit(&self, cutoff: i64) -> DbResult<u64> {
        self.execute("DELETE FROM audit_events WHERE at < $1", &[Arg::Int(cutoff)]).await
    }
}
