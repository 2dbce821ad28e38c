//! The response body of the file service.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Frame, SizeHint};

use super::sendfile::SendfileBody;
use crate::error::BoxError;
use crate::storage::ByteStream;

/// The body of a response from [`ServePrivate`](crate::ServePrivate): empty, bytes in memory,
/// or a stream read from storage in bounded chunks.
///
/// A stream that fails mid-way ends the body with an error, so the server aborts the
/// connection: a client sees a broken transfer, never a clean but short one.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream { stream: ByteStream, remaining: Option<u64> },
    Sendfile(SendfileBody),
}

impl ResponseBody {
    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Full(None) }
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self { kind: Kind::Full((!bytes.is_empty()).then_some(bytes)) }
    }

    /// A streamed body of `len` bytes, if known.
    pub fn stream(stream: ByteStream, len: Option<u64>) -> Self {
        Self { kind: Kind::Stream { stream, remaining: len } }
    }

    /// A local file's range sent by the kernel through the connection's `sendfile`.
    pub(crate) fn sendfile(body: SendfileBody) -> Self {
        Self { kind: Kind::Sendfile(body) }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(b) => f.debug_tuple("Full").field(&b.as_ref().map_or(0, Bytes::len)).finish(),
            Kind::Stream { remaining, .. } => f.debug_struct("Stream").field("remaining", remaining).finish(),
            Kind::Sendfile(body) => f.debug_struct("Sendfile").field("remaining", &body.remaining()).finish(),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<String> for ResponseBody {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for ResponseBody {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream { stream, remaining } => match Pin::new(stream).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(chunk.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Sendfile(body) => body.poll_next(cx).map(|next| next.map(|r| r.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream { .. } => false,
            Kind::Sendfile(body) => body.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { remaining: Some(n), .. } => SizeHint::with_exact(*n),
            Kind::Stream { remaining: None, .. } => SizeHint::default(),
            Kind::Sendfile(body) => SizeHint::with_exact(body.remaining()),
        }
    }
}
