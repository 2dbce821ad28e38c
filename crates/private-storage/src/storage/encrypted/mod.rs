//! Encryption at rest over any storage, with byte ranges (feature `encryption`).

mod format;

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt, stream};
use zeroize::Zeroize;

use self::format::{Aes256Gcm, CHUNK, HEADER, Header, HeaderError, MAX_KEY_ID, SEALED_CHUNK, TAG};
use super::{
    ByteStream, GetOptions, GetResult, ObjectMeta, Payload, PutMode, PutOptions, PutStream, Storage, UNIQUE_ATTEMPTS,
    check_range, collect, with_random_suffix,
};
use crate::{Error, ObjectKey, Result};

/// Key-encryption keys (KEKs), newest first: the newest wraps the data key of every new
/// object (and every object [`EncryptedStorage::rewrap`] touches); the others stay able to
/// read what they wrapped until they are removed.
///
/// Each KEK is 32 random bytes with an id of at most 31 letters, digits, `.`, `_` or `-`
/// that is stored in each object's header, so that a reader knows which KEK to use. The
/// `Debug` form shows the ids only.
///
/// ```
/// use private_storage::Keyring;
///
/// let entry = Keyring::generate_entry("2026-12")?; // "2026-12=<base64 of 32 random bytes>"
/// let older = Keyring::generate_entry("2026-01")?;
/// let keys = Keyring::parse(&format!("{entry}, {older}"))?;
/// assert_eq!(keys.ids().collect::<Vec<_>>(), ["2026-12", "2026-01"]);
/// assert!(!format!("{keys:?}").contains(entry.split_once('=').unwrap().1));
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<(String, Aes256Gcm)>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids().collect::<Vec<_>>()).finish()
    }
}

impl Keyring {
    /// Parses `id=base64` entries, newest first, separated by commas, spaces or newlines
    /// (standard base64 of 32 bytes, padded or not).
    ///
    /// # Errors
    /// [`Error::Config`] (setting `encryption_keys`) for an empty list, a malformed entry, an
    /// id that is too long or holds other characters, a key that is not 32 bytes, or a repeated
    /// id. The message never holds key material.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for entry in spec.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()) {
            let Some((id, encoded)) = entry.split_once('=') else {
                return Err(keys_error(
                    "each entry is id=base64 (32 random bytes, e.g. from `openssl rand -base64 32`)",
                ));
            };
            check_key_id(id)?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(keys_error(format!("the id {id:?} is given twice")));
            }
            let mut raw = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| keys_error(format!("the key of {id:?} is not base64")))?;
            if raw.len() != 32 {
                raw.zeroize();
                return Err(keys_error(format!("the key of {id:?} is not 32 bytes")));
            }
            let mut bytes: [u8; 32] = raw.as_slice().try_into().expect("32 bytes");
            let cipher = format::aes_256_gcm(&bytes);
            bytes.zeroize();
            raw.zeroize();
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(keys_error("no key is given (expected id=base64, newest first)"));
        }
        Ok(Self { keys: Arc::new(keys) })
    }

    /// A new entry `id=<base64 of 32 random bytes>` for [`Keyring::parse`].
    ///
    /// # Errors
    /// [`Error::Config`] when `id` is not a valid KEK id.
    pub fn generate_entry(id: &str) -> Result<String> {
        check_key_id(id)?;
        let mut raw = [0u8; 32];
        format::fill_random(&mut raw);
        let entry = format!("{id}={}", base64::engine::general_purpose::STANDARD.encode(raw));
        raw.zeroize();
        Ok(entry)
    }

    /// The KEK ids, newest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    fn newest(&self) -> (&str, &Aes256Gcm) {
        let (id, kek) = &self.keys[0];
        (id, kek)
    }

    fn get(&self, id: &str) -> Option<&Aes256Gcm> {
        self.keys.iter().find(|(known, _)| known == id).map(|(_, kek)| kek)
    }
}

fn check_key_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(keys_error(format!("the id {id:?} is not 1 to {MAX_KEY_ID} letters, digits, '.', '_' or '-'")))
    }
}

fn keys_error(message: impl Into<String>) -> Error {
    Error::config("encryption_keys", message)
}

/// A storage that encrypts every object it writes to `S` and decrypts what it reads, serving
/// any byte range by decrypting only the chunks the range touches.
///
/// Each object gets a random 256-bit data key, wrapped by the newest KEK of the [`Keyring`]
/// into a small header; the content follows in 64 KiB chunks sealed with AES-256-GCM, each
/// bound to the object's key, its index and whether it is the last. What this means:
///
/// - **Confidentiality**: whoever reads the stored objects (a stolen disk, a leaked bucket
///   credential, the S3 provider) sees ciphertext and sizes (each object is 208 bytes + 16
///   bytes per 64 KiB longer), never content.
/// - **Integrity**: a changed byte, a truncated object, reordered chunks, a chunk from another
///   object and a whole object moved to another key all fail authentication. A read returns
///   [`Error::Integrity`] before its first byte when the damage is in its first chunk, and
///   otherwise ends its stream with that error before any byte of the damaged chunk — never
///   wrong bytes. (Restoring an *older version of the same key* is not detected: that needs
///   state outside the storage, such as the server's recorded SHA-256.)
/// - **Metadata describes the content**: sizes, ranges and `list` are of the plaintext; the
///   ETag and modification time are the backend's (a rewrap is a new version for caches).
/// - **No hand-off**: [`Storage::local_path`] and [`Storage::presigned_get`] are `None` and
///   [`Storage::serves_stored_bytes`] is `false`, so the nginx, Apache and presigned delivery
///   modes refuse to serve these objects; stream delivery decrypts.
/// - [`PutMode::CreateUnique`] picks the free key before writing (the key is sealed into every
///   chunk): concurrent writers in one process always get distinct keys; a writer in another
///   process taking the same free key in the same instant makes this write fail with
///   [`Error::AlreadyExists`] rather than land elsewhere.
///
/// ```
/// use private_storage::{EncryptedStorage, GetOptions, Keyring, MemoryStorage, ObjectKey, Storage, StorageExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let raw = MemoryStorage::new();
/// let keys = Keyring::parse(&Keyring::generate_entry("k1")?)?;
/// let storage = EncryptedStorage::new(raw.clone(), keys)?;
/// let key = ObjectKey::new("notes/a.txt")?;
/// storage.put_bytes(&key, "hello, world").await?;
///
/// assert_eq!(storage.read(&key).await?, "hello, world");
/// let range = storage.get(&key, GetOptions::default().with_range(7..12)).await?;
/// assert_eq!(range.bytes().await?, "world");
/// assert!(!raw.read(&key).await?.windows(5).any(|w| w == b"hello")); // ciphertext at rest
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct EncryptedStorage<S> {
    inner: S,
    keys: Keyring,
    /// Keys being written by this storage's `CreateUnique` puts.
    writing: Arc<Mutex<HashSet<ObjectKey>>>,
}

impl<S: fmt::Debug> fmt::Debug for EncryptedStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStorage").field("inner", &self.inner).field("keys", &self.keys).finish()
    }
}

/// What [`EncryptedStorage::rewrap`] did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rewrap {
    /// Its data key was already wrapped by the newest KEK alone.
    Unchanged,
    /// Its data key is now wrapped by the newest KEK alone; its content bytes are untouched.
    Rewrapped,
}

impl<S: Storage> EncryptedStorage<S> {
    /// Encrypts what is written to `inner` under `keys`.
    ///
    /// # Errors
    /// None today; fallible so that a future check of `inner` is not a breaking change.
    pub fn new(inner: S, keys: Keyring) -> Result<Self> {
        Ok(Self { inner, keys, writing: Arc::default() })
    }

    /// The storage holding the ciphertext.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The keyring.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// The ids of the KEKs the object's data key is wrapped under: one, or two for an object a
    /// rotation was interrupted on (both can read it). Reads only the header; the ids need not
    /// be in the keyring.
    ///
    /// # Errors
    /// As [`Storage::get`]; [`Error::Integrity`] for an object without a valid header.
    pub async fn key_ids(&self, key: &ObjectKey) -> Result<Vec<String>> {
        let (header, _) = self.read_header(key, None).await?;
        Ok(header.slots().iter().flatten().map(|slot| slot.key_id.clone()).collect())
    }

    /// Wraps the object's data key under the newest KEK and removes every other wrap, without
    /// touching its content (same size, same content bytes). Where the backend can write in
    /// place ([`Storage::overwrite_at`]: a local folder) this writes the new wrap into the
    /// header's free slot, makes it durable, then clears the old slot — a crash in between
    /// leaves an object both KEKs can read. Elsewhere (S3) the object is rewritten whole, its
    /// content copied byte for byte, conditional on its ETag at the start. Run it again after
    /// an interruption: an object already done is [`Rewrap::Unchanged`].
    ///
    /// # Errors
    /// As [`Storage::get`]; [`Error::Integrity`] when no configured KEK opens the data key;
    /// [`Error::PreconditionFailed`] when the object changed meanwhile.
    pub async fn rewrap(&self, key: &ObjectKey) -> Result<Rewrap> {
        let (mut header, meta) = self.read_header(key, None).await?;
        let (newest_id, newest) = self.keys.newest();
        let slots = header.slots().clone();
        let only_newest = match &slots {
            [Some(slot), None] | [None, Some(slot)] => {
                slot.key_id == newest_id && header.open_slot(slot, newest).is_some()
            }
            _ => false,
        };
        if only_newest {
            return Ok(Rewrap::Unchanged);
        }
        let mut data_key = self.open_data_key(key, &header)?;
        // Backends that write in place have ETags (a local file's: its mtime and size).
        let etag = meta.etag.clone().unwrap_or_default();
        // In place: the free slot (or the one not holding a readable wrap) gets the new wrap.
        let target = slots.iter().position(Option::is_none).unwrap_or_else(|| {
            let readable = |i: usize| slots[i].as_ref().is_some_and(|s| self.opens(&header, s));
            if readable(0) { 1 } else { 0 }
        });
        let new_slot = header.seal_slot(newest_id, newest, &data_key);
        data_key.zeroize();
        header.set_slot(target, Some(new_slot));
        let other = 1 - target;
        let written =
            self.inner.overwrite_at(key, Header::slot_offset(target), &header.slot_bytes(target), &etag).await?;
        header.set_slot(other, None);
        match written {
            Some(meta) => {
                let etag = meta.etag.unwrap_or_default();
                self.inner.overwrite_at(key, Header::slot_offset(other), &header.slot_bytes(other), &etag).await?;
            }
            None => {
                // Whole-object rewrite: the new header, then the stored chunks as they are.
                let old = self.inner.get(key, GetOptions { range: None, if_match: meta.etag }).await?;
                let content_type = old.meta.content_type.clone();
                let mut body = old.into_stream();
                let mut head = BytesMut::new();
                while (head.len() as u64) < HEADER {
                    match body.next().await {
                        Some(chunk) => head.extend_from_slice(&chunk?),
                        None => return Err(integrity(key, "the object ends inside its header")),
                    }
                }
                let rest = head.split_off(HEADER as usize).freeze();
                let new_head = Bytes::from(header.to_bytes());
                let stream = stream::iter([Ok(new_head), Ok(rest)]).chain(body).boxed();
                let options = PutOptions { content_type, ..PutOptions::default() };
                self.inner.put(key, stream, options).await?;
            }
        }
        Ok(Rewrap::Rewrapped)
    }

    fn opens(&self, header: &Header, slot: &format::Slot) -> bool {
        self.keys.get(&slot.key_id).is_some_and(|kek| header.open_slot(slot, kek).is_some())
    }

    /// The data key, from the first slot a configured KEK opens.
    fn open_data_key(&self, key: &ObjectKey, header: &Header) -> Result<[u8; 32]> {
        let mut ids = Vec::new();
        for slot in header.slots().iter().flatten() {
            if let Some(data_key) = self.keys.get(&slot.key_id).and_then(|kek| header.open_slot(slot, kek)) {
                return Ok(data_key);
            }
            ids.push(slot.key_id.as_str());
        }
        Err(integrity(key, format!("no configured key opens its data key (wrapped under {})", ids.join(", "))))
    }

    /// The header and the backend's metadata, read with `if_match` (the backend's ETag).
    async fn read_header(&self, key: &ObjectKey, if_match: Option<String>) -> Result<(Header, ObjectMeta)> {
        let mut options = GetOptions::default().with_range(0..HEADER);
        options.if_match = if_match;
        let got = match self.inner.get(key, options).await {
            Err(Error::InvalidRange { .. }) => return Err(integrity(key, HeaderError::NotEncrypted)),
            other => other?,
        };
        let meta = got.meta.clone();
        let bytes = got.bytes().await?;
        let header = Header::parse(&bytes).map_err(|e| integrity(key, e))?;
        Ok((header, meta))
    }

    /// The chunk cipher of an object, from its header.
    fn cipher(&self, key: &ObjectKey, header: &Header) -> Result<format::ChunkCipher> {
        let mut data_key = self.open_data_key(key, header)?;
        let cipher = header.chunks(&data_key, key.as_str());
        data_key.zeroize();
        Ok(cipher)
    }

    /// A free key for a `CreateUnique` write, held in `writing` until the returned guard drops.
    async fn reserve_unique(&self, key: &ObjectKey) -> Result<Reservation> {
        for attempt in 0..UNIQUE_ATTEMPTS {
            let candidate = if attempt == 0 { key.clone() } else { with_random_suffix(key) };
            if !self.writing.lock().expect("not poisoned").insert(candidate.clone()) {
                continue;
            }
            let reservation = Reservation { key: candidate, writing: Arc::clone(&self.writing) };
            match self.inner.head(&reservation.key).await {
                Err(e) if e.is_not_found() => return Ok(reservation),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists { key: key.clone() })
    }
}

/// A key reserved for one write; released when dropped.
struct Reservation {
    key: ObjectKey,
    writing: Arc<Mutex<HashSet<ObjectKey>>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.writing.lock().expect("not poisoned").remove(&self.key);
    }
}

/// The cipher of an unfinished upload's bytes (feature `tus`): AES-256-CTR under a random key
/// per upload, so that bytes can be written at any offset and cut back. It only hides them: the
/// upload's SHA-256, kept as its bytes arrive, is what vouches for them when it is finished.
#[cfg(feature = "tus")]
pub(crate) struct PartialCipher {
    key: [u8; 32],
    iv: [u8; 8],
}

#[cfg(feature = "tus")]
impl Drop for PartialCipher {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

#[cfg(feature = "tus")]
impl PartialCipher {
    /// The stored header (as an object's: a file id and the key wrapped by the newest KEK) and
    /// the cipher of a new upload.
    pub(crate) fn create(keys: &Keyring) -> (Vec<u8>, Self) {
        let mut key = [0u8; 32];
        format::fill_random(&mut key);
        let (kek_id, kek) = keys.newest();
        let header = Header::new(kek_id, kek, &key);
        let iv = header.file_id()[..8].try_into().expect("16-byte file id");
        (header.to_bytes(), Self { key, iv })
    }

    /// The cipher of an upload from its stored header.
    pub(crate) fn open(keys: &Keyring, header: &[u8], id: &str) -> Result<Self> {
        let header = Header::parse(header).map_err(|e| Error::storage("tus", format!("upload {id}: {e}")))?;
        for slot in header.slots().iter().flatten() {
            if let Some(key) = keys.get(&slot.key_id).and_then(|kek| header.open_slot(slot, kek)) {
                let iv = header.file_id()[..8].try_into().expect("16-byte file id");
                return Ok(Self { key, iv });
            }
        }
        Err(Error::storage("tus", format!("upload {id}: no configured key opens its key")))
    }

    /// The size of the header before the bytes.
    pub(crate) const HEADER: u64 = HEADER;

    /// Encrypts or decrypts `buf`, the bytes at `position` of the upload, in place.
    pub(crate) fn apply(&self, position: u64, buf: &mut [u8]) {
        use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&self.iv);
        let mut cipher = ctr::Ctr64BE::<aes::Aes256>::new(&self.key.into(), &iv.into());
        cipher.seek(position);
        cipher.apply_keystream(buf);
    }
}

fn integrity(key: &ObjectKey, message: impl fmt::Display) -> Error {
    Error::Integrity { key: key.clone(), message: message.to_string() }
}

/// The content's metadata from the backend's: the content size; the ETag marked as this
/// representation's (`"pse-…"`), so it never equals the ciphertext's.
fn content_meta(mut meta: ObjectMeta) -> Result<ObjectMeta> {
    meta.size = format::content_len(meta.size).ok_or_else(|| {
        integrity(&meta.key, format_args!("{} bytes is not the size of an encrypted object", meta.size))
    })?;
    meta.etag = meta.etag.map(|etag| format!("\"pse-{}", etag.trim_start_matches('"')));
    Ok(meta)
}

/// The backend's ETag for one of ours; `None` for a tag we never gave out.
fn backend_etag(etag: &str) -> Option<String> {
    etag.strip_prefix("\"pse-").map(|rest| format!("\"{rest}"))
}

#[async_trait]
impl<S: Storage> Storage for EncryptedStorage<S> {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        content_meta(self.inner.head(key).await?)
    }

    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        let (meta, bytes) = self.inner.head_with_bytes(key, format::stored_len(inline_max)).await?;
        let content = content_meta(meta)?;
        let Some(bytes) = bytes.filter(|_| content.size <= inline_max) else { return Ok((content, None)) };
        let header = Header::parse(&bytes).map_err(|e| integrity(key, e))?;
        let mut cipher = self.cipher(key, &header)?;
        let plan = Plan::new(key, content.size, 0..content.size);
        let mut out = BytesMut::from(&bytes[HEADER as usize..]);
        let mut content_bytes = BytesMut::with_capacity(content.size as usize);
        for index in 0..plan.chunks {
            let chunk_len = plan.sealed_len(index) as usize;
            let mut chunk = out.split_to(chunk_len.min(out.len()));
            if chunk.len() != chunk_len || !cipher.open(index, index + 1 == plan.chunks, &mut chunk) {
                return Err(integrity(key, format_args!("chunk {index} failed authentication")));
            }
            content_bytes.extend_from_slice(&chunk[..chunk_len - TAG as usize]);
        }
        Ok((content, Some(content_bytes.freeze())))
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let if_match = match options.if_match.as_deref() {
            Some(etag) => Some(backend_etag(etag).ok_or_else(|| Error::PreconditionFailed { key: key.clone() })?),
            None => None,
        };
        let (meta, range, cipher, stored, seed) = match options.range {
            // The whole object: one read, the header first.
            None => {
                let got = self.inner.get(key, GetOptions { range: None, if_match }).await?;
                let meta = content_meta(got.meta.clone())?;
                let mut body = got.into_stream();
                let mut head = BytesMut::new();
                while (head.len() as u64) < HEADER {
                    match body.next().await {
                        Some(chunk) => head.extend_from_slice(&chunk?),
                        None => return Err(integrity(key, HeaderError::NotEncrypted)),
                    }
                }
                let seed = head.split_off(HEADER as usize);
                let header = Header::parse(&head).map_err(|e| integrity(key, e))?;
                let cipher = self.cipher(key, &header)?;
                let range = 0..meta.size;
                (meta, range, cipher, body, seed)
            }
            // A range: the header, then only the chunks the range touches, of the same version.
            Some(requested) => {
                let (header, backend) = self.read_header(key, if_match).await?;
                let meta = content_meta(backend.clone())?;
                let range = check_range(Some(requested), meta.size)?;
                if range.is_empty() {
                    return Ok(GetResult::new(meta, range, Payload::Bytes(Bytes::new())));
                }
                let cipher = self.cipher(key, &header)?;
                let plan = Plan::new(key, meta.size, range.clone());
                let stored = plan.stored_range();
                let mut chunks = GetOptions::default().with_range(stored);
                chunks.if_match = backend.etag.clone();
                let body = self.inner.get(key, chunks).await?.into_stream();
                (meta, range, cipher, body, BytesMut::new())
            }
        };
        let plan = Plan::new(key, meta.size, range.clone());
        let mut decrypted = decrypt(stored, seed, cipher, plan);
        // The first chunk is checked before the caller sees a result: a damaged start is an
        // error, not a response that begins and then breaks.
        let payload = match decrypted.next().await {
            None => Payload::Bytes(Bytes::new()),
            Some(Err(e)) => return Err(e),
            Some(Ok(first)) => Payload::Stream(stream::once(async move { Ok(first) }).chain(decrypted).boxed()),
        };
        let payload = match payload {
            Payload::Stream(s) if range.end - range.start <= CHUNK => Payload::Bytes(collect(s).await?),
            other => other,
        };
        Ok(GetResult::new(meta, range, payload))
    }

    async fn put(&self, key: &ObjectKey, data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        let reservation = match options.mode {
            PutMode::CreateUnique => Some(self.reserve_unique(key).await?),
            _ => None,
        };
        let target = reservation.as_ref().map_or(key, |r| &r.key).clone();
        let mut inner_options = options.clone();
        if options.mode == PutMode::CreateUnique {
            inner_options.mode = PutMode::Create;
        }
        let mut data_key = [0u8; 32];
        format::fill_random(&mut data_key);
        let (kek_id, kek) = self.keys.newest();
        let header = Header::new(kek_id, kek, &data_key);
        let cipher = header.chunks(&data_key, target.as_str());
        data_key.zeroize();
        let sealed = seal(Bytes::from(header.to_bytes()), cipher, data);
        let meta = self.inner.put(&target, sealed, inner_options).await?;
        drop(reservation);
        content_meta(meta)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }

    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix).and_then(|meta| async move { content_meta(meta) }).boxed()
    }

    fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    fn serves_stored_bytes(&self) -> bool {
        false
    }
}

/// Which chunks a read of `range` of a `len`-byte content needs.
struct Plan {
    key: ObjectKey,
    len: u64,
    range: Range<u64>,
    /// Chunks in the object.
    chunks: u64,
}

impl Plan {
    fn new(key: &ObjectKey, len: u64, range: Range<u64>) -> Self {
        Self { key: key.clone(), len, range, chunks: format::chunk_count(len) }
    }

    /// The stored length of chunk `index`.
    fn sealed_len(&self, index: u64) -> u64 {
        if index + 1 < self.chunks { SEALED_CHUNK } else { self.len - index * CHUNK + TAG }
    }

    fn first(&self) -> u64 {
        self.range.start / CHUNK
    }

    fn last(&self) -> u64 {
        (self.range.end.max(1) - 1) / CHUNK
    }

    /// The stored bytes of the chunks the range touches.
    fn stored_range(&self) -> Range<u64> {
        format::chunk_offset(self.first())..format::chunk_offset(self.last()) + self.sealed_len(self.last())
    }
}

/// The content of `plan.range`, from `stored` positioned at the plan's first chunk (with
/// `seed` already read from it). Each chunk is authenticated whole before any of its bytes
/// are yielded. Each stored byte is copied once, into a buffer of its chunk's exact size,
/// where it is decrypted in place and then handed on without another copy.
fn decrypt(stored: ByteStream, seed: BytesMut, cipher: format::ChunkCipher, plan: Plan) -> ByteStream {
    let index = plan.first();
    let state = Some((stored, seed.freeze(), cipher, plan, index));
    stream::unfold(state, |state| async move {
        let (mut stored, mut pending, mut cipher, plan, mut index) = state?;
        loop {
            if index > plan.last() {
                return None;
            }
            let want = plan.sealed_len(index) as usize;
            let mut chunk = BytesMut::with_capacity(want);
            while chunk.len() < want {
                if pending.is_empty() {
                    match stored.next().await {
                        Some(Ok(bytes)) => pending = bytes,
                        Some(Err(e)) => return Some((Err(e), None)),
                        None => return Some((Err(integrity(&plan.key, "the object ends early")), None)),
                    }
                }
                let take = (want - chunk.len()).min(pending.len());
                chunk.extend_from_slice(&pending.split_to(take));
            }
            if !cipher.open(index, index + 1 == plan.chunks, &mut chunk) {
                let error = integrity(&plan.key, format_args!("chunk {index} failed authentication"));
                return Some((Err(error), None));
            }
            chunk.truncate(want - TAG as usize);
            let start = index * CHUNK;
            let lo = plan.range.start.saturating_sub(start) as usize;
            let hi = (plan.range.end - start).min(chunk.len() as u64) as usize;
            index += 1;
            if lo < hi {
                let bytes = chunk.freeze().slice(lo..hi);
                return Some((Ok(bytes), Some((stored, pending, cipher, plan, index))));
            }
        }
    })
    .boxed()
}

/// `header`, then `data` sealed in chunks: a chunk is sealed once the next byte is known to
/// exist (or the input ended, for the last one), with one copy of each input byte.
fn seal<'a>(header: Bytes, cipher: format::ChunkCipher, data: PutStream<'a>) -> PutStream<'a> {
    let state =
        Sealing { data, cipher, current: BytesMut::with_capacity(SEALED_CHUNK as usize), rest: Bytes::new(), index: 0 };
    let body = stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        loop {
            if st.current.len() as u64 == CHUNK && !st.rest.is_empty() {
                let chunk = st.seal(false);
                return Some((Ok(chunk), Some(st)));
            }
            if !st.rest.is_empty() {
                let take = (CHUNK as usize - st.current.len()).min(st.rest.len());
                st.current.extend_from_slice(&st.rest.split_to(take));
                continue;
            }
            match st.data.next().await {
                Some(Ok(bytes)) => st.rest = bytes,
                Some(Err(e)) => return Some((Err(e), None)),
                None => return Some((Ok(st.seal(true)), None)),
            }
        }
    });
    stream::once(async move { Ok(header) }).chain(body).boxed()
}

/// The state of [`seal`]: the chunk being filled and what is left of the last input.
struct Sealing<'a> {
    data: PutStream<'a>,
    cipher: format::ChunkCipher,
    current: BytesMut,
    rest: Bytes,
    index: u64,
}

impl Sealing<'_> {
    fn seal(&mut self, last: bool) -> Bytes {
        let next = BytesMut::with_capacity(if last { 0 } else { SEALED_CHUNK as usize });
        let mut chunk = std::mem::replace(&mut self.current, next);
        let tag = self.cipher.seal(self.index, last, &mut chunk);
        chunk.extend_from_slice(&tag);
        self.index += 1;
        chunk.freeze()
    }
}
