//! The Range and precondition planner against an independent implementation: tower-http's
//! `ServeFile`, serving the same file. Known differences are left out of the comparison:
//! `If-Range` (tower-http ignores it), several ranges (tower-http answers 416, this crate
//! `multipart/byteranges`), ranges on an empty file (tower-http answers 206; RFC 9110
//! makes them unsatisfiable) and suffixes longer than the file (tower-http answers 416; RFC 9110
//! §14.1.2 serves the whole file as that range). ETags differ in format, so each server is asked with its own.

use std::time::{Duration, SystemTime};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use private_storage::{CurrentUser, LocalStorage, ServePrivate, User};
use proptest::prelude::*;
use tower::ServiceExt;

#[derive(Debug, Clone)]
enum Precondition {
    NoneMatchOwn,
    NoneMatchOther,
    NoneMatchStar,
    MatchOwn,
    MatchOther,
    ModifiedSince(i64),
    UnmodifiedSince(i64),
}

fn cond() -> impl Strategy<Value = Precondition> {
    prop_oneof![
        Just(Precondition::NoneMatchOwn),
        Just(Precondition::NoneMatchOther),
        Just(Precondition::NoneMatchStar),
        Just(Precondition::MatchOwn),
        Just(Precondition::MatchOther),
        (-2i64..=2).prop_map(Precondition::ModifiedSince),
        (-2i64..=2).prop_map(Precondition::UnmodifiedSince),
    ]
}

fn range(len: u64) -> impl Strategy<Value = String> {
    prop_oneof![
        (0..len + 4, 0..len + 4).prop_map(|(a, b)| format!("bytes={}-{}", a.min(b), a.max(b))),
        (0..len + 4).prop_map(|a| format!("bytes={a}-")),
        (0..len + 4).prop_map(|n| format!("bytes=-{n}")),
    ]
}

impl Precondition {
    fn header(&self) -> &'static str {
        match self {
            Precondition::NoneMatchOwn | Precondition::NoneMatchOther | Precondition::NoneMatchStar => "if-none-match",
            Precondition::MatchOwn | Precondition::MatchOther => "if-match",
            Precondition::ModifiedSince(_) => "if-modified-since",
            Precondition::UnmodifiedSince(_) => "if-unmodified-since",
        }
    }
}

/// A file length, maybe a range, and conditional headers with one line per header name (two
/// lines such as `"x"` and `*` combine into invalid syntax, which servers may treat differently).
fn case() -> impl Strategy<Value = (u64, Option<String>, Vec<Precondition>)> {
    prop::sample::select(vec![0u64, 1, 10, 1000])
        .prop_flat_map(|len| (Just(len), prop::option::of(range(len)), prop::collection::vec(cond(), 0..4)))
        .prop_map(|(len, range, mut conds)| {
            let mut seen = Vec::new();
            conds.retain(|c| {
                !seen.contains(&c.header()) && {
                    seen.push(c.header());
                    true
                }
            });
            (len, range, conds)
        })
}

struct Answer {
    status: StatusCode,
    content_range: Option<String>,
    body: Vec<u8>,
}

fn request(
    conds: &[Precondition],
    range: Option<&str>,
    etag: &str,
    last_modified: SystemTime,
) -> Request<axum::body::Body> {
    let mut builder = Request::get("/f.bin");
    let date = |d: i64| {
        httpdate::fmt_http_date(if d >= 0 {
            last_modified + Duration::from_secs(d as u64)
        } else {
            last_modified - Duration::from_secs((-d) as u64)
        })
    };
    for c in conds {
        builder = match c {
            Precondition::NoneMatchOwn => builder.header("if-none-match", etag),
            Precondition::NoneMatchOther => builder.header("if-none-match", "\"other\""),
            Precondition::NoneMatchStar => builder.header("if-none-match", "*"),
            Precondition::MatchOwn => builder.header("if-match", etag),
            Precondition::MatchOther => builder.header("if-match", "\"other\""),
            Precondition::ModifiedSince(d) => builder.header("if-modified-since", date(*d)),
            Precondition::UnmodifiedSince(d) => builder.header("if-unmodified-since", date(*d)),
        };
    }
    if let Some(range) = range {
        builder = builder.header("range", range);
    }
    let mut request = builder.body(axum::body::Body::empty()).unwrap();
    request.extensions_mut().insert(CurrentUser::new(User::new("root").superuser()));
    request
}

async fn collect<B>(response: http::Response<B>) -> Answer
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let content_range = response.headers().get("content-range").map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, content_range, body }
}

async fn ours(service: &ServePrivate, request: Request<axum::body::Body>) -> Answer {
    collect(service.serve(request).await).await
}

async fn oracle(service: &tower_http::services::ServeFile, request: Request<axum::body::Body>) -> Answer {
    collect(service.clone().oneshot(request).await.unwrap()).await
}

/// A server's own validators, from a plain GET.
async fn validators(response: http::Response<impl http_body::Body>) -> (String, SystemTime) {
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let last_modified = httpdate::parse_http_date(response.headers()["last-modified"].to_str().unwrap()).unwrap();
    (etag, last_modified)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn the_planner_agrees_with_tower_http((len, range, conds) in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.bin");
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            // Both servers see a Last-Modified more than a second old (a strong date).
            let old = SystemTime::now() - Duration::from_secs(100);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
            let service = ServePrivate::new(LocalStorage::new(dir.path()).unwrap());
            let file = tower_http::services::ServeFile::new(&path);
            let (our_etag, our_lm) = validators(service.serve(request(&[], None, "", SystemTime::UNIX_EPOCH)).await).await;
            let (their_etag, their_lm) = validators(file.clone().oneshot(request(&[], None, "", SystemTime::UNIX_EPOCH)).await.unwrap()).await;
            prop_assert_eq!(our_lm, their_lm, "both report the same Last-Modified");

            let a = ours(&service, request(&conds, range.as_deref(), &our_etag, our_lm)).await;
            let b = oracle(&file, request(&conds, range.as_deref(), &their_etag, their_lm)).await;
            if len == 0 && range.is_some() {
                // tower-http answers 206 for a range on an empty file, with no valid
                // Content-Range to send; RFC 9110 §14.1.2 makes it unsatisfiable (416), or
                // ignorable for a suffix range (200). Ours must never claim a 206 here.
                prop_assert_ne!(a.status, StatusCode::PARTIAL_CONTENT);
                return Ok(());
            }
            let long_suffix = range.as_deref().and_then(|r| r.strip_prefix("bytes=-")).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > len);
            if long_suffix && b.status == StatusCode::RANGE_NOT_SATISFIABLE {
                // tower-http refuses a suffix longer than the file; RFC 9110 §14.1.2 serves the
                // whole representation as that range.
                let whole = Some(format!("bytes 0-{}/{}", len - 1, len));
                let served_whole = a.content_range == whole && a.body == data;
                prop_assert!(a.status != StatusCode::PARTIAL_CONTENT || served_whole, "a long suffix serves the whole file");
                return Ok(());
            }
            prop_assert_eq!(a.status, b.status, "status for {:?} {:?} on {} bytes", conds, range, len);
            if a.status == StatusCode::OK || a.status == StatusCode::PARTIAL_CONTENT {
                prop_assert_eq!(&a.content_range, &b.content_range, "Content-Range for {:?} {:?}", conds, range);
                prop_assert!(a.body == b.body, "body for {:?} {:?}", conds, range);
            }
            if a.status == StatusCode::RANGE_NOT_SATISFIABLE {
                prop_assert_eq!(&a.content_range, &b.content_range);
            }
            Ok(())
        })?;
    }
}
