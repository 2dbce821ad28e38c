//! Signed share links: expiring, scoped, revocable links to one private file.
//!
//! A link is a token signed with HMAC-SHA256 over the canonical key (or a record id), an
//! expiry, the disposition (inline/attachment, optional filename), an optional bound user
//! (then the link also requires that user's session) and a link id. [`ShareLinks`] issues and
//! verifies them; [`ServeShared`](crate::ServeShared) serves them through the same pipeline
//! and delivery modes as [`ServePrivate`](crate::ServePrivate).
//!
//! - **Key rotation**: [`ShareKeys`] holds several keys with ids; the first signs, all verify;
//!   removing a key from the configuration retires it and every link it signed.
//! - **Revocation**, checked on every use: per link (a deny-list of link ids) and per target
//!   (an epoch that is part of the signed claims: bumping it kills every earlier link to that
//!   file). The library defines [`RevocationStore`]; [`MemoryRevocations`] keeps it in memory.
//! - **Limits**: a maximum lifetime (7 days by default). An expired link is answered `410 Gone`;
//!   a tampered, revoked, retired or wrongly-used link gets the service's denial, with no
//!   detail on which check failed.
//! - **Audit**: every link issued and every use goes to a [`ShareAudit`] ([`TracingAudit`] by
//!   default, which logs with `tracing`).

mod token;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub(crate) use token::Refusal;
#[cfg(feature = "s3")]
pub(crate) use token::mac;
use token::{Claims, LINK_ID_LEN};

use crate::upload::hex;
use crate::{ContentDisposition, Error, Identity, ObjectKey, Result};

/// What a link opens: a file by key, or the file of a record by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShareTarget {
    /// A file, by its canonical key.
    Key(ObjectKey),
    /// The file of a record, by the record's id (resolved when the link is used).
    Record(String),
}

/// The signing keys of share links: the first signs, every one verifies.
///
/// Keys come from configuration — never generated per process, so links survive restarts and
/// work across instances. A secret has at least 32 bytes; an id is 1–16 ASCII letters, digits,
/// `-` or `_`.
///
/// ```
/// use private_storage::ShareKeys;
///
/// // Rotation: sign with 2026-11, still accept links signed with 2026-05.
/// let keys = ShareKeys::parse("2026-11=bmV3LXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcyE, 2026-05=b2xkLXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcyE")?;
/// assert_eq!(keys.signing_key_id(), "2026-11");
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Clone)]
pub struct ShareKeys {
    keys: Vec<(String, Arc<[u8]>)>,
}

impl fmt::Debug for ShareKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("ShareKeys").field("ids", &ids).field("secrets", &"<redacted>").finish()
    }
}

impl ShareKeys {
    /// Keys with one signing key.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid id or a secret shorter than 32 bytes.
    pub fn new(id: &str, secret: impl AsRef<[u8]>) -> Result<Self> {
        Self { keys: Vec::new() }.with_key(id, secret)
    }

    /// Adds a key that still verifies (an older one, during rotation).
    ///
    /// # Errors
    /// As [`ShareKeys::new`], or a duplicate id.
    pub fn with_key(mut self, id: &str, secret: impl AsRef<[u8]>) -> Result<Self> {
        let valid_id =
            !id.is_empty() && id.len() <= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(Error::config("share_keys", format!("key id {id:?} must be 1-16 letters, digits, '-' or '_'")));
        }
        if secret.as_ref().len() < 32 {
            return Err(Error::config(
                "share_keys",
                format!("the secret of key {id:?} has {} bytes; at least 32 are needed", secret.as_ref().len()),
            ));
        }
        if self.keys.iter().any(|(existing, _)| existing == id) {
            return Err(Error::config("share_keys", format!("key id {id:?} appears twice")));
        }
        self.keys.push((id.to_owned(), Arc::from(secret.as_ref())));
        Ok(self)
    }

    /// Parses `id=base64url-secret, id=secret…` (the first signs), as kept in configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong; an empty list is an error too.
    pub fn parse(spec: &str) -> Result<Self> {
        use base64::Engine;
        let mut keys: Option<Self> = None;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, secret) = entry.split_once('=').ok_or_else(|| {
                Error::config("share_keys", format!("{:?} is not id=secret", entry.split('=').next().unwrap_or("")))
            })?;
            let secret =
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(secret.trim().trim_end_matches('='))
                    .map_err(|_| Error::config("share_keys", format!("the secret of key {id:?} is not base64url")))?;
            keys = Some(match keys {
                None => Self::new(id.trim(), secret)?,
                Some(k) => k.with_key(id.trim(), secret)?,
            });
        }
        keys.ok_or_else(|| Error::config("share_keys", "no key configured"))
    }

    /// The id of the key new links are signed with.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].0
    }

    fn signing(&self) -> (&str, &[u8]) {
        let (id, secret) = &self.keys[0];
        (id, secret)
    }

    fn get(&self, id: &str) -> Option<&[u8]> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, s)| &**s)
    }
}

/// Where revocations live, checked on every use of a link.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// The current epoch of a target (0 until bumped). Links carry the epoch they were issued in.
    async fn epoch(&self, target: &ShareTarget) -> Result<u32>;
    /// Revokes every link issued so far for `target`; returns the new epoch.
    async fn bump_epoch(&self, target: &ShareTarget) -> Result<u32>;
    /// Whether the link with this id was revoked.
    async fn is_revoked(&self, link_id: &str) -> Result<bool>;
    /// Revokes one link. `expires` says when the entry can be forgotten (the link dies then anyway).
    async fn revoke(&self, link_id: &str, expires: SystemTime) -> Result<()>;
}

/// Revocations kept in memory (one process; the server keeps them in its database).
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    epochs: Mutex<HashMap<ShareTarget, u32>>,
    revoked: Mutex<HashSet<String>>,
}

impl MemoryRevocations {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocations {
    async fn epoch(&self, target: &ShareTarget) -> Result<u32> {
        Ok(self.epochs.lock().unwrap_or_else(|e| e.into_inner()).get(target).copied().unwrap_or(0))
    }
    async fn bump_epoch(&self, target: &ShareTarget) -> Result<u32> {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = epochs.entry(target.clone()).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }
    async fn is_revoked(&self, link_id: &str) -> Result<bool> {
        Ok(self.revoked.lock().unwrap_or_else(|e| e.into_inner()).contains(link_id))
    }
    async fn revoke(&self, link_id: &str, _expires: SystemTime) -> Result<()> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).insert(link_id.to_owned());
        Ok(())
    }
}

/// A link was issued.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkIssued {
    /// The link's id (hex).
    pub link_id: String,
    /// What it opens.
    pub target: ShareTarget,
    /// When it stops working.
    pub expires: SystemTime,
    /// Who issued it, if known.
    pub issued_by: Option<String>,
    /// The user it is bound to, if any.
    pub bound_to: Option<String>,
}

/// A link was used (or tried).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkUsed {
    /// The link's id, when the token was authentic.
    pub link_id: Option<String>,
    /// What it opens, when the token was authentic.
    pub target: Option<ShareTarget>,
    /// The response status.
    pub status: u16,
    /// The bytes the response announced (`Content-Length`), if any.
    pub bytes: Option<u64>,
    /// The `Range` asked for, if any.
    pub range: Option<String>,
    /// `served`, `missing` (an authentic link to a record whose file is gone), `expired` or
    /// `refused`.
    pub outcome: &'static str,
}

/// Receives an event for every link issued and every use.
pub trait ShareAudit: Send + Sync + 'static {
    /// A link was issued.
    fn issued(&self, event: &LinkIssued);
    /// A link was used or tried.
    fn used(&self, event: &LinkUsed);
}

/// Logs share-link events with `tracing` (target `private_storage::share`). The default audit.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

impl ShareAudit for TracingAudit {
    fn issued(&self, e: &LinkIssued) {
        tracing::info!(target: "private_storage::share", link_id = %e.link_id, target = ?e.target, expires = ?e.expires, issued_by = ?e.issued_by, bound_to = ?e.bound_to, "share link issued");
    }
    fn used(&self, e: &LinkUsed) {
        tracing::info!(target: "private_storage::share", link_id = ?e.link_id, target = ?e.target, status = e.status, bytes = ?e.bytes, range = ?e.range, outcome = e.outcome, "share link used");
    }
}

/// What to share: built with [`Share::key`] or [`Share::record`] and the setters below.
#[derive(Debug, Clone)]
pub struct Share {
    target: ShareTarget,
    lifetime: Duration,
    disposition: Option<ContentDisposition>,
    bound_to: Option<String>,
    issued_by: Option<String>,
}

impl Share {
    /// A link to the file `key`, valid for one hour unless [`expires_in`](Self::expires_in) says otherwise.
    pub fn key(key: ObjectKey) -> Self {
        Self::new(ShareTarget::Key(key))
    }

    /// A link to the file of the record `id`.
    pub fn record(id: impl Into<String>) -> Self {
        Self::new(ShareTarget::Record(id.into()))
    }

    fn new(target: ShareTarget) -> Self {
        Self { target, lifetime: Duration::from_secs(3600), disposition: None, bound_to: None, issued_by: None }
    }

    /// How long the link works. Defaults to one hour.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How the file is presented (inline/attachment, optional filename). Defaults to the
    /// service's setting.
    pub fn disposition(mut self, disposition: ContentDisposition) -> Self {
        self.disposition = Some(disposition);
        self
    }

    /// Makes the link work only for this user's session (by [`Identity::id`]). Defaults to anyone.
    pub fn bound_to(mut self, user_id: impl Into<String>) -> Self {
        self.bound_to = Some(user_id.into());
        self
    }

    /// Records who issued the link, for the audit. Defaults to none.
    pub fn issued_by(mut self, user_id: impl Into<String>) -> Self {
        self.issued_by = Some(user_id.into());
        self
    }
}

/// A link just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedLink {
    /// The token (URL-safe).
    pub token: String,
    /// The link: the base URL followed by the token.
    pub url: String,
    /// The link's id (hex), to revoke it.
    pub link_id: String,
    /// When it stops working.
    pub expires: SystemTime,
}

/// A link that verified: what to serve, how, and its id.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) target: ShareTarget,
    pub(crate) disposition: Option<ContentDisposition>,
    pub(crate) link_id: String,
    pub(crate) expires: SystemTime,
}

/// Issues and verifies share links.
///
/// ```
/// use std::time::Duration;
/// use private_storage::{MemoryRevocations, ObjectKey, Share, ShareKeys, ShareLinks};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let keys = ShareKeys::new("k1", b"a secret of at least thirty-two bytes!")?;
/// let links = ShareLinks::new(keys, MemoryRevocations::new()).base_url("/s/");
/// let link = links.issue(Share::key(ObjectKey::new("reports/q1.pdf")?).expires_in(Duration::from_secs(600))).await?;
/// assert!(link.url.starts_with("/s/"));
/// links.revoke(&link).await?; // dead from now on, everywhere the store is shared
/// # Ok::<(), private_storage::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ShareLinks {
    keys: ShareKeys,
    revocations: Arc<dyn RevocationStore>,
    audit: Arc<dyn ShareAudit>,
    max_lifetime: Duration,
    base_url: String,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl fmt::Debug for ShareLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareLinks")
            .field("keys", &self.keys)
            .field("max_lifetime", &self.max_lifetime)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ShareLinks {
    /// Links signed with `keys`, revoked through `revocations`.
    pub fn new(keys: ShareKeys, revocations: impl RevocationStore) -> Self {
        Self {
            keys,
            revocations: Arc::new(revocations),
            audit: Arc::new(TracingAudit),
            max_lifetime: Duration::from_secs(7 * 24 * 3600),
            base_url: "/s/".to_owned(),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// The longest a link may live; longer requests are refused at issue, and links that claim
    /// more (signed under an older setting) are refused at use. Defaults to 7 days.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// Where [`ServeShared`](crate::ServeShared) is mounted: links are this followed by the
    /// token. Defaults to `/s/`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = crate::storage::normalise_base_url(base_url);
        self
    }

    /// Sends link events to `audit`. Defaults to [`TracingAudit`].
    pub fn audit(mut self, audit: impl ShareAudit) -> Self {
        self.audit = Arc::new(audit);
        self
    }

    /// Replaces the clock (for tests and simulations). Defaults to the system time.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The revocation store.
    pub fn revocations(&self) -> &Arc<dyn RevocationStore> {
        &self.revocations
    }

    /// Issues a link.
    ///
    /// # Errors
    /// [`Error::Config`] when the lifetime is zero or exceeds the maximum; a revocation store error.
    pub async fn issue(&self, share: Share) -> Result<IssuedLink> {
        if share.lifetime.is_zero() || share.lifetime > self.max_lifetime {
            return Err(Error::config(
                "share_max_lifetime",
                format!(
                    "a link may live from 1 s to {} s; {} s was asked",
                    self.max_lifetime.as_secs(),
                    share.lifetime.as_secs()
                ),
            ));
        }
        let expires = secs((self.clock)()) + share.lifetime.as_secs().max(1);
        let epoch = self.revocations.epoch(&share.target).await?;
        let (key_id, secret) = self.keys.signing();
        let mut link_id = [0u8; LINK_ID_LEN];
        link_id.fill_with(|| fastrand::u8(..));
        let claims = Claims {
            target: share.target.clone(),
            expires,
            disposition: share.disposition,
            user_tag: share.bound_to.as_deref().map(|u| token::user_tag(secret, u)),
            link_id,
            epoch,
        };
        let token = token::encode(key_id, secret, &claims);
        let link = IssuedLink {
            url: format!("{}{token}", self.base_url),
            token,
            link_id: hex(&link_id),
            expires: UNIX_EPOCH + Duration::from_secs(expires),
        };
        self.audit.issued(&LinkIssued {
            link_id: link.link_id.clone(),
            target: share.target,
            expires: link.expires,
            issued_by: share.issued_by,
            bound_to: share.bound_to,
        });
        Ok(link)
    }

    /// Revokes one link.
    ///
    /// # Errors
    /// A revocation store error.
    pub async fn revoke(&self, link: &IssuedLink) -> Result<()> {
        self.revocations.revoke(&link.link_id, link.expires).await
    }

    /// Revokes every link issued so far for `target` (later links work).
    ///
    /// # Errors
    /// A revocation store error.
    pub async fn revoke_all(&self, target: &ShareTarget) -> Result<()> {
        self.revocations.bump_epoch(target).await.map(|_| ())
    }

    /// The link id of a token this instance signed — whether or not the link has expired or
    /// was revoked — to act on a link someone holds (revoke it by its URL). `None` for a token
    /// that is malformed, forged or signed with a key no longer known.
    ///
    /// ```
    /// use private_storage::{MemoryRevocations, Share, ShareKeys, ShareLinks};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32])?, MemoryRevocations::new());
    /// let link = links.issue(Share::record("42")).await?;
    /// assert_eq!(links.link_id(&link.token), Some(link.link_id));
    /// assert_eq!(links.link_id("forged"), None);
    /// # Ok::<(), private_storage::Error>(()) }).unwrap();
    /// ```
    pub fn link_id(&self, token: &str) -> Option<String> {
        let (key_id, bytes) = token::key_id(token).ok()?;
        let claims = token::verify(&bytes, self.keys.get(&key_id)?).ok()?;
        Some(hex(&claims.link_id))
    }

    pub(crate) fn audit_use(&self, event: &LinkUsed) {
        self.audit.used(event);
    }

    /// Verifies a token for a request from `user`: signature first (constant time), then
    /// expiry, lifetime, binding and revocation. A store that fails refuses (fail closed).
    pub(crate) async fn verify(
        &self,
        token: &str,
        user: Option<&dyn Identity>,
    ) -> std::result::Result<Verified, (Refusal, Option<Verified>)> {
        let (key_id, bytes) = token::key_id(token).map_err(|r| (r, None))?;
        let secret = self.keys.get(&key_id).ok_or((Refusal::UnknownKey, None))?;
        let claims = token::verify(&bytes, secret).map_err(|r| (r, None))?;
        let verified = Verified {
            target: claims.target.clone(),
            disposition: claims.disposition.clone(),
            link_id: hex(&claims.link_id),
            expires: UNIX_EPOCH + Duration::from_secs(claims.expires),
        };
        let refuse = |r: Refusal| Err((r, Some(verified.clone())));
        let now = secs((self.clock)());
        if now >= claims.expires {
            return refuse(Refusal::Expired);
        }
        if claims.expires - now > self.max_lifetime.as_secs() {
            return refuse(Refusal::TooLong);
        }
        if let Some(tag) = claims.user_tag {
            let matches = user.is_some_and(|u| {
                use subtle::ConstantTimeEq;
                bool::from(token::user_tag(secret, u.id()).ct_eq(&tag))
            });
            if !matches {
                return refuse(Refusal::WrongUser);
            }
        }
        let revoked = match self.revocations.is_revoked(&verified.link_id).await {
            Ok(revoked) => revoked,
            Err(e) => {
                tracing::error!(error = %e, "revocation store failed; refusing the link");
                true
            }
        };
        let current = match self.revocations.epoch(&claims.target).await {
            Ok(epoch) => epoch,
            Err(e) => {
                tracing::error!(error = %e, "revocation store failed; refusing the link");
                u32::MAX
            }
        };
        if revoked || current != claims.epoch {
            return refuse(Refusal::Revoked);
        }
        Ok(verified)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::User;
    use std::sync::atomic::{AtomicU64, Ordering};

    const T0: u64 = 1_800_000_000;

    fn keys() -> ShareKeys {
        ShareKeys::new("k2", [2u8; 32]).unwrap().with_key("k1", [1u8; 32]).unwrap()
    }

    fn links_at(keys: ShareKeys, now: Arc<AtomicU64>) -> ShareLinks {
        ShareLinks::new(keys, MemoryRevocations::new())
            .clock(move || UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst)))
    }

    fn report() -> ObjectKey {
        ObjectKey::new("reports/q1.pdf").unwrap()
    }

    #[tokio::test]
    async fn a_link_round_trips_with_its_claims() {
        let now = Arc::new(AtomicU64::new(T0));
        let links = links_at(keys(), now);
        let share = Share::key(report()).disposition(ContentDisposition::attachment().with_filename("Q1 ü.pdf"));
        let link = links.issue(share).await.unwrap();
        assert!(
            link.url.starts_with("/s/")
                && link.token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let ok = links.verify(&link.token, None).await.unwrap();
        assert_eq!(ok.target, ShareTarget::Key(report()));
        assert_eq!(ok.disposition, Some(ContentDisposition::attachment().with_filename("Q1 ü.pdf")));
        assert_eq!(ok.link_id, link.link_id);
        assert_eq!(link.expires, UNIX_EPOCH + Duration::from_secs(T0 + 3600));
    }

    #[tokio::test]
    async fn every_tampered_byte_is_refused() {
        use base64::Engine;
        let links = links_at(keys(), Arc::new(AtomicU64::new(T0)));
        let link = links.issue(Share::key(report()).bound_to("7")).await.unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&link.token).unwrap();
        let user = User::new("7");
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut tampered = bytes.clone();
                tampered[i] ^= flip;
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tampered);
                assert!(links.verify(&token, Some(&user)).await.is_err(), "byte {i} flipped with {flip:#x} verified");
            }
        }
        assert!(links.verify(&link.token, Some(&user)).await.is_ok());
    }

    #[tokio::test]
    async fn a_link_expires_exactly_at_its_expiry() {
        let now = Arc::new(AtomicU64::new(T0));
        let links = links_at(keys(), now.clone());
        let link = links.issue(Share::key(report()).expires_in(Duration::from_secs(60))).await.unwrap();
        now.store(T0 + 59, Ordering::SeqCst);
        assert!(links.verify(&link.token, None).await.is_ok(), "one second before");
        now.store(T0 + 60, Ordering::SeqCst);
        assert_eq!(links.verify(&link.token, None).await.unwrap_err().0, Refusal::Expired, "at the expiry");
    }

    #[tokio::test]
    async fn lifetimes_are_capped_at_issue_and_at_use() {
        let now = Arc::new(AtomicU64::new(T0));
        let capped = links_at(keys(), now.clone()).max_lifetime(Duration::from_secs(3600));
        assert!(capped.issue(Share::key(report()).expires_in(Duration::from_secs(7200))).await.is_err());
        assert!(capped.issue(Share::key(report()).expires_in(Duration::ZERO)).await.is_err());
        let generous = links_at(keys(), now.clone());
        let long = generous.issue(Share::key(report()).expires_in(Duration::from_secs(7200))).await.unwrap();
        assert_eq!(
            capped.verify(&long.token, None).await.unwrap_err().0,
            Refusal::TooLong,
            "signed under an older, longer limit"
        );
    }

    #[tokio::test]
    async fn unknown_and_retired_keys_are_refused_and_rotation_keeps_old_links() {
        let now = Arc::new(AtomicU64::new(T0));
        let old = links_at(ShareKeys::new("k1", [1u8; 32]).unwrap(), now.clone());
        let link = old.issue(Share::key(report())).await.unwrap();
        let rotated = links_at(keys(), now.clone());
        assert!(rotated.verify(&link.token, None).await.is_ok(), "k1 still verifies after k2 took over");
        let new_link = rotated.issue(Share::key(report())).await.unwrap();
        assert_eq!(old.verify(&new_link.token, None).await.unwrap_err().0, Refusal::UnknownKey);
        let retired = links_at(ShareKeys::new("k2", [2u8; 32]).unwrap(), now.clone());
        assert_eq!(retired.verify(&link.token, None).await.unwrap_err().0, Refusal::UnknownKey, "k1 retired");
        let impostor = links_at(ShareKeys::new("k1", [9u8; 32]).unwrap(), now);
        assert_eq!(
            impostor.verify(&link.token, None).await.unwrap_err().0,
            Refusal::BadSignature,
            "same id, other secret"
        );
    }

    #[tokio::test]
    async fn a_bound_link_works_only_for_its_user() {
        let links = links_at(keys(), Arc::new(AtomicU64::new(T0)));
        let link = links.issue(Share::key(report()).bound_to("ada.lovelace@example.org")).await.unwrap();
        assert!(links.verify(&link.token, Some(&User::new("ada.lovelace@example.org"))).await.is_ok());
        assert_eq!(links.verify(&link.token, Some(&User::new("8"))).await.unwrap_err().0, Refusal::WrongUser);
        assert_eq!(links.verify(&link.token, None).await.unwrap_err().0, Refusal::WrongUser);
        let decoded = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &link.token).unwrap();
        assert!(!decoded.windows(3).any(|w| w == b"ada"), "the bound user is a keyed tag, not readable in the token");
    }

    #[tokio::test]
    async fn revocation_kills_one_link_or_every_earlier_link_to_a_file() {
        let links = links_at(keys(), Arc::new(AtomicU64::new(T0)));
        let a = links.issue(Share::key(report())).await.unwrap();
        let b = links.issue(Share::key(report())).await.unwrap();
        let other = links.issue(Share::key(ObjectKey::new("other.pdf").unwrap())).await.unwrap();
        links.revoke(&a).await.unwrap();
        assert_eq!(links.verify(&a.token, None).await.unwrap_err().0, Refusal::Revoked);
        assert!(links.verify(&b.token, None).await.is_ok(), "only that link");
        links.revoke_all(&ShareTarget::Key(report())).await.unwrap();
        assert_eq!(
            links.verify(&b.token, None).await.unwrap_err().0,
            Refusal::Revoked,
            "the epoch bump kills older links"
        );
        assert!(links.verify(&other.token, None).await.is_ok(), "other files keep theirs");
        let c = links.issue(Share::key(report())).await.unwrap();
        assert!(links.verify(&c.token, None).await.is_ok(), "links issued after the bump work");
    }

    #[tokio::test]
    async fn garbage_is_refused_without_panicking() {
        let links = links_at(keys(), Arc::new(AtomicU64::new(T0)));
        for token in ["", "x", "AAAA", "!!!!", &"A".repeat(10_000), "AQJrMg", "AQJrMgE"] {
            assert!(links.verify(token, None).await.is_err(), "{token:?}");
        }
    }

    #[test]
    fn keys_are_validated_and_never_shown() {
        assert!(ShareKeys::new("k", [0u8; 31]).is_err());
        assert!(ShareKeys::new("bad id", [0u8; 32]).is_err());
        assert!(ShareKeys::new("k", [0u8; 32]).unwrap().with_key("k", [1u8; 32]).is_err());
        assert!(ShareKeys::parse("").is_err());
        assert!(ShareKeys::parse("k1=not base64!").is_err());
        let keys = ShareKeys::parse("k1=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE").unwrap();
        assert!(!format!("{keys:?}").contains("MDEy"));
    }
}
