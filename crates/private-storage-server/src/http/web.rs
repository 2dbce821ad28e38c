//! Server-rendered pages: login, the file list with the upload form, a file's page with its
//! share links, and deletion with confirmation. Every form post carries the session's CSRF
//! token; everything works without JavaScript except the upload progress bar.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use minijinja::context;
use private_storage::{UploadForm, human_size};
use serde::Deserialize;

use super::api::{rfc3339, save_upload};
use super::auth::{Authed, SESSION_COOKIE, Tls, cookie};
use crate::AppState;
use crate::db::COUNTED_UP_TO;
use crate::db::{FileRow, ScanState};
use crate::domain::{Error, ShareRequest, random_token};

/// The cookie that carries the login form's CSRF token (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "ps_login_csrf";
/// The `state` of a sign-in through the identity provider, kept by the browser that started it.
const SIGN_IN_COOKIE: &str = "ps_sign_in";

/// The page templates, compiled in.
pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("index.html", include_str!("../../templates/index.html")),
        ("file.html", include_str!("../../templates/file.html")),
        ("confirm_delete.html", include_str!("../../templates/confirm_delete.html")),
        ("users.html", include_str!("../../templates/users.html")),
        ("audit.html", include_str!("../../templates/audit.html")),
        ("link.html", include_str!("../../templates/link.html")),
        ("request.html", include_str!("../../templates/request.html")),
        ("requests.html", include_str!("../../templates/requests.html")),
        ("link_preview.html", include_str!("../../templates/link_preview.html")),
        ("links.html", include_str!("../../templates/links.html")),
        ("link_detail.html", include_str!("../../templates/link_detail.html")),
        ("error.html", include_str!("../../templates/error.html")),
    ] {
        env.add_template(name, source).expect("the templates compile");
    }
    // One path segment (a user name in a form's action).
    env.add_filter("urlencode_path", |value: String| {
        percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string()
    });
    env
}

pub(super) fn render(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match state.templates.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            let headers = response.headers_mut();
            headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
            headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(http::header::CONTENT_SECURITY_POLICY, content_security_policy(state));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, template = name, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be shown.").into_response()
        }
    }
}

/// The pages' policy: everything from this origin only. Forms may also lead to the identity
/// provider (logging out ends its session too: a redirect a browser checks against
/// `form-action`).
fn content_security_policy(state: &AppState) -> HeaderValue {
    let provider = state.config.sso.as_ref().and_then(|sso| origin(&sso.issuer));
    let form_action = provider.map(|p| format!("'self' {p}")).unwrap_or_else(|| "'self'".into());
    HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action {form_action}; frame-ancestors 'none'"
    ))
    .expect("an ASCII policy")
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && host.is_ascii() && !host.contains([' ', ';', '\'', '"'])).then(|| format!("{scheme}://{host}"))
}

/// The one page of a domain error: its status, and its message (server errors say only that
/// something failed; the cause is in the log).
pub(super) fn error_page(state: &AppState, user: Option<&Authed>, error: &Error) -> Response {
    let status = error.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %error, "page failed");
    }
    let (title, message) = (status.canonical_reason().unwrap_or("Error"), error.message());
    render(state, status, "error.html", context! { title, message, user => user.map(user_ctx), csrf => csrf_of(user) })
}

pub(super) fn user_ctx(authed: &Authed) -> minijinja::Value {
    context! { username => authed.user.username.clone(), is_staff => authed.actor().sees_everything() }
}

pub(super) fn csrf_of(authed: Option<&Authed>) -> String {
    authed.and_then(|a| a.session.as_ref()).map(|s| s.csrf.clone()).unwrap_or_default()
}

fn cookie_header(tls: Tls, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if tls.0 { "; Secure" } else { "" };
    let name = tls.cookie_name(name);
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}{secure}"))
        .expect("cookie values are ASCII")
}

/// A local path to go back to after login, never another site: a path that starts with one `/`
/// and holds no control character and no backslash anywhere (browsers drop tabs and newlines
/// from a `Location` and read `\\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`, another origin). Anything else goes to `/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.chars().any(|c| c.is_control() || c == '\\') => {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn file_ctx(file: &FileRow, owner: Option<&str>) -> minijinja::Value {
    context! {
        id => file.id.clone(), name => file.name.clone(), size => human_size(file.size as u64),
        content_type => file.content_type.clone(), sha256 => file.sha256.clone(),
        created => rfc3339(file.created), created_text => rfc3339(file.created).replace('T', " ").replace('Z', " UTC"),
        owner => owner.map(str::to_owned),
        scan => file.scan.as_str(), scan_text => scan_text(file), servable => file.scan.servable(),
    }
}

/// Where a file stands with the virus scanner, for people.
fn scan_text(file: &FileRow) -> String {
    let detail = file.scan_detail.as_deref();
    match (file.scan, detail) {
        (ScanState::Unscanned, Some(why)) => format!("not scanned: {why}"),
        (ScanState::Unscanned, None) => "not scanned".into(),
        (ScanState::Pending, _) => "being scanned…".into(),
        (ScanState::Clean, _) => "clean".into(),
        (ScanState::Infected, why) => format!("infected ({}): kept out of reach", why.unwrap_or("unknown")),
        (ScanState::Removed, why) => format!("infected ({}): deleted", why.unwrap_or("unknown")),
        (ScanState::Refused, why) => format!("not served: {}", why.unwrap_or("could not be scanned")),
    }
}

/// `?page=&uploaded=`
#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    page: Option<i64>,
    uploaded: Option<String>,
}

const PER_PAGE: i64 = 50;

async fn index_page(
    state: &AppState,
    authed: &Authed,
    page: i64,
    notice: Option<String>,
    error: Option<Error>,
) -> Response {
    let page = page.max(1);
    let (files, total) = match state.domain.list(&authed.actor(), PER_PAGE, (page - 1) * PER_PAGE).await {
        Ok(found) => found,
        Err(e) => return error_page(state, Some(authed), &e),
    };
    // Past the counted total, a full page says there may be more.
    let next = page * PER_PAGE < total || (total > COUNTED_UP_TO && files.len() as i64 == PER_PAGE);
    let files: Vec<_> = files.iter().map(|f| file_ctx(&f.file, Some(&f.owner))).collect();
    let usage = match state.domain.usage(&authed.actor(), &authed.user.id).await {
        Ok(usage) => usage_ctx(&usage),
        Err(e) => return error_page(state, Some(authed), &e),
    };
    let types = state.config.content_types.join(", ");
    let (status, error) = error.map_or((StatusCode::OK, None), |e| (e.status(), Some(e.message())));
    render(
        state,
        status,
        "index.html",
        context! {
            user => user_ctx(authed), csrf => csrf_of(Some(authed)), files, total => total.min(COUNTED_UP_TO),
            total_more => total > COUNTED_UP_TO,
            prev => (page > 1).then_some(page - 1), next => next.then_some(page + 1),
            max_size => human_size(state.config.max_file_size), types, notice, error,
            chunk_size => state.config.upload_chunk_size, usage,
        },
    )
}

/// A usage bar's values.
fn usage_ctx(usage: &crate::domain::UsageReport) -> minijinja::Value {
    let size = |n: i64| human_size(n.max(0) as u64);
    context! {
        used => size(usage.used_bytes), files => usage.used_files,
        quota => usage.quota_bytes.map(size), quota_files => usage.quota_files,
        percent => usage.percent(), held => (usage.reserved_bytes > 0).then(|| size(usage.reserved_bytes)),
    }
}

/// `GET /users`: every user's usage and quota, for staff, with a form to change a quota.
pub async fn users_page(State(state): State<AppState>, user: Option<Extension<Authed>>) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login?next=/users").into_response() };
    match state.domain.usages(&authed.actor()).await {
        Ok(users) => {
            let users: Vec<_> =
                users.iter().map(|(name, usage)| context! { name, usage => usage_ctx(usage) }).collect();
            let context = context! { user => user_ctx(&authed), csrf => csrf_of(Some(&authed)), users };
            render(&state, StatusCode::OK, "users.html", context)
        }
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// The quota form: a size (`10GiB`), `none`, or empty for the default; files likewise.
#[derive(Debug, Deserialize)]
pub struct QuotaForm {
    csrf: String,
    bytes: String,
    files: String,
}

/// `POST /users/{name}/quota`.
pub async fn set_quota(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(name): Path<String>,
    Form(form): Form<QuotaForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let parsed = crate::domain::QuotaValue::parse(&form.bytes, true)
        .and_then(|bytes| Ok((bytes, crate::domain::QuotaValue::parse(&form.files, false)?)));
    let result = match parsed {
        Ok((bytes, files)) => state.domain.set_quota(&authed.actor(), &name, Some(bytes), Some(files)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Redirect::to("/users").into_response(),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// `GET /`: the file list and the upload form; anonymous visitors go to the login page.
pub async fn index(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Query(query): Query<IndexQuery>,
) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login").into_response() };
    let notice = query.uploaded.map(|name| format!("Uploaded {name}."));
    index_page(&state, &authed, query.page.unwrap_or(1), notice, None).await
}

/// `?next=`
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_form(
    state: &AppState,
    tls: Tls,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let csrf = random_token(24);
    let sso = state.domain.sso_name();
    let sso_href = format!("/login/oidc?next={}", encode_query(next));
    let passwords = state.domain.password_login();
    let context = context! { csrf => csrf.clone(), next, username, error, sso, sso_href, passwords };
    let mut response = render(state, status, "login.html", context);
    response.headers_mut().append(SET_COOKIE, cookie_header(tls, LOGIN_CSRF_COOKIE, &csrf, Some(3600)));
    response
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<AppState>,
    Extension(tls): Extension<Tls>,
    user: Option<Extension<Authed>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    if !state.domain.password_login() {
        // Only the provider signs people in: go straight there.
        return Redirect::to(&format!("/login/oidc?next={}", encode_query(&next))).into_response();
    }
    login_form(&state, tls, StatusCode::OK, &next, "", None)
}

/// `GET /login/oidc?next=…`: sends the browser to the identity provider, with the sign-in's
/// `state` in a cookie so that only this browser can finish it.
pub async fn sign_in(
    State(state): State<AppState>,
    Extension(tls): Extension<Tls>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    match state.domain.begin_sign_in(&next).await {
        Ok((url, sign_in_state)) => {
            let mut response = Redirect::to(&url).into_response();
            let cookie = cookie_header(tls, SIGN_IN_COOKIE, &sign_in_state, Some(600));
            response.headers_mut().append(SET_COOKIE, cookie);
            response
        }
        Err(e) => sign_in_failed(&state, tls, &e),
    }
}

/// What the provider sends back: a code and the state, or an error.
#[derive(Debug, Deserialize)]
pub struct SignInReturn {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: finishes the sign-in through the domain (state, code, token,
/// user), which starts a new session.
pub async fn sign_in_return(
    State(state): State<AppState>,
    cookies: RequestCookies,
    Query(back): Query<SignInReturn>,
) -> Response {
    let tls = cookies.tls;
    let result = match (&back.code, &back.state, &back.error) {
        (Some(code), Some(sign_in_state), None) => {
            let (kept, replaces) = (cookies.sign_in.as_deref(), cookies.session.as_deref());
            state.domain.finish_sign_in(code, sign_in_state, kept, replaces).await
        }
        (_, _, Some(error)) => Err(Error::SignInRefused(format!(
            "Signing in failed: the identity provider answered {error}{}.",
            back.error_description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        ))),
        _ => Err(Error::SignInRefused("Signing in failed: the identity provider sent no code.".into())),
    };
    match result {
        Ok((session, next)) => {
            let mut response = Redirect::to(&safe_next(Some(&next))).into_response();
            let ttl = state.config.session_ttl.as_secs();
            response.headers_mut().append(SET_COOKIE, cookie_header(tls, SESSION_COOKIE, &session.id, Some(ttl)));
            response.headers_mut().append(SET_COOKIE, cookie_header(tls, SIGN_IN_COOKIE, "", Some(0)));
            response
        }
        Err(e) => sign_in_failed(&state, tls, &e),
    }
}

/// A sign-in that did not work: the login page with the reason (and the sign-in cookie gone).
fn sign_in_failed(state: &AppState, tls: Tls, error: &Error) -> Response {
    if error.status().is_server_error() {
        tracing::error!(error = %error, "sign-in failed");
    }
    let mut response = login_form(state, tls, error.status(), "/", "", Some(&error.message()));
    response.headers_mut().append(SET_COOKIE, cookie_header(tls, SIGN_IN_COOKIE, "", Some(0)));
    response
}

fn encode_query(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: checks the form's CSRF token, then logs in through the domain (rate limit,
/// password), which starts a new session (a new id: any earlier session cookie is replaced).
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    cookies: RequestCookies,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let ip = super::auth::client_ip(peer, &headers, &state.config.trusted_proxies);
    let csrf_ok = cookies
        .login_csrf
        .as_deref()
        .is_some_and(|c| !c.is_empty() && subtle::ConstantTimeEq::ct_eq(c.as_bytes(), form.csrf.as_bytes()).into());
    if !csrf_ok {
        state.metrics.denied("csrf");
        let message = "The form has expired: please try again.";
        return login_form(&state, cookies.tls, StatusCode::FORBIDDEN, &next, &form.username, Some(message));
    }
    match state.domain.login(&form.username, &form.password, ip, cookies.session.as_deref()).await {
        Ok(session) => {
            let mut response = Redirect::to(&next).into_response();
            let ttl = state.config.session_ttl.as_secs();
            response
                .headers_mut()
                .append(SET_COOKIE, cookie_header(cookies.tls, SESSION_COOKIE, &session.id, Some(ttl)));
            response.headers_mut().append(SET_COOKIE, cookie_header(cookies.tls, LOGIN_CSRF_COOKIE, "", Some(0)));
            response
        }
        Err(e) => login_form(&state, cookies.tls, e.status(), &next, &form.username, Some(&e.message())),
    }
}

/// The cookies the login handler needs.
#[derive(Debug)]
pub struct RequestCookies {
    tls: Tls,
    login_csrf: Option<String>,
    session: Option<String>,
    sign_in: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestCookies {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let tls = parts.extensions.get::<Tls>().copied().unwrap_or_default();
        Ok(Self {
            tls,
            login_csrf: cookie(parts, &tls.cookie_name(LOGIN_CSRF_COOKIE)).map(str::to_owned),
            session: cookie(parts, &tls.cookie_name(SESSION_COOKIE)).map(str::to_owned),
            sign_in: cookie(parts, &tls.cookie_name(SIGN_IN_COOKIE)).map(str::to_owned),
        })
    }
}

/// The user posting a form, if logged in and the form carries the session's CSRF token;
/// otherwise the answer: to the login page, or a 403 page.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
pub(super) fn form_user(state: &AppState, user: Option<Extension<Authed>>, csrf: &str) -> Result<Authed, Response> {
    let Some(Extension(authed)) = user else { return Err(Redirect::to("/login").into_response()) };
    if !authed.csrf_ok(Some(csrf)) {
        let expired = Error::Forbidden("The form has expired: reload the page and try again.".into());
        return Err(error_page(state, Some(&authed), &expired));
    }
    Ok(authed)
}

/// A form with only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    Extension(tls): Extension<Tls>,
    user: Option<Extension<Authed>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    if let Some(session) = &authed.session
        && let Err(e) = state.domain.logout(&session.id_hash).await
    {
        return error_page(&state, Some(&authed), &e);
    }
    // Signed in through the provider: end the provider's session too, when it offers that.
    let back = match state.domain.sign_out_url().await {
        Some(provider) if authed.user.password_hash.is_empty() => provider,
        _ => "/login".to_owned(),
    };
    let mut response = Redirect::to(&back).into_response();
    response.headers_mut().append(SET_COOKIE, cookie_header(tls, SESSION_COOKIE, "", Some(0)));
    response
}

/// `POST /upload`: the upload form without JavaScript.
pub async fn upload(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    headers: HeaderMap,
    form: Result<UploadForm, private_storage::Error>,
) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login").into_response() };
    let saved = match form {
        Ok(form) => save_upload(&state, &authed, &headers, form).await,
        Err(e) => Err(Error::Storage(e)),
    };
    match saved {
        Ok(row) => {
            Redirect::to(&format!("/?uploaded={}", percent_encoding::utf8_percent_encode(&row.name, QUERY_VALUE)))
                .into_response()
        }
        Err(e) => index_page(&state, &authed, 1, None, Some(e)).await,
    }
}

/// What stays as it is in a query value: RFC 3986 §2.3's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

async fn file_view(
    state: &AppState,
    authed: &Authed,
    file: &FileRow,
    new_link: Option<String>,
    error: Option<Error>,
) -> Response {
    let links = match state.domain.live_links(file).await {
        Ok(links) => links,
        Err(e) => return error_page(state, Some(authed), &e),
    };
    let links: Vec<_> = links
        .iter()
        .map(|l| {
            context! {
                link_id => l.link_id.clone(), expires_text => rfc3339(l.expires).replace('T', " ").replace('Z', " UTC"),
                bound_to => l.bound_to.clone(), password => l.password_hash.is_some(), downloads => l.downloads,
                max_downloads => l.max_downloads,
            }
        })
        .collect();
    let owner = state.domain.owner_name(&authed.actor(), file).await.ok().flatten();
    let new_link = new_link.map(|path| match &state.config.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => path,
    });
    let (status, error) = error.map_or((StatusCode::OK, None), |e| (e.status(), Some(e.message())));
    render(
        state,
        status,
        "file.html",
        context! { user => user_ctx(authed), csrf => csrf_of(Some(authed)), file => file_ctx(file, None), owner, links, new_link, error },
    )
}

/// `GET /files/{id}`: a file, its share form and live links.
pub async fn file_page(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(id): Path<String>,
) -> Response {
    let Some(Extension(authed)) = user else {
        return Redirect::to(&format!("/login?next=/files/{id}")).into_response();
    };
    match state.domain.file(&authed.actor(), &id).await {
        Ok(file) => file_view(&state, &authed, &file, None, None).await,
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// `GET /files/{id}/delete`: asks first.
pub async fn confirm_delete(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(id): Path<String>,
) -> Response {
    let Some(Extension(authed)) = user else { return Redirect::to("/login").into_response() };
    match state.domain.file(&authed.actor(), &id).await {
        Ok(file) => render(
            &state,
            StatusCode::OK,
            "confirm_delete.html",
            context! { user => user_ctx(&authed), csrf => csrf_of(Some(&authed)), file => file_ctx(&file, None) },
        ),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// `POST /files/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    match state.domain.delete(&authed.actor(), &id).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// The share form.
#[derive(Debug, Deserialize)]
pub struct ShareForm {
    csrf: String,
    expires: Option<String>,
    attachment: Option<String>,
    user: Option<String>,
    password: Option<String>,
    max_downloads: Option<String>,
}

/// `POST /files/{id}/share`: issues a link and shows it once.
pub async fn share(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(id): Path<String>,
    Form(form): Form<ShareForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    let max_downloads = match form.max_downloads.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(n) => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                let e = Error::Invalid("max_downloads: a number, or empty for no limit.".into());
                return error_page(&state, Some(&authed), &e);
            }
        },
        None => None,
    };
    let request = ShareRequest {
        expires: form.expires,
        attachment: form.attachment.is_some(),
        user: form.user,
        password: form.password,
        max_downloads,
    };
    match state.domain.share(&authed.actor(), &id, &request).await {
        Ok((file, link)) => file_view(&state, &authed, &file, Some(link.path), None).await,
        // A bad value is shown on the file's page, next to the form.
        Err(e @ (Error::Invalid(_) | Error::Policy(_))) => match state.domain.file(&authed.actor(), &id).await {
            Ok(file) => file_view(&state, &authed, &file, None, Some(e)).await,
            Err(e) => error_page(&state, Some(&authed), &e),
        },
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// `POST /links/{link_id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    user: Option<Extension<Authed>>,
    Path(link_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let authed = match form_user(&state, user, &form.csrf) {
        Ok(authed) => authed,
        Err(response) => return response,
    };
    match state.domain.revoke(&authed.actor(), &link_id).await {
        Ok(link) => Redirect::to(&format!("/files/{}", link.file_id)).into_response(),
        Err(e) => error_page(&state, Some(&authed), &e),
    }
}

/// `GET /static/upload.js`: the upload form's script: several files, drag and drop, each through
/// tus with its own progress bar.
pub async fn upload_script() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/upload.js"),
    )
        .into_response()
}

/// `GET /static/tus.min.js`: the vendored tus client of the upload form (`vendor/README.md`).
pub async fn tus_script() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../vendor/tus-js-client-4.3.1.min.js"),
    )
        .into_response()
}

/// `GET /static/style.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/style.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_same_origin_paths_are_followed_after_login() {
        for (next, expected) in [
            ("/files/1", "/files/1"),
            ("/?page=2", "/?page=2"),
            ("/a/b?next=//x", "/a/b?next=//x"),
            ("//evil.example/", "/"),
            ("/\\evil.example/", "/"),
            ("/\t/evil.example/", "/"),
            ("/a\\b", "/"),
            ("\t/evil.example", "/"),
            ("/x\r\nSet-Cookie: a=b", "/"),
            ("/x\u{85}y", "/"),
            ("https:evil.example", "/"),
            ("https://evil.example", "/"),
            ("evil.example", "/"),
            ("", "/"),
        ] {
            assert_eq!(safe_next(Some(next)), expected, "{next:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
