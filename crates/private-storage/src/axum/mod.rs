//! axum glue (feature `axum`): `IntoResponse` for [`Error`] and the [`UploadForm`] extractor.

mod framing;

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_core::Stream;
use futures_util::{StreamExt, TryStreamExt};

use crate::{Error, Upload};
pub use framing::MAX_PART_HEADERS;
use framing::{Framing, FramingError};

/// Answers with [`Error::status`] and [`Error::public_message`]; server errors are logged.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.response().map(axum::body::Body::new)
    }
}

/// A `multipart/form-data` body whose file fields stream into an
/// [`UploadPolicy`](crate::UploadPolicy) with bounded memory.
///
/// Use it instead of axum's `Multipart`: the multipart parser underneath reads whatever the
/// body has ready into its buffer, so a fast client could fill memory ahead of a slower
/// storage. `UploadForm` paces the body (at most 64 KiB read ahead), so memory stays bounded
/// by the chunk size whatever the upload's size, and a size limit cuts the upload off after
/// little more than the limit. Other form fields are read as usual, within limits: at most
/// [`MAX_FORM_FIELDS`] fields, text values of at most [`MAX_TEXT_FIELD`] bytes, and a
/// preamble and per-part header blocks of at most [`MAX_PART_HEADERS`] bytes (the parser
/// holds those whole).
///
/// axum limits request bodies to 2 MB by default: disable or raise the limit on upload routes
/// (`DefaultBodyLimit::disable()`) and let the policy's `max_file_size` do the work.
///
/// ```
/// use axum::extract::State;
/// use private_storage::{Error, UploadForm, UploadPolicy};
///
/// async fn upload(State(policy): State<UploadPolicy>, mut form: UploadForm) -> Result<String, Error> {
///     let mut title = String::new();
///     while let Some(field) = form.next_field().await? {
///         match field.name() {
///             Some("title") => title = field.text().await?,
///             Some("file") => {
///                 let saved = policy.save(&(), field.into_upload()).await?;
///                 return Ok(format!("{title}: {}", saved.key));
///             }
///             _ => {}
///         }
///     }
///     Err(Error::BadUpload { message: "the form has no file field".into() })
/// }
/// ```
pub struct UploadForm {
    multipart: multer::Multipart<'static>,
    fields: usize,
}

/// The most fields an [`UploadForm`] reads; a form with more is refused.
pub const MAX_FORM_FIELDS: usize = 64;

/// The longest value [`FormField::text`] reads; a longer one is refused.
pub const MAX_TEXT_FIELD: usize = 64 * 1024;

impl std::fmt::Debug for UploadForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadForm").finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequest<S> for UploadForm {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Error> {
        let content_type =
            request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| bad("expected a multipart/form-data body with a boundary"))?;
        let mut framing = Framing::new(&boundary);
        let body = Paced::new(request.into_body().into_data_stream()).map(move |chunk| {
            let chunk = chunk?;
            framing.feed(&chunk)?;
            Ok::<_, BoxError>(chunk)
        });
        Ok(Self { multipart: multer::Multipart::new(body, boundary), fields: 0 })
    }
}

impl UploadForm {
    /// The next field of the form, or `None` at its end.
    ///
    /// # Errors
    /// [`Error::BadUpload`] for a malformed body, a form of more than [`MAX_FORM_FIELDS`]
    /// fields, or a preamble or part headers longer than [`MAX_PART_HEADERS`].
    pub async fn next_field(&mut self) -> Result<Option<FormField>, Error> {
        let field = self.multipart.next_field().await.map_err(malformed)?;
        if field.is_some() {
            self.fields += 1;
            if self.fields > MAX_FORM_FIELDS {
                return Err(bad(&format!("the form has more than {MAX_FORM_FIELDS} fields")));
            }
        }
        Ok(field.map(FormField))
    }
}

/// One field of an [`UploadForm`].
pub struct FormField(multer::Field<'static>);

impl std::fmt::Debug for FormField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormField").field("name", &self.name()).field("file_name", &self.file_name()).finish()
    }
}

impl FormField {
    /// The field's name in the form.
    pub fn name(&self) -> Option<&str> {
        self.0.name()
    }

    /// The file name the client sent, for file fields.
    pub fn file_name(&self) -> Option<&str> {
        self.0.file_name()
    }

    /// The content type the client declared (never trusted by the upload policy).
    pub fn content_type(&self) -> Option<&str> {
        self.0.content_type().map(|m| m.essence_str())
    }

    /// The field's value as text (for the small, non-file fields of a form), read up to
    /// [`MAX_TEXT_FIELD`] bytes.
    ///
    /// # Errors
    /// [`Error::BadUpload`] for a malformed body, a longer value, or text that is not UTF-8.
    pub async fn text(mut self) -> Result<String, Error> {
        let mut value = Vec::new();
        while let Some(chunk) = self.0.chunk().await.map_err(malformed)? {
            if value.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err(bad(&format!("a form field is longer than {} KiB", MAX_TEXT_FIELD / 1024)));
            }
            value.extend_from_slice(&chunk);
        }
        String::from_utf8(value).map_err(|_| bad("a form field is not UTF-8 text"))
    }

    /// The field as an [`Upload`]: its file name (`file` if it has none), its declared type and
    /// its bytes as they arrive.
    pub fn into_upload(self) -> Upload<'static> {
        let filename = self.file_name().unwrap_or("file").to_owned();
        let declared = self.content_type().map(str::to_owned);
        let data = self.0.map_err(malformed).boxed();
        let upload = Upload::new(filename, data);
        match declared {
            Some(t) => upload.declared_type(t),
            None => upload,
        }
    }
}

fn bad(message: &str) -> Error {
    Error::BadUpload { message: message.to_owned() }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A parser error as a bad upload, naming the limit when [`Framing`] cut the body.
fn malformed(error: multer::Error) -> Error {
    match &error {
        multer::Error::StreamReadFailed(inner) if inner.is::<FramingError>() => bad(&inner.to_string()),
        _ => bad(&error.to_string()),
    }
}

/// Reads ahead at most this much before letting the consumer catch up.
const READ_AHEAD: usize = 64 * 1024;

/// A body stream that yields (`Pending`, waking itself at once) after [`READ_AHEAD`] bytes were
/// ready in a row, so a consumer that reads "whatever is ready" cannot buffer without bound.
struct Paced<S> {
    inner: S,
    since_pending: usize,
}

impl<S> Paced<S> {
    fn new(inner: S) -> Self {
        Self { inner, since_pending: 0 }
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.since_pending >= READ_AHEAD {
            self.since_pending = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => self.since_pending += chunk.len(),
            Poll::Pending => self.since_pending = 0,
            Poll::Ready(_) => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_with_their_status_and_a_safe_message() {
        let response = Error::storage("local", "disk on fire").into_response();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }

    #[tokio::test]
    async fn a_paced_body_yields_after_its_read_ahead() {
        let always_ready =
            futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 40 * 1024]))));
        let mut paced = Paced::new(always_ready);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ready_in_a_row = 0;
        loop {
            match Pin::new(&mut paced).poll_next(&mut cx) {
                Poll::Ready(Some(_)) => ready_in_a_row += 1,
                Poll::Pending => break,
                Poll::Ready(None) => panic!("never paused"),
            }
        }
        assert_eq!(ready_in_a_row, 2, "two 40 KiB chunks pass the 64 KiB read-ahead, then it pauses");
        assert!(
            matches!(Pin::new(&mut paced).poll_next(&mut cx), Poll::Ready(Some(_))),
            "and goes on when polled again"
        );
    }
}
