//! Virus scanning against a real clamd (Debian's `clamav-daemon`, started by the test on a
//! signature database it writes), and holds: files the rule allows but that must not be served.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use private_storage::scan::{Clamd, ClamdAddress, ScanError, Verdict};
use private_storage::{
    Delivery, Held, LocalStorage, MemoryRevocations, ObjectKey, PrivateFile, ServePrivate, ServeShared, Share,
    ShareKeys, ShareLinks, StorageExt,
};
use test_support::{EICAR, MARKER, MARKER_SIGNATURE};

use crate::common::{app, bearer_identity, pattern, send};

const MIB: usize = 1024 * 1024;

fn tcp(clamd: &test_support::Clamd) -> Clamd {
    Clamd::new(format!("127.0.0.1:{}", clamd.port).parse().unwrap())
}

#[tokio::test]
async fn clamd_finds_eicar_and_passes_clean_data_over_tcp_and_a_unix_socket() {
    let clamd = test_support::Clamd::start(64 * MIB as u64).await;
    let unix = Clamd::new(ClamdAddress::Unix(clamd.socket.clone()));
    for client in [tcp(&clamd), unix] {
        client.ping().await.unwrap();
        assert_eq!(
            client.scan_bytes(EICAR).await.unwrap(),
            Verdict::Infected { signature: "Eicar-Test-Signature.UNOFFICIAL".into() },
            "{:?}",
            client.address()
        );
        assert_eq!(client.scan_bytes(&pattern(300_000, 1)).await.unwrap(), Verdict::Clean);
        assert_eq!(client.scan_bytes(b"").await.unwrap(), Verdict::Clean);
    }
}

/// A body signature 50 MiB into a 60 MiB file is found: the whole stream reached clamd, in
/// the storage's chunks (split to the protocol's), not a prefix.
#[tokio::test]
async fn a_signature_deep_in_a_large_stored_file_is_found() {
    let clamd = test_support::Clamd::start(64 * MIB as u64).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let mut data = pattern(60 * MIB, 9);
    let clean = ObjectKey::new("clean.bin").unwrap();
    storage.put_bytes(&clean, Bytes::from(data.clone())).await.unwrap();
    data[50 * MIB..50 * MIB + MARKER.len()].copy_from_slice(MARKER);
    let infected = ObjectKey::new("deep.bin").unwrap();
    storage.put_bytes(&infected, Bytes::from(data)).await.unwrap();
    let client = tcp(&clamd);
    assert_eq!(client.scan_object(&storage, &clean).await.unwrap(), Verdict::Clean);
    assert_eq!(
        client.scan_object(&storage, &infected).await.unwrap(),
        Verdict::Infected { signature: MARKER_SIGNATURE.into() }
    );
    let missing = ObjectKey::new("missing.bin").unwrap();
    assert!(matches!(client.scan_object(&storage, &missing).await, Err(ScanError::Source(_))));
}

/// Past clamd's `StreamMaxLength` the answer is `TooLarge`, never clean — even when the
/// signature sits beyond the limit, where clamd never looked.
#[tokio::test]
async fn a_stream_past_the_limit_is_too_large_not_clean() {
    let clamd = test_support::Clamd::start(MIB as u64).await;
    let client = tcp(&clamd);
    let mut data = pattern(3 * MIB, 2);
    data[2 * MIB..2 * MIB + MARKER.len()].copy_from_slice(MARKER);
    assert_eq!(client.scan_bytes(&data).await.unwrap(), Verdict::TooLarge);
    assert_eq!(client.scan_bytes(&data[..MIB]).await.unwrap(), Verdict::Clean, "exactly the limit is scanned");
    assert_eq!(client.scan_bytes(&data[..MIB + 1]).await.unwrap(), Verdict::TooLarge);
}

#[tokio::test]
async fn a_stopped_clamd_is_unavailable_and_a_restarted_one_answers() {
    let mut clamd = test_support::Clamd::start(MIB as u64).await;
    let client = tcp(&clamd).timeout(Duration::from_secs(5));
    clamd.stop();
    assert!(matches!(client.ping().await, Err(ScanError::Unavailable { .. })));
    match client.scan_bytes(EICAR).await {
        Err(e @ ScanError::Unavailable { .. }) => assert!(e.to_string().contains("does not answer"), "{e}"),
        other => panic!("{other:?}"),
    }
    clamd.restart().await;
    assert!(matches!(client.scan_bytes(EICAR).await, Ok(Verdict::Infected { .. })));
}

/// A listener that accepts and never answers: the client gives up after its timeout.
#[tokio::test]
async fn a_clamd_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let client = Clamd::new(address.to_string().parse().unwrap()).timeout(Duration::from_millis(300));
    match client.scan_bytes(b"hello").await {
        Err(ScanError::Unavailable { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
}

fn hold_incoming() -> ServePrivate {
    let storage = private_storage::MemoryStorage::new();
    ServePrivate::new(storage).rule(|file: PrivateFile| async move { file.user().is_some_and(|u| u.id() == "ada") })
}

async fn seed_held(files: &ServePrivate) {
    for key in ["incoming/new.pdf", "bad/virus.exe", "ready/ok.pdf"] {
        files.storage().put_bytes(&ObjectKey::new(key).unwrap(), Bytes::from_static(b"%PDF-1.7 hello")).await.unwrap();
    }
}

async fn held(file: PrivateFile) -> Option<Held> {
    let key = file.key().as_str();
    if key.starts_with("incoming/") {
        Some(Held::locked("Being scanned.", Duration::from_secs(5)))
    } else if key.starts_with("bad/") {
        Some(Held::forbidden("Found infected."))
    } else {
        None
    }
}

/// A held file answers its hold — status, message, `Retry-After`, no byte and no file header —
/// for every method and header a client could try, in every delivery mode; a denied request
/// gets the denial, not the hold.
#[tokio::test]
async fn a_held_file_is_answered_with_why_and_no_byte_in_every_delivery_mode() {
    let deliveries = [
        ("stream", Delivery::stream()),
        ("nginx", Delivery::nginx("/_internal/").unwrap()),
        ("presigned", Delivery::presigned_redirect(None)),
    ];
    for (mode, delivery) in deliveries {
        let files = hold_incoming().delivery(delivery).hold(held);
        seed_held(&files).await;
        let router = app(files);
        for (method, headers) in [
            (Method::GET, vec![]),
            (Method::HEAD, vec![]),
            (Method::GET, vec![("range", "bytes=0-3")]),
            (Method::GET, vec![("if-none-match", "*")]),
            (Method::POST, vec![]),
        ] {
            let r = send(&router, method.clone(), "/private-media/incoming/new.pdf", Some("ada"), &headers).await;
            assert_eq!(r.status, StatusCode::LOCKED, "{mode} {method} {headers:?}");
            assert_eq!(r.header("retry-after"), Some("5"));
            assert_eq!(r.header("cache-control"), Some("private, no-store"));
            for leak in ["x-accel-redirect", "location", "etag", "content-range", "accept-ranges", "last-modified"] {
                assert_eq!(r.header(leak), None, "{mode} {method}: {leak}");
            }
            if method == Method::GET {
                assert_eq!(r.text(), "Being scanned.");
            }
            let infected = send(&router, method.clone(), "/private-media/bad/virus.exe", Some("ada"), &headers).await;
            assert_eq!(infected.status, StatusCode::FORBIDDEN, "{mode} {method}");
            assert!(infected.header("x-accel-redirect").is_none() && infected.header("location").is_none());
            let denied = send(&router, method.clone(), "/private-media/incoming/new.pdf", Some("bob"), &headers).await;
            assert_eq!(denied.status, StatusCode::FORBIDDEN, "the rule answers first: {mode} {method}");
            assert_ne!(denied.text(), "Being scanned.");
        }
        if mode != "presigned" {
            // (A memory storage cannot presign: only the hold is checked in that mode.)
            let ready = send(&router, Method::GET, "/private-media/ready/ok.pdf", Some("ada"), &[]).await;
            assert_eq!(ready.status, StatusCode::OK, "{mode}");
        }
    }
}

/// Share links pass the hold too: a link to a held file answers the hold, and serves the file
/// once the hold is lifted.
#[tokio::test]
async fn a_share_link_to_a_held_file_answers_the_hold_until_it_is_lifted() {
    let lifted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lifted.clone();
    let hold = move |_file: PrivateFile| {
        let lifted = flag.load(std::sync::atomic::Ordering::SeqCst);
        async move { (!lifted).then(|| Held::unavailable("The scanner is down.", Duration::from_secs(30))) }
    };
    let files = ServePrivate::new(private_storage::MemoryStorage::new()).rule(|_| async { false }).hold(hold);
    let key = ObjectKey::new("reports/q1.pdf").unwrap();
    files.storage().put_bytes(&key, Bytes::from_static(b"report")).await.unwrap();
    let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32]).unwrap(), MemoryRevocations::new()).base_url("/s/");
    let link = links.issue(Share::key(key)).await.unwrap();
    let router = axum::Router::new()
        .nest_service("/s", ServeShared::new(links, files))
        .layer(axum::middleware::from_fn(bearer_identity));
    let r = send(&router, Method::GET, &link.url, None, &[]).await;
    assert_eq!((r.status, r.header("retry-after")), (StatusCode::SERVICE_UNAVAILABLE, Some("30")));
    assert_eq!(r.text(), "The scanner is down.");
    lifted.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = send(&router, Method::GET, &link.url, None, &[]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "report"));
}
