//! The storage conformance suite (feature `testing`).
//!
//! Every backend — the built-in ones and yours — runs the same checks of the [`Storage`]
//! contract. Call [`conformance`] from a test with a fresh, empty storage:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let storage = private_storage::MemoryStorage::new();
//! private_storage::testing::conformance(&storage).await;
//! # });
//! ```
//!
//! A failed check panics with a message naming the check.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::{Error, GetOptions, ObjectKey, PutMode, PutOptions, Storage, StorageExt};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

/// Runs every check of the storage contract against `storage` (which should be empty, or at
/// least hold nothing under `conformance/`). Panics on the first failure.
pub async fn conformance<S: Storage + ?Sized>(storage: &S) {
    conformance_skipping(storage, &[]).await;
}

/// The checks [`conformance_skipping`] can leave out, for test servers with a known deviation
/// that a production backend does not have.
pub const SKIPPABLE: &[&str] = &["folder-is-not-an-object"];

/// [`conformance`] without the named checks of [`SKIPPABLE`] (for instance s3s-fs, a test S3
/// server over a plain folder, answers a `HEAD` of a folder as an object; S3 does not).
///
/// # Panics
/// On a name that is not in [`SKIPPABLE`], and on the first failed check.
pub async fn conformance_skipping<S: Storage + ?Sized>(storage: &S, skip: &[&str]) {
    for name in skip {
        assert!(SKIPPABLE.contains(name), "conformance: no skippable check is named {name:?} (known: {SKIPPABLE:?})");
    }
    round_trip(storage).await;
    metadata(storage).await;
    inline_reads(storage).await;
    missing_objects(storage, !skip.contains(&"folder-is-not-an-object")).await;
    ranges(storage).await;
    if_match(storage).await;
    put_modes(storage).await;
    create_unique(storage).await;
    copy(storage).await;
    failed_put_leaves_nothing(storage).await;
    large_object_streams(storage).await;
    delete(storage).await;
    list(storage).await;
    unusual_names(storage).await;
}

async fn round_trip<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/round-trip/a.txt");
    let meta = s.put_bytes(&k, "hello world").await.expect("put");
    assert_eq!(meta.key, k, "round trip: put returns the key");
    assert_eq!(meta.size, 11, "round trip: put returns the size");
    assert_eq!(s.read(&k).await.expect("read"), "hello world", "round trip: bytes");
    let empty = key("conformance/round-trip/empty");
    s.put_bytes(&empty, Bytes::new()).await.expect("put empty");
    assert_eq!(s.head(&empty).await.expect("head empty").size, 0, "round trip: empty object");
    assert!(s.read(&empty).await.expect("read empty").is_empty(), "round trip: empty bytes");
}

async fn metadata<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/meta/a.bin");
    let put = s.put_bytes(&k, vec![7u8; 1000]).await.expect("put");
    let head = s.head(&k).await.expect("head");
    assert_eq!(head.size, 1000, "metadata: size");
    assert_eq!(head.etag, put.etag, "metadata: head and put agree on the ETag");
    if let Some(etag) = &head.etag {
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() >= 3,
            "metadata: ETag {etag} is a quoted strong tag"
        );
    }
    let got = s.get(&k, GetOptions::default()).await.expect("get");
    assert_eq!(got.meta.etag, head.etag, "metadata: get and head agree on the ETag");
    assert_eq!(got.range, 0..1000, "metadata: get without range covers the object");
    let age = std::time::SystemTime::now().duration_since(head.last_modified).unwrap_or_default();
    assert!(age.as_secs() < 3600, "metadata: last_modified is recent");
}

async fn inline_reads<S: Storage + ?Sized>(s: &S) {
    let cases: [(&str, usize); 4] = [("small", 1000), ("exact", 4096), ("large", 4097), ("empty", 0)];
    for (name, len) in cases {
        let k = key(&format!("conformance/inline/{name}"));
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        s.put_bytes(&k, data.clone()).await.expect("put");
        let (meta, bytes) = s.head_with_bytes(&k, 4096).await.expect("head_with_bytes");
        assert_eq!(meta.size, len as u64, "inline: {name}: the metadata's size");
        assert_eq!(meta.etag, s.head(&k).await.expect("head").etag, "inline: {name}: the metadata's ETag");
        if let Some(bytes) = bytes {
            assert!(len <= 4096, "inline: {name}: no bytes beyond inline_max");
            assert!(bytes == data, "inline: {name}: the inline bytes are the whole object");
        }
    }
    let missing = s.head_with_bytes(&key("conformance/inline/missing"), 4096).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "inline: a missing object is NotFound");
}

async fn missing_objects<S: Storage + ?Sized>(s: &S, folders: bool) {
    let k = key("conformance/missing/nothing-here.txt");
    assert!(matches!(s.head(&k).await, Err(Error::NotFound { .. })), "missing: head is NotFound");
    assert!(matches!(s.get(&k, GetOptions::default()).await, Err(Error::NotFound { .. })), "missing: get is NotFound");
    assert!(!s.exists(&k).await.expect("exists"), "missing: exists is false");
    if !folders {
        return;
    }
    // A "folder" (a prefix of other keys) is not an object.
    s.put_bytes(&key("conformance/missing/folder/child.txt"), "x").await.expect("put child");
    let folder = key("conformance/missing/folder");
    assert!(matches!(s.head(&folder).await, Err(Error::NotFound { .. })), "missing: a folder is not an object");
    assert!(
        matches!(s.get(&folder, GetOptions::default()).await, Err(Error::NotFound { .. })),
        "missing: get of a folder"
    );
}

async fn ranges<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/ranges/digits");
    let data: Vec<u8> = (0..200u8).collect();
    s.put_bytes(&k, data.clone()).await.expect("put");
    for r in [0..1, 5..17, 0..200, 199..200, 100..100] {
        let got = s.get(&k, GetOptions::default().with_range(r.clone())).await.expect("ranged get");
        assert_eq!(got.range, r, "ranges: reported range");
        let bytes = got.bytes().await.expect("ranged bytes");
        assert_eq!(&bytes[..], &data[r.start as usize..r.end as usize], "ranges: bytes of {r:?}");
    }
    for r in [0..201, 250..260] {
        let got = s.get(&k, GetOptions::default().with_range(r.clone())).await;
        assert!(matches!(got, Err(Error::InvalidRange { .. })), "ranges: {r:?} outside the object is InvalidRange");
    }
}

async fn if_match<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/if-match/a");
    let meta = s.put_bytes(&k, "v1").await.expect("put");
    let Some(etag) = meta.etag else { return };
    let ok = s.get(&k, GetOptions::default().with_if_match(etag.clone())).await;
    assert!(ok.is_ok(), "if_match: the current ETag matches");
    let stale = s.get(&k, GetOptions::default().with_if_match("\"not-the-etag\"")).await;
    assert!(matches!(stale, Err(Error::PreconditionFailed { .. })), "if_match: another ETag fails");
}

async fn put_modes<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/modes/a.txt");
    s.put(&k, once("first"), PutOptions::default().with_mode(PutMode::Create)).await.expect("create");
    let again = s.put(&k, once("second"), PutOptions::default().with_mode(PutMode::Create)).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "modes: create on an existing object is AlreadyExists");
    assert_eq!(s.read(&k).await.expect("read"), "first", "modes: a refused create changes nothing");
    s.put(&k, once("third!"), PutOptions::default()).await.expect("overwrite");
    assert_eq!(s.read(&k).await.expect("read"), "third!", "modes: overwrite replaces");
}

async fn create_unique<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/unique/report.pdf");
    let unique = || PutOptions::default().with_mode(PutMode::CreateUnique);
    let first = s.put(&k, once("first"), unique()).await.expect("create unique on a free key");
    assert_eq!(first.key, k, "unique: a free key is used as is");
    let puts = (0..10).map(|i| {
        let data = stream::once(async move { Ok(Bytes::from(format!("copy {i}"))) }).boxed();
        s.put(&k, data, unique())
    });
    let metas = futures_util::future::try_join_all(puts).await.expect("concurrent unique puts");
    let mut keys: Vec<&str> = metas.iter().map(|m| m.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 10, "unique: concurrent writes of one name land under distinct keys");
    for meta in &metas {
        let name = meta.key.file_name();
        assert!(
            name.starts_with("report_") && name.ends_with(".pdf") && name.len() == "report_1234567.pdf".len(),
            "unique: variant name {name}"
        );
        let got = s.read(&meta.key).await.expect("read variant");
        assert!(got.starts_with(b"copy "), "unique: each variant holds its own bytes");
    }
    assert_eq!(s.read(&k).await.expect("read original"), "first", "unique: the original is untouched");
}

async fn copy<S: Storage + ?Sized>(s: &S) {
    let (from, to) = (key("conformance/copy/from.txt"), key("conformance/copy/to.txt"));
    let bytes = vec![42u8; 20_000];
    s.put_bytes(&from, bytes.clone()).await.expect("put");
    let copied = s.copy(&from, &to, PutMode::Create).await.expect("copy to a free key");
    assert_eq!((&copied.key, copied.size), (&to, 20_000), "copy: the metadata names the copy");
    assert_eq!(s.read(&to).await.expect("read the copy"), bytes, "copy: the bytes");
    s.put_bytes(&from, "changed").await.expect("overwrite the source");
    assert_eq!(s.read(&to).await.expect("read the copy").len(), 20_000, "copy: independent of its source");
    let again = s.copy(&from, &to, PutMode::Create).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "copy: create on a taken key is AlreadyExists");
    let unique = s.copy(&from, &to, PutMode::CreateUnique).await.expect("copy to a unique key");
    assert_ne!(unique.key, to, "copy: create-unique picks a free key");
    assert_eq!(s.read(&unique.key).await.expect("read"), "changed", "copy: the source's current bytes");
    let missing = key("conformance/copy/missing.txt");
    match s.copy(&missing, &key("conformance/copy/other.txt"), PutMode::Overwrite).await {
        Err(Error::NotFound { key }) => assert_eq!(key, missing, "copy: the error names the missing source"),
        other => panic!("copy: a missing source is NotFound, got {other:?}"),
    }
}

async fn failed_put_leaves_nothing<S: Storage + ?Sized>(s: &S) {
    let fresh = key("conformance/failed-put/new.bin");
    let failing = || {
        stream::iter(vec![Ok(Bytes::from(vec![1u8; 100_000])), Err(Error::storage("test", "client went away"))]).boxed()
    };
    let err = s.put(&fresh, failing(), PutOptions::default()).await.expect_err("a failing stream fails the put");
    assert!(
        matches!(&err, Error::Storage { source, .. } if source.to_string() == "client went away"),
        "failed put: the stream's own error comes back, got {err}"
    );
    assert!(!s.exists(&fresh).await.expect("exists"), "failed put: no object is visible");

    let existing = key("conformance/failed-put/existing.txt");
    s.put_bytes(&existing, "keep me").await.expect("put");
    assert!(s.put(&existing, failing(), PutOptions::default()).await.is_err(), "failed put: overwrite fails");
    assert_eq!(s.read(&existing).await.expect("read"), "keep me", "failed put: the previous object is intact");

    let listed: Vec<_> = s.list(Some(&key("conformance/failed-put"))).try_collect().await.expect("list");
    let names: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(names, ["conformance/failed-put/existing.txt"], "failed put: nothing staged is listed");
}

async fn large_object_streams<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/large/blob");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<_> = data.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    s.put(&k, stream::iter(chunks).boxed(), PutOptions::default()).await.expect("put large");
    let got = s.get(&k, GetOptions::default()).await.expect("get large");
    let mut body = got.into_stream();
    let mut read = Vec::with_capacity(data.len());
    let mut largest = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        largest = largest.max(chunk.len());
        read.extend_from_slice(&chunk);
    }
    assert!(read == data, "large: bytes round-trip ({} read, {} written)", read.len(), data.len());
    assert!(largest <= 1024 * 1024, "large: reads are chunked (largest chunk {largest} bytes)");
}

async fn delete<S: Storage + ?Sized>(s: &S) {
    let k = key("conformance/delete/a.txt");
    s.put_bytes(&k, "x").await.expect("put");
    s.delete(&k).await.expect("delete");
    assert!(!s.exists(&k).await.expect("exists"), "delete: the object is gone");
    s.delete(&k).await.expect("delete: a missing object is fine");
}

async fn list<S: Storage + ?Sized>(s: &S) {
    for name in [
        "conformance/list/a/1.txt",
        "conformance/list/a/b/2.txt",
        "conformance/list/ab/3.txt",
        "conformance/list/c.txt",
    ] {
        s.put_bytes(&key(name), name.to_owned()).await.expect("put");
    }
    let mut under_a: Vec<String> =
        s.list(Some(&key("conformance/list/a"))).map_ok(|m| m.key.to_string()).try_collect().await.expect("list a");
    under_a.sort();
    assert_eq!(
        under_a,
        ["conformance/list/a/1.txt", "conformance/list/a/b/2.txt"],
        "list: a prefix matches whole segments"
    );
    let all: Vec<_> = s.list(Some(&key("conformance/list"))).try_collect().await.expect("list all");
    assert_eq!(all.len(), 4, "list: everything under the prefix");
    let sizes_ok = all.iter().all(|m| m.size == m.key.as_str().len() as u64);
    assert!(sizes_ok, "list: metadata carries sizes");
    let none: Vec<_> = s.list(Some(&key("conformance/list/nope"))).try_collect().await.expect("list missing");
    assert!(none.is_empty(), "list: a missing prefix is empty, not an error");
}

async fn unusual_names<S: Storage + ?Sized>(s: &S) {
    for name in [
        "conformance/names/Heizölrückstoßabdämpfung.txt",
        "conformance/names/a b;c,d\"e.txt",
        "conformance/names/%2e%2e",
        "conformance/names/日本/ファイル",
    ] {
        let k = key(name);
        s.put_bytes(&k, name.to_owned()).await.unwrap_or_else(|e| panic!("names: put {name:?}: {e}"));
        assert_eq!(s.read(&k).await.expect("read"), name.as_bytes(), "names: {name:?} round-trips");
    }
}

fn once(s: &'static str) -> crate::PutStream<'static> {
    stream::once(async move { Ok(Bytes::from_static(s.as_bytes())) }).boxed()
}
