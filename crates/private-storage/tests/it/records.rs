//! Downloads by record (the reference's `PrivateStorageDetailView`): the rule sees the record,
//! unknown ids are answered like denials, and the HTTP semantics are the path view's.
use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use crate::common::{Reply, bearer_identity, seed, send};
use async_trait::async_trait;
use http::{Method, StatusCode};
use private_storage::{
    ContentDisposition, MemoryStorage, ObjectKey, OnDenied, PrivateFile, RecordSource, ServePrivate, ServeRecords,
};

#[derive(Debug, Clone)]
struct Document {
    owner: String,
    file: Option<ObjectKey>,
}

/// Records in memory; `scoped` restricts lookups to the requester's own documents (as a query
/// set filtered by owner would).
struct Documents {
    records: HashMap<String, Document>,
    scoped: bool,
}

#[async_trait]
impl RecordSource for Documents {
    type Record = Document;
    async fn find(&self, request: &http::request::Parts, id: &str) -> private_storage::Result<Option<Document>> {
        let user = request.extensions.get::<private_storage::CurrentUser>();
        Ok(self
            .records
            .get(id)
            .filter(|doc| !self.scoped || user.is_some_and(|u| u.is_superuser() || u.id() == doc.owner))
            .cloned())
    }
    fn file_key(&self, doc: &Document) -> Option<ObjectKey> {
        doc.file.clone()
    }
}

async fn fixture(scoped: bool, files: ServePrivate) -> axum::Router {
    let key = |k: &str| Some(ObjectKey::new(k).unwrap());
    let records = HashMap::from([
        ("1".to_owned(), Document { owner: "alice".into(), file: key("docs/test4.txt") }),
        ("2".to_owned(), Document { owner: "bob".into(), file: key("docs/bob.txt") }),
        ("3".to_owned(), Document { owner: "alice".into(), file: None }),
        ("big".to_owned(), Document { owner: "alice".into(), file: key("docs/big.bin") }),
    ]);
    axum::Router::new()
        .nest_service("/documents", ServeRecords::new(Documents { records, scoped }, files))
        .layer(axum::middleware::from_fn(bearer_identity))
}

async fn storage() -> MemoryStorage {
    let storage = MemoryStorage::new();
    seed(
        &storage,
        &[("docs/test4.txt", b"hello"), ("docs/bob.txt", b"bob's"), ("docs/big.bin", &common::pattern(10_000, 4))],
    )
    .await;
    storage
}

fn owner_or_staff() -> impl private_storage::AccessRule {
    |file: PrivateFile| async move {
        let owner = file.parent::<Document>().map(|d| d.owner.clone());
        file.user().is_some_and(|u| u.is_staff() || u.is_superuser() || Some(u.id().to_owned()) == owner)
    }
}

async fn get(app: &axum::Router, uri: &str, user: Option<&str>) -> Reply {
    send(app, Method::GET, uri, user, &[]).await
}

#[tokio::test]
async fn a_superuser_downloads_a_record_like_the_reference_shows() {
    let app = fixture(false, ServePrivate::new(storage().await)).await;
    let g = get(&app, "/documents/1", Some("root")).await;
    assert_eq!((g.status, &g.body[..]), (StatusCode::OK, &b"hello"[..]));
    let h = send(&app, Method::HEAD, "/documents/1", Some("root"), &[]).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.body.is_empty());
    for r in [&g, &h] {
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("content-length"), Some("5"));
        assert!(r.header("last-modified").is_some());
    }
}

#[tokio::test]
async fn the_rule_sees_the_record_owner_allowed_others_denied() {
    let app = fixture(false, ServePrivate::new(storage().await).rule(owner_or_staff())).await;
    let own = get(&app, "/documents/1", Some("alice")).await;
    assert_eq!((own.status, own.text().as_str()), (StatusCode::OK, "hello"));
    let other = get(&app, "/documents/1", Some("bob")).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(!other.text().contains("hello"));
    let staff = get(&app, "/documents/2", Some("staff")).await;
    assert_eq!(staff.text(), "bob's");
}

#[tokio::test]
async fn an_unknown_id_is_answered_exactly_like_a_denied_one() {
    for (scoped, on_denied) in [
        (false, OnDenied::Forbidden),
        (true, OnDenied::Forbidden),
        (false, OnDenied::NotFound),
        (true, OnDenied::login("/login")),
    ] {
        let files = ServePrivate::new(storage().await).rule(owner_or_staff()).on_denied(on_denied.clone());
        let app = fixture(scoped, files).await;
        for user in [Some("bob"), None] {
            let denied = get(&app, "/documents/1", user).await;
            for unknown in ["/documents/999", "/documents/%2e%2e", "/documents/1x"] {
                let r = get(&app, unknown, user).await;
                assert_eq!(
                    (r.status, r.text()),
                    (denied.status, denied.text()),
                    "{unknown} vs denied for {user:?}, scoped {scoped}, {on_denied:?}"
                );
                // A login redirect differs only in the `next` path it carries back.
                let login_page =
                    |reply: &Reply| reply.header("location").map(|l| l.split("next=").next().unwrap().to_owned());
                assert_eq!(login_page(&r), login_page(&denied), "{unknown}");
            }
        }
    }
}

#[tokio::test]
async fn a_record_without_a_file_is_404() {
    let app = fixture(false, ServePrivate::new(storage().await).rule(owner_or_staff())).await;
    let r = get(&app, "/documents/3", Some("alice")).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::NOT_FOUND, "Not found."));
}

#[tokio::test]
async fn record_downloads_have_the_path_views_semantics() {
    let files = ServePrivate::new(storage().await).content_disposition(ContentDisposition::attachment());
    let app = fixture(false, files).await;
    let r = send(&app, Method::GET, "/documents/big", Some("root"), &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r.body[..] == common::pattern(10_000, 4)[100..200]);
    let etag = r.header("etag").unwrap().to_owned();
    let r = send(&app, Method::GET, "/documents/big", Some("root"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = get(&app, "/documents/1", Some("root")).await;
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"test4.txt\"; filename*=UTF-8''test4.txt"));
    let r = send(&app, Method::DELETE, "/documents/1", Some("root"), &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_handler_can_serve_a_record_by_id() {
    use axum::extract::{Path, Request, State};
    use axum::response::IntoResponse;
    let key = Some(ObjectKey::new("docs/test4.txt").unwrap());
    let records = HashMap::from([("7".to_owned(), Document { owner: "alice".into(), file: key })]);
    let service = Arc::new(ServeRecords::new(
        Documents { records, scoped: false },
        ServePrivate::new(storage().await).rule(owner_or_staff()),
    ));
    let app = axum::Router::new()
        .route(
            "/files/{id}/download",
            axum::routing::get(
                |State(s): State<Arc<ServeRecords<Documents>>>, Path(id): Path<String>, request: Request| async move {
                    s.serve(&id, request).await.into_response()
                },
            ),
        )
        .with_state(service)
        .layer(axum::middleware::from_fn(bearer_identity));
    let r = get(&app, "/files/7/download", Some("alice")).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "hello"));
    assert_eq!(get(&app, "/files/7/download", Some("bob")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_path_view_with_attachment_names_files_per_rfc_6266() {
    let storage = storage().await;
    seed(&storage, &[("test5.txt", b"five"), ("Heizölrückstoßabdämpfung.txt", b"oil")]).await;
    let app = common::app(ServePrivate::new(storage).content_disposition(ContentDisposition::attachment()));
    let r = get(&app, "/private-media/test5.txt", Some("root")).await;
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"test5.txt\"; filename*=UTF-8''test5.txt"));
    let expected = "attachment; filename=\"Heizolruckstossabdampfung.txt\"; filename*=UTF-8''Heiz%C3%B6lr%C3%BCcksto%C3%9Fabd%C3%A4mpfung.txt";
    for ua in [
        "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0)",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
        "Mozilla/5.0 (iPhone) Safari/604.1",
    ] {
        let r =
            send(&app, Method::GET, "/private-media/Heizölrückstoßabdämpfung.txt", Some("root"), &[("user-agent", ua)])
                .await;
        assert_eq!(r.header("content-disposition"), Some(expected), "{ua}");
    }
}
