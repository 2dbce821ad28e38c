//! A real browser — Debian's headless Chromium — uses share links as an `<img>` source and as
//! a `<video>` source that seeks (Range requests), and is refused once the links are revoked.
use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{Html, Response};
use axum::routing::get;
use base64::Engine;
use private_storage::{
    MemoryRevocations, MemoryStorage, ObjectKey, ServePrivate, ServeShared, Share, ShareKeys, ShareLinks, StorageExt,
};

/// A 1×1 PNG.
const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// A mono 16-bit PCM WAV of a 440 Hz tone: long enough (≈20 MB) that a browser seeks with Range
/// requests instead of buffering it all.
fn tone(seconds: u32) -> Vec<u8> {
    let rate = 22_050u32;
    let samples = rate * seconds;
    let mut wav = Vec::with_capacity(44 + samples as usize * 2);
    wav.extend(b"RIFF");
    wav.extend((36 + samples * 2).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes()); // PCM
    wav.extend(1u16.to_le_bytes()); // mono
    wav.extend(rate.to_le_bytes());
    wav.extend((rate * 2).to_le_bytes());
    wav.extend(2u16.to_le_bytes());
    wav.extend(16u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend((samples * 2).to_le_bytes());
    for i in 0..samples {
        let v = ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16;
        wav.extend(v.to_le_bytes());
    }
    wav
}

// The handlers are attributes, so they are in place before either element starts loading (a
// script placed after the elements can miss an image that loaded first).
const PAGE: &str = r#"<!doctype html><html><head><script>
const set = (id, text) => document.getElementById(id).textContent = text;
function seek(video) { set('video-state', 'metadata'); video.currentTime = video.duration * 0.9; }
</script></head><body>
<p id="img-state">pending</p><p id="video-state">pending</p>
<img id="img" src="IMG" onload="set('img-state', 'loaded ' + this.naturalWidth + 'x' + this.naturalHeight)" onerror="set('img-state', 'error')">
<video id="video" src="VIDEO" preload="auto" muted onloadedmetadata="seek(this)" onseeked="set('video-state', 'seeked to ' + Math.round(this.currentTime))" onerror="set('video-state', 'error')"></video>
</body></html>"#;

/// Headless Chromium on `url`; the DOM once the page's scripts settled.
fn dump_dom(url: &str, profile: &Path) -> String {
    let out = Command::new(common::program("chromium"))
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--mute-audio",
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in {dom}")) + id.len() + 6;
    &dom[start..start + dom[start..].find('<').unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_an_image_and_seeks_a_video_through_links_until_they_are_revoked() {
    let storage = MemoryStorage::new();
    storage
        .put_bytes(
            &ObjectKey::new("img/pixel.png").unwrap(),
            base64::engine::general_purpose::STANDARD.decode(PIXEL).unwrap(),
        )
        .await
        .unwrap();
    storage.put_bytes(&ObjectKey::new("media/tone.wav").unwrap(), tone(450)).await.unwrap();
    let links = ShareLinks::new(ShareKeys::new("k1", [3u8; 32]).unwrap(), MemoryRevocations::new()).base_url("/s/");
    let img = links
        .issue(Share::key(ObjectKey::new("img/pixel.png").unwrap()).expires_in(Duration::from_secs(600)))
        .await
        .unwrap();
    let video = links
        .issue(Share::key(ObjectKey::new("media/tone.wav").unwrap()).expires_in(Duration::from_secs(600)))
        .await
        .unwrap();

    // Every request the browser makes: (path, Range header, status).
    let log: Arc<Mutex<Vec<(String, Option<String>, u16)>>> = Arc::default();
    let recorder = log.clone();
    let page = PAGE.replace("IMG", &img.url).replace("VIDEO", &video.url);
    let app = axum::Router::new()
        .route("/page", get(move || async move { Html(page) }))
        .nest_service("/s", ServeShared::new(links.clone(), ServePrivate::new(storage)))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let log = recorder.clone();
            async move {
                let path = request.uri().path().to_owned();
                let range = request.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let response: Response = next.run(request).await;
                log.lock().unwrap().push((path, range, response.status().as_u16()));
                response
            }
        }));
    let addr = common::serve(app).await;
    let url = format!("http://{addr}/page");

    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking({
        let (url, dir) = (url.clone(), profile.path().to_owned());
        move || dump_dom(&url, &dir)
    })
    .await
    .unwrap();
    assert_eq!(state(&dom, "img-state"), "loaded 1x1", "{dom}");
    assert!(state(&dom, "video-state").starts_with("seeked to 4"), "seeked to ~405 s: {dom}");
    let requests = log.lock().unwrap().clone();
    let video_path = video.url.as_str();
    let seeks: Vec<_> = requests
        .iter()
        .filter(|(path, range, status)| {
            path == video_path && *status == 206 && range.as_deref().is_some_and(|r| !r.starts_with("bytes=0-"))
        })
        .collect();
    assert!(!seeks.is_empty(), "the seek was a Range request answered 206: {requests:?}");

    links.revoke(&img).await.unwrap();
    links.revoke(&video).await.unwrap();
    log.lock().unwrap().clear();
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, profile.path())).await.unwrap();
    assert_eq!(state(&dom, "img-state"), "error", "{dom}");
    assert_eq!(state(&dom, "video-state"), "error", "{dom}");
    let requests = log.lock().unwrap().clone();
    assert!(
        requests.iter().filter(|(p, _, _)| p.starts_with("/s/")).all(|(_, _, status)| *status == 403),
        "{requests:?}"
    );
}

/// The same seek over an encrypted store: each Range request decrypts only the chunks it
/// touches, and the browser plays on from the middle.
#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_seeks_a_video_stored_encrypted() {
    use private_storage::{CurrentUser, EncryptedStorage, Keyring, User};
    let keys = Keyring::parse(&Keyring::generate_entry("k1").unwrap()).unwrap();
    let raw = MemoryStorage::new();
    let storage = EncryptedStorage::new(raw.clone(), keys).unwrap();
    let wav = tone(450);
    storage.put_bytes(&ObjectKey::new("media/tone.wav").unwrap(), wav.clone()).await.unwrap();
    assert!(
        raw.read(&ObjectKey::new("media/tone.wav").unwrap()).await.unwrap()[208..252] != wav[..44],
        "stored sealed"
    );

    let log: Arc<Mutex<Vec<(Option<String>, u16)>>> = Arc::default();
    let recorder = log.clone();
    let page = PAGE.replace("IMG", &format!("data:image/png;base64,{PIXEL}")).replace("VIDEO", "/media/media/tone.wav");
    let app = axum::Router::new()
        .route("/page", get(move || async move { Html(page) }))
        .nest_service("/media", ServePrivate::new(storage))
        .layer(middleware::from_fn(move |mut request: Request, next: Next| {
            let log = recorder.clone();
            async move {
                request.extensions_mut().insert(CurrentUser::new(User::new("root").superuser()));
                let range = request.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let media = request.uri().path().starts_with("/media/");
                let response: Response = next.run(request).await;
                if media {
                    log.lock().unwrap().push((range, response.status().as_u16()));
                }
                response
            }
        }));
    let addr = common::serve(app).await;
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/page");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, profile.path())).await.unwrap();
    assert!(state(&dom, "video-state").starts_with("seeked to 4"), "seeked to ~405 s: {dom}");
    let requests = log.lock().unwrap().clone();
    let seeks = requests
        .iter()
        .filter(|(range, status)| *status == 206 && range.as_deref().is_some_and(|r| !r.starts_with("bytes=0-")));
    assert!(seeks.count() > 0, "the seek was a Range request answered 206: {requests:?}");
}
