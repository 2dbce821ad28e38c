//! Prometheus counters: requests by status class, bytes served, denied downloads, uploads and
//! upload rejections by reason.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::response::Response;

use crate::AppState;

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 5],
    bytes_served: AtomicU64,
    uploads: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    denied: Mutex<BTreeMap<&'static str, u64>>,
    scans: Mutex<BTreeMap<&'static str, u64>>,
    audit_dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// An upload was refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        *self.rejections.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    /// A request was denied (`download`, `bad_token`, `login`...).
    pub fn denied(&self, what: &'static str) {
        *self.denied.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
    }

    /// A virus scan ended with `outcome` (a scan state, or `error`).
    pub fn scanned(&self, outcome: &'static str) {
        *self.scans.lock().unwrap_or_else(|e| e.into_inner()).entry(outcome).or_default() += 1;
    }

    /// An audit event was not written, for `reason` (`anonymous_rate`, `queue_full`,
    /// `database`).
    pub fn audit_dropped(&self, reason: &'static str) {
        *self.audit_dropped.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    /// An upload was stored.
    pub fn uploaded(&self) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP private_storage_http_requests_total HTTP responses by status class.\n# TYPE private_storage_http_requests_total counter\n");
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "private_storage_http_requests_total{{class=\"{class}\"}} {}",
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP private_storage_bytes_served_total Bytes announced by download responses.\n# TYPE private_storage_bytes_served_total counter\n");
        let _ = writeln!(out, "private_storage_bytes_served_total {}", self.bytes_served.load(Ordering::Relaxed));
        out.push_str(
            "# HELP private_storage_uploads_total Files stored.\n# TYPE private_storage_uploads_total counter\n",
        );
        let _ = writeln!(out, "private_storage_uploads_total {}", self.uploads.load(Ordering::Relaxed));
        out.push_str("# HELP private_storage_upload_rejections_total Uploads refused, by reason.\n# TYPE private_storage_upload_rejections_total counter\n");
        for (reason, n) in self.rejections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "private_storage_upload_rejections_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP private_storage_denied_total Requests denied, by kind.\n# TYPE private_storage_denied_total counter\n");
        for (what, n) in self.denied.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "private_storage_denied_total{{kind=\"{what}\"}} {n}");
        }
        out.push_str(
            "# HELP private_storage_scans_total Virus scans, by outcome.\n# TYPE private_storage_scans_total counter\n",
        );
        for (outcome, n) in self.scans.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "private_storage_scans_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP private_storage_audit_dropped_total Audit events not written, by reason.\n# TYPE private_storage_audit_dropped_total counter\n");
        for (reason, n) in self.audit_dropped.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "private_storage_audit_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        out
    }
}

fn is_download(path: &str) -> bool {
    path.starts_with("/private-media/")
        || path.starts_with("/s/")
        || (path.starts_with("/files/") && path.ends_with("/download"))
}

/// Counts every response (the outermost of [`http::app`](crate::http::app)'s per-request steps).
pub(crate) async fn count(state: &AppState, request: Request, next: impl AsyncFnOnce(Request) -> Response) -> Response {
    let download = is_download(request.uri().path());
    let response = next(request).await;
    let status = response.status();
    let metrics = &state.metrics;
    metrics.requests[(status.as_u16() / 100).clamp(1, 5) as usize - 1].fetch_add(1, Ordering::Relaxed);
    if download {
        if status.is_success() {
            let len = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            metrics.bytes_served.fetch_add(len.unwrap_or(0), Ordering::Relaxed);
        } else if matches!(status.as_u16(), 403 | 404 | 302) {
            metrics.denied("download");
        }
    }
    response
}
