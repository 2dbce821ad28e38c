//! Share links: the issued links of files, revocations and epochs (shared by every instance),
//! and the audit trail of their use.

use super::rows::{LinkRow, Number, ShareEvent};
use super::{Arg, Db, DbResult, new_id, now};

const LINK: &str = "SELECT link_id, file_id, issued_by, bound_to, expires, created FROM share_links";

impl Db {
    /// Records an issued link.
    pub async fn insert_link(&self, row: &LinkRow) -> DbResult<()> {
        self.execute(
            "INSERT INTO share_links (link_id, file_id, issued_by, bound_to, expires, created) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Arg::Text(&row.link_id),
                Arg::Text(&row.file_id),
                Arg::OptText(row.issued_by.as_deref()),
                Arg::OptText(row.bound_to.as_deref()),
                Arg::Int(row.expires),
                Arg::Int(row.created),
            ],
        )
        .await?;
        Ok(())
    }

    /// The live (unexpired, unrevoked) links of a file, newest first.
    pub async fn live_links(&self, file_id: &str) -> DbResult<Vec<LinkRow>> {
        let sql = format!(
            "{LINK} l WHERE file_id = $1 AND expires > $2 \
             AND NOT EXISTS (SELECT 1 FROM share_revoked r WHERE r.link_id = l.link_id) ORDER BY created DESC"
        );
        self.all(&sql, &[Arg::Text(file_id), Arg::Int(now())]).await
    }

    /// A link by id.
    pub async fn link(&self, link_id: &str) -> DbResult<Option<LinkRow>> {
        self.optional(&format!("{LINK} WHERE link_id = $1"), &[Arg::Text(link_id)]).await
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
