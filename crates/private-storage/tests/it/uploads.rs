//! Uploads through the policy and an axum multipart route: the reference's cases, size limits
//! enforced while streaming, sniffed types, and nothing left behind when an upload fails.
use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::{pdf, png, sha256};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use private_storage::{
    Error, LocalStorage, MAX_PART_HEADERS, ObjectKey, SavedFile, Storage, StorageExt, Upload, UploadForm, UploadPolicy,
};
use tower::ServiceExt;

const MIB: usize = 1024 * 1024;
const EXE_HEAD: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0\xb8\0\0\0\0\0\0\0@\0\0\0\0\0\0\0\0\0\0\0";

/// A JPEG header (SOI, JFIF APP0, SOF0) for an image of `width`×`height`.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
    bytes.extend(b"\xff\xc0\0\x11\x08");
    bytes.extend(height.to_be_bytes());
    bytes.extend(width.to_be_bytes());
    bytes.extend(b"\x03\x01\x22\0\x02\x11\x01\x03\x11\x01\xff\xd9");
    bytes
}

struct Customer {
    slug: &'static str,
}

#[tokio::test]
async fn the_reference_cases_land_where_the_reference_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let root = storage.root().to_path_buf();
    let save = |policy: UploadPolicy<Customer>, name: &'static str, slug: &'static str| async move {
        policy.save(&Customer { slug }, Upload::from_bytes(name, "hello")).await.unwrap()
    };
    let base = || UploadPolicy::<Customer>::new(storage.clone());

    let simple = save(base(), "test1.txt", "x").await;
    assert!(root.join("test1.txt").is_file());
    assert_eq!(simple.key.as_str(), "test1.txt");

    save(base().upload_to("UploadToDossier"), "test2.txt", "x").await;
    assert!(root.join("UploadToDossier/test2.txt").is_file());

    save(base().upload_to_fn(|_, name| format!("UploadToCallableDossier/test/{name}")), "test7.txt", "x").await;
    assert!(root.join("UploadToCallableDossier/test/test7.txt").is_file());

    let by_customer = base().upload_to("CustomerDossier").upload_subfolder(|c| vec![c.slug.to_owned()]);
    save(by_customer, "test3.txt", "cust1").await;
    assert!(root.join("CustomerDossier/cust1/test3.txt").is_file());

    let joined = base().upload_to("CustomerDossierJoin").upload_subfolder(|c| vec![c.slug.to_owned()]);
    save(joined, "test6.txt", "cust4/sub2").await;
    assert!(
        root.join("CustomerDossierJoin/cust4/sub2/test6.txt").is_file(),
        "a/b becomes nested folders: {:?}",
        common::entries(&root)
    );

    // A record whose file field is empty: exists() is false, without an error.
    assert!(!storage.exists_name("").await.unwrap());
    assert!(storage.exists_name("test1.txt").await.unwrap());
}

#[tokio::test]
async fn hostile_names_and_subfolders_never_leave_their_folder() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let policy = UploadPolicy::<Customer>::new(storage.clone())
        .upload_to("uploads/%Y")
        .upload_subfolder(|c| vec![c.slug.to_owned()]);
    let year = httpdate::fmt_http_date(std::time::SystemTime::now()).split(' ').nth(3).unwrap().to_owned();
    for (slug, name, expected) in [
        ("../../etc", "../../passwd", format!("uploads/{year}/etc/passwd")),
        ("a/../b", "x;y,\"z\".txt", format!("uploads/{year}/a/b/xyz.txt")),
        ("..", "C:\\temp\\my report.txt", format!("uploads/{year}/my_report.txt")),
        ("/abs/", ".hidden", format!("uploads/{year}/abs/hidden")),
    ] {
        let saved = policy.save(&Customer { slug }, Upload::from_bytes(name, "hello")).await.unwrap();
        assert_eq!(saved.key.as_str(), expected, "{slug:?} {name:?}");
        assert!(storage.root().join(&expected).is_file());
    }
}

#[tokio::test]
async fn the_saved_file_describes_what_was_stored() {
    let storage = private_storage::MemoryStorage::new();
    let policy = UploadPolicy::<()>::new(storage.clone());
    let bytes = pdf(100_000, 3);
    let chunks: Vec<_> = bytes.chunks(7_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let upload =
        Upload::new("Q1 report.pdf", futures_util::stream::iter(chunks).boxed()).declared_type("application/pdf");
    let saved = policy.save(&(), upload).await.unwrap();
    assert_eq!(saved.key.as_str(), "Q1_report.pdf");
    assert_eq!(saved.size, 100_000);
    assert_eq!(saved.content_type, "application/pdf");
    assert_eq!(saved.original_name, "Q1 report.pdf");
    assert_eq!(saved.sha256, sha256(&bytes));
    assert_eq!((saved.width, saved.height), (None, None));
    assert!(storage.read(&saved.key).await.unwrap() == bytes);
}

#[tokio::test]
async fn an_existing_name_gets_a_random_suffix_unless_the_policy_overwrites() {
    let storage = private_storage::MemoryStorage::new();
    let policy = UploadPolicy::<()>::new(storage.clone());
    let first = policy.save(&(), Upload::from_bytes("a.pdf", pdf(100, 1))).await.unwrap();
    let second = policy.save(&(), Upload::from_bytes("a.pdf", pdf(100, 2))).await.unwrap();
    assert_eq!(first.key.as_str(), "a.pdf");
    let name = second.key.as_str();
    assert!(name.starts_with("a_") && name.ends_with(".pdf") && name.len() == "a_4qQ5fdT.pdf".len(), "{name}");
    assert!(storage.read(&first.key).await.unwrap() == pdf(100, 1), "the first file is untouched");

    let overwriting = UploadPolicy::<()>::new(storage.clone()).overwrite(true);
    let replaced = overwriting.save(&(), Upload::from_bytes("a.pdf", pdf(100, 3))).await.unwrap();
    assert_eq!(replaced.key.as_str(), "a.pdf");
    assert!(storage.read(&first.key).await.unwrap() == pdf(100, 3));
}

#[tokio::test]
async fn spoofed_and_polyglot_uploads_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let documents =
        UploadPolicy::<()>::new(storage.clone()).content_types(["application/pdf", "image/png", "image/jpeg"]);
    let anything = UploadPolicy::<()>::new(storage.clone());
    let mut gif_polyglot = b"GIF89a\x01\0\x01\0\x80\0\0\xff\xff\xff\0\0\0!\xf9\x04".to_vec();
    gif_polyglot.extend(b"<script>alert(document.cookie)</script>");
    let mut png_html = png(1, 1);
    png_html.extend(b"<html><body onload=alert(1)>");
    let cases: Vec<(&str, &UploadPolicy, &str, Option<&str>, Vec<u8>)> = vec![
        ("renamed exe declared as PDF", &documents, "invoice.pdf", Some("application/pdf"), EXE_HEAD.to_vec()),
        ("renamed exe, any type allowed", &anything, "invoice.pdf", Some("application/pdf"), EXE_HEAD.to_vec()),
        ("exe not on the allow-list", &documents, "setup.exe", None, EXE_HEAD.to_vec()),
        (
            "HTML behind a PNG name",
            &anything,
            "cat.png",
            Some("image/png"),
            b"<!DOCTYPE html><script>alert(1)</script>".to_vec(),
        ),
        (
            "SVG behind a PNG name",
            &anything,
            "cat.png",
            Some("image/png"),
            b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".to_vec(),
        ),
        ("GIF/script polyglot", &anything, "anim.gif", Some("image/gif"), gif_polyglot),
        ("PNG/HTML polyglot", &documents, "cat.png", Some("image/png"), png_html),
        ("text declared as PDF", &documents, "notes.pdf", Some("application/pdf"), b"just some text".to_vec()),
        ("PDF declared as PNG", &documents, "x.pdf", Some("image/png"), pdf(500, 1)),
        ("text not on the allow-list", &documents, "notes.txt", None, b"plain".to_vec()),
    ];
    for (name, policy, filename, declared, bytes) in cases {
        let mut upload = Upload::from_bytes(filename, bytes);
        if let Some(t) = declared {
            upload = upload.declared_type(t);
        }
        let err = policy.save(&(), upload).await.expect_err(name);
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}: {err}");
        assert!(err.public_message().starts_with("File type not supported"), "{name}: {err}");
    }
    assert!(common::entries(storage.root()).is_empty(), "nothing stored: {:?}", common::entries(storage.root()));

    for (filename, bytes, sniffed) in [
        ("a.pdf", pdf(2000, 1), "application/pdf"),
        ("b.png", png(4, 3), "image/png"),
        ("c.jpg", jpeg(5, 6), "image/jpeg"),
    ] {
        let saved = documents
            .save(&(), Upload::from_bytes(filename, bytes).declared_type("application/octet-stream"))
            .await
            .unwrap();
        assert_eq!(saved.content_type, sniffed, "{filename}");
    }
    assert_eq!(common::files(storage.root()), ["a.pdf", "b.png", "c.jpg"]);
}

#[tokio::test]
async fn the_image_policy_records_dimensions_and_refuses_bombs_and_non_images() {
    let storage = private_storage::MemoryStorage::new();
    let images = UploadPolicy::<()>::new(storage.clone()).max_image_dimensions(4000, 4000);
    let saved = images.save(&(), Upload::from_bytes("a.png", png(640, 480))).await.unwrap();
    assert_eq!((saved.width, saved.height), (Some(640), Some(480)));
    let saved = images.save(&(), Upload::from_bytes("b.jpeg", jpeg(300, 200))).await.unwrap();
    assert_eq!((saved.width, saved.height, saved.content_type.as_str()), (Some(300), Some(200), "image/jpeg"));

    let bomb = images.save(&(), Upload::from_bytes("bomb.png", png(50_000, 50_000))).await.unwrap_err();
    assert_eq!(bomb.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(matches!(bomb, Error::ImageTooLarge { width: 50_000, height: 50_000, .. }), "{bomb}");
    let not_image = images.save(&(), Upload::from_bytes("doc.pdf", pdf(500, 1))).await.unwrap_err();
    assert_eq!(not_image.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let svg =
        images.save(&(), Upload::from_bytes("x.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>")).await.unwrap_err();
    assert_eq!(svg.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "SVG is active content, not an image here");
    let mut keys: Vec<String> = storage.list(None).map(|m| m.unwrap().key.to_string()).collect().await;
    keys.sort();
    assert_eq!(keys, ["a.png", "b.jpeg"]);
}

#[tokio::test]
async fn an_announced_oversize_is_refused_before_a_byte_is_read() {
    let storage = private_storage::MemoryStorage::new();
    let policy = UploadPolicy::<()>::new(storage.clone()).max_file_size(MIB as u64);
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let body = futures_util::stream::iter(0..32).map(move |_| {
        counter.fetch_add(64 * 1024, Ordering::SeqCst);
        Ok(Bytes::from(vec![b'x'; 64 * 1024]))
    });
    let upload = Upload::new("big.txt", body.boxed()).content_length(2 * MIB as u64);
    let err = policy.save(&(), upload).await.unwrap_err();
    assert_eq!(err.public_message(), "The file may not be larger than 1.0 MB.");
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_empty_file_is_a_bad_upload() {
    let policy = UploadPolicy::<()>::new(private_storage::MemoryStorage::new());
    let err = policy.save(&(), Upload::from_bytes("empty.txt", Bytes::new())).await.unwrap_err();
    assert_eq!(
        (err.status(), err.public_message().as_str()),
        (StatusCode::BAD_REQUEST, "Bad upload: The submitted file is empty.")
    );
}

// ---- through an axum multipart route --------------------------------------------------------

const BOUNDARY: &str = "XyZzYboundary";

async fn upload_handler(State(policy): State<UploadPolicy>, mut form: UploadForm) -> Result<String, Error> {
    let mut note = String::new();
    while let Some(field) = form.next_field().await? {
        match field.name() {
            Some("note") => note = field.text().await?,
            Some("file") => {
                let saved: SavedFile = policy.save(&(), field.into_upload()).await?;
                return Ok(format!("{}\n{}\n{}\n{}\n{note}", saved.key, saved.size, saved.content_type, saved.sha256));
            }
            _ => {}
        }
    }
    Err(Error::BadUpload { message: "no file field".into() })
}

fn upload_app(policy: UploadPolicy) -> Router {
    Router::new().route("/upload", post(upload_handler)).layer(DefaultBodyLimit::disable()).with_state(policy)
}

fn form_head(filename: &str, content_type: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nquarterly\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
}

fn form_tail() -> String {
    format!("\r\n--{BOUNDARY}--\r\n")
}

fn upload_request(body: axum::body::Body) -> http::Request<axum::body::Body> {
    http::Request::post("/upload")
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .unwrap()
}

async fn reply(app: &Router, request: http::Request<axum::body::Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    (status, String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_is_cut_off_with_413_after_little_more_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let app = upload_app(UploadPolicy::new(storage.clone()).max_file_size(MIB as u64));
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let chunk = Bytes::from(pdf(64 * 1024, 5));
    let parts = std::iter::once(Bytes::from(form_head("big.pdf", "application/pdf")))
        .chain(std::iter::repeat_n(chunk, 32)) // 2 MiB
        .chain(std::iter::once(Bytes::from(form_tail())));
    let body = futures_util::stream::iter(parts).map(move |b| {
        counter.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(b)
    });
    let (status, text) = reply(&app, upload_request(axum::body::Body::from_stream(body))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text, "The file may not be larger than 1.0 MB.");
    let read = pulled.load(Ordering::SeqCst);
    eprintln!("read {read} bytes of a 2 MiB upload against a 1 MiB limit");
    assert!(read <= (MIB + 192 * 1024) as u64, "read {read} bytes of a 2 MiB upload against a 1 MiB limit");
    assert!(
        common::entries(storage.root()).is_empty(),
        "nothing left, not even a staging file: {:?}",
        common::entries(storage.root())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_is_stored_with_its_sniffed_type_and_other_fields_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let app = upload_app(UploadPolicy::new(storage.clone()).content_types(["application/pdf"]));
    let data = pdf(300_000, 8);
    let body = [
        form_head("../Q1 report.pdf", "application/octet-stream").into_bytes(),
        data.clone(),
        form_tail().into_bytes(),
    ]
    .concat();
    let (status, text) = reply(&app, upload_request(axum::body::Body::from(body))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["Q1_report.pdf", "300000", "application/pdf", &sha256(&data), "quarterly"]);
    assert!(std::fs::read(storage.root().join("Q1_report.pdf")).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_multipart_body_is_a_400_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let app = upload_app(UploadPolicy::new(storage.clone()));
    let truncated = [form_head("a.pdf", "application/pdf").into_bytes(), pdf(100_000, 1)].concat(); // no closing boundary
    for body in [truncated, b"this is not multipart at all".to_vec()] {
        let (status, text) = reply(&app, upload_request(axum::body::Body::from(body))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.starts_with("Bad upload:"), "{text}");
    }
    assert!(common::entries(storage.root()).is_empty(), "{:?}", common::entries(storage.root()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_part_headers_or_preamble_are_cut_with_400_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let app = upload_app(UploadPolicy::new(storage.clone()));
    // 32 MiB that never end a header block, or never reach a boundary: the parser would hold
    // them all in memory, re-scanning as they grow.
    let header =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\nX-Pad: ");
    let cases = [(header, "a form part's headers are longer than 16 KiB"), (String::new(), "the form has no boundary")];
    for (start, message) in cases {
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let parts = std::iter::once(Bytes::from(start)).chain(std::iter::repeat_n(Bytes::from(vec![b'a'; 4096]), 8192));
        let body = futures_util::stream::iter(parts).map(move |b| {
            counter.fetch_add(b.len() as u64, Ordering::SeqCst);
            Ok::<_, std::io::Error>(b)
        });
        let (status, text) = reply(&app, upload_request(axum::body::Body::from_stream(body))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(message), "{text}");
        let read = pulled.load(Ordering::SeqCst);
        assert!(read < (MAX_PART_HEADERS + 128 * 1024) as u64, "{message}: read {read} bytes");
    }
    assert!(common::entries(storage.root()).is_empty(), "{:?}", common::entries(storage.root()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_uploads_of_one_name_give_twenty_intact_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let app = upload_app(UploadPolicy::new(storage.clone()));
    let uploads = (0..20u32).map(|i| {
        let app = app.clone();
        let data = pdf(200_000 + i as usize * 1000, i);
        async move {
            let body =
                [form_head("report.pdf", "application/pdf").into_bytes(), data.clone(), form_tail().into_bytes()]
                    .concat();
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                body.chunks(16 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            let (status, text) =
                reply(&app, upload_request(axum::body::Body::from_stream(futures_util::stream::iter(chunks)))).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            (text.lines().next().unwrap().to_owned(), sha256(&data))
        }
    });
    let results = futures_util::future::join_all(uploads).await;
    let mut keys: Vec<&str> = results.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 20, "distinct keys: {keys:?}");
    for (key, digest) in &results {
        let stored = std::fs::read(storage.root().join(key)).unwrap();
        assert_eq!(&sha256(&stored), digest, "{key} is intact");
    }
    assert_eq!(common::files(storage.root()).len(), 20, "no staging files left: {:?}", common::entries(storage.root()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_halfway_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    let (reporting, mut events) = common::Instrumented::new(Arc::new(storage.clone()));
    let app = upload_app(UploadPolicy::new(reporting));
    let addr = common::serve(app).await;

    let data = pdf(4 * MIB, 4);
    let head = form_head("half.pdf", "application/pdf");
    let total = head.len() + data.len() + form_tail().len();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {total}\r\n\r\n{head}"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&data[..2 * MIB]).await.unwrap();
    socket.flush().await.unwrap();
    let bound = std::time::Duration::from_secs(20); // turns a hang into a failure; never a pause
    assert_eq!(tokio::time::timeout(bound, events.recv()).await.unwrap(), Some("started"));
    drop(socket); // vanish halfway through the file
    assert_eq!(tokio::time::timeout(bound, events.recv()).await.expect("the write never ended"), Some("ended"));
    assert!(
        common::entries(storage.root()).is_empty(),
        "nothing left, not even a staging file: {:?}",
        common::entries(storage.root())
    );
}

#[tokio::test]
async fn exists_name_is_false_for_invalid_names_without_error() {
    let storage = private_storage::MemoryStorage::new();
    storage.put_bytes(&ObjectKey::new("a.txt").unwrap(), "x").await.unwrap();
    for name in ["", "../a.txt", "/a.txt", "a//b"] {
        assert!(!storage.exists_name(name).await.unwrap(), "{name:?}");
    }
    assert!(storage.exists_name("a.txt").await.unwrap());
}

mod naming_properties {
    use super::*;
    use proptest::prelude::*;

    struct Folder(Vec<String>);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Whatever the client's file name and the record's subfolders, the key stays inside
        /// the policy's folder, and two uploads of one name never share a key.
        #[test]
        fn upload_names_never_escape_their_folder_and_never_collide(
            name in "\\PC{0,40}|[./\\\\]{1,6}[a-z]{0,4}|\\.\\./[a-z./]{0,12}",
            subfolders in prop::collection::vec("\\PC{0,12}|\\.\\.|[./]{1,4}|[a-z]{1,3}/\\.\\./[a-z]{1,3}", 0..3),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let storage = private_storage::MemoryStorage::new();
            let policy = UploadPolicy::<Folder>::new(storage.clone())
                .upload_to("tenant/uploads")
                .upload_subfolder(|f: &Folder| f.0.clone());
            let record = Folder(subfolders);
            let key = policy.key_for(&record, &name);
            if let Ok(key) = &key {
                prop_assert!(key.as_str().starts_with("tenant/uploads/"), "{key}");
                prop_assert!(key.segments().all(|s| s != ".." && s != "."), "{key}");
            }
            let (a, b) = runtime.block_on(async {
                let a = policy.save(&record, Upload::from_bytes(name.clone(), "same name")).await;
                let b = policy.save(&record, Upload::from_bytes(name.clone(), "same name")).await;
                (a, b)
            });
            match (a, b, key) {
                (Ok(a), Ok(b), Ok(key)) => {
                    prop_assert_eq!(&a.key, &key);
                    prop_assert_ne!(&a.key, &b.key, "a second upload of {:?} overwrote the first", name);
                    prop_assert!(b.key.as_str().starts_with("tenant/uploads/"));
                }
                (Err(_), Err(_), Err(_)) => {}
                // The name's extension promises another type than text: a type matter, not naming.
                (Err(Error::UnsupportedType { .. }), Err(Error::UnsupportedType { .. }), Ok(_)) => {}
                (a, b, key) => prop_assert!(false, "inconsistent: {a:?} {b:?} {key:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_file_shorter_than_the_sniffing_head_from_a_stream_that_must_not_be_polled_after_its_end() {
    // `unfold` panics when polled after it ended: the policy reads such a body to its end
    // while sniffing, and must not poll it again.
    let storage = private_storage::MemoryStorage::new();
    let policy: UploadPolicy = UploadPolicy::new(storage.clone());
    let body = futures_util::stream::unfold(Some(Bytes::from_static(b"%PDF-1.7\nsmall")), |chunk| async move {
        chunk.map(|c| (Ok(c), None))
    });
    let saved = policy.save(&(), Upload::new("small.pdf", body.boxed())).await.unwrap();
    assert_eq!((saved.size, saved.content_type.as_str()), (14, "application/pdf"));
    assert_eq!(storage.read(&saved.key).await.unwrap(), "%PDF-1.7\nsmall");
}
