//! Downloads by record: the reference's `PrivateStorageDetailView`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::request::Parts;
use http::{Request, Response, StatusCode};

use super::{ContentDisposition, ResponseBody, ServePrivate, plain};
use crate::{ObjectKey, PrivateFile, Result};

/// Where records come from, for [`ServeRecords`].
///
/// `find` is the reference's query set: it looks the record up **within the scope this request
/// may reach** (for example, only the user's own records, or all for staff). A record outside
/// the scope is simply not found, and is answered exactly like a denial.
#[async_trait]
pub trait RecordSource: Send + Sync + 'static {
    /// The application's record type; the access rule sees it as [`PrivateFile::parent`].
    type Record: Send + Sync + 'static;

    /// The record with this id (or slug) in the request's scope, if any.
    async fn find(&self, request: &Parts, id: &str) -> Result<Option<Self::Record>>;

    /// The key of the record's file, or `None` when the record has no file.
    fn file_key(&self, record: &Self::Record) -> Option<ObjectKey>;

    /// Whether this request may see every record (staff, say): then an unknown id is answered
    /// `404`, as there is nothing to hide from someone who could read any record. Everyone else
    /// gets the denial for an unknown id, so ids cannot be enumerated. Defaults to `false`.
    fn sees_every_record(&self, request: &Parts) -> bool {
        let _ = request;
        false
    }
}

/// Serves the file a record holds, found by the record's id: same rule, HTTP semantics and
/// delivery modes as the [`ServePrivate`] it is built with (whose rule can use
/// [`PrivateFile::parent`] to see the record).
///
/// - An id that is unknown, or outside the request's scope, gets **exactly the answer a denied
///   request gets**: ids cannot be enumerated — unless the request may see every record
///   ([`RecordSource::sees_every_record`]), which gets `404`.
/// - A record without a file gets `404`, before the rule runs (there is no file to show it):
///   a record in the request's scope with an empty file is visible as such, so keep the scope
///   as tight as the rule.
///
/// Use it from a handler with [`ServeRecords::serve`], or mount it with `nest_service`, where
/// the first path segment is the id (`/files/42` → `42`).
///
/// ```
/// use async_trait::async_trait;
/// use private_storage::{MemoryStorage, ObjectKey, PrivateFile, RecordSource, ServePrivate, ServeRecords};
///
/// struct Document { owner: String, file: Option<ObjectKey> }
/// struct Documents; // e.g. a database pool
///
/// #[async_trait]
/// impl RecordSource for Documents {
///     type Record = Document;
///     async fn find(&self, _request: &http::request::Parts, id: &str) -> private_storage::Result<Option<Document>> {
///         Ok((id == "1").then(|| Document { owner: "ada".into(), file: ObjectKey::new("docs/1.pdf").ok() }))
///     }
///     fn file_key(&self, doc: &Document) -> Option<ObjectKey> {
///         doc.file.clone()
///     }
/// }
///
/// let owner_or_staff = |file: PrivateFile| async move {
///     let owner = file.parent::<Document>().map(|d| d.owner.as_str());
///     file.user().is_some_and(|u| u.is_staff() || Some(u.id()) == owner)
/// };
/// let downloads = ServeRecords::new(Documents, ServePrivate::new(MemoryStorage::new()).rule(owner_or_staff));
/// let app: axum::Router = axum::Router::new().nest_service("/documents", downloads);
/// ```
pub struct ServeRecords<S: RecordSource> {
    source: Arc<S>,
    files: ServePrivate,
    disposition: Option<Arc<Disposition<S::Record>>>,
}

/// Chooses the `Content-Disposition` of a record's file for a request.
type Disposition<R> = dyn Fn(&Parts, &R) -> Option<ContentDisposition> + Send + Sync;

impl<S: RecordSource> Clone for ServeRecords<S> {
    fn clone(&self) -> Self {
        Self { source: Arc::clone(&self.source), files: self.files.clone(), disposition: self.disposition.clone() }
    }
}

impl<S: RecordSource> fmt::Debug for ServeRecords<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeRecords").field("files", &self.files).finish_non_exhaustive()
    }
}

impl<S: RecordSource> ServeRecords<S> {
    /// Serves the files of `source`'s records through `files` (its storage, rule, denial
    /// policy, delivery and headers).
    pub fn new(source: S, files: ServePrivate) -> Self {
        Self { source: Arc::new(source), files, disposition: None }
    }

    /// Sets the `Content-Disposition` of a record's file from the request and the record —
    /// typically the record's own file name, which the key may not carry (`report-x7Kq.pdf` for
    /// `report.pdf`). It is computed with every other header, so every delivery mode sends the
    /// same one, and active content stays an attachment whatever it says. Defaults to that of
    /// the `ServePrivate` it was built with.
    pub fn disposition<F>(mut self, choose: F) -> Self
    where
        F: Fn(&Parts, &S::Record) -> Option<ContentDisposition> + Send + Sync + 'static,
    {
        self.disposition = Some(Arc::new(choose));
        self
    }

    /// Serves the file of the record `id` to `request`.
    pub async fn serve<B>(&self, id: &str, request: Request<B>) -> Response<ResponseBody> {
        let (parts, _body) = request.into_parts();
        let record = match self.source.find(&parts, id).await {
            Ok(Some(record)) => record,
            Ok(None) if self.source.sees_every_record(&parts) => return plain(StatusCode::NOT_FOUND, "Not found."),
            Ok(None) => return self.files.deny(&parts),
            Err(e) => {
                tracing::error!(id, "record lookup failed");
                return e.response();
            }
        };
        let Some(key) = self.source.file_key(&record) else {
            return plain(StatusCode::NOT_FOUND, "Not found.");
        };
        let mut parts = parts;
        if let Some(disposition) = self.disposition.as_ref().and_then(|choose| choose(&parts, &record)) {
            parts.extensions.insert(disposition);
        }
        let file = PrivateFile::for_service(
            parts,
            Arc::clone(self.files.storage()),
            key,
            Some(Arc::new(record)),
            self.files.inline_max(),
        );
        self.files.serve_file(file).await
    }
}

super::mounted_service!([S: RecordSource] ServeRecords<S>);

impl<S: RecordSource> ServeRecords<S> {
    /// Mounted: the first path segment is the id.
    async fn serve_mounted<B>(&self, request: Request<B>) -> Response<ResponseBody> {
        self.serve(&super::first_segment(&request), request).await
    }
}
