//! File records.

use std::sync::Arc;

use super::rows::{FileRow, Number, OwnedFile, ScanState};
use sqlx::Row;

use super::quotas::count_in;
use super::{Arg, Change, Db, DbResult, bind, now};

const FILE: &str =
    "SELECT id, owner_id, object_key, name, size, content_type, sha256, created, scan, scan_detail FROM files";
/// Totals are counted up to this many files.
pub const COUNTED_UP_TO: i64 = 10_000;

const OWNED: &str = "SELECT f.id, f.owner_id, f.object_key, f.name, f.size, f.content_type, f.sha256, f.created, \
     f.scan, f.scan_detail, u.username FROM files f JOIN users u ON u.id = f.owner_id";

const FILE_BY_ID: &str = "SELECT id, owner_id, object_key, name, size, content_type, sha256, created, scan, scan_detail \
     FROM files WHERE id = $1";

pub(super) const INSERT_FILE: &str = "INSERT INTO files (id, owner_id, object_key, name, size, content_type, sha256, \
     created, scan, scan_detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// The parameters of [`INSERT_FILE`].
pub(super) fn file_args(row: &FileRow) -> [Arg<'_>; 10] {
    [
        Arg::Text(&row.id),
        Arg::Text(&row.owner_id),
        Arg::Text(&row.object_key),
        Arg::Text(&row.name),
        Arg::Int(row.size),
        Arg::Text(&row.content_type),
        Arg::Text(&row.sha256),
        Arg::Int(row.created),
        Arg::Text(row.scan.as_str()),
        Arg::OptText(row.scan_detail.as_deref()),
    ]
}

impl Db {
    /// Records a stored file.
    pub async fn insert_file(&self, row: &FileRow) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        bind(INSERT_FILE, &file_args(row)).execute(&mut *tx).await?;
        if row.scan != ScanState::Removed {
            count_in(&mut tx, &row.owner_id, row.size, 1).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A file by id, within the scope of `owner` (`None`: any owner).
    /// (Cached: see [`super::cache`].)
    pub async fn file(&self, id: &str, owner: Option<&str>) -> DbResult<Option<Arc<FileRow>>> {
        let file = match self.caches.file(id) {
            Some(file) => file,
            None => {
                let epoch = self.caches.epoch();
                let Some(file) = self.optional::<FileRow>(FILE_BY_ID, &[Arg::Text(id)]).await? else { return Ok(None) };
                let file = Arc::new(file);
                self.caches.keep_file(id, file.clone(), epoch);
                file
            }
        };
        Ok(owner.is_none_or(|owner| owner == file.owner_id).then_some(file))
    }

    /// A file by its storage key.
    pub async fn file_by_key(&self, key: &str) -> DbResult<Option<FileRow>> {
        self.optional(&format!("{FILE} WHERE object_key = $1"), &[Arg::Text(key)]).await
    }

    /// Files newest first, of `owner` (`None`: everyone's), with owners' names; and the total,
    /// counted up to one more than [`COUNTED_UP_TO`] (a million files are not counted for a
    /// page of fifty): a total above it means "more than that".
    pub async fn files(&self, owner: Option<&str>, limit: i64, offset: i64) -> DbResult<(Vec<OwnedFile>, i64)> {
        let (filter, total_sql) = match owner {
            Some(_) => (
                "WHERE f.owner_id = $1",
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM files WHERE owner_id = $1 LIMIT $2) c",
            ),
            None => ("WHERE $1 = $1", "SELECT COUNT(*) AS n FROM (SELECT 1 FROM files WHERE $1 = $1 LIMIT $2) c"),
        };
        let scope = Arg::Text(owner.unwrap_or(""));
        let sql = format!("{OWNED} {filter} ORDER BY f.created DESC, f.id DESC LIMIT $2 OFFSET $3");
        let files = self.all(&sql, &[scope, Arg::Int(limit), Arg::Int(offset)]).await?;
        let up_to = Arg::Int(COUNTED_UP_TO + 1);
        let total = self.optional::<Number>(total_sql, &[scope, up_to]).await?.map_or(0, |n| n.0);
        Ok((files, total))
    }

    /// Up to `limit` files newest first, of `owner` (`None`: everyone's), after `after` (the
    /// `(created, id)` of the last one of the previous batch): every batch costs the same, the
    /// millionth file included.
    pub async fn files_after(
        &self,
        owner: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> DbResult<Vec<OwnedFile>> {
        let scope = if owner.is_some() { "f.owner_id = $1" } else { "$1 = $1" };
        let owner = Arg::Text(owner.unwrap_or(""));
        match after {
            None => {
                let sql = format!("{OWNED} WHERE {scope} ORDER BY f.created DESC, f.id DESC LIMIT $2");
                self.all(&sql, &[owner, Arg::Int(limit)]).await
            }
            Some((created, id)) => {
                // A row value: both databases seek the index to it.
                let sql = format!(
                    "{OWNED} WHERE {scope} AND (f.created, f.id) < ($2, $3) ORDER BY f.created DESC, f.id DESC LIMIT $4"
                );
                self.all(&sql, &[owner, Arg::Int(created), Arg::Text(id), Arg::Int(limit)]).await
            }
        }
    }

    /// Deletes a file's record (and, by cascade, its share links). `false` if there was none.
    pub async fn delete_file(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let sql = "DELETE FROM files WHERE id = $1 RETURNING owner_id, size, scan, object_key";
        let gone = bind(sql, &[Arg::Text(id)]).fetch_optional(&mut *tx).await?;
        let Some(gone) = gone else { return Ok(false) };
        let (owner, size, scan, key): (String, i64, String, String) =
            (gone.try_get("owner_id")?, gone.try_get("size")?, gone.try_get("scan")?, gone.try_get("object_key")?);
        if scan != ScanState::Removed.as_str() {
            count_in(&mut tx, &owner, -size, -1).await?;
        }
        // The bytes go too: no process may serve them from memory by their key.
        self.commit_changing(tx, &[Change::File(id), Change::Object(&key)]).await?;
        Ok(true)
    }

    /// Gives every file of one user to another; returns how many.
    pub async fn transfer_files(&self, from: &str, to: &str) -> DbResult<u64> {
        let mut tx = self.pool.begin().await?;
        // What moves is all that `from` holds.
        let held = "SELECT used_bytes, used_files FROM users WHERE id = $1";
        let row = bind(held, &[Arg::Text(from)]).fetch_one(&mut *tx).await?;
        let (bytes, files): (i64, i64) = (row.try_get("used_bytes")?, row.try_get("used_files")?);
        let sql = "UPDATE files SET owner_id = $1 WHERE owner_id = $2";
        let moved = bind(sql, &[Arg::Text(to), Arg::Text(from)]).execute(&mut *tx).await?.rows_affected();
        count_in(&mut tx, from, -bytes, -files).await?;
        count_in(&mut tx, to, bytes, files).await?;
        self.commit_changing(tx, &[Change::Files]).await?;
        Ok(moved)
    }

    /// Files waiting for their virus scan that no instance has claimed (or whose claim ran
    /// out), oldest first.
    pub async fn unclaimed_scans(&self, limit: i64) -> DbResult<Vec<FileRow>> {
        self.all(
            &format!("{FILE} WHERE scan = 'pending' AND scan_claim < $1 ORDER BY created, id LIMIT $2"),
            &[Arg::Int(now()), Arg::Int(limit)],
        )
        .await
    }

    /// Claims a pending file's scan until `until`: `false` when it is no longer pending or
    /// another instance's claim runs.
    pub async fn claim_scan(&self, id: &str, until: i64) -> DbResult<bool> {
        let sql = "UPDATE files SET scan_claim = $1 WHERE id = $2 AND scan = 'pending' AND scan_claim < $3";
        Ok(self.execute(sql, &[Arg::Int(until), Arg::Text(id), Arg::Int(now())]).await? == 1)
    }

    /// Gives a claim back without a verdict (the scanner was down): any instance may retry.
    pub async fn release_scan(&self, id: &str) -> DbResult<()> {
        self.execute("UPDATE files SET scan_claim = 0 WHERE id = $1 AND scan = 'pending'", &[Arg::Text(id)]).await?;
        Ok(())
    }

    /// Records a pending file's verdict: `false` when it was no longer pending (deleted, say).
    pub async fn set_scan(&self, id: &str, state: ScanState, detail: Option<&str>) -> DbResult<bool> {
        let sql = "UPDATE files SET scan = $1, scan_detail = $2, scan_claim = 0 WHERE id = $3 AND scan = 'pending'";
        let mut tx = self.pool.begin().await?;
        let args = [Arg::Text(state.as_str()), Arg::OptText(detail), Arg::Text(id)];
        let set = bind(&format!("{sql} RETURNING owner_id, size, object_key"), &args).fetch_optional(&mut *tx).await?;
        let Some(set) = set else { return Ok(false) };
        let key: String = set.try_get("object_key")?;
        let mut changes = vec![Change::File(id)];
        if state == ScanState::Removed {
            // Removed as infected: out of the quota, and its bytes are deleted next.
            let (owner, size): (String, i64) = (set.try_get("owner_id")?, set.try_get("size")?);
            count_in(&mut tx, &owner, -size, -1).await?;
            changes.push(Change::Object(&key));
        }
        self.commit_changing(tx, &changes).await?;
        Ok(true)
    }

    /// How many files are in each scan state (states with none left out).
    pub async fn scan_counts(&self) -> DbResult<Vec<(ScanState, i64)>> {
        let mut counts = Vec::new();
        for state in ScanState::ALL {
            let n = self.scan_count(state).await?;
            if n > 0 {
                counts.push((state, n));
            }
        }
        Ok(counts)
    }

    /// How many files are in one scan state (from the index on `scan`).
    pub async fn scan_count(&self, state: ScanState) -> DbResult<i64> {
        // SQLite: by the index, named. Once `ANALYZE` has seen a million rows all in one
        // state, its planner counts any state by reading every row (measured: 0.4 s at each
        // start of a command; every process counts the held states as it starts).
        let sql = self.scan_count_sql();
        Ok(self.optional::<Number>(sql, &[Arg::Text(state.as_str())]).await?.map_or(0, |n| n.0))
    }

    /// The statement of [`Db::scan_count`].
    pub(super) fn scan_count_sql(&self) -> &'static str {
        if self.postgres {
            "SELECT COUNT(*) AS n FROM files WHERE scan = $1"
        } else {
            "SELECT COUNT(*) AS n FROM files INDEXED BY files_scan WHERE scan = $1"
        }
    }

    /// Takes (or renews) the lease on a resumable upload for `holder` until `until`: `false`
    /// while another holder's lease runs.
    pub async fn lease_upload(&self, upload_id: &str, holder: &str, until: i64) -> DbResult<bool> {
        let taken = self
            .execute(
                "INSERT INTO upload_leases (upload_id, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (upload_id) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE upload_leases.until < $4 OR upload_leases.holder = excluded.holder",
                &[Arg::Text(upload_id), Arg::Text(holder), Arg::Int(until), Arg::Int(now())],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Gives a lease back.
    pub async fn release_upload(&self, upload_id: &str, holder: &str) -> DbResult<()> {
        self.execute(
            "DELETE FROM upload_leases WHERE upload_id = $1 AND holder = $2",
            &[Arg::Text(upload_id), Arg::Text(holder)],
        )
        .await?;
        Ok(())
    }
}
