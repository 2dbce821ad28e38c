//! The server on a real socket: a browser-like client with cookies, many concurrent
//! downloads, slow clients, the per-user upload cap, and a graceful shutdown that lets a
//! running download finish.
use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{pdf, server, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn run(s: &common::TestServer) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(private_storage_server::serve(s.state.clone(), listener, async move {
        let _ = stopped.await;
    }));
    Running { addr, stop: Some(stop), done }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn upload(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    name: &str,
    bytes: Vec<u8>,
) -> serde_json::Value {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let reply = http
        .post(format!("http://{addr}/api/files"))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    reply.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_like_client_logs_in_uploads_downloads_and_logs_out() {
    let s = server(&[]).await;
    s.user("ada", false, false).await;
    let running = run(&s).await;
    let base = format!("http://{}", running.addr);
    let http = client();
    let page = http.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    let csrf = common::field(&page, "csrf");
    let login = http
        .post(format!("{base}/login"))
        .form(&[("username", "ada"), ("password", "password-ada"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let index = http.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    let session_csrf = common::field(&index, "csrf");
    let bytes = pdf(3 * 1024 * 1024 + 5);
    let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name("big.pdf");
    let form = reqwest::multipart::Form::new().text("csrf", session_csrf.clone()).part("file", part);
    let uploaded = http.post(format!("{base}/upload")).multipart(form).send().await.unwrap();
    assert_eq!(uploaded.status(), 303);
    let files: serde_json::Value = http.get(format!("{base}/api/files")).send().await.unwrap().json().await.unwrap();
    let id = files["files"][0]["id"].as_str().unwrap().to_owned();
    let got = http.get(format!("{base}/files/{id}/download")).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&bytes));
    let out = http.post(format!("{base}/logout")).form(&[("csrf", &session_csrf)]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(
        http.get(format!("{base}/files/{id}/download")).send().await.unwrap().status(),
        403,
        "denied after logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_downloads_arrive_intact() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let running = run(&s).await;
    let bytes = pdf(5 * 1024 * 1024);
    let expected = sha256(&bytes);
    let id = upload(&client(), running.addr, &ada, "five.pdf", bytes).await["id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let downloads = (0..200).map(|_| {
        let (http, url, token) = (http.clone(), format!("http://{}/files/{id}/download", running.addr), ada.clone());
        tokio::spawn(async move {
            let reply = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(reply.status(), 200);
            sha256(&reply.bytes().await.unwrap())
        })
    });
    for hash in futures_util::future::join_all(downloads).await {
        assert_eq!(hash.unwrap(), expected);
    }
}

/// Files larger than a single read go out by `sendfile`: whole, in ranges, and one response
/// after another on one kept-alive connection, with small answers between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_by_the_kernel_arrive_whole_in_ranges_and_one_after_another() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let running = run(&s).await;
    let (big, medium, small) = (pdf(5 * 1024 * 1024 + 3), pdf(100 * 1024), pdf(1024));
    let mut ids = Vec::new();
    for (name, bytes) in [("big.pdf", &big), ("medium.pdf", &medium), ("small.pdf", &small)] {
        ids.push(upload(&client(), running.addr, &ada, name, bytes.clone()).await["id"].as_str().unwrap().to_owned());
    }
    // One connection for everything.
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let url = |i: usize| format!("http://{}/files/{}/download", running.addr, ids[i]);
    let get = |i: usize, range: Option<&'static str>| {
        let mut request = http.get(url(i)).bearer_auth(&ada);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        async move {
            let reply = request.send().await.unwrap();
            (reply.status().as_u16(), reply.bytes().await.unwrap())
        }
    };
    for _ in 0..2 {
        assert_eq!(get(0, None).await, (200, big.clone().into()));
        assert_eq!(get(1, None).await, (200, medium.clone().into()));
        assert_eq!(get(2, None).await, (200, small.clone().into()));
        assert_eq!(get(0, Some("bytes=1000-3000000")).await, (206, big[1000..3_000_001].to_vec().into()));
        assert_eq!(get(0, Some("bytes=-5")).await, (206, big[big.len() - 5..].to_vec().into()));
        let (status, parts) = get(0, Some("bytes=0-9,4000000-4199999")).await;
        assert_eq!(status, 206);
        let find = |needle: &[u8]| parts.windows(needle.len()).any(|w| w == needle);
        assert!(find(&big[..10]) && find(&big[4_000_000..4_200_000]), "both parts in the multipart answer");
        let head = http.head(url(0)).bearer_auth(&ada).send().await.unwrap();
        assert_eq!(head.headers()["content-length"], big.len().to_string().as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_hold_up_others() {
    let s = server(&[("header_read_timeout", "1s")]).await;
    let ada = s.user("ada", false, false).await;
    let running = run(&s).await;
    // 100 connections that trickle their headers and never finish them.
    let mut slow = partial_requests(running.addr, 100, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    // A normal client is served meanwhile.
    let reply = reqwest::Client::new()
        .get(format!("http://{}/api/files", running.addr))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // And the server closes every slow connection once the header timeout passes.
    for socket in &mut slow {
        // A 408 before closing is fine.
        let closed = tokio::time::timeout(Duration::from_secs(10), until_closed(socket)).await;
        assert!(closed.is_ok(), "a slow connection stayed open past the header timeout");
    }
}

/// Behind a TLS-terminating proxy that is trusted, cookies are `Secure` and `__Host-`; an
/// untrusted client cannot claim TLS with the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_when_a_trusted_proxy_says_the_request_came_over_tls() {
    for (trusted, proto, secure) in [("127.0.0.1", "https", true), ("127.0.0.1", "http", false), ("", "https", false)] {
        let s = server(&[("trusted_proxies", trusted)]).await;
        let running = run(&s).await;
        let reply = reqwest::Client::new()
            .get(format!("http://{}/login", running.addr))
            .header("x-forwarded-proto", proto)
            .send()
            .await
            .unwrap();
        let cookie = reply.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert_eq!(
            (cookie.starts_with("__Host-ps_login_csrf="), cookie.contains("; Secure")),
            (secure, secure),
            "trusted {trusted:?}, {proto}: {cookie}"
        );
    }
}

/// `n` connections that have each sent `head` and nothing more.
async fn partial_requests(addr: SocketAddr, n: usize, head: &[u8]) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(head).await.unwrap();
        sockets.push(socket);
    }
    sockets
}

/// Reads until the server closes the connection; whatever it sent (a 408, say) is returned.
async fn until_closed(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let s = server(&[("header_read_timeout", "1s"), ("max_connections", "2000")]).await;
    let ada = s.user("ada", false, false).await;
    let running = run(&s).await;
    // 1,000 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(running.addr).await.unwrap());
    }
    let reply = reqwest::Client::new()
        .get(format!("http://{}/api/files", running.addr))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "a normal client is served meanwhile");
    // Every one is closed by the server within the timeout and a margin.
    let all_closed = tokio::time::timeout(Duration::from_secs(8), async {
        for socket in &mut idle {
            until_closed(socket).await;
        }
    })
    .await;
    assert!(all_closed.is_ok(), "idle connections stayed open past the header timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_told_so_and_closed() {
    let s = server(&[("max_connections", "10"), ("header_read_timeout", "30s")]).await;
    let running = run(&s).await;
    // Requests in progress: their connections count.
    let mut held = partial_requests(running.addr, 10, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let mut extra = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut extra))
        .await
        .expect("the connection beyond the cap is answered and closed at once");
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("retry-after:") || answer.contains("Retry-After:"), "{answer}");
    // A held request completes, its connection ends, and there is room again.
    held[0].write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut held[0])).await.unwrap();
    assert!(String::from_utf8(done).unwrap().starts_with("HTTP/1.1 200"));
    drop(held.remove(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = reqwest::Client::new().get(format!("http://{}/healthz", running.addr)).send().await;
        if reply.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no room after a connection ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_run_only_so_many_uploads_at_once() {
    let s = server(&[("max_uploads_per_user", "1")]).await;
    let (ada, bob) = (s.user("ada", false, false).await, s.user("bob", false, false).await);
    let running = run(&s).await;
    // Ada's first upload stalls mid-body, holding her slot.
    let (content_type, body) = common::multipart(&[], "slow.pdf", &pdf(200_000));
    let mut socket = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ada}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..100_000]).await.unwrap();
    // Wait until the server holds the slot (the upload is in progress), then try a second one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ada_id = s.state.db.user_by_name("ada").await.unwrap().unwrap().id;
    while s.state.domain.uploads().running(&ada_id) == 0 {
        assert!(std::time::Instant::now() < deadline, "the first upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let http = reqwest::Client::new();
    let part = reqwest::multipart::Part::bytes(pdf(1000)).file_name("second.pdf");
    let second = http
        .post(format!("http://{}/api/files", running.addr))
        .bearer_auth(&ada)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    // Others are not affected.
    upload(&http, running.addr, &bob, "bob.pdf", pdf(1000)).await;
    // The first upload finishes, and the slot is free again.
    socket.write_all(&body[100_000..]).await.unwrap();
    let mut response = vec![0u8; 1024];
    let n = socket.read(&mut response).await.unwrap();
    assert!(
        String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&response[..n])
    );
    upload(&http, running.addr, &ada, "third.pdf", pdf(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_download_finish_and_accepts_nothing_new() {
    let s = server(&[("shutdown_grace", "30s")]).await;
    let ada = s.user("ada", false, false).await;
    let mut running = run(&s).await;
    let bytes = pdf(8 * 1024 * 1024);
    let id = upload(&client(), running.addr, &ada, "big.pdf", bytes.clone()).await["id"].as_str().unwrap().to_owned();
    let reply = reqwest::Client::new()
        .get(format!("http://{}/files/{id}/download", running.addr))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    let mut body = reply.bytes_stream();
    use futures_util::StreamExt;
    let mut received = Vec::new();
    received.extend_from_slice(&body.next().await.unwrap().unwrap());
    // Stop the server while the download is under way.
    running.stop.take().unwrap().send(()).unwrap();
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(running.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused).await.expect("the listener closes");
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.expect("the running download is not cut"));
    }
    assert_eq!(sha256(&received), sha256(&bytes));
    tokio::time::timeout(Duration::from_secs(10), running.done).await.expect("serve returns").unwrap().unwrap();
}

/// An upload that announces more bytes than may be stored is refused before its body is read:
/// with `Expect: 100-continue` the answer is 413, never 100, so the client sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_is_refused_before_its_body_is_read() {
    let s = server(&[("max_file_size", "1MiB")]).await;
    let token = s.user("ada", false, false).await;
    let running = run(&s).await;
    for expect in [true, false] {
        let mut socket = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n{}\r\n",
            50 << 20,
            if expect { "Expect: 100-continue\r\n" } else { "" }
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        if !expect {
            socket
                .write_all(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n%PDF")
                .await
                .unwrap();
        }
        // The answer comes while 50 MiB are still unsent.
        let mut reply = vec![0u8; 1024];
        let n = socket.read(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 413"), "expect: {expect}: {reply}");
        assert!(reply.contains("The file may not be larger than 1.0 MB."), "{reply}");
    }
    assert!(crate::common::stored_files(&s).is_empty());
}
