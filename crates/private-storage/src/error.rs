//! The crate's one error type and its one HTTP mapping.

use http::StatusCode;

use crate::key::{KeyError, ObjectKey};
use crate::units::human_size;

/// A specialised `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error from a backend or a stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// [`Error::status`] is the one place that maps an error to an HTTP status: client errors
/// carry a message that is safe to show; server errors are logged and answered with a
/// generic body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key failed validation.
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),

    /// No object exists under this key. Directories, symlinks and staging files count as
    /// missing; a file the process may not read is a [`Error::Storage`] error (a misconfiguration
    /// to log, not a client error).
    #[error("no object at {key}")]
    NotFound {
        /// The key that was looked up.
        key: ObjectKey,
    },

    /// A write in [`PutMode::Create`](crate::PutMode::Create) found an existing object.
    #[error("an object already exists at {key}")]
    AlreadyExists {
        /// The key that was written.
        key: ObjectKey,
    },

    /// A read precondition (`if_match`) did not hold: the object changed.
    #[error("the object at {key} changed (precondition failed)")]
    PreconditionFailed {
        /// The key that was read.
        key: ObjectKey,
    },

    /// A read asked for bytes outside the object.
    #[error("range {start}..{end} lies outside the object of {size} bytes")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's size.
        size: u64,
    },

    /// An upload is larger than the policy allows.
    #[error("The file may not be larger than {}.", human_size(*limit))]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },

    /// An upload's content is not an allowed type, or is not what its name or declared type
    /// says it is.
    #[error("File type not supported: the content is {found}; {expected}.")]
    UnsupportedType {
        /// The type found by looking at the bytes.
        found: String,
        /// What was expected (the allowed types, or the type the name or the client claimed).
        expected: String,
    },

    /// An uploaded image has more pixels than the policy allows (decompression-bomb guard).
    #[error("The image may not be larger than {max_width}×{max_height} pixels; it is {width}×{height}.")]
    ImageTooLarge {
        /// The image's width.
        width: u64,
        /// The image's height.
        height: u64,
        /// The widest allowed.
        max_width: u64,
        /// The tallest allowed.
        max_height: u64,
    },

    /// An upload request is malformed (a broken multipart body, a missing file field...).
    #[error("Bad upload: {message}")]
    BadUpload {
        /// What is wrong.
        message: String,
    },

    /// The storage has no room left (a full disk, a quota).
    #[error("Not enough storage space for this file.")]
    StorageFull,

    /// A setting is missing or wrong. Raised when things are built, never per request.
    #[error("configuration: {setting}: {message}")]
    Config {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },

    /// A stored object failed its integrity check: an encrypted object (feature `encryption`)
    /// that was changed, cut, reordered or moved, or whose data key no configured key opens.
    #[error("the object at {key} failed its integrity check: {message}")]
    Integrity {
        /// The object.
        key: ObjectKey,
        /// What failed (never key material).
        message: String,
    },

    /// A resumable upload's protocol error (feature `tus`).
    #[cfg(feature = "tus")]
    #[error(transparent)]
    Tus(#[from] crate::tus::TusError),

    /// The backend failed (I/O, network, an injected fault...).
    #[error("storage error in {backend}: {source}")]
    Storage {
        /// Which backend.
        backend: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The HTTP status this error is answered with.
    ///
    /// ```
    /// use private_storage::{Error, ObjectKey};
    /// use http::StatusCode;
    ///
    /// let key = ObjectKey::new("a.txt")?;
    /// assert_eq!(Error::NotFound { key }.status(), StatusCode::NOT_FOUND);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidKey(_) | Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::TooLarge { .. } | Error::ImageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::BadUpload { .. } => StatusCode::BAD_REQUEST,
            Error::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Error::Config { .. } | Error::Storage { .. } | Error::Integrity { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            #[cfg(feature = "tus")]
            Error::Tus(e) => e.status(),
        }
    }

    /// The message a client may see: the error itself for client errors, a generic
    /// sentence for server errors (whose cause is logged, not sent).
    pub fn public_message(&self) -> String {
        if matches!(self, Error::StorageFull) {
            self.to_string()
        } else if self.status().is_server_error() {
            "Internal server error.".to_owned()
        } else {
            match self {
                Error::InvalidKey(_) | Error::NotFound { .. } => "Not found.".to_owned(),
                other => other.to_string(),
            }
        }
    }

    /// The one HTTP answer to this error: [`status`](Self::status) and
    /// [`public_message`](Self::public_message) as plain text with the safe headers every answer
    /// carries; a server error is logged with its cause, which the client never sees.
    pub(crate) fn response(&self) -> http::Response<crate::http::ResponseBody> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        crate::http::plain(status, self.public_message())
    }

    pub(crate) fn storage(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Storage { backend, source: source.into() }
    }

    pub(crate) fn config(setting: &'static str, message: impl Into<String>) -> Self {
        Error::Config { setting, message: message.into() }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let err = Error::storage("local", std::io::Error::other("disk on fire at /srv/x"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.public_message().contains("/srv/x"));
    }

    #[test]
    fn upload_errors_carry_the_reference_messages_and_statuses() {
        let too_large = Error::TooLarge { limit: 1024 * 1024 };
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_large.public_message(), "The file may not be larger than 1.0 MB.");
        let spoofed = Error::UnsupportedType {
            found: "application/x-msdownload".into(),
            expected: "allowed: application/pdf".into(),
        };
        assert_eq!(spoofed.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(spoofed.public_message().starts_with("File type not supported"));
        assert_eq!(Error::BadUpload { message: "x".into() }.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn not_found_does_not_echo_the_key() {
        let err = Error::NotFound { key: ObjectKey::new("users/6/secret.txt").unwrap() };
        assert_eq!(err.public_message(), "Not found.");
    }
}
