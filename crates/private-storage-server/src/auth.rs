//! Who is asking: passwords (argon2id), API tokens and sessions (only hashes stored), CSRF
//! tokens, and a limit on login attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::StatusCode;
use http::header::{AUTHORIZATION, COOKIE};
use private_storage::{CurrentUser, User};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::db::UserRow;

/// The session cookie.
pub const SESSION_COOKIE: &str = "ps_session";

/// `bytes` random bytes from the OS, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a secret: what is stored of tokens and session ids.
pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id hash in PHC format.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 hashes any password").to_string()
}

/// Checks a password against a stored hash (constant time inside argon2).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash to verify against when the user does not exist, so that a login for an unknown name
/// costs the same time as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password anyone has"))
}

/// The logged-in user of a request, as handlers see it.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The account.
    pub user: Arc<UserRow>,
    /// The session (cookie logins), for CSRF checks and logout.
    pub session: Option<SessionInfo>,
}

/// A cookie session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// SHA-256 of the session id.
    pub id_hash: String,
    /// The CSRF token of the session's forms.
    pub csrf: String,
}

impl Authed {
    /// Staff (or superuser): sees every file.
    pub fn is_staff(&self) -> bool {
        self.user.is_staff || self.user.is_superuser
    }

    /// Whether a form or header CSRF token matches the session's (always true for token
    /// authentication, which a browser never sends on its own).
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        match &self.session {
            None => true,
            Some(session) => presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(session.csrf.as_bytes()))),
        }
    }
}

fn identity(user: &UserRow) -> CurrentUser {
    let mut identity = User::new(user.id.clone());
    if user.is_staff || user.is_superuser {
        identity = identity.staff();
    }
    if user.is_superuser {
        identity = identity.superuser();
    }
    CurrentUser::new(identity)
}

/// A cookie's value in a request.
pub fn cookie<'a>(request: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Identifies the request from `Authorization: Bearer` or the session cookie and inserts
/// [`Authed`] and the library's `CurrentUser`. A bearer token that is not valid is refused
/// outright (401); a database that cannot answer fails the request closed (503).
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let found = if let Some(token) = bearer {
        match state.db.user_by_token(&sha256_hex(&token)).await {
            Ok(Some(user)) => Some(Authed { user: Arc::new(user), session: None }),
            Ok(None) => {
                state.metrics.denied("bad_token");
                let mut response = crate::api::json_error(StatusCode::UNAUTHORIZED, "The API token is not valid.");
                response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                return response;
            }
            Err(e) => return unavailable(e),
        }
    } else if let Some(id) = cookie(&parts, SESSION_COOKIE) {
        let id_hash = sha256_hex(id);
        match state.db.session(&id_hash).await {
            Ok(Some((user, csrf))) => {
                Some(Authed { user: Arc::new(user), session: Some(SessionInfo { id_hash, csrf }) })
            }
            Ok(None) => None, // expired or logged out: anonymous
            Err(e) => return unavailable(e),
        }
    } else {
        None
    };
    if let Some(authed) = found {
        parts.extensions.insert(identity(&authed.user));
        parts.extensions.insert(authed);
    }
    next.run(Request::from_parts(parts, body)).await
}

fn unavailable(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "database unavailable: request refused");
    (StatusCode::SERVICE_UNAVAILABLE, [(http::header::RETRY_AFTER, "5")], "The service is temporarily unavailable.")
        .into_response()
}

/// The client's address: the peer, or — when the peer is a trusted reverse proxy — the nearest
/// untrusted address in `X-Forwarded-For` (proxies append to it, so the right end is theirs).
pub fn client_ip(peer: Option<IpAddr>, headers: &http::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut ip = peer?;
    if !trusted.contains(&ip) {
        return Some(ip);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.into_iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(hop) if trusted.contains(&hop) => ip = hop,
            Ok(hop) => return Some(hop),
            Err(_) => break, // garbage: stop at the last address we could trust
        }
    }
    Some(ip)
}

/// Failed logins per (name, address) in a sliding window: after `max` failures, further
/// attempts are refused until the window has passed. Per instance.
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<(String, Option<IpAddr>), (u32, Instant)>>,
}

impl LoginLimiter {
    /// At most `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, failures: Mutex::default() }
    }

    /// Whether another attempt is allowed now.
    pub fn allowed(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_lowercase(), ip);
        match failures.get(&key) {
            Some((_, since)) if since.elapsed() > self.window => {
                failures.remove(&key);
                true
            }
            Some((count, _)) => *count < self.max,
            None => true,
        }
    }

    /// Records a failure.
    pub fn failed(&self, name: &str, ip: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| since.elapsed() <= self.window);
        }
        let entry = failures.entry((name.to_lowercase(), ip)).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// Forgets failures after a success.
    pub fn succeeded(&self, name: &str, ip: Option<IpAddr>) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&(name.to_lowercase(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(
            client_ip(Some(proxy), &headers, &[proxy]),
            Some("203.0.113.7".parse().unwrap()),
            "the proxy's own entry, not the client's claim"
        );
        assert_eq!(client_ip(Some(proxy), &headers, &[]), Some(proxy), "an untrusted peer's header is ignored");
        let direct: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(Some(direct), &headers, &[proxy]), Some(direct));
        headers.insert("x-forwarded-for", "203.0.113.7, 10.0.0.2".parse().unwrap());
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(Some(proxy), &headers, &[proxy, inner]),
            Some("203.0.113.7".parse().unwrap()),
            "two proxies deep"
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(client_ip(Some(proxy), &headers, &[proxy]), Some(proxy));
        assert_eq!(client_ip(None, &headers, &[proxy]), None);
    }

    #[test]
    fn the_limiter_refuses_after_max_failures_and_forgets_after_success() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(900));
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            assert!(limiter.allowed("Ada", ip));
            limiter.failed("Ada", ip);
        }
        assert!(!limiter.allowed("ada", ip), "names are compared case-insensitively");
        assert!(limiter.allowed("bob", ip));
        limiter.succeeded("ada", ip);
        assert!(limiter.allowed("ada", ip));
    }
}
