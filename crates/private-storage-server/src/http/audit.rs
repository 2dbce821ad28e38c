//! The audit trail over HTTP: the middleware that gives every request its context and records
//! every download and denial with the answer it got, and the trail's readers (`GET /api/audit`,
//! the `/audit` page).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use minijinja::context;
use private_storage::{ServedLink, ShareTarget};
use serde::Deserialize;

use super::Failure;
use super::auth::{Authed, client_ip};
use crate::AppState;
use crate::config::WebhookEvent;
use crate::db::{AuditFilter, AuditRow};
use crate::domain::audit::{Event, REQUEST, RequestContext, actor_name, bounded};
use crate::domain::{Actor, Error};

/// Which download route a path is, if it is one.
enum Download<'a> {
    Record(&'a str),
    Key(&'a str),
    Link,
}

fn download_route(path: &str) -> Option<Download<'_>> {
    if let Some(key) = path.strip_prefix("/private-media/") {
        return Some(Download::Key(key));
    }
    if path.starts_with("/s/") {
        return Some(Download::Link);
    }
    let id = path.strip_prefix("/files/")?.strip_suffix("/download")?;
    (!id.contains('/')).then_some(Download::Record(id))
}

/// An address as `IpAddr`'s `Display` writes it; IPv4 (nearly every client) without the
/// formatting machinery, which costs more than the rest of the event's context.
fn address_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// How a served response's bytes travel, from the answer itself.
fn delivery_of(response: &Response) -> Option<&'static str> {
    let status = response.status();
    let headers = response.headers();
    if headers.contains_key(private_storage::X_ACCEL_REDIRECT) {
        Some("nginx")
    } else if headers.contains_key(private_storage::X_SENDFILE) {
        Some("apache")
    } else if status.is_redirection() && headers.contains_key(http::header::LOCATION) {
        Some("s3-redirect")
    } else if status.is_success() || status == StatusCode::NOT_MODIFIED {
        Some("stream")
    } else {
        None
    }
}

/// Runs the request with its [`RequestContext`] (so that what the domain records carries it),
/// then records a download — served, denied or held — with its answer, and a denial (`403`)
/// on any other route. Inside authentication: requests with an invalid API token never get
/// here (they are counted, not written), and the actor is known.
pub(crate) async fn trail(state: &AppState, request: Request, next: impl AsyncFnOnce(Request) -> Response) -> Response {
    let path = request.uri().path().to_owned();
    let shown = if path.starts_with("/s/") { "/s/<token>" } else { path.as_str() };
    let headers = request.headers();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let context = std::sync::Arc::new(RequestContext {
        route: format!("{} {shown}", request.method()),
        client: client_ip(peer, headers, &state.config.trusted_proxies).map(address_text),
        user_agent: headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(bounded),
        request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(bounded),
    });
    let range = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let actor = request.extensions().get::<Actor>().cloned();
    let is_head = request.method() == http::Method::HEAD;
    let response = REQUEST.scope(context.clone(), next(request)).await;
    let status = response.status();
    let by = |kind: &str| match &actor {
        Some(actor) => Event::by(kind, actor),
        None => Event::new(kind, "anonymous"),
    };
    let event = match download_route(&path) {
        Some(route) => {
            let mut event = by("download");
            match route {
                Download::Record(id) => event = event.file_id(id),
                Download::Key(key) => {
                    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy().into_owned();
                    event = event.file_key(key);
                }
                Download::Link => match response.extensions().get::<ServedLink>() {
                    Some(link) => {
                        if !is_head && (status.is_success() || status.is_redirection()) {
                            let target = match &link.target {
                                ShareTarget::Record(id) => serde_json::json!({ "file_id": id }),
                                ShareTarget::Key(key) => serde_json::json!({ "key": key.as_str() }),
                                _ => serde_json::Value::Null,
                            };
                            let data = serde_json::json!({
                                "link_id": link.link_id, "target": target, "status": status.as_u16(),
                                "range": range, "client": context.client,
                            });
                            state.domain.emit_later(WebhookEvent::LinkUsed, data);
                        }
                        if actor.is_none() {
                            event = Event::new("download", format!("link:{}", link.link_id));
                        }
                        event = event.link(link.link_id.clone());
                        event = match &link.target {
                            ShareTarget::Record(id) => event.file_id(id.clone()),
                            ShareTarget::Key(key) => event.file_key(key.to_string()),
                            _ => event,
                        };
                    }
                    None => match response.extensions().get::<super::links::LinkVisit>() {
                        // An answer without a byte: the page, the password form, a bot, a refusal.
                        Some(visit) => {
                            let kind =
                                if matches!(visit.outcome, "page" | "preview bot") { "link_view" } else { "download" };
                            let event = Event::new(kind, format!("link:{}", visit.link_id));
                            let event = event.link(visit.link_id.clone()).file_id(visit.file_id.clone());
                            let event = event.detail(visit.outcome).status(status.as_u16()).context(&context);
                            state.domain.audit().record(event);
                            return response;
                        }
                        // A forged or malformed token: counted by the share audit, never written.
                        None => return response,
                    },
                },
            }
            // The file's bytes: a refusal's page is not the file.
            let planned = if !status.is_success() {
                None
            } else if is_head {
                Some(0)
            } else {
                response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
            };
            let mut event = event.range(range.as_deref()).bytes(planned);
            if let Some(delivery) = delivery_of(&response) {
                event = event.delivery(delivery);
            }
            event
        }
        None if status == StatusCode::FORBIDDEN => by("denied"),
        None => return response,
    };
    state.domain.audit().record(event.status(status.as_u16()).into_context(context));
    response
}

/// The filters of `GET /api/audit` and `/audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    kind: Option<String>,
    actor: Option<String>,
    file: Option<String>,
    /// RFC 3339 (`2026-12-01T10:00:00Z`) or a day (`2026-12-01`).
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, Error> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let time = |name: &str, v: &Option<String>| match text(v) {
            None => Ok(None),
            Some(v) => parse_time(&v)
                .map(Some)
                .ok_or_else(|| Error::Invalid(format!("{name}: a time such as 2026-12-01 or 2026-12-01T10:00:00Z"))),
        };
        Ok(AuditFilter {
            owner_id: None,
            kind: text(&self.kind),
            actor: text(&self.actor),
            file_id: text(&self.file),
            link_id: None,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            limit: self.limit.unwrap_or(200),
        })
    }
}

/// Microseconds since the epoch of an RFC 3339 time or a day (UTC midnight).
pub fn parse_time(value: &str) -> Option<i64> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        return Some(at.timestamp_micros());
    }
    let day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// An event as the API shows it: its time in RFC 3339 with microseconds.
pub(crate) fn event_json(row: &AuditRow) -> serde_json::Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("time".into(), time_text(row.at).into());
    }
    value
}

pub(super) fn time_text(at: i64) -> String {
    chrono::DateTime::from_timestamp_micros(at).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `GET /api/audit`: staff read every event, users the events on their own files; newest first.
pub async fn api(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let authed = user.ok_or(Failure(Error::Unauthenticated))?.0;
    let events = state.domain.audit_events(&authed.actor(), query.filter()?).await?;
    Ok(Json(serde_json::json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() })))
}

/// `GET /audit`: the same, as a page with the filters as a form.
pub async fn page(
    State(state): State<AppState>,
    user: Option<axum::Extension<Authed>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let Some(axum::Extension(authed)) = user else {
        return axum::response::Redirect::to("/login?next=/audit").into_response();
    };
    let events = match query.filter() {
        Ok(filter) => state.domain.audit_events(&authed.actor(), filter).await,
        Err(e) => Err(e),
    };
    match events {
        Ok(events) => {
            let events: Vec<_> = events
                .iter()
                .map(|e| {
                    context! {
                        time => time_text(e.at), kind => e.kind.clone(), actor => e.actor.clone(),
                        file => e.file_id.clone(), link => e.link_id.clone(), route => e.route.clone(),
                        delivery => e.delivery.clone(), status => e.status, range => e.byte_range.clone(),
                        bytes => e.bytes, client => e.client.clone(), detail => e.detail.clone(),
                    }
                })
                .collect();
            let filters = context! {
                kind => query.kind, actor => query.actor, file => query.file,
                since => query.since, until => query.until,
            };
            let context = context! {
                user => super::web::user_ctx(&authed), csrf => super::web::csrf_of(Some(&authed)),
                events, filters, everyone => authed.actor().sees_everything(), me => actor_name(&authed.actor()),
            };
            super::web::render(&state, StatusCode::OK, "audit.html", context)
        }
        Err(e) => super::web::error_page(&state, Some(&authed), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_routes_are_recognised_and_nothing_else() {
        assert!(matches!(download_route("/files/abc/download"), Some(Download::Record("abc"))));
        assert!(matches!(download_route("/private-media/a/b.pdf"), Some(Download::Key("a/b.pdf"))));
        assert!(matches!(download_route("/s/token"), Some(Download::Link)));
        for other in ["/files/abc", "/files/a/b/download", "/api/files/abc", "/", "/sx"] {
            assert!(download_route(other).is_none(), "{other}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        use std::net::{IpAddr, Ipv4Addr};
        for octet in 0..=255u8 {
            for ip in [Ipv4Addr::new(octet, 0, 10, 255), Ipv4Addr::new(1, octet, 99, octet)] {
                assert_eq!(address_text(IpAddr::V4(ip)), ip.to_string());
            }
        }
        for ip in ["::1", "2001:db8::7", "::ffff:192.0.2.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_text(ip), ip.to_string());
        }
    }

    #[test]
    fn times_parse_as_rfc3339_or_a_day() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("yesterday"), None);
    }
}
