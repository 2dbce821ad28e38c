//! Who is asking, over HTTP: `Authorization: Bearer` tokens and session cookies become an
//! [`Authed`] (and the domain's [`Actor`], and the library's `CurrentUser`) in the request;
//! CSRF tokens; the client's address behind trusted proxies.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::header::{AUTHORIZATION, COOKIE};
use private_storage::{CurrentUser, User};
use subtle::ConstantTimeEq;

use super::Failure;
use crate::AppState;
use crate::db::UserRow;
use crate::domain::{Actor, Error};

/// The session cookie (`__Host-ps_session` over TLS).
pub const SESSION_COOKIE: &str = "ps_session";

/// Whether the request came over TLS: `public_url` is `https://`, or a trusted proxy says so
/// (`X-Forwarded-Proto: https`). Decided once, by [`authenticate`], for every request. Over
/// TLS, cookies are `Secure` and their names carry the `__Host-` prefix, which browsers
/// accept only from a secure origin, for the whole host (no `Domain`) and `Path=/`: a
/// sibling subdomain or a plain-HTTP page cannot set or shadow them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tls(pub bool);

impl Tls {
    /// A cookie's name as this request carries it.
    pub fn cookie_name(self, base: &str) -> String {
        if self.0 { format!("__Host-{base}") } else { base.to_owned() }
    }
}

fn came_over_tls(state: &AppState, parts: &http::request::Parts) -> bool {
    if state.config.secure_cookies() {
        return true;
    }
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|ip| state.config.trusted_proxies.contains(&ip));
    // The nearest proxy's word: the last value it appended.
    let proto =
        parts.headers.get_all("x-forwarded-proto").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    from_proxy && proto.last().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
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
    /// The domain's view of this user.
    pub fn actor(&self) -> Actor {
        Actor::User(self.user.clone())
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
/// [`Authed`], the domain's [`Actor`] and the library's `CurrentUser`. A bearer token that is
/// not valid is refused outright (401); a database that cannot answer fails the request closed
/// (503).
pub(crate) async fn authenticate(
    state: &AppState,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let tls = Tls(came_over_tls(state, &parts));
    parts.extensions.insert(tls);
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found = if let Some(token) = bearer {
        match state.domain.user_by_token(token).await {
            Ok(user) => Some(Authed { user, session: None }),
            Err(e) => {
                if matches!(e, Error::BadToken) {
                    state.metrics.denied("bad_token");
                }
                return axum::response::IntoResponse::into_response(Failure(e));
            }
        }
    } else if let Some(id) = cookie(&parts, &tls.cookie_name(SESSION_COOKIE)) {
        match state.domain.session(id).await {
            Ok(Some(found)) => Some(Authed {
                user: Arc::new(found.user),
                session: Some(SessionInfo { id_hash: crate::domain::sha256_hex(id), csrf: found.csrf }),
            }),
            Ok(None) => None, // expired or logged out: anonymous
            Err(e) => return axum::response::IntoResponse::into_response(Failure(e)),
        }
    } else {
        None
    };
    if let Some(authed) = found {
        parts.extensions.insert(identity(&authed.user));
        parts.extensions.insert(authed.actor());
        parts.extensions.insert(authed);
    }
    next(Request::from_parts(parts, body)).await
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
