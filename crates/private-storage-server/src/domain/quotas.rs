//! Quotas: per-user limits in bytes and in files (a default for everyone, overrides per user),
//! with the room of every upload in progress held atomically across instances.
//!
//! An upload first *holds* room — its announced length, or as much as is left when it announced
//! none — and is cut off if it grows past it; its record is written and its room given back in
//! one transaction that checks the limits once more. A hold is given back when the upload
//! fails or its request goes away; an instance that dies leaves holds that expire.

use private_storage::human_size;

use super::{Actor, Domain, Error, Result};
use crate::db::{Admission, Db, Limits, Usage, new_id, now};

/// How long a plain upload's hold lasts if its process dies before giving it back.
const PLAIN_HOLD: i64 = 6 * 3600;

/// Room held for one upload; given back when dropped unless [`Hold::keep`] (a resumable
/// upload's hold outlives its requests).
#[derive(Debug)]
pub(super) struct Hold {
    pub(super) id: String,
    /// The most the upload may hold.
    pub(super) limit: u64,
    /// What to say when the upload is cut off at `limit`.
    pub(super) cut_off: String,
    db: Db,
    armed: bool,
}

impl Hold {
    pub(super) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.armed {
            let (db, id) = (self.db.clone(), std::mem::take(&mut self.id));
            tokio::spawn(async move {
                if let Err(e) = db.release(&id).await {
                    tracing::warn!(error = %e, "could not give an upload's quota back (it expires)");
                }
            });
        }
    }
}

/// A user's usage and limits, for the pages, `GET /api/usage` and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UsageReport {
    /// The sum of the user's file sizes.
    pub used_bytes: i64,
    /// The user's files.
    pub used_files: i64,
    /// Room held by the user's uploads in progress.
    pub reserved_bytes: i64,
    /// The byte limit, if any.
    pub quota_bytes: Option<i64>,
    /// The file limit, if any.
    pub quota_files: Option<i64>,
}

impl UsageReport {
    fn new(usage: Usage, limits: Limits) -> Self {
        Self {
            used_bytes: usage.bytes,
            used_files: usage.files,
            reserved_bytes: usage.reserved_bytes,
            quota_bytes: limits.bytes,
            quota_files: limits.files,
        }
    }

    /// Percent of the byte quota used, for a usage bar.
    pub fn percent(&self) -> Option<u64> {
        self.quota_bytes.map(|q| if q <= 0 { 100 } else { (self.used_bytes.max(0) as u64 * 100 / q as u64).min(100) })
    }
}

/// A limit as an operator sets it: the configured default, none, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaValue {
    /// Follow `quota_bytes` / `quota_files`.
    Default,
    /// No limit for this user.
    Unlimited,
    /// This many bytes or files.
    Limit(u64),
}

impl QuotaValue {
    /// `""` or `default` → the default, `none` → no limit, else a size (`10GiB`, when
    /// `size`) or a number.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is expected.
    pub fn parse(value: &str, size: bool) -> Result<Self> {
        match value.trim() {
            "" | "default" => Ok(QuotaValue::Default),
            "none" | "unlimited" => Ok(QuotaValue::Unlimited),
            v if size => crate::config::parse_size(v)
                .map(QuotaValue::Limit)
                .ok_or_else(|| Error::Invalid(format!("{v:?} is not a size such as 10GiB, none or default."))),
            v => v
                .parse()
                .map(QuotaValue::Limit)
                .map_err(|_| Error::Invalid(format!("{v:?} is not a number of files, none or default."))),
        }
    }

    fn stored(self) -> Option<i64> {
        match self {
            QuotaValue::Default => None,
            QuotaValue::Unlimited => Some(-1),
            QuotaValue::Limit(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }
}

/// The refusal, naming the quota.
fn over_quota(usage: Usage, limits: Limits) -> Error {
    let held = if usage.reserved_bytes > 0 {
        format!(", {} held by uploads in progress", human_size(usage.reserved_bytes as u64))
    } else {
        String::new()
    };
    match (limits.files, limits.bytes) {
        (Some(files), _) if usage.files + usage.reserved_files >= files => {
            Error::OverQuota(format!("You have reached your quota of {files} files{held}."))
        }
        (_, Some(bytes)) => Error::OverQuota(format!(
            "This upload would exceed your quota of {}: {} used{held}.",
            human_size(bytes.max(0) as u64),
            human_size(usage.bytes.max(0) as u64)
        )),
        _ => Error::OverQuota("This upload would exceed your quota.".into()),
    }
}

impl Domain {
    fn default_limits(&self) -> Limits {
        Limits {
            bytes: self.config.quota_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            files: self.config.quota_files.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }

    /// Holds room for an upload of `user_id` of at most `announced` bytes (if known: else as
    /// much as is left), under `id` until `ttl` seconds from now; `None` when the user has no
    /// limits. At least one byte is held, so a user with no room left is refused here.
    ///
    /// # Errors
    /// [`Error::OverQuota`] when there is no room; the database's.
    pub(super) async fn hold(&self, user_id: &str, id: &str, announced: Option<u64>, ttl: i64) -> Result<Option<Hold>> {
        let defaults = self.default_limits();
        let limits = self.db.limits(user_id, defaults).await?;
        if limits == Limits::default() {
            return Ok(None);
        }
        let max = self.config.max_file_size;
        let mut cut_off = "This upload would exceed your quota.".to_owned();
        let want = match (announced, limits.bytes) {
            (Some(len), _) => len.min(max),
            (None, None) => max,
            // As much as is left (read here; the reservation checks again, atomically).
            (None, Some(quota)) => {
                let usage = self.db.usage(user_id).await?;
                let left = u64::try_from(quota - usage.bytes - usage.reserved_bytes).unwrap_or(0).min(max);
                cut_off = format!(
                    "This upload would exceed your quota of {}: {} were left.",
                    human_size(quota.max(0) as u64),
                    human_size(left)
                );
                left
            }
        };
        let bytes = i64::try_from(want).unwrap_or(i64::MAX).max(1);
        match self.db.reserve(user_id, id, bytes, now() + ttl, defaults).await? {
            Admission::Admitted => {
                Ok(Some(Hold { id: id.to_owned(), limit: want, cut_off, db: self.db.clone(), armed: true }))
            }
            Admission::Refused(usage, limits) => {
                tracing::info!(user = user_id, wanted = want, used = usage.bytes, "upload refused by the quota");
                Err(over_quota(usage, limits))
            }
        }
    }

    /// Holds room for a plain upload whose request is at most `bound` bytes, if known (its
    /// hold lives as long as its request).
    pub(super) async fn hold_plain(&self, user_id: &str, bound: Option<u64>) -> Result<Option<Hold>> {
        self.hold(user_id, &format!("plain-{}", new_id()), bound, PLAIN_HOLD).await
    }

    /// Writes a file's record, giving its hold back in the same transaction when there is one;
    /// [`Error::OverQuota`] (nothing written) when the file does not fit the limits.
    pub(super) async fn insert_held(&self, row: &crate::db::FileRow, hold: Option<&str>) -> Result<()> {
        let defaults = self.default_limits();
        match hold {
            None if self.db.limits(&row.owner_id, defaults).await? == Limits::default() => {
                Ok(self.db.insert_file(row).await?)
            }
            hold => match self.db.insert_file_reserved(row, hold.unwrap_or(""), defaults).await? {
                Admission::Admitted => Ok(()),
                Admission::Refused(usage, limits) => Err(over_quota(usage, limits)),
            },
        }
    }

    /// A user's usage and limits: one's own, or anyone's for staff and the operator.
    ///
    /// # Errors
    /// [`Error::NotFound`] for someone else's as a plain user; the database's.
    pub async fn usage(&self, actor: &Actor, user_id: &str) -> Result<UsageReport> {
        if !actor.sees_everything() && actor.scope() != Some(user_id) {
            return Err(Error::NotFound("user"));
        }
        let limits = self.db.limits(user_id, self.default_limits()).await?;
        Ok(UsageReport::new(self.db.usage(user_id).await?, limits))
    }

    /// A user's usage and limits by name (staff and the operator, or oneself).
    ///
    /// # Errors
    /// As [`Domain::usage`].
    pub async fn usage_by_name(&self, actor: &Actor, username: &str) -> Result<UsageReport> {
        let user = self.db.user_by_name(username).await?.ok_or(Error::NotFound("user"))?;
        self.usage(actor, &user.id).await
    }

    /// Every user's usage and limits, by name (staff and the operator).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for plain users; the database's.
    pub async fn usages(&self, actor: &Actor) -> Result<Vec<(String, UsageReport)>> {
        if !actor.sees_everything() {
            return Err(Error::Forbidden("Only staff see everyone's usage.".into()));
        }
        let defaults = self.default_limits();
        let mut out = Vec::new();
        for (id, name) in self.db.user_names().await? {
            let limits = self.db.limits(&id, defaults).await?;
            out.push((name, UsageReport::new(self.db.usage(&id).await?, limits)));
        }
        Ok(out)
    }

    /// Sets a user's limits (staff and the operator); `None` leaves one as it is.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for plain users; [`Error::NotFound`]; the database's.
    pub async fn set_quota(
        &self,
        actor: &Actor,
        username: &str,
        bytes: Option<QuotaValue>,
        files: Option<QuotaValue>,
    ) -> Result<UsageReport> {
        if !actor.sees_everything() {
            return Err(Error::Forbidden("Only staff change quotas.".into()));
        }
        let user = self.db.user_by_name(username).await?.ok_or(Error::NotFound("user"))?;
        let (old_bytes, old_files) = self.db.overrides(&user.id).await?;
        let bytes = bytes.map_or(old_bytes, QuotaValue::stored);
        let files = files.map_or(old_files, QuotaValue::stored);
        self.db.set_limits(&user.id, bytes, files).await?;
        tracing::info!(user = username, ?bytes, ?files, "quota set");
        self.usage(&Actor::Operator, &user.id).await
    }
}
