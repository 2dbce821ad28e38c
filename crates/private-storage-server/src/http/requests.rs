//! File requests over HTTP: `/r/<token>` for uploaders (a page with a form; the upload), and
//! the owners' `/requests` page and `/api/requests`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use http::{HeaderMap, HeaderValue, StatusCode};
use minijinja::context;
use private_storage::{UploadForm, human_size};

use super::Failure;
use super::api::rfc3339;
use super::auth::{Authed, client_ip};
use super::web::{csrf_of, error_page, form_user, render, user_ctx};
use crate::AppState;
use crate::db::{RequestRow, RequestUpload};
use crate::domain::{Error, NewRequest, Uploader};

fn request_ctx(request: &RequestRow) -> minijinja::Value {
    context! {
        id => request.id.clone(), title => request.title.clone(), expires => rfc3339(request.expires),
        password => request.password_hash.is_some(), max_files => request.max_files,
        max_bytes => request.max_bytes.map(|b| human_size(b as u64)), files => request.files,
        bytes => human_size(request.bytes as u64), content_types => request.content_types.clone(),
        open => request.open(),
    }
}

fn no_referrer(mut response: Response) -> Response {
    response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The uploader's page: what is asked for, the limits, the form — or the error.
fn upload_page(
    state: &AppState,
    request: Option<&RequestRow>,
    received: Option<(String, u64)>,
    error: Option<&Error>,
) -> Response {
    let status = match (error, &received) {
        (Some(e), _) => e.status(),
        (None, Some(_)) => StatusCode::CREATED,
        (None, None) => StatusCode::OK,
    };
    let context = context! {
        request => request.map(request_ctx),
        received => received.map(|(name, size)| context! { name, size => human_size(size) }),
        error => error.map(Error::message),
        max_file_size => human_size(state.config.max_file_size),
    };
    no_referrer(render(state, status, "request.html", context))
}

/// `GET /r/{token}`.
pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match state.domain.open_request(&token).await {
        Ok(request) => upload_page(&state, Some(&request), None, None),
        Err(e) => upload_page(&state, None, None, Some(&e)),
    }
}

/// `POST /r/{token}` (multipart: `name`, `email`, `password` if asked, then `file`).
pub async fn upload(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, request.headers(), &state.config.trusted_proxies);
    let bound = request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let form = <UploadForm as axum::extract::FromRequest<AppState>>::from_request(request, &state).await;
    let read = async move {
        let mut form = form?;
        let mut uploader = Uploader::default();
        while let Some(field) = form.next_field().await? {
            match field.name() {
                Some("name") => uploader.name = field.text().await?,
                Some("email") => uploader.email = field.text().await?,
                Some("password") => uploader.password = Some(field.text().await?),
                Some("file") => return Ok((uploader, field.into_upload())),
                _ => {}
            }
        }
        Err(Error::Invalid("The form has no file field.".into()))
    };
    let result = state.domain.upload_to_request(&token, client, bound, read).await;
    let request = state.domain.open_request(&token).await.ok();
    match result {
        Ok(received) => upload_page(&state, request.as_ref(), Some(received), None),
        Err(e) => upload_page(&state, request.as_ref(), None, Some(&e)),
    }
}

fn upload_json(upload: &RequestUpload) -> serde_json::Value {
    serde_json::json!({
        "file_id": upload.file_id, "name": upload.file_name, "size": upload.size,
        "uploader_name": upload.uploader_name, "uploader_email": upload.uploader_email,
        "client": upload.client, "uploaded": rfc3339(upload.created),
    })
}

fn request_json(request: &RequestRow, uploads: &[RequestUpload]) -> serde_json::Value {
    serde_json::json!({
        "id": request.id, "title": request.title, "expires": rfc3339(request.expires),
        "password": request.password_hash.is_some(), "max_files": request.max_files, "max_bytes": request.max_bytes,
        "content_types": request.content_types, "files": request.files, "bytes": request.bytes,
        "open": request.open(), "uploads": uploads.iter().map(upload_json).collect::<Vec<_>>(),
    })
}

fn authed(user: Option<Extension<Authed>>) -> Result<Authed, Failure> {
    user.map(|Extension(a)| a).ok_or(Failure(Error::Unauthenticated))
}

/// `POST /api/requests`: `201 {id, url, …}` (the URL is shown once).
pub async fn api_create(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: HeaderMap,
    Json(new): Json<NewRequest>,
) -> Result<Response, Failure> {
    let authed = authed(user)?;
    super::api::check_csrf(&authed, &headers)?;
    let (request, url) = state.domain.create_request(&authed.actor(), &new).await?;
    let mut json = request_json(&request, &[]);
    json["url"] = url.into();
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /api/requests`: the user's file requests (staff: everyone's) with their uploads.
pub async fn api_list(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
) -> Result<Json<serde_json::Value>, Failure> {
    let authed = authed(user)?;
    let requests = state.domain.requests_of(&authed.actor()).await?;
    let requests: Vec<_> = requests.iter().map(|(r, u)| request_json(r, u)).collect();
    Ok(Json(serde_json::json!({ "requests": requests })))
}

/// `DELETE /api/requests/{id}`: closes the request.
pub async fn api_close(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let authed = authed(user)?;
    super::api::check_csrf(&authed, &headers)?;
    state.domain.close_request(&authed.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The owner's page: every request with its uploads, and the form for a new one.
async fn owner_page(state: &AppState, authed: &Authed, new_url: Option<String>, error: Option<Error>) -> Response {
    match state.domain.requests_of(&authed.actor()).await {
        Ok(requests) => {
            let requests: Vec<_> = requests
                .iter()
                .map(|(request, uploads)| {
                    let uploads: Vec<_> = uploads
                        .iter()
                        .map(|u| {
                            context! {
                                file_id => u.file_id.clone(), name => u.file_name.clone(), size => human_size(u.size as u64),
                                uploader_name => u.uploader_name.clone(), uploader_email => u.uploader_email.clone(),
                                client => u.client.clone(), uploaded => rfc3339(u.created),
                            }
                        })
                        .collect();
                    context! { request => request_ctx(request), uploads }
                })
                .collect();
            let status = error.as_ref().map_or(StatusCode::OK, Error::status);
            let context = context! {
                user => user_ctx(authed), csrf => csrf_of(Some(authed)), requests, new_url,
                error => error.map(|e| e.message()),
            };
            render(state, status, "requests.html", context)
        }
        Err(e) => error_page(state, Some(authed), &e),
    }
}

/// `GET /requests`.
pub async fn owner(State(state): State<AppState>, user: Option<Extension<Authed>>) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login?next=/requests").into_response() };
    owner_page(&state, &authed, None, None).await
}

/// The new-request form.
#[derive(Debug, serde::Deserialize)]
pub struct RequestForm {
    csrf: String,
    title: String,
    expires: Option<String>,
    password: Option<String>,
    max_files: Option<String>,
    max_bytes: Option<String>,
    content_types: Option<String>,
}

/// `POST /requests`: creates a request and shows its URL once.
pub async fn create(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Form(form): Form<RequestForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let max_files = match form.max_files.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(n) => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                let e = Error::Invalid("max_files: a number, or empty for no limit.".into());
                return owner_page(&state, &authed, None, Some(e)).await;
            }
        },
        None => None,
    };
    let new = NewRequest {
        title: form.title,
        expires: form.expires,
        password: form.password,
        max_files,
        max_bytes: form.max_bytes,
        content_types: form.content_types.unwrap_or_default().split(',').map(str::to_owned).collect(),
    };
    match state.domain.create_request(&authed.actor(), &new).await {
        Ok((_, url)) => owner_page(&state, &authed, Some(url), None).await,
        Err(e) => owner_page(&state, &authed, None, Some(e)).await,
    }
}

/// The close form.
#[derive(Debug, serde::Deserialize)]
pub struct CloseForm {
    csrf: String,
}

/// `POST /requests/{id}/close`.
pub async fn close(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(id): Path<String>,
    Form(form): Form<CloseForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    match state.domain.close_request(&authed.actor(), &id).await {
        Ok(()) => Redirect::to("/requests").into_response(),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}
