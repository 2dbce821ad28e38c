//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

#[cfg(all(feature = "testing", feature = "s3"))]
pub mod s3;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use private_storage::{
    CurrentUser, LocalStorage, MemoryStorage, ResponseBody, ServePrivate, Storage, StorageExt, User,
};
use tower::ServiceExt;

/// The toy identity layer of the tests: `Authorization: Bearer <name>` where `root` is a
/// superuser, `staff` is staff, and any other name is a plain user with that id.
pub async fn bearer_identity(mut request: Request, next: Next) -> Response {
    let name = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(name) = name {
        let user = match name.as_str() {
            "root" => User::new("root").superuser(),
            "staff" => User::new("staff").staff(),
            other => User::new(other),
        };
        request.extensions_mut().insert(CurrentUser::new(user));
    }
    next.run(request).await
}

/// Mounts `service` at `/private-media` behind the toy identity layer.
pub fn app(service: ServePrivate) -> Router {
    Router::new().nest_service("/private-media", service).layer(middleware::from_fn(bearer_identity))
}

/// The two backends every HTTP behaviour is tested over.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Local,
}

/// A storage of the given kind (and the temporary folder that must outlive it).
pub fn storage(backend: Backend) -> (Arc<dyn Storage>, Option<tempfile::TempDir>) {
    match backend {
        Backend::Memory => (Arc::new(MemoryStorage::new().with_chunk_size(16 * 1024)), None),
        Backend::Local => {
            let dir = tempfile::tempdir().unwrap();
            (Arc::new(LocalStorage::new(dir.path()).unwrap()), Some(dir))
        }
    }
}

/// Writes `files` into `storage`.
pub async fn seed(storage: &dyn Storage, files: &[(&str, &[u8])]) {
    for (key, bytes) in files {
        let key = private_storage::ObjectKey::new(key).unwrap();
        storage.put_bytes(&key, Bytes::copy_from_slice(bytes)).await.unwrap();
    }
}

pub use test_support::{Peer, Reply, free_port, nginx, program, wait_for_port};

/// Sends one request through `app` with `oneshot`.
pub async fn send(app: &Router, method: Method, uri: &str, user: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    let mut builder = http::Request::builder().method(method).uri(uri);
    if let Some(user) = user {
        builder = builder.header("authorization", format!("Bearer {user}"));
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = app.clone().oneshot(builder.body(axum::body::Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// Sends one request straight to the service (no router), collecting the body.
pub async fn send_service(
    service: &ServePrivate,
    request: http::Request<()>,
) -> (http::response::Parts, Result<Bytes, private_storage::BoxError>) {
    let response: http::Response<ResponseBody> = service.serve(request).await;
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.map(|c| c.to_bytes()))
}

/// Serves `app` on a real loopback socket with `TCP_NODELAY`; returns its address. The server
/// runs until the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs an HTTP behaviour test over both backends, each as its own test.
#[macro_export]
macro_rules! over_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name($crate::common::Backend::Memory).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name($crate::common::Backend::Local).await;
            }
        }
    )*};
}

/// A storage wrapper that watches what goes through it: `head` calls, the bytes read streams
/// yield and how many are alive, and when writes start and end (however they end).
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Storage>,
    pub heads: Arc<std::sync::atomic::AtomicUsize>,
    pub yielded: Arc<std::sync::atomic::AtomicU64>,
    open_reads: tokio::sync::watch::Sender<usize>,
    puts: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

/// The receiving end of [`Instrumented`]'s write events: `"started"`, then `"ended"`.
pub type PutEvents = tokio::sync::mpsc::UnboundedReceiver<&'static str>;

impl Instrumented {
    pub fn new(inner: Arc<dyn Storage>) -> (Self, PutEvents) {
        let (puts, events) = tokio::sync::mpsc::unbounded_channel();
        let this = Self {
            inner,
            heads: Arc::default(),
            yielded: Arc::default(),
            open_reads: tokio::sync::watch::Sender::new(0),
            puts,
        };
        (this, events)
    }

    /// How many read streams are alive, as a watch (wait with `wait_for`).
    pub fn open_reads(&self) -> tokio::sync::watch::Receiver<usize> {
        self.open_reads.subscribe()
    }
}

/// Runs its closure when dropped.
struct OnDrop<F: FnMut()>(F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[async_trait::async_trait]
impl Storage for Instrumented {
    async fn head(&self, key: &private_storage::ObjectKey) -> private_storage::Result<private_storage::ObjectMeta> {
        self.heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.head(key).await
    }

    async fn get(
        &self,
        key: &private_storage::ObjectKey,
        options: private_storage::GetOptions,
    ) -> private_storage::Result<private_storage::GetResult> {
        use futures_util::StreamExt;
        let got = self.inner.get(key, options).await?;
        let (meta, range) = (got.meta.clone(), got.range.clone());
        self.open_reads.send_modify(|n| *n += 1);
        let open = self.open_reads.clone();
        let alive = OnDrop(move || open.send_modify(|n| *n -= 1));
        let yielded = self.yielded.clone();
        let stream = got
            .into_stream()
            .map(move |chunk| {
                let _alive = &alive;
                if let Ok(c) = &chunk {
                    yielded.fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
                }
                chunk
            })
            .boxed();
        Ok(private_storage::GetResult::new(meta, range, private_storage::Payload::Stream(stream)))
    }

    async fn put(
        &self,
        key: &private_storage::ObjectKey,
        data: private_storage::PutStream<'_>,
        options: private_storage::PutOptions,
    ) -> private_storage::Result<private_storage::ObjectMeta> {
        let puts = self.puts.clone();
        let _ended = OnDrop(move || {
            let _ = puts.send("ended");
        });
        let _ = self.puts.send("started");
        self.inner.put(key, data, options).await
    }

    async fn delete(&self, key: &private_storage::ObjectKey) -> private_storage::Result<()> {
        self.inner.delete(key).await
    }

    fn list(
        &self,
        prefix: Option<&private_storage::ObjectKey>,
    ) -> futures_core::stream::BoxStream<'static, private_storage::Result<private_storage::ObjectMeta>> {
        self.inner.list(prefix)
    }
}

/// Every entry (files and folders, staging files included) below `top`, as sorted paths
/// relative to it.
pub fn entries(top: &std::path::Path) -> Vec<String> {
    fn walk(top: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(top).unwrap().display().to_string());
            if path.is_dir() {
                walk(top, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(top, top, &mut out);
    out.sort();
    out
}

/// The files among [`entries`].
pub fn files(top: &std::path::Path) -> Vec<String> {
    entries(top).into_iter().filter(|p| top.join(p).is_file()).collect()
}

/// A reqwest client builder. With the `s3` feature (as in `--all-features` runs), reqwest is
/// built without a TLS provider of its own and needs the process default installed first.
pub fn http() -> reqwest::ClientBuilder {
    #[cfg(feature = "s3")]
    private_storage::install_tls_provider();
    reqwest::Client::builder()
}

/// A PNG header (signature + IHDR + IEND) for an image of `width`×`height`.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend(width.to_be_bytes());
    bytes.extend(height.to_be_bytes());
    bytes.extend([8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89]);
    bytes.extend(b"\0\0\0\0IEND\xaeB`\x82");
    bytes
}

/// Sends `GET path` as `user` on a raw socket and reads at least `at_least` bytes of the
/// answer, then returns the socket still open (for tests of what a disconnect stops).
pub async fn get_partly(addr: SocketAddr, path: &str, user: &str, at_least: usize) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    while received < at_least {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed early");
        received += n;
    }
    socket
}

const PDF_HEAD: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";

/// A PDF of `len` bytes: the PDF magic, then letters from [`pattern`].
pub fn pdf(len: usize, seed: u32) -> Vec<u8> {
    let mut bytes = PDF_HEAD.to_vec();
    bytes.extend(pattern(len.saturating_sub(PDF_HEAD.len()), seed).iter().map(|b| b'a' + b % 26));
    bytes
}
