//! `private-storage push`: a tus client that uploads a file to a running server, and resumes
//! where an interrupted run stopped.
//!
//! The upload's URL is remembered per file (its canonical path, size, modification time, and
//! the server) in a small JSON state file, so a second run after a crash, a `Ctrl-C` or a lost
//! connection asks the server where the upload is (`HEAD`) and sends only the rest. Each chunk
//! carries its SHA-256 (`Upload-Checksum`), so a corrupted chunk is refused, not stored. Within
//! one run a failed request is retried a few times, resuming from the server's offset.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How many times one run retries a failed request before giving up.
const RETRIES: u32 = 4;

/// What `push` needs.
#[derive(Debug, Clone)]
pub struct Push {
    /// The file.
    pub file: PathBuf,
    /// The server's base URL (`http://127.0.0.1:8000`).
    pub server: String,
    /// An API token.
    pub token: String,
    /// Bytes per `PATCH`.
    pub chunk: u64,
    /// Where upload URLs are remembered.
    pub state: PathBuf,
}

/// The default state file: `$XDG_STATE_HOME/private-storage/push.json`, or under `~/.local/state`.
pub fn default_state() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".local/state"));
    base.join("private-storage/push.json")
}

/// Uploads the file; returns the location of the stored file (`/api/files/<id>`), unless the
/// answer that said it was lost (the upload was complete already when this run asked).
///
/// # Errors
/// What went wrong, in words for the command line (the server's message for a refusal).
pub async fn push(push: &Push) -> Result<Option<String>, String> {
    let file_error = |e: std::io::Error| format!("{}: {e}", push.file.display());
    let meta = tokio::fs::metadata(&push.file).await.map_err(file_error)?;
    let length = meta.len();
    let name = push.file.file_name().and_then(|n| n.to_str()).ok_or("the file has no name")?.to_owned();
    let canonical = tokio::fs::canonicalize(&push.file).await.map_err(file_error)?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let fingerprint =
        format!("{}|{length}|{}|{}", canonical.display(), modified.map_or(0, |d| d.as_nanos()), push.server);
    let endpoint = format!("{}/api/uploads", push.server.trim_end_matches('/'));
    let client = Client { http: reqwest::Client::new(), token: push.token.clone() };

    let mut known = State::load(&push.state);
    let mut upload = None;
    if let Some(url) = known.urls.get(&fingerprint).cloned() {
        match client.offset(&url).await? {
            Some(offset) => {
                eprintln!("resuming at {offset} of {length} bytes");
                upload = Some((url, offset));
            }
            None => eprintln!("the earlier upload is gone: starting again"),
        }
    }
    let (url, mut offset) = match upload {
        Some(found) => found,
        None => {
            let url = client.create(&endpoint, length, &name).await?;
            known.urls.insert(fingerprint.clone(), url.clone());
            known.save(&push.state)?;
            (url, 0)
        }
    };

    let bar = progress(length, offset);
    let mut file = tokio::fs::File::open(&push.file).await.map_err(file_error)?;
    let mut buf = vec![0u8; push.chunk.min(length.max(1)) as usize];
    let mut failures = 0;
    let location = loop {
        let want = (length - offset).min(buf.len() as u64) as usize;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(file_error)?;
        file.read_exact(&mut buf[..want]).await.map_err(file_error)?;
        match client.append(&url, offset, &buf[..want]).await {
            Ok((new_offset, done)) => {
                offset = new_offset;
                failures = 0;
                bar.set_position(offset);
                if bar.is_hidden() {
                    eprintln!("pushed {offset} of {length} bytes");
                }
                if offset >= length {
                    break done;
                }
            }
            Err(Attempt::Refused(message)) => return Err(message),
            Err(Attempt::Failed(message)) => {
                failures += 1;
                if failures > RETRIES {
                    return Err(format!("{message} (run the same command again to resume)"));
                }
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
                // Where did the bytes get to? Ask, and go on from there.
                offset = client.offset(&url).await?.ok_or("the upload is gone from the server")?;
            }
        }
    };
    bar.finish_and_clear();
    known.urls.remove(&fingerprint);
    known.save(&push.state)?;
    Ok(location)
}

/// A request that did not work: refused by the server (stop), or failed on the way (retry).
enum Attempt {
    Refused(String),
    Failed(String),
}

struct Client {
    http: reqwest::Client,
    token: String,
}

impl Client {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url).header("tus-resumable", "1.0.0").bearer_auth(&self.token)
    }

    async fn create(&self, endpoint: &str, length: u64, name: &str) -> Result<String, String> {
        let metadata = format!("filename {}", base64::engine::general_purpose::STANDARD.encode(name));
        let response = self
            .request(reqwest::Method::POST, endpoint)
            .header("upload-length", length.to_string())
            .header("upload-metadata", metadata)
            .send()
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(refusal(response).await);
        }
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no Location")?;
        Ok(response.url().join(location).map_err(|e| e.to_string())?.to_string())
    }

    /// The upload's offset, or `None` when the server no longer has it.
    async fn offset(&self, url: &str) -> Result<Option<u64>, String> {
        let response = self.request(reqwest::Method::HEAD, url).send().await.map_err(|e| format!("{url}: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(Some(header_number(&response, "upload-offset")?)),
            404 | 410 => Ok(None),
            status => Err(format!("{url}: {status}")),
        }
    }

    /// Sends one chunk; the new offset, and the file's location if it was the last.
    async fn append(&self, url: &str, offset: u64, bytes: &[u8]) -> Result<(u64, Option<String>), Attempt> {
        let checksum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes));
        let sent = self
            .request(reqwest::Method::PATCH, url)
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", format!("sha256 {checksum}"))
            .body(bytes.to_vec())
            .send()
            .await;
        let response = sent.map_err(|e| Attempt::Failed(format!("{url}: {e}")))?;
        match response.status().as_u16() {
            204 => {
                let offset = header_number(&response, "upload-offset").map_err(Attempt::Failed)?;
                let file = response.headers().get("x-file-location").and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok((offset, file))
            }
            // Another offset (a request of ours that got further than we knew), a corrupted
            // chunk, the server busy or restarting: ask where the upload is and go on.
            409 | 460 | 429 | 502 | 503 | 504 => Err(Attempt::Failed(refusal(response).await)),
            _ => Err(Attempt::Refused(refusal(response).await)),
        }
    }
}

fn header_number(response: &reqwest::Response, name: &str) -> Result<u64, String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the server sent no {name}"))
}

/// The server's message for a refusal.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    format!("{status}: {}", text.trim())
}

/// A progress bar on a terminal (hidden otherwise: then each chunk is a line).
fn progress(length: u64, at: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("a valid template"),
    );
    bar.set_position(at);
    bar
}

/// Upload URLs by file fingerprint.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    urls: BTreeMap<String, String>,
}

impl State {
    fn load(path: &Path) -> Self {
        std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
    }

    fn save(&self, path: &Path) -> Result<(), String> {
        let error = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, serde_json::to_vec_pretty(self).expect("JSON")).map_err(error)?;
        std::fs::rename(&temp, path).map_err(error)
    }
}
