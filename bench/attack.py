#!/usr/bin/env python3
"""A bounded attack run on loopback against the real server (release build), one attack at a
time, each for a few seconds: idle sockets, a login flood, a share-link flood and limiter abuse.
For each: what the server kept open or wrote, and the latency of `/healthz` and of a 4 KiB
download meanwhile, against a quiet baseline; at the end the server's peak RSS.

  bench/attack.sh
"""
import http.client
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

HEADER_TIMEOUT = 2


def timed(host, port, path, token=None):
    t = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    status = conn.getresponse().status
    conn.close()
    return status, (time.perf_counter() - t) * 1000


def latencies(host, port, token, file_id, n=30):
    """Median milliseconds of `/healthz` and of a 4 KiB download."""
    health = [timed(host, port, "/healthz")[1] for _ in range(n)]
    download = [timed(host, port, f"/files/{file_id}/download", token)[1] for _ in range(n)]
    return statistics.median(health), statistics.median(download)


def login(host, port, name, password):
    body = f"username={name}&password={password}&csrf=x"
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": "ps_login_csrf=x"})
    status = conn.getresponse().status
    conn.close()
    return status


def flood(seconds, threads, attack):
    """Runs `attack(i)` in `threads` loops for `seconds`; returns how many ran."""
    stop = time.time() + seconds
    counts = [0] * threads

    def loop(n):
        i = 0
        while time.time() < stop:
            attack(n * 1_000_000 + i)
            i += 1
        counts[n] = i

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    return workers, counts


def still_open(sockets):
    """How many of `sockets` the server has not closed."""
    open_ = 0
    for s in sockets:
        s.setblocking(False)
        try:
            data = s.recv(4096)
            open_ += 0 if data == b"" else 1  # a 408 before the close counts as open until then
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


def main():
    bench.ensure_tools()
    bench.build_server()
    work = tempfile.mkdtemp(prefix="ps-attack-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    with open(os.path.join(root, "4k.pdf"), "wb") as f:
        f.write(b"%PDF-1.7\n" + os.urandom(4096 - 9))
    server = None
    try:
        server, addr, token, ids = bench.start_server(work, root, [f"header_read_timeout={HEADER_TIMEOUT}s"])
        host, port = addr.split(":")
        port = int(port)
        file_id = ids["4k.pdf"]
        db = sqlite3.connect(os.path.join(work, "server-data", "private-storage.db"))
        quiet = latencies(host, port, token, file_id)
        print(f"quiet: /healthz {quiet[0]:.2f} ms, 4 KiB download {quiet[1]:.2f} ms (medians); peak RSS {bench.peak_rss_mib(server.pid):.1f} MiB")

        # 1,000 connections that never send a byte.
        idle = [socket.create_connection((host, port)) for _ in range(1000)]
        under = latencies(host, port, token, file_id, n=10)
        samples = []
        for second in range(HEADER_TIMEOUT + 3):
            samples.append(f"{second}s: {still_open(idle)}")
            time.sleep(1)
        for s in idle:
            s.close()
        print(f"1,000 idle sockets (header timeout {HEADER_TIMEOUT}s), open over time: {', '.join(samples)}; meanwhile /healthz {under[0]:.2f} ms, download {under[1]:.2f} ms; peak RSS {bench.peak_rss_mib(server.pid):.1f} MiB")

        # Login flood: fresh names, wrong passwords (each costs a full argon2 hash).
        workers, counts = flood(5, 16, lambda i: login(host, port, f"nobody{i}", "wrong-password"))
        time.sleep(1)
        under = latencies(host, port, token, file_id, n=20)
        for w in workers:
            w.join()
        print(f"login flood (16 loops, fresh names, 5 s, {sum(counts)} attempts): /healthz {under[0]:.2f} ms, download {under[1]:.2f} ms; peak RSS {bench.peak_rss_mib(server.pid):.1f} MiB")

        # Limiter abuse: 200 parallel wrong guesses at one account.
        statuses = []
        guesses = [threading.Thread(target=lambda i=i: statuses.append(login(host, port, "bench", f"guess{i}"))) for i in range(200)]
        for g in guesses:
            g.start()
        for g in guesses:
            g.join()
        print(f"200 parallel wrong guesses at one account: {statuses.count(401)} reached the password check, {statuses.count(429)} refused by the limit; peak RSS {bench.peak_rss_mib(server.pid):.1f} MiB")

        # Share-link flood: forged tokens.
        rows_before = db.execute("SELECT COUNT(*) FROM share_events").fetchone()[0]
        workers, counts = flood(5, 8, lambda i: timed(host, port, f"/s/forged-token-{i}"))
        time.sleep(1)
        under = latencies(host, port, token, file_id, n=20)
        for w in workers:
            w.join()
        rows = db.execute("SELECT COUNT(*) FROM share_events").fetchone()[0] - rows_before
        print(f"share-link flood ({sum(counts)} forged tokens in 5 s): {rows} audit rows written; /healthz {under[0]:.2f} ms, download {under[1]:.2f} ms")

        print(f"server peak RSS: {bench.peak_rss_mib(server.pid):.1f} MiB")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
