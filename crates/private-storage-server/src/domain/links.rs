//! Share links: issuing and revoking them, and the database behind the library's share links
//! (revocations shared by every instance, an audit trail of every link issued and used).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use private_storage::{
    ContentDisposition, LinkIssued, LinkUsed, ObjectKey, RevocationStore, Share, ShareAudit, ShareKeys, ShareTarget,
};

use super::audit::Event;
use super::{Actor, Domain, Error, Result};
use crate::db::{Db, DbError, FileRow, LinkRow, OwnedLink, now};

/// What a new link should be.
#[derive(Clone, Default, serde::Deserialize)]
pub struct ShareRequest {
    /// How long it lives: `1h`, `1d`, `90d`... (default: `share_default_lifetime`).
    pub expires: Option<String>,
    /// Download instead of showing inline.
    #[serde(default)]
    pub attachment: bool,
    /// Bind the link to this user name (it then also needs their login).
    pub user: Option<String>,
    /// A password the link asks for (stored as an argon2id hash).
    pub password: Option<String>,
    /// How many downloads it allows (default: `share_default_max_downloads`).
    pub max_downloads: Option<u64>,
}

impl std::fmt::Debug for ShareRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareRequest")
            .field("expires", &self.expires)
            .field("attachment", &self.attachment)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_downloads", &self.max_downloads)
            .finish()
    }
}

/// The shortest password a link takes.
const MIN_LINK_PASSWORD: usize = 6;

/// A link just issued: its path (`/s/<token>`, shown once) and its record.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// The path of the link.
    pub path: String,
    /// The stored link.
    pub row: LinkRow,
}

impl Domain {
    /// Issues a share link to a file the actor may see.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Invalid`] for a malformed lifetime or an unknown user to
    /// bind to; [`Error::Policy`] for what the policy refuses: a lifetime above
    /// `share_max_lifetime`, no password where `share_require_password` asks for one, a
    /// password too short, a download limit of 0; the database's.
    pub async fn share(&self, actor: &Actor, file_id: &str, request: &ShareRequest) -> Result<(FileRow, NewLink)> {
        let file = self.file_by_id_or_key(actor, file_id).await?;
        let max = self.config.share_max_lifetime;
        let lifetime = self.lifetime(request.expires.as_deref(), "links may live")?;
        let password = request.password.as_deref().filter(|p| !p.is_empty());
        if password.is_none() && self.config.share_require_password {
            return Err(Error::Policy("password: every link needs one here.".into()));
        }
        if password.is_some_and(|p| p.chars().count() < MIN_LINK_PASSWORD) {
            return Err(Error::Policy(format!("password: at least {MIN_LINK_PASSWORD} characters.")));
        }
        let max_downloads = request.max_downloads.or(self.config.share_default_max_downloads);
        if max_downloads == Some(0) {
            return Err(Error::Policy("max_downloads: at least 1 (or none for no limit).".into()));
        }
        let password_hash = match password {
            Some(password) => Some(super::accounts::hash_off_the_workers(password.to_owned()).await?),
            None => None,
        };
        // The token lives as long as any link may: its expiry here can then be extended up to
        // that (the server checks the expiry it keeps on every use).
        let mut share = Share::record(&file.id).expires_in(max).issued_by(actor.name());
        if request.attachment {
            share = share.disposition(ContentDisposition::attachment().with_filename(&file.name));
        }
        let mut bound = None;
        if let Some(name) = request.user.as_deref().filter(|n| !n.is_empty()) {
            let user =
                self.db.user_by_name(name).await?.ok_or_else(|| Error::Invalid(format!("No user is named {name}.")))?;
            share = share.bound_to(&user.id);
            bound = Some(user.username);
        }
        let link = self.links.issue(share).await?;
        let created = now();
        let row = LinkRow {
            link_id: link.link_id.clone(),
            file_id: file.id.clone(),
            issued_by: Some(actor.name().to_owned()),
            bound_to: bound,
            expires: created + lifetime.as_secs() as i64,
            created,
            password_hash,
            max_downloads: max_downloads.map(|n| n as i64),
            downloads: 0,
            token_expires: Some(secs(link.expires)),
            revoked: false,
        };
        self.db.insert_link(&row).await?;
        let event = Event::by("link_issued", actor).file(&file).link(&row.link_id);
        self.audit.record(event.detail(format!("expires={}", row.expires)));
        Ok((file, NewLink { path: link.url, row }))
    }

    /// The live links of a file the actor may see.
    ///
    /// # Errors
    /// The database's.
    pub async fn live_links(&self, file: &FileRow) -> Result<Vec<LinkRow>> {
        Ok(self.db.live_links(&file.id).await?)
    }

    /// Revokes a link to a file the actor may see — named by its URL, its token or its id;
    /// returns the link.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown link or one to another user's file; the database's.
    pub async fn revoke(&self, actor: &Actor, link: &str) -> Result<LinkRow> {
        // A URL (`…/s/<token>`), a token, or the link's id.
        let token =
            link.rsplit_once("/s/").map_or(link, |(_, token)| token).split(['/', '?', '#']).next().unwrap_or("");
        let link_id = self.links.link_id(token).unwrap_or_else(|| link.to_owned());
        let link = self.db.link(&link_id).await?.ok_or(Error::NotFound("link"))?;
        // Only whoever may see the file may revoke its links.
        self.file(actor, &link.file_id).await.map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound("link"),
            other => other,
        })?;
        self.db.revoke_link(&link.link_id, link.extendable_to()).await?;
        tracing::info!(link_id = %link.link_id, by = actor.name(), "share link revoked");
        self.audit.record(Event::by("link_revoked", actor).file_id(&link.file_id).link(&link.link_id));
        Ok(link)
    }

    /// Revokes every link to a file the actor may see (those to come are not affected);
    /// returns how many were live.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the database's.
    pub async fn revoke_all(&self, actor: &Actor, file_id: &str) -> Result<usize> {
        let file = self.file(actor, file_id).await?;
        let live = self.db.links(None, Some(&file.id), false, 10_000).await?;
        for link in &live {
            self.db.revoke_link(&link.link.link_id, link.link.extendable_to()).await?;
        }
        // Links issued before the list was read are refused by their epoch too.
        self.db.bump_epoch(&target_name(&ShareTarget::Record(file.id.clone()))).await?;
        tracing::info!(file = %file.id, revoked = live.len(), by = actor.name(), "every share link of a file revoked");
        self.audit
            .record(Event::by("link_revoked", actor).file(&file).detail(format!("all {} live link(s)", live.len())));
        Ok(live.len())
    }

    /// The links the actor may see (their files' links; staff: everyone's), newest first: of
    /// one file if given; revoked and expired ones too with `all`.
    ///
    /// # Errors
    /// The database's.
    pub async fn links_of(&self, actor: &Actor, file_id: Option<&str>, all: bool) -> Result<Vec<OwnedLink>> {
        Ok(self.db.links(actor.scope(), file_id, all, 1000).await?)
    }

    /// A link the actor may see, with its file's name and owner.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown link or one to another user's file; the database's.
    pub async fn link_of(&self, actor: &Actor, link_id: &str) -> Result<OwnedLink> {
        let link = self.db.link(link_id).await?.ok_or(Error::NotFound("link"))?;
        let file = self.file(actor, &link.file_id).await.map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound("link"),
            other => other,
        })?;
        Ok(OwnedLink { link, file_name: file.name, owner_id: file.owner_id })
    }

    /// Sets a live link's expiry to `expires` from now — within `share_max_lifetime` of its
    /// creation, and what its token allows.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Invalid`] for a malformed duration; [`Error::Policy`] past
    /// the maximum, or for a revoked or expired link; the database's.
    pub async fn extend_link(&self, actor: &Actor, link_id: &str, expires: &str) -> Result<LinkRow> {
        let owned = self.link_of(actor, link_id).await?;
        let mut link = owned.link;
        if link.revoked || link.expires <= now() {
            return Err(Error::Policy("This link is revoked or expired: issue a new one.".into()));
        }
        let lifetime = parse_lifetime(expires)?;
        let until = now() + lifetime.as_secs() as i64;
        let most = link.extendable_to().min(link.created + self.config.share_max_lifetime.as_secs() as i64);
        if until > most {
            return Err(Error::Policy(format!(
                "expires: this link may live until {} at most ({} after it was issued).",
                crate::http::api::rfc3339(most),
                humantime(self.config.share_max_lifetime)
            )));
        }
        self.db.set_link_expiry(&link.link_id, until).await?;
        link.expires = until;
        self.audit.record(
            Event::by("link_extended", actor)
                .file_id(&link.file_id)
                .link(&link.link_id)
                .detail(format!("expires={until}")),
        );
        Ok(link)
    }

    /// The uses of a link, newest first, from the audit trail.
    ///
    /// # Errors
    /// As [`Domain::link_of`].
    pub async fn link_uses(&self, actor: &Actor, link_id: &str) -> Result<(OwnedLink, Vec<crate::db::AuditRow>)> {
        let link = self.link_of(actor, link_id).await?;
        self.audit.flush().await;
        let filter = crate::db::AuditFilter { link_id: Some(link_id.to_owned()), limit: 200, ..Default::default() };
        Ok((link, self.db.audit_events(&filter).await?))
    }
}

/// A lifetime asked for: a duration of a minute or more.
fn parse_lifetime(expires: &str) -> Result<Duration> {
    private_storage::parse_duration(expires)
        .filter(|d| *d >= Duration::from_secs(60))
        .ok_or_else(|| Error::Invalid("expires: a duration of at least a minute, such as 1h or 7d.".into()))
}

impl Domain {
    /// The lifetime of a new link or file request: as asked (`None` or empty:
    /// `share_default_lifetime`), within `share_max_lifetime` ([`Error::Policy`] past it: "what
    /// may live at most …").
    pub(super) fn lifetime(&self, expires: Option<&str>, what: &str) -> Result<Duration> {
        let max = self.config.share_max_lifetime;
        let lifetime = match expires.map(str::trim).filter(|e| !e.is_empty()) {
            Some(expires) => parse_lifetime(expires)?,
            None => self.config.share_default_lifetime.min(max),
        };
        if lifetime > max {
            return Err(Error::Policy(format!("expires: {what} at most {}.", humantime(max))));
        }
        Ok(lifetime)
    }
}

/// `1h`, `7d`: a duration for people.
pub(crate) fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The key of a record's file, for links to records: `ServeShared::records`.
pub(super) fn record_keys(
    db: Db,
) -> impl Fn(String) -> BoxFuture<'static, private_storage::Result<Option<ObjectKey>>> + Send + Sync + 'static {
    move |id| {
        let db = db.clone();
        Box::pin(async move {
            let file = db.file(&id, None).await.map_err(db_error)?;
            Ok(file.and_then(|f| ObjectKey::new(&f.object_key).ok()))
        })
    }
}

fn target_name(target: &ShareTarget) -> String {
    match target {
        ShareTarget::Key(key) => format!("key:{key}"),
        ShareTarget::Record(id) => format!("file:{id}"),
        _ => format!("{target:?}"),
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn db_error(e: DbError) -> private_storage::Error {
    private_storage::Error::Storage { backend: "database", source: Box::new(e) }
}

/// Revocations in the database: every instance sees them at once.
#[derive(Debug, Clone)]
pub struct DbRevocations(pub Db);

#[async_trait]
impl RevocationStore for DbRevocations {
    async fn epoch(&self, target: &ShareTarget) -> private_storage::Result<u32> {
        self.0.epoch(&target_name(target)).await.map(|e| e as u32).map_err(db_error)
    }
    async fn bump_epoch(&self, target: &ShareTarget) -> private_storage::Result<u32> {
        self.0.bump_epoch(&target_name(target)).await.map(|e| e as u32).map_err(db_error)
    }
    async fn is_revoked(&self, link_id: &str) -> private_storage::Result<bool> {
        self.0.is_revoked(link_id).await.map_err(db_error)
    }
    async fn revoke(&self, link_id: &str, expires: SystemTime) -> private_storage::Result<()> {
        self.0.revoke_link(link_id, secs(expires)).await.map_err(db_error)
    }
}

/// Share events go to the log and to the `share_events` table — the uses of authentic links
/// only: a forged or malformed token is counted in the metrics (`denied_total{kind="share_token"}`)
/// and never written, so a flood of garbage tokens cannot fill the database. What is written is
/// bounded (the `Range` header is cut to 64 characters), and rows older than
/// `audit_retention` are purged by the server's upkeep.
#[derive(Debug, Clone)]
pub struct DbAudit {
    db: Db,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// How much of a `Range` header an audit row keeps.
const MAX_RANGE_LOGGED: usize = 64;

impl DbAudit {
    /// Audit into `db`, counting refused tokens in `metrics`.
    pub fn new(db: Db, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self { db, metrics }
    }

    fn record(&self, kind: &'static str, link: Option<String>, target: Option<String>, detail: String) {
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.share_event(kind, link.as_deref(), target.as_deref(), &detail).await {
                tracing::error!(error = %e, "could not record a share event");
            }
        });
    }
}

impl ShareAudit for DbAudit {
    fn issued(&self, event: &LinkIssued) {
        private_storage::TracingAudit.issued(event);
        let detail = format!(
            "expires={} issued_by={} bound_to={}",
            secs(event.expires),
            event.issued_by.as_deref().unwrap_or("-"),
            event.bound_to.as_deref().unwrap_or("-")
        );
        self.record("issued", Some(event.link_id.clone()), Some(target_name(&event.target)), detail);
    }

    fn used(&self, event: &LinkUsed) {
        private_storage::TracingAudit.used(event);
        let Some(link_id) = event.link_id.clone() else {
            self.metrics.denied("share_token");
            return;
        };
        let range: String = event.range.as_deref().unwrap_or("-").chars().take(MAX_RANGE_LOGGED).collect();
        let detail = format!(
            "outcome={} status={} bytes={} range={}",
            event.outcome,
            event.status,
            event.bytes.map_or("-".into(), |b| b.to_string()),
            range.escape_debug()
        );
        self.record("used", Some(link_id), event.target.as_ref().map(target_name), detail);
    }
}

/// The signing key kept in `data_dir/share-keys` (created once, readable by the owner only),
/// for the embedded default. Several instances must share `share_keys` from configuration.
///
/// # Errors
/// A message naming the file when it cannot be read, written or parsed.
pub fn keys_in(data_dir: &Path) -> std::result::Result<ShareKeys, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("share-keys");
    let spec = match std::fs::read_to_string(&path) {
        Ok(spec) => spec,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let spec = format!("k1={}", super::random_token(32));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(spec.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "generated the share-link signing key (set share_keys to run several instances)");
            spec
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    ShareKeys::parse(spec.trim()).map_err(|e| format!("{}: {e}", path.display()))
}
