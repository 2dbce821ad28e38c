//! Streaming over a real socket: large files arrive intact, and a client that disconnects
//! stops the server-side read.
use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{Backend, app, pattern, serve, sha256, storage};
use futures_util::StreamExt;
use private_storage::{ObjectKey, ServePrivate, StorageExt};

const LARGE: usize = 48 * 1024 * 1024;

over_both_backends!(
    a_file_far_larger_than_a_chunk_downloads_intact,
    a_client_that_disconnects_stops_the_server_side_read
);

async fn a_file_far_larger_than_a_chunk_downloads_intact(backend: Backend) {
    let (storage, _dir) = storage(backend);
    let data = pattern(LARGE, 7);
    let key = ObjectKey::new("videos/large.bin").unwrap();
    storage.put_bytes(&key, data.clone()).await.unwrap();
    let addr = serve(app(ServePrivate::from_arc(storage))).await;
    let client = common::http().build().unwrap();
    let url = format!("http://{addr}/private-media/videos/large.bin");

    let response = client.get(&url).bearer_auth("root").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(LARGE as u64));
    let mut hasher_input = Vec::with_capacity(LARGE);
    let mut chunks = response.bytes_stream();
    let mut count = 0;
    while let Some(chunk) = chunks.next().await {
        hasher_input.extend_from_slice(&chunk.unwrap());
        count += 1;
    }
    assert!(count > 1, "the body arrived in several chunks");
    assert_eq!(sha256(&hasher_input), sha256(&data), "content hash");

    let (start, end) = (1_000_001usize, 40_000_000usize);
    let ranged = client
        .get(&url)
        .bearer_auth("root")
        .header("range", format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    let body = ranged.bytes().await.unwrap();
    assert_eq!(sha256(&body), sha256(&data[start..end]), "a large range arrives intact");
}

async fn a_client_that_disconnects_stops_the_server_side_read(backend: Backend) {
    let (inner, _dir) = storage(backend);
    let key = ObjectKey::new("large.bin").unwrap();
    inner.put_bytes(&key, pattern(LARGE, 3)).await.unwrap();
    let (tracking, _) = common::Instrumented::new(inner);
    let (yielded, mut open_reads) = (tracking.yielded.clone(), tracking.open_reads());
    let addr = serve(app(ServePrivate::new(tracking))).await;

    let socket = common::get_partly(addr, "/private-media/large.bin", "root", 1024 * 1024).await;
    open_reads.wait_for(|n| *n == 1).await.unwrap();
    drop(socket);

    // The bound only turns a hang into a failure; the wait itself is on the read ending.
    tokio::time::timeout(Duration::from_secs(20), open_reads.wait_for(|n| *n == 0))
        .await
        .expect("the server-side read did not stop after the client went away")
        .unwrap();
    let read = yielded.load(Ordering::SeqCst);
    assert!(read < LARGE as u64 / 2, "the server read {read} of {LARGE} bytes for a client that took ~1 MiB");
}

/// A storage where one key's reads block a thread until released — a cold disk, a stalled
/// network filesystem — as `LocalStorage` does on the blocking pool when the page cache cannot
/// answer. Everything else passes through.
#[derive(Debug)]
struct Stalled {
    inner: std::sync::Arc<dyn private_storage::Storage>,
    key: &'static str,
    release: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    entered: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl private_storage::Storage for Stalled {
    async fn head(&self, key: &ObjectKey) -> private_storage::Result<private_storage::ObjectMeta> {
        if key.as_str() == self.key {
            self.entered.send_replace(true);
            let release = self.release.clone();
            // Blocked in a thread of the blocking pool until the test lets go.
            tokio::task::spawn_blocking(move || release.lock().unwrap().recv()).await.unwrap().unwrap();
        }
        self.inner.head(key).await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        options: private_storage::GetOptions,
    ) -> private_storage::Result<private_storage::GetResult> {
        self.inner.get(key, options).await
    }

    async fn put(
        &self,
        key: &ObjectKey,
        data: private_storage::PutStream<'_>,
        options: private_storage::PutOptions,
    ) -> private_storage::Result<private_storage::ObjectMeta> {
        self.inner.put(key, data, options).await
    }

    async fn delete(&self, key: &ObjectKey) -> private_storage::Result<()> {
        self.inner.delete(key).await
    }

    fn list(
        &self,
        prefix: Option<&ObjectKey>,
    ) -> futures_core::stream::BoxStream<'static, private_storage::Result<private_storage::ObjectMeta>> {
        self.inner.list(prefix)
    }
}

/// A download stuck on a slow file does not delay the others: on a single-threaded runtime,
/// a hundred downloads of another file complete while the slow one waits, which then completes
/// whole once its storage answers.
#[tokio::test(flavor = "current_thread")]
async fn a_download_stuck_on_a_slow_file_does_not_delay_the_others() {
    let (inner, _dir) = storage(Backend::Memory);
    let (slow, fast) = (pattern(4096, 1), pattern(4096, 2));
    inner.put_bytes(&ObjectKey::new("slow.bin").unwrap(), slow.clone()).await.unwrap();
    inner.put_bytes(&ObjectKey::new("fast.bin").unwrap(), fast.clone()).await.unwrap();
    let (release, gate) = std::sync::mpsc::channel();
    let (entered, mut reached) = tokio::sync::watch::channel(false);
    let stalled =
        Stalled { inner, key: "slow.bin", release: std::sync::Arc::new(std::sync::Mutex::new(gate)), entered };
    let addr = serve(app(ServePrivate::new(stalled))).await;
    let client = common::http().build().unwrap();
    let slow_download = tokio::spawn({
        let client = client.clone();
        async move {
            let reply = client.get(format!("http://{addr}/private-media/slow.bin")).bearer_auth("root").send().await;
            let reply = reply.unwrap();
            (reply.status().as_u16(), reply.bytes().await.unwrap().to_vec())
        }
    });
    reached.wait_for(|entered| *entered).await.unwrap();
    for _ in 0..100 {
        let reply = client.get(format!("http://{addr}/private-media/fast.bin")).bearer_auth("root").send().await;
        let reply = reply.unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.bytes().await.unwrap().as_ref(), fast.as_slice());
    }
    assert!(!slow_download.is_finished(), "the slow download still waits on its storage");
    release.send(()).unwrap();
    assert_eq!(slow_download.await.unwrap(), (200, slow));
}
