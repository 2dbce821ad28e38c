//! An in-memory backend for tests and docs, with failure injection.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, stream};
use tokio::sync::watch;

use super::{
    GetOptions, GetResult, ObjectMeta, Payload, PutMode, PutOptions, PutStream, Storage, UNIQUE_ATTEMPTS,
    check_if_match, check_range, normalise_base_url, with_random_suffix,
};
use crate::{Error, ObjectKey, Result};

const BACKEND: &str = "memory";

/// A fault [`MemoryStorage`] can be told to produce, once, on the next matching operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The next `head` fails.
    Head,
    /// The next `get` fails before returning anything.
    Get,
    /// The next `get` returns a stream that fails after this many bytes.
    GetStreamAfter(u64),
    /// The next `put` fails after reading this many bytes of its input.
    PutAfter(u64),
    /// The next `delete` fails.
    Delete,
}

/// Objects held in memory: for tests, docs and examples.
///
/// Reads stream in chunks (64 KiB by default, see [`MemoryStorage::with_chunk_size`]), so
/// streaming behaviour can be tested without a disk; [`MemoryStorage::inject`] makes the next
/// matching operation fail; [`MemoryStorage::open_reads`] tells how many read streams are
/// alive, so a test can see that a dropped download stopped reading.
///
/// ```
/// use private_storage::{Fault, MemoryStorage, ObjectKey, StorageExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let storage = MemoryStorage::new();
/// let key = ObjectKey::new("a.txt")?;
/// storage.put_bytes(&key, "hello").await?;
///
/// storage.inject(Fault::Get);
/// assert!(storage.read(&key).await.is_err());
/// assert_eq!(storage.read(&key).await?, "hello"); // faults fire once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
    base_url: Arc<str>,
    chunk_size: usize,
}

struct Inner {
    objects: RwLock<BTreeMap<ObjectKey, (ObjectMeta, Bytes)>>,
    faults: Mutex<Vec<Fault>>,
    generation: AtomicU64,
    open_reads: watch::Sender<usize>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("objects", &self.inner.objects.read().map(|o| o.len()).unwrap_or(0))
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                objects: RwLock::default(),
                faults: Mutex::default(),
                generation: AtomicU64::new(0),
                open_reads: watch::Sender::new(0),
            }),
            base_url: Arc::from(super::DEFAULT_BASE_URL),
            chunk_size: 64 * 1024,
        }
    }

    /// Sets the URL prefix of this storage's links. Defaults to `/private-media/`.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Arc::from(normalise_base_url(base_url));
        self
    }

    /// Sets the size of the chunks reads are streamed in. Defaults to 64 KiB.
    ///
    /// # Panics
    /// If `chunk_size` is zero.
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        self.chunk_size = chunk_size;
        self
    }

    /// Makes the next operation matching `fault` fail (once).
    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    /// The number of read streams alive right now, as a watch channel: a test can wait until a
    /// dropped download has stopped reading (`open_reads().wait_for(|n| *n == 0)`).
    pub fn open_reads(&self) -> watch::Receiver<usize> {
        self.inner.open_reads.subscribe()
    }

    /// Removes the first queued fault `pick` accepts, returning what `pick` made of it.
    fn take_fault<T>(&self, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let mut faults = self.inner.faults.lock().unwrap_or_else(|e| e.into_inner());
        let (i, value) = faults.iter().enumerate().find_map(|(i, f)| pick(f).map(|v| (i, v)))?;
        faults.remove(i);
        Some(value)
    }

    fn lookup(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes)> {
        let objects = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.get(key).cloned().ok_or_else(|| Error::NotFound { key: key.clone() })
    }
}

fn injected(what: &str) -> Error {
    Error::storage(BACKEND, format!("injected fault: {what}"))
}

/// Keeps [`MemoryStorage::open_reads`] up to date for as long as a read stream lives.
struct ReadGuard(watch::Sender<usize>);

impl ReadGuard {
    fn new(sender: &watch::Sender<usize>) -> Self {
        sender.send_modify(|n| *n += 1);
        Self(sender.clone())
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        if self.take_fault(|f| (*f == Fault::Head).then_some(())).is_some() {
            return Err(injected("head"));
        }
        self.lookup(key).map(|(meta, _)| meta)
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        if self.take_fault(|f| (*f == Fault::Get).then_some(())).is_some() {
            return Err(injected("get"));
        }
        let (meta, data) = self.lookup(key)?;
        check_if_match(options.if_match.as_deref(), &meta)?;
        let range = check_range(options.range, meta.size)?;
        let (start, end) = (range.start as usize, range.end as usize);
        let fail_after = self.take_fault(|f| match f {
            Fault::GetStreamAfter(n) => Some(*n),
            _ => None,
        });
        if fail_after.is_none() && end - start <= self.chunk_size {
            return Ok(GetResult::new(meta, range, Payload::Bytes(data.slice(start..end))));
        }
        // The absolute position at which the injected failure fires, if any.
        let fail_at = fail_after.map(|n| start + (n as usize).min(end - start));
        let chunk = self.chunk_size;
        let guard = ReadGuard::new(&self.inner.open_reads);
        let body = stream::unfold(Some((data, start, guard)), move |state| {
            let step = state.and_then(|(data, pos, guard)| {
                if fail_at == Some(pos) {
                    return Some((Err(injected("get stream")), None));
                }
                if pos >= end {
                    return None;
                }
                let next = (pos + chunk).min(end).min(fail_at.unwrap_or(usize::MAX));
                Some((Ok(data.slice(pos..next)), Some((data, next, guard))))
            });
            async move { step }
        });
        Ok(GetResult::new(meta, range, Payload::Stream(body.boxed())))
    }

    async fn put(&self, key: &ObjectKey, mut data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        let fail_after = self.take_fault(|f| match f {
            Fault::PutAfter(n) => Some(*n),
            _ => None,
        });
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.next().await {
            buf.extend_from_slice(&chunk?);
            if fail_after.is_some_and(|limit| buf.len() as u64 >= limit) {
                return Err(injected("put"));
            }
        }
        let mut objects = self.inner.objects.write().unwrap_or_else(|e| e.into_inner());
        let key = match options.mode {
            PutMode::Overwrite => key.clone(),
            PutMode::Create if objects.contains_key(key) => return Err(Error::AlreadyExists { key: key.clone() }),
            PutMode::Create => key.clone(),
            PutMode::CreateUnique => std::iter::once(key.clone())
                .chain(std::iter::repeat_with(|| with_random_suffix(key)).take(UNIQUE_ATTEMPTS))
                .find(|k| !objects.contains_key(k))
                .ok_or_else(|| Error::AlreadyExists { key: key.clone() })?,
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut meta =
            ObjectMeta::new(key.clone(), buf.len() as u64, SystemTime::now()).with_etag(format!("\"m{generation:x}\""));
        meta.content_type = options.content_type;
        objects.insert(key, (meta.clone(), buf.freeze()));
        Ok(meta)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        if self.take_fault(|f| (*f == Fault::Delete).then_some(())).is_some() {
            return Err(injected("delete"));
        }
        self.inner.objects.write().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }

    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        let objects = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        let items: Vec<_> = objects
            .values()
            .filter(|(meta, _)| prefix.is_none_or(|p| meta.key.starts_with(p)))
            .map(|(meta, _)| Ok(meta.clone()))
            .collect();
        stream::iter(items).boxed()
    }

    fn base_url(&self) -> &str {
        &self.base_url
    }
}
