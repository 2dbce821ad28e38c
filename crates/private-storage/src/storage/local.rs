//! The local-filesystem backend, confined to its root.

use std::fmt;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, stream};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use tokio::io::AsyncWriteExt;

use super::{
    ByteStream, GetOptions, GetResult, ObjectMeta, Payload, PutMode, PutOptions, PutStream, Storage, UNIQUE_ATTEMPTS,
    check_if_match, check_range, normalise_base_url, with_random_suffix,
};
use crate::{Error, ObjectKey, Result};

const BACKEND: &str = "local";
/// Staging files start with this; they are never listed or served.
const TEMP_PREFIX: &str = ".ps-tmp-";
/// Objects up to this size are read in one go; larger ones stream.
const SMALL_READ: u64 = 64 * 1024;
/// The chunk size of streamed reads.
pub(crate) const CHUNK: u64 = 128 * 1024;
/// Each read stream cuts its chunks from an arena of this size, reused once the chunks sent
/// earlier are written and dropped: fresh chunk allocations (at glibc's mmap threshold) cost a
/// page fault per page, which profiling showed at ~15% of the CPU of a large download.
const ARENA: usize = 4 * CHUNK as usize;

/// Files in a folder on the local filesystem: the embedded default.
///
/// - **Confined to its root.** Every path is resolved beneath the root directory with
///   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, where `openat2` is unavailable,
///   one component at a time with `O_NOFOLLOW`): no symlink below the root is ever followed,
///   whether it points outside the root or to another folder inside it. A key names exactly
///   one file, so a rule like "keys under `users/1/`" cannot be sidestepped by a link from
///   `users/1/` to `users/6/`. (The root itself, and its ancestors, may be symlinks.)
/// - **Atomic writes.** `put` writes to a staging file in the object's own folder, fsyncs it,
///   then renames it into place (`RENAME_NOREPLACE` for [`PutMode::Create`]) and fsyncs the
///   folder. A reader never sees a partial file; a failed or dropped write leaves nothing.
/// - **Directories are never served**: they answer [`Error::NotFound`] like missing files.
/// - **ETags** have nginx's form, `"<mtime hex>-<size hex>"`, so nginx serving the same file
///   through `X-Accel-Redirect` evaluates `If-None-Match`, `If-Match` and `If-Range` exactly
///   as this crate does. (Two writes of the same size within one second share an ETag, as they
///   do in nginx.)
/// - Content types are not stored; they are guessed from the name when served.
/// - **Reads never stall the async runtime, and rarely leave it.** A small file is opened,
///   stat'ed and read on the async worker only when the kernel can answer from its caches —
///   `openat2(RESOLVE_CACHED)` fails with `EAGAIN` unless every path component is in the
///   dentry cache, `preadv2(RWF_NOWAIT)` unless the bytes are in the page cache — and chunks of
///   large files likewise; anything that would block (a cold disk, a network filesystem that
///   must revalidate) goes to tokio's blocking pool instead. A hot 4 KiB download thus costs
///   no thread hand-off at all.
///
/// ```
/// use private_storage::{LocalStorage, ObjectKey, StorageExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let storage = LocalStorage::new(dir.path())?.with_base_url("/private-media/");
/// let key = ObjectKey::new("users/1/hello.txt")?;
/// storage.put_bytes(&key, "hello").await?;
/// assert_eq!(storage.read(&key).await?, "hello");
/// assert_eq!(storage.local_path(&key), Some(dir.path().canonicalize()?.join("users/1/hello.txt")));
/// # use private_storage::Storage;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalStorage {
    inner: Arc<Inner>,
    base_url: Arc<str>,
}

struct Inner {
    root: PathBuf,
    root_fd: OwnedFd,
}

impl fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStorage").field("root", &self.inner.root).field("base_url", &self.base_url).finish()
    }
}

impl LocalStorage {
    /// A storage rooted at the existing directory `root`.
    ///
    /// # Errors
    /// [`Error::Config`] when `root` does not exist or is not a directory: the root is never
    /// created, and nothing falls back to another folder.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let canonical = root
            .canonicalize()
            .map_err(|e| Error::config("root", format!("{}: {e} (create the folder first)", root.display())))?;
        if !canonical.is_dir() {
            return Err(Error::config("root", format!("{} is not a directory", root.display())));
        }
        let root_fd = rustix::fs::open(&canonical, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::config("root", format!("{}: {e}", root.display())))?;
        Ok(Self { inner: Arc::new(Inner { root: canonical, root_fd }), base_url: Arc::from(super::DEFAULT_BASE_URL) })
    }

    /// Sets the URL prefix of this storage's links. Defaults to `/private-media/`.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Arc::from(normalise_base_url(base_url));
        self
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Removes the staging files of writes that never finished (a crash, a `SIGKILL` during an
    /// upload) and were last written more than `older_than` ago; returns how many were removed.
    ///
    /// A write in progress — in this process or any other on the same folder — holds an
    /// exclusive advisory lock (`flock`) on its staging file, and a locked file is never
    /// removed, whatever its age: a stalled upload is not a dead one. `older_than` only covers
    /// the instant between a writer creating its file and locking it, so a short age (a
    /// minute) is enough. Staging files are never visible as objects: this only reclaims space.
    ///
    /// # Errors
    /// [`Error::Storage`] when the tree cannot be walked.
    pub async fn remove_staging_files(&self, older_than: Duration) -> Result<usize> {
        self.blocking(move |inner| {
            let root = open_dirs(inner.root_fd.as_fd(), &[], false)
                .map_err(|e| Error::storage(BACKEND, io::Error::from(e)))?;
            let cutoff = std::time::SystemTime::now() - older_than;
            remove_staging(root, cutoff).map_err(|e| Error::storage(BACKEND, io::Error::from(e)))
        })
        .await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| Error::storage(BACKEND, e))?
    }
}

const READ_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::CLOEXEC).union(OFlags::NOCTTY);
const CONFINED: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

impl Inner {
    /// The metadata and (up to `inline_max` bytes) the content of an object, **without
    /// blocking**: the path must be in the dentry cache (`RESOLVE_CACHED`) and the bytes in the
    /// page cache (`RWF_NOWAIT`). `None` when it would block (a cold disk, a network
    /// filesystem that must revalidate): then the caller asks the blocking pool instead.
    fn read_cached(&self, key: &ObjectKey, inline_max: u64) -> Option<Result<(ObjectMeta, Option<Bytes>)>> {
        use rustix::io::Errno;
        if key.file_name().starts_with(TEMP_PREFIX) {
            return Some(Err(not_found(key)));
        }
        let fd = match rustix::fs::openat2(
            &self.root_fd,
            key.as_str(),
            READ_FLAGS,
            Mode::empty(),
            CONFINED | ResolveFlags::CACHED,
        ) {
            Ok(fd) => fd,
            // EAGAIN: not all cached; ENOSYS/EINVAL: no openat2 or RESOLVE_CACHED; EPERM: seccomp.
            Err(Errno::AGAIN | Errno::NOSYS | Errno::INVAL | Errno::PERM) => return None,
            Err(e) => return Some(Err(io_error(key, e.into()))),
        };
        let meta = match regular_file_meta(&fd, key) {
            Ok(meta) => meta,
            Err(e) => return Some(Err(e)),
        };
        if meta.size > inline_max {
            return Some(Ok((meta, None)));
        }
        let mut buf = BytesMut::zeroed(meta.size as usize);
        match rustix::io::preadv2(&fd, &mut [std::io::IoSliceMut::new(&mut buf)], 0, rustix::io::ReadWriteFlags::NOWAIT)
        {
            Ok(n) if n as u64 == meta.size => Some(Ok((meta, Some(buf.freeze())))),
            // Partly cached, not cached, or a filesystem without RWF_NOWAIT.
            Ok(_) | Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL) => None,
            Err(e) => Some(Err(io_error(key, e.into()))),
        }
    }

    /// Opens the object for reading, never leaving the root.
    fn open(&self, key: &ObjectKey) -> Result<(std::fs::File, ObjectMeta)> {
        if key.file_name().starts_with(TEMP_PREFIX) {
            return Err(not_found(key));
        }
        let flags = READ_FLAGS;
        let fd = match rustix::fs::openat2(&self.root_fd, key.as_str(), flags, Mode::empty(), CONFINED) {
            Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
                let (parent, name) = split_parent(key);
                open_dirs(self.root_fd.as_fd(), &parent, false)
                    .and_then(|dir| rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty()))
            }
            other => other,
        }
        .map_err(|e| io_error(key, e.into()))?;
        let meta = regular_file_meta(&fd, key)?;
        Ok((std::fs::File::from(fd), meta))
    }
}

/// The metadata of an open file, which must be a regular file (directories count as missing).
fn regular_file_meta(fd: &OwnedFd, key: &ObjectKey) -> Result<ObjectMeta> {
    let stat = rustix::fs::fstat(fd).map_err(|e| io_error(key, e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(not_found(key));
    }
    Ok(meta_from_stat(key.clone(), &stat))
}

#[async_trait]
impl Storage for LocalStorage {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let key = key.clone();
        self.blocking(move |inner| inner.open(&key).map(|(_, meta)| meta)).await
    }

    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        if let Some(done) = self.inner.read_cached(key, inline_max) {
            return done;
        }
        let key = key.clone();
        self.blocking(move |inner| {
            let (file, meta) = inner.open(&key)?;
            let bytes = if meta.size <= inline_max {
                Some(read_exact_at(&file, 0..meta.size).map_err(|e| io_error(&key, e))?)
            } else {
                None
            };
            Ok((meta, bytes))
        })
        .await
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let key = key.clone();
        let (file, meta, range, small) = self
            .blocking(move |inner| {
                let (file, meta) = inner.open(&key)?;
                check_if_match(options.if_match.as_deref(), &meta)?;
                let range = check_range(options.range, meta.size)?;
                let small = if range.end - range.start <= SMALL_READ {
                    Some(read_exact_at(&file, range.clone()).map_err(|e| io_error(&key, e))?)
                } else {
                    None
                };
                Ok((file, meta, range, small))
            })
            .await?;
        let payload = match small {
            Some(bytes) => Payload::Bytes(bytes),
            None => Payload::File(FileRegion { file: Arc::new(file), key: meta.key.clone(), range: range.clone() }),
        };
        Ok(GetResult::new(meta, range, payload))
    }

    async fn put(&self, key: &ObjectKey, mut data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        if key.file_name().starts_with(TEMP_PREFIX) {
            return Err(Error::storage(
                BACKEND,
                format!("names starting with {TEMP_PREFIX} are reserved for staging files"),
            ));
        }
        let staging_key = key.clone();
        let (staged, file) = self
            .blocking(move |inner| {
                let (parent, _) = split_parent(&staging_key);
                let dir =
                    open_dirs(inner.root_fd.as_fd(), &parent, true).map_err(|e| io_error(&staging_key, e.into()))?;
                let temp_name = format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..));
                let fd = rustix::fs::openat(
                    &dir,
                    temp_name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o666),
                )
                .map_err(|e| io_error(&staging_key, e.into()))?;
                let staged = Staged { dir: Arc::new(dir), temp_name, committed: false };
                // Held until the file is closed: `remove_staging_files` leaves locked files alone.
                rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
                    .map_err(|e| io_error(&staging_key, e.into()))?;
                Ok((staged, std::fs::File::from(fd)))
            })
            .await?;
        // From here on, dropping `staged` (error, or this future being dropped) removes the file.
        let mut file = tokio::fs::File::from_std(file);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await.map_err(|e| io_error(key, e))?;
        }
        file.sync_all().await.map_err(|e| io_error(key, e))?;
        let file = file.into_std().await;
        let final_key = key.clone();
        let mode = options.mode;
        self.blocking(move |_| {
            let mut staged = staged;
            let final_key = rename_into(staged.dir.as_fd(), &staged.temp_name, staged.dir.as_fd(), &final_key, mode)
                .map_err(|(key, e)| rename_error(key, e))?;
            staged.committed = true;
            rustix::fs::fsync(&*staged.dir).map_err(|e| io_error(&final_key, e.into()))?;
            let stat = rustix::fs::fstat(&file).map_err(|e| io_error(&final_key, e.into()))?;
            Ok(meta_from_stat(final_key, &stat))
        })
        .await
    }

    async fn overwrite_at(
        &self,
        key: &ObjectKey,
        offset: u64,
        bytes: &[u8],
        if_match: &str,
    ) -> Result<Option<ObjectMeta>> {
        if key.file_name().starts_with(TEMP_PREFIX) {
            return Err(not_found(key));
        }
        let (key, bytes, if_match) = (key.clone(), bytes.to_vec(), if_match.to_owned());
        self.blocking(move |inner| {
            let flags = OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
            let (parent, name) = split_parent(&key);
            let fd = open_dirs(inner.root_fd.as_fd(), &parent, false)
                .and_then(|dir| rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty()))
                .map_err(|e| io_error(&key, e.into()))?;
            // Writers of one object in place take turns; `put` replaces whole files by rename.
            rustix::fs::flock(&fd, FlockOperation::LockExclusive).map_err(|e| io_error(&key, e.into()))?;
            let meta = regular_file_meta(&fd, &key)?;
            check_if_match(Some(&if_match), &meta)?;
            let end = offset + bytes.len() as u64;
            if end > meta.size {
                return Err(Error::InvalidRange { start: offset, end, size: meta.size });
            }
            let file = std::fs::File::from(fd);
            file.write_all_at(&bytes, offset).map_err(|e| io_error(&key, e))?;
            file.sync_data().map_err(|e| io_error(&key, e))?;
            let stat = rustix::fs::fstat(&file).map_err(|e| io_error(&key, e.into()))?;
            Ok(Some(meta_from_stat(key, &stat)))
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let key = key.clone();
        self.blocking(move |inner| {
            let (parent, name) = split_parent(&key);
            let dir = match open_dirs(inner.root_fd.as_fd(), &parent, false) {
                Ok(dir) => dir,
                Err(e) if is_missing(e) => return Ok(()),
                Err(e) => return Err(io_error(&key, e.into())),
            };
            match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
                Ok(()) => Ok(()),
                Err(e) if is_missing(e) || e == rustix::io::Errno::ISDIR => Ok(()),
                Err(e) => Err(io_error(&key, e.into())),
            }
        })
        .await
    }

    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        let storage = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            storage
                .blocking(move |inner| {
                    let segments: Vec<&str> = prefix.as_ref().map(|p| p.segments().collect()).unwrap_or_default();
                    let mut out = Vec::new();
                    match open_dirs(inner.root_fd.as_fd(), &segments, false) {
                        Ok(dir) => walk(dir, prefix.clone(), &mut out)
                            .map_err(|e| Error::storage(BACKEND, io::Error::from(e)))?,
                        Err(e) if is_missing(e) => {}
                        Err(e) => return Err(Error::storage(BACKEND, io::Error::from(e))),
                    }
                    Ok(out)
                })
                .await
        })
        .flat_map(|listed| match listed {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async move { Err(e) }).right_stream(),
        })
        .boxed()
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.inner.root.join(key.as_str()))
    }

    fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl LocalStorage {
    /// Moves the finished, fsynced file `name` of the folder `from` into place under `key`, in
    /// `mode`, as `put` commits its staging file; `Ok(None)` when the two are on different
    /// filesystems (the caller copies instead).
    pub(crate) async fn adopt(
        &self,
        from: Arc<OwnedFd>,
        name: String,
        key: &ObjectKey,
        mode: PutMode,
    ) -> Result<Option<ObjectMeta>> {
        let key = key.clone();
        self.blocking(move |inner| {
            let (parent, _) = split_parent(&key);
            let dir = open_dirs(inner.root_fd.as_fd(), &parent, true).map_err(|e| io_error(&key, e.into()))?;
            let target = match rename_into(from.as_fd(), &name, dir.as_fd(), &key, mode) {
                Ok(target) => target,
                Err((_, rustix::io::Errno::XDEV)) => return Ok(None),
                Err((key, e)) => return Err(rename_error(key, e)),
            };
            rustix::fs::fsync(&dir).map_err(|e| io_error(&target, e.into()))?;
            let stat = rustix::fs::statat(&dir, target.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_error(&target, e.into()))?;
            Ok(Some(meta_from_stat(target, &stat)))
        })
        .await
    }
}

/// Renames `from_name` of `from_dir` to the name of `key` in `to_dir` (`RENAME_NOREPLACE`
/// unless overwriting; suffixed names for [`PutMode::CreateUnique`]); the key written, or the
/// key and errno that stopped it.
fn rename_into(
    from_dir: BorrowedFd<'_>,
    from_name: &str,
    to_dir: BorrowedFd<'_>,
    key: &ObjectKey,
    mode: PutMode,
) -> std::result::Result<ObjectKey, (ObjectKey, rustix::io::Errno)> {
    let mut target = key.clone();
    let mut attempts = 0;
    loop {
        let renamed = match mode {
            PutMode::Overwrite => rustix::fs::renameat(from_dir, from_name, to_dir, target.file_name()),
            PutMode::Create | PutMode::CreateUnique => {
                rustix::fs::renameat_with(from_dir, from_name, to_dir, target.file_name(), RenameFlags::NOREPLACE)
            }
        };
        match renamed {
            Ok(()) => return Ok(target),
            Err(rustix::io::Errno::EXIST) if mode == PutMode::CreateUnique && attempts < UNIQUE_ATTEMPTS => {
                attempts += 1;
                target = with_random_suffix(key);
            }
            Err(e) => return Err((target, e)),
        }
    }
}

fn rename_error(key: ObjectKey, e: rustix::io::Errno) -> Error {
    match e {
        rustix::io::Errno::EXIST => Error::AlreadyExists { key },
        e => io_error(&key, e.into()),
    }
}

/// A staging file that is removed unless committed.
struct Staged {
    dir: Arc<OwnedFd>,
    temp_name: String,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = rustix::fs::unlinkat(&*self.dir, self.temp_name.as_str(), AtFlags::empty())
        {
            tracing::warn!(temp = %self.temp_name, error = %e, "could not remove a staging file");
        }
    }
}

fn split_parent(key: &ObjectKey) -> (Vec<&str>, &str) {
    let mut segments: Vec<&str> = key.segments().collect();
    let name = segments.pop().unwrap_or_default();
    (segments, name)
}

/// Opens (and with `create`, makes) the folders `segments` below `root`, one component at a
/// time with `O_NOFOLLOW`, so no symlink is ever followed on the way.
fn open_dirs(root: BorrowedFd<'_>, segments: &[&str], create: bool) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for segment in segments {
        if create {
            match rustix::fs::mkdirat(&dir, *segment, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
        }
        dir = rustix::fs::openat(&dir, *segment, flags | OFlags::NOFOLLOW, Mode::empty())?;
    }
    Ok(dir)
}

/// Collects every regular file below `dir` (symlinks, staging files and names that are not
/// valid keys are skipped).
fn walk(dir: OwnedFd, prefix: Option<ObjectKey>, out: &mut Vec<ObjectMeta>) -> rustix::io::Result<()> {
    let entries = rustix::fs::Dir::read_from(&dir)?;
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(child) = ObjectKey::new(name) else { continue };
        let key = match &prefix {
            Some(p) => p.join(&child),
            None => child,
        };
        let stat = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(e) if is_missing(e) => continue,
            Err(e) => return Err(e),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => out.push(meta_from_stat(key, &stat)),
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                walk(sub, Some(key), out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes staging files older than `cutoff` below `dir` (without following symlinks).
fn remove_staging(dir: OwnedFd, cutoff: std::time::SystemTime) -> rustix::io::Result<usize> {
    let mut removed = 0;
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let stat = match rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(e) if is_missing(e) => continue,
            Err(e) => return Err(e),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile
                if name.starts_with(TEMP_PREFIX.as_bytes())
                    && modified(&stat) <= cutoff
                    && !is_being_written(&dir, entry.file_name())? =>
            {
                match rustix::fs::unlinkat(&dir, entry.file_name(), AtFlags::empty()) {
                    Ok(()) => removed += 1,
                    Err(e) if is_missing(e) => {}
                    Err(e) => return Err(e),
                }
            }
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    &dir,
                    entry.file_name(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                removed += remove_staging(sub, cutoff)?;
            }
            _ => {}
        }
    }
    Ok(removed)
}

/// Whether a live writer holds the lock of a staging file (taken by `put` when it created
/// it). A file that is gone meanwhile counts as being written: there is nothing to remove.
fn is_being_written(dir: &OwnedFd, name: &std::ffi::CStr) -> rustix::io::Result<bool> {
    let fd = match rustix::fs::openat(dir, name, READ_FLAGS | OFlags::NOFOLLOW | OFlags::NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if is_missing(e) => return Ok(true),
        Err(e) => return Err(e),
    };
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        // Released as `fd` closes: no writer ever takes the lock of an existing staging file.
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(e),
    }
}

fn modified(stat: &Stat) -> std::time::SystemTime {
    let secs = stat.st_mtime;
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn meta_from_stat(key: ObjectKey, stat: &Stat) -> ObjectMeta {
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    // nginx's format (ngx_http_set_etag): mtime seconds and size, in hex.
    let etag = format!("\"{:x}-{:x}\"", stat.st_mtime, size);
    ObjectMeta::new(key, size, modified(stat)).with_etag(etag)
}

fn read_exact_at(file: &std::fs::File, range: Range<u64>) -> io::Result<Bytes> {
    let len = usize::try_from(range.end - range.start).map_err(io::Error::other)?;
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, range.start)?;
    Ok(buf.freeze())
}

/// A byte range of an open file: a [`LocalStorage::get`] larger than a single read.
///
/// The file was opened before the first byte goes out, so a concurrent atomic replace of the
/// object never mixes two versions in one response.
pub struct FileRegion {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) key: ObjectKey,
    pub(crate) range: Range<u64>,
}

impl FileRegion {
    /// The object's key.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Which bytes of the file the region covers.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The bytes, read in chunks of up to 128 KiB: from the page cache on the async worker,
    /// from the disk on the blocking pool.
    pub fn into_stream(self) -> ByteStream {
        read_stream(self.file, self.key, self.range)
    }
}

impl fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegion").field("key", &self.key).field("range", &self.range).finish_non_exhaustive()
    }
}

/// Streams `range` of an open file in chunks of up to [`CHUNK`] bytes. Each chunk is read on
/// the async worker when it is in the page cache (`RWF_NOWAIT`, a short read is a short
/// chunk) and on the blocking pool otherwise. The file was opened before the first byte went
/// out, so a concurrent atomic replace never mixes two versions. Dropping the stream (a client
/// that went away) stops the reads.
fn read_stream(file: Arc<std::fs::File>, key: ObjectKey, range: Range<u64>) -> ByteStream {
    let arena = BytesMut::with_capacity(ARENA);
    stream::try_unfold((file, key, range.start, arena), move |(file, key, pos, mut arena)| {
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(CHUNK);
            let bytes = match read_nowait(&file, pos, want, &mut arena) {
                Some(read) => read.map_err(|e| io_error(&key, e.into()))?,
                None => read_blocking(Arc::clone(&file), &key, pos, want).await?,
            };
            let next = pos + bytes.len() as u64;
            Ok(Some((bytes, (file, key, next, arena))))
        }
    })
    .boxed()
}

/// Up to `len` bytes at `pos` if they are in the page cache, cut from `arena`; `None` if
/// reading would block.
fn read_nowait(file: &std::fs::File, pos: u64, len: u64, arena: &mut BytesMut) -> Option<rustix::io::Result<Bytes>> {
    use rustix::io::Errno;
    let len = len as usize;
    if arena.capacity() < len {
        // Reclaims the arena in place when every chunk cut from it has been dropped.
        arena.reserve(ARENA.max(len));
    }
    arena.resize(len, 0);
    let read = rustix::io::preadv2(
        file,
        &mut [std::io::IoSliceMut::new(&mut arena[..])],
        pos,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    let result = match read {
        // 0 bytes before the end: the file shrank under us; let the blocking read report it.
        Ok(0) | Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL) => None,
        Ok(n) => Some(Ok(arena.split_to(n).freeze())),
        Err(e) => Some(Err(e)),
    };
    arena.clear();
    result
}

/// Whether the first and the last byte of `len` bytes at `pos` are in the page cache: one-byte
/// `preadv2(RWF_NOWAIT)` reads, which never wait for the disk.
pub(crate) fn is_cached(file: &std::fs::File, pos: u64, len: usize) -> bool {
    let mut byte = [0u8; 1];
    let last = pos + len.max(1) as u64 - 1;
    [pos, last].into_iter().all(|at| {
        let read = rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            at,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        matches!(read, Ok(1))
    })
}

/// Exactly `len` bytes at `pos` of `key`'s open file, read on the blocking pool: the disk may
/// be slow, and an async worker never waits for it.
pub(crate) async fn read_blocking(file: Arc<std::fs::File>, key: &ObjectKey, pos: u64, len: u64) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || read_uninit(&file, pos, len))
        .await
        .map_err(|e| Error::storage(BACKEND, e))?
        .map_err(|e| io_error(key, e))
}

/// Exactly `len` bytes at `pos`, read (blocking) into fresh memory without zeroing it first.
fn read_uninit(file: &std::fs::File, pos: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let at = pos + buf.len() as u64;
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being read"));
        }
    }
    Ok(Bytes::from(buf))
}

fn is_missing(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    // ELOOP: a symlink met with O_NOFOLLOW; EXDEV: RESOLVE_BENEATH refused to leave the root.
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::ISDIR | Errno::NAMETOOLONG)
}

fn io_error(key: &ObjectKey, e: io::Error) -> Error {
    match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(errno) if is_missing(errno) => not_found(key),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT) => {
            tracing::error!(%key, error = %e, "the storage is full");
            Error::StorageFull
        }
        _ => Error::storage(BACKEND, e),
    }
}

fn not_found(key: &ObjectKey) -> Error {
    Error::NotFound { key: key.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageExt;

    #[tokio::test]
    async fn small_files_come_from_the_caches_without_blocking_or_from_the_pool_when_cold() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("a/small.txt").unwrap();
        storage.put_bytes(&key, "cached bytes").await.unwrap();

        let (meta, bytes) = storage.inner.read_cached(&key, 1024).expect("all in the caches").unwrap();
        assert_eq!((meta.size, bytes.as_deref()), (12, Some(&b"cached bytes"[..])));
        let (_, none) = storage.inner.read_cached(&key, 4).expect("metadata only").unwrap();
        assert_eq!(none, None, "larger than inline_max: no bytes");

        // Evict the file's (clean, fsynced) pages: RWF_NOWAIT must refuse rather than block...
        // (The kernel keeps a page another reader holds at that instant, or one still under
        // write-back on a busy machine: make it clean and evict again then.)
        let file = std::fs::File::open(dir.path().join("a/small.txt")).unwrap();
        let cold = (0..100).any(|_| {
            file.sync_all().unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            storage.inner.read_cached(&key, 1024).is_none()
        });
        assert!(cold, "a cold file would block: the pool takes over");
        // ...and the pool reads it.
        let (_, bytes) = storage.head_with_bytes(&key, 1024).await.unwrap();
        assert_eq!(bytes.as_deref(), Some(&b"cached bytes"[..]));
    }

    #[tokio::test]
    async fn large_files_stream_intact_whether_cached_or_cold() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("big.bin").unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        storage.put_bytes(&key, data.clone()).await.unwrap();
        for cold in [false, true] {
            if cold {
                let file = std::fs::File::open(dir.path().join("big.bin")).unwrap();
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            }
            let got = storage.get(&key, GetOptions::default().with_range(1..2_999_999)).await.unwrap();
            assert!(matches!(&got.payload, Payload::File(region) if region.range() == (1..2_999_999)));
            assert!(got.bytes().await.unwrap()[..] == data[1..2_999_999], "cold: {cold}");
        }
    }

    #[tokio::test]
    async fn the_staging_sweep_never_touches_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("up/large.bin").unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes>>();
        tx.send(Ok(Bytes::from_static(b"first half, "))).unwrap();
        let body = futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|chunk| (chunk, rx)) });
        let writer = {
            let (storage, key) = (storage.clone(), key.clone());
            tokio::spawn(async move { storage.put(&key, body.boxed(), PutOptions::default()).await })
        };
        let staged = loop {
            let found: Vec<_> = std::fs::read_dir(dir.path().join("up")).into_iter().flatten().flatten().collect();
            if let Some(entry) = found.first() {
                break entry.path();
            }
            tokio::task::yield_now().await;
        };
        // However old it looks, a file whose writer is alive stays.
        assert_eq!(storage.remove_staging_files(Duration::ZERO).await.unwrap(), 0);
        assert!(staged.exists());
        tx.send(Ok(Bytes::from_static(b"second half"))).unwrap();
        drop(tx);
        writer.await.unwrap().unwrap();
        let stored = storage.get(&key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
        assert_eq!(&stored[..], b"first half, second half");

        // An abandoned staging file (no writer holds its lock) goes, once old enough.
        std::fs::write(dir.path().join("up/.ps-tmp-dead"), "partial").unwrap();
        assert_eq!(storage.remove_staging_files(Duration::from_secs(3600)).await.unwrap(), 0, "too young");
        assert_eq!(storage.remove_staging_files(Duration::ZERO).await.unwrap(), 1);
        assert!(!dir.path().join("up/.ps-tmp-dead").exists());
    }

    #[tokio::test]
    async fn the_non_blocking_path_keeps_confinement_and_hides_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("root/link")).unwrap();
        std::fs::write(dir.path().join("root/.ps-tmp-1"), "partial").unwrap();
        std::fs::create_dir(dir.path().join("root/folder")).unwrap();
        let storage = LocalStorage::new(dir.path().join("root")).unwrap();
        for name in ["link", ".ps-tmp-1", "folder", "missing"] {
            let key = ObjectKey::new(name).unwrap();
            // The fast path may defer to the pool (a name never looked up is not cached), but
            // never finds anything.
            let fast = storage.inner.read_cached(&key, 1024);
            assert!(matches!(fast, None | Some(Err(Error::NotFound { .. }))), "{name}: {fast:?}");
            let full = storage.head_with_bytes(&key, 1024).await;
            assert!(matches!(full, Err(Error::NotFound { .. })), "{name}: {full:?}");
        }
    }
}
