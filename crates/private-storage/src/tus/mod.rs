//! Resumable uploads over the tus 1.0.0 protocol (feature `tus`), checked by an
//! [`UploadPolicy`] while the bytes arrive.
//!
//! [`Resumable`] is the protocol's state machine over a policy and a [`PartialStore`]: create an
//! upload, append to it at its offset, ask where it is, end it. It holds the checks a multipart
//! upload gets, at the earliest point each can be made:
//!
//! - a declared length over `max_file_size` is refused at creation (`413`); with a deferred
//!   length, the request that would cross the limit is refused and its bytes are not kept;
//! - the type is sniffed from the first bytes as soon as they are stored (usually the first
//!   `PATCH`): a refused type ends the upload (`415`);
//! - once complete, the bytes are moved into the storage under the policy's name and checked
//!   whole, as [`UploadPolicy::save`] checks a stream, and only then handed to the caller;
//! - `PATCH`es to one upload run one at a time (a newcomer asks the running one to stop where
//!   it is, then finds the offset it must resume from: `409` if it sent another);
//! - an acknowledged offset is durable; bytes of a request cut short are kept, those of a
//!   refused one are not; an upload left alone past its lifetime is swept.
//!
//! [`TusService`] answers the HTTP side for apps that mount it as a tower service; the server
//! crate drives [`Resumable`] from its own domain layer with the same [`http`] helpers.

mod protocol;
mod service;
mod store;

pub mod http;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

#[cfg(feature = "s3")]
pub use crate::storage::S3Partials;
pub use protocol::{CHECKSUM_ALGORITHMS, Checksum, EXTENSIONS, Metadata, OFFSET_OCTET_STREAM, VERSION};
pub use service::TusService;
pub use store::{LocalPartials, PartialStore, UploadInfo};

use crate::storage::ByteStream;
use crate::upload::Sha256Of;
use crate::{Error, PutMode, Result, SavedFile, UploadPolicy};

/// What can go wrong in the protocol itself (the policy's refusals are the crate's usual
/// [`Error`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// No such upload, or not the asker's.
    #[error("There is no such upload.")]
    NoSuchUpload,
    /// The upload expired or was ended (tus §Expiration: 410).
    #[error("This upload has expired or was ended.")]
    Gone,
    /// The request's `Upload-Offset` is not where the upload is (tus §PATCH: 409).
    #[error("The upload is at offset {current}.")]
    OffsetMismatch {
        /// Where the upload is.
        current: u64,
    },
    /// The body does not match its `Upload-Checksum` (tus §Checksum: 460); nothing was kept.
    #[error("The request's bytes do not match their checksum.")]
    ChecksumMismatch,
    /// The request names another protocol version (tus §Tus-Resumable: 412).
    #[error("This server speaks tus 1.0.0.")]
    UnsupportedVersion,
    /// A `PATCH` body that is not `application/offset+octet-stream` (tus §PATCH: 415).
    #[error("A PATCH body must be application/offset+octet-stream.")]
    WrongContentType,
    /// The body goes past the upload's `Upload-Length`; nothing of it was kept.
    #[error("The request goes past the upload's length.")]
    PastLength,
    /// A malformed request.
    #[error("Bad request: {0}")]
    BadRequest(String),
    /// Anonymous requests cannot create uploads.
    #[error("Log in to upload.")]
    LoginRequired,
}

impl TusError {
    /// The HTTP status of this error.
    pub fn status(&self) -> ::http::StatusCode {
        use ::http::StatusCode;
        match self {
            TusError::NoSuchUpload => StatusCode::NOT_FOUND,
            TusError::Gone => StatusCode::GONE,
            TusError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            TusError::ChecksumMismatch => StatusCode::from_u16(460).expect("460 is a valid status"),
            TusError::UnsupportedVersion => StatusCode::PRECONDITION_FAILED,
            TusError::WrongContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TusError::PastLength => StatusCode::PAYLOAD_TOO_LARGE,
            TusError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TusError::LoginRequired => StatusCode::UNAUTHORIZED,
        }
    }
}

/// The bytes of one `PATCH` (or of a creation request that carries some).
pub struct Patch {
    /// The client's `Upload-Offset`.
    pub offset: u64,
    /// `Upload-Length`, when the client sends it now (a deferred length).
    pub length: Option<u64>,
    /// `Upload-Checksum`: the body is kept only if it matches.
    pub checksum: Option<Checksum>,
    /// `Content-Length`, when sent: a body that cannot fit is refused before it is read.
    pub content_length: Option<u64>,
    /// The body.
    pub data: ByteStream,
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patch").field("offset", &self.offset).field("length", &self.length).finish_non_exhaustive()
    }
}

/// What a `PATCH` left: the upload's state, and the stored file once it is complete.
#[derive(Debug)]
#[non_exhaustive]
pub struct Patched {
    /// The upload after the request.
    pub info: UploadInfo,
    /// The checked file, when this request completed the upload.
    pub saved: Option<SavedFile>,
}

/// How long an upload lives without a `PATCH`, by default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The tus state machine over an upload policy; see the [module docs](self).
pub struct Resumable<R: ?Sized = ()> {
    policy: UploadPolicy<R>,
    partials: Arc<dyn PartialStore>,
    lifetime: Duration,
    active: Arc<Mutex<HashMap<String, Arc<Active>>>>,
}

impl<R: ?Sized> Clone for Resumable<R> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            partials: self.partials.clone(),
            lifetime: self.lifetime,
            active: self.active.clone(),
        }
    }
}

impl<R: ?Sized> std::fmt::Debug for Resumable<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumable").field("partials", &self.partials).field("lifetime", &self.lifetime).finish()
    }
}

/// The one request that may touch an upload now, and how to ask it to stop.
#[derive(Default)]
struct Active {
    lock: Arc<tokio::sync::Mutex<()>>,
    stop: tokio::sync::Notify,
}

/// Held while a request works on an upload.
struct Turn {
    active: Arc<Active>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    registry: Arc<Mutex<HashMap<String, Arc<Active>>>>,
    id: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // The registry's and ours: nobody else waits for this upload.
        if Arc::strong_count(&self.active) == 2 {
            registry.remove(&self.id);
        }
    }
}

impl<R: ?Sized + Sync> Resumable<R> {
    /// Uploads checked by `policy`, their bytes kept in `partials` until complete. `partials`
    /// must finish into the policy's storage.
    pub fn new(policy: UploadPolicy<R>, partials: impl PartialStore) -> Self {
        Self::from_arc(policy, Arc::new(partials))
    }

    /// As [`Resumable::new`], with a store already shared (or chosen at run time).
    pub fn from_arc(policy: UploadPolicy<R>, partials: Arc<dyn PartialStore>) -> Self {
        Self { policy, partials, lifetime: DEFAULT_LIFETIME, active: Arc::default() }
    }

    /// How long an upload lives after its last `PATCH` (default [`DEFAULT_LIFETIME`]).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The largest upload accepted (`Tus-Max-Size`).
    pub fn max_size(&self) -> Option<u64> {
        self.policy.size_limit()
    }

    /// Creates an upload for `owner`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a length over the policy's limit, [`Error::BadUpload`] for an
    /// empty one, the store's errors.
    pub async fn create(&self, owner: &str, length: Option<u64>, metadata: Metadata) -> Result<UploadInfo> {
        if let (Some(limit), Some(length)) = (self.max_size(), length)
            && length > limit
        {
            return Err(Error::TooLarge { limit });
        }
        if length == Some(0) {
            return Err(Error::BadUpload { message: "The submitted file is empty.".to_owned() });
        }
        let now = SystemTime::now();
        let info = UploadInfo {
            id: new_id(),
            owner: owner.to_owned(),
            length,
            offset: 0,
            metadata,
            created: now,
            expires: now + self.lifetime,
            checked: false,
            completed: false,
            sha256_state: Some(hash_state::save(&sha2::Sha256::default())),
        };
        self.partials.create(&info).await?;
        Ok(info)
    }

    /// The upload `id` of `owner`.
    ///
    /// # Errors
    /// [`TusError::NoSuchUpload`] (also for another owner's), [`TusError::Gone`] once expired.
    pub async fn info(&self, owner: &str, id: &str) -> Result<UploadInfo> {
        let info = self.partials.load(id).await?.filter(|i| i.owner == owner).ok_or(TusError::NoSuchUpload)?;
        if info.expires <= SystemTime::now() {
            return Err(TusError::Gone.into());
        }
        Ok(info)
    }

    /// Appends a request's bytes to the upload `id` of `owner`; completes it (for `record`,
    /// as [`UploadPolicy::save`] names files) when they are the last.
    ///
    /// # Errors
    /// As [`Resumable::info`]; [`TusError::OffsetMismatch`], [`TusError::PastLength`],
    /// [`TusError::ChecksumMismatch`] and [`Error::TooLarge`] keep nothing of the request; a
    /// refused type ([`Error::UnsupportedType`]) ends the upload; a body that breaks off keeps
    /// what arrived and returns its error.
    pub async fn patch(&self, record: &R, owner: &str, id: &str, patch: Patch) -> Result<Patched> {
        // Only the owner may make the running request stop.
        self.info(owner, id).await?;
        let turn = self.turn(id).await;
        let mut info = self.info(owner, id).await?;
        if patch.offset != info.offset {
            return Err(TusError::OffsetMismatch { current: info.offset }.into());
        }
        if info.completed {
            // Done already (the client lost our answer): nothing more may be added.
            return match patch.length.is_none_or(|l| Some(l) == info.length) && is_empty(patch.data).await {
                true => Ok(Patched { info, saved: None }),
                false => Err(TusError::PastLength.into()),
            };
        }
        if let Some(length) = patch.length {
            self.set_length(&mut info, length).await?;
        }
        if let (Some(total), Some(sent)) = (info.length, patch.content_length)
            && info.offset.saturating_add(sent) > total
        {
            return Err(TusError::PastLength.into());
        }
        let before = info.offset;
        let checked = Arc::new(Mutex::new(Checked::default()));
        let data = self.guarded(&info, patch.data, patch.checksum, &checked, &turn.active);
        let (offset, outcome) = self.partials.append(&info, data).await;
        let Checked { refused, ended, with_checksum, whole, hashed_to } =
            std::mem::take(&mut *checked.lock().unwrap_or_else(|e| e.into_inner()));
        // A request with a checksum that did not reach its end cannot be checked: not kept.
        let refused = refused.or_else(|| (with_checksum && !ended).then(|| TusError::ChecksumMismatch.into()));
        if let Some(error) = refused {
            self.partials.truncate(&info, before).await?;
            return Err(error);
        }
        info.offset = offset;
        // The running digest holds if it saw exactly the bytes stored.
        info.sha256_state = whole.filter(|_| hashed_to == offset).map(|h| hash_state::save(&h));
        info.expires = SystemTime::now() + self.lifetime;
        if !info.checked && (offset as usize >= self.policy.head_len() || Some(offset) == info.length) {
            let head = self.partials.head(id, self.policy.head_len()).await?;
            if let Err(e) = self.policy.check_head(&head, info.metadata.filetype(), &filename(&info)) {
                self.partials.remove(id).await?;
                return Err(e);
            }
            info.checked = true;
        }
        self.partials.save(&info).await?;
        outcome?;
        let saved = match info.length {
            Some(length) if length == info.offset => Some(self.finish(record, &info).await?),
            _ => None,
        };
        drop(turn);
        Ok(Patched { info, saved })
    }

    /// Sets a deferred length (tus §Upload-Defer-Length: sent with a later `PATCH`, once).
    async fn set_length(&self, info: &mut UploadInfo, length: u64) -> Result<()> {
        match info.length {
            Some(known) if known == length => Ok(()),
            Some(_) => Err(TusError::BadRequest("Upload-Length cannot change".into()).into()),
            None => {
                if let Some(limit) = self.max_size().filter(|&l| length > l) {
                    return Err(Error::TooLarge { limit });
                }
                if length < info.offset || length == 0 {
                    return Err(TusError::BadRequest("Upload-Length is less than the bytes stored".into()).into());
                }
                info.length = Some(length);
                self.partials.save(info).await
            }
        }
    }

    /// Ends the upload `id` of `owner` and forgets its bytes (tus §Termination).
    ///
    /// # Errors
    /// As [`Resumable::info`]; the store's.
    pub async fn terminate(&self, owner: &str, id: &str) -> Result<()> {
        let mine = |info: Option<UploadInfo>| info.filter(|i| i.owner == owner).ok_or(TusError::NoSuchUpload);
        mine(self.partials.load(id).await?)?;
        let _turn = self.turn(id).await;
        mine(self.partials.load(id).await?)?;
        self.partials.remove(id).await
    }

    /// Removes every upload past its expiry; returns how many.
    ///
    /// # Errors
    /// The store's.
    pub async fn sweep(&self) -> Result<usize> {
        let mut removed = 0;
        for id in self.partials.ids().await? {
            let Ok(turn) = self.try_turn(&id) else { continue };
            if let Some(info) = self.partials.load(&id).await?
                && info.expires <= SystemTime::now()
            {
                self.partials.remove(&id).await?;
                removed += 1;
            }
            drop(turn);
        }
        Ok(removed)
    }

    /// Moves the complete bytes under the policy's name for `record` and checks them whole.
    async fn finish(&self, record: &R, info: &UploadInfo) -> Result<SavedFile> {
        let name = filename(info);
        let key = self.policy.key_for(record, &name)?;
        let mode = if self.policy.overwrites() { PutMode::Overwrite } else { PutMode::CreateUnique };
        let stored = self.partials.finish(info, &key, mode).await?;
        let digest = match info.sha256_state.as_deref().and_then(hash_state::load) {
            Some(hasher) => {
                use sha2::Digest;
                Sha256Of::Written { sha256: crate::upload::hex(&hasher.finalize()), size: info.offset }
            }
            None => Sha256Of::Read { expected: None },
        };
        self.policy.check_kept_as(&stored.key, &name, info.metadata.filetype(), digest).await
    }

    /// Waits for this upload's turn, asking the request that has it to stop where it is.
    async fn turn(&self, id: &str) -> Turn {
        let active = {
            let mut registry = self.active.lock().unwrap_or_else(|e| e.into_inner());
            registry.entry(id.to_owned()).or_default().clone()
        };
        active.stop.notify_waiters();
        let guard = active.lock.clone().lock_owned().await;
        Turn { active, _guard: guard, registry: self.active.clone(), id: id.to_owned() }
    }

    /// This upload's turn if nobody has it.
    fn try_turn(&self, id: &str) -> std::result::Result<Turn, ()> {
        let mut registry = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let active = registry.entry(id.to_owned()).or_default().clone();
        let guard = active.lock.clone().try_lock_owned().map_err(|_| ())?;
        drop(registry);
        Ok(Turn { active, _guard: guard, registry: self.active.clone(), id: id.to_owned() })
    }

    /// The request's bytes as the store will write them: ended early (keeping what came) when
    /// another request asks for the upload; cut, with the refusal recorded in `checked`, when
    /// they go past the length or the policy's limit or do not match their checksum.
    fn guarded(
        &self,
        info: &UploadInfo,
        data: ByteStream,
        checksum: Option<Checksum>,
        checked: &Arc<Mutex<Checked>>,
        active: &Arc<Active>,
    ) -> ByteStream {
        let limit = match (info.length, self.max_size()) {
            (Some(length), _) => Some((length, Error::from(TusError::PastLength))),
            (None, Some(max)) => Some((max, Error::TooLarge { limit: max })),
            (None, None) => None,
        };
        let hasher = checksum.as_ref().map(|c| (c.hasher(), c.digest.clone()));
        {
            let mut checked = checked.lock().unwrap_or_else(|e| e.into_inner());
            checked.with_checksum = hasher.is_some();
            checked.whole = info.sha256_state.as_deref().and_then(hash_state::load);
            checked.hashed_to = info.offset;
        }
        let state = Guard { data, offset: info.offset, limit, hasher, checked: checked.clone() };
        let active = active.clone();
        let stop = async move { active.stop.notified().await };
        futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.data.next().await {
                Some(Ok(chunk)) => {
                    state.offset += chunk.len() as u64;
                    if let Some((limit, _)) = &state.limit
                        && state.offset > *limit
                    {
                        let error = state.limit.take().expect("a limit").1;
                        return Some(state.refuse(error));
                    }
                    if let Some((h, _)) = &mut state.hasher {
                        h.update(&chunk);
                    }
                    state.checked.lock().unwrap_or_else(|e| e.into_inner()).digest(&chunk);
                    Some((Ok(chunk), Some(state)))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    if let Some((h, expected)) = state.hasher.take()
                        && h.finish() != expected
                    {
                        return Some(state.refuse(TusError::ChecksumMismatch.into()));
                    }
                    state.checked.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
                    None
                }
            }
        })
        .take_until(stop)
        .boxed()
    }
}

/// What the guard of one request's bytes found.
#[derive(Default)]
struct Checked {
    /// Why the bytes were cut (none of them is kept).
    refused: Option<Error>,
    /// Whether the body reached its end (and its checksum, if any, matched).
    ended: bool,
    with_checksum: bool,
    /// The whole upload's running SHA-256, and the offset it has seen up to.
    whole: Option<sha2::Sha256>,
    hashed_to: u64,
}

impl Checked {
    /// Adds a chunk handed to the store to the running digest.
    fn digest(&mut self, chunk: &[u8]) {
        use sha2::Digest;
        if let Some(whole) = &mut self.whole {
            whole.update(chunk);
            self.hashed_to += chunk.len() as u64;
        }
    }
}

/// The running SHA-256 of an upload, kept in its state between requests.
mod hash_state {
    use base64::Engine;
    use sha2::digest::common::hazmat::{SerializableState, SerializedState};

    pub(super) fn save(hasher: &sha2::Sha256) -> String {
        base64::engine::general_purpose::STANDARD.encode(hasher.serialize().as_slice())
    }

    pub(super) fn load(saved: &str) -> Option<sha2::Sha256> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(saved).ok()?;
        let state = SerializedState::<sha2::Sha256>::try_from(bytes.as_slice()).ok()?;
        sha2::Sha256::deserialize(&state).ok()
    }
}

/// The state of [`Resumable::guarded`]'s stream.
struct Guard {
    data: ByteStream,
    offset: u64,
    limit: Option<(u64, Error)>,
    hasher: Option<(protocol::Hasher, Vec<u8>)>,
    checked: Arc<Mutex<Checked>>,
}

impl Guard {
    /// Records the refusal and ends the stream with an error, so the store stops writing.
    fn refuse(self, error: Error) -> (Result<bytes::Bytes>, Option<Guard>) {
        self.checked.lock().unwrap_or_else(|e| e.into_inner()).refused = Some(error);
        (Err(Error::BadUpload { message: "refused".into() }), None)
    }
}

/// Whether a body has no bytes (reading at most one chunk of it).
async fn is_empty(mut data: ByteStream) -> bool {
    loop {
        match data.next().await {
            None => return true,
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(_) => return false,
        }
    }
}

fn filename(info: &UploadInfo) -> String {
    info.metadata.filename().unwrap_or("file").to_owned()
}

/// 128 bits from the OS's random source, base64url (tus ids are part of the upload URL).
fn new_id() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
