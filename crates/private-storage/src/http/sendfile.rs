//! Zero-copy downloads: a local file's bytes handed from the page cache to the socket by the
//! kernel (`sendfile(2)`), as nginx serves static files, instead of being copied into the
//! process and out again.
//!
//! HTTP/1 framing stays with hyper. The response body yields *placeholder* frames: byte
//! slices of a zeroed region that is never read, each standing for a range of the open file.
//! hyper queues body frames without copying them and hands them to the connection's
//! `poll_write_vectored` as they are ([`hyper`'s `writev(true)`][writev], which the server
//! sets); [`SendfileStream`], the connection, recognises a placeholder by its address and
//! sends the file range it stands for with `sendfile` instead. Everything else (the head,
//! frames of real bytes) is written as usual.
//!
//! What keeps the wrong bytes from ever being sent:
//! - At most one placeholder is outstanding per connection: the body yields the next one only
//!   once the connection has sent all of the last one's bytes, and consecutive placeholders
//!   point into different halves of the region. A placeholder the connection does not expect
//!   (wrong address or length, or none outstanding) fails the write, so hyper aborts the
//!   connection — a broken transfer, never zeros or another file's bytes.
//! - A body dropped before its last placeholder was written leaves that job in place: the
//!   frame still in hyper's buffer is the dropped body's, and is sent as such; the next
//!   response on the connection waits for it.
//! - A file that shrinks under the transfer ends it with an error (`sendfile` returns 0).
//! - Only the local backend's plain reads ([`Payload::File`](crate::Payload::File)) take this
//!   path: encrypted, cached and remote payloads are bytes in memory and are written as such.
//!
//! The disk is never read on the async workers: a range is sent by `sendfile` only when its
//! first and last pages are in the page cache (`preadv2(RWF_NOWAIT)` of one byte each); a cold
//! range is read on the blocking pool in chunks, as [`FileRegion::into_stream`] does, and sent
//! as bytes (which also brings the file into the cache). Pages evicted between the check and
//! the send are read by `sendfile` itself.
//!
//! [writev]: https://docs.rs/hyper/1/hyper/server/conn/http1/struct.Builder.html#method.writev

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::storage::{FileRegion, local};

/// The most one placeholder stands for, and so the most one `sendfile` call sends.
const FRAME: usize = 2 << 20;

/// Set once `sendfile` is refused for a file (a filesystem without it): later responses are
/// streamed.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The zeroed region placeholders point into: two halves of [`FRAME`] bytes. It is allocated
/// zeroed (fresh pages from the kernel, never touched: no memory in use) and never read.
fn region() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    REGION.get_or_init(|| Box::leak(vec![0u8; 2 * FRAME].into_boxed_slice()))
}

/// Where `buf` starts in the placeholder region, if it lies in it.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let base = region().as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (!buf.is_empty() && at + buf.len() <= 2 * FRAME).then_some(at)
}

/// A file range a placeholder stands for.
struct Job {
    file: Arc<File>,
    /// Where the range starts in the file.
    offset: u64,
    len: usize,
    /// How much of it the connection has sent.
    sent: usize,
    /// Which half of the region the placeholder points into.
    half: usize,
    /// Whether it is the end of the response's file range.
    last: bool,
}

#[derive(Default)]
struct State {
    /// The outstanding placeholder, if any.
    job: Option<Job>,
    /// A body waiting for the outstanding placeholder to be sent.
    waiting: Option<Waker>,
    next_half: usize,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the critical sections panics; a poisoned lock's state is still whole.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection's side of zero-copy responses: put it into the extensions of every request
/// read from a [`SendfileStream`], and the file service sends local files through it.
///
/// A handle belongs to the one connection it came from; requests from anywhere else must not
/// carry it.
#[derive(Clone)]
pub struct Sendfile(Arc<Shared>);

impl std::fmt::Debug for Sendfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sendfile(..)")
    }
}

/// A TCP connection that sends the file ranges behind placeholder frames with `sendfile(2)`
/// (see the [module docs](self)); otherwise a [`TcpStream`].
///
/// Serve it with hyper's HTTP/1 server with `writev(true)`, and put the [`Sendfile`] handle
/// into each request's extensions:
///
/// ```no_run
/// # async fn run(listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// let (stream, _peer) = listener.accept().await?;
/// let (stream, sendfile) = private_storage::SendfileStream::new(stream);
/// // builder.writev(true).serve_connection(TokioIo::new(stream), service), where the
/// // service inserts `sendfile.clone()` into every request's extensions.
/// # drop((stream, sendfile)); Ok(()) }
/// ```
pub struct SendfileStream {
    stream: TcpStream,
    shared: Arc<Shared>,
    /// Whether `TCP_CORK` is on: from a file's first placeholder to its last, so the kernel
    /// sends full segments (nginx's `tcp_nopush`); anything else is written uncorked.
    corked: bool,
}

impl std::fmt::Debug for SendfileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendfileStream").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl SendfileStream {
    /// Wraps an accepted connection; the handle goes into its requests' extensions.
    pub fn new(stream: TcpStream) -> (Self, Sendfile) {
        let shared = Arc::new(Shared::default());
        (Self { stream, shared: Arc::clone(&shared), corked: false }, Sendfile(shared))
    }

    /// The connection.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends (part of) the outstanding job for the placeholder `len` bytes at `at`.
    fn poll_send(&mut self, cx: &mut Context<'_>, at: usize, len: usize) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        let Some(job) = state.job.as_mut() else {
            return Poll::Ready(Err(io::Error::other("a zero-copy frame without its file: aborting the response")));
        };
        if at != job.half * FRAME + job.sent || len != job.len - job.sent {
            return Poll::Ready(Err(io::Error::other("a zero-copy frame out of order: aborting the response")));
        }
        if !self.corked {
            self.corked = rustix::net::sockopt::set_tcp_cork(&self.stream, true).is_ok();
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut offset = job.offset + job.sent as u64;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, &*job.file, Some(&mut offset), len).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    )));
                }
                Ok(n) => {
                    job.sent += n;
                    if job.sent == job.len {
                        if job.last {
                            uncork(&self.stream, &mut self.corked);
                        }
                        state.job = None;
                        if let Some(waker) = state.waiting.take() {
                            waker.wake();
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    if matches!(
                        rustix::io::Errno::from_io_error(&e),
                        Some(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS)
                    ) && !UNSUPPORTED.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(error = %e, "sendfile is not supported here: streaming files instead");
                    }
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Sends what the cork held back, before anything but a file's range is written.
    fn uncork(&mut self) {
        uncork(&self.stream, &mut self.corked);
    }
}

fn uncork(stream: &TcpStream, corked: &mut bool) {
    if *corked {
        let _ = rustix::net::sockopt::set_tcp_cork(stream, false);
        *corked = false;
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match placeholder_offset(buf) {
            Some(at) => self.poll_send(cx, at, buf.len()),
            None => {
                self.uncork();
                Pin::new(&mut self.stream).poll_write(cx, buf)
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Everything before the first placeholder goes out as usual; the placeholder on its own.
        match bufs.iter().position(|buf| placeholder_offset(buf).is_some()) {
            Some(0) => {
                let at = placeholder_offset(&bufs[0]).unwrap_or_default();
                self.poll_send(cx, at, bufs[0].len())
            }
            Some(first) => {
                self.uncork();
                Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..first])
            }
            None => {
                self.uncork();
                Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The body of a local file's range sent through a connection's [`Sendfile`].
pub(crate) struct SendfileBody {
    shared: Arc<Shared>,
    region: FileRegion,
    /// Where the next frame starts.
    pos: u64,
    /// A cold chunk being read on the blocking pool.
    cold: Option<futures_core::future::BoxFuture<'static, crate::Result<Bytes>>>,
}

impl SendfileBody {
    /// The body of `region` through the connection's `sendfile`; the region back when the
    /// request came from elsewhere or `sendfile` is known not to work here.
    pub(crate) fn new(region: FileRegion, sendfile: Option<&Sendfile>) -> Result<Self, FileRegion> {
        let Some(sendfile) = sendfile.filter(|_| !UNSUPPORTED.load(Ordering::Relaxed)) else {
            return Err(region);
        };
        Ok(Self { shared: Arc::clone(&sendfile.0), pos: region.range.start, region, cold: None })
    }

    /// Bytes not yet yielded.
    pub(crate) fn remaining(&self) -> u64 {
        self.region.range.end - self.pos
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<crate::Result<Bytes>>> {
        loop {
            if let Some(cold) = &mut self.cold {
                let read = ready!(cold.as_mut().poll(cx));
                self.cold = None;
                return Poll::Ready(Some(match read {
                    Ok(bytes) => {
                        self.pos += bytes.len() as u64;
                        Ok(bytes)
                    }
                    Err(e) => {
                        let key = &self.region.key;
                        tracing::error!(%key, error = %e, "storage failed mid-transfer; aborting the response");
                        Err(e)
                    }
                }));
            }
            let end = self.region.range.end;
            if self.pos >= end {
                return Poll::Ready(None);
            }
            let mut state = self.shared.lock();
            if state.job.is_some() {
                state.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let len = (end - self.pos).min(FRAME as u64) as usize;
            if !local::is_cached(&self.region.file, self.pos, len) {
                drop(state);
                let (file, key, pos) = (Arc::clone(&self.region.file), self.region.key.clone(), self.pos);
                let want = local::CHUNK.min(len as u64);
                self.cold = Some(Box::pin(async move { local::read_blocking(file, &key, pos, want).await }));
                continue;
            }
            let half = state.next_half;
            state.next_half ^= 1;
            let last = self.pos + len as u64 == end;
            state.job = Some(Job { file: Arc::clone(&self.region.file), offset: self.pos, len, sent: 0, half, last });
            self.pos += len as u64;
            let start = half * FRAME;
            return Poll::Ready(Some(Ok(Bytes::from_static(&region()[start..start + len]))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GetOptions, LocalStorage, ObjectKey, Payload, Storage, StorageExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: our end wrapped, the peer's plain.
    async fn pair() -> (SendfileStream, Sendfile, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (ours, handle) = SendfileStream::new(ours);
        (ours, handle, peer)
    }

    async fn region(storage: &LocalStorage, key: &ObjectKey, range: std::ops::Range<u64>) -> FileRegion {
        match storage.get(key, GetOptions::default().with_range(range)).await.unwrap().payload {
            Payload::File(region) => region,
            other => panic!("a local read larger than one read is a file region: {other:?}"),
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
    }

    /// What the body yields, written to the connection as hyper would, read by the peer.
    async fn send(body: &mut SendfileBody, mut ours: SendfileStream, mut peer: TcpStream) -> (Vec<u8>, usize) {
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut placeholders = 0;
        while let Some(frame) = std::future::poll_fn(|cx| body.poll_next(cx)).await {
            let frame = frame.unwrap();
            placeholders += usize::from(placeholder_offset(&frame).is_some());
            ours.write_all(&frame).await.unwrap();
        }
        let corked = rustix::net::sockopt::tcp_cork(ours.get_ref()).unwrap();
        assert!(!corked, "uncorked once the file is out: nothing of it held back");
        ours.shutdown().await.unwrap();
        drop(ours);
        (reader.await.unwrap(), placeholders)
    }

    #[test]
    fn only_slices_of_the_region_are_placeholders() {
        let region = super::region();
        assert_eq!(placeholder_offset(&region[..10]), Some(0));
        assert_eq!(placeholder_offset(&region[FRAME..FRAME + 1]), Some(FRAME));
        assert_eq!(placeholder_offset(&region[2 * FRAME - 1..]), Some(2 * FRAME - 1));
        assert_eq!(placeholder_offset(&region[5..5]), None, "an empty slice is nothing to send");
        let zeros = vec![0u8; 16];
        assert_eq!(placeholder_offset(&zeros), None, "zeros elsewhere are bytes");
        assert_eq!(placeholder_offset(b"hello"), None);
    }

    #[tokio::test]
    async fn a_cached_file_goes_out_by_placeholders_and_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("big.bin").unwrap();
        let data = pattern(2 * FRAME + 12_345);
        storage.put_bytes(&key, data.clone()).await.unwrap();
        let _ = storage.get(&key, GetOptions::default()).await.unwrap().bytes().await.unwrap(); // cached
        for range in [0..data.len() as u64, 7..FRAME as u64 + 9, 100_000..data.len() as u64 - 1] {
            let (ours, handle, peer) = pair().await;
            let mut body = SendfileBody::new(region(&storage, &key, range.clone()).await, Some(&handle)).unwrap();
            let (got, placeholders) = send(&mut body, ours, peer).await;
            assert!(got == data[range.start as usize..range.end as usize], "{range:?}");
            let frames = (range.end - range.start).div_ceil(FRAME as u64) as usize;
            assert_eq!(placeholders, frames, "every frame of a cached file is a placeholder: {range:?}");
        }
    }

    #[tokio::test]
    async fn a_cold_file_is_read_on_the_blocking_pool_and_still_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("cold.bin").unwrap();
        let data = pattern(FRAME + 77);
        storage.put_bytes(&key, data.clone()).await.unwrap();
        let file = std::fs::File::open(dir.path().join("cold.bin")).unwrap();
        rustix::fs::fsync(&file).unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let (ours, handle, peer) = pair().await;
        let mut body = SendfileBody::new(region(&storage, &key, 0..data.len() as u64).await, Some(&handle)).unwrap();
        let first = std::future::poll_fn(|cx| body.poll_next(cx)).await.unwrap().unwrap();
        assert_eq!(placeholder_offset(&first), None, "the first chunk of a cold file is read, not sent by the kernel");
        assert!(first[..] == data[..first.len()]);
        let (rest, _) = send(&mut body, ours, peer).await;
        assert!([&first[..], &rest[..]].concat() == data);
    }

    #[tokio::test]
    async fn a_placeholder_the_connection_does_not_expect_fails_the_write() {
        let (mut ours, handle, _peer) = pair().await;
        let err = ours.write(&super::region()[..10]).await.unwrap_err();
        assert!(err.to_string().contains("without its file"), "{err}");
        // One outstanding, for the first half: a slice of the other half, or of the wrong
        // length, is not it.
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("f.bin").unwrap();
        storage.put_bytes(&key, pattern(200_000)).await.unwrap();
        let _ = storage.get(&key, GetOptions::default()).await.unwrap().bytes().await.unwrap();
        let mut body = SendfileBody::new(region(&storage, &key, 0..200_000).await, Some(&handle)).unwrap();
        let frame = std::future::poll_fn(|cx| body.poll_next(cx)).await.unwrap().unwrap();
        assert_eq!(placeholder_offset(&frame), Some(0));
        for wrong in [&super::region()[FRAME..FRAME + 200_000], &super::region()[..199_999]] {
            let err = ours.write(wrong).await.unwrap_err();
            assert!(err.to_string().contains("out of order"), "{err}");
        }
        assert!(ours.write(&frame).await.unwrap() > 0, "the expected placeholder is sent");
    }

    #[tokio::test]
    async fn without_the_connection_handle_a_region_is_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let key = ObjectKey::new("f.bin").unwrap();
        storage.put_bytes(&key, pattern(200_000)).await.unwrap();
        assert!(SendfileBody::new(region(&storage, &key, 0..200_000).await, None).is_err());
    }
}
