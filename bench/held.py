#!/usr/bin/env python3
"""Held load on the real server: 100 slowloris connections, 200 concurrent 5 MiB downloads and
8 concurrent 64 MiB uploads at once, then the server's peak RSS (VmHWM) and the latency of a
normal request while the slow connections are held. Loopback only, bounded in count and time.

  bench/held.sh
"""
import http.client
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def upload(addr, token, size, results):
    host, port = addr.split(":")
    boundary = "heldloadboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="up.pdf"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.7\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.putrequest("POST", "/api/files")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    chunk = b"u" * (1 << 20)
    for _ in range(size // len(chunk)):
        conn.send(chunk)
    conn.send(tail)
    results.append(conn.getresponse().status)


def main():
    bench.ensure_tools()
    bench.build_server()
    work = tempfile.mkdtemp(prefix="ps-held-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    with open(os.path.join(root, "5m.pdf"), "wb") as f:
        f.write(b"%PDF-1.7\n" + os.urandom(5 * 1024 * 1024 - 9))
    procs = []
    try:
        server, addr, token, ids = bench.start_server(work, root, ["max_uploads_per_user=8"])
        procs.append(server)
        host, port = addr.split(":")
        before = bench.peak_rss_mib(server.pid)
        slow = []
        for _ in range(100):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        latencies = []
        for _ in range(20):
            t = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/api/files", headers={"Authorization": f"Bearer {token}"})
            assert conn.getresponse().status == 200
            latencies.append((time.perf_counter() - t) * 1000)
            conn.close()
        statuses = []
        uploads = [threading.Thread(target=upload, args=(addr, token, 64 << 20, statuses)) for _ in range(8)]
        for t in uploads:
            t.start()
        out = bench.fetch(addr, f"/files/{ids['5m.pdf']}/download", 200, "once", token=token)
        for t in uploads:
            t.join()
        peak = bench.peak_rss_mib(server.pid)
        for s in slow:
            s.close()
        print(f"normal request while 100 slowloris connections are held: median {statistics.median(latencies):.2f} ms, max {max(latencies):.2f} ms")
        print(f"200 concurrent 5 MiB downloads: {out['requests']} complete, {out['bytes'] / 1e6:.0f} MB; 8 concurrent 64 MiB uploads: statuses {sorted(set(statuses))}")
        print(f"server peak RSS: {before:.1f} MiB before, {peak:.1f} MiB under all of it")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
