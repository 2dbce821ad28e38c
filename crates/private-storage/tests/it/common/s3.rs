#![allow(dead_code, unreachable_pub)]
//! Real S3-compatible servers on loopback for the S3 tests: s3s-fs in-process (verifies SigV4,
//! ignores If-None-Match and SSE) and Garage as a child process (a production object store that
//! enforces conditional writes and SSE-C). Both are torn down when dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use private_storage::{S3Builder, S3Storage};

pub use test_support::{ACCESS_KEY, BUCKET, SECRET_KEY};

/// A running S3-compatible server.
pub struct S3Server {
    pub endpoint: String,
    pub region: &'static str,
    /// The folder the server keeps its state in.
    pub dir: tempfile::TempDir,
    /// s3s-fs only: response bodies being sent, and bytes sent in them.
    pub bodies: Option<Bodies>,
    garage: Option<test_support::GarageCluster>,
}

/// What an in-process s3s-fs is sending right now.
#[derive(Clone, Default)]
pub struct Bodies {
    open: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Bodies {
    /// Response bodies neither sent to their end nor dropped.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    fn track(&self, body: s3s::Body) -> Counted {
        self.open.fetch_add(1, Ordering::SeqCst);
        Counted { inner: Box::pin(body), bodies: self.clone(), done: false }
    }
}

/// A response body of s3s-fs that counts itself open until it ends or is dropped.
struct Counted {
    inner: Pin<Box<s3s::Body>>,
    bodies: Bodies,
    done: bool,
}

impl Counted {
    fn finish(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.bodies.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = <s3s::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bodies.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            std::task::Poll::Ready(_) => self.finish(),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl S3Server {
    /// A builder for a storage on this server's bucket with the test credentials.
    pub fn builder(&self) -> S3Builder {
        S3Storage::builder()
            .bucket(BUCKET)
            .endpoint(&self.endpoint)
            .region(self.region)
            .credentials(ACCESS_KEY, SECRET_KEY)
    }

    /// Garage only: the bucket's unfinished multipart uploads.
    pub async fn unfinished_uploads(&self) -> i64 {
        self.garage.as_ref().expect("a Garage server").nodes[0].unfinished_uploads(BUCKET).await
    }

    /// What Garage logged.
    pub fn log(&self) -> String {
        self.garage.as_ref().map(|g| g.nodes[0].log()).unwrap_or_default()
    }
}

/// s3s-fs serving a fresh folder, in this process.
pub async fn s3s_fs() -> S3Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let bodies = Bodies::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tracked = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (service, bodies) = (service.clone(), tracked.clone());
            let counted = hyper::service::service_fn(move |request| {
                let (service, bodies) = (service.clone(), bodies.clone());
                async move {
                    let response = hyper::service::Service::call(&service, request).await?;
                    Ok::<_, s3s::HttpError>(response.map(|body| bodies.track(body)))
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, counted)
                    .await;
            });
        }
    });
    S3Server { endpoint: format!("http://{addr}"), region: "us-east-1", dir, bodies: Some(bodies), garage: None }
}

/// A single-node Garage with the test key and bucket, ready to answer.
pub async fn garage() -> S3Server {
    let garage = test_support::GarageCluster::start(1).await;
    let server = S3Server {
        endpoint: garage.nodes[0].endpoint.clone(),
        region: test_support::GARAGE_REGION,
        dir: tempfile::tempdir().unwrap(),
        bodies: None,
        garage: Some(garage),
    };
    // Ready when the bucket answers a signed request.
    let probe = server.builder().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe.check().await {
            Ok(()) => return server,
            Err(e) if Instant::now() > deadline => panic!("garage did not become ready: {e}\n{}", server.log()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
