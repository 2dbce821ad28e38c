//! The Range and conditional-request planner, through the service: whatever the headers, the
//! answer is one of 200/206/304/412/416, and every byte range it serves lies inside the object
//! and carries exactly the object's bytes.
#![no_main]
use std::sync::OnceLock;

use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use private_storage::{CurrentUser, MemoryStorage, ObjectKey, ServePrivate, StorageExt, User};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    service: ServePrivate,
    objects: Vec<(String, Vec<u8>)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let storage = MemoryStorage::new().with_chunk_size(1000);
        let objects: Vec<(String, Vec<u8>)> = [0usize, 1, 100, 5000]
            .iter()
            .map(|&n| (format!("f{n}"), (0..n).map(|i| (i * 31 % 251) as u8).collect()))
            .collect();
        for (name, bytes) in &objects {
            runtime.block_on(storage.put_bytes(&ObjectKey::new(name).unwrap(), bytes.clone())).unwrap();
        }
        Fixture { runtime, service: ServePrivate::new(storage), objects }
    })
}

fn content_range(value: &str) -> (u64, u64, u64) {
    let (range, len) = value.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
    let (a, b) = range.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap(), len.parse().unwrap())
}

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)| {
    let (which, range, if_range, if_none_match, if_modified_since) = input;
    let f = fixture();
    let (name, object) = &f.objects[which as usize % f.objects.len()];
    let mut builder = http::Request::get(format!("/{name}"));
    for (header, value) in [
        ("range", range),
        ("if-range", if_range),
        ("if-none-match", if_none_match),
        ("if-modified-since", if_modified_since),
    ] {
        if let Ok(v) = http::HeaderValue::from_bytes(&value) {
            builder = builder.header(header, v);
        }
    }
    let mut request = builder.body(()).unwrap();
    request.extensions_mut().insert(CurrentUser::new(User::new("root").superuser()));
    let response = f.runtime.block_on(f.service.serve(request));
    let (parts, body) = response.into_parts();
    let body = f.runtime.block_on(body.collect()).unwrap().to_bytes();
    let len = object.len() as u64;
    match parts.status.as_u16() {
        200 => assert!(body[..] == object[..], "200 carries the whole object"),
        206 => {
            let content_type = parts.headers["content-type"].to_str().unwrap();
            if let Some(boundary) = content_type.strip_prefix("multipart/byteranges; boundary=") {
                let delimiter = format!("\r\n--{boundary}\r\n");
                let text = &body[..];
                let mut parts_seen = 0;
                for chunk in String::from_utf8_lossy(text).split(&delimiter).skip(1) {
                    let header_end = chunk.find("\r\n\r\n").unwrap();
                    let range_line =
                        chunk[..header_end].lines().find_map(|l| l.strip_prefix("Content-Range: ")).unwrap();
                    let (a, b, total) = content_range(range_line);
                    assert!(a <= b && b < len && total == len, "part {range_line} inside {len}");
                    parts_seen += 1;
                }
                assert!(parts_seen >= 2, "a multipart answer has several parts");
                assert_eq!(parts.headers["content-length"].to_str().unwrap().parse::<usize>().unwrap(), body.len());
            } else {
                let (a, b, total) = content_range(parts.headers["content-range"].to_str().unwrap());
                assert!(a <= b && b < len && total == len, "range {a}-{b} inside {len}");
                assert!(body[..] == object[a as usize..=b as usize], "206 carries exactly those bytes");
            }
        }
        304 | 412 => assert!(!parts.headers.contains_key("content-range")),
        416 => assert_eq!(parts.headers["content-range"], format!("bytes */{len}")),
        other => panic!("unexpected status {other}"),
    }
});
