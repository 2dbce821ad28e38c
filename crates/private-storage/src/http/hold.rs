//! Holds: files the rule allows that are not served yet, or no longer (a virus scan pending, a
//! file found infected, a legal hold), each answered with why and no byte.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};

use super::{ResponseBody, plain};
use crate::PrivateFile;

/// Why a file is held back: a status, a message for people, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    status: StatusCode,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
}

impl Held {
    /// `423 Locked` (RFC 4918 §11.3): the file is not ready yet (being scanned, say); the
    /// client may retry after `retry_after`.
    pub fn locked(message: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        Self { status: StatusCode::LOCKED, message: message.into(), retry_after: Some(retry_after) }
    }

    /// `403 Forbidden`: the file is kept out of reach for good (found infected, say).
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self { status: StatusCode::FORBIDDEN, message: message.into(), retry_after: None }
    }

    /// `503 Service Unavailable` with `Retry-After` (RFC 9110 §15.6.4, §10.2.3): what decides
    /// whether the file may be served is down (a scanner, a database); fail closed.
    pub fn unavailable(message: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into(), retry_after: Some(retry_after) }
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message answered.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The answer: plain text, never cached, `Retry-After` in whole seconds when set.
    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = plain(self.status, self.message.to_string());
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        response
    }
}

/// Decides whether a file the rule allowed is held back. Runs after the rule (a denied request
/// learns nothing of a hold) and before anything about the file is read or sent, in every
/// delivery mode and for every method, so a held file is never served, redirected to or
/// handed off. Implemented for async closures `|file: PrivateFile| async move { … }`
/// returning `Option<Held>`.
///
/// ```
/// use std::time::Duration;
/// use private_storage::{Held, MemoryStorage, PrivateFile, ServePrivate};
///
/// let files = ServePrivate::new(MemoryStorage::new()).hold(|file: PrivateFile| async move {
///     file.key().as_str().starts_with("incoming/")
///         .then(|| Held::locked("This file is being checked: try again in a moment.", Duration::from_secs(5)))
/// });
/// ```
#[async_trait]
pub trait FileHold: Send + Sync + 'static {
    /// `Some` to answer the request with the hold instead of the file.
    async fn held(&self, file: &PrivateFile) -> Option<Held>;
}

#[async_trait]
impl<F, Fut> FileHold for F
where
    F: Fn(PrivateFile) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Held>> + Send,
{
    async fn held(&self, file: &PrivateFile) -> Option<Held> {
        self(file.clone()).await
    }
}
