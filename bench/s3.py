#!/usr/bin/env python3
"""S3 benchmark: downloads through private-storage against direct GETs from the same S3 server.

Starts a single-node Garage (the S3-compatible server of the tests) on loopback, then:
  direct     presigned GETs straight from Garage, no check (the ceiling)
  proxy      serve-bench s3: token lookup + rule, then the object streamed through the app
  redirect   serve-bench s3-redirect: token lookup + rule, then a 307 to a presigned URL
  server     the private-storage server on the same bucket (storage = s3://, delivery =
             stream; not in --smoke): API token, record, rule, then the object proxied

Garage and the app share core 0, the load generator runs on core 1. Reports 4 KiB req/s at
c=64 (the redirect's is the cost of a check + presign per request), 1 MiB and 100 MiB MB/s,
the app's CPU per GB, the ratio of each to direct in the same round, and the proxy's peak RSS
after 16 parallel 100 MiB downloads, and the proxy's and the server's after 32.

  bench/s3.sh            3 rounds of 10 s
  bench/s3.sh --quick    1 round of 3 s
  bench/s3.sh --smoke    4 KiB and 1 MiB, 1 s (seconds; proves it works)
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

ACCESS, SECRET, BUCKET = "GK31c2f218a2e44f485b94239e", "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835", "bench"


def garage_program():
    for path in [shutil.which("garage"), os.path.expanduser("~/.cargo/bin/garage")]:
        if path and os.path.exists(path):
            return path
    raise SystemExit("garage is not installed: cargo install garage@2.5.0 --locked --no-default-features --features bundled-libs,sqlite")


def start_garage(work):
    api, rpc = bench.free_port(), bench.free_port()
    conf = os.path.join(work, "garage.toml")
    with open(conf, "w") as f:
        f.write(f"""metadata_dir = "{work}/garage-meta"
data_dir = "{work}/garage-data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{'7e' * 32}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{api}"
root_domain = ".s3.garage.localhost"
""")
    env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=ACCESS, GARAGE_DEFAULT_SECRET_KEY=SECRET, GARAGE_DEFAULT_BUCKET=BUCKET, RUST_LOG="warn")
    log = open(os.path.join(work, "garage.log"), "w")
    proc = subprocess.Popen(["taskset", "-c", bench.SERVER_CORE, garage_program(), "-c", conf, "server", "--single-node", "--default-bucket"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    bench.wait_port(api, proc)
    return proc, f"http://127.0.0.1:{api}"


def start_app_on_s3(root, mode, endpoint, presigned=None):
    env = dict(os.environ, PS_BENCH_S3_BUCKET=BUCKET, PS_BENCH_S3_ENDPOINT=endpoint, PS_BENCH_S3_REGION="garage",
               PS_BENCH_S3_ACCESS_KEY_ID=ACCESS, PS_BENCH_S3_SECRET_ACCESS_KEY=SECRET, PS_BENCH_S3_PRESIGN_EXPIRY="2h",
               PS_BENCH_S3_CONDITIONAL_WRITES="false")
    # Garage answers on its port a moment before its bucket is ready: retry the start.
    deadline = time.time() + 30
    while True:
        try:
            return bench.start_app(root, mode, env=env, presigned=presigned)
        except SystemExit:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    rounds = 1 if args.quick or args.smoke else 3
    seconds = 1 if args.smoke else 3 if args.quick else 10

    bench.ensure_tools()
    work = tempfile.mkdtemp(prefix="ps-bench-s3-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    sizes = {"4k.bin": 4096, "1m.bin": 1 << 20} if args.smoke else {"4k.bin": 4096, "1m.bin": 1 << 20, "100m.bin": 100 << 20}
    for name, size in sizes.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    procs = []
    try:
        garage, endpoint = start_garage(work)
        procs.append(garage)
        presigned = {}
        proxy, proxy_addr = start_app_on_s3(root, "s3", endpoint, presigned)
        procs.append(proxy)
        redirect, redirect_addr = start_app_on_s3(root, "s3-redirect", endpoint)
        procs.append(redirect)
        garage_addr = urlsplit(endpoint).netloc
        server = None
        if not args.smoke:
            bench.build_server()
            settings = ["storage=s3://" + BUCKET + "/server", f"s3.endpoint={endpoint}", "s3.region=garage",
                        f"s3.access_key_id={ACCESS}", f"s3.secret_access_key={SECRET}", "s3.conditional_writes=false"]
            server = bench.start_server(work, root, settings=settings)
            procs.append(server[0])

        def direct_path(name):
            url = urlsplit(presigned[name])
            return f"{url.path}?{url.query}"

        targets = {
            "direct": (garage_addr, direct_path, None, [garage.pid]),
            "proxy": (proxy_addr, lambda n: f"/private-media/{n}", bench.TOKEN, [proxy.pid, garage.pid]),
            "redirect": (redirect_addr, lambda n: f"/private-media/{n}", bench.TOKEN, [redirect.pid]),
        }
        streamed = ["direct", "proxy"]
        if server:
            ids = server[3]
            targets["server"] = (server[1], lambda n: f"/files/{ids[n]}/download", server[2], [server[0].pid, garage.pid])
            streamed.append("server")
        tests = [("4k-c64", "4k.bin", "wrk", 64, [*streamed, "redirect"]), ("1m-c4", "1m.bin", "fetch", 4, streamed)]
        if not args.smoke:
            tests.append(("100m-c2", "100m.bin", "fetch", 2, streamed))
        for name in sizes:  # warm up, and check every target answers
            for target in streamed:
                addr, path, token, _ = targets[target]
                bench.fetch(addr, path(name), 1, "once", token=token)

        results = {t[0]: {n: [] for n in t[4]} for t in tests}
        for r in range(rounds):
            for test, name, tool, conns, names in tests:
                for target in names:
                    addr, path, token, pids = targets[target]
                    before = bench.cpu_seconds(pids)
                    res = (bench.wrk if tool == "wrk" else bench.fetch)(addr, path(name), conns, seconds, token=token)
                    res["cpu_s"] = bench.cpu_seconds(pids) - before
                    results[test][target].append(res)
                    print(f"round {r + 1} {test:8} {target:9} " + (f"{res['rps']:9.0f} req/s" if tool == "wrk" else f"{res['mbps']:9.0f} MB/s") + f"  cpu {res['cpu_s']:.2f}s", flush=True)
        rss = {}
        if not args.smoke:
            bench.fetch(proxy_addr, "/private-media/100m.bin", 16, "once")
            rss["proxy, 16 parallel"] = bench.peak_rss_mib(proxy.pid)
            bench.fetch(proxy_addr, "/private-media/100m.bin", 32, "once")
            rss["proxy, 32 parallel"] = bench.peak_rss_mib(proxy.pid)
            addr, path, token, _ = targets["server"]
            bench.fetch(addr, path("100m.bin"), 32, "once", token=token)
            rss["server, 32 parallel"] = bench.peak_rss_mib(server[0].pid)
        lines = [f"{time.strftime('%Y-%m-%d')}, {rounds} round(s) of {seconds:g} s, Garage 2.5 and the app on core {bench.SERVER_CORE}, load on core {bench.CLIENT_CORE}, `bench/s3.sh{' --quick' if args.quick else ''}{' --smoke' if args.smoke else ''}`", "",
                 "| test | target | throughput (median [min–max]) | ratio to direct | CPU (Garage + app) |", "|---|---|---|---|---|"]
        for test, name, tool, _, names in tests:
            metric, unit = ("rps", "req/s") if tool == "wrk" else ("mbps", "MB/s")
            for target in names:
                runs = results[test][target]
                values = [x[metric] for x in runs]
                ratio = statistics.median(x[metric] / d[metric] for x, d in zip(runs, results[test]["direct"]))
                cpu = statistics.median(x["cpu_s"] / x["requests"] * 1e6 for x in runs) if tool == "wrk" else statistics.median(x["cpu_s"] / (x["bytes"] / 1e9) for x in runs)
                cpu_text = f"{cpu:.1f} µs/req" if tool == "wrk" else f"{cpu:.2f} s/GB"
                lines.append(f"| {test} | {target} | {statistics.median(values):.0f} {unit} [{min(values):.0f}–{max(values):.0f}] | {ratio:.2f}× | {cpu_text} |")
        if rss:
            lines.append("\nPeak RSS (VmHWM, the high-water mark of the whole run) after parallel 100 MiB downloads: "
                         + ", ".join(f"{name} **{mib:.1f} MiB**" for name, mib in rss.items()) + ".")
        table = "\n".join(lines) + "\n"
        print("\n" + table)
        if not args.smoke:
            out = os.path.join(bench.REPO, "bench", "results")
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "s3-latest.md"), "w") as f:
                f.write(table)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
