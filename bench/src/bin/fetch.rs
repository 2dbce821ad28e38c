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

fn fetch_one(reader: &mut BufReader<TcpStream>, request: &[u8], buf: &mut [u8]) -> std::io::Result<u64> {
    reader.get_mut().write_all(request)?;
    let mut len = None;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse::<u64>().ok();
        }
    }
    let len = len.ok_or_else(|| std::io::Error::other("no content-length"))?;
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-body"));
        }
        left -= n as u64;
    }
    Ok(len)
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
                let stream = TcpStream::connect(&addr).expect("connect");
                let mut reader = BufReader::with_capacity(1 << 20, stream);
                let mut buf = vec![0u8; 1 << 20];
                let (mut bytes, mut requests) = (0u64, 0u64);
                loop {
                    bytes += fetch_one(&mut reader, &request, &mut buf).expect("fetch");
                    requests += 1;
                    if deadline.is_none_or(|d| start.elapsed() >= d) {
                        break (bytes, requests);
                    }
                }
            })
        })
        .collect();
    let (bytes, requests) = workers.into_iter().map(|w| w.join().expect("worker")).fold((0, 0), |(b, r), (wb, wr)| (b + wb, r + wr));
    println!("bytes={bytes} requests={requests} seconds={:.6}", start.elapsed().as_secs_f64());
}
