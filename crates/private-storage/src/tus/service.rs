//! [`TusService`]: the tus endpoint as a tower service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};

use super::http::{self as tus_http, TusRequest};
use super::{Patch, Resumable};
use crate::http::ResponseBody;
use crate::{CurrentUser, Result, SavedFile};

type Completed = dyn Fn(String, SavedFile) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync;

/// A tus 1.0.0 endpoint over a [`Resumable`], mountable anywhere (`nest_service` in axum).
///
/// Uploads belong to the authenticated [`CurrentUser`] that created them (by its id); anybody
/// else — another user, an anonymous request — is told there is no such upload. Anonymous
/// requests cannot create uploads. A completed upload is checked and stored by the policy,
/// then handed to the `completed` callback with its owner's id (to record it, say); if the
/// callback fails, the stored file is deleted and the client gets the error.
///
/// ```
/// use private_storage::tus::{LocalPartials, Resumable, TusService};
/// use private_storage::{LocalStorage, UploadPolicy};
///
/// # fn main() -> Result<(), private_storage::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(dir.path().join("files")).unwrap();
/// let storage = LocalStorage::new(dir.path().join("files"))?;
/// let partials = LocalPartials::new(dir.path().join("partial"), storage.clone())?;
/// let uploads = Resumable::new(UploadPolicy::new(storage).max_file_size(1 << 30), partials);
/// let service = TusService::new(uploads, "/uploads/", |owner, saved| async move {
///     println!("{owner} uploaded {} ({} bytes)", saved.key, saved.size);
///     Ok(())
/// });
/// let app: axum::Router = axum::Router::new().nest_service("/uploads", service);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TusService {
    uploads: Resumable<()>,
    base: Arc<str>,
    completed: Arc<Completed>,
}

impl std::fmt::Debug for TusService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TusService").field("uploads", &self.uploads).field("base", &self.base).finish()
    }
}

impl TusService {
    /// The endpoint at `base` (the URL prefix of upload locations, e.g. `/uploads/`).
    pub fn new<F, Fut>(uploads: Resumable<()>, base: impl Into<String>, completed: F) -> Self
    where
        F: Fn(String, SavedFile) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let mut base = base.into();
        if !base.ends_with('/') {
            base.push('/');
        }
        Self { uploads, base: base.into(), completed: Arc::new(move |owner, saved| Box::pin(completed(owner, saved))) }
    }

    /// Answers one request.
    pub async fn serve<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Into<bytes::Bytes>,
        B::Error: Into<crate::error::BoxError>,
    {
        match self.answer(request).await {
            Ok(response) => response,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::error!(error = %e, "tus request failed");
                }
                tus_http::error(e.status(), &e.public_message())
            }
        }
    }

    async fn answer<B>(&self, request: Request<B>) -> Result<Response<ResponseBody>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Into<bytes::Bytes>,
        B::Error: Into<crate::error::BoxError>,
    {
        let (parts, body) = request.into_parts();
        let parsed = TusRequest::parse(&parts, parts.uri.path())?;
        let owner = parts.extensions.get::<CurrentUser>().filter(|u| u.is_authenticated()).map(|u| u.id().to_owned());
        let Some(owner) = owner else {
            return match parsed {
                TusRequest::Options => Ok(tus_http::options(self.uploads.max_size())),
                TusRequest::Create { .. } => Err(super::TusError::LoginRequired.into()),
                _ => Err(super::TusError::NoSuchUpload.into()),
            };
        };
        match parsed {
            TusRequest::Options => Ok(tus_http::options(self.uploads.max_size())),
            TusRequest::Create { length, metadata, with_upload, content_length } => {
                let mut info = self.uploads.create(&owner, length, metadata).await?;
                let location = format!("{}{}", self.base, info.id);
                if with_upload {
                    let data = tus_http::body_stream(body);
                    let patch = Patch { offset: 0, length: None, checksum: None, content_length, data };
                    info = self.patch(&owner, &info.id, patch).await?;
                }
                Ok(tus_http::created(&location, &info, with_upload))
            }
            TusRequest::Head { id } => Ok(tus_http::head(&self.uploads.info(&owner, &id).await?)),
            TusRequest::Patch { id, offset, length, checksum, content_length } => {
                let patch = Patch { offset, length, checksum, content_length, data: tus_http::body_stream(body) };
                Ok(tus_http::patched(&self.patch(&owner, &id, patch).await?))
            }
            TusRequest::Delete { id } => {
                self.uploads.terminate(&owner, &id).await?;
                Ok(tus_http::terminated())
            }
        }
    }

    async fn patch(&self, owner: &str, id: &str, patch: Patch) -> Result<super::UploadInfo> {
        let patched = self.uploads.patch(&(), owner, id, patch).await?;
        if let Some(saved) = patched.saved {
            let key = saved.key.clone();
            if let Err(e) = (self.completed)(owner.to_owned(), saved).await {
                if let Err(delete) = self.uploads.policy.storage().delete(&key).await {
                    tracing::error!(%key, error = %delete, "could not delete an upload its callback refused");
                }
                return Err(e);
            }
        }
        Ok(patched.info)
    }
}

impl<B> tower_service::Service<Request<B>> for TusService
where
    B: http_body::Body + Send + 'static,
    B::Data: Into<bytes::Bytes>,
    B::Error: Into<crate::error::BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = crate::http::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.serve(request).await) })
    }
}
