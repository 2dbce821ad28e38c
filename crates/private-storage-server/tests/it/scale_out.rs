//! Scale-out on real distributed parts: PostgreSQL, a 3-node Garage cluster (replication
//! factor 3) and two server instances behind nginx. A session started on one instance works on
//! the other; files uploaded through one are listed, downloaded and deleted through the other; a
//! resumable upload started on one is finished on the other; with one Garage node down, uploads
//! and downloads go on.
use crate::common;
use crate::common::peers;

use std::net::SocketAddr;

use crate::common::{pdf, sha256};
use private_storage_server::{AppState, Loader};

async fn instance(pg: &str, endpoint: &str, share_keys: &str) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<(String, String)> = [
        ("data_dir", dir.path().display().to_string()),
        ("database_url", pg.to_owned()),
        ("storage", "s3://media/files".to_owned()),
        ("s3.endpoint", endpoint.to_owned()),
        ("s3.region", "garage".to_owned()),
        ("s3.access_key_id", peers::ACCESS_KEY.to_owned()),
        ("s3.secret_access_key", peers::SECRET_KEY.to_owned()),
        // Garage ignores If-None-Match on writes (S3Storage::check_writes tells).
        ("s3.conditional_writes", "false".to_owned()),
        ("share_keys", share_keys.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Loader::new().flags(&flags).unwrap().build().unwrap();
    (AppState::build(config).await.unwrap(), dir)
}

async fn serve(state: &AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(private_storage_server::serve(state.clone(), listener, std::future::pending()));
    addr
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn upload(http: &reqwest::Client, base: &str, csrf: &str, name: &str, bytes: Vec<u8>) -> String {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let reply = http
        .post(format!("{base}/api/files"))
        .header("x-csrf-token", csrf)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201, "{}", reply.text().await.unwrap());
    reply.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn download(http: &reqwest::Client, base: &str, id: &str) -> (u16, Vec<u8>) {
    let reply = http.get(format!("{base}/files/{id}/download")).send().await.unwrap();
    (reply.status().as_u16(), reply.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_records_and_files_and_survive_a_storage_node_loss() {
    let pg = peers::Postgres::start();
    let mut garage = peers::GarageCluster::start(3).await;
    let keys = format!("k1={}", private_storage_server::domain::random_token(32));
    // Both start at once: the migrations are serialised by an advisory lock.
    let ((a, _da), (b, _db)) = tokio::join!(
        instance(&pg.url, &garage.nodes[0].endpoint, &keys),
        instance(&pg.url, &garage.nodes[1].endpoint, &keys)
    );
    let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
    let nginx = peers::Nginx::start(&[addr_a, addr_b]);
    let (base_a, base_b, base_lb) =
        (format!("http://{addr_a}"), format!("http://{addr_b}"), format!("http://{}", nginx.addr));
    a.db.create_user("ada", &private_storage_server::domain::hash_password("password-ada"), false, false)
        .await
        .unwrap();

    // Log in through A; the session works on B and through the balancer.
    let http = client();
    let page = http.get(format!("{base_a}/login")).send().await.unwrap().text().await.unwrap();
    let csrf = common::field(&page, "csrf");
    let login = http
        .post(format!("{base_a}/login"))
        .form(&[("username", "ada"), ("password", "password-ada"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let index = http.get(format!("{base_b}/")).send().await.unwrap();
    assert_eq!(index.status(), 200, "B knows A's session");
    let session_csrf = common::field(&index.text().await.unwrap(), "csrf");

    // Upload through A, list and download through B.
    let bytes = pdf(6 * 1024 * 1024 + 3);
    let id = upload(&http, &base_a, &session_csrf, "Plan B.pdf", bytes.clone()).await;
    let listed: serde_json::Value = http.get(format!("{base_b}/api/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!((listed["total"].as_i64(), listed["files"][0]["id"].as_str()), (Some(1), Some(id.as_str())));
    let (status, got) = download(&http, &base_b, &id).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&bytes)));
    for _ in 0..4 {
        let (status, got) = download(&http, &base_lb, &id).await;
        assert_eq!((status, got.len()), (200, bytes.len()), "{}", nginx.log());
    }
    // A share link issued by A is honoured by B, and revoked for both.
    let link: serde_json::Value = http
        .post(format!("{base_a}/api/files/{id}/links"))
        .header("x-csrf-token", &session_csrf)
        .json(&serde_json::json!({ "expires": "1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap();
    assert_eq!(reqwest::get(format!("{base_b}{url}")).await.unwrap().status(), 200);
    b.db.revoke_link(link["link_id"].as_str().unwrap(), i64::MAX).await.unwrap();
    assert_eq!(reqwest::get(format!("{base_a}{url}")).await.unwrap().status(), 403);

    // A resumable upload started on A is continued on B: its bytes and state are the bucket's.
    let tus = |method: reqwest::Method, url: String| {
        http.request(method, url).header("tus-resumable", "1.0.0").header("x-csrf-token", &session_csrf)
    };
    let big = pdf(12 * 1024 * 1024 + 5);
    let created = tus(reqwest::Method::POST, format!("{base_a}/api/uploads"))
        .header("upload-length", big.len().to_string())
        .header("upload-metadata", "filename UmVzdW1lZC5wZGY=")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let first = tus(reqwest::Method::PATCH, format!("{base_a}{location}"))
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(big[..9 * 1024 * 1024].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 204);
    let head = tus(reqwest::Method::HEAD, format!("{base_b}{location}")).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], (9 * 1024 * 1024).to_string().as_str(), "B knows A's upload");
    let rest = tus(reqwest::Method::PATCH, format!("{base_b}{location}"))
        .header("upload-offset", (9 * 1024 * 1024).to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(big[9 * 1024 * 1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 204);
    let file = rest.headers()["x-file-location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (status, got) = download(&http, &base_a, &file).await;
    assert_eq!((status, sha256(&got)), (200, sha256(&big)), "the file B completed, read on A");
    let gone = http.delete(format!("{base_a}/api/files/{file}")).header("x-csrf-token", &session_csrf).send().await;
    assert_eq!(gone.unwrap().status(), 204);

    // Delete through B: gone on both.
    let deleted =
        http.delete(format!("{base_b}/api/files/{id}")).header("x-csrf-token", &session_csrf).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(download(&http, &base_a, &id).await.0, 403);
    let listed: serde_json::Value = http.get(format!("{base_a}/api/files")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["total"], 0);

    // One of three storage nodes goes down: both instances keep uploading and downloading.
    garage.nodes[2].stop();
    for base in [&base_a, &base_b, &base_lb] {
        let bytes = pdf(2 * 1024 * 1024 + 11);
        let id = upload(&http, base, &session_csrf, "after the loss.pdf", bytes.clone()).await;
        for reader in [&base_a, &base_b] {
            let (status, got) = download(&http, reader, &id).await;
            assert_eq!((status, sha256(&got)), (200, sha256(&bytes)), "uploaded via {base}, read via {reader}");
        }
    }
    assert_eq!(http.get(format!("{base_a}/readyz")).send().await.unwrap().status(), 200);
}
