//! Share links over HTTP: `/s/<token>` for whoever holds one (the bytes for programs, a page
//! for people, metadata for preview bots, a password form first where there is one), and the
//! owners' management: `GET /api/links`, `PATCH`/`DELETE /api/links/{id}`, `DELETE
//! /api/files/{id}/links`, the `/links` pages.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderValue, StatusCode};
use minijinja::context;
use private_storage::{ContentDisposition, human_size};
use serde::Deserialize;

use super::Failure;
use super::api::rfc3339;
use super::auth::{Authed, Tls, client_ip, cookie};
use super::web::{csrf_of, error_page, render, user_ctx};
use crate::AppState;
use crate::db::{LinkRow, OwnedLink};
use crate::domain::{Error, LinkAnswer, LinkPage, LinkRequest, is_preview_bot};

/// The cookie that tells a link this browser gave its password (scoped to the link's path).
const UNLOCK_COOKIE: &str = "ps_link";

fn header(parts: &http::request::Parts, name: http::header::HeaderName) -> &str {
    parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn query_flag(parts: &http::request::Parts, name: &str) -> bool {
    parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == name || p.starts_with(&format!("{name}="))))
}

/// Whether a request is a person's browser opening a page (a document navigation), rather
/// than an `<img>`, a `<video>`, `curl` or a download manager.
fn wants_page(parts: &http::request::Parts) -> bool {
    match parts.headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) {
        Some(dest) => dest == "document",
        None => header(parts, http::header::ACCEPT).contains("text/html"),
    }
}

/// The unlock cookie's name as this request carries it (`__Secure-` over TLS: its path is the
/// link's, so the `__Host-` prefix cannot be used).
fn unlock_cookie_name(tls: Tls) -> String {
    if tls.0 { format!("__Secure-{UNLOCK_COOKIE}") } else { UNLOCK_COOKIE.to_owned() }
}

/// `GET`/`HEAD /s/{token}`.
pub async fn open(State(state): State<AppState>, Path(token): Path<String>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let tls = parts.extensions.get::<Tls>().copied().unwrap_or_default();
    let explicit = query_flag(&parts, "dl") || query_flag(&parts, "inline");
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let user_agent = header(&parts, http::header::USER_AGENT).to_owned();
    let link_request = LinkRequest {
        head: parts.method == http::Method::HEAD,
        page: parts.method == http::Method::GET && wants_page(&parts) && !explicit,
        bot: is_preview_bot(&user_agent),
        range: parts.headers.contains_key(http::header::RANGE),
        client: client_ip(peer, &parts.headers, &state.config.trusted_proxies),
        user_agent,
        unlock: cookie(&parts, &unlock_cookie_name(tls)).map(str::to_owned),
    };
    let answer = match state.domain.open_link(&token, &link_request).await {
        Ok(answer) => answer,
        Err(e) => return Failure(e).into_response(),
    };
    let self_url = format!("/s/{token}");
    match answer {
        LinkAnswer::Library => serve(&state, &token, Request::from_parts(parts, body)).await,
        LinkAnswer::Bytes { link, counted, no_store } => {
            if query_flag(&parts, "dl") {
                let name = state.db.file(&link.file_id, None).await.ok().flatten().map(|f| f.name.clone());
                let disposition = ContentDisposition::attachment();
                parts.extensions.insert(match name {
                    Some(name) => disposition.with_filename(&name),
                    None => disposition,
                });
            }
            let mut response = serve(&state, &token, Request::from_parts(parts, body)).await;
            if counted
                && !response.status().is_success()
                && let Err(e) = state.domain.give_back_download(&link).await
            {
                tracing::error!(error = %e, link_id = %link.link_id, "a download that served nothing was not given back");
            }
            if no_store {
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            }
            response
        }
        LinkAnswer::Page(page) => {
            visited(link_page(&state, &page, &self_url, false, None, StatusCode::OK), &page.link, "page")
        }
        LinkAnswer::Locked(page) if link_request.page || wants_page(&parts) => visited(
            link_page(&state, &page, &self_url, true, None, StatusCode::UNAUTHORIZED),
            &page.link,
            "password asked",
        ),
        LinkAnswer::Locked(page) => visited(
            plain(
                StatusCode::UNAUTHORIZED,
                "This link is protected by a password: open it in a browser and give the password.",
            ),
            &page.link,
            "password asked",
        ),
        LinkAnswer::Preview(page) => visited(preview_page(&state, &page), &page.link, "preview bot"),
        LinkAnswer::UsedUp(link) => visited(
            plain(
                StatusCode::GONE,
                &format!("This link has been used for all of its {} download(s).", link.max_downloads.unwrap_or(0)),
            ),
            &link,
            "used up",
        ),
        LinkAnswer::Expired(link) => visited(plain(StatusCode::GONE, "This link has expired."), &link, "expired"),
    }
}

/// An answer of this server to an authentic link that served no byte — its page, its password
/// form, a preview bot's page, a refusal —, for the audit trail (which records the use).
#[derive(Debug, Clone)]
pub(crate) struct LinkVisit {
    pub(crate) link_id: String,
    pub(crate) file_id: String,
    pub(crate) outcome: &'static str,
}

fn visited(mut response: Response, link: &LinkRow, outcome: &'static str) -> Response {
    let visit = LinkVisit { link_id: link.link_id.clone(), file_id: link.file_id.clone(), outcome };
    response.extensions_mut().insert(visit);
    response
}

/// The library's share service, with the link headers every answer carries.
async fn serve(state: &AppState, token: &str, request: Request) -> Response {
    state.domain.shared().serve(token, request).await.map(axum::body::Body::new)
}

fn plain(status: StatusCode, message: &str) -> Response {
    let mut response = (status, message.to_owned()).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// What kind of inline preview the page shows: only types a browser shows safely by itself,
/// and never for a link with a download limit (a preview would use one up).
fn preview_kind(link: &LinkRow, content_type: &str) -> Option<&'static str> {
    if link.max_downloads.is_some() {
        return None;
    }
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("image", subtype)) if !subtype.contains("svg") => Some("image"),
        Some(("video", _)) => Some("video"),
        Some(("audio", _)) => Some("audio"),
        _ if essence == "application/pdf" => Some("pdf"),
        _ => None,
    }
}

fn link_page(
    state: &AppState,
    page: &LinkPage,
    self_url: &str,
    locked: bool,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let LinkPage { link, file } = page;
    let downloads_left = link.max_downloads.map(|max| (max - link.downloads).max(0));
    let context = context! {
        locked, error, self_url,
        file => context! { name => file.name.clone(), size => human_size(file.size as u64), content_type => file.content_type.clone() },
        expires => rfc3339(link.expires), expires_text => rfc3339(link.expires).replace('T', " ").replace('Z', " UTC"),
        downloads_left, limited => link.max_downloads.is_some(),
        preview => if locked { None } else { preview_kind(link, &file.content_type) },
    };
    let mut response = render(state, status, "link.html", context);
    response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The page a link-preview bot gets: a title and a line, never a byte of the file, and never
/// the file's name when the link has a password.
fn preview_page(state: &AppState, page: &LinkPage) -> Response {
    let (title, description) = if page.link.password_hash.is_some() {
        ("A shared file".to_owned(), "A password-protected file shared with Private storage.".to_owned())
    } else {
        (page.file.name.clone(), format!("{}, {}", human_size(page.file.size as u64), page.file.content_type))
    };
    let mut response = render(state, StatusCode::OK, "link_preview.html", context! { title, description });
    response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The password form.
#[derive(Deserialize)]
pub struct UnlockForm {
    password: String,
}

/// `POST /s/{token}`: checks the password; on success the browser gets the link's cookie
/// (path-scoped to the link, `HttpOnly`, `SameSite=Strict`, `Secure` over TLS) and goes back to
/// the link.
pub async fn unlock(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Extension(tls): Extension<Tls>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // Only from this origin's own form.
    if parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|s| s == "cross-site") {
        return plain(StatusCode::FORBIDDEN, "The password must be given on the link's own page.");
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = client_ip(peer, &parts.headers, &state.config.trusted_proxies);
    let Ok(Form(form)) = Form::<UnlockForm>::from_request(Request::from_parts(parts, body), &state).await else {
        return plain(StatusCode::BAD_REQUEST, "Send the password as a form field.");
    };
    let self_url = format!("/s/{token}");
    match state.domain.unlock_link(&token, &form.password, ip).await {
        Ok((value, ttl)) => {
            let cookie = format!(
                "{}={value}; Path={self_url}; Max-Age={}; HttpOnly; SameSite=Strict{}",
                unlock_cookie_name(tls),
                ttl.as_secs(),
                if tls.0 { "; Secure" } else { "" }
            );
            let mut response = Redirect::to(&self_url).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(SET_COOKIE, cookie);
            }
            response.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            response
        }
        Err(e @ (Error::WrongCredentials | Error::TooManyAttempts)) => {
            let message = match &e {
                Error::WrongCredentials => "Wrong password.".to_owned(),
                other => other.message(),
            };
            match state.domain.open_link(&token, &LinkRequest { page: true, ..Default::default() }).await {
                Ok(LinkAnswer::Locked(page)) => link_page(&state, &page, &self_url, true, Some(message), e.status()),
                _ => plain(e.status(), &message),
            }
        }
        Err(e) => plain(e.status(), &e.message()),
    }
}

/// A link as the API shows it.
fn link_json(owned: &OwnedLink) -> serde_json::Value {
    let link = &owned.link;
    serde_json::json!({
        "link_id": link.link_id, "file_id": link.file_id, "file_name": owned.file_name,
        "created": rfc3339(link.created), "expires": rfc3339(link.expires),
        "extendable_to": rfc3339(link.extendable_to()),
        "password": link.password_hash.is_some(), "max_downloads": link.max_downloads,
        "downloads": link.downloads, "bound_to": link.bound_to, "issued_by": link.issued_by,
        "revoked": link.revoked, "live": !link.revoked && link.expires > crate::db::now(),
    })
}

/// `?file=&all=1`
#[derive(Debug, Default, Deserialize)]
pub struct LinksQuery {
    file: Option<String>,
    all: Option<String>,
}

fn authed(user: Option<Extension<Authed>>) -> Result<Authed, Failure> {
    user.map(|Extension(a)| a).ok_or(Failure(Error::Unauthenticated))
}

/// `GET /api/links`: the live links of the user's files (staff: everyone's), newest first;
/// `?file=ID` for one file's, `?all=1` with revoked and expired ones.
pub async fn api_list(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Query(query): Query<LinksQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let authed = authed(user)?;
    let all = query.all.as_deref().is_some_and(|a| a == "1" || a == "true");
    let links = state.domain.links_of(&authed.actor(), query.file.as_deref().filter(|f| !f.is_empty()), all).await?;
    Ok(Json(serde_json::json!({ "links": links.iter().map(link_json).collect::<Vec<_>>() })))
}

/// `PATCH /api/links/{id}` body.
#[derive(Debug, Deserialize)]
pub struct LinkPatch {
    expires: String,
}

/// `PATCH /api/links/{id}` (`{"expires": "3d"}`): a new expiry, counted from now.
pub async fn api_extend(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: http::HeaderMap,
    Path(link_id): Path<String>,
    Json(patch): Json<LinkPatch>,
) -> Result<Json<serde_json::Value>, Failure> {
    let authed = authed(user)?;
    super::api::check_csrf(&authed, &headers)?;
    state.domain.extend_link(&authed.actor(), &link_id, &patch.expires).await?;
    Ok(Json(link_json(&state.domain.link_of(&authed.actor(), &link_id).await?)))
}

/// `DELETE /api/links/{id}`: revokes the link.
pub async fn api_revoke(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: http::HeaderMap,
    Path(link_id): Path<String>,
) -> Result<StatusCode, Failure> {
    let authed = authed(user)?;
    super::api::check_csrf(&authed, &headers)?;
    state.domain.revoke(&authed.actor(), &link_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/files/{id}/links`: revokes every link to the file.
pub async fn api_revoke_all(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: http::HeaderMap,
    Path(file_id): Path<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    let authed = authed(user)?;
    super::api::check_csrf(&authed, &headers)?;
    let revoked = state.domain.revoke_all(&authed.actor(), &file_id).await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

/// `GET /links`: the user's links (staff: everyone's), live and past.
pub async fn links_page(State(state): State<AppState>, user: Option<Extension<Authed>>) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login?next=/links").into_response() };
    match state.domain.links_of(&authed.actor(), None, true).await {
        Ok(links) => {
            let links: Vec<_> = links.iter().map(link_ctx).collect();
            let context = context! { user => user_ctx(&authed), csrf => csrf_of(Some(&authed)), links };
            render(&state, StatusCode::OK, "links.html", context)
        }
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

fn link_ctx(owned: &OwnedLink) -> minijinja::Value {
    let link = &owned.link;
    context! {
        link_id => link.link_id.clone(), file_id => link.file_id.clone(), file_name => owned.file_name.clone(),
        expires => rfc3339(link.expires), created => rfc3339(link.created), password => link.password_hash.is_some(),
        max_downloads => link.max_downloads, downloads => link.downloads, bound_to => link.bound_to.clone(),
        revoked => link.revoked, live => !link.revoked && link.expires > crate::db::now(),
    }
}

/// `GET /links/{id}`: one link, with its uses from the audit trail.
pub async fn link_detail(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(link_id): Path<String>,
) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login").into_response() };
    match state.domain.link_uses(&authed.actor(), &link_id).await {
        Ok((link, uses)) => {
            let uses: Vec<_> = uses
                .iter()
                .map(|u| {
                    context! {
                        time => super::audit::time_text(u.at), kind => u.kind.clone(), client => u.client.clone(),
                        status => u.status, range => u.byte_range.clone(), bytes => u.bytes,
                        user_agent => u.user_agent.clone(),
                    }
                })
                .collect();
            let context =
                context! { user => user_ctx(&authed), csrf => csrf_of(Some(&authed)), link => link_ctx(&link), uses };
            render(&state, StatusCode::OK, "link_detail.html", context)
        }
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// The revoke-all form's fields.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /files/{id}/links/revoke`: the file page's "revoke all links".
pub async fn revoke_all_form(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(file_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let authed = match super::web::form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    match state.domain.revoke_all(&authed.actor(), &file_id).await {
        Ok(_) => Redirect::to(&format!("/files/{file_id}")).into_response(),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}
