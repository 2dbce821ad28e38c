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
