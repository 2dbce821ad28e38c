//! Micro-benchmarks of the per-request hot paths: `cargo bench -p private-storage --features __bench,encryption`.
//! They catch regressions cheaply; the end-to-end figures against nginx come from bench/run.sh.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use private_storage::{
    AccessRule, ContentDisposition, CurrentUser, MemoryStorage, ObjectKey, PrivateFile, ServePrivate, StorageExt, User,
    allow_authenticated,
};

fn keys(c: &mut Criterion) {
    c.bench_function("key: canonicalise a URL path", |b| {
        b.iter(|| {
            ObjectKey::from_url_path(black_box("users/1234/reports/2026/Q1%20summary%20f%C3%BCr%20M%C3%A4rz.pdf"))
        })
    });
    c.bench_function("key: reject an encoded traversal", |b| {
        b.iter(|| ObjectKey::from_url_path(black_box("users/1/%2e%2e/6/secret.txt")).is_err())
    });
}

fn rules(c: &mut Criterion) {
    let mut request = http::Request::new(());
    request.extensions_mut().insert(CurrentUser::new(User::new("42")));
    let (parts, ()) = request.into_parts();
    let file =
        PrivateFile::new(parts, std::sync::Arc::new(MemoryStorage::new()), ObjectKey::new("users/42/a.pdf").unwrap());
    let rule = allow_authenticated();
    let own_folder = |file: PrivateFile| async move {
        file.user().is_some_and(|u| file.key().as_str().starts_with(&format!("users/{}/", u.id())))
    };
    c.bench_function("rule: allow_authenticated", |b| b.iter(|| rule.allows(black_box(&file)).now_or_never()));
    c.bench_function("rule: async closure (own folder)", |b| {
        b.iter(|| own_folder.allows(black_box(&file)).now_or_never())
    });
}

fn planning(c: &mut Criterion) {
    let etag = "\"6b07c80e-1000\"";
    let last_modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let now = last_modified + Duration::from_secs(3600);
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no conditions", &[]),
        ("If-None-Match hit", &[("if-none-match", "\"a\", \"6b07c80e-1000\"")]),
        ("single Range", &[("range", "bytes=1000-1999")]),
        ("If-Range + multi Range", &[("if-range", "\"6b07c80e-1000\""), ("range", "bytes=-100,0-9,5-20,50000-50099")]),
    ];
    for (name, headers) in cases {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        c.bench_function(&format!("plan: {name}"), |b| {
            b.iter(|| {
                private_storage::__bench::plan(&Method::GET, black_box(&map), Some(etag), last_modified, 100_000, now)
            })
        });
    }
}

fn disposition(c: &mut Criterion) {
    let attachment = ContentDisposition::attachment();
    c.bench_function("disposition: ASCII name", |b| b.iter(|| attachment.header_value(black_box("report-2026.pdf"))));
    c.bench_function("disposition: UTF-8 name", |b| {
        b.iter(|| attachment.header_value(black_box("Heizölrückstoßabdämpfung.txt")))
    });
}

fn service(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let storage = MemoryStorage::new();
    runtime.block_on(storage.put_bytes(&ObjectKey::new("files/4k.bin").unwrap(), vec![7u8; 4096])).unwrap();
    let service = ServePrivate::new(storage).rule(allow_authenticated());
    let user = CurrentUser::new(User::new("42"));
    c.bench_function("service: GET 4 KiB from memory (no network)", |b| {
        b.iter(|| {
            let mut request = http::Request::get("/files/4k.bin").body(()).unwrap();
            request.extensions_mut().insert(user.clone());
            runtime.block_on(service.serve(request))
        })
    });
}

/// Encryption at rest: reading 4 KiB whole and 1 MiB streamed, plain and encrypted, from memory.
fn encryption(c: &mut Criterion) {
    use futures_util::TryStreamExt;
    use private_storage::{EncryptedStorage, GetOptions, Keyring, Storage};
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let plain = MemoryStorage::new();
    let keys = Keyring::parse(&Keyring::generate_entry("bench").unwrap()).unwrap();
    let encrypted = EncryptedStorage::new(MemoryStorage::new(), keys).unwrap();
    let (small, large) = (ObjectKey::new("4k.bin").unwrap(), ObjectKey::new("1m.bin").unwrap());
    for storage in [&plain as &dyn Storage, &encrypted] {
        runtime.block_on(storage.put_bytes(&small, vec![7u8; 4096])).unwrap();
        runtime.block_on(storage.put_bytes(&large, vec![7u8; 1 << 20])).unwrap();
    }
    for (name, storage) in [("plain", &plain as &dyn Storage), ("encrypted", &encrypted)] {
        c.bench_function(&format!("storage: 4 KiB inline read, {name}"), |b| {
            b.iter(|| runtime.block_on(storage.head_with_bytes(black_box(&small), 65_536)).unwrap())
        });
        c.bench_function(&format!("storage: 1 MiB streamed, {name}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let got = storage.get(black_box(&large), GetOptions::default()).await.unwrap();
                    got.into_stream().try_fold(0, |n, chunk| async move { Ok(n + chunk.len()) }).await.unwrap()
                })
            })
        });
    }
}

/// A small file's read from a folder, and the same through `CachedStorage` once it is kept.
fn cached(c: &mut Criterion) {
    use private_storage::{CachedStorage, LocalStorage, Storage};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ObjectKey::new("files/4k.bin").unwrap();
    let local = LocalStorage::new(dir.path()).unwrap();
    runtime.block_on(local.put_bytes(&key, vec![7u8; 4096])).unwrap();
    let cached = CachedStorage::new(LocalStorage::new(dir.path()).unwrap(), 1 << 20);
    for (name, storage) in [("local folder", &local as &dyn Storage), ("local folder, cached", &cached)] {
        c.bench_function(&format!("storage: 4 KiB inline read, {name}"), |b| {
            b.iter(|| runtime.block_on(storage.head_with_bytes(black_box(&key), 65_536)).unwrap())
        });
    }
}

criterion_group!(benches, keys, rules, planning, disposition, service, encryption, cached);
criterion_main!(benches);
