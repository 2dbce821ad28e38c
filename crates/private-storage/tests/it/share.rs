//! Share links over HTTP: served like any download in every delivery mode, refused without a
//! byte when tampered, revoked or misused, 410 when expired, audited on every use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Backend, Reply, bearer_identity, pattern, seed, send, storage};
use http::{Method, StatusCode};
use private_storage::{
    ContentDisposition, Delivery, IssuedLink, LinkIssued, LinkUsed, MemoryRevocations, ObjectKey, OnDenied,
    ServePrivate, ServeShared, Share, ShareAudit, ShareKeys, ShareLinks, ShareTarget,
};
use proptest::prelude::*;

const T0: u64 = 1_800_000_000;

#[derive(Default)]
struct Recorded {
    issued: Mutex<Vec<LinkIssued>>,
    used: Mutex<Vec<LinkUsed>>,
}

#[derive(Clone, Default)]
struct Audit(Arc<Recorded>);

impl ShareAudit for Audit {
    fn issued(&self, event: &LinkIssued) {
        self.0.issued.lock().unwrap().push(event.clone());
    }
    fn used(&self, event: &LinkUsed) {
        self.0.used.lock().unwrap().push(event.clone());
    }
}

struct Fixture {
    links: ShareLinks,
    router: axum::Router,
    now: Arc<AtomicU64>,
    audit: Audit,
    _dir: Option<tempfile::TempDir>,
}

async fn fixture(backend: Backend, delivery: Delivery) -> Fixture {
    let (storage, dir) = storage(backend);
    seed(&*storage, &[("reports/q1.pdf", &pattern(100_000, 3)), ("notes/Grüße an alle.txt", b"hello")]).await;
    let now = Arc::new(AtomicU64::new(T0));
    let clock = now.clone();
    let audit = Audit::default();
    let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32]).unwrap(), MemoryRevocations::new())
        .base_url("/s/")
        .audit(audit.clone())
        .clock(move || UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst)));
    // The service's own rule would deny everyone: only links open files here.
    let files = ServePrivate::from_arc(storage).rule(|_| async { false }).delivery(delivery);
    let records = |id: String| async move { Ok((id == "42").then(|| ObjectKey::new("reports/q1.pdf").unwrap())) };
    let router = axum::Router::new()
        .nest_service("/s", ServeShared::new(links.clone(), files).records(records))
        .layer(axum::middleware::from_fn(bearer_identity));
    Fixture { links, router, now, audit, _dir: dir }
}

impl Fixture {
    async fn issue(&self, share: Share) -> IssuedLink {
        self.links.issue(share).await.unwrap()
    }
    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.router, Method::GET, url, None, headers).await
    }
}

fn q1() -> ObjectKey {
    ObjectKey::new("reports/q1.pdf").unwrap()
}

over_both_backends!(a_link_is_served_like_any_download, expired_links_are_gone_and_misused_links_get_the_denial);

async fn a_link_is_served_like_any_download(backend: Backend) {
    let f = fixture(backend, Delivery::stream()).await;
    let data = pattern(100_000, 3);
    let link =
        f.issue(Share::key(q1()).disposition(ContentDisposition::attachment().with_filename("Q1 report.pdf"))).await;
    let r = f.get(&link.url, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == data);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"Q1 report.pdf\"; filename*=UTF-8''Q1%20report.pdf")
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let etag = r.header("etag").unwrap().to_owned();
    let partial = f.get(&link.url, &[("range", "bytes=10-19")]).await;
    assert_eq!((partial.status, &partial.body[..]), (StatusCode::PARTIAL_CONTENT, &data[10..20]));
    assert_eq!(f.get(&link.url, &[("if-none-match", &etag)]).await.status, StatusCode::NOT_MODIFIED);
    let head = send(&f.router, Method::HEAD, &link.url, None, &[]).await;
    assert_eq!((head.status, head.body.len(), head.header("content-length")), (StatusCode::OK, 0, Some("100000")));
    // A trailing file name is ignored; links to records resolve through the lookup.
    assert_eq!(f.get(&format!("{}/Q1.pdf", link.url), &[]).await.status, StatusCode::OK);
    let by_record = f.issue(Share::record("42")).await;
    assert!(f.get(&by_record.url, &[]).await.body == data);
    let gone_record = f.issue(Share::record("43")).await;
    assert_eq!(f.get(&gone_record.url, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(f.audit.0.used.lock().unwrap().last().map(|u| u.outcome), Some("missing"));

    let used = f.audit.0.used.lock().unwrap();
    let first = &used[0];
    assert_eq!((first.outcome, first.status, first.bytes), ("served", 200, Some(100_000)));
    assert_eq!(first.link_id.as_deref(), Some(link.link_id.as_str()));
    assert_eq!(used[1].range.as_deref(), Some("bytes=10-19"));
    let issued = f.audit.0.issued.lock().unwrap();
    assert_eq!(issued[0].target, ShareTarget::Key(q1()));
}

async fn expired_links_are_gone_and_misused_links_get_the_denial(backend: Backend) {
    let f = fixture(backend, Delivery::stream()).await;
    let data = pattern(100_000, 3);
    let no_bytes = |r: &Reply| !r.body.windows(16).any(|w| w == &data[..16]);

    let short = f.issue(Share::key(q1()).expires_in(Duration::from_secs(60))).await;
    f.now.store(T0 + 60, Ordering::SeqCst);
    let expired = f.get(&short.url, &[]).await;
    assert_eq!((expired.status, expired.text().as_str()), (StatusCode::GONE, "This link has expired."));
    f.now.store(T0, Ordering::SeqCst);

    let link = f.issue(Share::key(q1())).await;
    let denied = f.get("/s/not-a-token", &[]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let mut tampered = link.token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("/s/{}", String::from_utf8(tampered).unwrap());
    let bound = f.issue(Share::key(q1()).bound_to("alice")).await;
    let revoked = f.issue(Share::key(q1())).await;
    f.links.revoke(&revoked).await.unwrap();

    for (name, reply) in [
        ("tampered", f.get(&tampered, &[]).await),
        ("revoked", f.get(&revoked.url, &[]).await),
        ("bound, anonymous", f.get(&bound.url, &[]).await),
        ("bound, other user", send(&f.router, Method::GET, &bound.url, Some("bob"), &[]).await),
        ("tampered with a range", f.get(&tampered, &[("range", "bytes=0-99")]).await),
    ] {
        assert_eq!(
            (reply.status, reply.text()),
            (denied.status, denied.text()),
            "{name}: the same answer as any denial"
        );
        assert!(no_bytes(&reply), "{name}: not a byte of the file");
    }
    let alice = send(&f.router, Method::GET, &bound.url, Some("alice"), &[]).await;
    assert_eq!(alice.status, StatusCode::OK, "the bound user gets it");
    assert!(f.get(&link.url, &[]).await.status == StatusCode::OK, "other links are untouched");
    f.links.revoke_all(&ShareTarget::Key(q1())).await.unwrap();
    assert_eq!(
        f.get(&link.url, &[]).await.status,
        StatusCode::FORBIDDEN,
        "revoking the file's links kills this one too"
    );

    let outcomes: Vec<&str> = f.audit.0.used.lock().unwrap().iter().map(|u| u.outcome).collect();
    assert!(outcomes.starts_with(&["expired", "refused"]), "{outcomes:?}");
}

#[tokio::test]
async fn a_denial_policy_of_404_hides_refused_links_too() {
    let (storage, _dir) = storage(Backend::Memory);
    seed(&*storage, &[("a.txt", b"a")]).await;
    let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32]).unwrap(), MemoryRevocations::new());
    let files = ServePrivate::from_arc(storage).on_denied(OnDenied::NotFound);
    let router = axum::Router::new().nest_service("/s", ServeShared::new(links, files));
    let r = send(&router, Method::GET, "/s/bogus", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn links_work_in_every_delivery_mode() {
    let link_for = |f: &Fixture| {
        let links = f.links.clone();
        async move { links.issue(Share::key(ObjectKey::new("notes/Grüße an alle.txt").unwrap())).await.unwrap() }
    };
    let nginx = fixture(Backend::Local, Delivery::nginx("/_internal").unwrap()).await;
    let link = link_for(&nginx).await;
    let r = nginx.get(&link.url, &[]).await;
    assert_eq!(r.header("x-accel-redirect"), Some("/_internal/notes/Gr%C3%BC%C3%9Fe%20an%20alle.txt"));
    let revoked = link_for(&nginx).await;
    nginx.links.revoke(&revoked).await.unwrap();
    assert_eq!(nginx.get(&revoked.url, &[]).await.header("x-accel-redirect"), None, "nothing handed to nginx");

    let apache = fixture(Backend::Local, Delivery::apache()).await;
    let link = link_for(&apache).await;
    let r = apache.get(&link.url, &[]).await;
    assert!(r.headers["x-sendfile"].as_bytes().ends_with("notes/Grüße an alle.txt".as_bytes()));
    let tampered = format!("{}x", link.url);
    assert!(apache.get(&tampered, &[]).await.headers.get("x-sendfile").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// No mutation of a valid token verifies: flipped bits, cut or extended tokens, spliced bytes.
    #[test]
    fn no_mutation_of_a_valid_token_verifies(pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..8), which in 0u8..4) {
        use base64::Engine;
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32]).unwrap(), MemoryRevocations::new());
            let link = links.issue(Share::key(q1()).bound_to("alice").disposition(ContentDisposition::inline())).await.unwrap();
            let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&link.token).unwrap();
            match which {
                0 => { let i = pos.index(bytes.len()); bytes[i] ^= 1 << bit; }
                1 => { let i = cut.index(bytes.len()); bytes.truncate(i); }
                2 => bytes.extend_from_slice(&extra),
                _ => { let i = pos.index(bytes.len()); bytes.splice(i..i, extra.iter().copied()); }
            }
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            let files = ServePrivate::new(private_storage::MemoryStorage::new());
            let service = ServeShared::new(links, files);
            let mut request = http::Request::get("/").body(()).unwrap();
            request.extensions_mut().insert(private_storage::CurrentUser::new(private_storage::User::new("alice")));
            let response = service.serve(&token, request).await;
            prop_assert_eq!(response.status(), StatusCode::FORBIDDEN, "a mutated token was accepted");
            Ok(())
        })?;
    }
}

#[test]
fn link_expiry_is_reported_in_system_time() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let links = ShareLinks::new(ShareKeys::new("k1", [7u8; 32]).unwrap(), MemoryRevocations::new());
    let before = SystemTime::now();
    let link = runtime.block_on(links.issue(Share::key(q1()).expires_in(Duration::from_secs(90)))).unwrap();
    let lifetime = link.expires.duration_since(before).unwrap().as_secs();
    assert!((89..=91).contains(&lifetime), "{lifetime}");
}
