//! The resumable-upload front-end: tus 1.0.0 at `/api/uploads` (creation) and
//! `/api/uploads/{id}` (`HEAD`, `PATCH`, `DELETE`), for bearer tokens and for sessions (whose
//! requests that change something carry `X-CSRF-Token`). Reads requests with the library's
//! [`TusRequest`], calls the domain, and answers with the library's tus responses; a domain
//! error is mapped here, once, to a tus answer (status, message, `Tus-Resumable`).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use private_storage::tus::Patch;
use private_storage::tus::http::{self as tus, TusRequest};

use super::api::csrf_header;
use super::auth::Authed;
use crate::AppState;
use crate::db::FileRow;
use crate::domain::Error;

/// Where uploads live: `Location` is this and the id.
const ENDPOINT: &str = "/api/uploads";

/// `POST`/`OPTIONS /api/uploads`.
pub async fn endpoint(State(state): State<AppState>, request: Request) -> Response {
    handle(&state, "", request).await
}

/// `HEAD`/`PATCH`/`DELETE`/`OPTIONS /api/uploads/{id}`.
pub async fn upload(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> Response {
    handle(&state, &format!("/{id}"), request).await
}

async fn handle(state: &AppState, path: &str, request: Request) -> Response {
    let answer = async {
        let (parts, body) = request.into_parts();
        let parsed = TusRequest::parse(&parts, path).map_err(private_storage::Error::from)?;
        let domain = &state.domain;
        let options = || tus::options(Some(domain.resumable_max_size()));
        if let TusRequest::Options = parsed {
            // Clients ask before they log in.
            return Ok(options());
        }
        let authed = parts.extensions.get::<Authed>().ok_or(Error::Unauthenticated)?;
        let changes = !matches!(parsed, TusRequest::Head { .. });
        if changes && !authed.csrf_ok(csrf_header(&parts.headers)) {
            return Err(Error::Forbidden("Missing or wrong X-CSRF-Token.".into()));
        }
        let actor = authed.actor();
        let body = || tus::body_stream(body);
        match parsed {
            TusRequest::Options => Ok(options()),
            TusRequest::Create { length, metadata, with_upload, content_length } => {
                let mut info = domain.create_upload(&actor, length, metadata).await?;
                let mut record = None;
                if with_upload {
                    let patch = Patch { offset: 0, length: None, checksum: None, content_length, data: body() };
                    (info, record) = domain.append_upload(&actor, &info.id, patch).await?;
                }
                let response = tus::created(&format!("{ENDPOINT}/{}", info.id), &info, with_upload);
                Ok(with_file_location(response, record))
            }
            TusRequest::Head { id } => Ok(tus::head(&domain.upload_state(&actor, &id).await?)),
            TusRequest::Patch { id, offset, length, content_length, checksum } => {
                let patch = Patch { offset, length, checksum, content_length, data: body() };
                let (info, record) = domain.append_upload(&actor, &id, patch).await?;
                Ok(with_file_location(tus::patched(&info), record))
            }
            TusRequest::Delete { id } => {
                domain.end_upload(&actor, &id).await?;
                Ok(tus::terminated())
            }
        }
    };
    match answer.await {
        Ok(response) => response.map(Body::new),
        Err(e) => failure(&e),
    }
}

/// Where the finished file is, on the answer to the request that finished it (an addition of
/// ours: tus has no such header).
fn with_file_location<B>(mut response: http::Response<B>, record: Option<FileRow>) -> http::Response<B> {
    if let Some(record) = record
        && let Ok(value) = HeaderValue::from_str(&format!("/api/files/{}", record.id))
    {
        response.headers_mut().insert("x-file-location", value);
    }
    response
}

/// A domain error as a tus answer: its status and message with the protocol's headers.
fn failure(error: &Error) -> Response {
    let status = error.status();
    if status.is_server_error() {
        tracing::error!(error = %error, "resumable upload failed");
    }
    let mut response = tus::error(status, &error.message()).map(Body::new);
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response.into_response()
}
