//! axum glue (feature `axum`).

use axum::response::{IntoResponse, Response};

use crate::Error;

/// Answers with [`Error::status`] and [`Error::public_message`]; server errors are logged.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, self.public_message()).into_response();
        response.headers_mut().insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        response
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
}
