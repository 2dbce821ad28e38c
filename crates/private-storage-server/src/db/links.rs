//! Share links: the issued links of files, revocations and epochs (shared by every instance),
//! and the audit trail of their use.

use super::rows::{LinkRow, Number, OwnedLink, ShareEvent};
use super::{Arg, Db, DbResult, new_id, now};

/// A link's columns, `revoked` computed from the revocations (`l` is `share_links`).
const LINK_COLUMNS: &str = "l.link_id, l.file_id, l.issued_by, l.bound_to, l.expires, l.created, l.password_hash, \
     l.max_downloads, l.downloads, l.token_expires, \
     CASE WHEN EXISTS (SELECT 1 FROM share_revoked r WHERE r.link_id = l.link_id) THEN 1 ELSE 0 END AS revoked";

/// How long a client's run of range requests counts as one download after its last request.
pub(super) const RUN_WINDOW: i64 = 600;

impl Db {
    /// Records an issued link.
    pub async fn insert_link(&self, row: &LinkRow) -> DbResult<()> {
        self.execute(
            "INSERT INTO share_links (link_id, file_id, issued_by, bound_to, expires, created, password_hash, \
             max_downloads, downloads, token_expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
            &[
                Arg::Text(&row.link_id),
                Arg::Text(&row.file_id),
                Arg::OptText(row.issued_by.as_deref()),
                Arg::OptText(row.bound_to.as_deref()),
                Arg::Int(row.expires),
                Arg::Int(row.created),
                Arg::OptText(row.password_hash.as_deref()),
                Arg::OptInt(row.max_downloads),
                Arg::OptInt(row.token_expires),
            ],
        )
        .await?;
        Ok(())
    }

    /// The live (unexpired, unrevoked) links of a file, newest first.
    pub async fn live_links(&self, file_id: &str) -> DbResult<Vec<LinkRow>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM share_links l WHERE l.file_id = $1 AND l.expires > $2 \
             AND NOT EXISTS (SELECT 1 FROM share_revoked r WHERE r.link_id = l.link_id) ORDER BY l.created DESC"
        );
        self.all(&sql, &[Arg::Text(file_id), Arg::Int(now())]).await
    }

    /// A link by id.
    pub async fn link(&self, link_id: &str) -> DbResult<Option<LinkRow>> {
        self.optional(&format!("SELECT {LINK_COLUMNS} FROM share_links l WHERE l.link_id = $1"), &[Arg::Text(link_id)])
            .await
    }

    /// Links with their files, newest first: of one owner's files (`None`: everyone's), of one
    /// file if given, live ones only unless `all`.
    pub async fn links(
        &self,
        owner: Option<&str>,
        file_id: Option<&str>,
        all: bool,
        limit: i64,
    ) -> DbResult<Vec<OwnedLink>> {
        let mut sql = format!(
            "SELECT {LINK_COLUMNS}, f.name, f.owner_id FROM share_links l JOIN files f ON f.id = l.file_id \
             WHERE ($1 = '' OR f.owner_id = $1) AND ($2 = '' OR l.file_id = $2)"
        );
        if !all {
            sql.push_str(
                " AND l.expires > $3 AND NOT EXISTS (SELECT 1 FROM share_revoked r WHERE r.link_id = l.link_id)",
            );
        } else {
            sql.push_str(" AND $3 = $3");
        }
        sql.push_str(" ORDER BY l.created DESC, l.link_id LIMIT $4");
        let args = [Arg::Text(owner.unwrap_or("")), Arg::Text(file_id.unwrap_or("")), Arg::Int(now()), Arg::Int(limit)];
        self.all(&sql, &args).await
    }

    /// Sets a link's expiry.
    pub async fn set_link_expiry(&self, link_id: &str, expires: i64) -> DbResult<()> {
        self.execute(
            "UPDATE share_links SET expires = $1 WHERE link_id = $2",
            &[Arg::Int(expires), Arg::Text(link_id)],
        )
        .await?;
        Ok(())
    }

    /// Counts one download of a limited link if one is left (atomically: parallel requests on
    /// any number of instances never pass the limit); `false` when none is.
    pub async fn take_download(&self, link_id: &str) -> DbResult<bool> {
        let sql = "UPDATE share_links SET downloads = downloads + 1 WHERE link_id = $1 \
                   AND (max_downloads IS NULL OR downloads < max_downloads)";
        Ok(self.execute(sql, &[Arg::Text(link_id)]).await? == 1)
    }

    /// Gives a counted download back (it served nothing).
    pub async fn give_back_download(&self, link_id: &str) -> DbResult<()> {
        self.execute(
            "UPDATE share_links SET downloads = downloads - 1 WHERE link_id = $1 AND downloads > 0",
            &[Arg::Text(link_id)],
        )
        .await?;
        Ok(())
    }

    /// Whether `client` has a run of requests on the link within [`RUN_WINDOW`]; either way
    /// its run is now.
    pub async fn continue_run(&self, link_id: &str, client: &str) -> DbResult<bool> {
        let now = now();
        let ongoing = self
            .execute(
                "UPDATE share_runs SET last_at = $1 WHERE link_id = $2 AND client = $3 AND last_at > $4",
                &[Arg::Int(now), Arg::Text(link_id), Arg::Text(client), Arg::Int(now - RUN_WINDOW)],
            )
            .await?
            == 1;
        Ok(ongoing)
    }

    /// Remembers a browser that gave a link's password (by the SHA-256 of its cookie).
    pub async fn insert_unlock(&self, id_hash: &str, link_id: &str, expires: i64) -> DbResult<()> {
        self.execute(
            "INSERT INTO link_unlocks (id_hash, link_id, expires) VALUES ($1, $2, $3)",
            &[Arg::Text(id_hash), Arg::Text(link_id), Arg::Int(expires)],
        )
        .await?;
        Ok(())
    }

    /// Whether the cookie with this hash unlocks the link now.
    pub async fn is_unlocked(&self, id_hash: &str, link_id: &str) -> DbResult<bool> {
        let sql = "SELECT COUNT(*) AS n FROM link_unlocks WHERE id_hash = $1 AND link_id = $2 AND expires > $3";
        let found = self.optional::<Number>(sql, &[Arg::Text(id_hash), Arg::Text(link_id), Arg::Int(now())]).await?;
        Ok(found.is_some_and(|n| n.0 > 0))
    }

    /// Starts (or restarts) `client`'s run on the link.
    pub async fn start_run(&self, link_id: &str, client: &str) -> DbResult<()> {
        self.execute(
            "INSERT INTO share_runs (link_id, client, last_at) VALUES ($1, $2, $3) \
             ON CONFLICT (link_id, client) DO UPDATE SET last_at = excluded.last_at",
            &[Arg::Text(link_id), Arg::Text(client), Arg::Int(now())],
        )
        .await?;
        Ok(())
    }

    /// The epoch of a share target (0 if never bumped).
    pub async fn epoch(&self, target: &str) -> DbResult<i64> {
        let found = self
            .optional::<Number>("SELECT epoch AS n FROM share_epochs WHERE target = $1", &[Arg::Text(target)])
            .await?;
        Ok(found.map_or(0, |n| n.0))
    }

    /// Bumps the epoch of a share target; returns the new one.
    pub async fn bump_epoch(&self, target: &str) -> DbResult<i64> {
        self.execute(
            "INSERT INTO share_epochs (target, epoch) VALUES ($1, 1) \
             ON CONFLICT (target) DO UPDATE SET epoch = share_epochs.epoch + 1",
            &[Arg::Text(target)],
        )
        .await?;
        self.epoch(target).await
    }

    /// Whether a link was revoked.
    pub async fn is_revoked(&self, link_id: &str) -> DbResult<bool> {
        let sql = "SELECT COUNT(*) AS n FROM share_revoked WHERE link_id = $1";
        Ok(self.optional::<Number>(sql, &[Arg::Text(link_id)]).await?.is_some_and(|n| n.0 > 0))
    }

    /// Revokes a link (kept until `expires`, when the link would have died anyway).
    pub async fn revoke_link(&self, link_id: &str, expires: i64) -> DbResult<()> {
        self.execute(
            "INSERT INTO share_revoked (link_id, expires) VALUES ($1, $2) ON CONFLICT (link_id) DO NOTHING",
            &[Arg::Text(link_id), Arg::Int(expires)],
        )
        .await?;
        Ok(())
    }

    /// Appends an audit event.
    pub async fn share_event(
        &self,
        kind: &str,
        link_id: Option<&str>,
        target: Option<&str>,
        detail: &str,
    ) -> DbResult<()> {
        self.execute(
            "INSERT INTO share_events (id, at, kind, link_id, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Arg::Text(&new_id()),
                Arg::Int(now()),
                Arg::Text(kind),
                Arg::OptText(link_id),
                Arg::OptText(target),
                Arg::Text(detail),
            ],
        )
        .await?;
        Ok(())
    }

    /// The audit events of a link, oldest first.
    pub async fn share_events(&self, link_id: &str) -> DbResult<Vec<ShareEvent>> {
        self.all("SELECT kind, detail FROM share_events WHERE link_id = $1 ORDER BY at, id", &[Arg::Text(link_id)])
            .await
    }

    /// Forgets audit events from before `cutoff` (seconds since the epoch); returns how many.
    pub async fn purge_share_events(&self, cutoff: i64) -> DbResult<u64> {
        self.execute("DELETE FROM share_events WHERE at < $1", &[Arg::Int(cutoff)]).await
    }

    /// How many audit events are kept.
    pub async fn share_event_count(&self) -> DbResult<i64> {
        Ok(self.optional::<Number>("SELECT COUNT(*) AS n FROM share_events", &[]).await?.map_or(0, |n| n.0))
    }
}
