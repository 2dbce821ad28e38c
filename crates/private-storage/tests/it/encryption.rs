//! `EncryptedStorage`: the storage contract, ciphertext at rest, any byte range equal to the
//! plaintext's, tampering detected and never served, key rotation without touching content.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use private_storage::testing::conformance;
use private_storage::{
    CurrentUser, Delivery, EncryptedStorage, Error, GetOptions, GetResult, Keyring, LocalStorage, MemoryStorage,
    ObjectKey, ObjectMeta, PutOptions, PutStream, Rewrap, ServePrivate, Storage, StorageExt, User,
};
use proptest::prelude::*;

use crate::common::{pattern, send_service};

/// 64 KiB, the chunk size of the stored format.
const C: u64 = 64 * 1024;
/// The header's size; chunk `i` starts at `HEADER + i * (C + 16)`.
const HEADER: usize = 208;

fn keys(spec: &[&str]) -> Keyring {
    // Fixed test keys: id `kN` is 32 bytes of N.
    let entries: Vec<String> = spec
        .iter()
        .map(|id| {
            let n: u8 = id[1..].parse().unwrap();
            format!("{id}={}", base64_of(&[n; 32]))
        })
        .collect();
    Keyring::parse(&entries.join(",")).unwrap()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

fn local() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    (dir, storage)
}

#[tokio::test]
async fn the_encrypted_storage_keeps_the_storage_contract_over_memory_and_a_folder() {
    conformance(&EncryptedStorage::new(MemoryStorage::new().with_chunk_size(4096), keys(&["k1"])).unwrap()).await;
    let (_dir, folder) = local();
    conformance(&EncryptedStorage::new(folder, keys(&["k1"])).unwrap()).await;
}

#[tokio::test]
async fn a_marker_in_the_content_appears_nowhere_in_the_stored_bytes() {
    let marker = pattern(24, 0xfeed);
    let mut content = pattern(300_000, 3);
    for at in [0, 1000, C as usize - 10, 200_000, 300_000 - 24] {
        content[at..at + 24].copy_from_slice(&marker);
    }
    let (dir, folder) = local();
    let storage = EncryptedStorage::new(folder, keys(&["k1"])).unwrap();
    storage.put_bytes(&key("a/secret.bin"), content.clone()).await.unwrap();
    storage.put_bytes(&key("a/small.txt"), marker.clone()).await.unwrap();
    assert_eq!(storage.read(&key("a/secret.bin")).await.unwrap(), content, "the content reads back");
    let mut searched = 0;
    for entry in walk(dir.path()) {
        let stored = std::fs::read(&entry).unwrap();
        assert!(!stored.windows(24).any(|w| w == marker), "the marker is in {}", entry.display());
        searched += stored.len();
    }
    assert!(searched > 300_000, "the stored files were searched ({searched} bytes)");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

// ---- Ranges: every answer equals the plaintext server's -------------------------------------

/// A position in a file of `len` bytes, biased to the chunk boundaries.
fn position(len: u64) -> impl Strategy<Value = u64> {
    let boundaries = (0..=len / C + 1).flat_map(|k| [k * C, (k * C).saturating_sub(1), k * C + 1]).collect::<Vec<_>>();
    prop_oneof![0..len + 3, prop::sample::select(boundaries)]
}

fn one_range(len: u64) -> impl Strategy<Value = String> {
    prop_oneof![
        (position(len), position(len)).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        position(len).prop_map(|a| format!("{a}-")),
        position(len).prop_map(|n| format!("-{n}")),
    ]
}

fn range_header(len: u64) -> impl Strategy<Value = String> {
    prop::collection::vec(one_range(len), 1..4).prop_map(|ranges| format!("bytes={}", ranges.join(",")))
}

fn case() -> impl Strategy<Value = (u64, String, bool)> {
    prop_oneof![prop::sample::select(vec![0, 1, 100, C - 1, C, C + 1, 2 * C, 3 * C, 3 * C + 77]), 0..5 * C,]
        .prop_flat_map(|len| (Just(len), range_header(len), any::<bool>()))
}

/// Status, Content-Range, and the body — or, for `multipart/byteranges`, each part's
/// Content-Range and bytes (the boundary is random).
fn answer(parts: &http::response::Parts, body: &[u8]) -> (StatusCode, Option<String>, Vec<(String, Vec<u8>)>) {
    let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let content_type = header("content-type").unwrap_or_default();
    let Some(boundary) = content_type.strip_prefix("multipart/byteranges; boundary=") else {
        return (parts.status, header("content-range"), vec![(String::new(), body.to_vec())]);
    };
    let delimiter = format!("\r\n--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let end_of_headers = find(rest, b"\r\n\r\n").unwrap();
        let headers = std::str::from_utf8(&rest[..end_of_headers]).unwrap();
        let range = headers.lines().find_map(|l| l.strip_prefix("Content-Range: ")).unwrap().to_owned();
        rest = &rest[end_of_headers + 4..];
        let next = find(rest, delimiter.as_bytes()).unwrap();
        out.push((range, rest[..next].to_vec()));
    }
    (parts.status, None, out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn get(range: &str) -> Request<()> {
    let mut request = Request::get("/f.bin").header("range", range).body(()).unwrap();
    request.extensions_mut().insert(CurrentUser::new(User::new("root").superuser()));
    request
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    /// 1,000 Range headers (single, several, suffix, open-ended; positions biased to chunk
    /// boundaries) over contents of every size class: the encrypted store answers exactly what
    /// the plaintext store answers, and each 206 body is the plaintext slice it claims.
    #[test]
    fn any_range_of_an_encrypted_file_equals_the_plaintext_slice((len, range, on_disk) in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let content = pattern(len as usize, len as u32);
            let dir = tempfile::tempdir().unwrap();
            let raw: Arc<dyn Storage> = if on_disk {
                Arc::new(LocalStorage::new(dir.path()).unwrap())
            } else {
                Arc::new(MemoryStorage::new().with_chunk_size(10_000))
            };
            let encrypted = EncryptedStorage::new(raw, keys(&["k1"])).unwrap();
            let plain = MemoryStorage::new();
            for storage in [&encrypted as &dyn Storage, &plain] {
                storage.put_bytes(&key("f.bin"), content.clone()).await.unwrap();
            }
            let (ours, ours_body) = send_service(&ServePrivate::new(encrypted), get(&range)).await;
            let (theirs, theirs_body) = send_service(&ServePrivate::new(plain), get(&range)).await;
            let ours = answer(&ours, &ours_body.unwrap());
            let theirs = answer(&theirs, &theirs_body.unwrap());
            prop_assert_eq!(&ours.0, &theirs.0, "status for {} on {} bytes", range, len);
            prop_assert_eq!(&ours.1, &theirs.1, "Content-Range for {} on {} bytes", range, len);
            prop_assert!(ours.2 == theirs.2, "bodies for {} on {} bytes", range, len);
            // And each part is the plaintext slice its Content-Range names.
            if ours.0 == StatusCode::PARTIAL_CONTENT {
                for (i, (part_range, bytes)) in ours.2.iter().enumerate() {
                    let spec = if part_range.is_empty() { ours.1.clone().unwrap() } else { part_range.clone() };
                    let (a, b) = spec["bytes ".len()..].split_once('/').unwrap().0.split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    prop_assert!(bytes[..] == content[a..=b], "part {} ({}) of {}", i, spec, range);
                }
            }
            Ok(())
        })?;
    }
}

/// Counts the stored bytes read through it.
#[derive(Debug)]
struct Counting {
    inner: MemoryStorage,
    read: Arc<AtomicUsize>,
}

#[async_trait]
impl Storage for Counting {
    async fn head(&self, key: &ObjectKey) -> private_storage::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> private_storage::Result<GetResult> {
        let got = self.inner.get(key, options).await?;
        let read = Arc::clone(&self.read);
        let (meta, range) = (got.meta.clone(), got.range.clone());
        let counted = got.into_stream().inspect(move |c| {
            if let Ok(c) = c {
                read.fetch_add(c.len(), Ordering::SeqCst);
            }
        });
        Ok(GetResult::new(meta, range, private_storage::Payload::Stream(counted.boxed())))
    }
    async fn put(
        &self,
        key: &ObjectKey,
        data: PutStream<'_>,
        options: PutOptions,
    ) -> private_storage::Result<ObjectMeta> {
        self.inner.put(key, data, options).await
    }
    async fn delete(&self, key: &ObjectKey) -> private_storage::Result<()> {
        self.inner.delete(key).await
    }
    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, private_storage::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
}

#[tokio::test]
async fn a_range_reads_only_the_header_and_the_chunks_it_touches() {
    let read = Arc::new(AtomicUsize::new(0));
    let counting = Counting { inner: MemoryStorage::new(), read: Arc::clone(&read) };
    let storage = EncryptedStorage::new(counting, keys(&["k1"])).unwrap();
    let content = pattern(10 << 20, 8);
    storage.put_bytes(&key("big.bin"), content.clone()).await.unwrap();
    for (range, chunks) in [(5 * C + 10..5 * C + 20, 1), (5 * C - 1..5 * C + 1, 2), ((10 << 20) - 5..10 << 20, 1)] {
        read.store(0, Ordering::SeqCst);
        let got = storage.get(&key("big.bin"), GetOptions::default().with_range(range.clone())).await.unwrap();
        assert!(got.bytes().await.unwrap()[..] == content[range.start as usize..range.end as usize]);
        let expected = HEADER + chunks * (C as usize + 16);
        assert_eq!(read.load(Ordering::SeqCst), expected, "{range:?}: the header and {chunks} chunk(s)");
    }
}

// ---- Tampering ----------------------------------------------------------------------------

fn stored_chunk(i: usize) -> std::ops::Range<usize> {
    let start = HEADER + i * (C as usize + 16);
    start..start + C as usize + 16
}

/// Writes two 5-chunk files (`a` and `b`) and returns the storage, the folder and the contents.
async fn two_files() -> (tempfile::TempDir, EncryptedStorage<LocalStorage>, Vec<u8>, Vec<u8>) {
    let (dir, folder) = local();
    let storage = EncryptedStorage::new(folder, keys(&["k1"])).unwrap();
    let (a, b) = (pattern(5 * C as usize - 100, 1), pattern(5 * C as usize - 100, 2));
    storage.put_bytes(&key("a.bin"), a.clone()).await.unwrap();
    storage.put_bytes(&key("b.bin"), b.clone()).await.unwrap();
    (dir, storage, a, b)
}

/// Reads the whole object as a stream: the bytes that came before the stream failed, and
/// whether and how it failed.
async fn read_all(storage: &dyn Storage, name: &str) -> (Vec<u8>, Option<Error>) {
    let mut got = Vec::new();
    let mut stream = match storage.get(&key(name), GetOptions::default()).await {
        Ok(result) => result.into_stream(),
        Err(e) => return (got, Some(e)),
    };
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected_and_no_damaged_byte_is_served() {
    type Tamper = fn(&mut Vec<u8>, &[u8]);
    let cases: [(&str, Tamper, Option<usize>); 8] = [
        ("a flipped content byte in chunk 3", |a, _| a[stored_chunk(3).start + 500] ^= 1, Some(3)),
        ("a flipped tag byte in chunk 3", |a, _| a[stored_chunk(3).end - 1] ^= 0x80, Some(3)),
        ("a flipped byte in chunk 0", |a, _| a[HEADER + 7] ^= 1, Some(0)),
        ("a flipped file-id byte in the header", |a, _| a[12] ^= 1, Some(0)),
        ("cut at a chunk boundary", |a, _| a.truncate(stored_chunk(3).start), Some(2)),
        (
            "two chunks swapped",
            |a, _| {
                let (one, two) = (a[stored_chunk(1)].to_vec(), a[stored_chunk(2)].to_vec());
                a[stored_chunk(1)].copy_from_slice(&two);
                a[stored_chunk(2)].copy_from_slice(&one);
            },
            Some(1),
        ),
        ("a chunk from another file", |a, b| a[stored_chunk(2)].copy_from_slice(&b[stored_chunk(2)]), Some(2)),
        ("the whole file replaced by another file's", |a, b| *a = b.to_vec(), Some(0)),
    ];
    for (what, tamper, first_bad) in cases {
        let (dir, storage, a, _) = two_files().await;
        let path = dir.path().join("a.bin");
        let mut stored = std::fs::read(&path).unwrap();
        let other = std::fs::read(dir.path().join("b.bin")).unwrap();
        tamper(&mut stored, &other);
        std::fs::write(&path, &stored).unwrap();

        let (got, error) = read_all(&storage, "a.bin").await;
        let error = error.unwrap_or_else(|| panic!("{what}: the read succeeded"));
        assert!(matches!(error, Error::Integrity { .. }), "{what}: {error}");
        let good = first_bad.unwrap() * C as usize;
        assert!(got.len() <= good, "{what}: {} bytes served, only {good} are before the damage", got.len());
        assert!(got[..] == a[..got.len()], "{what}: the bytes served are the file's");
        if first_bad == Some(0) {
            let direct = storage.get(&key("a.bin"), GetOptions::default()).await;
            assert!(
                matches!(direct, Err(Error::Integrity { .. })),
                "{what}: damage in the first chunk fails the read itself"
            );
        }
        // A range inside the damage fails; a range before it still serves.
        let bad = first_bad.unwrap() as u64 * C;
        let inside = storage.get(&key("a.bin"), GetOptions::default().with_range(bad + 1..bad + 10)).await;
        assert!(matches!(inside, Err(Error::Integrity { .. })), "{what}: a range in the damage: {inside:?}");
        if bad > 0 {
            let before = storage.get(&key("a.bin"), GetOptions::default().with_range(0..bad)).await.unwrap();
            assert!(before.bytes().await.unwrap()[..] == a[..bad as usize], "{what}: the chunks before serve");
        }
    }
}

#[tokio::test]
async fn a_cut_inside_the_last_chunk_or_the_header_is_detected() {
    for cut in [1usize, 15, 17, 1000] {
        let (dir, storage, _, _) = two_files().await;
        let path = dir.path().join("a.bin");
        let stored = std::fs::read(&path).unwrap();
        std::fs::write(&path, &stored[..stored.len() - cut]).unwrap();
        let (_, error) = read_all(&storage, "a.bin").await;
        assert!(matches!(error, Some(Error::Integrity { .. })), "cut {cut}: {error:?}");
    }
    let (dir, storage, _, _) = two_files().await;
    std::fs::write(dir.path().join("a.bin"), b"plain text, never encrypted").unwrap();
    assert!(matches!(storage.head(&key("a.bin")).await, Err(Error::Integrity { .. })), "a plaintext file");
    assert!(matches!(read_all(&storage, "a.bin").await.1, Some(Error::Integrity { .. })));
}

#[tokio::test]
async fn over_http_a_damaged_chunk_aborts_the_transfer_after_the_good_chunks() {
    let (dir, storage, a, _) = two_files().await;
    let path = dir.path().join("a.bin");
    let mut stored = std::fs::read(&path).unwrap();
    stored[stored_chunk(3).start + 1] ^= 1;
    std::fs::write(&path, &stored).unwrap();
    let addr = crate::common::serve(crate::common::app(ServePrivate::new(storage))).await;
    let response =
        crate::common::http().build().unwrap().get(format!("http://{addr}/private-media/a.bin")).bearer_auth("root");
    // The connection is cut: before the response head if the server had not flushed it yet,
    // otherwise inside a 200's body — never a clean end.
    let mut got = Vec::new();
    if let Ok(mut response) = response.send().await {
        assert_eq!(response.status(), StatusCode::OK, "the first chunks were good");
        let failure = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => got.extend_from_slice(&bytes),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert!(failure.is_some(), "the transfer is aborted, never a clean end ({} bytes)", got.len());
    }
    assert!(got.len() <= 3 * C as usize && got[..] == a[..got.len()], "only good bytes before the abort");

    // Damage in the first chunk: an error answer, and no byte of the file.
    stored[HEADER + 1] ^= 1;
    std::fs::write(&path, &stored).unwrap();
    let client = crate::common::http().build().unwrap();
    let response = client.get(format!("http://{addr}/private-media/a.bin")).bearer_auth("root").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.bytes().await.unwrap();
    assert!(find(&body, &a[..16]).is_none(), "no content in the error");
}

#[tokio::test]
async fn delivery_modes_that_hand_off_stored_bytes_refuse_an_encrypted_storage() {
    let (_dir, folder) = local();
    let storage = Arc::new(EncryptedStorage::new(folder, keys(&["k1"])).unwrap());
    storage.put_bytes(&key("f.bin"), pattern(1000, 1)).await.unwrap();
    for delivery in [Delivery::nginx("/_protected").unwrap(), Delivery::presigned_redirect(None)] {
        let service = ServePrivate::from_arc(storage.clone()).delivery(delivery);
        let mut request = Request::get("/f.bin").body(()).unwrap();
        request.extensions_mut().insert(CurrentUser::new(User::new("root").superuser()));
        let (parts, body) = send_service(&service, request).await;
        assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
        for header in ["x-accel-redirect", "x-sendfile", "location"] {
            assert!(!parts.headers.contains_key(header), "{header} sent");
        }
        assert!(body.unwrap().len() < 100, "no file bytes");
    }
    // X-Sendfile needs a path, which an encrypted storage never gives: refused when built.
    assert_eq!(storage.local_path(&key("f.bin")), None);
    let apache = std::panic::catch_unwind(|| ServePrivate::from_arc(storage.clone()).delivery(Delivery::apache()));
    assert!(apache.is_err(), "Delivery::apache over an encrypted storage is refused");
}

// ---- Key rotation -------------------------------------------------------------------------

#[tokio::test]
async fn a_rotation_rewraps_in_place_without_touching_the_content_and_the_old_key_can_go() {
    let (dir, folder) = local();
    let content = pattern(3 * C as usize + 5, 9);
    let old = EncryptedStorage::new(folder.clone(), keys(&["k1"])).unwrap();
    old.put_bytes(&key("x/f.bin"), content.clone()).await.unwrap();
    old.put_bytes(&key("x/empty"), Bytes::new()).await.unwrap();
    let path = dir.path().join("x/f.bin");
    let before = std::fs::read(&path).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());

    let rotating = EncryptedStorage::new(folder.clone(), keys(&["k2", "k1"])).unwrap();
    assert_eq!(rotating.key_ids(&key("x/f.bin")).await.unwrap(), ["k1"]);
    for name in ["x/f.bin", "x/empty"] {
        assert_eq!(rotating.rewrap(&key(name)).await.unwrap(), Rewrap::Rewrapped, "{name}");
        assert_eq!(rotating.rewrap(&key(name)).await.unwrap(), Rewrap::Unchanged, "{name}: done once");
        assert_eq!(rotating.key_ids(&key(name)).await.unwrap(), ["k2"], "{name}");
    }
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), before.len(), "same size");
    assert!(after[HEADER..] == before[HEADER..], "content bytes untouched");
    assert_ne!(after[..HEADER], before[..HEADER], "the header changed");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()), inode, "written in place");

    let new_only = EncryptedStorage::new(folder.clone(), keys(&["k2"])).unwrap();
    assert_eq!(new_only.read(&key("x/f.bin")).await.unwrap(), content, "readable once k1 is removed");
    assert!(new_only.read(&key("x/empty")).await.unwrap().is_empty());
    let old_only = EncryptedStorage::new(folder, keys(&["k1"])).unwrap();
    let refused = old_only.read(&key("x/f.bin")).await;
    assert!(matches!(refused, Err(Error::Integrity { .. })), "k1 no longer opens it: {refused:?}");
}

#[tokio::test]
async fn a_rotation_over_a_backend_without_in_place_writes_rewrites_the_same_content_bytes() {
    let raw = MemoryStorage::new();
    let content = pattern(2 * C as usize, 4);
    let old = EncryptedStorage::new(raw.clone(), keys(&["k1"])).unwrap();
    old.put(&key("f.pdf"), once(content.clone()), PutOptions::default().with_content_type("application/pdf"))
        .await
        .unwrap();
    let before = raw.read(&key("f.pdf")).await.unwrap();
    let rotating = EncryptedStorage::new(raw.clone(), keys(&["k2", "k1"])).unwrap();
    assert_eq!(rotating.rewrap(&key("f.pdf")).await.unwrap(), Rewrap::Rewrapped);
    let after = raw.read(&key("f.pdf")).await.unwrap();
    assert!(after.len() == before.len() && after[HEADER..] == before[HEADER..], "content bytes copied as they were");
    assert_eq!(raw.head(&key("f.pdf")).await.unwrap().content_type.as_deref(), Some("application/pdf"));
    let new_only = EncryptedStorage::new(raw, keys(&["k2"])).unwrap();
    assert_eq!(new_only.read(&key("f.pdf")).await.unwrap(), content);
}

fn once(bytes: Vec<u8>) -> PutStream<'static> {
    futures_util::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed()
}

/// A folder whose `overwrite_at` fails from the `fail_from`-th call on (a crash mid-rotation).
#[derive(Debug)]
struct CrashingWrites {
    inner: LocalStorage,
    calls: AtomicUsize,
    fail_from: usize,
}

#[async_trait]
impl Storage for CrashingWrites {
    async fn head(&self, key: &ObjectKey) -> private_storage::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> private_storage::Result<GetResult> {
        self.inner.get(key, options).await
    }
    async fn put(
        &self,
        key: &ObjectKey,
        data: PutStream<'_>,
        options: PutOptions,
    ) -> private_storage::Result<ObjectMeta> {
        self.inner.put(key, data, options).await
    }
    async fn overwrite_at(
        &self,
        key: &ObjectKey,
        offset: u64,
        bytes: &[u8],
        if_match: &str,
    ) -> private_storage::Result<Option<ObjectMeta>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(Error::StorageFull);
        }
        self.inner.overwrite_at(key, offset, bytes, if_match).await
    }
    async fn delete(&self, key: &ObjectKey) -> private_storage::Result<()> {
        self.inner.delete(key).await
    }
    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, private_storage::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
}

#[tokio::test]
async fn a_rotation_stopped_between_its_two_writes_leaves_a_file_either_key_reads() {
    let (_dir, folder) = local();
    let content = pattern(100_000, 5);
    EncryptedStorage::new(folder.clone(), keys(&["k1"])).unwrap().put_bytes(&key("f"), content.clone()).await.unwrap();
    for fail_from in [1, 2] {
        let crashing = CrashingWrites { inner: folder.clone(), calls: AtomicUsize::new(0), fail_from };
        let rotating = EncryptedStorage::new(crashing, keys(&["k2", "k1"])).unwrap();
        assert!(rotating.rewrap(&key("f")).await.is_err(), "the crash at write {fail_from}");
        for only in ["k1", "k2"] {
            let reader = EncryptedStorage::new(folder.clone(), keys(&[only])).unwrap();
            match (fail_from, reader.read(&key("f")).await) {
                (_, Ok(read)) => assert_eq!(read, content),
                // Stopped before the first write: the new key has no wrap yet.
                (1, Err(Error::Integrity { .. })) if only == "k2" => {}
                (_, Err(e)) => panic!("after a crash at write {fail_from}, {only} cannot read: {e}"),
            }
        }
    }
    let mut ids = EncryptedStorage::new(folder.clone(), keys(&["k1"])).unwrap().key_ids(&key("f")).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["k1", "k2"], "both wraps, mid-rotation");
    let rotating = EncryptedStorage::new(folder.clone(), keys(&["k2", "k1"])).unwrap();
    assert_eq!(rotating.rewrap(&key("f")).await.unwrap(), Rewrap::Rewrapped, "the rerun finishes it");
    assert_eq!(rotating.key_ids(&key("f")).await.unwrap(), ["k2"]);
    assert_eq!(EncryptedStorage::new(folder, keys(&["k2"])).unwrap().read(&key("f")).await.unwrap(), content);
}

#[test]
fn keyrings_refuse_bad_entries_without_echoing_key_material() {
    let good = base64_of(&[1; 32]);
    for (spec, expect) in [
        ("", "no key"),
        ("k1", "id=base64"),
        (&*format!("k/1={good}"), "not 1 to 31"),
        (&*format!("{}={good}", "k".repeat(32)), "not 1 to 31"),
        ("k1=not*base64", "not base64"),
        (&*format!("k1={}", base64_of(&[1; 16])), "not 32 bytes"),
        (&*format!("k1={good},k1={good}"), "twice"),
    ] {
        let err = Keyring::parse(spec).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("encryption_keys"), "{spec:?}: {err}");
        assert!(!err.contains(&good), "{spec:?}: the key is echoed");
    }
    let ring = Keyring::parse(&format!("new={good}\nold={}", base64_of(&[2; 32]).trim_end_matches('='))).unwrap();
    assert_eq!(ring.ids().collect::<Vec<_>>(), ["new", "old"]);
    assert!(!format!("{ring:?}").contains(&good));
}
