//! The JSON API (`/api/files`), readiness and metrics, and the upload path shared with the
//! HTML form.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use private_storage::{ContentDisposition, Share, UploadForm};
use serde::{Deserialize, Serialize};

use crate::auth::Authed;
use crate::db::{FileRow, LinkRow, now};
use crate::{AppState, Owner};

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// A refused API call: the status and a message that is safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl Refused {
    /// A refusal.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn database(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable.")
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found.")
    }
}

impl From<private_storage::Error> for Refused {
    fn from(e: private_storage::Error) -> Self {
        let status = e.status();
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Self::new(status, e.public_message())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        json_error(self.status, &self.message)
    }
}

fn authed(user: Option<axum::Extension<Authed>>) -> Result<Authed, Refused> {
    user.map(|u| u.0).ok_or_else(|| Refused::new(StatusCode::UNAUTHORIZED, "Log in or send an API token."))
}

/// A file as the API shows it.
#[derive(Debug, Serialize)]
pub struct FileJson {
    id: String,
    name: String,
    size: i64,
    content_type: String,
    sha256: String,
    url: String,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// RFC 3339 UTC time of a unix timestamp.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl FileJson {
    fn new(file: &FileRow, owner: Option<String>) -> Self {
        Self {
            id: file.id.clone(),
            name: file.name.clone(),
            size: file.size,
            content_type: file.content_type.clone(),
            sha256: file.sha256.clone(),
            url: format!("/files/{}/download", file.id),
            created: rfc3339(file.created),
            owner,
        }
    }
}

/// Holds one of a user's upload slots until dropped.
struct UploadSlot {
    state: AppState,
    user: String,
}

impl UploadSlot {
    fn take(state: &AppState, user: &str) -> Option<Self> {
        let mut uploads = state.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let running = uploads.entry(user.to_owned()).or_default();
        if *running >= state.config.max_uploads_per_user {
            return None;
        }
        *running += 1;
        Some(Self { state: state.clone(), user: user.to_owned() })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut uploads = self.state.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = uploads.get_mut(&self.user) {
            *running -= 1;
            if *running == 0 {
                uploads.remove(&self.user);
            }
        }
    }
}

fn reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        413 => "too_large",
        415 => "unsupported_type",
        400 => "bad_upload",
        403 => "csrf",
        429 => "too_many_uploads",
        507 => "storage_full",
        _ => "error",
    }
}

/// Reads a multipart form whose `file` field goes through the upload policy, and records the
/// file. With a cookie session the CSRF token must come first: as the `X-CSRF-Token` header or
/// a `csrf` field before the file. Nothing is stored when anything fails.
pub async fn save_upload(
    state: &AppState,
    authed: &Authed,
    headers: &HeaderMap,
    mut form: UploadForm,
) -> Result<FileRow, Refused> {
    let result = async {
        let _slot = UploadSlot::take(state, &authed.user.id).ok_or_else(|| {
            Refused::new(StatusCode::TOO_MANY_REQUESTS, "Too many uploads at once: wait for one to finish.")
        })?;
        let mut csrf_ok = authed.csrf_ok(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        while let Some(field) = form.next_field().await? {
            match field.name() {
                Some("csrf") => csrf_ok = csrf_ok || authed.csrf_ok(Some(&field.text().await?)),
                Some("file") => {
                    if !csrf_ok {
                        return Err(Refused::new(
                            StatusCode::FORBIDDEN,
                            "The form has expired: reload the page and try again.",
                        ));
                    }
                    let name = field.file_name().unwrap_or("upload").to_owned();
                    let saved = state.policy.save(&Owner(authed.user.id.clone()), field.into_upload()).await?;
                    return state.record_upload(&authed.user.id, &saved, &name).await.map_err(Refused::database);
                }
                _ => {}
            }
        }
        Err(Refused::new(StatusCode::BAD_REQUEST, "The form has no file field."))
    }
    .await;
    if let Err(refused) = &result {
        state.metrics.rejected(reason(refused.status));
    }
    result
}

/// `POST /api/files`.
pub async fn upload(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    form: Result<UploadForm, private_storage::Error>,
) -> Result<Response, Refused> {
    let authed = authed(user)?;
    let row = save_upload(&state, &authed, &headers, form?).await?;
    let mut response = (StatusCode::CREATED, Json(FileJson::new(&row, None))).into_response();
    response.headers_mut().insert(
        http::header::LOCATION,
        http::HeaderValue::from_str(&format!("/api/files/{}", row.id)).expect("ASCII id"),
    );
    Ok(response)
}

/// `?page=1&per_page=50`.
#[derive(Debug, Deserialize)]
pub struct Page {
    page: Option<i64>,
    per_page: Option<i64>,
}

/// `GET /api/files`: the user's files (staff: everyone's, with owners), newest first.
pub async fn list(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    Query(page): Query<Page>,
) -> Result<Response, Refused> {
    let authed = authed(user)?;
    let per_page = page.per_page.unwrap_or(50).clamp(1, 500);
    let number = page.page.unwrap_or(1).max(1);
    let scope = (!authed.is_staff()).then_some(authed.user.id.as_str());
    let (files, total) = state.db.files(scope, per_page, (number - 1) * per_page).await.map_err(Refused::database)?;
    let files: Vec<FileJson> =
        files.iter().map(|(f, owner)| FileJson::new(f, authed.is_staff().then(|| owner.clone()))).collect();
    Ok(Json(serde_json::json!({ "files": files, "page": number, "per_page": per_page, "total": total }))
        .into_response())
}

async fn own_file(state: &AppState, authed: &Authed, id: &str) -> Result<FileRow, Refused> {
    let scope = (!authed.is_staff()).then_some(authed.user.id.as_str());
    state.db.file(id, scope).await.map_err(Refused::database)?.ok_or_else(Refused::not_found)
}

/// `GET /api/files/{id}`.
pub async fn show(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    let authed = authed(user)?;
    let file = own_file(&state, &authed, &id).await?;
    Ok(Json(FileJson::new(&file, None)).into_response())
}

/// Deletes a file's record, its share links, and its bytes.
pub async fn delete_file(state: &AppState, file: &FileRow) -> Result<(), Refused> {
    state.db.delete_file(&file.id).await.map_err(Refused::database)?;
    let key = private_storage::ObjectKey::new(&file.object_key)
        .map_err(|e| Refused::from(private_storage::Error::from(e)))?;
    if let Err(e) = state.storage.delete(&key).await {
        // The record is gone, so nothing links to the bytes any more; log for cleanup.
        tracing::error!(key = %key, error = %e, "could not delete the bytes of a deleted file");
    }
    tracing::info!(id = %file.id, key = %file.object_key, "file deleted");
    Ok(())
}

/// `DELETE /api/files/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    let authed = authed(user)?;
    if !authed.csrf_ok(headers.get("x-csrf-token").and_then(|v| v.to_str().ok())) {
        return Err(Refused::new(StatusCode::FORBIDDEN, "Missing or wrong X-CSRF-Token."));
    }
    let file = own_file(&state, &authed, &id).await?;
    delete_file(&state, &file).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/files/{id}/links` body.
#[derive(Debug, Deserialize)]
pub struct ShareRequest {
    /// `1h`, `1d`, `7d`...
    pub expires: String,
    /// Download instead of showing inline.
    #[serde(default)]
    pub attachment: bool,
    /// Bind the link to this user name (it then also needs their login).
    pub user: Option<String>,
}

/// Issues a share link to a file; returns the link's path and record.
pub async fn issue_link(
    state: &AppState,
    issuer: &str,
    file: &FileRow,
    request: &ShareRequest,
) -> Result<(String, LinkRow), Refused> {
    let lifetime =
        crate::config::parse_duration(&request.expires).filter(|d| *d >= Duration::from_secs(60)).ok_or_else(|| {
            Refused::new(StatusCode::BAD_REQUEST, "expires: a duration of at least a minute, such as 1h or 7d.")
        })?;
    if lifetime > state.config.share_max_lifetime {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("expires: links may live at most {}.", humantime(state.config.share_max_lifetime)),
        ));
    }
    let mut share = Share::record(&file.id).expires_in(lifetime).issued_by(issuer);
    if request.attachment {
        share = share.disposition(ContentDisposition::attachment().with_filename(&file.name));
    }
    let mut bound = None;
    if let Some(name) = request.user.as_deref().filter(|n| !n.is_empty()) {
        let user = state
            .db
            .user_by_name(name)
            .await
            .map_err(Refused::database)?
            .ok_or_else(|| Refused::new(StatusCode::BAD_REQUEST, format!("No user is named {name}.")))?;
        share = share.bound_to(&user.id);
        bound = Some(user.username);
    }
    let link = state.links.issue(share).await?;
    let row = LinkRow {
        link_id: link.link_id.clone(),
        file_id: file.id.clone(),
        issued_by: Some(issuer.to_owned()),
        bound_to: bound,
        expires: link.expires.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
        created: now(),
    };
    state.db.insert_link(&row).await.map_err(Refused::database)?;
    Ok((link.url, row))
}

/// `1h`, `7d`: a duration for people.
pub fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} seconds"),
    }
}

/// `POST /api/files/{id}/links`.
pub async fn share(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<ShareRequest>,
) -> Result<Response, Refused> {
    let authed = authed(user)?;
    if !authed.csrf_ok(headers.get("x-csrf-token").and_then(|v| v.to_str().ok())) {
        return Err(Refused::new(StatusCode::FORBIDDEN, "Missing or wrong X-CSRF-Token."));
    }
    let file = own_file(&state, &authed, &id).await?;
    let (url, row) = issue_link(&state, &authed.user.username, &file, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "url": url, "link_id": row.link_id, "expires": rfc3339(row.expires) })),
    )
        .into_response())
}

/// `GET /readyz`: 200 when the database and the storage answer, 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.ready().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
