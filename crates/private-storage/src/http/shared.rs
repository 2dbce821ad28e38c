//! Serving share links: verify the token, then the same pipeline as every download.

use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};

use super::{ResponseBody, ServePrivate, plain};
use crate::share::{LinkUsed, Refusal, ShareLinks, ShareTarget};
use crate::{CurrentUser, ObjectKey, PrivateFile, Result};

/// Finds the key of a record's file for links to records.
type RecordKeys = dyn Fn(String) -> BoxFuture<'static, Result<Option<ObjectKey>>> + Send + Sync;

/// The authentic link a [`ServeShared`] response answered (served, expired, revoked or
/// refused), in the response's extensions: for an application's own audit trail or metrics,
/// which see the answer. A forged or malformed token has none.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServedLink {
    /// The link's id.
    pub link_id: String,
    /// What it opens.
    pub target: ShareTarget,
}

/// Serves [share links](crate::ShareLinks): mount it where the links point (`/s/`), and the
/// path's first segment is the token (anything after it, such as a file name, is ignored).
///
/// A valid link is served by the [`ServePrivate`] it is built with — same headers, Range,
/// 304, HEAD, RFC 6266 disposition (the link's own, if it carries one) and delivery mode
/// (stream, nginx, Apache, custom) — **without** that service's access rule: the link is the
/// authorization. An expired link gets `410 Gone`; a tampered, revoked, retired or wrongly-used
/// link gets the service's denial and not a byte. Every use is audited.
///
/// ```
/// use private_storage::{MemoryRevocations, MemoryStorage, ServePrivate, ServeShared, ShareKeys, ShareLinks};
///
/// let keys = ShareKeys::new("k1", b"a secret of at least thirty-two bytes!")?;
/// let links = ShareLinks::new(keys, MemoryRevocations::new()).base_url("/s/");
/// let files = ServePrivate::new(MemoryStorage::new());
/// let app: axum::Router = axum::Router::new().nest_service("/s", ServeShared::new(links, files));
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Clone)]
pub struct ServeShared {
    links: Arc<ShareLinks>,
    files: ServePrivate,
    records: Option<Arc<RecordKeys>>,
}

impl fmt::Debug for ServeShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeShared").field("links", &self.links).field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServeShared {
    /// Serves the links of `links` with the files, headers and delivery of `files`.
    pub fn new(links: ShareLinks, files: ServePrivate) -> Self {
        Self { links: Arc::new(links), files, records: None }
    }

    /// Resolves links to records: `lookup(id)` gives the key of the record's file (`None`
    /// when the record or its file is gone). Defaults to none: links to records are refused.
    pub fn records<F, Fut>(mut self, lookup: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<ObjectKey>>> + Send + 'static,
    {
        self.records = Some(Arc::new(move |id| Box::pin(lookup(id))));
        self
    }

    /// Serves the link `token` to `request`.
    pub async fn serve<B>(&self, token: &str, request: Request<B>) -> Response<ResponseBody> {
        let (parts, _body) = request.into_parts();
        let range = parts.headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let user = parts.extensions.get::<CurrentUser>().cloned();
        let verified = self.links.verify(token, user.as_deref()).await;
        let (mut response, link_id, target, outcome) = match verified {
            Ok(link) => {
                let key = match &link.target {
                    ShareTarget::Key(key) => Some(key.clone()),
                    ShareTarget::Record(id) => self.record_key(id).await,
                };
                match key {
                    Some(key) => {
                        let mut parts = parts;
                        if let Some(disposition) = link.disposition.clone() {
                            parts.extensions.insert(disposition);
                        }
                        parts.extensions.insert(super::delivery::LinkDeadline(link.expires));
                        let file = PrivateFile::for_service(
                            parts,
                            Arc::clone(self.files.storage()),
                            key,
                            None,
                            self.files.inline_max(),
                        );
                        (self.files.respond(file).await, Some(link.link_id), Some(link.target), "served")
                    }
                    None => {
                        (plain(StatusCode::NOT_FOUND, "Not found."), Some(link.link_id), Some(link.target), "missing")
                    }
                }
            }
            Err((Refusal::Expired, link)) => {
                let response = plain(StatusCode::GONE, "This link has expired.");
                (response, link.as_ref().map(|l| l.link_id.clone()), link.map(|l| l.target), "expired")
            }
            Err((refusal, link)) => {
                tracing::debug!(?refusal, "share link refused");
                (self.files.deny(&parts), link.as_ref().map(|l| l.link_id.clone()), link.map(|l| l.target), "refused")
            }
        };
        let bytes = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let (Some(link_id), Some(target)) = (&link_id, &target) {
            response.extensions_mut().insert(ServedLink { link_id: link_id.clone(), target: target.clone() });
        }
        self.links.audit_use(&LinkUsed { link_id, target, status: response.status().as_u16(), bytes, range, outcome });
        // A link is a capability: keep it out of Referer headers sent from the file.
        response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        response
    }

    async fn record_key(&self, id: &str) -> Option<ObjectKey> {
        let lookup = self.records.as_ref()?;
        match lookup(id.to_owned()).await {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(id, error = %e, "record lookup for a share link failed");
                None
            }
        }
    }
}

super::mounted_service!([] ServeShared);

impl ServeShared {
    /// Mounted: the first path segment is the token (anything after it is ignored).
    async fn serve_mounted<B>(&self, request: Request<B>) -> Response<ResponseBody> {
        self.serve(&super::first_segment(&request), request).await
    }
}
