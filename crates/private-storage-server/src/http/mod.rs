//! The HTTP front-ends: pages ([`web`]) and the JSON API ([`api`]) over the domain, the
//! download routes (the library's services, built by the domain), and the middleware every
//! request passes: request ids, the access log, metrics, authentication ([`auth`]). A domain
//! error that reaches HTTP outside the pages is answered as JSON by [`Failure`].

pub mod api;
pub mod audit;
pub mod auth;
pub mod links;
pub mod requests;
pub mod tus;
pub mod web;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router, middleware};
use http::{HeaderValue, StatusCode};

use crate::AppState;
use crate::domain::Error;

/// The largest body of a route that is not an upload (a form, a JSON call).
const PAGE_BODY_LIMIT: usize = 64 * 1024;

/// The routes, recorded as they are added: the router, and every path it answers (with its
/// parameters as `{name}`), so that tests can walk every route the router has — one added later
/// included.
struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn new() -> Self {
        Self { router: Router::new(), paths: Vec::new() }
    }

    fn route(mut self, path: &'static str, method_router: axum::routing::MethodRouter<AppState>) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, method_router);
        self
    }

    fn nest_service<T>(mut self, path: &'static str, service: T) -> Self
    where
        T: tower::Service<Request, Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
        T::Response: IntoResponse,
        T::Future: Send + 'static,
    {
        self.paths.push(path);
        self.router = self.router.nest_service(path, service);
        self
    }

    fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<std::convert::Infallible> + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    fn merge(mut self, other: Routes) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }
}

/// Every path the router answers, as registered (parameters as `{name}`; a mounted service as
/// its prefix): what the route-enumerating tests walk.
pub fn route_paths(state: &AppState) -> Vec<&'static str> {
    routes(state).paths
}

/// The HTTP interface (see the README for the routes).
///
/// The middleware wraps the router once, before routing (no layer looks at the matched
/// route): `Router::layer` would wrap every route in each layer, one boxed service per layer
/// cloned on every request.
pub fn app(state: AppState) -> Router {
    // The access log's span and line, when the log shows them (the filter is set once, at
    // start): with `RUST_LOG=warn` both would be made and dropped unseen on every request.
    let access_log = tracing::enabled!(target: module_path!(), tracing::Level::INFO)
        || tracing::enabled!(target: "tower_http::trace::on_response", tracing::Level::INFO);
    let trace = access_log.then(|| {
        tower::ServiceBuilder::new()
            .map_response(|response: Response<_>| response.map(axum::body::Body::new))
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
            .into_inner()
    });
    let stack = tower::ServiceBuilder::new()
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(NewRequestId))
        .option_layer(trace)
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(middleware::from_fn_with_state(state.clone(), per_request))
        .service(routes(&state).router.with_state(state));
    Router::new().fallback_service(stack)
}

/// What every request passes through on our side, outermost first: metrics, authentication,
/// then the audit trail's context (inside authentication: it sees the actor, and never an
/// invalid API token). One middleware calling the three in turn: one boxed service and future
/// per request instead of one per step.
async fn per_request(State(state): State<AppState>, request: Request, next: middleware::Next) -> Response {
    crate::metrics::count(&state, request, async |request| {
        auth::authenticate(&state, request, async |request| {
            audit::trail(&state, request, async move |request| next.run(request).await).await
        })
        .await
    })
    .await
}

/// Every route, before the middleware every request passes.
fn routes(state: &AppState) -> Routes {
    let timeout = state.config.request_timeout;
    let pages = Routes::new()
        .route("/", get(web::index))
        .route("/login", get(web::login_page).post(web::login))
        .route("/login/oidc", get(web::sign_in))
        .route("/login/oidc/callback", get(web::sign_in_return))
        .route("/logout", post(web::logout))
        .route("/files/{id}", get(web::file_page))
        .route("/files/{id}/delete", get(web::confirm_delete).post(web::delete))
        .route("/files/{id}/share", post(web::share))
        .route("/links", get(links::links_page))
        .route("/links/{link_id}", get(links::link_detail))
        .route("/links/{link_id}/revoke", post(web::revoke))
        .route("/files/{id}/links/revoke", post(links::revoke_all_form))
        .route("/api/links", get(links::api_list))
        .route("/api/links/{link_id}", axum::routing::patch(links::api_extend).delete(links::api_revoke))
        .route("/users", get(web::users_page))
        .route("/users/{name}/quota", post(web::set_quota))
        .route("/requests", get(requests::owner).post(requests::create))
        .route("/requests/{id}/close", post(requests::close))
        .route("/api/requests", get(requests::api_list).post(requests::api_create))
        .route("/api/requests/{id}", axum::routing::delete(requests::api_close))
        .route("/audit", get(audit::page))
        .route("/api/audit", get(audit::api))
        .route("/api/webhooks", get(api::webhooks))
        .route("/api/usage", get(api::usage))
        .route("/api/files", get(api::list))
        .route("/api/files/{id}", get(api::show).delete(api::delete))
        .route("/api/files/{id}/links", post(api::share).delete(links::api_revoke_all))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/static/style.css", get(web::stylesheet))
        .route("/static/upload.js", get(web::upload_script))
        .route("/static/tus.min.js", get(web::tus_script))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, timeout))
        // Forms and JSON are small: a larger body is 413 before it is buffered.
        .layer(DefaultBodyLimit::max(PAGE_BODY_LIMIT));
    // Transfers are not cut by the request timeout: they may take as long as the bytes do.
    let transfers = Routes::new()
        .route("/upload", post(web::upload))
        .route("/api/files", post(api::upload))
        .route("/api/uploads", any(tus::endpoint))
        .route("/api/uploads/{id}", any(tus::upload))
        .route("/r/{token}", get(requests::page).post(requests::upload))
        .layer(DefaultBodyLimit::disable())
        .route("/files/{id}/download", get(download))
        .nest_service("/private-media", state.domain.media().clone())
        .route("/s/{token}", get(links::open).head(links::open).post(links::unlock));
    pages.merge(transfers)
}

/// An id for each request without one, echoed in `x-request-id` and in every log line of the
/// request: a random prefix per process and a count, unique without a system call per request.
#[derive(Debug, Clone, Copy)]
struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| crate::domain::random_token(6));
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = bytes::Bytes::from(format!("{prefix}{n:08x}"));
        http::HeaderValue::from_maybe_shared(id).ok().map(tower_http::request_id::RequestId::new)
    }
}

/// The span of a request: method, path and request id. Share-link tokens are capabilities:
/// their path is logged as `/s/<token>`.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let path = if path.starts_with("/s/") { "/s/<token>" } else { path };
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path, request_id = id)
}

/// `GET /files/{id}/download`: the owner, or staff.
async fn download(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> Response {
    state.domain.records().serve(&id, request).await.map(axum::body::Body::new)
}

/// A domain error as an API answer: `{"error": message}` with the error's status, and the
/// headers that go with it (`WWW-Authenticate` on 401, `Retry-After` on 503).
#[derive(Debug)]
pub struct Failure(pub Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<private_storage::Error> for Failure {
    fn from(e: private_storage::Error) -> Self {
        Self(Error::Storage(e))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0, "request failed");
        }
        let mut response = (status, Json(serde_json::json!({ "error": self.0.message() }))).into_response();
        let headers = response.headers_mut();
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
