//! Quotas: usage, per-user limits, and reservations taken atomically.
//!
//! Usage is kept on the user's row (`used_bytes`, `used_files`), changed in the transaction of
//! every write that adds, removes, moves or marks removed a file record ([`count_in`]), so it
//! moves with the records and a million of them are never summed. What must be atomic — "is there room for this upload, then hold it" and "record the
//! file, then give its room back" — runs in a transaction that first writes the user's row, which
//! serialises them per user (a row lock on PostgreSQL, the write lock on SQLite) on every
//! instance sharing the database.

use sqlx::Row;

use super::files::{INSERT_FILE, file_args};
use super::rows::FileRow;
use super::{Arg, Db, DbResult, bind, now};

/// A user's limits: `None` for none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in all.
    pub bytes: Option<i64>,
    /// Files in all.
    pub files: Option<i64>,
}

/// What a user holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The sum of their files' sizes.
    pub bytes: i64,
    /// Their files.
    pub files: i64,
    /// Bytes held by their uploads in progress.
    pub reserved_bytes: i64,
    /// Their uploads in progress.
    pub reserved_files: i64,
}

impl Usage {
    /// Whether `bytes` more in one more file fit `limits`.
    pub fn admits(&self, limits: Limits, bytes: i64) -> bool {
        let fits_bytes = limits.bytes.is_none_or(|max| self.bytes + self.reserved_bytes + bytes <= max);
        let fits_files = limits.files.is_none_or(|max| self.files + self.reserved_files < max);
        fits_bytes && fits_files
    }
}

/// The per-user override of one limit: `NULL` the default, `-1` none.
fn effective(override_: Option<i64>, default: Option<i64>) -> Option<i64> {
    match override_ {
        None => default,
        Some(n) if n < 0 => None,
        Some(n) => Some(n),
    }
}

// PostgreSQL's SUM of BIGINT is NUMERIC: cast back.
// The files from the user's counters; the uploads in progress summed (there are few).
const USAGE: &str = "SELECT u.used_bytes AS bytes, u.used_files AS files, r.reserved_bytes, r.reserved_files FROM \
     (SELECT used_bytes, used_files FROM users WHERE id = $1) u, \
     (SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS reserved_bytes, COUNT(*) AS reserved_files \
      FROM upload_reservations WHERE user_id = $1 AND expires > $2) r";

/// Adds `bytes` in `files` files to what `user_id` holds, in `tx` (negative to take away).
pub(super) async fn count_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    bytes: i64,
    files: i64,
) -> DbResult<()> {
    let sql = "UPDATE users SET used_bytes = used_bytes + $1, used_files = used_files + $2 WHERE id = $3";
    bind(sql, &[Arg::Int(bytes), Arg::Int(files), Arg::Text(user_id)]).execute(&mut **tx).await?;
    Ok(())
}

fn usage_of(row: &sqlx::any::AnyRow) -> sqlx::Result<Usage> {
    Ok(Usage {
        bytes: row.try_get("bytes")?,
        files: row.try_get("files")?,
        reserved_bytes: row.try_get("reserved_bytes")?,
        reserved_files: row.try_get("reserved_files")?,
    })
}

/// Writes the user's row, so that the transaction holds it until it ends (every reservation and
/// commit of one user waits here for the others), and reads their limits.
async fn lock_user(tx: &mut sqlx::Transaction<'_, sqlx::Any>, user_id: &str, defaults: Limits) -> DbResult<Limits> {
    bind("UPDATE users SET id = id WHERE id = $1", &[Arg::Text(user_id)]).execute(&mut **tx).await?;
    let row = bind("SELECT quota_bytes, quota_files FROM users WHERE id = $1", &[Arg::Text(user_id)])
        .fetch_one(&mut **tx)
        .await?;
    Ok(Limits {
        bytes: effective(row.try_get("quota_bytes")?, defaults.bytes),
        files: effective(row.try_get("quota_files")?, defaults.files),
    })
}

/// The user's usage, read in the transaction.
async fn usage_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, user_id: &str) -> DbResult<Usage> {
    Ok(usage_of(&bind(USAGE, &[Arg::Text(user_id), Arg::Int(now())]).fetch_one(&mut **tx).await?)?)
}

/// The outcome of [`Db::reserve`] and [`Db::insert_file_reserved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Done.
    Admitted,
    /// Over a limit: nothing changed. The usage and limits that refused it.
    Refused(Usage, Limits),
}

impl Db {
    /// A user's usage now (expired reservations do not count).
    pub async fn usage(&self, user_id: &str) -> DbResult<Usage> {
        let row = bind(USAGE, &[Arg::Text(user_id), Arg::Int(now())]).fetch_one(&self.pool).await?;
        Ok(usage_of(&row)?)
    }

    /// A user's limits, their overrides applied over `defaults`.
    pub async fn limits(&self, user_id: &str, defaults: Limits) -> DbResult<Limits> {
        let (bytes, files) = self.overrides(user_id).await?;
        Ok(Limits { bytes: effective(bytes, defaults.bytes), files: effective(files, defaults.files) })
    }

    /// A user's overrides as stored (`None`: the default; `-1`: no limit).
    pub async fn overrides(&self, user_id: &str) -> DbResult<(Option<i64>, Option<i64>)> {
        let row = bind("SELECT quota_bytes, quota_files FROM users WHERE id = $1", &[Arg::Text(user_id)])
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => (row.try_get("quota_bytes")?, row.try_get("quota_files")?),
            None => (None, None),
        })
    }

    /// Every user's id and name, by name.
    pub async fn user_names(&self) -> DbResult<Vec<(String, String)>> {
        let rows = bind("SELECT id, username FROM users ORDER BY username", &[]).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("username")?))).collect()
    }

    /// Sets a user's overrides (`None`: the default; `Some(-1)`: no limit).
    pub async fn set_limits(&self, user_id: &str, bytes: Option<i64>, files: Option<i64>) -> DbResult<()> {
        let sql = "UPDATE users SET quota_bytes = $1, quota_files = $2 WHERE id = $3";
        bind(sql, &[]).bind(bytes).bind(files).bind(user_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Holds `bytes` (and one file) for upload `id` of `user_id` until `expires`, if the user's
    /// limits leave room for it beside their files and their other uploads in progress.
    pub async fn reserve(
        &self,
        user_id: &str,
        id: &str,
        bytes: i64,
        expires: i64,
        defaults: Limits,
    ) -> DbResult<Admission> {
        let mut tx = self.pool.begin().await?;
        let limits = lock_user(&mut tx, user_id, defaults).await?;
        let usage = usage_in(&mut tx, user_id).await?;
        if !usage.admits(limits, bytes) {
            tx.rollback().await?;
            return Ok(Admission::Refused(usage, limits));
        }
        bind(
            "INSERT INTO upload_reservations (id, user_id, bytes, expires) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, expires = excluded.expires",
            &[Arg::Text(id), Arg::Text(user_id), Arg::Int(bytes), Arg::Int(expires)],
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Admission::Admitted)
    }

    /// Gives a reservation's room back.
    pub async fn release(&self, id: &str) -> DbResult<()> {
        self.execute("DELETE FROM upload_reservations WHERE id = $1", &[Arg::Text(id)]).await?;
        Ok(())
    }

    /// Forgets expired reservations (of uploads whose process went away); returns how many.
    pub async fn purge_reservations(&self) -> DbResult<u64> {
        self.execute("DELETE FROM upload_reservations WHERE expires <= $1", &[Arg::Int(now())]).await
    }

    /// Records a stored file and gives its reservation back, in one transaction — if the file
    /// still fits the limits beside everything else the user holds (its own reservation not
    /// counted); otherwise nothing changes.
    pub async fn insert_file_reserved(
        &self,
        row: &FileRow,
        reservation: &str,
        defaults: Limits,
    ) -> DbResult<Admission> {
        let mut tx = self.pool.begin().await?;
        let limits = lock_user(&mut tx, &row.owner_id, defaults).await?;
        bind("DELETE FROM upload_reservations WHERE id = $1", &[Arg::Text(reservation)]).execute(&mut *tx).await?;
        let usage = usage_in(&mut tx, &row.owner_id).await?;
        if !usage.admits(limits, row.size) {
            tx.rollback().await?;
            return Ok(Admission::Refused(usage, limits));
        }
        bind(INSERT_FILE, &file_args(row)).execute(&mut *tx).await?;
        count_in(&mut tx, &row.owner_id, row.size, 1).await?;
        tx.commit().await?;
        Ok(Admission::Admitted)
    }
}
