//! The JSON API (`/api/files`), readiness and metrics. Every domain error becomes a response
//! in one place: [`Failure`](super::Failure).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use private_storage::UploadForm;
use serde::{Deserialize, Serialize};

use super::Failure;
use super::auth::Authed;
use crate::AppState;
use crate::db::FileRow;
use crate::domain::{Error, ShareRequest};

type ApiResult = Result<Response, Failure>;

fn authed(user: Option<axum::Extension<Authed>>) -> Result<Authed, Failure> {
    user.map(|u| u.0).ok_or(Failure(Error::Unauthenticated))
}

/// A cookie-authenticated call that changes something must carry `X-CSRF-Token`.
pub(super) fn check_csrf(authed: &Authed, headers: &HeaderMap) -> Result<(), Failure> {
    if authed.csrf_ok(csrf_header(headers)) {
        Ok(())
    } else {
        Err(Failure(Error::Forbidden("Missing or wrong X-CSRF-Token.".into())))
    }
}

pub(super) fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
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
    /// Where the file stands with the virus scanner (`unscanned`, `pending`, `clean`,
    /// `infected`, `removed`, `refused`); only `clean` and `unscanned` files are served.
    scan: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan_detail: Option<String>,
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
            scan: file.scan.as_str(),
            scan_detail: file.scan_detail.clone(),
            owner,
        }
    }
}

/// What an upload form may hold beyond its file: part headers, boundaries, the CSRF field.
const FORM_OVERHEAD: u64 = 64 * 1024;

/// Reads a multipart form whose `file` field goes to the domain's upload. With a cookie session
/// the CSRF token must come first: as the `X-CSRF-Token` header or a `csrf` field before the
/// file. Nothing is stored when anything fails.
pub(super) async fn save_upload(
    state: &AppState,
    authed: &Authed,
    headers: &HeaderMap,
    form: UploadForm,
) -> Result<FileRow, Error> {
    let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let limit = state.config.max_file_size;
    let read = async move {
        // A body that says it is larger than the file may be (plus room for the form's framing
        // and small fields) is refused before a byte of it is read: with `Expect: 100-continue`
        // the client never sends it.
        if declared.is_some_and(|len| len > limit.saturating_add(FORM_OVERHEAD)) {
            return Err(Error::Storage(private_storage::Error::TooLarge { limit }));
        }
        let mut form = form;
        let mut csrf_ok = authed.csrf_ok(csrf_header(headers));
        while let Some(field) = form.next_field().await? {
            match field.name() {
                Some("csrf") => csrf_ok = csrf_ok || authed.csrf_ok(Some(&field.text().await?)),
                Some("file") if !csrf_ok => {
                    return Err(Error::Forbidden("The form has expired: reload the page and try again.".into()));
                }
                Some("file") => return Ok(field.into_upload()),
                _ => {}
            }
        }
        Err(Error::Invalid("The form has no file field.".into()))
    };
    // The file is no longer than the request that carries it.
    state.domain.upload(&authed.actor(), &authed.user.id, declared, read).await
}

/// `POST /api/files`.
pub async fn upload(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    form: Result<UploadForm, private_storage::Error>,
) -> ApiResult {
    let authed = authed(user)?;
    let row = save_upload(&state, &authed, &headers, form?).await?;
    let mut response = (StatusCode::CREATED, Json(FileJson::new(&row, None))).into_response();
    let location = HeaderValue::from_str(&format!("/api/files/{}", row.id)).expect("ASCII id");
    response.headers_mut().insert(http::header::LOCATION, location);
    Ok(response)
}

/// `GET /api/usage`: the user's usage and quota.
pub async fn usage(State(state): State<AppState>, user: Option<axum::Extension<Authed>>) -> ApiResult {
    let authed = authed(user)?;
    let usage = state.domain.usage(&authed.actor(), &authed.user.id).await?;
    Ok(Json(usage).into_response())
}

/// `GET /api/webhooks`: staff see each webhook (URL and events, never its secret) with its
/// latest deliveries: attempts, last status and error, when delivered or given up.
pub async fn webhooks(State(state): State<AppState>, user: Option<axum::Extension<Authed>>) -> ApiResult {
    let authed = authed(user)?;
    let log = state.domain.webhook_log(&authed.actor(), 100).await?;
    let webhooks: Vec<_> = log
        .into_iter()
        .map(|(url, events, deliveries)| {
            let deliveries: Vec<_> = deliveries
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id, "event": d.event, "created": d.created, "attempts": d.attempts,
                        "next_attempt": d.next_attempt, "delivered": d.delivered, "failed": d.failed,
                        "last_status": d.last_status, "last_error": d.last_error,
                    })
                })
                .collect();
            serde_json::json!({ "url": url, "events": events, "deliveries": deliveries })
        })
        .collect();
    Ok(Json(serde_json::json!({ "webhooks": webhooks })).into_response())
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
) -> ApiResult {
    let authed = authed(user)?;
    let actor = authed.actor();
    let per_page = page.per_page.unwrap_or(50).clamp(1, 500);
    let number = page.page.unwrap_or(1).max(1);
    let (files, total) = state.domain.list(&actor, per_page, (number - 1) * per_page).await?;
    let files: Vec<FileJson> =
        files.iter().map(|f| FileJson::new(&f.file, actor.sees_everything().then(|| f.owner.clone()))).collect();
    // Counted up to one more than `COUNTED_UP_TO`: shown capped, `total_is_exact` says whether there are more.
    let (total, exact) = (total.min(crate::db::COUNTED_UP_TO), total <= crate::db::COUNTED_UP_TO);
    Ok(Json(serde_json::json!({ "files": files, "page": number, "per_page": per_page, "total": total, "total_is_exact": exact }))
        .into_response())
}

/// `GET /api/files/{id}`.
pub async fn show(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    Path(id): Path<String>,
) -> ApiResult {
    let authed = authed(user)?;
    let file = state.domain.file(&authed.actor(), &id).await?;
    Ok(Json(FileJson::new(&file, None)).into_response())
}

/// `DELETE /api/files/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let authed = authed(user)?;
    check_csrf(&authed, &headers)?;
    state.domain.delete(&authed.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/files/{id}/links`.
pub async fn share(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<ShareRequest>,
) -> ApiResult {
    let authed = authed(user)?;
    check_csrf(&authed, &headers)?;
    let (_, link) = state.domain.share(&authed.actor(), &id, &request).await?;
    let body =
        serde_json::json!({ "url": link.path, "link_id": link.row.link_id, "expires": rfc3339(link.row.expires) });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /readyz`: 200 when the database and the storage answer, 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.domain.ready().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    let (hits, misses) = state.db.cache_stats();
    text.push_str("# HELP private_storage_cache_lookups_total Cached reads (token, session, record), by outcome.\n# TYPE private_storage_cache_lookups_total counter\n");
    text.push_str(&format!(
        "private_storage_cache_lookups_total{{outcome=\"hit\"}} {hits}\nprivate_storage_cache_lookups_total{{outcome=\"miss\"}} {misses}\n"
    ));
    if let Some((files, bytes)) = state.db.file_cache_usage() {
        text.push_str(&format!(
            "# HELP private_storage_file_cache_files Small files held in memory to be served.\n# TYPE private_storage_file_cache_files gauge\nprivate_storage_file_cache_files {files}\n\
             # HELP private_storage_file_cache_bytes Memory those files take, by the cache's measure.\n# TYPE private_storage_file_cache_bytes gauge\nprivate_storage_file_cache_bytes {bytes}\n"
        ));
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
