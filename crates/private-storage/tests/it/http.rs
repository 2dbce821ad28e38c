//! HTTP behaviour of `ServePrivate`, through `oneshot` on an axum router, over both the memory
//! and the local backend.
use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::common::{Backend, Reply, app, pattern, seed, send, storage};
use async_trait::async_trait;
use http::{HeaderValue, Method, StatusCode};
use private_storage::{
    ContentDisposition, DeliverFile, Delivery, OnDenied, Prepared, PrivateFile, ResponseBody, ServePrivate,
    allow_authenticated,
};

const HELLO: &[u8] = b"hello";

async fn fixture(backend: Backend) -> (Arc<dyn private_storage::Storage>, Option<tempfile::TempDir>) {
    let (storage, dir) = storage(backend);
    let big = pattern(100_000, 1);
    seed(
        &*storage,
        &[
            ("hello.txt", HELLO),
            ("big.bin", &big),
            ("empty.txt", b""),
            ("small.bin", &pattern(10_000, 5)),
            ("users/1/notes.txt", b"user one"),
            ("users/6/secret.txt", b"user six"),
            ("page.html", b"<script>alert(1)</script>"),
            ("logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            ("Heizölrückstoßabdämpfung.txt", b"oil"),
        ],
    )
    .await;
    (storage, dir)
}

async fn get(router: &axum::Router, uri: &str, user: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    send(router, Method::GET, uri, user, headers).await
}

over_both_backends!(
    get_returns_the_file_with_every_representation_header,
    head_returns_the_same_headers_and_no_body,
    other_methods_get_405_with_allow_only_after_the_rule_allowed,
    denied_requests_get_the_same_answer_whether_or_not_the_file_exists,
    on_denied_not_found_hides_everything,
    on_denied_login_redirects_anonymous_users_with_the_original_path,
    rejected_keys_are_answered_like_missing_files,
    missing_files_and_folders_are_404_for_allowed_users,
    single_ranges_return_206_with_content_range,
    multiple_ranges_return_multipart_byteranges_with_exact_bytes,
    small_files_read_with_their_metadata_serve_every_range_form,
    unsatisfiable_ranges_return_416_with_the_length,
    malformed_and_excessive_ranges_return_the_whole_file,
    if_range_honours_the_range_only_for_the_current_validator,
    if_none_match_and_if_modified_since_return_304_without_body,
    if_match_and_if_unmodified_since_return_412,
    empty_files_are_served_and_ranges_on_them_are_416,
    content_disposition_is_rfc_6266_whatever_the_user_agent,
    a_disposition_in_the_request_extensions_overrides_the_service,
    active_content_is_forced_to_attachment_with_a_sandbox_csp,
    allow_inline_opts_an_active_type_back_in,
    cache_control_is_configurable,
    a_prefix_rule_sees_the_canonical_key_and_cannot_be_bypassed,
    metadata_is_fetched_once_per_request_even_when_the_rule_asks,
    nginx_mode_answers_with_x_accel_redirect_and_the_same_headers,
    custom_delivery_receives_the_prepared_response,
);

async fn get_returns_the_file_with_every_representation_header(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], HELLO);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let etag = r.header("etag").expect("etag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong etag: {etag}");
    let lm = r.header("last-modified").expect("last-modified");
    assert!(httpdate::parse_http_date(lm).is_ok(), "last-modified is an HTTP-date: {lm}");
    assert_eq!(r.header("content-disposition"), None, "no disposition unless configured");

    let big = get(&router, "/private-media/big.bin", Some("root"), &[]).await;
    assert_eq!(big.status, StatusCode::OK);
    assert_eq!(big.body.len(), 100_000);
    assert!(big.body == pattern(100_000, 1), "a streamed file arrives intact");
    assert_eq!(big.header("content-type"), Some("application/octet-stream"));
}

async fn head_returns_the_same_headers_and_no_body(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let g = get(&router, "/private-media/big.bin", Some("root"), &[]).await;
    let h = send(&router, Method::HEAD, "/private-media/big.bin", Some("root"), &[("range", "bytes=0-1")]).await;
    assert_eq!(h.status, StatusCode::OK, "Range is ignored on HEAD");
    assert!(h.body.is_empty());
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
        "accept-ranges",
        "x-content-type-options",
    ] {
        assert_eq!(h.header(name), g.header(name), "{name}");
    }
}

async fn other_methods_get_405_with_allow_only_after_the_rule_allowed(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS, Method::PATCH, Method::TRACE] {
        let allowed = send(&router, method.clone(), "/private-media/hello.txt", Some("root"), &[]).await;
        assert_eq!(allowed.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(allowed.header("allow"), Some("GET, HEAD"), "{method}");
        let anonymous = send(&router, method.clone(), "/private-media/hello.txt", None, &[]).await;
        assert_eq!(anonymous.status, StatusCode::FORBIDDEN, "{method} answers nothing before the rule");
        assert_eq!(anonymous.header("allow"), None, "{method}");
    }
}

async fn denied_requests_get_the_same_answer_whether_or_not_the_file_exists(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    for user in [None, Some("alice"), Some("staff")] {
        let existing = get(&router, "/private-media/hello.txt", user, &[]).await;
        let missing = get(&router, "/private-media/nope.txt", user, &[]).await;
        assert_eq!(existing.status, StatusCode::FORBIDDEN, "{user:?}");
        assert_eq!((existing.status, existing.text()), (missing.status, missing.text()), "{user:?}");
        assert_eq!(existing.headers, missing.headers, "{user:?}");
        assert!(!existing.text().contains("hello"));
    }
}

async fn on_denied_not_found_hides_everything(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).on_denied(OnDenied::NotFound));
    let existing = get(&router, "/private-media/hello.txt", Some("alice"), &[]).await;
    let missing = get(&router, "/private-media/nope.txt", Some("root"), &[]).await;
    assert_eq!(existing.status, StatusCode::NOT_FOUND);
    assert_eq!((existing.status, existing.text()), (missing.status, missing.text()));
}

async fn on_denied_login_redirects_anonymous_users_with_the_original_path(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).on_denied(OnDenied::login("/login")));
    let anon = get(&router, "/private-media/users/1/notes.txt?x=1&y=2", None, &[]).await;
    assert_eq!(anon.status, StatusCode::FOUND);
    assert_eq!(anon.header("location"), Some("/login?next=/private-media/users/1/notes.txt%3Fx%3D1%26y%3D2"));
    let user = get(&router, "/private-media/users/1/notes.txt", Some("alice"), &[]).await;
    assert_eq!(user.status, StatusCode::FORBIDDEN, "a logged-in user who is denied is not sent to log in again");

    let with_query =
        app(ServePrivate::new(private_storage::MemoryStorage::new()).on_denied(OnDenied::login("/auth?site=2")));
    let r = get(&with_query, "/private-media/a.txt", None, &[]).await;
    assert_eq!(r.header("location"), Some("/auth?site=2&next=/private-media/a.txt"));
}

async fn rejected_keys_are_answered_like_missing_files(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    for on_denied in [OnDenied::Forbidden, OnDenied::NotFound] {
        let router = app(ServePrivate::from_arc(storage.clone()).on_denied(on_denied.clone()));
        let missing = get(&router, "/private-media/nope.txt", Some("root"), &[]).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        for bad in ["/private-media/a/%2e%2e/hello.txt", "/private-media/", "/private-media/a//b", "/private-media/%ff"]
        {
            for user in [Some("root"), Some("alice"), None] {
                let r = get(&router, bad, user, &[]).await;
                assert_eq!(
                    (r.status, r.text()),
                    (missing.status, missing.text()),
                    "{bad} as {user:?} with {on_denied:?}"
                );
            }
        }
    }
}

async fn missing_files_and_folders_are_404_for_allowed_users(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    for uri in
        ["/private-media/nope.txt", "/private-media/users", "/private-media/users/1", "/private-media/hello.txt/x"]
    {
        let r = get(&router, uri, Some("root"), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.text(), "Not found.");
    }
}

async fn single_ranges_return_206_with_content_range(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let data = pattern(100_000, 1);
    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=99990-", 99_990, 100_000),
        ("bytes=-7", 99_993, 100_000),
        ("bytes=50000-999999", 50_000, 100_000),
        ("bytes=1000-70000", 1_000, 70_001),
    ] {
        let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{}/100000", end - 1).as_str()), "{range}");
        assert_eq!(r.header("content-length"), Some((end - start).to_string().as_str()), "{range}");
        assert!(r.body == data[start..end], "{range}: exact bytes");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.header("etag").is_some(), "{range}: validators on 206");
    }
}

async fn multiple_ranges_return_multipart_byteranges_with_exact_bytes(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let data = pattern(100_000, 1);
    // Out of order, overlapping, and a suffix: coalesced and sorted into three parts.
    let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", "bytes=-100,0-9,5-20,50000-50099")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").expect(ct);
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "exact length");
    assert_eq!(r.header("content-range"), None);
    let parts = parse_multipart(&r.body, boundary);
    let expected = [(0usize, 21usize), (50_000, 50_100), (99_900, 100_000)];
    assert_eq!(parts.len(), expected.len());
    for ((headers, body), (start, end)) in parts.iter().zip(expected) {
        assert!(headers.contains("Content-Type: application/octet-stream"), "{headers}");
        assert!(headers.contains(&format!("Content-Range: bytes {start}-{}/100000", end - 1)), "{headers}");
        assert!(body[..] == data[start..end], "part {start}-{end}");
    }
}

async fn small_files_read_with_their_metadata_serve_every_range_form(backend: Backend) {
    // 10 KB is under the inline limit: the local backend reads it with its metadata.
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let data = pattern(10_000, 5);
    let full = get(&router, "/private-media/small.bin", Some("root"), &[]).await;
    assert!(full.body == data);
    let single = get(&router, "/private-media/small.bin", Some("root"), &[("range", "bytes=9000-")]).await;
    assert_eq!(single.status, StatusCode::PARTIAL_CONTENT);
    assert!(single.body[..] == data[9000..]);
    let multi = get(&router, "/private-media/small.bin", Some("root"), &[("range", "bytes=0-99,5000-5099")]).await;
    let boundary =
        multi.header("content-type").unwrap().strip_prefix("multipart/byteranges; boundary=").unwrap().to_owned();
    let parts = parse_multipart(&multi.body, &boundary);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].1[..] == data[..100] && parts[1].1[..] == data[5000..5100]);
}

/// Splits a `multipart/byteranges` body into (part headers, part body).
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let positions: Vec<usize> =
        text.windows(delimiter.len()).enumerate().filter(|(_, w)| *w == delimiter.as_bytes()).map(|(i, _)| i).collect();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len()..pair[1]];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").expect("part header end");
        parts.push((String::from_utf8_lossy(&part[..split]).into_owned(), part[split + 4..].to_vec()));
    }
    let last = *positions.last().expect("closing delimiter");
    assert_eq!(&text[last + delimiter.len()..], b"--\r\n", "closing delimiter ends the body");
    parts
}

async fn unsatisfiable_ranges_return_416_with_the_length(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */100000"), "{range}");
        assert!(!r.body.starts_with(&pattern(16, 1)), "{range}: no file bytes");
    }
}

async fn malformed_and_excessive_ranges_return_the_whole_file(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).max_ranges(4));
    let many =
        format!("bytes={}", (0..5).map(|i| format!("{}-{}", i * 1000, i * 1000 + 1)).collect::<Vec<_>>().join(","));
    for range in ["bytes=5-1", "bytes=abc", "lines=0-1", "bytes=0-1;x", many.as_str()] {
        let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::OK, "{range}");
        assert_eq!(r.body.len(), 100_000, "{range}");
        assert_eq!(r.header("content-range"), None, "{range}");
    }
    let four =
        format!("bytes={}", (0..4).map(|i| format!("{}-{}", i * 1000, i * 1000 + 1)).collect::<Vec<_>>().join(","));
    let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", four.as_str())]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "within the limit");
}

async fn if_range_honours_the_range_only_for_the_current_validator(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let full = get(&router, "/private-media/big.bin", Some("root"), &[]).await;
    let etag = full.header("etag").unwrap().to_owned();
    let current =
        get(&router, "/private-media/big.bin", Some("root"), &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(current.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(current.body.len(), 10);
    let stale =
        get(&router, "/private-media/big.bin", Some("root"), &[("range", "bytes=0-9"), ("if-range", "\"stale\"")])
            .await;
    assert_eq!(stale.status, StatusCode::OK, "a stale If-Range gets the whole new file");
    assert_eq!(stale.body.len(), 100_000);
    let old_date = get(
        &router,
        "/private-media/big.bin",
        Some("root"),
        &[("range", "bytes=0-9"), ("if-range", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(old_date.status, StatusCode::OK);
}

async fn if_none_match_and_if_modified_since_return_304_without_body(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let full = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    let etag = full.header("etag").unwrap().to_owned();
    let lm = full.header("last-modified").unwrap().to_owned();
    for headers in [
        vec![("if-none-match", etag.as_str())],
        vec![("if-none-match", &*format!("\"x\", {etag}"))],
        vec![("if-modified-since", lm.as_str())],
    ] {
        let r = get(&router, "/private-media/hello.txt", Some("root"), &headers).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{headers:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("cache-control"), Some("private, no-cache"));
        assert_eq!(r.header("content-length"), None, "{headers:?}");
    }
    let other = get(
        &router,
        "/private-media/hello.txt",
        Some("root"),
        &[("if-none-match", "\"other\""), ("if-modified-since", lm.as_str())],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "If-None-Match takes precedence over If-Modified-Since");
    let denied = get(&router, "/private-media/hello.txt", Some("alice"), &[("if-none-match", etag.as_str())]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "a denied request learns nothing from a 304");
}

async fn if_match_and_if_unmodified_since_return_412(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[("if-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(!r.text().contains("hello"));
    let r = get(
        &router,
        "/private-media/hello.txt",
        Some("root"),
        &[("if-unmodified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let full = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[("if-match", full.header("etag").unwrap())]).await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn empty_files_are_served_and_ranges_on_them_are_416(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage));
    let r = get(&router, "/private-media/empty.txt", Some("root"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("0"));
    let r = get(&router, "/private-media/empty.txt", Some("root"), &[("range", "bytes=0-")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
}

async fn content_disposition_is_rfc_6266_whatever_the_user_agent(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).content_disposition(ContentDisposition::attachment()));
    let expected = "attachment; filename=\"Heizolruckstossabdampfung.txt\"; filename*=UTF-8''Heiz%C3%B6lr%C3%BCcksto%C3%9Fabd%C3%A4mpfung.txt";
    for ua in [
        "Mozilla/5.0 (Windows NT 10.0) Chrome/120",
        "Mozilla/5.0 (Macintosh) Safari/605",
        "Mozilla/5.0 Firefox/121",
        "curl/8.0",
        "MSIE 8.0",
    ] {
        let r = get(&router, "/private-media/Heizölrückstoßabdämpfung.txt", Some("root"), &[("user-agent", ua)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-disposition"), Some(expected), "{ua}");
    }
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"hello.txt\"; filename*=UTF-8''hello.txt"));
}

async fn a_disposition_in_the_request_extensions_overrides_the_service(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let service = ServePrivate::from_arc(storage);
    let mut request = http::Request::builder().uri("/hello.txt").body(()).unwrap();
    request.extensions_mut().insert(private_storage::CurrentUser::new(private_storage::User::new("r").superuser()));
    request.extensions_mut().insert(ContentDisposition::inline().with_filename("greeting; \"quoted\".txt"));
    let (parts, _) = common::send_service(&service, request).await;
    assert_eq!(
        parts.headers["content-disposition"],
        "inline; filename=\"greeting; _quoted_.txt\"; filename*=UTF-8''greeting%3B%20%22quoted%22.txt"
    );
}

async fn active_content_is_forced_to_attachment_with_a_sandbox_csp(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).content_disposition(ContentDisposition::inline()));
    for (uri, ct) in [("/private-media/page.html", "text/html"), ("/private-media/logo.svg", "image/svg+xml")] {
        let r = get(&router, uri, Some("root"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some(ct));
        assert!(r.header("content-disposition").unwrap().starts_with("attachment;"), "{uri} forced to attachment");
        assert_eq!(r.header("content-security-policy"), Some("sandbox; default-src 'none'"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let plain = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert!(plain.header("content-disposition").unwrap().starts_with("inline;"));
    assert_eq!(plain.header("content-security-policy"), None);
}

async fn allow_inline_opts_an_active_type_back_in(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).allow_inline("image/svg+xml"));
    let svg = get(&router, "/private-media/logo.svg", Some("root"), &[]).await;
    assert_eq!(svg.header("content-disposition"), None);
    assert_eq!(svg.header("content-security-policy"), None);
    let html = get(&router, "/private-media/page.html", Some("root"), &[]).await;
    assert!(html.header("content-disposition").unwrap().starts_with("attachment;"), "only the opted-in type");
}

async fn cache_control_is_configurable(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).cache_control(HeaderValue::from_static("private, max-age=60")));
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!(r.header("cache-control"), Some("private, max-age=60"));
}

async fn a_prefix_rule_sees_the_canonical_key_and_cannot_be_bypassed(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let own_folder = move |file: PrivateFile| {
        log.lock().unwrap().push(file.key().to_string());
        async move { file.user().is_some_and(|u| file.key().as_str().starts_with(&format!("users/{}/", u.id()))) }
    };
    let router = app(ServePrivate::from_arc(storage).rule(own_folder));
    let own = get(&router, "/private-media/users/1/notes.txt", Some("1"), &[]).await;
    assert_eq!((own.status, own.text().as_str()), (StatusCode::OK, "user one"));
    let denied = get(&router, "/private-media/users/6/secret.txt", Some("1"), &[]).await;
    assert_eq!((denied.status, denied.text().as_str()), (StatusCode::FORBIDDEN, "Forbidden."));
    // Spellings that are not a canonical key name no file: answered as a missing one.
    for attempt in [
        "/private-media/users/1/../6/secret.txt",
        "/private-media/users/1/%2e%2e/6/secret.txt",
        "/private-media/users/1%2f..%2f6%2fsecret.txt",
        "/private-media/users/1//../6/secret.txt",
    ] {
        let r = get(&router, attempt, Some("1"), &[]).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::NOT_FOUND, "Not found."), "{attempt}");
    }
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys, ["users/1/notes.txt", "users/6/secret.txt"], "the rule only ever saw canonical keys");
}

async fn metadata_is_fetched_once_per_request_even_when_the_rule_asks(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let (counting, _) = common::Instrumented::new(storage);
    let heads = counting.heads.clone();
    let rule =
        |file: PrivateFile| async move { file.exists().await && file.metadata().await.unwrap().unwrap().size == 5 };
    let router = app(ServePrivate::new(counting).rule(rule));
    let r = get(&router, "/private-media/hello.txt", Some("alice"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(heads.load(Ordering::SeqCst), 1, "one head for the rule's two questions and the response");
}

async fn nginx_mode_answers_with_x_accel_redirect_and_the_same_headers(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let streamed = app(ServePrivate::from_arc(storage.clone()));
    let nginx = app(ServePrivate::from_arc(storage).delivery(Delivery::nginx("/_internal/").unwrap()));
    let key = "/private-media/Heizölrückstoßabdämpfung.txt";
    let s = get(&streamed, key, Some("root"), &[]).await;
    let n = get(&nginx, key, Some("root"), &[("range", "bytes=0-1")]).await;
    assert_eq!(n.status, StatusCode::OK, "nginx answers the range itself");
    assert!(n.body.is_empty());
    assert_eq!(n.header("x-accel-redirect"), Some("/_internal/Heiz%C3%B6lr%C3%BCcksto%C3%9Fabd%C3%A4mpfung.txt"));
    for name in ["content-type", "etag", "last-modified", "cache-control", "x-content-type-options", "accept-ranges"] {
        assert_eq!(n.header(name), s.header(name), "{name} is the same in both modes");
    }
    let not_modified = get(&nginx, key, Some("root"), &[("if-none-match", s.header("etag").unwrap())]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.header("x-accel-redirect"), None);
    let denied = get(&nginx, key, Some("alice"), &[]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("x-accel-redirect"), None, "a denied request is never handed to nginx");
    let missing = get(&nginx, "/private-media/nope.txt", Some("root"), &[]).await;
    assert_eq!((missing.status, missing.header("x-accel-redirect")), (StatusCode::NOT_FOUND, None));
}

struct Echo;

#[async_trait]
impl DeliverFile for Echo {
    async fn deliver(
        &self,
        file: &PrivateFile,
        prepared: Prepared,
    ) -> private_storage::Result<http::Response<ResponseBody>> {
        let body = format!("{} {} {:?} {}", file.key(), prepared.meta.size, prepared.ranges, prepared.head_only);
        let mut response = http::Response::new(ResponseBody::from(body));
        *response.headers_mut() = prepared.headers;
        Ok(response)
    }
}

async fn custom_delivery_receives_the_prepared_response(backend: Backend) {
    let (storage, _dir) = fixture(backend).await;
    let router = app(ServePrivate::from_arc(storage).delivery(Delivery::custom(Echo)));
    let r = get(&router, "/private-media/big.bin", Some("root"), &[("range", "bytes=0-9")]).await;
    assert_eq!(r.text(), "big.bin 100000 [0..10] false");
    assert!(r.header("etag").is_some());
    let denied = get(&router, "/private-media/big.bin", Some("alice"), &[]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn apache_mode_answers_with_the_absolute_path_in_x_sendfile() {
    let (storage, dir) = fixture(Backend::Local).await;
    let router = app(ServePrivate::from_arc(storage).delivery(Delivery::apache()));
    let r = get(&router, "/private-media/Heizölrückstoßabdämpfung.txt", Some("root"), &[]).await;
    let root = dir.unwrap().path().canonicalize().unwrap();
    let expected = root.join("Heizölrückstoßabdämpfung.txt");
    assert_eq!(r.headers["x-sendfile"].as_bytes(), expected.as_os_str().as_encoded_bytes(), "raw UTF-8 path");
    assert!(r.body.is_empty());
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some(), "Apache gets our validators");
}

#[tokio::test]
async fn apache_mode_streams_a_file_whose_path_holds_a_percent_sign_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("users/1/%2e%2e/6")).unwrap();
    std::fs::write(dir.path().join("users/1/%2e%2e/6/x"), "user one's").unwrap();
    let storage = private_storage::LocalStorage::new(dir.path()).unwrap();
    let router = app(ServePrivate::new(storage).delivery(Delivery::apache()));
    let r = get(&router, "/private-media/users/1/%252e%252e/6/x", Some("root"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-sendfile").is_none(), "no path mod_xsendfile could read as another file");
    assert_eq!(r.text(), "user one's");
}

#[test]
#[should_panic(expected = "needs a storage with local paths")]
fn apache_mode_refuses_a_storage_without_paths_when_built() {
    let _ = ServePrivate::new(private_storage::MemoryStorage::new()).delivery(Delivery::apache());
}

#[test]
fn nginx_mode_validates_its_prefix_when_built() {
    for bad in ["", "/", "internal", "/a b", "/a?b", "/a%20b"] {
        let err = Delivery::nginx(bad).expect_err(bad);
        assert!(err.to_string().contains("internal_prefix"), "{bad}: {err}");
    }
    assert!(Delivery::nginx("/_private").is_ok());
}

#[tokio::test]
async fn a_storage_failure_before_the_first_byte_is_a_generic_500() {
    let storage = private_storage::MemoryStorage::new();
    seed(&storage, &[("hello.txt", HELLO)]).await;
    storage.inject(private_storage::Fault::Head);
    let router = app(ServePrivate::new(storage.clone()));
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error."));
    storage.inject(private_storage::Fault::Get);
    let r = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.text().contains("injected"), "the cause is logged, not sent");
}

#[tokio::test]
async fn a_storage_failure_mid_stream_aborts_the_body() {
    let storage = private_storage::MemoryStorage::new().with_chunk_size(1000);
    seed(&storage, &[("big.bin", &pattern(10_000, 2))]).await;
    storage.inject(private_storage::Fault::GetStreamAfter(4000));
    let service = ServePrivate::new(storage);
    let mut request = http::Request::builder().uri("/big.bin").body(()).unwrap();
    request.extensions_mut().insert(private_storage::CurrentUser::new(private_storage::User::new("r").superuser()));
    let (parts, body) = common::send_service(&service, request).await;
    assert_eq!(parts.status, StatusCode::OK, "the status was sent before the failure");
    assert_eq!(parts.headers["content-length"], "10000");
    assert!(body.is_err(), "the body ends in an error, never a clean short 200");
}

#[tokio::test]
async fn storages_side_by_side_have_their_own_urls_and_rules() {
    use private_storage::{MemoryStorage, ObjectKey, StorageExt};
    let media = MemoryStorage::new();
    let invoices = MemoryStorage::new().with_base_url("/invoices");
    seed(&media, &[("a.txt", b"media")]).await;
    seed(&invoices, &[("a.txt", b"invoice")]).await;
    let key = ObjectKey::new("a.txt").unwrap();
    assert_eq!(media.url(&key), "/private-media/a.txt");
    assert_eq!(invoices.url(&key), "/invoices/a.txt");
    let router = axum::Router::new()
        .nest_service("/private-media", ServePrivate::new(media.clone()))
        .nest_service("/invoices", ServePrivate::new(invoices.clone()).rule(allow_authenticated()))
        .layer(axum::middleware::from_fn(common::bearer_identity));
    let r = get(&router, &media.url(&key), Some("alice"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "media keeps the default superuser rule");
    let r = get(&router, &invoices.url(&key), Some("alice"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "invoice"));
    let r = get(&router, &media.url(&key), Some("root"), &[]).await;
    assert_eq!(r.text(), "media");
}

#[test]
fn a_missing_root_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-there");
    let err = private_storage::LocalStorage::new(&missing).expect_err("missing root");
    assert!(err.to_string().contains("root"), "{err}");
    assert!(!missing.exists(), "nothing was created");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(private_storage::LocalStorage::new(&file).is_err(), "a file is not a root");
}

#[tokio::test]
async fn head_never_reads_the_file() {
    let storage = private_storage::MemoryStorage::new();
    seed(&storage, &[("hello.txt", HELLO)]).await;
    let router = app(ServePrivate::new(storage.clone()));
    // A read fault waits for the first `get`: HEAD must not consume it.
    storage.inject(private_storage::Fault::Get);
    let head = send(&router, Method::HEAD, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, Some("5")));
    let get = get(&router, "/private-media/hello.txt", Some("root"), &[]).await;
    assert_eq!(get.status, StatusCode::INTERNAL_SERVER_ERROR, "the fault was still waiting: HEAD did not read");
}

/// Every non-canonical spelling is rejected, never normalised — an empty segment too, even
/// where the mount point's prefix would swallow it — and answered as a missing file, whoever asks.
#[tokio::test]
async fn non_canonical_paths_are_rejected_even_where_the_mount_prefix_hides_them() {
    let (storage, _dir) = fixture(Backend::Local).await;
    let router = app(ServePrivate::from_arc(storage));
    for path in [
        "/private-media//hello.txt",
        "/private-media//users/1/notes.txt",
        "/private-media/users//1/notes.txt",
        "/private-media/a/../hello.txt",
        "/private-media/./hello.txt",
    ] {
        for user in [Some("root"), Some("alice"), None] {
            assert_eq!(get(&router, path, user, &[]).await.status, StatusCode::NOT_FOUND, "{user:?}: {path}");
        }
    }
    assert_eq!(get(&router, "/private-media/hello.txt", Some("root"), &[]).await.status, StatusCode::OK);
}
