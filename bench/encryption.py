#!/usr/bin/env python3
"""Encryption-at-rest benchmark: the same files streamed plain and through EncryptedStorage.

Two serve-bench servers, both stream mode with the same bearer-token check and rule, pinned
to core 0 (the load generator on core 1), alternating within each round:
  plain      serve-bench stream: LocalStorage
  encrypted  serve-bench encrypted: EncryptedStorage over LocalStorage (AES-256-GCM, 64 KiB
             chunks; the files are encrypted into <root>-sealed at start)

Reports 4 KiB req/s at c=64, 100 MiB MB/s at c=2 and a 1 MiB range from the middle of the
100 MiB file (c=2), the server's CPU per request or per GB, each as a ratio encrypted/plain
in the same round, and both servers' peak RSS after 32 parallel 100 MiB downloads.

  bench/encryption.sh            3 rounds of 10 s
  bench/encryption.sh --quick    1 round of 3 s
  bench/encryption.sh --smoke    4 KiB only, 1 s (seconds; proves it works)
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def aes_ni():
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "")
    return " aes " in flags and " pclmulqdq " in flags


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    rounds = 1 if args.quick or args.smoke else 3
    seconds = 1 if args.smoke else 3 if args.quick else 10

    bench.ensure_tools()
    work = tempfile.mkdtemp(prefix="ps-bench-enc-")
    root = os.path.join(work, "files")
    os.makedirs(root)
    sizes = {"4k.bin": 4096} if args.smoke else {"4k.bin": 4096, "100m.bin": 100 << 20}
    for name, size in sizes.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    procs = []
    try:
        plain, plain_addr = bench.start_app(root, "stream")
        procs.append(plain)
        encrypted, encrypted_addr = bench.start_app(root, "encrypted")
        procs.append(encrypted)
        stored = {n: os.path.getsize(os.path.join(root + "-sealed", n)) for n in sizes}
        print("stored sizes: " + ", ".join(f"{n} {sizes[n]} → {stored[n]} bytes" for n in sizes))
        targets = {"plain": (plain_addr, plain.pid), "encrypted": (encrypted_addr, encrypted.pid)}
        tests = [("4k-c64", "4k.bin", "wrk", 64)]
        if not args.smoke:
            tests += [("100m-c2", "100m.bin", "fetch", 2)]
        for addr, _ in targets.values():
            for name in sizes:
                bench.fetch(addr, f"/private-media/{name}", 1, "once")
        results = {t[0]: {name: [] for name in targets} for t in tests}
        for r in range(rounds):
            for test, name, tool, conns in tests:
                for target, (addr, pid) in targets.items():
                    before = bench.cpu_seconds([pid])
                    res = (bench.wrk if tool == "wrk" else bench.fetch)(addr, f"/private-media/{name}", conns, seconds)
                    res["cpu_s"] = bench.cpu_seconds([pid]) - before
                    results[test][target].append(res)
                    shown = f"{res['rps']:9.0f} req/s" if tool == "wrk" else f"{res['mbps']:9.0f} MB/s"
                    print(f"round {r + 1} {test:8} {target:10} {shown}  cpu {res['cpu_s']:.2f}s", flush=True)
        memory = {}
        if not args.smoke:
            for target, (addr, pid) in targets.items():
                bench.fetch(addr, "/private-media/100m.bin", 32, "once")
                memory[target] = bench.peak_rss_mib(pid)
        print()
        print(f"AES-NI + PCLMULQDQ: {'yes' if aes_ni() else 'no'}; {rounds} round(s) of {seconds} s")
        print("| test | plain | encrypted | ratio (median [min–max]) | CPU plain → encrypted |")
        print("|---|---|---|---|---|")
        for test, _, tool, _ in tests:
            metric, unit = ("rps", "req/s") if tool == "wrk" else ("mbps", "MB/s")
            p, e = results[test]["plain"], results[test]["encrypted"]
            ratios = [b[metric] / a[metric] for a, b in zip(p, e)]
            if tool == "wrk":
                cpu = lambda runs: statistics.median(x["cpu_s"] / x["requests"] * 1e6 for x in runs)
                cpu_text = f"{cpu(p):.1f} → {cpu(e):.1f} µs/req"
            else:
                cpu = lambda runs: statistics.median(x["cpu_s"] / (x["bytes"] / 1e9) for x in runs)
                cpu_text = f"{cpu(p):.2f} → {cpu(e):.2f} s/GB"
            med = lambda runs: statistics.median(x[metric] for x in runs)
            print(f"| {test} | {med(p):.0f} {unit} | {med(e):.0f} {unit} | {statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}] | {cpu_text} |")
        if memory:
            print(f"| peak RSS after 32 × 100 MiB | {memory['plain']:.1f} MiB | {memory['encrypted']:.1f} MiB | | |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
