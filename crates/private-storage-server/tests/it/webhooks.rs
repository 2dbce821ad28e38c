//! Webhooks against a receiver on loopback that fails the first attempts: every event
//! delivered, signatures verify, nothing acknowledged twice, nothing lost across a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use hmac::{KeyInit, Mac};
use http::{HeaderMap, Request, StatusCode};
use private_storage_server::{AppState, Loader, app};
use serde_json::Value;
use test_support::{Clamd, EICAR};

use crate::common::{Auth, TestServer, pdf};

const SECRET: &str = "whsec_c2VjcmV0LW9mLXRoZS13ZWJob29rLXRlc3Q=";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: String,
    answered: u16,
}

/// A webhook receiver: fails the first `fail_first` requests (503), and everything while
/// `down`; verifies nothing itself (the test does).
#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    bad_signatures: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let receiver = Receiver { fail_first: Arc::new(AtomicUsize::new(fail_first)), ..Default::default() };
        let handler = receiver.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let receiver = handler.clone();
                async move { receiver.receive(&headers, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (receiver, url)
    }

    fn receive(&self, headers: &HeaderMap, body: String) -> StatusCode {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (id, timestamp, signature) =
            (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
        // The receiver's side of Standard Webhooks: the secret after `whsec_` is base64.
        let key = base64::engine::general_purpose::STANDARD.decode(&SECRET["whsec_".len()..]).unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        if signature != expected {
            self.bad_signatures.fetch_add(1, Ordering::SeqCst);
        }
        let fail = self.down.load(Ordering::SeqCst)
            || self.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let answered = if fail { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        self.log.lock().unwrap().push(Received { id, body, answered: answered.as_u16() });
        answered
    }

    /// Acknowledged deliveries by id: (how many times acknowledged, the event).
    fn acknowledged(&self) -> BTreeMap<String, (usize, Value)> {
        let mut acks = BTreeMap::new();
        for r in self.log.lock().unwrap().iter().filter(|r| r.answered == 200) {
            let entry = acks.entry(r.id.clone()).or_insert((0, serde_json::from_str(&r.body).unwrap()));
            entry.0 += 1;
        }
        acks
    }

    fn events_acknowledged(&self) -> Vec<String> {
        let mut types: Vec<String> =
            self.acknowledged().values().map(|(_, e)| e["type"].as_str().unwrap().to_owned()).collect();
        types.sort();
        types
    }

    async fn wait_for(&self, what: &str, acknowledged: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acknowledged().len() < acknowledged {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn instance(dir: &std::path::Path, url: &str, clamd: &Clamd) -> TestServer {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\nquota_bytes = \"100000\"\nwebhook_backoff = \"200ms\"\nscan = \"clamav\"\n\
             clamd_address = \"127.0.0.1:{port}\"\nscan_max_size = \"1MiB\"\n\n[[webhook]]\nurl = \"{url}\"\n\
             secret = \"{SECRET}\"\nevents = [\"file.created\", \"file.deleted\", \"scan.infected\", \"link.used\", \
             \"link.limit_reached\", \"quota.exceeded\"]\n",
            data = dir.join("data").display(),
            port = clamd.port,
        ),
    )
    .unwrap();
    let config = Loader::new().file(&config).unwrap().build().unwrap();
    let state = AppState::build(config).await.unwrap();
    TestServer { app: app(state.clone()), state, dir: tempfile::tempdir().unwrap() }
}

#[tokio::test]
async fn every_event_is_delivered_signed_once_acknowledged_and_survives_a_restart() {
    let clamd = Clamd::start(1 << 20).await;
    let (receiver, url) = Receiver::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let s = instance(dir.path(), &url, &clamd).await;
    let delivering = tokio::spawn(s.state.domain.clone().deliver_forever());
    let ada = s.user("ada", false, false).await;
    let root = s.user("root", true, true).await;

    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(1000)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let infected = s.upload("/api/files", &Auth::Bearer(&ada), &[], "eicar.txt", EICAR).await;
    assert_eq!(infected.status, 201);
    // Not before the scan: a receiver that fetched the file now would get 423.
    let queued = s.state.db.deliveries(&url, 10).await.unwrap();
    assert!(queued.iter().all(|d| d.event != "file.created"), "nothing is created before its scan: {queued:?}");
    assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 2);
    let link = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"expires":"1h"}"#))
        .unwrap();
    let link = s.send(link).await.json()["url"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&link, &Auth::None).await.status, 200);
    let once = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"max_downloads":1}"#))
        .unwrap();
    let once = s.send(once).await.json()["url"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&once, &Auth::None).await.status, 200);
    let over = s.upload("/api/files", &Auth::Bearer(&ada), &[], "big.pdf", &pdf(200_000)).await;
    assert_eq!(over.status, 507);
    let delete = Request::delete(format!("/api/files/{id}"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(delete).await.status, 204);

    receiver.wait_for("seven events", 7).await;
    assert_eq!(
        receiver.events_acknowledged(),
        [
            "file.created",
            "file.deleted",
            "link.limit_reached",
            "link.used",
            "link.used",
            "quota.exceeded",
            "scan.infected"
        ]
    );
    let acks = receiver.acknowledged();
    let created = acks.values().find(|(_, e)| e["type"] == "file.created").unwrap();
    assert_eq!(
        (created.1["data"]["file"]["id"].as_str(), created.1["data"]["file"]["scan"].as_str()),
        (Some(&*id), Some("clean"))
    );
    let infected = acks.values().find(|(_, e)| e["type"] == "scan.infected").unwrap();
    assert_eq!(infected.1["data"]["signature"], "Eicar-Test-Signature.UNOFFICIAL");
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0, "every signature verifies");
    let failed_then_retried = receiver.log.lock().unwrap().iter().filter(|r| r.answered == 503).count();
    assert_eq!(failed_then_retried, 3, "the first three attempts failed and were retried");

    // The delivery log, for staff: each acknowledgement is recorded once the receiver's answer
    // is in (just after the receiver logged it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (log, deliveries) = loop {
        let log = s.get("/api/webhooks", &Auth::Bearer(&root)).await;
        assert_eq!(log.status, 200, "{}", log.text());
        let deliveries = log.json()["webhooks"][0]["deliveries"].as_array().unwrap().clone();
        if deliveries.iter().all(|d| d["delivered"].is_i64()) {
            break (log, deliveries);
        }
        assert!(Instant::now() < deadline, "deliveries not recorded as delivered: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(deliveries.len(), 7);
    assert_eq!(deliveries.iter().map(|d| d["attempts"].as_i64().unwrap()).sum::<i64>(), 7 + 3);
    assert!(!log.text().contains(SECRET), "the secret is never shown");
    assert_eq!(s.get("/api/webhooks", &Auth::Bearer(&ada)).await.status, 403);

    // A restart with a delivery still failing: it is sent by the next process.
    receiver.down.store(true, Ordering::SeqCst);
    let later = s.upload("/api/files", &Auth::Bearer(&ada), &[], "b.pdf", &pdf(500)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.state.domain.scan_waiting().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !receiver.log.lock().unwrap().iter().any(|r| r.answered == 503 && r.body.contains(&later)) {
        assert!(Instant::now() < deadline, "the delivery was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delivering.abort();
    drop(s);
    receiver.down.store(false, Ordering::SeqCst);
    let s = instance(dir.path(), &url, &clamd).await;
    let delivering = tokio::spawn(s.state.domain.clone().deliver_forever());
    receiver.wait_for("the delivery queued before the restart", 8).await;
    let acks = receiver.acknowledged();
    assert!(acks.values().any(|(_, e)| e["data"]["file"]["id"] == later.as_str()));
    // One more round: nothing acknowledged is sent again.
    s.state.domain.deliver_due().await.unwrap();
    assert!(receiver.acknowledged().values().all(|(n, _)| *n == 1), "no duplicates once acknowledged");
    delivering.abort();
}
