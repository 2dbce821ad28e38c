//! A large-buffer HTTP/1.1 load client for big files (wrk reads 8 KiB at a time, which caps it
//! well below the server): `fetch <addr> <path> <token> <connections> <seconds|once>`.
//!
//! Each connection requests `path` over keep-alive, reading bodies into a 1 MiB buffer, until
//! the time is up (or once, with `once`). Prints `bytes=<n> requests=<n> seconds=<s>`. The
//! token `-` sends no `Authorization` (for presigned S3 URLs, whose `Host` is `addr`); a token
//! `cookie:<name>=<value>` is sent as a `Cookie` (the Django reference's session).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One request on `reader`'s connection: the body's length, and whether the server closes the
/// connection after it (gunicorn's sync workers do), so the caller reconnects.
fn fetch_one(reader: &mut BufReader<TcpStream>, request: &[u8], buf: &mut [u8]) -> std::io::Result<(u64, bool)> {
    reader.get_mut().write_all(request)?;
    let mut len = None;
    let mut close = false;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse::<u64>().ok();
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let Some(len) = len else {
        // No length: the body runs to the end of the connection.
        if !close {
            return Err(std::io::Error::other("no content-length"));
        }
        let mut total = 0;
        loop {
            match reader.read(buf)? {
                0 => return Ok((total, true)),
                n => total += n as u64,
            }
        }
    };
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-body"));
        }
        left -= n as u64;
    }
    Ok((len, close))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, token, connections, duration] = &args[..] else {
        eprintln!("usage: fetch <addr> <path> <token> <connections> <seconds|once>");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("connections");
    let deadline = (duration != "once").then(|| Duration::from_secs_f64(duration.parse().expect("seconds")));
    let auth = match token.as_str() {
        "-" => String::new(),
        t if t.starts_with("cookie:") => format!("Cookie: {}\r\n", &t["cookie:".len()..]),
        t => format!("Authorization: Bearer {t}\r\n"),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").into_bytes();
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            std::thread::spawn(move || {
                let connect = || BufReader::with_capacity(1 << 20, TcpStream::connect(&addr).expect("connect"));
                let mut reader = connect();
                let mut buf = vec![0u8; 1 << 20];
                let (mut bytes, mut requests) = (0u64, 0u64);
                loop {
                    let (len, close) = fetch_one(&mut reader, &request, &mut buf).expect("fetch");
                    bytes += len;
                    requests += 1;
                    if close {
                        reader = connect();
                    }
                    if deadline.is_none_or(|d| start.elapsed() >= d) {
                        break (bytes, requests);
                    }
                }
            })
        })
        .collect();
    let (bytes, requests) =
        workers.into_iter().map(|w| w.join().expect("worker")).fold((0, 0), |(b, r), (wb, wr)| (b + wb, r + wr));
    println!("bytes={bytes} requests={requests} seconds={:.6}", start.elapsed().as_secs_f64());
}
