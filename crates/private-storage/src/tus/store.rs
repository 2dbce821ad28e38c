//! Where unfinished uploads live between requests, and the local-folder implementation.

use std::fmt::Debug;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::Metadata;
use crate::storage::ByteStream;
use crate::{Error, LocalStorage, ObjectKey, ObjectMeta, PutMode, PutOptions, Result, Storage};

const BACKEND: &str = "tus";

#[cfg(feature = "encryption")]
use crate::storage::PartialCipher as Cipher;

/// Without the `encryption` feature there is never a cipher.
#[cfg(not(feature = "encryption"))]
enum Cipher {}

#[cfg(not(feature = "encryption"))]
impl Cipher {
    fn apply(&self, _: u64, _: &mut [u8]) {
        match *self {}
    }
}

/// The durable state of one unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct UploadInfo {
    /// 128 random bits, base64url.
    pub id: String,
    /// Whoever created it (an opaque string of the application's): nobody else sees it.
    pub owner: String,
    /// The final size, once known (`Upload-Length`).
    pub length: Option<u64>,
    /// How many bytes are stored, durably.
    pub offset: u64,
    /// What the client said about the file.
    pub metadata: Metadata,
    /// When it was created.
    pub created: SystemTime,
    /// When it is swept unless continued (each `PATCH` moves it on).
    pub expires: SystemTime,
    /// Whether the first bytes were checked against the upload policy.
    pub checked: bool,
    /// Whether it was completed and stored: its bytes are the storage's now, and what is
    /// left answers `HEAD` (a client that lost the last answer learns it is done) until it
    /// expires.
    #[serde(default)]
    pub completed: bool,
    /// The SHA-256 of the bytes stored so far, as the hasher's serialized state (base64):
    /// computed as they arrive, so a complete upload is not read again for it.
    #[serde(default)]
    pub sha256_state: Option<String>,
}

/// Unfinished uploads: their state and their bytes so far. [`LocalPartials`] keeps them in a
/// folder; a backend for several servers keeps them where all of them reach.
#[async_trait]
pub trait PartialStore: Debug + Send + Sync + 'static {
    /// Creates an upload with no bytes.
    async fn create(&self, info: &UploadInfo) -> Result<()>;

    /// The upload's state, or `None`.
    async fn load(&self, id: &str) -> Result<Option<UploadInfo>>;

    /// Saves the state, durably: its offset is the acknowledged one from then on.
    async fn save(&self, info: &UploadInfo) -> Result<()>;

    /// Writes `data` at `info.offset` (dropping any bytes past it: written, never acknowledged)
    /// and makes it durable. Returns the offset reached, and the stream's error if it failed:
    /// what arrived before a failure is kept (that is what makes an upload resumable) once the
    /// caller saves the new offset.
    async fn append(&self, info: &UploadInfo, data: ByteStream) -> (u64, Result<()>);

    /// Cuts the bytes back to `offset` (a refused request's bytes are not kept).
    async fn truncate(&self, info: &UploadInfo, offset: u64) -> Result<()>;

    /// The first `len` bytes (fewer if fewer are stored).
    async fn head(&self, id: &str, len: usize) -> Result<Bytes>;

    /// Moves the complete bytes into the storage under `key` (or a free variant, per `mode`),
    /// keeping only the state, marked [`UploadInfo::completed`].
    async fn finish(&self, info: &UploadInfo, key: &ObjectKey, mode: PutMode) -> Result<ObjectMeta>;

    /// Forgets the upload and its bytes; succeeds if it is already gone.
    async fn remove(&self, id: &str) -> Result<()>;

    /// The ids of every upload (for the sweeper).
    async fn ids(&self) -> Result<Vec<String>>;
}

/// Unfinished uploads in a local folder: the bytes in `<id>`, the state in `<id>.json`
/// (written to a temporary file and renamed). Every append is fsynced before it is
/// acknowledged. A finished upload is renamed into a [`LocalStorage`] on the same filesystem,
/// and streamed into any other storage. With [`LocalPartials::sealed`] (feature `encryption`)
/// the bytes are encrypted on disk too.
#[derive(Debug, Clone)]
pub struct LocalPartials {
    dir: PathBuf,
    dir_fd: Arc<OwnedFd>,
    target: Target,
    #[cfg(feature = "encryption")]
    keys: Option<crate::Keyring>,
}

#[derive(Debug, Clone)]
enum Target {
    Local(LocalStorage),
    Any(Arc<dyn Storage>),
}

impl LocalPartials {
    /// Keeps unfinished uploads in `dir` (created `0700` if missing), finishing them into
    /// `storage`: put `dir` on the storage's filesystem, outside its root, and a finished
    /// upload is renamed into place, not copied.
    ///
    /// # Errors
    /// [`Error::Config`] when the folder cannot be created or opened.
    pub fn new(dir: impl AsRef<Path>, storage: LocalStorage) -> Result<Self> {
        Self::open(dir.as_ref(), Target::Local(storage))
    }

    /// Keeps unfinished uploads in `dir`, streaming each finished one into `storage` (an S3
    /// bucket, say). The folder is this machine's: servers sharing the storage do not see
    /// each other's unfinished uploads.
    ///
    /// # Errors
    /// As [`LocalPartials::new`].
    pub fn copying_into(dir: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<Self> {
        Self::open(dir.as_ref(), Target::Any(storage))
    }

    fn open(dir: &Path, target: Target) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir.to_owned();
        let config = |e: std::io::Error| Error::config("tus folder", format!("{}: {e}", dir.display()));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(config)?;
        let fd = std::fs::File::open(&dir).map_err(config)?;
        Ok(Self {
            dir,
            dir_fd: Arc::new(fd.into()),
            target,
            #[cfg(feature = "encryption")]
            keys: None,
        })
    }

    /// Encrypts the bytes of unfinished uploads on disk (AES-256-CTR under a random key per
    /// upload, wrapped by the newest KEK of `keys` in a header), so that with an
    /// [`EncryptedStorage`](crate::EncryptedStorage) no byte of an upload is ever at rest in
    /// the clear. Keep a removed KEK until the uploads it began have expired. A finished
    /// upload is decrypted as it streams into the storage and must match the SHA-256 kept as
    /// its bytes arrived, or it is refused ([`Error::Integrity`]) and nothing is kept.
    #[cfg(feature = "encryption")]
    pub fn sealed(mut self, keys: crate::Keyring) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Where an upload's bytes start in its file (after the header, when sealed).
    fn base(&self) -> u64 {
        #[cfg(feature = "encryption")]
        if self.keys.is_some() {
            return Cipher::HEADER;
        }
        0
    }

    /// The header and cipher of a new upload, when sealed.
    fn new_cipher(&self) -> Option<(Vec<u8>, Cipher)> {
        #[cfg(feature = "encryption")]
        if let Some(keys) = &self.keys {
            return Some(Cipher::create(keys));
        }
        None
    }

    /// The cipher of an upload, from its header, when sealed.
    async fn cipher(&self, id: &str) -> Result<Option<Cipher>> {
        #[cfg(feature = "encryption")]
        if let Some(keys) = &self.keys {
            let mut file = tokio::fs::File::open(self.data(id)?).await.map_err(io)?;
            let mut header = vec![0u8; Cipher::HEADER as usize];
            file.read_exact(&mut header).await.map_err(io)?;
            return Cipher::open(keys, &header, id).map(Some);
        }
        let _ = id;
        Ok(None)
    }

    fn data(&self, id: &str) -> Result<PathBuf> {
        // Ids are ours (base64url), but what arrives in a URL is checked before it names a file.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::storage(BACKEND, "not an upload id"));
        }
        Ok(self.dir.join(id))
    }

    fn state(&self, id: &str) -> Result<PathBuf> {
        Ok(self.data(id)?.with_extension("json"))
    }

    async fn write_state(&self, info: &UploadInfo) -> Result<()> {
        let path = self.state(&info.id)?;
        let temp = path.with_extension("json.tmp");
        let json = serde_json::to_vec(info).map_err(|e| Error::storage(BACKEND, e))?;
        let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
        file.write_all(&json).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&temp, &path).await.map_err(io)?;
        self.sync_dir().await
    }

    async fn sync_dir(&self) -> Result<()> {
        let fd = self.dir_fd.clone();
        tokio::task::spawn_blocking(move || rustix::fs::fsync(&*fd))
            .await
            .map_err(|e| Error::storage(BACKEND, e))?
            .map_err(|e| io(e.into()))
    }
}

fn io(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => Error::StorageFull,
        _ => Error::storage(BACKEND, e),
    }
}

#[async_trait]
impl PartialStore for LocalPartials {
    async fn create(&self, info: &UploadInfo) -> Result<()> {
        let data = self.data(&info.id)?;
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&data).await.map_err(io)?;
        if let Some((header, _)) = self.new_cipher() {
            file.write_all(&header).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        self.write_state(info).await
    }

    async fn load(&self, id: &str) -> Result<Option<UploadInfo>> {
        let Ok(state) = self.state(id) else { return Ok(None) };
        let json = match tokio::fs::read(&state).await {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut info: UploadInfo = serde_json::from_slice(&json).map_err(|e| Error::storage(BACKEND, e))?;
        if info.completed {
            return Ok(Some(info));
        }
        // The saved offset is the acknowledged one; the bytes are made durable before it is
        // saved, so the file holds at least that many (more if a request was cut by a crash).
        let stored = match tokio::fs::metadata(self.data(id)?).await {
            Ok(meta) => meta.len().saturating_sub(self.base()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if stored < info.offset {
            tracing::warn!(id, stored, saved = info.offset, "an upload holds fewer bytes than acknowledged");
            info.offset = stored;
            info.sha256_state = None;
        }
        Ok(Some(info))
    }

    async fn save(&self, info: &UploadInfo) -> Result<()> {
        self.write_state(info).await
    }

    async fn append(&self, info: &UploadInfo, mut data: ByteStream) -> (u64, Result<()>) {
        let mut offset = info.offset;
        let opened = async {
            let cipher = self.cipher(&info.id).await?;
            let mut file = tokio::fs::OpenOptions::new().write(true).open(self.data(&info.id)?).await.map_err(io)?;
            file.set_len(self.base() + offset).await.map_err(io)?;
            file.seek(std::io::SeekFrom::Start(self.base() + offset)).await.map_err(io)?;
            let flusher = Flusher::new(&file).await?;
            Ok::<_, Error>((file, flusher, cipher))
        };
        let (mut file, mut flusher, cipher) = match opened.await {
            Ok(opened) => opened,
            Err(e) => return (offset, Err(e)),
        };
        let mut outcome = Ok(());
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(chunk) => {
                    let written = match &cipher {
                        Some(cipher) => {
                            let mut sealed = chunk.to_vec();
                            cipher.apply(offset, &mut sealed);
                            file.write_all(&sealed).await
                        }
                        None => file.write_all(&chunk).await,
                    };
                    if let Err(e) = written {
                        outcome = Err(io(e));
                        break;
                    }
                    offset += chunk.len() as u64;
                    flusher.wrote(chunk.len()).await;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // Durable before acknowledged, the bytes of a broken request included.
        if let Err(e) = async {
            file.flush().await.map_err(io)?;
            flusher.finish().await
        }
        .await
        {
            return (info.offset, Err(e));
        }
        (offset, outcome)
    }

    async fn truncate(&self, info: &UploadInfo, offset: u64) -> Result<()> {
        let file = tokio::fs::OpenOptions::new().write(true).open(self.data(&info.id)?).await.map_err(io)?;
        file.set_len(self.base() + offset).await.map_err(io)?;
        file.sync_all().await.map_err(io)
    }

    async fn head(&self, id: &str, len: usize) -> Result<Bytes> {
        let cipher = self.cipher(id).await?;
        let mut file = tokio::fs::File::open(self.data(id)?).await.map_err(io)?;
        file.seek(std::io::SeekFrom::Start(self.base())).await.map_err(io)?;
        let mut head = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut head).await.map_err(io)?;
        if let Some(cipher) = cipher {
            cipher.apply(0, &mut head);
        }
        Ok(head.into())
    }

    async fn finish(&self, info: &UploadInfo, key: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        let cipher = self.cipher(&info.id).await?;
        let renamed = match (&self.target, &cipher) {
            (Target::Local(local), None) => local.adopt(self.dir_fd.clone(), info.id.clone(), key, mode).await?,
            _ => None,
        };
        let meta = match renamed {
            Some(meta) => meta,
            None => {
                let storage: &dyn Storage = match &self.target {
                    Target::Local(local) => local,
                    Target::Any(any) => &**any,
                };
                let mut file = tokio::fs::File::open(self.data(&info.id)?).await.map_err(io)?;
                file.seek(std::io::SeekFrom::Start(self.base())).await.map_err(io)?;
                match cipher {
                    None => storage.put(key, file_chunks(file), PutOptions::default().with_mode(mode)).await?,
                    Some(cipher) => {
                        let hasher = Arc::new(std::sync::Mutex::new(<sha2::Sha256 as sha2::Digest>::new()));
                        let meta = storage
                            .put(
                                key,
                                opened_chunks(file, cipher, hasher.clone()),
                                PutOptions::default().with_mode(mode),
                            )
                            .await?;
                        // Unauthenticated on disk: the bytes must be those whose hash was kept.
                        let read = sha2::Digest::finalize(hasher.lock().expect("not poisoned").clone());
                        let kept =
                            info.sha256_state.as_deref().and_then(super::hash_state::load).map(sha2::Digest::finalize);
                        if kept.is_some_and(|kept| kept != read) {
                            storage.delete(&meta.key).await?;
                            return Err(Error::Integrity {
                                key: meta.key,
                                message: format!(
                                    "upload {}: its stored bytes changed while it was unfinished",
                                    info.id
                                ),
                            });
                        }
                        meta
                    }
                }
            }
        };
        let mut done = info.clone();
        done.completed = true;
        self.write_state(&done).await?;
        // Renamed away, or copied: the bytes are the storage's now.
        match tokio::fs::remove_file(self.data(&info.id)?).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        Ok(meta)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        for path in [self.data(id)?, self.state(id)?] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        self.sync_dir().await
    }

    async fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }
}

/// Flushes an upload's bytes to the disk while more arrive: every [`Flusher::EVERY`] bytes
/// written, an `fdatasync` starts on the blocking pool (one at a time) and the writes go on;
/// the last one, once the body has ended, has little left to do. Syncing only at the end would
/// hold the acknowledgement for the write-back of the whole request.
struct Flusher {
    file: Arc<std::fs::File>,
    unsynced: usize,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The first failed sync: Linux reports a write-back error once per open file, so a later
    /// sync may succeed over lost bytes; this one is what `finish` answers.
    failed: Option<std::io::Error>,
}

impl Flusher {
    const EVERY: usize = 1 << 20;

    async fn new(file: &tokio::fs::File) -> Result<Self> {
        let clone = file.try_clone().await.map_err(io)?.into_std().await;
        Ok(Self { file: Arc::new(clone), unsynced: 0, running: None, failed: None })
    }

    async fn wrote(&mut self, bytes: usize) {
        self.unsynced += bytes;
        if self.unsynced < Self::EVERY || self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        if let Some(done) = self.running.take() {
            self.settle(done).await;
        }
        let file = self.file.clone();
        self.running = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.unsynced = 0;
    }

    async fn settle(&mut self, sync: tokio::task::JoinHandle<std::io::Result<()>>) {
        let result = sync.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }

    async fn finish(mut self) -> Result<()> {
        if let Some(running) = self.running.take() {
            self.settle(running).await;
        }
        let file = self.file.clone();
        let last = tokio::task::spawn_blocking(move || file.sync_data());
        self.settle(last).await;
        match self.failed {
            Some(e) => Err(io(e)),
            None => Ok(()),
        }
    }
}

/// An upload's sealed bytes, decrypted and hashed as they are read.
fn opened_chunks(
    file: tokio::fs::File,
    cipher: Cipher,
    hasher: Arc<std::sync::Mutex<sha2::Sha256>>,
) -> crate::storage::PutStream<'static> {
    let mut position = 0u64;
    file_chunks(file)
        .map(move |chunk| {
            let mut bytes = chunk?.to_vec();
            cipher.apply(position, &mut bytes);
            position += bytes.len() as u64;
            sha2::Digest::update(&mut *hasher.lock().expect("not poisoned"), &bytes);
            Ok(Bytes::from(bytes))
        })
        .boxed()
}

/// A file read as a stream of 256 KiB chunks.
fn file_chunks(file: tokio::fs::File) -> crate::storage::PutStream<'static> {
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(io(e)), file)),
        }
    })
    .boxed()
}
