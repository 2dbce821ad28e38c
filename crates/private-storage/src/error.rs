//! The crate's one error type and its one HTTP mapping.

use http::StatusCode;

use crate::key::{KeyError, ObjectKey};

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

    /// A setting is missing or wrong. Raised when things are built, never per request.
    #[error("configuration: {setting}: {message}")]
    Config {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },

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
            Error::Config { .. } | Error::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see: the error itself for client errors, a generic
    /// sentence for server errors (whose cause is logged, not sent).
    pub fn public_message(&self) -> String {
        if self.status().is_server_error() {
            "Internal server error.".to_owned()
        } else {
            match self {
                Error::InvalidKey(_) | Error::NotFound { .. } => "Not found.".to_owned(),
                other => other.to_string(),
            }
        }
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
    fn not_found_does_not_echo_the_key() {
        let err = Error::NotFound { key: ObjectKey::new("users/6/secret.txt").unwrap() };
        assert_eq!(err.public_message(), "Not found.");
    }
}
