#!/usr/bin/env python3
"""Instructions per download: the server's own cost of one authenticated 4 KiB download, counted
by valgrind's callgrind (user space only: the kernel's send and receive are not in it).

Wall-clock figures on a shared 2-core machine move by 10-30% between runs (steal, the load
generator's core); instruction counts of the same build move by about 3%, so a change of a few
percent per request can be told apart in one run. What callgrind counts is not time: memory
stalls and system calls are not in it, and valgrind hides some CPU features (SHA-NI: the token
hash is counted in software, ~3,400 instructions, where the real run takes a few hundred).

Per target: a fresh server (`bench/run.py`'s setup: one user, an API token, one 4 KiB file) with
`serve` under callgrind, instrumentation off until wrk has warmed it (3 s), then on for the
measured seconds; instructions / requests served. With --baseline, the same for another build,
alternating. Writes bench/results/instructions.{json,md}.

  bench/instructions.sh                       3 rounds of 10 s
  bench/instructions.sh --baseline BINARY     the same, and BINARY alternating with this build
  bench/instructions.sh --smoke               1 round of 1 s (proves it works)
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as B  # noqa: E402  (the servers and wrk of bench/run.py)


def ensure_valgrind():
    if not shutil.which("callgrind_control"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "valgrind"], check=True, stdout=subprocess.DEVNULL)


def measure(work, root, binary, name, seconds, warm):
    """Instructions per request of `binary`'s `serve` (its CLI commands run natively)."""
    out = os.path.join(work, f"{name}.callgrind")
    wrapper = os.path.join(work, f"{name}.sh")
    with open(wrapper, "w") as f:
        f.write(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = serve ]; then
    exec valgrind -q --tool=callgrind --instr-atstart=no --callgrind-out-file={out}.%p {binary} "$@" 2>/dev/null
  fi
done
exec {binary} "$@"
""")
    os.chmod(wrapper, 0o755)
    data = f"data-{name}-{time.monotonic_ns()}"
    proc, addr, token, ids = B.start_server(work, root, binary=wrapper, data=data)
    try:
        path = f"/files/{ids['4k.bin']}/download"
        B.wrk(addr, path, 16, warm, token=token)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        res = B.wrk(addr, path, 16, seconds, token=token)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait()
    total = 0
    for dump in glob.glob(f"{out}.*"):
        with open(dump) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        os.remove(dump)
    if total == 0 or res["requests"] == 0:
        raise SystemExit(f"{name}: callgrind counted nothing")
    return {"instructions": total, "requests": res["requests"], "per_request": total / res["requests"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--baseline", metavar="BINARY", help="also count this build of the server, e.g. an earlier commit's")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.smoke else 3)
    seconds = args.seconds or (1 if args.smoke else 10)  # wrk takes whole seconds
    warm = 1 if args.smoke else 3

    ensure_valgrind()
    B.ensure_tools()
    B.build_server()
    B.START_TIMEOUT = 120  # valgrind's start-up: seconds, not milliseconds
    targets = {"server": os.path.join(B.RELEASE, "private-storage")}
    if args.baseline:
        targets["server-baseline"] = os.path.abspath(args.baseline)
    work = tempfile.mkdtemp(prefix="ps-instructions-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    with open(os.path.join(root, "4k.bin"), "wb") as f:
        f.write(os.urandom(4096))
    results = {name: [] for name in targets}
    try:
        for r in range(rounds):
            for name, binary in targets.items():
                res = measure(work, root, binary, name, seconds, warm)
                results[name].append(res)
                print(f"round {r + 1} {name:16} {res['per_request']:9.0f} instructions/request ({res['requests']} requests)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {name: statistics.median(x["per_request"] for x in runs) for name, runs in results.items()}
    lines = [f"# Instructions per 4 KiB download (callgrind, {rounds} × {seconds} s, wrk -c16)", "",
             "| target | instructions / request (median [min–max]) | ratio to server |", "|---|---|---|"]
    for name, runs in results.items():
        per = [x["per_request"] for x in runs]
        lines.append(f"| {name} | {summary[name]:,.0f} [{min(per):,.0f}–{max(per):,.0f}] | {summary[name] / summary['server']:.3f}× |")
    report = "\n".join(lines) + "\n"
    print(report)
    os.makedirs(os.path.join(B.REPO, "bench", "results"), exist_ok=True)
    with open(os.path.join(B.REPO, "bench", "results", "instructions.md"), "w") as f:
        f.write(report)
    with open(os.path.join(B.REPO, "bench", "results", "instructions.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "rounds": rounds, "seconds": seconds, "results": results, "median": summary}, f, indent=1)


if __name__ == "__main__":
    main()
