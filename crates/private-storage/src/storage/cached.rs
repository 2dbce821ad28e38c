//! [`CachedStorage`]: small objects kept in memory in front of any storage.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::stream::BoxStream;

use super::{
    GetOptions, GetResult, ObjectMeta, Payload, PresignedGet, PutMode, PutOptions, PutStream, Storage, check_if_match,
    check_range,
};
use crate::{ObjectKey, Result};

/// Keeps the metadata and bytes of small objects in memory, in front of any [`Storage`]: a
/// download of a cached file costs no system call and no request to the backend.
///
/// What is kept is what [`Storage::head_with_bytes`] read **with** its bytes — objects at most
/// [`max_object_size`](Self::max_object_size) long, as the file service asks for them when it
/// streams (every other delivery mode reads no bytes, and nothing is kept for it). `head`,
/// `head_with_bytes` and `get` (with its range and `if_match`) are answered from a cached
/// entry; everything else goes to the inner storage.
///
/// **The cache is exact only if every change to an object goes through it or is announced to
/// it.** Writes through this wrapper (`put`, `copy`, `overwrite_at`, `delete`) forget their key
/// before they return, and a read that raced such a write is not kept. A change made elsewhere
/// — another process, another instance on the same bucket, the inner storage used directly —
/// must be announced with [`invalidate`](Self::invalidate) (or [`clear`](Self::clear)); the
/// server does it with its change notifications. For storages that other writers change
/// silently, [`max_age`](Self::max_age) bounds how long a change can go unseen (a minute by
/// default) — or don't cache. A missing object is never cached: a new file is seen at once.
///
/// Where announcements can stop arriving (a lost connection to whoever sends them), say so with
/// [`only_while`](Self::only_while): while it is false the cache neither answers nor keeps.
///
/// ```
/// use private_storage::{CachedStorage, LocalStorage, ObjectKey, Storage, StorageExt};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let storage = CachedStorage::new(LocalStorage::new(dir.path())?, 64 << 20); // a 64 MiB budget
/// let key = ObjectKey::new("docs/a.txt")?;
/// storage.put_bytes(&key, "hello").await?;
/// let (meta, bytes) = storage.head_with_bytes(&key, 4096).await?; // read, and kept
/// assert_eq!((meta.size, bytes.as_deref()), (5, Some(&b"hello"[..])));
/// storage.put_bytes(&key, "hello again").await?; // a write through it forgets the key
/// assert_eq!(storage.read(&key).await?, "hello again");
/// # Ok::<(), private_storage::Error>(())
/// # }).unwrap();
/// ```
pub struct CachedStorage<S> {
    inner: S,
    entries: quick_cache::sync::Cache<ObjectKey, Entry, ByFootprint>,
    max_object: u64,
    max_age: Duration,
    /// Invalidations so far: a read that began before one is not kept.
    epoch: AtomicU64,
    /// Whether the cache may answer and keep now (see [`CachedStorage::only_while`]).
    live: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

#[derive(Clone)]
struct Entry {
    meta: ObjectMeta,
    bytes: Bytes,
    loaded: Instant,
}

/// Weighs an entry by the memory it holds: the bytes, the key, the metadata's strings and the
/// cache's own bookkeeping (roughly).
#[derive(Debug, Clone, Copy)]
struct ByFootprint;

const PER_ENTRY: usize = 160;

impl quick_cache::Weighter<ObjectKey, Entry> for ByFootprint {
    fn weight(&self, key: &ObjectKey, entry: &Entry) -> u64 {
        let strings = entry.meta.etag.as_ref().map_or(0, String::len)
            + entry.meta.content_type.as_ref().map_or(0, String::len)
            + 2 * key.as_str().len();
        (PER_ENTRY + strings + entry.bytes.len()) as u64
    }
}

impl<S: fmt::Debug> fmt::Debug for CachedStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStorage")
            .field("inner", &self.inner)
            .field("budget", &self.entries.capacity())
            .field("max_object", &self.max_object)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> CachedStorage<S> {
    /// Caches small objects of `inner` within `budget` bytes of memory (least recently and
    /// least frequently used go first).
    pub fn new(inner: S, budget: u64) -> Self {
        Self {
            inner,
            entries: quick_cache::sync::Cache::with_weighter((budget / 8192).max(16) as usize, budget, ByFootprint),
            max_object: 64 * 1024,
            max_age: Duration::from_secs(60),
            epoch: AtomicU64::new(0),
            live: None,
        }
    }

    /// Keeps objects of at most `size` bytes. Defaults to 64 KiB, the most the file service
    /// reads with the metadata.
    pub fn max_object_size(mut self, size: u64) -> Self {
        self.max_object = size;
        self
    }

    /// Reads an entry again once it is this old, whatever happened. Defaults to a minute: a
    /// backstop for a change nobody announced, not the way changes are seen.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Answers from memory, and keeps what it reads, only while `live` says so — typically while
    /// the feed of [`invalidate`](Self::invalidate) calls is known to be complete. Defaults to
    /// always.
    pub fn only_while(mut self, live: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.live = Some(Arc::new(live));
        self
    }

    fn is_live(&self) -> bool {
        self.live.as_ref().is_none_or(|live| live())
    }

    /// The storage behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Forgets `key`: the next read asks the inner storage. Call it when the object changed
    /// without going through this wrapper.
    pub fn invalidate(&self, key: &ObjectKey) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(key);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }

    /// How many objects, and how many bytes by the budget's measure, are held.
    pub fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.entries.weight())
    }

    fn cached(&self, key: &ObjectKey) -> Option<Entry> {
        if !self.is_live() {
            return None;
        }
        self.entries.get(key).filter(|entry| entry.loaded.elapsed() < self.max_age)
    }

    /// Keeps what a read of `key` that began in `epoch` found, unless something was
    /// invalidated since.
    fn keep(&self, key: &ObjectKey, epoch: u64, meta: &ObjectMeta, bytes: &Bytes) {
        if self.epoch.load(Ordering::Acquire) != epoch || bytes.len() as u64 > self.max_object || !self.is_live() {
            return;
        }
        let entry = Entry { meta: meta.clone(), bytes: bytes.clone(), loaded: Instant::now() };
        self.entries.insert(key.clone(), entry);
        // An invalidation between the check and the insert: undo the insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            self.entries.remove(key);
        }
    }

    /// Runs a write of `key`, forgetting it before the write starts (readers go to the inner
    /// storage from then on) and again once it is done (a read that overlapped it is not kept).
    async fn writing<T>(&self, key: &ObjectKey, write: impl Future<Output = Result<T>>) -> Result<T> {
        self.invalidate(key);
        let result = write.await;
        self.invalidate(key);
        result
    }
}

#[async_trait]
impl<S: Storage> Storage for CachedStorage<S> {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        match self.cached(key) {
            Some(entry) => Ok(entry.meta),
            None => self.inner.head(key).await,
        }
    }

    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        if let Some(Entry { meta, bytes, .. }) = self.cached(key) {
            let bytes = (bytes.len() as u64 <= inline_max).then_some(bytes);
            return Ok((meta, bytes));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let (meta, bytes) = self.inner.head_with_bytes(key, inline_max).await?;
        if let Some(bytes) = &bytes {
            self.keep(key, epoch, &meta, bytes);
        }
        Ok((meta, bytes))
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        let Some(Entry { meta, bytes, .. }) = self.cached(key) else { return self.inner.get(key, options).await };
        check_if_match(options.if_match.as_deref(), &meta)?;
        let range = check_range(options.range, meta.size)?;
        let payload = Payload::Bytes(bytes.slice(range.start as usize..range.end as usize));
        Ok(GetResult::new(meta, range, payload))
    }

    async fn put(&self, key: &ObjectKey, data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        // A unique variant of `key` is a key nobody read yet: nothing cached to forget.
        self.writing(key, self.inner.put(key, data, options)).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        self.writing(to, self.inner.copy(from, to, mode)).await
    }

    async fn overwrite_at(
        &self,
        key: &ObjectKey,
        offset: u64,
        bytes: &[u8],
        if_match: &str,
    ) -> Result<Option<ObjectMeta>> {
        self.writing(key, self.inner.overwrite_at(key, offset, bytes, if_match)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.writing(key, self.inner.delete(key)).await
    }

    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn serves_stored_bytes(&self) -> bool {
        self.inner.serves_stored_bytes()
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        self.inner.local_path(key)
    }

    fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    async fn presigned_get(&self, key: &ObjectKey, request: &PresignedGet) -> Result<Option<String>> {
        self.inner.presigned_get(key, request).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use tokio::sync::Notify;

    use super::*;
    use crate::storage::{MemoryStorage, StorageExt};

    /// A storage that counts the reads reaching it, and can hold one `head_with_bytes` until
    /// released.
    #[derive(Debug, Default)]
    struct Counting {
        inner: MemoryStorage,
        reads: AtomicUsize,
        hold: Option<(Arc<Notify>, Arc<Notify>)>,
    }

    #[async_trait]
    impl Storage for Counting {
        async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.head(key).await
        }
        async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // MemoryStorage reads no bytes with the metadata: read them as LocalStorage does.
            let found = match self.inner.get(key, GetOptions::default()).await {
                Ok(got) if got.meta.size <= inline_max => Ok((got.meta.clone(), Some(got.bytes().await?))),
                Ok(got) => Ok((got.meta, None)),
                Err(e) => Err(e),
            };
            if let Some((inside, release)) = &self.hold {
                inside.notify_one();
                release.notified().await;
            }
            found
        }
        async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key, options).await
        }
        async fn put(&self, key: &ObjectKey, data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
            self.inner.put(key, data, options).await
        }
        async fn delete(&self, key: &ObjectKey) -> Result<()> {
            self.inner.delete(key).await
        }
        fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(name).unwrap()
    }

    fn reads(storage: &CachedStorage<Counting>) -> usize {
        storage.inner().reads.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_small_object_is_read_from_the_backend_once_and_served_whole_or_in_part() {
        let storage = CachedStorage::new(Counting::default(), 1 << 20);
        let k = key("a/small.txt");
        storage.inner().inner.put_bytes(&k, "0123456789").await.unwrap();
        let (meta, bytes) = storage.head_with_bytes(&k, 4096).await.unwrap();
        assert_eq!((meta.size, bytes.as_deref()), (10, Some(&b"0123456789"[..])));
        assert_eq!(reads(&storage), 1);

        let (again, bytes) = storage.head_with_bytes(&k, 4096).await.unwrap();
        assert_eq!((&again, bytes.as_deref()), (&meta, Some(&b"0123456789"[..])));
        assert_eq!(storage.head(&k).await.unwrap(), meta);
        let part = storage.get(&k, GetOptions::default().with_range(2..5)).await.unwrap();
        assert_eq!((part.range.clone(), part.bytes().await.unwrap()), (2..5, Bytes::from_static(b"234")));
        // Asked with a smaller inline limit: the metadata, without the bytes.
        assert_eq!(storage.head_with_bytes(&k, 4).await.unwrap(), (meta.clone(), None));
        assert_eq!(reads(&storage), 1, "every read after the first was answered from memory");

        // The contract's errors, from the cached entry.
        let wrong = storage.get(&k, GetOptions::default().with_if_match("\"other\"")).await;
        assert!(matches!(wrong, Err(crate::Error::PreconditionFailed { .. })), "{wrong:?}");
        let beyond = storage.get(&k, GetOptions::default().with_range(5..11)).await;
        assert!(matches!(beyond, Err(crate::Error::InvalidRange { .. })), "{beyond:?}");
        let tagged = GetOptions::default().with_if_match(meta.etag.clone().unwrap());
        assert_eq!(storage.get(&k, tagged).await.unwrap().bytes().await.unwrap(), "0123456789");
        assert_eq!(reads(&storage), 1);
    }

    #[tokio::test]
    async fn only_objects_read_with_their_bytes_and_within_the_size_limit_are_kept() {
        let storage = CachedStorage::new(Counting::default(), 1 << 20).max_object_size(8);
        let (small, large) = (key("small"), key("large"));
        storage.inner().inner.put_bytes(&small, "12345678").await.unwrap();
        storage.inner().inner.put_bytes(&large, "123456789").await.unwrap();
        for _ in 0..2 {
            assert_eq!(storage.head_with_bytes(&large, 4096).await.unwrap().1.as_deref(), Some(&b"123456789"[..]));
            // Without bytes (another delivery mode): nothing to keep.
            assert_eq!(storage.head_with_bytes(&small, 0).await.unwrap().1, None);
            assert!(storage.head_with_bytes(&key("missing"), 4096).await.unwrap_err().is_not_found());
        }
        assert_eq!(reads(&storage), 6, "nothing was kept");
        storage.head_with_bytes(&small, 8).await.unwrap();
        storage.head_with_bytes(&small, 8).await.unwrap();
        assert_eq!((reads(&storage), storage.usage().0), (7, 1));
        // A file that appears is seen at once: a miss is not remembered.
        storage.inner().inner.put_bytes(&key("missing"), "now").await.unwrap();
        assert_eq!(storage.head_with_bytes(&key("missing"), 8).await.unwrap().1.as_deref(), Some(&b"now"[..]));
    }

    #[tokio::test]
    async fn writes_through_the_cache_forget_their_key() {
        let storage = CachedStorage::new(Counting::default(), 1 << 20);
        let (k, copy) = (key("w/a.txt"), key("w/b.txt"));
        storage.put_bytes(&k, "one").await.unwrap();
        storage.put_bytes(&copy, "old copy").await.unwrap();
        for key in [&k, &copy] {
            storage.head_with_bytes(key, 4096).await.unwrap();
        }
        assert_eq!(storage.usage().0, 2);

        storage.put_bytes(&k, "two").await.unwrap();
        assert_eq!(storage.head_with_bytes(&k, 4096).await.unwrap().1.as_deref(), Some(&b"two"[..]));
        storage.copy(&k, &copy, PutMode::Overwrite).await.unwrap();
        assert_eq!(storage.read(&copy).await.unwrap(), "two");
        storage.delete(&k).await.unwrap();
        assert!(storage.head(&k).await.unwrap_err().is_not_found());
        assert!(storage.get(&k, GetOptions::default()).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn a_change_behind_the_cache_is_seen_once_announced_or_once_the_entry_is_too_old() {
        let storage = CachedStorage::new(Counting::default(), 1 << 20);
        let k = key("behind.txt");
        storage.inner().inner.put_bytes(&k, "first").await.unwrap();
        storage.head_with_bytes(&k, 4096).await.unwrap();
        storage.inner().inner.put_bytes(&k, "second").await.unwrap();
        assert_eq!(storage.read(&k).await.unwrap(), "first", "not announced: the cache cannot know");
        storage.invalidate(&k);
        assert_eq!(storage.head_with_bytes(&k, 4096).await.unwrap().1.as_deref(), Some(&b"second"[..]));

        storage.inner().inner.put_bytes(&k, "third").await.unwrap();
        storage.clear();
        assert_eq!(storage.head_with_bytes(&k, 4096).await.unwrap().1.as_deref(), Some(&b"third"[..]));

        let aged = CachedStorage::new(Counting::default(), 1 << 20).max_age(Duration::ZERO);
        aged.inner().inner.put_bytes(&k, "first").await.unwrap();
        aged.head_with_bytes(&k, 4096).await.unwrap();
        aged.inner().inner.put_bytes(&k, "second").await.unwrap();
        assert_eq!(aged.read(&k).await.unwrap(), "second", "an entry past its age is read again");
    }

    #[tokio::test]
    async fn while_not_live_the_cache_neither_answers_nor_keeps() {
        let live = Arc::new(AtomicBool::new(true));
        let storage = CachedStorage::new(Counting::default(), 1 << 20).only_while({
            let live = live.clone();
            move || live.load(Ordering::SeqCst)
        });
        let (kept, later) = (key("live/kept.txt"), key("live/later.txt"));
        storage.inner().inner.put_bytes(&kept, "kept").await.unwrap();
        storage.inner().inner.put_bytes(&later, "later").await.unwrap();
        storage.head_with_bytes(&kept, 4096).await.unwrap();
        storage.head_with_bytes(&kept, 4096).await.unwrap();
        assert_eq!(reads(&storage), 1);

        live.store(false, Ordering::SeqCst);
        storage.head_with_bytes(&kept, 4096).await.unwrap();
        storage.head(&kept).await.unwrap();
        storage.head_with_bytes(&later, 4096).await.unwrap();
        assert_eq!(reads(&storage), 4, "every read went to the backend");
        assert_eq!(storage.usage().0, 1, "and nothing new was kept");

        live.store(true, Ordering::SeqCst);
        storage.head_with_bytes(&kept, 4096).await.unwrap();
        assert_eq!(reads(&storage), 4);
    }

    #[tokio::test]
    async fn a_read_that_raced_an_invalidation_is_not_kept() {
        let (inside, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let counting = Counting { hold: Some((inside.clone(), release.clone())), ..Counting::default() };
        let storage = Arc::new(CachedStorage::new(counting, 1 << 20));
        let k = key("race.txt");
        storage.inner().inner.put_bytes(&k, "old").await.unwrap();

        let reader = tokio::spawn({
            let (storage, k) = (storage.clone(), k.clone());
            async move { storage.head_with_bytes(&k, 4096).await.unwrap().1 }
        });
        inside.notified().await; // the read has the old bytes in hand
        storage.inner().inner.put_bytes(&k, "new").await.unwrap();
        storage.invalidate(&k);
        release.notify_one();
        assert_eq!(reader.await.unwrap().as_deref(), Some(&b"old"[..]), "the read itself began before the change");
        assert_eq!(storage.usage().0, 0, "what it read is not kept");

        let next = tokio::spawn({
            let (storage, k) = (storage.clone(), k.clone());
            async move { storage.head_with_bytes(&k, 4096).await.unwrap().1 }
        });
        inside.notified().await;
        release.notify_one();
        assert_eq!(next.await.unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(storage.usage().0, 1);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let storage = CachedStorage::new(Counting::default(), 256 * 1024);
        let body = Bytes::from(vec![7u8; 4096]);
        for i in 0..200 {
            let k = key(&format!("budget/{i}.bin"));
            storage.put_bytes(&k, body.clone()).await.unwrap();
            storage.head_with_bytes(&k, 4096).await.unwrap();
        }
        let (entries, weight) = storage.usage();
        assert!(weight <= 256 * 1024, "{weight} bytes held");
        assert!((40..=64).contains(&entries), "{entries} files of 4 KiB in 256 KiB");
    }
}
