#!/usr/bin/env python3
"""Download benchmark: private-storage against nginx serving the same files with no check.

Targets, all pinned to core 0 (the load generator runs on core 1):
  nginx-static  nginx, sendfile on, no access check: the ceiling
  stream        serve-bench (ServePrivate, bearer-token lookup + rule per request), stream mode
  stream-cached the same through CachedStorage (small files from memory once read)
  xaccel        nginx in front of serve-bench in X-Accel-Redirect mode (our check, nginx's bytes)
  server        the private-storage server itself (not in --smoke): /files/{id}/download with an
                API token, so each request is a token lookup and a record lookup in SQLite, the
                owner-or-staff rule, then the file streamed
  server-nginx  nginx in front of the server with delivery = nginx (not in --smoke): the
                server's check, then X-Accel-Redirect to nginx's internal location
  reference     with --with-reference: Django + django-private-storage (PyPI, in a venv made
                here) under gunicorn (2 sync workers), a logged-in session cookie, the same files

Per round (targets alternate within each test), for 4 KiB at c=1 and c=64 (wrk), 1 MiB and
100 MiB (bench/src/bin/fetch.rs, 1 MiB reads): throughput, latency, server CPU (from /proc),
and each target's ratio to nginx-static in the same round. Then peak RSS of the stream server
after 32 parallel 100 MiB downloads, and uploads (bench/upload.sh). Writes
bench/results/latest.{json,md}.

  bench/run.sh            3 rounds of 10 s per test
  bench/run.sh --quick    1 round of 3 s (under 3 minutes)
  bench/run.sh --smoke    4 KiB only, 1 s, nginx-static and stream (seconds; proves it works)
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(REPO, "target", "release")
TOKEN = "token-4242"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, CLIENT_CORE = "0", "1"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def ensure_tools():
    missing = [pkg for tool, pkg in [("nginx", "nginx"), ("wrk", "wrk"), ("taskset", "util-linux")] if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL)
    run(["cargo", "build", "--release", "-q", "-p", "private-storage-bench", "--bin", "serve-bench", "--bin", "fetch"], cwd=REPO)


def build_server():
    run(["cargo", "build", "--release", "-q", "-p", "private-storage-server", "--bin", "private-storage"], cwd=REPO)


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_app(root, mode, env=None, presigned=None):
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, os.path.join(RELEASE, "serve-bench"), root, mode, "/_internal"], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # printed once it listens (after `presigned` lines in S3 modes)
    while line.startswith("presigned "):
        _, name, url = line.split()
        if presigned is not None:
            presigned[name] = url
        line = proc.stdout.readline()
    if not line.startswith("listening "):
        raise SystemExit(f"serve-bench {mode} did not start: {line!r}")
    return proc, line.split()[1]


def start_server(work, root, settings=(), binary=None, data="server-data"):
    """The real server on its embedded default, with the bench files put in through its CLI."""
    binary = binary or os.path.join(RELEASE, "private-storage")
    data = os.path.join(work, data)
    env = dict(os.environ, RUST_LOG="warn")  # no access log: measure serving, not logging
    base = [binary, "--data-dir", data, "-s", "max_file_size=200MiB"]
    for setting in settings:
        base += ["-s", setting]
    subprocess.run(base + ["user", "add", "bench", "--password-stdin"], input="bench password\n", text=True, check=True, capture_output=True, env=env)
    token = run(base + ["token", "create", "bench"], env=env).strip()
    ids = {}
    for name in os.listdir(root):
        ids[name] = run(base + ["put", os.path.join(root, name), "--owner", "bench"], env=env).split("\t")[0]
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + base + ["serve", "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, env=env)
    wait_port(port, proc)
    return proc, f"127.0.0.1:{port}", token, ids


REFERENCE_PACKAGES = ["django==5.2.19", "django-private-storage==3.1.3", "gunicorn==27.0.1"]


def start_reference(work, root):
    """Django + django-private-storage under gunicorn, and a logged-in session cookie."""
    venv = os.path.join(work, "ref-venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", *REFERENCE_PACKAGES], check=True)
    cookie = run([os.path.join(venv, "bin", "python"), os.path.join(REPO, "bench", "reference", "setup.py"), work, root]).strip()
    port = free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="refsite.settings", PYTHONPATH=work)
    gunicorn = [os.path.join(venv, "bin", "gunicorn"), "refsite.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"]
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *gunicorn], env=env, stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    workers = [int(p) for p in run(["pgrep", "-P", str(proc.pid)]).split()]
    return proc, f"127.0.0.1:{port}", [proc.pid, *workers], "cookie:" + cookie


def start_nginx(work, root, app_nginx_addr, server=None):
    """nginx-static, the front of serve-bench's nginx mode and, given `server` = (address,
    media folder) of a server with delivery = nginx, a front for it (README's location)."""
    static_port, front_port, server_port = free_port(), free_port(), free_port()
    server_block = ""
    if server:
        server_block = f"""
    upstream server {{ server {server[0]}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{server_port};
        location / {{
            proxy_pass http://server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /_private/ {{
            internal;
            alias {server[1]}/;
            add_header X-Content-Type-Options $upstream_http_x_content_type_options always;
            add_header Content-Security-Policy $upstream_http_content_security_policy always;
            add_header Referrer-Policy $upstream_http_referrer_policy always;
        }}
    }}"""
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream app {{ server {app_nginx_addr}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{static_port};
        location /private-media/ {{ alias {root}/; }}
    }}
    server {{
        listen 127.0.0.1:{front_port};
        location /private-media/ {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /_internal/ {{
            internal;
            alias {root}/;
            add_header X-Content-Type-Options $upstream_http_x_content_type_options always;
        }}
    }}{server_block}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, "nginx", "-c", conf, "-p", work])
    for port in (static_port, front_port, *([server_port] if server else [])):
        wait_port(port, proc)
    return proc, f"127.0.0.1:{static_port}", f"127.0.0.1:{front_port}", f"127.0.0.1:{server_port}"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How long a process may take to listen (bench/instructions.py: seconds under valgrind).
START_TIMEOUT = 10


def wait_port(port, proc):
    import socket
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited at start: {' '.join(map(str, proc.args))}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def auth_header(token):
    """`cookie:<name>=<value>` (the reference's session) or a bearer token."""
    return f"Cookie: {token[len('cookie:'):]}" if token.startswith("cookie:") else f"Authorization: Bearer {token}"


def wrk(addr, path, conns, seconds, token=TOKEN):
    auth = ["-H", auth_header(token)] if token else []
    out = run(["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", *auth, f"http://{addr}{path}"])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"{addr}{path}: {bad.group(1)} failed responses\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "requests": requests}


def fetch(addr, path, conns, seconds, token=TOKEN):
    out = run(["taskset", "-c", CLIENT_CORE, os.path.join(RELEASE, "fetch"), addr, path, token or "-", str(conns), str(seconds)])
    kv = dict(item.split("=") for item in out.split())
    seconds = max(float(kv["seconds"]), 1e-6)
    return {"mbps": int(kv["bytes"]) / seconds / 1e6, "bytes": int(kv["bytes"]), "requests": int(kv["requests"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--with-reference", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--baseline", metavar="BINARY", help="also run this build of the server (target server-baseline), e.g. an earlier commit's")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick or args.smoke else 3)
    seconds = args.seconds or (1 if args.smoke else 3 if args.quick else 10)

    ensure_tools()
    work = tempfile.mkdtemp(prefix="ps-bench-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    sizes = {"4k.bin": 4096} if args.smoke else {"4k.bin": 4096, "1m.bin": 1 << 20, "100m.bin": 100 << 20}
    for name, size in sizes.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))

    procs = []
    try:
        app_stream, stream_addr = start_app(root, "stream")
        procs.append(app_stream)
        app_nginx, app_nginx_addr = start_app(root, "nginx")
        procs.append(app_nginx)
        app_cached, cached_addr = (None, None) if args.smoke else start_app(root, "cached")
        if app_cached:
            procs.append(app_cached)
        servers = {}
        if not args.smoke:
            build_server()
            servers["server"] = start_server(work, root)
            servers["server-nginx"] = start_server(work, root, settings=["delivery=nginx"], data="server-nginx-data")
            if args.baseline:
                servers["server-baseline"] = start_server(work, root, binary=args.baseline, data="baseline-data")
            procs += [s[0] for s in servers.values()]
        behind = (servers["server-nginx"][1], os.path.join(work, "server-nginx-data", "media")) if servers else None
        nginx, static_addr, front_addr, server_front_addr = start_nginx(work, root, app_nginx_addr, behind)
        procs.append(nginx)
        media = lambda name: f"/private-media/{name}"
        targets = {
            "nginx-static": (static_addr, [nginx.pid], media, TOKEN),
            "stream": (stream_addr, [app_stream.pid], media, TOKEN),
            "xaccel": (front_addr, [nginx.pid, app_nginx.pid], media, TOKEN),
        }
        if args.smoke:
            del targets["xaccel"]
        else:
            targets["stream-cached"] = (cached_addr, [app_cached.pid], media, TOKEN)
        for target, (proc, addr, token, ids) in servers.items():
            download = lambda name, ids=ids: f"/files/{ids[name]}/download"
            if target == "server-nginx":
                targets[target] = (server_front_addr, [nginx.pid, proc.pid], download, token)
            else:
                targets[target] = (addr, [proc.pid], download, token)
        if args.with_reference:
            reference, reference_addr, reference_pids, cookie = start_reference(work, root)
            procs.append(reference)
            targets["reference"] = (reference_addr, reference_pids, media, cookie)
        tests = [("4k-c1", "4k.bin", "wrk", 1), ("4k-c64", "4k.bin", "wrk", 64)]
        if not args.smoke:
            tests += [("1m-c4", "1m.bin", "fetch", 4), ("100m-c2", "100m.bin", "fetch", 2)]
        # Warm the page cache and the servers.
        for addr, _, path, token in targets.values():
            for name in sizes:
                fetch(addr, path(name), 1, "once", token=token)

        results = {t[0]: {name: [] for name in targets} for t in tests}
        for r in range(rounds):
            for test, name, tool, conns in tests:
                for target, (addr, pids, path, token) in targets.items():
                    before = cpu_seconds(pids)
                    res = (wrk if tool == "wrk" else fetch)(addr, path(name), conns, seconds, token=token)
                    res["cpu_s"] = cpu_seconds(pids) - before
                    results[test][target].append(res)
                    print(f"round {r + 1} {test:8} {target:13} " + (f"{res['rps']:9.0f} req/s" if tool == "wrk" else f"{res['mbps']:9.0f} MB/s") + f"  cpu {res['cpu_s']:.2f}s", flush=True)

        memory = None
        if not args.smoke:
            fetch(stream_addr, "/private-media/100m.bin", 32, "once")
            memory = {"stream": peak_rss_mib(app_stream.pid)}
            server_proc, server_addr, server_token, ids = servers["server"]
            fetch(server_addr, f"/files/{ids['100m.bin']}/download", 32, "once", token=server_token)
            memory["server"] = peak_rss_mib(server_proc.pid)
            print(f"peak RSS after 32 parallel 100 MiB downloads: stream {memory['stream']:.1f} MiB, server {memory['server']:.1f} MiB")
        upload = None
        if not args.smoke:
            # Uploads: multipart → validation → storage, from bench/upload.sh.
            out = run([os.path.join(REPO, "bench", "upload.sh"), *(["--quick"] if args.quick else [])])
            print(out, end="")
            m = re.search(r"median (\d+) MB/s \(min (\d+), max (\d+)\)", out)
            rss = [float(x) for x in re.findall(r"peak RSS (\d+) MiB", out)]
            upload = {"mbps": {"median": int(m.group(1)), "min": int(m.group(2)), "max": int(m.group(3))}, "peak_rss_mib": max(rss)}
        report(results, tests, targets, rounds, seconds, memory, upload, args)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def summarise(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


def report(results, tests, targets, rounds, seconds, memory, upload, args):
    summary = {}
    lines = [f"| test | target | throughput (median [min–max]) | ratio to nginx-static | p50 / p99 | server CPU |", "|---|---|---|---|---|---|"]
    for test, name, tool, _ in tests:
        metric = "rps" if tool == "wrk" else "mbps"
        unit = "req/s" if tool == "wrk" else "MB/s"
        base = results[test]["nginx-static"]
        for target in targets:
            runs = results[test][target]
            ratios = [run_[metric] / b[metric] for run_, b in zip(runs, base)]
            if tool == "wrk":
                cpu = statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in runs)
                cpu_text = f"{cpu:.1f} µs/req"
            else:
                cpu = statistics.median(r["cpu_s"] / (r["bytes"] / 1e9) for r in runs)
                cpu_text = f"{cpu:.2f} s/GB"
            s = summarise(runs, metric)
            p50, p99 = summarise(runs, "p50_ms"), summarise(runs, "p99_ms")
            latency = f"{p50['median']:.3f} / {p99['median']:.3f} ms" if p50 and p99 else "—"
            summary.setdefault(test, {})[target] = {metric: s, "ratio": statistics.median(ratios), "cpu": cpu, "p50_ms": p50, "p99_ms": p99, "runs": runs}
            lines.append(f"| {test} | {target} | {s['median']:.0f} {unit} [{s['min']:.0f}–{s['max']:.0f}] | {statistics.median(ratios):.2f}× | {latency} | {cpu_text} |")
    if memory is not None:
        lines.append(f"\nPeak RSS (VmHWM) after 32 parallel 100 MiB downloads: stream (`serve-bench`) **{memory['stream']:.1f} MiB**, server **{memory['server']:.1f} MiB** (its high-water mark over the whole run).")
    if upload is not None:
        u = upload["mbps"]
        lines.append(f"\nUploads (bench/upload.sh): **{u['median']} MB/s** median [{u['min']}–{u['max']}], server peak RSS **{upload['peak_rss_mib']:.0f} MiB**.")
    header = f"{time.strftime('%Y-%m-%d')}, {rounds} round(s) of {seconds:g} s, servers pinned to core {SERVER_CORE}, load on core {CLIENT_CORE}, `bench/run.sh{' --quick' if args.quick else ''}{' --smoke' if args.smoke else ''}`\n\n"
    table = header + "\n".join(lines) + "\n"
    print("\n" + table)
    if not args.smoke:
        out = os.path.join(REPO, "bench", "results")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "latest.json"), "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "rounds": rounds, "seconds": seconds, "peak_rss_mib": memory, "upload": upload, "results": summary}, f, indent=1)
        with open(os.path.join(out, "latest.md"), "w") as f:
            f.write(table)


if __name__ == "__main__":
    sys.exit(main())
